"""One federated round on the coordinator's side, shared by every engine.

The in-process simulation (:mod:`simulation.engines.inprocess.simulate`) and the Flower
ServerApp (:mod:`simulation.engines.flower.server_app`) run *this* code for every
round; they differ only in their :class:`Fleet`, which reaches the sites
(objects in this process, or Flower nodes over the network). There is no
second implementation of the round.

A round (Bonawitz et al. 2017 for the protocol, FedAvg for the model):

1. :func:`plan_round` - **budget**: each site's planned spend (sigma, q,
   local steps - public, the same at every site) is checked against its
   budget in the ledger; a site that would pass it sits out (or the run
   stops, per ``budget_policy``). Sites the dropout model removes before the
   round starts do not train.
2. :func:`build_session` - a fresh session nonce and the protocol session
   (masking, HE or the unprotected plain baseline) for the participants.
3. :meth:`Fleet.run_round` - at the sites: local DP-SGD from the global
   weights, clip + weight + encode; then the protocol through the engine loop
   (:mod:`simulation.federation.protocol_round`).
4. **Spend** (the engine's ``on_release``, :class:`ReleaseCommitter`): the
   moment the masked inputs are in - whether or not the round then completes -
   the sites whose update reached the coordinator have *released* it; their
   privacy events are committed to the ledger (one transaction) *before*
   unmasking. The events are the ones the coordinator planned from the public
   DP parameters; an in-process site's own event must equal them. Where the
   fleet's sites sign (:meth:`Fleet.ledger_signers`), the coordinator builds
   each spend entry at its place in the chain and the site signs it - after
   checking it names the event it trained with - and anchors it in its own
   state (:mod:`dp.ledger_signatures`); the coordinator only appends.
5. :func:`close_round` - decode the *sum*, FedAvg with the sites' public
   weights, apply to the global model, and the round's record
   (``metrics.jsonl``). The record holds only what the coordinator may
   publish: who took part and survived (the protocol shows it), public
   parameters, the ledger's epsilons (with their unit and adjacency) and bytes.
   No wall times: they go to :meth:`Fleet.keep_timings` (the in-process
   sites' own ``RUN_DIR/site-local/timings.jsonl``; over Flower, nowhere). No training loss, clip count or record count: those are
   statistics of a site's private data, and they stay at the site.

:func:`run_rounds` loops over rounds and writes, after each, the checkpoints,
``state.json`` and the metrics line - each atomically - so a crash loses at
most the round in flight, whose spend (if committed) stands.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import secagg
from dp.events import describe_guarantee

from .protocol_round import ProtocolOutcome

__all__ = [
    "RunContext", "RoundPlan", "PlainSession", "FleetRound", "Fleet", "ReleaseCommitter",
    "planned_event", "plan_round", "build_session", "close_round", "run_round", "run_rounds", "round_line",
]


@dataclass
class RunContext:
    """Everything a round needs that stays the same for the whole run (coordinator side only)."""

    config: object  # simulation.config.SimulationConfig
    site_ids: dict  # site name -> protocol client id
    coordinator: object  # simulation.federation.coordinator.Coordinator
    ledger: object  # dp.PrivacyLedger
    dp_config: object  # dp.DpSgdConfig: the public DP-SGD parameters of every site
    encoder: object  # secagg.FixedPointEncoder (the HE parameters' encoder in he mode)
    weight_bound: float  # the largest declared public FedAvg weight (the weights' scale in the vector)
    protocol: dict  # threshold, degree, finder
    vector_length: int
    he_params: object = None
    ddp: object = None  # dp.CalibratedDistributedDp, or None
    verify_keys: dict = field(default_factory=dict)  # site -> Ed25519 verify key (active mode)
    public_weights: dict = field(default_factory=dict)  # site -> declared public FedAvg weight
    log: Callable[[str], None] = print

    @property
    def bit_width(self) -> int:
        return self.ddp.bits if self.ddp is not None else self.encoder.bit_width

    def site_of(self, client_id: int) -> str:
        return {cid: name for name, cid in self.site_ids.items()}[client_id]


@dataclass(frozen=True)
class RoundPlan:
    """Who takes part in a round, decided before anyone trains."""

    round_index: int
    participants: tuple  # site names, sorted
    planned_dropouts: Mapping  # site -> first silent stage (simulated dropouts; empty on a real network)
    skipped: Mapping  # site -> why it sits out
    stop_reason: str | None = None


@dataclass(frozen=True)
class PlainSession:
    """The unprotected baseline's 'session': who uploads what, in clear."""

    session_id: bytes
    participants: tuple
    vector_length: int
    bit_width: int


