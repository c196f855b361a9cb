"""The federated simulation end to end: CLI per mode, resume after SIGKILL, the coordinator's view."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("nilearn")

import secagg  # noqa: E402
from secagg import wire  # noqa: E402
from secagg.messages import MaskedInput  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory, shared_tiny_run):
    """One synthetic cohort (and preprocessing cache) for every simulation test: a copy of the cache of the
    session's shared tiny run (tests/shared_runs.py), whose cohort (tiny, 3 sites, data seed 0) these runs use."""
    from tests.shared_runs import seed_cache

    return str(seed_cache(shared_tiny_run.cache, tmp_path_factory.mktemp("secagg-cache") / "cache"))


def secagg_cli(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["secagg", "secagg+", "he", "plain"])
def test_tiny_run_each_mode(mode, tmp_path, cache_dir, request):
    out = tmp_path / "run"
    if mode == "secagg":
        # This very command is the session's shared tiny run (tests/shared_runs.TINY, run once for this test,
        # test_dpia, test_file_modes and test_review15_dpia_...): its exit code and output, and a copy of its run
        # directory (the ledger checks below open it).
        from tests.shared_runs import TINY, copy_run

        shared = request.getfixturevalue("shared_tiny_run")
        assert TINY == ("simulate", "--tiny", "--mode", mode)
        code, stdout, stderr = shared.returncode, shared.stdout, shared.stderr
        copy_run(shared, out)
    else:
        code, stdout, stderr = secagg_cli("simulate", "--tiny", "--mode", mode, "--out", str(out),
                                          "--cache-dir", cache_dir, "--json")
    assert code == 0, stderr[-2000:]
    summary = json.loads(stdout)
    assert summary["mode"] == mode and summary["rounds_completed"] == 2
    assert summary["privacy"]["ledger_verified"]
    if mode == "plain":
        assert "PLAIN" in summary["protection"]
    if mode == "he":
        assert "WEAKER trust model" in summary["protection"]
    for name in ("config.json", "state.json", "metrics.jsonl", "ledger.sqlite", "ledger.head.json", "summary.json"):
        assert (out / name).exists(), name
    assert (out / "checkpoints" / "global.pt").exists()
    assert (out / "plots" / "training.png").exists()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [0, 1]
    # Wall times are kept with the sites (training time grows with a site's data size), never published.
    timings = [json.loads(line) for line in (out / "site-local" / "timings.jsonl").read_text().splitlines()]
    assert [t["round"] for t in timings] == [0, 1] and all("SITE-LOCAL" in t["site_local"] for t in timings)
    for m, t in zip(metrics, timings):
        assert "seconds" not in m
        assert set(t["seconds"]) >= {"train", "encode", "protocol", "ledger", "decode_apply"}
        assert m["bytes_up"]["upload" if mode == "he" else "mask"] > 0
        assert all(eps <= 10.0 for eps in m["epsilon"].values() if eps is not None)
    det = summary["detection"]
    for key in ("federated", "intensity_baseline"):
        assert 0.0 <= det[key]["auroc"] <= 1.0 and 0.0 <= det[key]["dice"] <= 1.0
    code, stdout, _ = secagg_cli("ledger", "verify", str(out))
    assert code == 0, stdout
    # Every spend is signed by its site, and every site's anchor matches the ledger.
    code, stdout, _ = secagg_cli("ledger", "verify", str(out), "--registry", str(out / "registry.json"),
                                 "--anchors", str(out / "sites"))
    spends = sum(len(m["released"]) for m in metrics)
    assert code == 0 and f"{spends} site signatures verified" in stdout and spends > 0, stdout
    assert f"{len(summary['sites'])} site anchors matched" in stdout


