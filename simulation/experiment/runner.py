"""``secagg experiment``: every arm over several seeds under identical conditions, then the statistics.

Before the seeds, with a non-empty ``lr_grid``: :func:`tune_learning_rates`
(:mod:`.tuning`; every arm at every grid value on ``tuning_seed``, no test
volume seen) picks each arm's learning rate.

Per seed s (:meth:`ExperimentConfig.for_seed`: the run seed s - initial
weights, healthy train/validation split - and, with ``vary_data``, the
cohort generated from ``data_seed + s``; with ``held_out_site`` the site
:func:`.held_out.held_out_site_for` names is split off first), every arm is
trained by :func:`.arms.train_arms` (federated through the real secure
aggregation path, each local-only model, central, non-private; the same
early-stopping rule, :mod:`.early_stopping`), at its own tuned learning rate.

**Sample visits.** Every arm takes at most T optimiser steps (fewer when it
stops early: then its visits and its epsilon are those of the steps it
took). A DP arm samples each of its patients with probability q per step
(Poisson), so it visits each of its training patients q·t times in
expectation over t steps; the federated, central and non-private arms see
all training sites' slices, q·N·t slice visits in expectation (N: pooled
training slices; the non-private arm draws exactly round(q·N) slices per
step), and a local arm q·N_site·t, its own share. The record of each arm
holds the expected slice visits and the patients its seeded generator
actually drew (``visits``).

Each model is evaluated by :func:`simulation.engines.inprocess.simulate.evaluate_model` on the
same pooled pathological test volumes of the training sites (held-out
subjects), with the threshold fixed on the same healthy validation volumes,
beside the intensity baseline; with a held-out site, also on that site's
pathological volumes (``metrics.model.held_out``), and every model's mean anomaly score on
each training site's healthy validation volumes
(``metrics.model.healthy_residual``); :func:`.site_shift.site_shift` tests
the premise that a single-site model degrades on another site's scanner. The federated
arm's stochastic rounding in the update encoding stays on the CSPRNG (it is
part of the protocol, :mod:`secagg.encoding`): its metrics repeat up to that
rounding (at most n x 2^-29 of the update clip per coordinate per round),
the other arms' exactly.

**Parallel units** (:mod:`.parallel`): the cohorts are generated first, then
the tuning rates, then every (seed, epsilon) pair run ``jobs`` at a time,
each in its own spawned process with one torch thread; records keep the
sequential order, and the numbers do not depend on ``jobs``.

**What the report also asks.** :func:`privacy_utility_paired` pairs each
sweep epsilon with the main one by seed (is a step of the curve larger than
the seed-to-seed noise, and which way?); :func:`stopping_criterion_alignment`
gives Spearman's rho between each model's best validation loss (what tuning
and early stopping minimise) and its AUPRC (what is compared).

Outputs in ``OUT``: ``experiment.json`` (configuration and command),
``results.json`` (every arm x seed, the statistics), ``report.md`` and
``plots/`` (:mod:`.report`), ``runs/seed-S/...`` (the federated runs),
``tuning/lr-X/`` (the federated tuning runs). Every
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

from ..errors import SimulationInputError
from .arms import TrainedArm, train_arms
from .config import ARMS, ExperimentConfig
from .held_out import held_out_site_for, split_held_out_site, without_test_volumes
from .parallel import default_jobs, run_units
from .randomness import SEEDED_NOISE_LABEL
from .site_shift import healthy_residual_by_site, site_shift
from .statistics import paired_bootstrap, paired_t, rank_correlation
from .tuning import TUNING_NOTE, score_by_arm, select_learning_rate

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


class ExperimentError(SimulationInputError):
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


def _timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def _cohorts(config: ExperimentConfig, sim, seed: int, log):
    """(training cohort, held-out-site cohort or None, held-out site or None) of one seed (:mod:`.held_out`)."""
    from ..engines.inprocess.simulate import prepare_cohort

    cohort = prepare_cohort(sim, lambda text: None)
    if not config.held_out_site:
        return cohort, None, None
    site = held_out_site_for(seed, cohort.site_names)
    training, test = split_held_out_site(cohort, site)
    log(f"seed {seed}: site {site} held out (trained on {', '.join(training.site_names)})")
    return training, test, site


def _learning_rates(config: ExperimentConfig, arms, chosen: dict | None) -> dict:
    base = config.base_simulation().learning_rate
    return {arm: (chosen or {}).get(arm, base) for arm in ARMS}


def _tune_one(config: ExperimentConfig, lr: float, out: Path, *, log) -> tuple[dict, dict, str | None]:
    """One grid value on ``tuning_seed``: (arm -> best validation loss, arm -> stopped steps, held-out site)."""
    sim = config.for_seed(config.tuning_seed)
    cohort, _, held = _cohorts(config, sim, config.tuning_seed, log)
    cohort = without_test_volumes(cohort)
    trained = train_arms(sim, cohort, list(config.arms), {arm: float(lr) for arm in ARMS}, seed=config.tuning_seed,
                         tag="tune", run_dir=out / "tuning" / f"lr-{lr:g}", patience=config.patience,
                         min_improvement=config.min_improvement, log=log)
    stops: dict = {}
    for t in trained:
        stops.setdefault(t.arm, []).append(t.stopping.stopped_step)
    scores = score_by_arm(trained)
    log("  tuning lr " + f"{lr:g}: " + ", ".join(f"{a} {scores[a]:.5f}" for a in config.arms))
    return scores, stops, held


def _warm_cohort(config: ExperimentConfig, seed: int, *, log) -> None:
    """Generate and preprocess one seed's cohort into the cache (before the units that read it run in parallel:
    two processes never generate the same cohort)."""
    from ..engines.inprocess.simulate import prepare_cohort

    prepare_cohort(config.for_seed(seed), lambda text: None)
    log(f"cohort of seed {seed} ready")


def tune_learning_rates(config: ExperimentConfig, out: Path, log, *, jobs: int = 1) -> dict:
    """Every arm at every ``lr_grid`` value on ``tuning_seed``, without test volumes (:mod:`.tuning`):
    {"chosen": arm -> rate, "scores": arm -> {rate: best validation loss}, ...}; grid values run ``jobs`` at a
    time (:mod:`.parallel`)."""
    arms = list(config.arms)
    scores: dict = {arm: {} for arm in arms}
    stops: dict = {arm: {} for arm in arms}
    started = time.perf_counter()
    grid = [float(lr) for lr in config.lr_grid]
    outcomes = run_units(_tune_one, [(config, lr, out) for lr in grid], jobs=jobs, log=log)
    held = outcomes[0][2] if outcomes else None
    for lr, (by_arm, stopped, _) in zip(grid, outcomes):
        for arm in arms:
            scores[arm][str(lr)] = by_arm[arm]
            stops[arm][str(lr)] = stopped[arm]
    chosen = {arm: select_learning_rate({float(k): v for k, v in scores[arm].items()}) for arm in arms}
    log("  chosen learning rates: " + ", ".join(f"{a} {chosen[a]:g}" for a in arms))
    return {"tuning_seed": config.tuning_seed, "grid": grid, "held_out_site": held,
            "criterion": "best healthy validation loss (reconstruction MSE) under the early-stopping rule; local: "
                         "mean over its site models",
            "scores": scores, "stopped_steps": stops, "chosen": chosen, "note": TUNING_NOTE,
            "seconds": round(time.perf_counter() - started, 1)}


def _evaluate_arm(trained: TrainedArm, cohort, sim, held_out) -> dict:
    """report_metrics of the arm on the cohort's test volumes (FedDis: mean over the personalised models), and
    under ``model/held_out`` / ``intensity/held_out`` the same on the held-out site."""
    from ..engines.inprocess.simulate import evaluate_model

    reports = trained.reports or [evaluate_model(m, cohort, sim) for m in trained.models]
    metrics = _mean_metrics([report_metrics(r) for r in reports])
    # Per training site, the mean anomaly score on its healthy validation volumes (.site_shift, measure 3).
    median = reports[0].median_size  # the evaluation's own filter (one configuration per arm)
    metrics["model"]["healthy_residual"] = _mean_metrics(
        [healthy_residual_by_site(m, cohort, median) for m in trained.models])
    if held_out is not None:
        ho = _mean_metrics([report_metrics(evaluate_model(m, held_out, sim)) for m in trained.models])
        metrics["model"]["held_out"] = ho["model"]
        metrics["intensity"]["held_out"] = ho["intensity"]
    return metrics


def _run_seed(config: ExperimentConfig, seed: int, out: Path, epsilon: float | None, chosen: dict | None, *,
              log) -> list[dict]:
    """All arms of one seed at the configuration's epsilon (or, for the sweep, federated and central at ``epsilon``)."""
    sim = config.for_seed(seed, epsilon=epsilon)
    sweep = epsilon is not None
    arms = [a for a in config.arms if a in ("federated", "central")] if sweep else list(config.arms)
    tag = f"eps{epsilon:g}" if sweep else "main"
    cohort, held_out, held_site = _cohorts(config, sim, seed, log)
    run_dir = out / "runs" / f"seed-{seed}" / ("federated" if not sweep else f"federated-eps{epsilon:g}")
    trained = train_arms(sim, cohort, arms, _learning_rates(config, arms, chosen), seed=seed, tag=tag,
                         run_dir=run_dir, patience=config.patience, min_improvement=config.min_improvement, log=log)
    records = []
    for t in trained:
        (metrics, eval_seconds) = _timed(lambda: _evaluate_arm(t, cohort, sim, held_out))
        record = {"seed": seed, "arm": t.arm, "label": t.label, "epsilon_target": sim.epsilon, "sweep": sweep,
                  "metrics": metrics, "privacy": t.privacy, "visits": t.visits, "learning_rate": t.learning_rate,
                  "training": t.stopping.describe(), "held_out_site": held_site,
                  "training_sites": list(cohort.site_names), "seconds": round(t.seconds + eval_seconds, 2),
                  "seeded_noise": SEEDED_NOISE_LABEL if t.privacy.get("dp") else None}
        if t.arm == "federated" and not sweep:
            record["run_dir"] = t.run_dir
        records.append(record)
    for r in records:
        held = (f"; held-out {held_site} {r['metrics']['model']['held_out']['overall']['auprc']:.3f}"
                if held_site else "")
        log(f"  seed {seed} {r['label']:<28} AUPRC {r['metrics']['model']['overall']['auprc']:.3f}{held} "
            f"(intensity {r['metrics']['intensity']['overall']['auprc']:.3f}; lr {r['learning_rate']:g}; "
            f"step {r['training']['best_step']}/{r['training']['stopped_step']}; {r['seconds']:.0f} s)")
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
    if any("held_out" in r["metrics"]["model"] for r in fed):
        held_lesions = sorted({k for r in fed for k in r["metrics"]["model"]["held_out"]["lesion"]})
        paths += [("held_out", "overall", m) for m in ("auprc", "auroc", "dice")]
        paths += [("held_out", "lesion", k, "auprc") for k in held_lesions]
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
        # The local models of each seed (with a held-out site, the rotation leaves one site out per seed).
        of_seed = {s: [v[s] for v in locals_.values() if s in v] for s in seeds}
        common = [s for s in seeds if s in fed and of_seed[s]]
        if locals_ and common:
            others["best_local"] = {s: max(of_seed[s]) for s in common}
            others["mean_local"] = {s: float(np.mean(of_seed[s])) for s in common}
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
    return {"seeds": seeds, "metrics": stats, "privacy_utility": stats_curve,
            "privacy_utility_paired": privacy_utility_paired(records), "training": _training_summary(main),
            "site_shift": site_shift(main), "stopping_criterion": stopping_criterion_alignment(records)}


