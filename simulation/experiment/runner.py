"""``secagg experiment``: every arm over several seeds under identical conditions, then the statistics.

Per seed s (:meth:`ExperimentConfig.for_seed`: the run seed s - initial
weights, healthy train/validation split - and, with ``vary_data``, the
cohort generated from ``data_seed + s``), in this order:

* **federated** - :func:`simulation.simulate.run_simulation`, the real
  round (:mod:`simulation.rounds`): local DP-SGD, encoding, secure
  aggregation, ledger; no dropouts; its DP sampling and noise from the
  experiment's seeded streams (:mod:`.randomness`);
* **local** - one model per site, trained on that site's data alone
  (:func:`simulation.simulate.train_baseline`, the simulation's own baseline
  trainer) with the same sigma, q, privacy unit and T = rounds x local_steps
  steps: the same patient-level epsilon, not in any ledger (research-only);
* **central** - the same on all sites' data pooled;
* **non-private** - the same pooled data and training objective (:func:`models.training_loss`) WITHOUT DP
  (:func:`dp.train_non_private`:
  no clipping, no noise, no calibration, epsilon = infinity), labelled as such: an upper bound.

**Sample visits.** Every arm takes T optimiser steps. A DP arm samples each
of its patients with probability q per step (Poisson), so it visits each of
its training patients q·T times in expectation; the federated, central and
non-private arms see all sites' slices, q·N·T slice visits in expectation
(N: pooled training slices; the non-private arm draws exactly
round(q·N) slices per step), and a local arm q·N_site·T, its own share. The
record of each arm holds the expected slice visits and the patients its
seeded generator actually drew (``visits``).

Each model is evaluated by :func:`simulation.simulate.evaluate_model` on the
same pooled pathological test volumes, with the threshold fixed on the same
healthy validation volumes, beside the intensity baseline. The federated
arm's stochastic rounding in the update encoding stays on the CSPRNG (it is
part of the protocol, :mod:`secagg.encoding`): its metrics repeat up to that
rounding (at most n x 2^-29 of the update clip per coordinate per round),
the other arms' exactly.

Outputs in ``OUT``: ``experiment.json`` (configuration and command),
``results.json`` (every arm x seed, the statistics), ``report.md`` and
``plots/`` (:mod:`.report`), ``runs/seed-S/...`` (the federated runs). Every
one is labelled ``seeded noise: not a privacy guarantee``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .config import ExperimentConfig
from .randomness import SEEDED_NOISE_LABEL, SeededExperimentNoise
from .statistics import paired_bootstrap, paired_t

__all__ = ["ExperimentResult", "ExperimentError", "run_experiment", "summarise", "report_metrics",
           "COMPARISONS"]

#: Paired comparisons of the report: (key, description). ``best local`` picks, per seed and metric, the
#: local model that scored highest ON THE TEST SET - an oracle choice that favours the local arm.
COMPARISONS = (
    ("best_local", "federated - best local (per seed, chosen on the test set: favours local)"),
    ("mean_local", "federated - mean of the local models"),
    ("central", "federated - central (pooled, same DP budget)"),
    ("non_private", "federated - non-private central (NO DP)"),
    ("intensity", "federated - intensity-threshold baseline"),
)


class ExperimentError(ValueError):
    """Bad input for an experiment (an existing output directory, an impossible setting)."""


@dataclass
class ExperimentResult:
    out_dir: Path
    results: dict


def report_metrics(report) -> dict:
    """The numbers kept of one detection report: overall, per lesion type, per test site; model and baseline."""

    def one(m) -> dict:
        return {"auprc": m.auprc, "auroc": m.auroc, "dice": m.dice_mean, "n_volumes": m.n_volumes}

    def method(r) -> dict:
        return {"overall": one(r.overall), "lesion": {k: one(v) for k, v in sorted(r.by_lesion_type.items())},
                "site": {k: one(v) for k, v in sorted(r.by_group.items())}}

    return {"model": method(report.model), "intensity": method(report.baseline)}


def _mean_metrics(dicts: list) -> dict:
    """Element-wise mean of nested metric dicts of the same shape (FedDis: the sites' personalised models)."""
    first = dicts[0]
    if isinstance(first, dict):
        return {k: _mean_metrics([d[k] for d in dicts]) for k in first if all(k in d for d in dicts)}
    return float(np.mean(dicts))


def _privacy_of(sim, sigma: float, label: str) -> dict:
    """The patient-level (or slice-level) guarantee of an arm trained for T steps at (sigma, q)."""
    from dp import epsilon_for
    from dp.events import describe_guarantee

    steps = sim.rounds * sim.local_steps
    report = epsilon_for(noise_multiplier=sigma, sample_rate=sim.sample_rate, steps=steps, delta=sim.delta)
    return {"dp": True, "unit": sim.privacy_unit, "guarantee": describe_guarantee(sim.privacy_unit),
            "epsilon": report.bound, "delta": sim.delta, "accountant": report.bound_accountant,
            "noise_multiplier": sigma, "sample_rate": sim.sample_rate, "steps": steps,
            "clipping_norm": sim.max_grad_norm, "budget": sim.epsilon, "note": label}


_NON_PRIVATE_PRIVACY = {"dp": False, "unit": None, "guarantee": "NO DP: no clipping, no noise, calibration skipped",
                        "epsilon": math.inf, "delta": None, "accountant": None,
                        "note": "non-private upper bound (research-only; never releasable)"}


def _slices(data) -> int:
    return int(data.shape[0])


def _timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def _run_seed(config: ExperimentConfig, seed: int, out: Path, log, epsilon: float | None) -> list[dict]:
    """All arms of one seed at the configuration's epsilon (or, for the sweep, federated and central at ``epsilon``)."""
    import torch

    import models
    from dp import train_non_private

    from ..simulate import evaluate_model, new_model, pooled_training_data, run_simulation, train_baseline

    sim = config.for_seed(seed, epsilon=epsilon)
    sweep = epsilon is not None
    arms = [a for a in config.arms if a in ("federated", "central")] if sweep else list(config.arms)
    tag = f"eps{epsilon:g}" if sweep else "main"
    steps = sim.rounds * sim.local_steps
    records = []

    def record(arm, label, metrics, privacy, visits, seconds):
        records.append({"seed": seed, "arm": arm, "label": label, "epsilon_target": sim.epsilon, "sweep": sweep,
                        "metrics": metrics, "privacy": privacy, "visits": visits, "seconds": round(seconds, 2),
                        "seeded_noise": SEEDED_NOISE_LABEL if privacy.get("dp") else None})

    noise = SeededExperimentNoise(seed, f"federated-{tag}")
    run_dir = out / "runs" / f"seed-{seed}" / ("federated" if not sweep else f"federated-eps{epsilon:g}")
    log(f"seed {seed} ({tag}): federated -> {run_dir}")
    result, seconds = _timed(lambda: run_simulation(sim, run_dir, quiet=True, experiment_noise=noise))
    cohort = result.cohort
    sigma = result.summary["privacy"]["noise_multiplier"]
    pooled, pooled_patients = pooled_training_data(cohort)
    n_all = _slices(pooled)
    fed = [report_metrics(r) for r in result.reports.values()]
    spent = [e for e in result.summary["privacy"]["epsilon_spent"].values() if e is not None]
    fed_privacy = _privacy_of(sim, sigma, "federated: each site's released updates, in the run's ledger")
    fed_privacy["epsilon_spent_ledger"] = max(spent) if spent else None
    fed_privacy["ledger_verified"] = result.summary["privacy"]["ledger_verified"]
    record("federated", "federated", _mean_metrics(fed), fed_privacy,
           {"expected_slices": sim.sample_rate * n_all * steps if sim.privacy_unit == "patient" else None,
            "units_sampled": noise.units_sampled, "steps_per_site": steps}, seconds)
    if "federated" in config.arms and not sweep:
        records[-1]["run_dir"] = str(run_dir)
    baseline_privacy = _privacy_of(sim, sigma, "research-only counterfactual (same sigma, q, T): not in any ledger")

    if "local" in arms:
        for name in cohort.site_names:
            stream = SeededExperimentNoise(seed, f"local-{name}-{tag}").for_site(name)

            def train(name=name, stream=stream):
                return train_baseline(sim, cohort.train[name], cohort.patients[name], steps, sigma,
                                      f"local-{name}", randomness=stream)

            model, seconds = _timed(train)
            report, eval_seconds = _timed(lambda: evaluate_model(model, cohort, sim))
            record("local", f"local {name}", report_metrics(report), dict(baseline_privacy),
                   {"expected_slices": sim.sample_rate * _slices(cohort.train[name]) * steps,
                    "units_sampled": stream.units_sampled, "site": name}, seconds + eval_seconds)
    if "central" in arms:
        stream = SeededExperimentNoise(seed, f"central-{tag}").for_site("central")
        model, seconds = _timed(lambda: train_baseline(sim, pooled, pooled_patients, steps, sigma, "central",
                                                       randomness=stream))
        report, eval_seconds = _timed(lambda: evaluate_model(model, cohort, sim))
        record("central", "central", report_metrics(report), dict(baseline_privacy),
               {"expected_slices": sim.sample_rate * n_all * steps, "units_sampled": stream.units_sampled},
               seconds + eval_seconds)
    if "non-private" in arms:
        batch = max(1, int(round(sim.sample_rate * n_all)))

        def train_np():
            model = new_model(sim)
            # Its own seeded stream (torch's generator: no DP noise is drawn from it).
            torch.manual_seed(int.from_bytes(f"non-private-{seed}".encode()[:8], "big") % (2**63))
            train_non_private(model, torch.from_numpy(pooled), steps=steps, batch_size=batch,
                              learning_rate=sim.learning_rate, loss_fn=models.training_loss(model))
            return model

        model, seconds = _timed(train_np)
        report, eval_seconds = _timed(lambda: evaluate_model(model, cohort, sim))
        record("non-private", "non-private central (NO DP)", report_metrics(report), dict(_NON_PRIVATE_PRIVACY),
               {"expected_slices": float(batch * steps), "units_sampled": None, "batch_slices": batch},
               seconds + eval_seconds)
    for r in records:
        log(f"  seed {seed} {r['label']:<28} AUPRC {r['metrics']['model']['overall']['auprc']:.3f} "
            f"(intensity {r['metrics']['intensity']['overall']['auprc']:.3f}; {r['seconds']:.0f} s)")
    return records


def _values(records, arm, path, which="model", label=None) -> dict:
    """seed -> value of metric ``path`` (e.g. ("overall", "auprc")) for one arm."""
    out = {}
    for r in records:
        if r["arm"] != arm or (label is not None and r["label"] != label):
            continue
        node = r["metrics"][which]
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            out[r["seed"]] = node
    return out


def _metric_paths(records) -> list[tuple]:
    """Every (section, key, metric) reported: overall AUPRC/AUROC/Dice, per lesion type and per site AUPRC."""
    paths = [("overall", "auprc"), ("overall", "auroc"), ("overall", "dice")]
    fed = [r for r in records if r["arm"] == "federated"]
    lesions = sorted({k for r in fed for k in r["metrics"]["model"]["lesion"]})
    sites = sorted({k for r in fed for k in r["metrics"]["model"]["site"]})
    paths += [("lesion", k, "auprc") for k in lesions] + [("site", k, "auprc") for k in sites]
    return paths


def _describe(values: dict) -> dict:
    v = np.array(list(values.values()), dtype=np.float64)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else None,
            "sd": float(v.std(ddof=1)) if v.size > 1 else None}


