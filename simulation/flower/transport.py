"""Carry the protocol's wire bytes in Flower messages; let Flower's timeouts decide who dropped.

The round is *not* reimplemented here: :func:`run_flower_round` hands the
in-process engine's loop (:func:`simulation.engine.run_masked_round`) a
coordinator whose :meth:`~_BatchingCoordinator.advance` sends every message of
a stage to its Flower node at once (``Grid.send_and_receive`` with a
timeout), and client proxies whose ``advertise``/``handle`` return what the
node answered - or ``None`` when it did not answer in time (it dropped), or
raise when it refused. With no dropout model (``silent_from`` empty) the
engine's loop then does exactly what it does in-process: feed replies to the
coordinator, close stages, report the release, abort below threshold.

Message types (Flower requires ``train``/``evaluate``/``query`` categories):

* ``query.hello``  -> reply ``{"site": {"client-id": int}}``
* ``train``        round setup: global weights (``ArrayRecord`` "global") and
  the session parameters (``ConfigRecord`` "session"); the node trains, encodes,
  opens its :class:`secagg.ClientSession` and replies with its AdvertiseKeys.
* ``query.secagg`` one server message (``ConfigRecord`` "secagg", key "wire");
  reply: the client's message under the same key, or ``"refusal"`` (str).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np

import secagg
from secagg import wire
from secagg.messages import ConsistencyRequest, KeyDirectory, MaskedInputRequest, UnmaskRequest

from ..engine import ProtocolOutcome, run_masked_round

__all__ = ["FlowerTransport", "run_flower_round", "session_record", "session_from_record", "HELLO", "SETUP", "STEP"]

HELLO = "query.hello"
SETUP = "train"
STEP = "query.secagg"

_STAGE_OF = {KeyDirectory: "share", MaskedInputRequest: "mask", ConsistencyRequest: "consistency",
             UnmaskRequest: "unmask"}


def session_record(config: secagg.SessionConfig, extra: Mapping | None = None):
    """A ``ConfigRecord`` holding a (complete-graph or Harary) passive-mode session's parameters."""
    from flwr.app import ConfigRecord

    if config.active:
        raise NotImplementedError("active mode over Flower needs the site registry of verify keys; not built yet")
    return ConfigRecord({
        "session-id": bytes(config.session_id),
        "participants": [int(p) for p in config.participants],
        "threshold": int(config.threshold),
        "vector-length": int(config.vector_length),
        "bit-width": int(config.bit_width),
        "degree": -1 if config.degree is None else int(config.degree),
        **dict(extra or {}),
    })


def session_from_record(record) -> secagg.SessionConfig:
    degree = int(record["degree"])
    return secagg.SessionConfig(
        session_id=bytes(record["session-id"]),
        participants=tuple(int(p) for p in record["participants"]),
        threshold=int(record["threshold"]),
        vector_length=int(record["vector-length"]),
        bit_width=int(record["bit-width"]),
        degree=None if degree < 0 else degree,
    )


class FlowerTransport:
    """Sends one stage's messages to their nodes and collects the answers within ``stage_timeout``."""

    def __init__(self, grid, node_of: Mapping[int, int], stage_timeout: float, group_id: str,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.grid = grid
        self.node_of = dict(node_of)  # client id -> Flower node id
        self.stage_timeout = float(stage_timeout)
        self.group_id = group_id
        self.log = log
        self.answers: dict[int, object] = {}  # client id -> wire bytes | Exception (refusal)
        self.timings: dict[str, float] = {}

    def exchange(self, stage: str, message_type: str, contents: Mapping[int, object]) -> None:
        """Send ``contents[cid]`` (a RecordDict) to each client's node; keep the answers that arrive in time."""
        from flwr.app import Message

        start = time.perf_counter()
        by_node = {self.node_of[cid]: cid for cid in contents}
        messages = [Message(content=contents[cid], dst_node_id=self.node_of[cid], message_type=message_type,
                            group_id=self.group_id, ttl=self.stage_timeout + 60.0)
                    for cid in sorted(contents)]
        replies = self.grid.send_and_receive(messages, timeout=self.stage_timeout)
        self.answers = {}
        for reply in replies:
            cid = by_node.get(reply.metadata.src_node_id)
            if cid is None:
                continue
            if reply.has_error():
                self.answers[cid] = secagg.RemoteProtocolError(f"node error: {reply.error.reason}")
                continue
            record = reply.content.config_records.get("secagg")
            if record is None:
                continue
            if "refusal" in record:
                self.answers[cid] = secagg.RemoteProtocolError(str(record["refusal"]))
            elif "wire" in record:
                self.answers[cid] = bytes(record["wire"])
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start
        missing = sorted(set(contents) - set(self.answers))
        if missing:
            self.log(f"{stage}: no answer within {self.stage_timeout:g} s from clients {missing} (dropped)")

    def answer(self, client_id: int):
        got = self.answers.pop(client_id, None)
        if isinstance(got, Exception):
            raise got
        return None if got is None else wire.decode(got)


class _BatchingCoordinator:
    """The project's Coordinator, with ``advance`` also sending the stage's messages over Flower."""

    def __init__(self, coordinator, transport: FlowerTransport) -> None:
        self._coordinator = coordinator
        self._transport = transport

    def __getattr__(self, name):
        return getattr(self._coordinator, name)

    def advance(self) -> dict:
        from flwr.app import ConfigRecord, RecordDict

        outgoing = self._coordinator.advance()
        if outgoing:
            stage = _STAGE_OF[type(next(iter(outgoing.values())))]
            self._transport.exchange(stage, STEP, {
                cid: RecordDict({"secagg": ConfigRecord({"wire": wire.encode(message)})})
                for cid, message in outgoing.items()
            })
        return outgoing


class _ClientProxy:
    """Stands for a remote ClientSession inside the engine's loop: answers come from the transport."""

    def __init__(self, client_id: int, transport: FlowerTransport) -> None:
        self.client_id = client_id
        self.transport = transport

    def advertise(self):
        return self.transport.answer(self.client_id)

    def handle(self, data: bytes):
        return self.transport.answer(self.client_id)


def run_flower_round(coordinator, config: secagg.SessionConfig, transport: FlowerTransport,
                     setup: Mapping[int, object], on_release: Callable[[frozenset], None]) -> ProtocolOutcome:
    """One secure-aggregation session over Flower, through the in-process engine's loop.

    ``setup[cid]`` is the RecordDict of the round's ``train`` message for that client (global
    weights + session parameters); its answer is the client's AdvertiseKeys.
    """
    transport.exchange("advertise", SETUP, setup)
    # The engine's loop asks every client it is given for its AdvertiseKeys: give it those that
    # answered the setup in time (the others dropped before the protocol started).
    answered = sorted(cid for cid, got in transport.answers.items() if isinstance(got, bytes))
    proxies = {cid: _ClientProxy(cid, transport) for cid in answered}
    outcome = run_masked_round(_BatchingCoordinator(coordinator, transport), config, proxies, {}, on_release)
    return outcome


def ring_digest(ring: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(ring).astype(ring.dtype.newbyteorder("<")).tobytes()).hexdigest()
