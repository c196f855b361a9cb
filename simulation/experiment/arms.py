"""Train every arm of one experiment seed on one cohort: federated, local-only, central, non-private.

Every arm gets its own learning rate (tuned per arm, :mod:`.tuning`) and the
same :class:`~.early_stopping.StoppingRule`: at most T = rounds x
local_steps optimiser steps, the validation loss measured every
local_steps steps on the same healthy validation slices (the cohort's
``val``: the training sites' validation volumes), the best model restored
when the rule stops early.

* **federated** - :func:`simulation.engines.inprocess.simulate.run_simulation`, the real round
  (local DP-SGD, encoding, secure aggregation, ledger), no dropouts, seeded
  noise (:mod:`.randomness`), on exactly ``cohort``
  (``experiment_cohort``); its early stopping is the run's
  ``experiment_monitor`` (after each round);
* **local** - one model per site of ``cohort``, DP-SGD on that site's
  slices alone (:func:`dp.train_dp_sgd` with the simulation's per-site
  configuration :func:`simulation.federation.setup.dp_sgd_config` for T steps, one
  Adam for the whole run) at the federated run's sigma and q: the same
  patient-level epsilon for T steps, not in any ledger (research-only);
* **central** - the same on every site's slices pooled;
* **non-private** - the pooled slices and the same objective without DP
  (:func:`dp.train_non_private`: no clipping, no noise, no calibration;
  exactly round(q·N) slices per step).

**Privacy of an early stop.** The noise is calibrated for T steps (the
target epsilon at T). An arm that stops at step t < T released t steps and
is accounted for t: its epsilon is below the target (:func:`privacy_of`);
the federated run's ledger holds exactly the rounds it ran. The DP arms
stay comparable: the same sigma, q and target, each charged for what it
took.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .early_stopping import EarlyStopping, StoppingRule, ValidationMonitor, train_with_stopping, validation_slices
from .randomness import SeededExperimentNoise

__all__ = ["TrainedArm", "train_arms", "privacy_of", "stopping_rule", "NON_PRIVATE_PRIVACY"]

NON_PRIVATE_PRIVACY = {"dp": False, "unit": None, "guarantee": "NO DP: no clipping, no noise, calibration skipped",
                       "epsilon": math.inf, "delta": None, "accountant": None,
                       "note": "non-private upper bound (research-only; never releasable)"}


@dataclass
class TrainedArm:
    """One trained model (or FedDis's personalised models) of an arm, with how it was trained."""

    arm: str  # federated / local / central / non-private
    label: str  # "federated", "local site-2", "central", "non-private central (NO DP)"
    models: list  # the model(s) to evaluate (several: FedDis's per-site personalised models, averaged)
    learning_rate: float
    stopping: EarlyStopping
    privacy: dict
    visits: dict
    seconds: float
    reports: list = field(default_factory=list)  # the federated run's own reports on the cohort (not re-run)
    run_dir: str | None = None


def stopping_rule(sim, patience: int, min_improvement: float) -> StoppingRule:
    """The rule of every arm: measure every local_steps steps, at most rounds x local_steps steps."""
    return StoppingRule(every=sim.local_steps, max_steps=sim.rounds * sim.local_steps, patience=patience,
                        min_improvement=min_improvement)


def privacy_of(sim, sigma: float, label: str, steps: int) -> dict:
    """The patient-level (or slice-level) guarantee of ``steps`` DP-SGD steps at (sigma, q) - the steps taken,
    which an early stop makes fewer than the T the noise was calibrated for."""
    from dp import epsilon_for
    from dp.events import describe_guarantee

    report = epsilon_for(noise_multiplier=sigma, sample_rate=sim.sample_rate, steps=steps, delta=sim.delta)
    return {"dp": True, "unit": sim.privacy_unit, "guarantee": describe_guarantee(sim.privacy_unit),
            "epsilon": report.bound, "delta": sim.delta, "accountant": report.bound_accountant,
            "noise_multiplier": sigma, "sample_rate": sim.sample_rate, "steps": int(steps),
            "max_steps": sim.rounds * sim.local_steps, "clipping_norm": sim.max_grad_norm, "budget": sim.epsilon,
            "note": label}


def _timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def train_arms(sim, cohort, arms, learning_rates: dict, *, seed: int, tag: str, run_dir, patience: int,
               min_improvement: float, log) -> list[TrainedArm]:
    """Train ``arms`` (federated first: it calibrates sigma) on ``cohort``; ``learning_rates``: arm -> rate."""
    import numpy as np
    import torch

    import models
    from dp import train_dp_sgd, train_non_private

    from ..federation.setup import dp_sgd_config
    from ..engines.inprocess.simulate import new_model, pooled_training_data, run_simulation

    if "federated" not in arms:
        raise ValueError("the federated arm calibrates the noise of the others: it must be trained")
    val = validation_slices(cohort.val)
    out: list[TrainedArm] = []

    fed_sim = sim.with_overrides(learning_rate=learning_rates["federated"])
    rule = stopping_rule(fed_sim, patience, min_improvement)
    noise = SeededExperimentNoise(seed, f"federated-{tag}")
    monitor = ValidationMonitor(rule, val)
    log(f"seed {seed} ({tag}): federated (lr {fed_sim.learning_rate:g}) -> {run_dir}")
    result, seconds = _timed(lambda: run_simulation(fed_sim, run_dir, quiet=True, experiment_noise=noise,
                                                    experiment_cohort=cohort, experiment_monitor=monitor))
    sigma = result.summary["privacy"]["noise_multiplier"]
    steps_taken = monitor.stopping.stopped_step
    spent = [e for e in result.summary["privacy"]["epsilon_spent"].values() if e is not None]
    privacy = privacy_of(fed_sim, sigma, "federated: each site's released updates, in the run's ledger", steps_taken)
    privacy["epsilon_spent_ledger"] = max(spent) if spent else None
    privacy["ledger_verified"] = result.summary["privacy"]["ledger_verified"]
    privacy["rounds_run"] = result.summary["rounds_completed"]
    pooled, pooled_patients = pooled_training_data(cohort)
    n_all = int(pooled.shape[0])
    out.append(TrainedArm("federated", "federated", list(result.models.values()), fed_sim.learning_rate,
                          monitor.stopping, privacy,
                          {"expected_slices": (fed_sim.sample_rate * n_all * steps_taken
                                               if fed_sim.privacy_unit == "patient" else None),
                           "units_sampled": noise.units_sampled, "steps_per_site": steps_taken},
                          seconds, reports=list(result.reports.values()), run_dir=str(run_dir)))

    def dp_baseline(arm, label, data, patients, noise_arm, stream_name):
        arm_sim = sim.with_overrides(learning_rate=learning_rates[arm])
        arm_rule = stopping_rule(arm_sim, patience, min_improvement)
        stream = SeededExperimentNoise(seed, f"{noise_arm}-{tag}").for_site(stream_name)
        model = new_model(arm_sim)
        config = dp_sgd_config(arm_sim, sigma, steps=arm_rule.max_steps)
        tensor = torch.from_numpy(data)

        def train(progress):
            train_dp_sgd(model, tensor, config, site=noise_arm, round_index=0, progress=progress,
                         patients=patients, loss_fn=models.training_loss(model), randomness=stream)

        stopping, seconds = _timed(lambda: train_with_stopping(train, model, arm_rule, val))
        taken = stopping.stopped_step
        note = "research-only counterfactual (same sigma, q; charged for its own steps): not in any ledger"
        out.append(TrainedArm(arm, label, [model], arm_sim.learning_rate, stopping,
                              privacy_of(arm_sim, sigma, note, taken),
                              {"expected_slices": arm_sim.sample_rate * int(data.shape[0]) * taken,
                               "units_sampled": stream.units_sampled, "steps": taken}, seconds))
        return out[-1]

    if "local" in arms:
        for name in cohort.site_names:
            dp_baseline("local", f"local {name}", cohort.train[name], cohort.patients[name], f"local-{name}", name)
            out[-1].visits["site"] = name
    if "central" in arms:
        dp_baseline("central", "central", pooled, pooled_patients, "central", "central")
    if "non-private" in arms:
        np_sim = sim.with_overrides(learning_rate=learning_rates["non-private"])
        np_rule = stopping_rule(np_sim, patience, min_improvement)
        batch = max(1, int(round(sim.sample_rate * n_all)))
        model = new_model(np_sim)
        # Its own seeded stream (torch's generator: no DP noise is drawn from it).
        torch.manual_seed(int.from_bytes(f"non-private-{seed}".encode()[:8], "big") % (2**63))
        tensor = torch.from_numpy(np.ascontiguousarray(pooled))

        def train_np(progress):
            train_non_private(model, tensor, steps=np_rule.max_steps, batch_size=batch,
                              learning_rate=np_sim.learning_rate, loss_fn=models.training_loss(model),
                              progress=progress)

        stopping, seconds = _timed(lambda: train_with_stopping(train_np, model, np_rule, val))
        out.append(TrainedArm("non-private", "non-private central (NO DP)", [model], np_sim.learning_rate, stopping,
                              dict(NON_PRIVATE_PRIVACY, steps=stopping.stopped_step),
                              {"expected_slices": float(batch * stopping.stopped_step), "units_sampled": None,
                               "batch_slices": batch, "steps": stopping.stopped_step}, seconds))
    return out