@pytest.mark.slow
def test_resume_after_sigkill_loses_nothing_and_counts_nothing_twice(tmp_path, cache_dir):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "simulation.cli", "simulate", "--tiny", "--rounds", "4", "--out", str(out),
            "--cache-dir", cache_dir, "--baselines", "none"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 300
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("round 1:"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(s.startswith("round 1:") for s in seen), "".join(seen)[-2000:]

    code, stdout, stderr = secagg_cli("simulate", "--resume", str(out), "--json")
    assert code == 0, (stdout[-2000:], stderr[-2000:])
    summary = json.loads(stdout)
    assert summary["privacy"]["ledger_verified"]
    from dp import PrivacyLedger

    with PrivacyLedger.open(out) as ledger:
        assert ledger.committed_rounds() == {0, 1, 2, 3}
        rounds_per_site = {s: [e.round for e in ledger.events(s)] for s in ledger.budgets}
    for site, rounds in rounds_per_site.items():
        assert len(rounds) == len(set(rounds)), f"{site} was charged twice for a round: {rounds}"
    metrics = [json.loads(line)["round"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics == sorted(set(metrics)) and metrics[-1] == 3
    # The resumed run signs with the same site identities; the anchors follow the ledger's end.
    from dp import load_anchors, verify_ledger
    from simulation.federation.identity import load_registry

    report = verify_ledger(out, registry=load_registry(out / "registry.json"), anchors=load_anchors([out / "sites"]))
    assert report.ok and report.signatures_checked == sum(len(r) for r in rounds_per_site.values()), report.reason


def test_coordinator_never_holds_an_individual_update(tmp_path, cache_dir, monkeypatch):
    """Record every byte the coordinator receives and every site's encoded update: no received
    vector equals or correlates with any update (secagg), while in plain mode they are identical
    (so the check can fail)."""
    from simulation.federation import coordinator as coordinator_module
    from simulation.federation import site as site_module
    from simulation.config import load_config
    from simulation.engines.inprocess.simulate import run_simulation

    received, encoded = [], []
    original_receive = coordinator_module.Coordinator.receive
    original_encode = site_module.Site.encode

    def spy_receive(self, data):
        received.append(bytes(data))
        return original_receive(self, data)

    def spy_encode(self, update, encoder, weight_bound):
        ring, clipped = original_encode(self, update, encoder, weight_bound)
        encoded.append(ring.copy())
        return ring, clipped

    monkeypatch.setattr(coordinator_module.Coordinator, "receive", spy_receive)
    monkeypatch.setattr(site_module.Site, "encode", spy_encode)

    def run(mode):
        received.clear()
        encoded.clear()
        config = load_config(preset="tiny", mode=mode, cache_dir=cache_dir, rounds=1, baselines=())
        run_simulation(config, tmp_path / mode, quiet=True)
        return list(received), list(encoded)

    got, updates = run("secagg")
    masked = [wire.decode(d).vector for d in got if isinstance(wire.decode(d), MaskedInput)]
    assert masked and len(updates) == len(masked)
    blob = b"".join(got)
    for update in updates:
        signed = update.view(np.int32).astype(np.float64)
        for vector in masked:
            assert not np.array_equal(vector, update)
            assert np.count_nonzero(vector == update) < 10  # ~ m / 2^32 expected
            r = np.corrcoef(vector.view(np.int32).astype(np.float64), signed)[0, 1]
            assert abs(r) < 6 / np.sqrt(update.size)
        raw = update.tobytes()
        nonzero_chunks = [raw[i:i + 16] for i in range(0, len(raw) - 16, 16) if raw[i:i + 16].count(0) < 8]
        assert nonzero_chunks and not any(chunk in blob for chunk in nonzero_chunks[:200])

    pytest.importorskip("tenseal")
    got, updates = run("he")  # ciphertexts only: no chunk of any encoded update appears
    blob = b"".join(got)
    assert updates
    for update in updates:
        raw = update.tobytes()
        chunks = [raw[i:i + 16] for i in range(0, len(raw) - 16, 16) if raw[i:i + 16].count(0) < 8]
        assert chunks and not any(chunk in blob for chunk in chunks[:200])

    got, updates = run("plain")
    blob = b"".join(got)
    assert all(u.tobytes() in blob for u in updates)  # the baseline really exposes every update


@pytest.mark.parametrize("args,match", [
    (["--mode", "quantum"], "invalid choice"),
    (["--model", "resnet"], "unknown model"),
    (["--threshold", "9"], "threshold 9 is above the number of sites"),
    (["--epsilon", "1e-6"], "calibration"),
    (["--data", "/nonexistent/cohort"], "does not exist"),
    (["--dropout", "1.5"], "dropout"),
    (["--rounds", "0"], "rounds"),
])
def test_bad_input_exit_2_and_nothing_written(args, match, tmp_path, cache_dir):
    out = tmp_path / "never"
    code, stdout, stderr = secagg_cli("simulate", "--tiny", "--out", str(out), "--cache-dir", cache_dir, *args)
    assert code == 2, (stdout[-1000:], stderr[-1000:])
    assert match in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_empty_data_directory(tmp_path, cache_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = secagg_cli("simulate", "--tiny", "--data", str(empty), "--out", str(tmp_path / "o"))
    assert code == 2 and "no site directories" in stderr


def test_run_directory_of_another_run_is_refused(tmp_path, cache_dir):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "config.json").write_text("{}")
    code, _, stderr = secagg_cli("simulate", "--tiny", "--out", str(out), "--cache-dir", cache_dir)
    assert code == 2 and "already holds a run" in stderr
    code, _, stderr = secagg_cli("simulate", "--resume", str(tmp_path / "nothing-here"))
    assert code == 2 and "not a run directory" in stderr


def test_dropout_schedule_file(tmp_path, cache_dir):
    from simulation.federation.dropout import load_schedule
    from simulation.config import ConfigError

    schedule = tmp_path / "drops.json"
    schedule.write_text(json.dumps({"0": {"mask": ["site-2"], "unmask": ["site-1"]}}))
    plan = load_schedule(str(schedule), ["site-1", "site-2", "site-3"])
    assert plan.plan(0, ["site-1", "site-2", "site-3"]) == {"site-2": "mask", "site-1": "unmask"}
    assert plan.plan(1, ["site-1"]) == {}
    schedule.write_text(json.dumps({"0": {"later": ["site-2"]}}))
    with pytest.raises(ConfigError, match="unknown stage"):
        load_schedule(str(schedule), ["site-1", "site-2"])
    schedule.write_text(json.dumps({"0": {"mask": ["site-9"]}}))
    with pytest.raises(ConfigError, match="unknown sites"):
        load_schedule(str(schedule), ["site-1", "site-2"])


def test_probabilistic_dropouts_are_reproducible():
    from simulation.federation.dropout import ProbabilisticDropout

    model = ProbabilisticDropout(0.3, seed=4)
    sites = [f"site-{i}" for i in range(10)]
    assert model.plan(2, sites) == ProbabilisticDropout(0.3, seed=4).plan(2, sites)
    assert model.plan(2, sites) != model.plan(3, sites)
    assert set(model.plan(2, sites).values()) <= set(secagg.STAGES)


@pytest.mark.slow
def test_tiny_run_with_distributed_dp(tmp_path, cache_dir):
    out = tmp_path / "run"
    code, stdout, stderr = secagg_cli("simulate", "--tiny", "--distributed-dp", "skellam", "--ddp-epsilon", "20",
                                      "--out", str(out), "--cache-dir", cache_dir, "--json")
    assert code == 0, stderr[-2000:]
    summary = json.loads(stdout)
    site_level = summary["privacy"]["site_level"]
    assert site_level["mechanism"] == "skellam"
    assert all(0 < eps <= 20 * (1 + 1e-6) for eps in site_level["epsilon_spent"].values())
    from dp import verify_ledger

    report = verify_ledger(out)
    assert report.ok and set(report.site_level_epsilon) == set(summary["sites"])
    # Editing a stored site-level epsilon is detected.
    import sqlite3

    conn = sqlite3.connect(out / "ledger.sqlite", isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_update")
    seq, body = conn.execute("SELECT seq, body FROM entries WHERE kind = 'site_level_spend' LIMIT 1").fetchone()
    data = json.loads(body)
    data["cumulative_epsilon"] = data["cumulative_epsilon"] / 2
    from dp.ledger import canonical_json
    from dp.ledger_format import chain_hash

    prev = conn.execute("SELECT prev_hash FROM entries WHERE seq = ?", (seq,)).fetchone()[0]
    text = canonical_json(data)
    conn.execute("UPDATE entries SET body = ?, hash = ? WHERE seq = ?", (text, chain_hash(prev, "site_level_spend", text), seq))
    broken = verify_ledger(out)
    assert not broken.ok and broken.first_broken is not None


def test_distributed_dp_refused_with_he(tmp_path, cache_dir):
    code, _, stderr = secagg_cli("simulate", "--tiny", "--mode", "he", "--distributed-dp", "ddg",
                                 "--out", str(tmp_path / "x"), "--cache-dir", cache_dir)
    assert code == 2 and "does not apply to --mode he" in stderr
