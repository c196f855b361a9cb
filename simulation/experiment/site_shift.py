"""Does a single-site model degrade on another site's scanner? The study's premise, measured three ways.

FedDis rests on it: a model trained at one hospital meets another hospital's
scanner as a domain shift, does worse there, and federation helps because it
has seen every scanner. Each measure below is a paired difference per seed,
with t and bootstrap 95% intervals over the seeds (:mod:`.statistics`).

1. **Held-out site** (``model`` / ``intensity`` / ``beyond_intensity``): local
   model k on its own site's held-out subjects minus the same model on the
   held-out site, beside the intensity baseline (which trains on nothing) on
   the same site pairs. Weakness: the two test sets hold *different*
   patients, so their difficulty differs (in the tiny cohorts, 2 volumes per
   lesion type and site); the baseline's change is only a proxy for that.
2. **Same volumes, in-site vs cross-site** (``same_volumes``): on site j's
   pathological test volumes, AUPRC of the local model trained at j minus
   the mean AUPRC of the other sites' local models *on the same volumes*.
   The volumes, lesions and threshold rule are identical, so only the
   training site differs: the textbook in-domain vs cross-domain contrast.
   Averaged over the sites j of a seed. Confound left: the sites' training
   sets differ in size (the cohorts are unequal by design); every site is
   in turn the in-site and a cross-site model, which balances it on average
   but not per site.
3. **Healthy residual, in-site vs cross-site** (``healthy_residual``): the
   same contrast on site j's *healthy* validation volumes, with the mean
   anomaly score (median-filtered positive residual, the map the detector
   thresholds) over brain voxels in place of AUPRC, as
   ``log(mean_k!=j r_kj) - log(r_jj)``. Positive: the other sites' models
   reconstruct site j's normal tissue worse than j's own model - the model
   *sees* the scanner shift. If (3) is positive and (2) is not, the shift is
   real for the model but does not decide detection at this scale (its own
   error floor, or the lesions' contrast, dominates). Needs the per-site
   healthy residuals the runner records (``metrics.model.healthy_residual``);
   records without them give ``None`` for this part. Beside it,
   :func:`healthy_variance_shares` splits the variance of the log residual
   into the model (which site trained it), the scored site, and what neither
   explains: if the model term dominates, how well a model learned at all -
   not which scanner it meets - sets its error on normal tissue.

A positive difference in (1)-(3) supports the premise; "shown" in the report
means the 95% t-interval excludes 0.
"""

from __future__ import annotations

import math

import numpy as np

from .statistics import paired_bootstrap, paired_t

__all__ = ["healthy_residual_by_site", "healthy_variance_shares", "site_shift"]


def healthy_residual_by_site(model, cohort, median_size) -> dict:
    """site -> mean anomaly score over the brain voxels of that site's healthy validation volumes.

    The score is :func:`models.score_volume`'s ``score`` (positive residual, median-filtered with
    ``median_size``, the evaluation's own filter): what the detector thresholds, so a higher mean on healthy
    tissue is more false positives at any threshold."""
    import models

    reconstruct = models.as_reconstruct_fn(model)
    val_ids = {id(v) for v in cohort.val}
    out = {}
    for name in cohort.site_names:
        volumes = [v for v in cohort.examples[name].healthy if id(v) in val_ids]
        if not volumes:
            continue
        total, voxels = 0.0, 0
        for volume in volumes:
            score = models.score_volume(volume, reconstruct, median_size=median_size).score
            total += float(score[volume.brain].sum(dtype=np.float64))
            voxels += int(volume.brain.sum())
        if voxels:
            out[name] = total / voxels
    return out


def _interval(values: list[float], baseline: list[float] | None = None) -> dict:
    other = baseline if baseline is not None else [0.0] * len(values)
    return {"t": paired_t(values, other).to_dict(), "bootstrap": paired_bootstrap(values, other).to_dict()}


def _local_models(records) -> dict:
    """seed -> {own site -> that local model's metrics["model"]}."""
    out: dict = {}
    for r in records:
        if r["arm"] == "local" and r["visits"].get("site"):
            out.setdefault(r["seed"], {})[r["visits"]["site"]] = r["metrics"]["model"]
    return out


def _in_vs_cross(models_of_seed: dict, value) -> float | None:
    """Mean over sites j of value(in-site on j) - value(mean cross-site on j); None without a pair."""
    diffs = []
    for j, own in models_of_seed.items():
        mine = value(own, j)
        cross = [value(m, j) for k, m in models_of_seed.items() if k != j]
        cross = [c for c in cross if c is not None]
        if mine is not None and cross:
            diffs.append(mine - float(np.mean(cross)))
    return float(np.mean(diffs)) if diffs else None


