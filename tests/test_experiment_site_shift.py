"""The premise measures of simulation.experiment.site_shift: same-volume in-site vs cross-site contrasts on
known records, the healthy residual of a known reconstruction, and the report's verdicts."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from models import SliceVolume
from simulation.experiment import healthy_residual_by_site, render_report, site_shift


def _one(v):
    return {"auprc": v, "auroc": 0.9, "dice": 0.3, "n_volumes": 2}


def _local(seed, own, auprc_on: dict, healthy_on: dict | None = None):
    model = {"overall": _one(0.0), "lesion": {}, "site": {s: _one(v) for s, v in auprc_on.items()}}
    if healthy_on is not None:
        model["healthy_residual"] = dict(healthy_on)
    return {"seed": seed, "arm": "local", "label": f"local {own}", "visits": {"site": own}, "sweep": False,
            "metrics": {"model": model, "intensity": {}}}


def _records():
    # seed -> site -> (AUPRC on site-a, site-b, site-c), (healthy residual on site-a, site-b, site-c)
    table = {
        0: {"site-a": ((0.50, 0.30, 0.20), (1.0, 3.0, 2.0)),
            "site-b": ((0.40, 0.35, 0.10), (2.0, 1.5, 4.0)),
            "site-c": ((0.30, 0.20, 0.40), (3.0, 3.0, 1.0))},
        1: {"site-a": ((0.60, 0.10, 0.30), (1.0, 2.0, 2.0)),
            "site-b": ((0.20, 0.30, 0.10), (4.0, 1.0, 2.0)),
            "site-c": ((0.50, 0.20, 0.20), (2.0, 2.0, 2.0))},
    }
    sites = ("site-a", "site-b", "site-c")
    records = []
    for seed, by_site in table.items():
        for own, (auprc, healthy) in by_site.items():
            records.append(_local(seed, own, dict(zip(sites, auprc)), dict(zip(sites, healthy))))
    return table, sites, records


def _expected(table, sites, which, combine):
    per_seed = []
    for by_site in table.values():
        diffs = []
        for j, site in enumerate(sites):
            mine = by_site[site][which][j]
            cross = [by_site[k][which][j] for k in sites if k != site]
            diffs.append(combine(mine, float(np.mean(cross))))
        per_seed.append(float(np.mean(diffs)))
    return per_seed


def test_same_volumes_is_in_site_minus_mean_cross_site_on_each_sites_own_volumes():
    table, sites, records = _records()
    shift = site_shift(records)
    want = _expected(table, sites, 0, lambda mine, cross: mine - cross)
    assert shift["same_volumes"]["seeds"] == [0, 1]
    assert shift["same_volumes"]["values"] == pytest.approx(want)
    assert shift["same_volumes"]["t"]["mean"] == pytest.approx(np.mean(want))
    assert "model" not in shift  # no held-out site in these records: measure 1 is absent, not invented


def test_healthy_residual_is_the_log_ratio_cross_site_over_in_site():
    table, sites, records = _records()
    shift = site_shift(records)
    want = _expected(table, sites, 1, lambda mine, cross: math.log(cross) - math.log(mine))
    assert shift["healthy_residual"]["values"] == pytest.approx(want)
    # Records written before the healthy residual was measured give None for that part, the rest stays.
    for r in records:
        del r["metrics"]["model"]["healthy_residual"]
    older = site_shift(records)
    assert older["healthy_residual"] is None and older["same_volumes"] is not None


def test_a_seed_with_one_local_model_has_no_in_site_vs_cross_site_pair():
    _, _, records = _records()
    lone = [_local(5, "site-a", {"site-a": 0.5}, {"site-a": 1.0})]
    assert site_shift(lone) is None
    shift = site_shift(records + lone)
    assert shift["same_volumes"]["seeds"] == [0, 1]


def _volume(name, image, brain):
    s, h, w = image.shape
    return SliceVolume(name=name, source=Path(name), image=image.astype(np.float32), brain=brain, lesion=None,
                       grid_affine=np.eye(4), slice_fraction=np.linspace(0, 1, s), intensity_scale=1.0)


def test_healthy_residual_by_site_is_the_mean_filtered_positive_residual_over_brain_voxels():
    brain = np.zeros((2, 8, 8), dtype=bool)
    brain[:, 2:6, 2:6] = True
    a1 = _volume("a1", np.where(brain, 1.0, 0.0), brain)
    a2 = _volume("a2", np.where(brain, 1.5, 0.0), brain)
    b1 = _volume("b1", np.where(brain, 2.0, 0.0), brain)
    unused = _volume("a-train", np.where(brain, 9.0, 0.0), brain)  # a site's healthy volume not in validation
    cohort = SimpleNamespace(site_names=["site-a", "site-b"], val=[a1, a2, b1],
                             examples={"site-a": SimpleNamespace(healthy=[a1, a2, unused]),
                                       "site-b": SimpleNamespace(healthy=[b1])})
    # Reconstruction = 0.5 everywhere: the positive residual is image - 0.5 in the brain, constant per volume,
    # so the median filter leaves it unchanged inside the (4x4) brain at size 1.
    out = healthy_residual_by_site(lambda batch: np.full_like(batch, 0.5), cohort, 1)
    assert out == pytest.approx({"site-a": (0.5 + 1.0) / 2, "site-b": 1.5})


def _results_with(shift):
    return {"statistics": {"seeds": [0, 1], "metrics": {}, "site_shift": shift, "privacy_utility": {},
                           "training": {}, "stopping_criterion": None},
            "experiment": {"name": "t", "arms": ["federated", "local"], "vary_data": False},
            "simulation_base": {"scale": "tiny", "sites": 3, "image_size": 32, "model": "m", "mode": "secagg",
                                "sample_rate": 0.2, "learning_rate": 1e-3, "rounds": 2, "local_steps": 5},
            "records": [], "command": "secagg experiment --test", "seconds": 60, "cpu_count": 2}


def test_the_report_states_each_measure_with_its_verdict():
    _, _, records = _records()
    shift = site_shift(records)
    shift["same_volumes"]["t"].update(mean=-0.01, low=-0.05, high=0.03)
    shift["healthy_residual"]["t"].update(mean=0.4, low=0.1, high=0.7)
    text = "\n".join(line for line in render_report(_results_with(shift), []).splitlines()
                     if "in-site vs cross-site" in line or "does not decide detection" in line)
    assert "-0.010 [-0.050, 0.030] AUPRC" in text and "**not shown** (the interval includes 0)" in text
    assert "×1.49" in text and "**shown**" in text  # exp(0.4) = 1.49
    assert "does not decide detection" in text
    shift["healthy_residual"]["variance_shares"] = {"model": 0.8, "site": 0.15, "interaction": 0.05}
    assert ("80% from which site trained the model, 15% from which site is scored, 5% neither"
            in render_report(_results_with(shift), []))
    shift["same_volumes"]["t"].update(mean=-0.1, low=-0.15, high=-0.05)
    text = render_report(_results_with(shift), [])
    assert "**refuted** (the interval lies below 0)" in text


def test_variance_shares_split_the_log_residual_into_model_site_and_neither():
    from simulation.experiment import healthy_variance_shares

    sites = ("a", "b", "c")

    def seed(f):
        return {k: {"healthy_residual": {j: f(i, jj) for jj, j in enumerate(sites)}} for i, k in enumerate(sites)}

    # Only the model matters (row effect): every share goes to "model".
    only_model = healthy_variance_shares(seed(lambda i, j: math.exp(i)))
    assert only_model == pytest.approx({"model": 1.0, "site": 0.0, "interaction": 0.0})
    only_site = healthy_variance_shares(seed(lambda i, j: math.exp(2 * j)))
    assert only_site == pytest.approx({"model": 0.0, "site": 1.0, "interaction": 0.0})
    # A pure in-site advantage (lower on the diagonal) has equal row and column means: all interaction.
    diagonal = healthy_variance_shares(seed(lambda i, j: 1.0 if i == j else math.e))
    assert diagonal["interaction"] == pytest.approx(1.0) and diagonal["model"] == pytest.approx(0.0)
    assert healthy_variance_shares({"a": {"healthy_residual": {"a": 1.0}}}) is None  # 1 x 1: nothing to split
    _, _, records = _records()
    shares = site_shift(records)["healthy_residual"]["variance_shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
