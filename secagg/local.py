"""Run every party of one session in-process, through the real sessions and wire bytes.

:func:`run_local` is the reference transport: it encodes each client's float
vector, creates a :class:`~secagg.client.ClientSession` per client and one
:class:`~secagg.server.ServerSession`, and moves *wire bytes* between them
round by round, with dropouts at chosen stages and an optional ``tamper``
hook that plays a malicious server. Simulations, tests and benchmarks use it;
real deployments replace it with a network transport (e.g. Flower) and keep
the same sessions. :data:`STAGES` and :data:`ANSWER_STAGE` are derived from
the transition tables in :mod:`secagg.transitions` and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from . import wire
from .config import SessionConfig, new_session_id
from .crypto import SigningKeyPair
from .encoding import FixedPointEncoder, check_finite_vector
from .errors import InvalidInputError
from .exchange import run_exchange, validate_dropouts, validate_updates
from .client import ClientSession
from .server import ServerSession
from .transitions import ANSWER_STAGE, STAGES

__all__ = ["ANSWER_STAGE", "STAGES", "LocalResult", "run_local"]


@dataclass(frozen=True)
class LocalResult:
    """Outcome of :func:`run_local`.

    Attributes:
        aggregate: float64 decoded sum of the included clients' clipped inputs.
        survivors: ids whose inputs are in the sum (U3).
        resolution: quantisation step; ``|aggregate - exact| <= len(survivors) * resolution``.
        server_view: every message the server received, in wire form, in arrival order.
        bit_width: ring width b used on the wire.
        clipped: per client, how many coordinates were clipped.
        refusals: per client, the error with which it refused a server message (if any).
        bytes_up / bytes_down: wire bytes per stage, clients -> server and server -> clients.
        seconds: wall time per stage (client and server work together).
        config: the session's public configuration.
    """

    aggregate: np.ndarray
    survivors: frozenset
    resolution: float
    server_view: list
    bit_width: int
    clipped: Mapping[int, int]
    refusals: Mapping[int, Exception]
    bytes_up: Mapping[str, int]
    bytes_down: Mapping[str, int]
    seconds: Mapping[str, float]
    config: SessionConfig = field(repr=False)


def run_local(
    updates: Mapping[int, np.ndarray],
    *,
    threshold: int,
    neighbors: int | None = None,
    dropouts: Mapping[str, object] | None = None,
    active: bool = False,
    clip: float = 1.0,
    tamper: Callable | None = None,
    resolution: float | None = None,
    bit_width: int | None = None,
    session_id: bytes | None = None,
    refusals: str = "raise",
    max_corrupt: int = 0,
) -> LocalResult:
    """Securely aggregate ``updates`` with every party simulated in this process.

    Args:
        updates: client id -> 1-D float array (all the same length).
        threshold: t; see :class:`~secagg.config.SessionConfig` for its range.
        neighbors: SecAgg+ graph degree k (even), or ``None`` for the complete graph.
        dropouts: stage name -> client ids silent from that stage on
            (stages: ``"advertise", "share", "mask", "consistency", "unmask"``).
        active: run the consistency check and signatures (malicious-server defence).
        clip: each coordinate is clipped to ``[-clip, clip]`` before encoding.
        tamper: ``(recipient_id, message) -> message | None`` applied to every
            server -> client message (``None`` withholds it): a malicious server.
        resolution / bit_width: encoding precision and ring width (chosen automatically).
        session_id: the 32-byte session nonce (fresh random by default).
        max_corrupt: colluding clients the active-mode consistency quorum tolerates
            (see :attr:`~secagg.config.SessionConfig.consistency_quorum`).
        refusals: ``"raise"`` (default) re-raises the first refusal of an honest
            client (a :class:`~secagg.errors.RemoteProtocolError`); ``"drop"``
            records it in ``LocalResult.refusals`` and treats the client as dropped.

    Raises:
        ProtocolError subclasses: invalid input, refusals (see above), or
        :class:`~secagg.errors.ThresholdNotMetError` when fewer than t remain.
    """
    if refusals not in ("raise", "drop"):
        raise InvalidInputError(f"refusals must be 'raise' or 'drop'; got {refusals!r}")
    ids, length = validate_updates(updates)
    silent_from = validate_dropouts(dropouts, ids, STAGES)
    vectors = {i: check_finite_vector(updates[i], length=length, name=f"update of client {i}") for i in ids}
    encoder = FixedPointEncoder.create(
        clip=clip, max_summands=len(ids), resolution=resolution, bit_width=bit_width
    )
    identities = {i: SigningKeyPair.generate() for i in ids} if active else {}
    config = SessionConfig(
        session_id=session_id or new_session_id(),
        participants=tuple(ids),
        threshold=threshold,
        vector_length=length,
        bit_width=encoder.bit_width,
        degree=neighbors,
        active=active,
        verify_keys={i: k.verify_key for i, k in identities.items()},
        max_corrupt=max_corrupt,
    )
    clipped: dict[int, int] = {}
    clients: dict[int, ClientSession] = {}
    for i in ids:
        encoded = encoder.encode(vectors[i])
        clipped[i] = encoded.clipped
        clients[i] = ClientSession(
            config, i, signing_key=identities[i].seed if active else None, masked_input=encoded.ring
        )
    del vectors

    server = ServerSession(config)
    record = run_exchange(server.receive, server.advance, clients, stages=STAGES, answer_stage=ANSWER_STAGE,
                      encode=wire.encode, silent_from=silent_from,
                      tamper=tamper, refusals="raise" if refusals == "raise" else "record")

    result = server.result
    return LocalResult(
        aggregate=encoder.decode(result.ring_sum),
        survivors=result.survivors,
        resolution=encoder.resolution,
        server_view=record.server_view,
        bit_width=config.bit_width,
        clipped=clipped,
        refusals=record.refused,
        bytes_up=record.bytes_up,
        bytes_down=record.bytes_down,
        seconds=record.seconds,
        config=config,
    )
