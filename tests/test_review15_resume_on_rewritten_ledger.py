"""Issue-15 reviews (rounds 2 and 3): a resume, the DPIA and export never trust a rewritten ledger.

A coordinator without any site key can delete the last committed round (tail entries: the signatures
left stay valid), rehash the chain and rewrite the head. Round 2 found that `secagg simulate --resume`
then continued and never charged the deleted round; round 3 found the same once the in-directory
anchors were deleted too, that one unreadable anchor dropped all of them, and that the published
scope text claimed protection it had not given. Now the resume, `secagg dpia` and `secagg export`
verify with the run directory's registry and anchors (simulation/federation/ledger_check.py), a missing or
unreadable anchor of a site that spent fails, a round the run recorded as completed must be in the
ledger, and the scope text says when no anchor was checked.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dp import PrivacyLedger, load_anchors, verify_ledger
from simulation.federation.identity import load_registry

from .ledger_rewrite import ledger_rows, rewrite_ledger

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _stopped_run(out: Path, cache: Path) -> None:
    """A 3-round tiny run stopped after round 0 (as if interrupted), written by the project's own code."""
    from simulation.config import load_config
    from simulation.engines.inprocess.simulate import run_simulation

    config = load_config(preset="tiny", toml_path=None, data=None, sites=3, rounds=3, mode="secagg", dropout=None,
                         dropout_schedule=None, epsilon=None, delta=None, model=None, seed=None, threshold=None,
                         baselines=(), local_steps=2, image_size=None, active=None, cache_dir=str(cache),
                         distributed_dp=None, ddp_epsilon=None, ddp_clip=None, ddp_colluding=None,
                         corrupt_fraction=None, bids=None, privacy_unit=None, skip_invalid=None)
    run_simulation(config, out, quiet=True, stop_after_round=0)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, shared_tiny_run):
    from tests.shared_runs import seed_cache

    base = tmp_path_factory.mktemp("stopped")
    seed_cache(shared_tiny_run.cache, base / "cache")  # the same cohort (tiny, 3 sites), not generated again
    _stopped_run(base / "run", base / "cache")
    return base / "run"


@pytest.fixture
def run(stopped, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(stopped, copy)
    return copy


def _resume(run):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "simulation.cli", "simulate", "--resume", str(run), "--json"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)


def test_resume_refuses_a_ledger_whose_last_round_was_deleted_and_rehashed(run):
    with PrivacyLedger.open(run) as ledger:
        assert ledger.committed_rounds() == {0}
    # The coordinator's rewrite: drop round 0 (3 spends and its record), rehash, rewrite the head.
    rows = ledger_rows(run)
    assert [k for k, _ in rows] == ["genesis", "spend", "spend", "spend", "round"]
    rewrite_ledger(run, rows[:1])
    proc = _resume(run)
    with PrivacyLedger.open(run) as ledger:
        charged = {s: sorted(e.round for e in ledger.events(s)) for s in ledger.budgets}
    report = verify_ledger(run, registry=load_registry(run / "registry.json"), anchors=load_anchors([run / "sites"]))
    assert proc.returncode != 0, (
        f"resume accepted a rewritten ledger: rounds charged now {charged} (round 0 released but no longer "
        f"charged); verify with registry and anchors afterwards: ok={report.ok} ({report.reason})")
    assert "Traceback" not in proc.stderr


def test_resume_refuses_a_truncated_ledger_whose_anchors_were_deleted_too(run):
    rewrite_ledger(run, ledger_rows(run)[:1])  # round 0 dropped: no site key needed (tail entries)
    for path in (run / "sites").glob("*/ledger.anchor.json"):
        path.unlink()  # and the evidence that it was committed: no key needed either
    proc = _resume(run)
    assert proc.returncode != 0 and "completed round(s) [0] but its ledger commits no spend" in proc.stderr, \
        proc.stderr[-600:]
    assert "Traceback" not in proc.stderr
    from simulation.federation.ledger_check import verify_run_ledger

    check = verify_run_ledger(run)  # what `secagg dpia` and `secagg export` publish: no protection claimed
    assert "NO site anchor was found" in check.scope and "stops a rewrite" not in check.scope


def test_one_unreadable_anchor_does_not_drop_the_others(run):
    from simulation.federation.ledger_check import verify_run_ledger

    anchors = sorted((run / "sites").glob("*/ledger.anchor.json"))
    assert len(anchors) == 3
    rewrite_ledger(run, ledger_rows(run)[:1])  # round 0 deleted, no key used
    anchors[0].write_text("not json")  # one file garbled; two intact anchors remain above the ledger's end
    check = verify_run_ledger(run)
    assert not check.report.ok and "truncated" in check.report.reason, check.report.reason
    anchors[1].unlink(), anchors[2].unlink()  # with none intact, the garbled one alone still fails the check
    check = verify_run_ledger(run)
    assert not check.report.ok and "does not read" in check.report.reason, check.report.reason
