"""The Flower fleet: the sites are Flower nodes; the round is :mod:`simulation.federation.rounds`' round.

:class:`FlowerFleet` is the :class:`~simulation.federation.rounds.Fleet` of the Flower
ServerApp. For one round it sends every participant its setup (global
weights + :class:`~simulation.engines.flower.transport.RoundSetup`) as a Flower
``train`` message; each node trains with DP-SGD, encodes and opens its
:class:`secagg.ClientSession` on its own machine and answers with its
AdvertiseKeys. Then the shared protocol loop
(:func:`simulation.federation.protocol_round.run_masked_round`) runs the protocol, with each
stage's messages carried by :class:`~simulation.engines.flower.transport.FlowerTransport`.
Who dropped is what Flower's ``send_and_receive`` timeout says: there are
no simulated dropouts on this side (``silent`` must be empty).

Nodes do not send their training losses or clip counts: they are not covered
by the DP guarantee, so they stay on the nodes. The setup carries the run's
privacy unit (patient by default), its public normaliser size and each
site's public FedAvg weight; a node weights its update by that public weight,
never by its record count.

Every released site signs its spend entry in the coordinator's ledger on its own node, and
anchors it in its own state (:mod:`.ledger_link`). Each unmask request carries the round's
committed spends, which a node checks before it reveals any share (:mod:`dp.round_chain`). No wall time of a round is kept on the
coordinator (:meth:`~simulation.federation.rounds.Fleet.keep_timings` drops them): how long the nodes take
to train reveals how much data they hold.
"""

from __future__ import annotations

from typing import Callable, Mapping

import secagg
from dp import round_chain

from ...federation.protocol_round import run_masked_round
from ...federation.rounds import Fleet, FleetRound, RoundPlan, RunContext
from .transport import SETUP, BatchingCoordinator, ClientProxy, FlowerTransport, RoundSetup

__all__ = ["FlowerFleet"]


