"""Break (MEDIUM, integrity of what is published): DPIA and export call a rewritten ledger "verified".

``secagg dpia`` (simulation/reports/dpia/facts.py ``read_run``) and ``secagg export`` (simulation/reports/export.py
``model_from_run``) call ``verify_ledger(run_dir)`` with no registry and no anchors, and take no
``--registry``/``--anchors`` option. A coordinator that lowers every spend's DP-SGD steps,
recomputes the epsilons, rehashes the chain and rewrites the head (the classic issue-15 rewrite,
which ``ledger verify --registry`` catches) gets a DPIA whose ledger row reads "hash chain
verified, epsilons re-derived" with the lowered epsilons, and an exported model whose manifest
says "privacy ledger of the run, re-derived and verified by dp.verify_ledger" - nothing says the
site signatures were not checked.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .ledger_rewrite import ledger_rows, recompute_epsilons, rewrite_ledger

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          timeout=900, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def rewritten(shared_tiny_run, tmp_path_factory):
    """A copy of the session's shared tiny run (3 sites, 2 rounds x 3 steps, no baselines; tests/shared_runs.py)
    whose ledger the coordinator rewrote: every spend claims 1 step (a smaller epsilon), hashes recomputed."""
    from .shared_runs import copy_run

    assert shared_tiny_run.returncode == 0, shared_tiny_run.stderr[-2000:]
    run = copy_run(shared_tiny_run, tmp_path_factory.mktemp("a15c-dpia") / "run")
    rows = ledger_rows(run)
    assert {body["event"]["steps"] for kind, body in rows if kind == "spend"} == {3}  # so that 1 is a rewrite
    for kind, body in rows:
        if kind == "spend":
            body["event"]["steps"] = 1  # fewer DP-SGD steps: a smaller epsilon
    rewrite_ledger(run, recompute_epsilons(rows))
    assert _cli("ledger", "verify", str(run), "--registry", str(run / "registry.json")).returncode == 1
    return run


def test_dpia_does_not_call_a_rewritten_ledger_verified(rewritten, tmp_path):
    out = tmp_path / "dpia.md"
    proc = _cli("dpia", str(rewritten), "--format", "md", "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-1000:]
    text = out.read_text()
    ledger_line = next(line for line in text.splitlines() if "hash chain" in line)
    assert "BROKEN" in ledger_line or "not checked" in ledger_line, ledger_line


def test_export_does_not_call_a_rewritten_ledger_verified(rewritten, tmp_path):
    proc = _cli("export", str(rewritten), "--out", str(tmp_path / "model.secagg"), "--json")
    if proc.returncode == 0:
        privacy = json.loads(proc.stdout)["privacy"]
        text = json.dumps(privacy)
        assert "not checked" in text or "signature" in text, \
            f"exported with the rewritten ledger's epsilons {privacy['epsilon_per_site']}, 'verified': {privacy['source']}"
    else:
        assert "Traceback" not in proc.stderr