def _auprc_on(model: dict, site: str):
    entry = model.get("site", {}).get(site)
    return None if entry is None else entry["auprc"]


def _healthy_log_ratio(models_of_seed: dict) -> float | None:
    """Mean over sites j of log(mean cross-site healthy residual on j) - log(in-site residual on j)."""
    diffs = []
    for j, own in models_of_seed.items():
        mine = own.get("healthy_residual", {}).get(j)
        cross = [m.get("healthy_residual", {}).get(j) for k, m in models_of_seed.items() if k != j]
        cross = [c for c in cross if c is not None and c > 0]
        if mine is not None and mine > 0 and cross:
            diffs.append(math.log(float(np.mean(cross))) - math.log(mine))
    return float(np.mean(diffs)) if diffs else None


def healthy_variance_shares(models_of_seed: dict) -> dict | None:
    """Two-way decomposition of the log healthy residual ``L[k, j]`` (model trained at k, scored on site j).

    ``L = m + a_k + b_j + e_kj`` with row, column and grand means; the shares of the total sum of squares are
    ``model`` (which site trained the model: how well it learned at all), ``site`` (which scanner is scored:
    how hard that site's normal tissue is for every model) and ``interaction`` (what neither explains; the
    in-site advantage the premise predicts lives here, on the diagonal). None without a full k x j matrix of
    at least 2 x 2."""
    sites = sorted(models_of_seed)
    try:
        table = np.array([[models_of_seed[k]["healthy_residual"][j] for j in sites] for k in sites], dtype=float)
    except KeyError:
        return None
    if table.shape[0] < 2 or np.any(table <= 0):
        return None
    logs = np.log(table)
    grand = logs.mean()
    rows, cols = logs.mean(axis=1) - grand, logs.mean(axis=0) - grand
    inter = logs - grand - rows[:, None] - cols[None, :]
    ss = {"model": logs.shape[1] * float(np.sum(rows ** 2)), "site": logs.shape[0] * float(np.sum(cols ** 2)),
          "interaction": float(np.sum(inter ** 2))}
    total = sum(ss.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in ss.items()}


def _held_out_site(records) -> dict | None:
    rows: dict = {"model": {}, "intensity": {}}
    baseline = {r["seed"]: r["metrics"]["intensity"] for r in records if r["arm"] == "federated"}
    for r in records:
        if r["arm"] != "local" or "held_out" not in r["metrics"]["model"]:
            continue
        own = r["visits"].get("site")
        model, intensity = r["metrics"]["model"], baseline.get(r["seed"])
        if own not in model["site"] or intensity is None or own not in intensity["site"]:
            continue
        rows["model"].setdefault(r["seed"], []).append(
            model["site"][own]["auprc"] - model["held_out"]["overall"]["auprc"])
        rows["intensity"].setdefault(r["seed"], []).append(
            intensity["site"][own]["auprc"] - intensity["held_out"]["overall"]["auprc"])
    seeds = sorted(set(rows["model"]) & set(rows["intensity"]))
    if not seeds:
        return None
    model = [float(np.mean(rows["model"][s])) for s in seeds]
    intensity = [float(np.mean(rows["intensity"][s])) for s in seeds]
    return {"seeds": seeds, "model": _interval(model), "intensity": _interval(intensity),
            "beyond_intensity": _interval(model, intensity)}


def _per_seed(by_seed: dict, measure) -> dict | None:
    values = {s: measure(m) for s, m in sorted(by_seed.items())}
    values = {s: v for s, v in values.items() if v is not None}
    if not values:
        return None
    return {"seeds": list(values), "values": list(values.values()), **_interval(list(values.values()))}


def site_shift(records) -> dict | None:
    """The three measures of the module docstring from the experiment's records (main epsilon only).

    Keys: ``seeds``, ``model``, ``intensity``, ``beyond_intensity`` (1; present only with a held-out site),
    ``same_volumes`` (2) and ``healthy_residual`` (3), each None when the records cannot give it. None when
    no record has two local models or a held-out site."""
    held = _held_out_site(records)
    by_seed = {s: m for s, m in _local_models(records).items() if len(m) >= 2}
    same = _per_seed(by_seed, lambda m: _in_vs_cross(m, _auprc_on))
    healthy = _per_seed(by_seed, _healthy_log_ratio)
    if healthy is not None:
        shares = [v for v in (healthy_variance_shares(by_seed[s]) for s in healthy["seeds"]) if v is not None]
        healthy["variance_shares"] = ({k: float(np.mean([v[k] for v in shares])) for k in shares[0]}
                                      if shares else None)
    if held is None and same is None and healthy is None:
        return None
    out: dict = dict(held) if held else {"seeds": sorted(by_seed)}
    out["same_volumes"] = same
    out["healthy_residual"] = healthy
    return out