@dataclass
class FleetRound:
    """What a fleet reports back from one round: the protocol's outcome and wall times.

    Never training losses or clip counts: they are statistics of the sites' private data that
    no DP guarantee covers, so they stay at the sites.
    """

    outcome: ProtocolOutcome | None
    timings: dict = field(default_factory=dict)


class Fleet(abc.ABC):
    """The sites, as an engine reaches them: local training, encoding and their protocol sessions."""

    @abc.abstractmethod
    def run_round(self, ctx: RunContext, plan: RoundPlan, session, silent: Mapping[int, str],
                  on_release: Callable[[frozenset], None]) -> FleetRound:
        """Train and encode at the participants, then run ``session``'s protocol with them.

        ``silent`` (client id -> first silent stage) are simulated dropouts; ``on_release`` must be
        called once, with the client ids whose update reached the coordinator.
        """

    def ledger_signers(self) -> Mapping | None:
        """Site -> :class:`dp.LedgerSigner` that signs the site's ledger spends (None: unsigned spends)."""
        return None

    def keep_timings(self, round_index: int, seconds: Mapping[str, float]) -> None:
        """Keep a round's wall times (train, encode, protocol, ledger, decode_apply) away from metrics.jsonl.

        They are never published: a round lasts as long as its slowest site trains, which grows with
        that site's private data size (a timing side channel). The default drops them.
        """

    def save_checkpoints(self, store) -> None:
        """Write the sites' local state the engine keeps (nothing where the sites keep their own)."""

    def load_checkpoints(self, store) -> None:
        """Restore what :meth:`save_checkpoints` wrote (``--resume``)."""


def planned_event(site: str, round_index: int, dp_config):
    """The privacy event a site spends in a round, from the public DP-SGD parameters."""
    from dp.events import PrivacyEvent

    return PrivacyEvent(site=site, round=round_index, noise_multiplier=dp_config.noise_multiplier,
                        sample_rate=dp_config.sample_rate, steps=dp_config.steps, delta=dp_config.delta,
                        clipping_norm=dp_config.max_grad_norm, neighbouring=dp_config.neighbouring,
                        secure_rng=dp_config.secure_mode, unit=dp_config.privacy_unit)


def plan_round(ctx: RunContext, round_index: int, dropout_plan: Mapping[str, str]) -> RoundPlan:
    """Budget checks (record-level and, with distributed DP, site-level) for every site."""
    skipped, stop_reason, participants = {}, None, []
    for name in sorted(ctx.site_ids):
        if dropout_plan.get(name) == "advertise":
            continue  # vanished before the round started: no training, no spend
        decision = ctx.ledger.check_budget(name, [planned_event(name, round_index, ctx.dp_config)])
        if not decision.allowed:
            skipped[name] = (f"budget: this round would reach epsilon {decision.projected.bound:.3f} "
                             f"> {decision.budget}")
            if ctx.config.budget_policy == "stop":
                stop_reason = f"site {name} would exceed its budget"
            continue
        if ctx.ddp is not None:
            allowed, projected = ctx.ledger.check_site_level_budget(name, ctx.ddp.event(round_index))
            if not allowed:
                skipped[name] = f"site-level budget: this round would reach epsilon {projected:.3f}"
                if ctx.config.budget_policy == "stop":
                    stop_reason = f"site {name} would exceed its site-level budget"
                continue
        participants.append(name)
    return RoundPlan(round_index, tuple(participants), dict(dropout_plan), skipped, stop_reason)


def build_session(ctx: RunContext, plan: RoundPlan, session_id: bytes):
    """The protocol session of the round's participants (masking, HE or plain)."""
    ids = tuple(sorted(ctx.site_ids[n] for n in plan.participants))
    mode = ctx.config.mode
    if mode == "plain":
        return PlainSession(session_id, ids, ctx.vector_length, ctx.bit_width)
    verify_keys = {ctx.site_ids[n]: ctx.verify_keys[n] for n in plan.participants} if ctx.config.active else {}
    if mode == "he":
        from secagg import he

        return he.HESessionConfig(session_id=session_id, participants=ids, threshold=ctx.protocol["threshold"],
                                  vector_length=ctx.vector_length, key_holder=min(ids), params=ctx.he_params,
                                  active=ctx.config.active, verify_keys=verify_keys)
    return secagg.SessionConfig(session_id=session_id, participants=ids, threshold=ctx.protocol["threshold"],
                                vector_length=ctx.vector_length, bit_width=ctx.bit_width,
                                degree=ctx.protocol["degree"], active=ctx.config.active, verify_keys=verify_keys,
                                max_corrupt=ctx.protocol.get("max_corrupt", 0) if ctx.config.active else 0)