def privacy_utility_paired(records: list[dict]) -> dict:
    """arm -> sweep epsilon -> paired t of (overall AUPRC at that epsilon - at the main epsilon), pairs by seed.

    A curve is read as "more budget, more utility"; the pairing says whether a step of the curve is larger than
    the seed-to-seed noise, and in which direction."""
    out: dict = {}
    for arm in ("federated", "central"):
        main = {r["seed"]: r["metrics"]["model"]["overall"]["auprc"] for r in records
                if r["arm"] == arm and not r["sweep"] and r["privacy"].get("dp")}
        sweep: dict = {}
        for r in records:
            if r["arm"] == arm and r["sweep"]:
                sweep.setdefault(str(r["epsilon_target"]), {})[r["seed"]] = r["metrics"]["model"]["overall"]["auprc"]
        for eps, values in sweep.items():
            paired = sorted(set(values) & set(main))
            if paired:
                out.setdefault(arm, {})[eps] = paired_t([values[s] for s in paired], [main[s] for s in paired]).to_dict()
    return out


def stopping_criterion_alignment(records: list[dict]) -> dict:
    """Per arm, over every trained model of the experiment (main and sweep): Spearman's rho between the best
    healthy validation loss (what tuning and early stopping minimise) and the overall AUPRC (what is
    evaluated). rho < 0: a lower loss went with better detection (the criterion is aligned); rho >= 0: it is
    not - a model that reconstructs better may reconstruct lesions too."""
    out = {}
    for arm in ARMS:
        pairs = [(r["training"]["best_val_loss"], r["metrics"]["model"]["overall"]["auprc"]) for r in records
                 if r["arm"] == arm and (r.get("training") or {}).get("best_val_loss") is not None]
        if pairs:
            out[arm] = rank_correlation([p[0] for p in pairs], [p[1] for p in pairs])
    return out


