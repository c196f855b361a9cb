"""Issue 9, continued from ``tests/test_flower.py`` on its harness (SuperLink, SuperNodes, ``flwr run``).

* Flower's **simulation engine**: a SuperLink in ``--simulation`` mode with 3 simulated nodes (Ray),
  two rounds, site-3 dropping at round 1's MaskedInputCollection; checked as the deployment run of
  ``tests/test_flower.py`` is (:func:`tests.flower_processes.check_run`: metrics, both sides' ledgers,
  the global model against the in-process engine and numpy's FedAvg).
* **DP-SGD on real NIfTI data at the nodes**, with one node whose own budget is too small: it refuses
  the round at setup and spends nothing; the others train, release and spend within the run's budget.

These two runs were in ``tests/test_flower.py``; they live in a file of their own so that ``make test``
(``--dist loadfile``: one worker per file) runs them beside that file's federations, on another
worker with its own block of loopback ports, instead of after them.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("flwr")

from dp import PrivacyLedger  # noqa: E402
from tests.flower_processes import SITES, check_run  # noqa: E402

pytestmark = pytest.mark.slow


def test_simulation_engine_two_rounds_with_a_dropout(federation, tmp_path):
    pytest.importorskip("ray")
    federation.superlink("--simulation")
    run_dir = tmp_path / "run"
    # Simulated nodes have no config of their own: the run config names their drop and state.
    summary = federation.run(run_dir, "--federation-config", "num-supernodes=3 client-resources-num-cpus=1",
                             update="synthetic", **{"simulate-drop": "site-3:1:mask",
                                                    "node-state-root": str(tmp_path / "nodes"),
                                                    "node-epsilon-budget": 8.0})
    check_run(run_dir, summary, {site: tmp_path / "nodes" / site for site in SITES})


def test_dp_sgd_on_nifti_data_at_the_nodes_and_a_node_enforces_its_own_budget(federation, tmp_path):
    import models

    cohort = tmp_path / "cohort"
    models.generate_cohort(cohort, sites=3, scale="tiny", seed=0)
    federation.superlink()
    states = {site: tmp_path / f"node-{site}" for site in SITES}
    site_dirs = sorted(p for p in cohort.iterdir() if p.is_dir())
    for i, site in enumerate(SITES):
        budget = 0.5 if site == "site-3" else 8.0  # site-3 allows far less than the run's 8.0
        federation.supernode(i, f'site="{site}" data="{site_dirs[i]}" state-dir="{states[site]}" '
                                f'epsilon-budget={budget}')
    run_dir = tmp_path / "run"
    # No site drops here (site-3 refuses at setup), so a longer stage timeout costs nothing when the nodes are
    # honest, and local DP-SGD on a loaded 2-core machine once took longer than 45 s (a flake seen twice).
    summary = federation.run(run_dir, rounds=1, **{"image-size": 32, "stage-timeout": 150.0})
    assert summary["rounds_completed"] == 1 and summary["privacy"]["ledger_verified"], summary
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert record["survivors_per_stage"]["advertise"] == ["site-1", "site-2"]  # site-3 refused the setup
    assert record["included"] == record["released"] == ["site-1", "site-2"]
    assert summary["privacy"]["epsilon_spent"]["site-3"] is None
    assert 0 < summary["privacy"]["epsilon_spent"]["site-1"] <= 8.0
    own = PrivacyLedger.open(states["site-3"] / "ledger")  # created for its check; nothing spent
    try:
        assert own.events("site-3") == []
    finally:
        own.close()
    assert (run_dir / "checkpoints" / "global.pt").exists()