class ReleaseCommitter:
    """The engine's ``on_release``: commits the released sites' spend in one ledger transaction."""

    def __init__(self, ctx: RunContext, plan: RoundPlan, signers: Mapping | None = None) -> None:
        self.ctx = ctx
        self.plan = plan
        self.signers = signers
        self.released_sites: list[str] = []
        self.seconds = 0.0
        self.called = False

    def __call__(self, released_ids) -> None:
        if self.called:
            raise RuntimeError("a round's release was reported twice")
        self.called = True
        start = time.perf_counter()
        ctx, round_index = self.ctx, self.plan.round_index
        self.released_sites = sorted(ctx.site_of(i) for i in released_ids)
        unknown = set(self.released_sites) - set(self.plan.participants)
        if unknown:
            raise RuntimeError(f"sites {sorted(unknown)} released an update without taking part")
        events = [planned_event(n, round_index, ctx.dp_config) for n in self.released_sites]
        site_level = {n: ctx.ddp.event(round_index) for n in self.released_sites} if ctx.ddp is not None else None
        ctx.ledger.commit_round(round_index, events, skipped=self.plan.skipped, site_level=site_level,
                                extra={"released": self.released_sites, "mode": ctx.config.mode},
                                signers=self.signers)
        self.seconds += time.perf_counter() - start


def close_round(ctx: RunContext, plan: RoundPlan, session_id: bytes, fleet_round: FleetRound,
                committer: ReleaseCommitter, abort_reason: str | None) -> tuple[str, list, float]:
    """Decode the sum and apply FedAvg if the round completed: (status, included sites, seconds)."""
    outcome = fleet_round.outcome
    if outcome is None or not outcome.completed:
        ctx.coordinator.server = None
        return "aborted", [], 0.0
    start = time.perf_counter()
    if ctx.ddp is not None:
        aggregate = ctx.coordinator.finish_round_distributed(ctx.ddp, session_id)
    else:
        aggregate = ctx.coordinator.finish_round(ctx.encoder)
    ctx.coordinator.apply(aggregate)
    included = sorted(ctx.site_of(i) for i in aggregate.included)
    if not set(included) <= set(committer.released_sites):
        raise RuntimeError(f"sites {sorted(set(included) - set(committer.released_sites))} are in the sum "
                           "but their spend was not committed")
    return "completed", included, time.perf_counter() - start


