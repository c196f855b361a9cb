"""One round of the protocol over wire bytes: the loop both engines drive.

It plays the network and the clock for one round with the loop every
in-process runner shares (:func:`secagg.exchange.run_exchange`): it delivers every
server message to its site (as bytes), feeds every reply to the coordinator
(as bytes), silences sites from the stage at which the dropout model removes
them, and tells the coordinator a round is over once every live site has
answered (what a real transport decides with a timeout). The in-process engine
hands it the sites themselves; the Flower engine (:mod:`simulation.engines.flower.fleet`)
hands :func:`run_masked_round` a batching coordinator and client proxies whose messages
travel through Flower, where Flower's timeout decides who dropped. It lives in :mod:`simulation.federation`, not
in an engine, because both engines run it (and :mod:`.rounds` reads its outcome).

``on_release`` is called once the masked inputs are in (or the round aborted
at that stage) with the set of sites whose update reached the coordinator:
that is when their privacy is spent, and the caller commits it to the ledger
before anything else happens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import secagg
from secagg import ANSWER_STAGE, STAGES, ThresholdNotMetError, wire
from secagg.exchange import ExchangeRecord, run_exchange

from .coordinator import Coordinator, PlainAggregator

__all__ = ["ProtocolOutcome", "run_masked_round", "run_he_round", "run_plain_round", "HE_STAGE_OF"]


@dataclass
class ProtocolOutcome:
    """How one round's protocol went."""

    completed: bool
    released: frozenset = frozenset()
    alive: dict = field(default_factory=dict)  # stage -> sorted client ids that sent a message
    bytes_up: dict = field(default_factory=dict)
    bytes_down: dict = field(default_factory=dict)
    seconds: float = 0.0
    abort_reason: str | None = None
    refusals: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Protocol:
    """What differs between the masking and the HE sessions, for the one transport loop."""

    stages: tuple
    answer_stage: Mapping
    encode: Callable
    release_stage: object  # the server stage whose closing means "updates are in"


def _masking_protocol() -> _Protocol:
    return _Protocol(STAGES, ANSWER_STAGE, wire.encode, secagg.ServerStage.MASK)


def _he_protocol() -> _Protocol:
    from secagg import he

    return _Protocol(he.HE_STAGES, he.HE_ANSWER_STAGE, he.encode, he.HEServerStage.UPLOAD)


#: How a site that vanishes at a masking stage vanishes in the HE protocol.
HE_STAGE_OF = {"advertise": "advertise", "share": "context", "mask": "upload", "consistency": "decrypt",
               "unmask": "decrypt"}


def run_masked_round(
    coordinator: Coordinator,
    config: secagg.SessionConfig,
    clients: Mapping[int, secagg.ClientSession],
    silent_from: Mapping[int, str],
    on_release: Callable[[frozenset], None],
) -> ProtocolOutcome:
    """One secure-aggregation session (all rounds of Bonawitz et al.) among ``clients``."""
    coordinator.open_masked_round(config)
    return _run_session(coordinator, clients, silent_from, on_release, _masking_protocol())


def run_he_round(
    coordinator: Coordinator,
    config,
    clients: Mapping[int, object],
    silent_from: Mapping[int, str],
    on_release: Callable[[frozenset], None],
) -> ProtocolOutcome:
    """One CKKS aggregation session (:mod:`secagg.he`); ``silent_from`` uses the masking stage names."""
    coordinator.open_he_round(config)
    he_silent = {cid: HE_STAGE_OF[stage] for cid, stage in silent_from.items()}
    return _run_session(coordinator, clients, he_silent, on_release, _he_protocol())


def _run_session(coordinator, clients, silent_from, on_release, protocol: _Protocol) -> ProtocolOutcome:
    """The shared in-process loop (:func:`secagg.exchange.run_exchange`), plus the release report and the abort."""
    start = time.perf_counter()
    record = ExchangeRecord.empty(protocol.stages)
    outcome = ProtocolOutcome(completed=False)
    released_reported = False

    def report_release() -> None:
        nonlocal released_reported
        if not released_reported:
            released_reported = True
            outcome.released = coordinator.released
            on_release(outcome.released)

    def advance():
        closing = coordinator.server.stage
        try:
            return coordinator.advance()
        finally:
            if closing is protocol.release_stage:
                report_release()  # the updates are in (or the round aborted right there)

    try:
        run_exchange(coordinator.receive, advance, clients, stages=protocol.stages, answer_stage=protocol.answer_stage,
                 encode=protocol.encode, silent_from=silent_from, record=record)
        outcome.completed = True
    except ThresholdNotMetError as exc:
        outcome.abort_reason = str(exc)
        report_release()  # aborted before the updates were in: nothing was released
    finally:
        outcome.seconds = time.perf_counter() - start
        outcome.alive = {s: sorted(v) for s, v in record.uploaded.items()}
        outcome.bytes_up, outcome.bytes_down = record.bytes_up, record.bytes_down
        outcome.refusals = {cid: f"{type(exc).__name__}: {exc}" for cid, exc in record.refused.items()}
    return outcome


def run_plain_round(
    coordinator: Coordinator,
    vectors: Mapping[int, object],
    silent_from: Mapping[int, str],
    bit_width: int,
    vector_length: int,
    on_release: Callable[[frozenset], None],
) -> ProtocolOutcome:
    """The unprotected baseline: every live site uploads its encoded update in clear."""
    start = time.perf_counter()
    outcome = ProtocolOutcome(completed=False, bytes_up=dict.fromkeys(STAGES, 0), bytes_down=dict.fromkeys(STAGES, 0),
                              alive={s: [] for s in STAGES})
    coordinator.open_plain_round(vectors.keys(), vector_length, bit_width)
    for client_id in sorted(vectors):
        silent = silent_from.get(client_id)
        if silent is not None and STAGES.index(silent) <= STAGES.index("mask"):
            continue
        data = PlainAggregator.pack(client_id, bit_width, vectors[client_id])
        outcome.bytes_up["mask"] += len(data)
        outcome.alive["mask"].append(client_id)
        coordinator.receive(data)
    outcome.released = coordinator.released
    on_release(outcome.released)
    outcome.completed = bool(outcome.released)
    if not outcome.completed:
        outcome.abort_reason = "no site uploaded an update"
    outcome.seconds = time.perf_counter() - start
    return outcome
