"""The in-process fleet: every site is an object in this process (one machine, simulated dropouts).

It is the :class:`~simulation.federation.rounds.Fleet` of ``secagg simulate``. Each
site trains with DP-SGD and encodes its update itself (:class:`Site`); its
ring vector goes only into its own protocol session (masking, HE or, in the
unprotected ``plain`` baseline, straight to the coordinator). The protocol loop
(:mod:`simulation.federation.protocol_round`) moves the wire bytes and silences sites at the
stages the dropout model chose.

Spend or roll back. A site whose update reached the coordinator released
it: its spend (the planned event, covering the whole round of DP-SGD on all
its parameters, site-local ones included) is in the ledger. A site that
trained but released nothing (it dropped before its masked input arrived,
or the round aborted first) spent nothing, so it rolls its whole local
model - shared and site-local parameters (FedDis keeps the latter between
rounds) - back to the start of the round: nothing of that training survives
to feed a later release.

Site-local statistics (training losses, empty steps, clip counts) stay at
the sites: each site appends them to its own ``site-local/SITE.jsonl`` in
the run directory, labelled as site-local; the coordinator's
``metrics.jsonl`` never carries them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

import secagg

from ...federation.protocol_round import run_he_round, run_masked_round, run_plain_round
from ...federation.rounds import Fleet, FleetRound, PlainSession, RoundPlan, RunContext, planned_event

__all__ = ["InProcessFleet", "SITE_LOCAL_DIR", "SITE_LOCAL_LABEL"]

SITE_LOCAL_DIR = "site-local"
SITE_LOCAL_LABEL = ("SITE-LOCAL: statistics of this site's private data, kept by the site; never sent to the "
                    "coordinator, not covered by the DP guarantee, not for release")


class InProcessFleet(Fleet):
    """Sites as local objects; ``identities`` are their long-term signing keys (active mode and, with
    ``site_folders`` - each site's own state folder - the signatures on their ledger spends)."""

    def __init__(self, sites: Mapping, identities: Mapping | None = None, progress=None,
                 site_folders: Mapping | None = None, site_local_dir=None) -> None:
        from dp import LedgerSigner

        self.sites = dict(sites)  # name -> simulation.federation.site.Site
        self.identities = dict(identities or {})
        self.progress = progress
        self.site_local_dir = None if site_local_dir is None else Path(site_local_dir)
        self._released: dict[str, dict] = {}  # site -> {entry kind: the event it spent this round}
        self._signers = {name: LedgerSigner(name, self.identities[name].seed, folder,
                                            approve=lambda statement, name=name: self._approve(name, statement))
                         for name, folder in (site_folders or {}).items()}

    def _approve(self, name: str, statement) -> None:
        """A site signs a spend only for the event it trained (or noised) with in this round."""
        from dp.errors import LedgerError

        if self._released.get(name, {}).get(statement.kind) != statement.body.get("event"):
            raise LedgerError(f"site {name!r} refuses to sign entry {statement.seq}: it is not the "
                              f"{statement.kind} of what the site trained in round {statement.round}")

    def ledger_signers(self) -> Mapping | None:
        return self._signers or None

    def _site_log(self, name: str, record: dict) -> None:
        """Append one round's site-local statistics to the site's own file (never the coordinator's)."""
        self._append_site_local(f"{name}.jsonl", {"site": name} | record)

    def _append_site_local(self, filename: str, record: dict) -> None:
        if self.site_local_dir is None:
            return
        self.site_local_dir.mkdir(parents=True, exist_ok=True)
        with open(self.site_local_dir / filename, "a") as f:
            f.write(json.dumps({"site_local": SITE_LOCAL_LABEL} | record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def keep_timings(self, round_index: int, seconds) -> None:
        """The round's wall times (all in-process sites together) go to ``site-local/timings.jsonl``, not
        metrics.jsonl: training time grows with the sites' private data size."""
        self._append_site_local("timings.jsonl", {"round": round_index, "seconds": dict(seconds)})

    def _signing_key(self, ctx: RunContext, name: str):
        return self.identities[name].seed if ctx.config.active else None

    def run_round(self, ctx: RunContext, plan: RoundPlan, session, silent: Mapping[int, str],
                  on_release: Callable[[frozenset], None]) -> FleetRound:
        timings = {"train": 0.0, "encode": 0.0}
        rings, local_stats, snapshots = {}, {}, {}
        for name in plan.participants:
            site = self.sites[name]
            snapshots[name] = site.snapshot()
            start = time.perf_counter()
            with self.progress.task(f"round {plan.round_index} - {name} local DP-SGD",
                                    total=ctx.dp_config.steps) as advance:
                update = site.train(ctx.coordinator.global_shared, ctx.dp_config, plan.round_index,
                                    progress=lambda step, loss: advance())
            timings["train"] += time.perf_counter() - start
            if update.event != planned_event(name, plan.round_index, ctx.dp_config):
                # The ledger commits the planned events; training must have spent exactly those.
                raise RuntimeError(f"site {name} spent {update.event}, not the planned event")
            self._released[name] = {"spend": update.event.to_dict()}
            if ctx.ddp is not None:
                self._released[name]["site_level_spend"] = ctx.ddp.event(plan.round_index).to_dict()
            start = time.perf_counter()
            if ctx.ddp is not None:
                from dp.distributed import privatize_detailed

                private = privatize_detailed(update.vector, ctx.ddp, session.session_id)
                rings[name], clipped = private.ring, int(bool(getattr(private, "clipped", False)))
            else:
                rings[name], clipped = site.encode(update, ctx.encoder, ctx.weight_bound)
            timings["encode"] += time.perf_counter() - start
            local_stats[name] = {"mean_loss": float(np.mean(update.losses)) if update.losses else None,
                                 "empty_steps": update.empty_steps, "clipped_units": update.clipped_units,
                                 "clipped_coordinates": clipped}

        released: set = set()

        def on_release_and_note(ids: frozenset) -> None:
            released.update(ids)
            on_release(ids)

        by_id = {ctx.site_ids[n]: n for n in plan.participants}
        if isinstance(session, PlainSession):
            outcome = run_plain_round(ctx.coordinator, {cid: rings[n] for cid, n in by_id.items()}, silent,
                                      session.bit_width, session.vector_length, on_release_and_note)
        elif ctx.config.mode == "he":
            from secagg import he

            clients = {cid: he.HEClientSession(session, cid, masked_input=rings[n],
                                               signing_key=self._signing_key(ctx, n)) for cid, n in by_id.items()}
            outcome = run_he_round(ctx.coordinator, session, clients, silent, on_release_and_note)
        else:
            clients = {cid: secagg.ClientSession(session, cid, masked_input=rings[n],
                                                 signing_key=self._signing_key(ctx, n)) for cid, n in by_id.items()}
            outcome = run_masked_round(ctx.coordinator, session, clients, silent, on_release_and_note)
        released_sites = {by_id[cid] for cid in released if cid in by_id}
        for name in plan.participants:
            rolled_back = name not in released_sites
            if rolled_back:  # trained, released nothing, spent nothing: keep nothing of this round
                self.sites[name].rollback(snapshots[name])
            self._site_log(name, {"round": plan.round_index, "released": not rolled_back,
                                  "rolled_back": rolled_back, **local_stats[name]})
        return FleetRound(outcome=outcome, timings=timings)

    def save_checkpoints(self, store) -> None:
        for name, site in self.sites.items():  # into site-local/checkpoints/ (RunDirectory.save_site_model)
            store.save_site_model(name, site.model.state_dict())

    def load_checkpoints(self, store) -> None:
        for name, site in self.sites.items():
            site.model.load_state_dict(store.load_site_model(name))
