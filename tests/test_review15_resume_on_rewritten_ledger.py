"""Break (HIGH, privacy): `secagg simulate --resume` continues on a rehashed ledger and regains budget.

``PrivacyLedger.open`` (the only check on the resume path, simulation/simulate.py ``open_run``)
checks the hash chain, not the sites' signatures, the round records or the anchors - although the
run directory it resumes holds the registry (``registry.json``) and every site's anchor
(``sites/SITE/ledger.anchor.json``). A coordinator that deletes the last committed round
(its spends and round record), rehashes the chain with the public formula and rewrites the head
resumes cleanly: the resumed run never charges the deleted round again, so every site has
round 0's epsilon back. (The same holds for a genesis whose budgets were raised, or spends with
lowered steps.) Worse, the resumed run's sites re-anchor the rewritten chain (``_write_anchor``
keeps a stale anchor at an equal seq, then the next round's higher seq overwrites it), so
afterwards ``verify_ledger`` with the registry and the anchors in RUN_DIR/sites says ok=True:
only an auditor's copy of the anchors taken before the rewrite still catches it. Observed:
charged rounds {'site-1': [1, 2], ...} (round 0 released, never charged), verify ok=True.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dp import PrivacyLedger, load_anchors, verify_ledger
from simulation.identity import load_registry

from .ledger_rewrite import ledger_rows, rewrite_ledger

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _stopped_run(out: Path, cache: Path) -> None:
    """A 3-round tiny run stopped after round 0 (as if interrupted), written by the project's own code."""
    from simulation.config import load_config
    from simulation.simulate import run_simulation

    config = load_config(preset="tiny", toml_path=None, data=None, sites=3, rounds=3, mode="secagg", dropout=None,
                         dropout_schedule=None, epsilon=None, delta=None, model=None, seed=None, threshold=None,
                         baselines=(), local_steps=2, image_size=None, active=None, cache_dir=str(cache),
                         distributed_dp=None, ddp_epsilon=None, ddp_clip=None, ddp_colluding=None,
                         corrupt_fraction=None, bids=None, privacy_unit=None, skip_invalid=None)
    run_simulation(config, out, quiet=True, stop_after_round=0)


def test_resume_refuses_a_ledger_whose_last_round_was_deleted_and_rehashed(tmp_path):
    run = tmp_path / "run"
    _stopped_run(run, tmp_path / "cache")
    with PrivacyLedger.open(run) as ledger:
        assert ledger.committed_rounds() == {0}
    # The coordinator's rewrite: drop round 0 (3 spends and its record), rehash, rewrite the head.
    rows = ledger_rows(run)
    assert [k for k, _ in rows] == ["genesis", "spend", "spend", "spend", "round"]
    rewrite_ledger(run, rows[:1])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", "simulate", "--resume", str(run), "--json"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    with PrivacyLedger.open(run) as ledger:
        charged = {s: sorted(e.round for e in ledger.events(s)) for s in ledger.budgets}
    report = verify_ledger(run, registry=load_registry(run / "registry.json"), anchors=load_anchors([run / "sites"]))
    assert proc.returncode != 0, (
        f"resume accepted a rewritten ledger: rounds charged now {charged} (round 0 released but no longer "
        f"charged); verify with registry and anchors afterwards: ok={report.ok} ({report.reason})")
    assert "Traceback" not in proc.stderr