def _training_summary(records) -> dict:
    """Per arm (local: all its site models): learning rate, stopping and best steps over seeds."""
    out: dict = {}
    for r in records:
        t = r.get("training")
        if not t:
            continue
        entry = out.setdefault(r["arm"], {"learning_rates": set(), "stopped_steps": [], "best_steps": [],
                                          "max_steps": t["max_steps"], "stopped_early": 0, "n": 0})
        entry["learning_rates"].add(r["learning_rate"])
        entry["stopped_steps"].append(t["stopped_step"])
        entry["best_steps"].append(t["best_step"])
        entry["stopped_early"] += int(bool(t["stopped_early"]))
        entry["n"] += 1
    for entry in out.values():
        entry["learning_rates"] = sorted(entry["learning_rates"])
    return out


def run_experiment(config: ExperimentConfig, out_dir, *, log: Callable[[str], None] | None = None,
                   command: str | None = None, jobs: int | None = None) -> ExperimentResult:
    """Run every seed and arm into ``out_dir`` (must not exist or be empty), then write the report.

    ``jobs``: units (tuning rates, seeds, sweep points) run at once in spawned processes, one torch thread
    each (:mod:`.parallel`; default one per CPU); the numbers do not depend on it."""
    from ..federation.runstore import atomic_write_json, private_umask
    from .report import write_report

    log = log or (lambda text: print(text, flush=True))
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExperimentError(f"{out} exists and is not an empty directory: an experiment never overwrites one")
    sweep = [float(e) for e in config.epsilons if float(e) != config.base_simulation().epsilon]
    jobs = default_jobs(len(config.seeds) * (1 + len(sweep))) if jobs is None else int(jobs)
    if jobs < 1:
        raise ExperimentError(f"jobs must be at least 1; got {jobs}")
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
        seeds = ([config.tuning_seed] if config.lr_grid else []) + list(config.seeds)
        if config.vary_data:  # one cohort per seed; without vary_data every seed shares one
            run_units(_warm_cohort, [(config, s) for s in seeds], jobs=jobs, log=log)
        else:
            run_units(_warm_cohort, [(config, seeds[0])], jobs=1, log=log)
        tuning = None
        if config.lr_grid:
            log(f"tuning learning rates {list(config.lr_grid)} per arm on seed {config.tuning_seed} "
                "(healthy validation loss; no test volume)")
            tuning = tune_learning_rates(config, out, log, jobs=jobs)
        chosen = tuning["chosen"] if tuning else None
        units = [(config, seed, out, eps, chosen) for seed in config.seeds for eps in [None, *sweep]]
        records: list[dict] = [r for seed_records in run_units(_run_seed, units, jobs=jobs, log=log)
                               for r in seed_records]
        results = {
            "seeded_noise": SEEDED_NOISE_LABEL,
            "command": command,
            "experiment": config.to_dict(),
            "simulation_base": base.to_dict(),
            "records": records,
            "tuning": tuning,
            "statistics": summarise(records, config.arms),
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_count": os.cpu_count(),
            "jobs": jobs,
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