class FlowerFleet(Fleet):
    """Sites reached through a Flower ``Grid``; ``node_of`` maps site names to Flower node ids."""

    def __init__(self, grid, node_of: Mapping[str, int], stage_timeout: float, settings: Mapping,
                 log: Callable[[str], None] = print, registry: Mapping[str, bytes] | None = None) -> None:
        self.grid = grid
        self.node_of = dict(node_of)
        self.stage_timeout = float(stage_timeout)
        self.settings = dict(settings)  # model, image_size, model_seed, val_fraction, split_seed, update, ...
        self.log = log
        self.registry = None if registry is None else dict(registry)
        self.owed_anchors: dict = {}  # site -> anchor record not yet delivered (ledger_link)

    def ledger_signers(self) -> Mapping:
        """Every site signs its spends on its own node (:mod:`.ledger_link`); checked against the registry."""
        from .ledger_link import RemoteLedgerSigner

        return {site: RemoteLedgerSigner(site, node, self.grid, self.stage_timeout, self.registry, self.owed_anchors)
                for site, node in self.node_of.items()}

    def deliver_anchors(self) -> list[str]:
        """Send the anchors still owed (end of the run) in one ``query.ledger`` exchange; the sites still owed."""
        from flwr.app import RecordDict

        from .ledger_link import LEDGER

        if not self.owed_anchors:
            return []
        ids = {site: i for i, site in enumerate(sorted(self.owed_anchors))}
        transport = FlowerTransport(self.grid, {i: self.node_of[site] for site, i in ids.items()},
                                    self.stage_timeout, group_id="ledger-anchors", log=self.log,
                                    owed=self.owed_anchors, site_of={i: site for site, i in ids.items()})
        transport.exchange("anchors", LEDGER, {i: RecordDict() for i in ids.values()})
        return sorted(self.owed_anchors)

    def _setup(self, ctx: RunContext, plan: RoundPlan, session, site: str) -> RoundSetup:
        dp, encoder, s = ctx.dp_config, ctx.encoder, self.settings
        return RoundSetup(
            session=session, site_names=tuple(ctx.site_of(cid) for cid in session.participants),
            round_index=plan.round_index, client_id=ctx.site_ids[site], site=site,
            run_id=ctx.ledger.run_id, noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm, sample_rate=dp.sample_rate, local_steps=dp.steps,
            learning_rate=dp.learning_rate, delta=dp.delta, secure_rng=dp.secure_mode, clip=encoder.clip,
            max_summands=encoder.max_summands, encoder_bound=encoder.bound, weight_bound=ctx.weight_bound,
            model=ctx.config.model, image_size=ctx.config.image_size, model_seed=ctx.config.seed,
            val_fraction=ctx.config.val_fraction, split_seed=ctx.config.seed, update=s["update"],
            update_length=sum(int(ctx.coordinator.global_shared[n].numel()) for n in ctx.coordinator.shared_names),
            synthetic_seed=s["synthetic_seed"], stage_timeout=self.stage_timeout, simulate_drop=s["simulate_drop"],
            privacy_unit=dp.privacy_unit, public_size=dp.public_size or 0,
            max_slices_per_patient=dp.max_slices_per_patient or 0, public_weight=ctx.public_weights[site],
            **self._ddp_fields(ctx),
        )

    @staticmethod
    def _ddp_fields(ctx: RunContext) -> dict:
        if ctx.ddp is None:
            return {}
        c = ctx.ddp.config
        return {"ddp_mechanism": c.mechanism, "ddp_l2_clip": c.l2_clip, "ddp_epsilon": c.target_epsilon,
                "ddp_rounds": c.rounds, "ddp_min_contributors": c.min_contributors,
                "ddp_max_contributors": c.max_contributors or c.min_contributors, "ddp_colluding": c.colluding_sites,
                "ddp_bits": ctx.ddp.bits, "ddp_scale": ctx.ddp.scale}

    def run_round(self, ctx: RunContext, plan: RoundPlan, session, silent: Mapping[int, str],
                  on_release: Callable[[frozenset], None]) -> FleetRound:
        from flwr.app import ArrayRecord, RecordDict

        if ctx.config.mode not in ("secagg", "secagg+"):  # flower_config refuses these before the run starts
            raise secagg.InvalidInputError(f"mode {ctx.config.mode!r} is not carried over Flower; use secagg or "
                                           "secagg+ (he and plain run in `secagg simulate`)")
        if silent:
            raise ValueError("simulated dropouts do not apply over Flower: nodes drop by not answering in time")
        coordinator = ctx.coordinator
        global_arrays = ArrayRecord(numpy_ndarrays=[coordinator.global_shared[n].detach().cpu().numpy()
                                                    for n in coordinator.shared_names])
        node_of = {ctx.site_ids[n]: self.node_of[n] for n in plan.participants}
        transport = FlowerTransport(self.grid, node_of, self.stage_timeout, group_id=str(plan.round_index),
                                    log=self.log, owed=self.owed_anchors,
                                    site_of={ctx.site_ids[n]: n for n in plan.participants},
                                    round_chain=lambda: (ctx.ledger.run_id, plan.round_index,
                                                         round_chain(ctx.ledger.entries(), plan.round_index)))
        setup = {ctx.site_ids[n]: RecordDict({"session": self._setup(ctx, plan, session, n).to_record(),
                                              "global": global_arrays})
                 for n in plan.participants}
        transport.exchange("advertise", SETUP, setup)
        # The engine asks every client it is given for its AdvertiseKeys: give it those that answered
        # the setup in time (the others dropped before the protocol started, or refused the setup).
        setup_refusals = {cid: f"{type(got).__name__}: {got}" for cid, got in transport.answers.items()
                          if isinstance(got, Exception)}
        for cid, reason in sorted(setup_refusals.items()):
            self.log(f"round {plan.round_index}: {ctx.site_of(cid)} refused the round: {reason}")
        answered = sorted(cid for cid, got in transport.answers.items() if isinstance(got, bytes))
        proxies = {cid: ClientProxy(cid, transport) for cid in answered}
        outcome = run_masked_round(BatchingCoordinator(coordinator, transport), session, proxies, {}, on_release)
        outcome.refusals = setup_refusals | outcome.refusals  # a refusal is not a silent dropout
        return FleetRound(outcome=outcome)
