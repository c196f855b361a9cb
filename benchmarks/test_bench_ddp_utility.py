"""Utility cost of distributed DP: AUPRC of the federated model against the site-level epsilon.

Runs the tiny simulation (3 synthetic sites, 4 rounds) without distributed DP and with the
Skellam mechanism at several site-level budgets, then plots AUPRC and Dice against epsilon
into ``$RESULTS/ddp_utility.png`` (+ ``ddp_utility.json``). Slow (a few minutes); part of
``make bench``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

EPSILONS = (1.0, 10.0, 100.0, 1000.0)


@pytest.mark.slow
def test_ddp_utility_sweep(benchmark, tmp_path):
    from simulation.config import load_config
    from simulation.engines.inprocess.simulate import run_simulation

    cache = os.environ.get("SECAGG_BENCH_CACHE", str(tmp_path / "cache"))

    def run(ddp_epsilon):
        overrides = {"rounds": 4, "baselines": (), "cache_dir": cache}
        if ddp_epsilon is not None:
            overrides.update(distributed_dp="skellam", ddp_epsilon=ddp_epsilon)
        config = load_config(preset="tiny", **overrides)
        out = tmp_path / f"run-{ddp_epsilon}"
        summary = run_simulation(config, out, quiet=True).summary
        return summary["detection"]["federated"], summary["detection"]["intensity_baseline"]

    def sweep():
        points = {}
        for eps in EPSILONS:
            points[eps] = run(eps)[0]
        points["off"], baseline = run(None)
        return points, baseline

    points, baseline = benchmark.pedantic(sweep, rounds=1, iterations=1)
    out = Path(os.environ.get("RESULTS", "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ddp_utility.json").write_text(json.dumps(
        {"site_level_epsilon": {str(k): v for k, v in points.items()}, "intensity_baseline": baseline}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.semilogx(EPSILONS, [points[e]["auprc"] for e in EPSILONS], marker="o", label="AUPRC, Skellam distributed DP")
    ax.semilogx(EPSILONS, [points[e]["dice"] for e in EPSILONS], marker="s", label="Dice, Skellam distributed DP")
    ax.axhline(points["off"]["auprc"], color="tab:blue", ls="--", label="AUPRC, no distributed DP")
    ax.axhline(points["off"]["dice"], color="tab:orange", ls="--", label="Dice, no distributed DP")
    ax.set(xlabel="site-level epsilon (whole run, delta 1e-5)", ylabel="detection metric",
           title="utility cost of site-level DP (3 sites, tiny cohort)")
    ax.legend(fontsize=7)
    fig.savefig(out / "ddp_utility.png", dpi=110)
    plt.close(fig)
    benchmark.extra_info.update({str(k): v for k, v in points.items()})
    assert all(0 <= p["auprc"] <= 1 for p in points.values())