def summarise(records: list[dict], arms) -> dict:
    """Per arm means and the paired differences of :data:`COMPARISONS` for every metric path."""
    main = [r for r in records if not r["sweep"]]
    seeds = sorted({r["seed"] for r in main})
    local_labels = sorted({r["label"] for r in main if r["arm"] == "local"})
    stats = {}
    for path in _metric_paths(main):
        key = "/".join(path)
        fed = _values(main, "federated", path)
        entry = {"federated": _describe(fed), "intensity": _describe(_values(main, "federated", path, "intensity")),
                 "arms": {}, "differences": {}}
        others = {"intensity": _values(main, "federated", path, "intensity")}
        locals_ = {lab: _values(main, "local", path, label=lab) for lab in local_labels}
        for lab, vals in locals_.items():
            entry["arms"][lab] = _describe(vals)
        common = [s for s in seeds if s in fed and all(s in v for v in locals_.values())]
        if locals_ and common:
            others["best_local"] = {s: max(v[s] for v in locals_.values()) for s in common}
            others["mean_local"] = {s: float(np.mean([v[s] for v in locals_.values()])) for s in common}
            for lab, vals in locals_.items():
                others[lab] = vals
        for arm, name in (("central", "central"), ("non-private", "non_private")):
            if arm in arms:
                others[name] = _values(main, arm, path)
                entry["arms"][arm] = _describe(others[name])
        for name, vals in others.items():
            paired = [s for s in seeds if s in fed and s in vals]
            if not paired:
                continue
            a, b = [fed[s] for s in paired], [vals[s] for s in paired]
            entry["differences"][name] = {"t": paired_t(a, b).to_dict(), "bootstrap": paired_bootstrap(a, b).to_dict(),
                                          "federated_wins": int(sum(x > y for x, y in zip(a, b)))}
        stats[key] = entry
    curve = {}
    for r in records:
        if r["arm"] in ("federated", "central") and r["privacy"].get("dp"):
            curve.setdefault(r["arm"], {}).setdefault(str(r["epsilon_target"]), []).append(
                r["metrics"]["model"]["overall"]["auprc"])
    stats_curve = {arm: {eps: _describe(dict(enumerate(v))) for eps, v in sorted(by.items(), key=lambda x: float(x[0]))}
                   for arm, by in curve.items()}
    return {"seeds": seeds, "metrics": stats, "privacy_utility": stats_curve}


