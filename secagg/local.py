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
from .client import ClientSession
from .config import SessionConfig
from .encoding import FixedPointEncoder
from .inprocess import InProcessResult, check_run_inputs, run_in_process, session_terms
from .server import ServerSession
from .transitions import ANSWER_STAGE, STAGES

__all__ = ["ANSWER_STAGE", "STAGES", "LocalResult", "run_local"]


@dataclass(frozen=True)
class LocalResult(InProcessResult):
    """Outcome of :func:`run_local`: the fields of :class:`~secagg.inprocess.InProcessResult`, and

    Attributes:
        survivors: U3; ``|aggregate - exact| <= len(survivors) * resolution``.
        bit_width: ring width b used on the wire.
        config: the session's public configuration.
    """

    bit_width: int
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
    ids, length, silent_from, vectors = check_run_inputs(updates, dropouts, STAGES, refusals, party="client")
    encoder = FixedPointEncoder.create(
        clip=clip, max_summands=len(ids), resolution=resolution, bit_width=bit_width
    )
    identities, agreed = session_terms(ids, length, threshold=threshold, active=active, session_id=session_id)
    config = SessionConfig(**agreed, bit_width=encoder.bit_width, degree=neighbors, max_corrupt=max_corrupt)
    clipped: dict[int, int] = {}

    def encoded_input(i: int) -> np.ndarray:
        encoded = encoder.encode(vectors.pop(i))  # one float vector at a time
        clipped[i] = encoded.clipped
        return encoded.ring

    server, reported = run_in_process(
        config, ClientSession, ServerSession, identities=identities, encoded_input=encoded_input,
        encode=wire.encode, stages=STAGES, answer_stage=ANSWER_STAGE, silent_from=silent_from, tamper=tamper,
        refusals=refusals,
    )
    result = server.result
    return LocalResult(
        aggregate=encoder.decode(result.ring_sum),
        survivors=result.survivors,
        resolution=encoder.resolution,
        bit_width=config.bit_width,
        clipped=clipped,
        config=config,
        **reported,
    )