def run_round(ctx: RunContext, fleet: Fleet, round_index: int, dropout_plan: Mapping[str, str]) -> dict:
    """Plan, train + protocol (through ``fleet``), commit, close: the round's metrics record."""
    timings = {"train": 0.0, "encode": 0.0, "protocol": 0.0, "ledger": 0.0, "decode_apply": 0.0}
    plan = plan_round(ctx, round_index, dropout_plan)
    record = {"round": round_index, "mode": ctx.config.mode, "planned_dropouts": dict(plan.planned_dropouts),
              "skipped": dict(plan.skipped)}
    if plan.stop_reason:
        start = time.perf_counter()
        ctx.ledger.commit_round(round_index, [], skipped=plan.skipped, extra={"status": "stopped"})
        timings["ledger"] = time.perf_counter() - start
        fleet.keep_timings(round_index, timings)
        return record | {"status": "stopped", "stop_reason": plan.stop_reason}

    # The nonce is drawn before training: with distributed DP it also seeds the public rotation.
    session_id = secagg.new_session_id()
    committer = ReleaseCommitter(ctx, plan, fleet.ledger_signers())
    threshold = ctx.protocol["threshold"]
    start = time.perf_counter()
    if len(plan.participants) < threshold or not plan.participants:
        committer(frozenset())
        fleet_round = FleetRound(outcome=None)
        abort_reason = f"only {len(plan.participants)} sites could take part; threshold is {threshold}"
    else:
        session = build_session(ctx, plan, session_id)
        silent = {ctx.site_ids[n]: stage for n, stage in plan.planned_dropouts.items() if n in plan.participants}
        fleet_round = fleet.run_round(ctx, plan, session, silent, committer)
        if not committer.called:
            raise RuntimeError("the engine finished a round without reporting what was released")
        abort_reason = fleet_round.outcome.abort_reason if fleet_round.outcome is not None else "no outcome"
    elapsed = time.perf_counter() - start
    timings.update({k: v for k, v in fleet_round.timings.items() if k in ("train", "encode")})
    timings["ledger"] = committer.seconds
    timings["protocol"] = max(0.0, elapsed - timings["train"] - timings["encode"] - committer.seconds)
    status, included, timings["decode_apply"] = close_round(ctx, plan, session_id, fleet_round, committer,
                                                            abort_reason)
    outcome = fleet_round.outcome
    ledger = ctx.ledger
    epsilon = {}
    for name in sorted(ctx.site_ids):
        spent = ledger.spent(name)
        epsilon[name] = None if spent is None else spent.bound
    site_ids = {cid: name for name, cid in ctx.site_ids.items()}
    fleet.keep_timings(round_index, timings)
    return record | {
        "site_level_epsilon": ({n: ledger.site_level_spent(n) for n in sorted(ctx.site_ids)}
                               if ctx.ddp is not None else None),
        "status": status,
        "abort_reason": None if status == "completed" else abort_reason,
        "participants": list(plan.participants),
        "released": committer.released_sites,
        "included": included,
        "survivors_per_stage": {} if outcome is None else {
            s: [site_ids[i] for i in v] for s, v in outcome.alive.items()},
        "protocol_stages": list(outcome.alive) if outcome is not None else [],
        "refusals": {} if outcome is None else {site_ids[i]: r for i, r in outcome.refusals.items()},
        "epsilon": epsilon,
        "epsilon_guarantee": describe_guarantee(ctx.dp_config.privacy_unit, ctx.dp_config.neighbouring),
        "bytes_up": {} if outcome is None else outcome.bytes_up,
        "bytes_down": {} if outcome is None else outcome.bytes_down,
    }


def round_line(record: dict) -> str:
    """One log line per round."""
    eps = ", ".join(f"{n} {v:.2f}" for n, v in record["epsilon"].items() if v is not None) if record.get(
        "epsilon") else ""
    if record["status"] == "completed":
        what = f"aggregated {len(record['included'])} sites {record['included']}"
    elif record["status"] == "stopped":
        what = f"STOPPED: {record['stop_reason']}"
    else:
        what = f"ABORTED ({record['abort_reason']})"
    guarantee = record.get("epsilon_guarantee")
    return (f"round {record['round']}: {what}; dropouts {dict(record['planned_dropouts']) or 'none'}; "
            f"epsilon spent{f' ({guarantee})' if guarantee else ''}: {eps or 'none'}")


def run_rounds(ctx: RunContext, fleet: Fleet, store, state: dict, start_round: int, dropout_model,
               stop_after_round: int | None = None,
               after_round: Callable[[int], str | None] | None = None) -> tuple[str | None, bool]:
    """Rounds ``start_round`` .. ``rounds - 1``, each checkpointed: (why the run stopped early, interrupted).

    ``after_round(round_index)`` (``secagg experiment``'s early stopping), called once a round is
    checkpointed, may return a reason to stop there: the run then ends like a stopped run (the rounds
    not run are never spent)."""
    for round_index in range(start_round, ctx.config.rounds):
        record = run_round(ctx, fleet, round_index, dropout_model.plan(round_index, sorted(ctx.site_ids)))
        store.save_torch("global.pt", ctx.coordinator.state_dict())
        server_state = ctx.coordinator.server_state_dict()
        if server_state is not None:  # server momentum / FedAdam: their moments resume with the run
            store.save_torch("server_optimizer.pt", server_state)
        fleet.save_checkpoints(store)
        state["last_round"] = round_index
        state.setdefault("rounds", {})[str(round_index)] = record["status"]
        store.write_state(state)
        store.append_metrics(record)
        ctx.log(round_line(record))
        if record["status"] == "stopped":
            return record["stop_reason"], False
        if record["status"] == "aborted" and ctx.config.on_abort == "stop":
            return f"round {round_index} aborted: {record['abort_reason']}", False
        if stop_after_round is not None and round_index >= stop_after_round:
            return None, True
        reason = after_round(round_index) if after_round is not None else None
        if reason is not None:
            return reason, False
    return None, False