def run_experiment(config: ExperimentConfig, out_dir, *, log: Callable[[str], None] | None = None,
                   command: str | None = None) -> ExperimentResult:
    """Run every seed and arm into ``out_dir`` (must not exist or be empty), then write the report."""
    from ..runstore import atomic_write_json, private_umask
    from .report import write_report

    log = log or (lambda text: print(text, flush=True))
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExperimentError(f"{out} exists and is not an empty directory: an experiment never overwrites one")
    started = time.perf_counter()
    command = command or "secagg " + " ".join(sys.argv[1:])
    with private_umask():
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        base = config.base_simulation()
        atomic_write_json(out / "experiment.json", {
            "seeded_noise": SEEDED_NOISE_LABEL, "command": command, "experiment": config.to_dict(),
            "simulation_base": base.to_dict()})
        log(f"experiment '{config.name}': {len(config.seeds)} seeds x arms {', '.join(config.arms)}"
            f"{' + epsilon sweep ' + str(list(config.epsilons)) if config.epsilons else ''} -> {out}")
        log(f"  {SEEDED_NOISE_LABEL.upper()}: DP sampling and noise come from seeded generators (reproducible)")
        records: list[dict] = []
        for seed in config.seeds:
            records += _run_seed(config, seed, out, log, None)
            for eps in config.epsilons:
                if float(eps) != base.epsilon:
                    records += _run_seed(config, seed, out, log, float(eps))
        results = {
            "seeded_noise": SEEDED_NOISE_LABEL,
            "command": command,
            "experiment": config.to_dict(),
            "simulation_base": base.to_dict(),
            "records": records,
            "statistics": summarise(records, config.arms),
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_count": os.cpu_count(),
        }
        atomic_write_json(out / "results.json", _jsonable(results))
        write_report(results, out)
    return ExperimentResult(out, results)


def _jsonable(value):
    """inf/nan as strings (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def load_results(path) -> dict:
    return json.loads(Path(path).read_text())
