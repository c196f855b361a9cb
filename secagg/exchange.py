"""The in-process message loop: one session's wire bytes moved between a server and its clients.

Every in-process runner shares this loop - :func:`secagg.run_local` (masking),
:func:`secagg.he.run_local_he` (CKKS) and the simulation engine
(:mod:`simulation.federation.protocol_round`, also behind the Flower transport) - so the rules of
delivery exist once:

* every client not silenced at the first stage uploads its first message;
* then, until the server has nothing more to send, each message the server
  produces is encoded to wire bytes, counted, optionally rewritten by
  ``tamper`` (a malicious server in tests), and delivered to its recipient if
  that client is still alive at the answering stage;
* a client that refuses (:class:`RemoteProtocolError`, or
  :class:`ThresholdNotMetError` when it aborts itself), or whose message the
  server rejects, is recorded and silent from then on; with ``refusals="raise"``
  a remote-protocol error propagates;
* a client silenced "from" a stage (a dropout) sends nothing from that stage on.

The server's own :class:`ThresholdNotMetError` (too few survivors) propagates
to the caller, who still holds the :class:`ExchangeRecord` filled so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import InvalidInputError, RemoteProtocolError, ThresholdNotMetError

__all__ = ["ExchangeRecord", "run_exchange", "validate_updates", "validate_dropouts"]


def validate_updates(updates: Mapping, party: str = "client") -> tuple[list[int], int]:
    """Sorted ids and the common length of ``updates`` (id -> 1-D array), or :class:`InvalidInputError`."""
    if not isinstance(updates, Mapping) or len(updates) < 2:
        raise InvalidInputError(f"updates must map at least 2 {party} ids to 1-D float arrays")
    ids = list(updates)
    if any(not isinstance(i, int) or isinstance(i, bool) for i in ids):
        raise InvalidInputError(f"{party} ids must be ints; got {[i for i in ids if not isinstance(i, int)][:5]}")
    shapes = {i: np.shape(updates[i]) for i in ids}
    first = shapes[ids[0]]
    if len(first) != 1 or first[0] < 1:
        raise InvalidInputError(f"updates must be non-empty 1-D arrays; {party} {ids[0]} has shape {first}")
    wrong = {i: s for i, s in shapes.items() if s != first}
    if wrong:
        raise InvalidInputError(f"all updates must have shape {first}; got {dict(list(wrong.items())[:5])}")
    return sorted(ids), first[0]


def validate_dropouts(dropouts, ids: Sequence[int], stages: Sequence[str], party: str = "client") -> dict[int, str]:
    """``{stage: [ids]}`` -> ``{id: first stage at which it is silent}`` (the earliest stage wins)."""
    stages = tuple(stages)
    silent: dict[int, str] = {}
    for stage, members in (dropouts or {}).items():
        if stage not in stages:
            raise InvalidInputError(f"unknown dropout stage {stage!r}; stages are {stages}")
        unknown = set(members) - set(ids)
        if unknown:
            raise InvalidInputError(f"dropouts at stage {stage!r} name unknown {party} ids {sorted(unknown)[:10]}")
        for member in members:
            if member not in silent or stages.index(stage) < stages.index(silent[member]):
                silent[member] = stage
    return silent


@dataclass
class ExchangeRecord:
    """What moved, per stage: who uploaded, bytes each way, wall time; and who refused."""

    stages: tuple
    server_view: list  # every message the server received, in wire form, in arrival order
    refused: dict  # client id -> the exception it refused with
    uploaded: dict  # stage -> client ids whose message reached the server, in order
    bytes_up: dict
    bytes_down: dict
    seconds: dict

    @classmethod
    def empty(cls, stages: Sequence[str]) -> "ExchangeRecord":
        stages = tuple(stages)
        return cls(stages, [], {}, {s: [] for s in stages}, dict.fromkeys(stages, 0), dict.fromkeys(stages, 0),
                   dict.fromkeys(stages, 0.0))


def run_exchange(
    receive: Callable[[bytes], None],
    advance: Callable[[], Mapping[int, object]],
    clients: Mapping[int, object],
    *,
    stages: Sequence[str],
    answer_stage: Mapping[type, str],
    encode: Callable[[object], bytes],
    silent_from: Mapping[int, str] | None = None,
    tamper: Callable[[int, object], object | None] | None = None,
    refusals: str = "record",
    record: ExchangeRecord | None = None,
) -> ExchangeRecord:
    """Run the session to its end; ``clients[i]`` has ``advertise()`` and ``handle(bytes)``.

    ``receive``/``advance`` are the server's (or a wrapper that logs or reports). ``silent_from``
    maps a client to the first stage at which it sends nothing.
    """
    if refusals not in ("record", "raise"):
        raise ValueError(f"refusals must be 'record' or 'raise'; got {refusals!r}")
    stages = tuple(stages)
    record = record if record is not None else ExchangeRecord.empty(stages)
    silent = {cid: stages.index(stage) for cid, stage in (silent_from or {}).items()}

    def alive(client_id: int, stage: str) -> bool:
        return silent.get(client_id, len(stages)) > stages.index(stage) and client_id not in record.refused

    def upload(stage: str, client_id: int, message) -> None:
        data = encode(message)
        record.bytes_up[stage] += len(data)
        record.server_view.append(data)
        try:
            receive(data)
        except RemoteProtocolError as exc:  # the server rejects what this client sent: it is out
            if refusals == "raise":
                raise
            record.refused[client_id] = exc
            return
        record.uploaded[stage].append(client_id)

    first = stages[0]
    start = time.perf_counter()
    for client_id in sorted(clients):
        if alive(client_id, first):
            upload(first, client_id, clients[client_id].advertise())
    record.seconds[first] += time.perf_counter() - start

    while True:
        start = time.perf_counter()
        outgoing = advance()
        if not outgoing:
            break
        stage = answer_stage[type(next(iter(outgoing.values())))]
        for recipient in sorted(outgoing):
            message = outgoing[recipient]
            if tamper is not None:
                message = tamper(recipient, message)
                if message is None:
                    continue
            data = encode(message)
            record.bytes_down[stage] += len(data)
            if not alive(recipient, stage):
                continue
            try:
                reply = clients[recipient].handle(data)
            except RemoteProtocolError as exc:
                if refusals == "raise":
                    raise
                record.refused[recipient] = exc
                continue
            except ThresholdNotMetError as exc:  # the client aborts itself: too few peers left
                record.refused[recipient] = exc
                continue
            if reply is not None:
                upload(stage, recipient, reply)
        record.seconds[stage] += time.perf_counter() - start
    return record
