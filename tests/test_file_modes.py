"""Least privilege on disk (issue 21) and skipped input files in the run summary (issue 18).

Runs happen with umask 000, the most permissive: every directory a run creates must
still be 0700 and every file 0600, so the guarantee does not depend on the caller's umask.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("nilearn")

from tests.file_modes import modes, not_owner_only  # noqa: E402
from tests.hostile_files import HOSTILE_HEADERS, NON_REGULAR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _secagg(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=900, preexec_fn=lambda: os.umask(0))


def _assert_private(root: Path) -> int:
    wrong = not_owner_only(root)
    assert not wrong, wrong
    return len(modes(root))


def test_the_owner_only_check_sees_a_readable_file_and_a_searchable_directory(tmp_path):
    """The check is not vacuous: a 0644 file and a 0755 directory are reported, 0600 and 0700 are not."""
    root = tmp_path / "run"
    (root / "open").mkdir(parents=True)
    root.chmod(0o700)
    (root / "open").chmod(0o755)
    for name, mode in (("private.txt", 0o600), ("open/readable.txt", 0o644)):
        (root / name).write_text("x")
        (root / name).chmod(mode)
    assert not_owner_only(root) == {"run/open": "0o755", "run/open/readable.txt": "0o644"}
    (root / "open").chmod(0o700)
    (root / "open" / "readable.txt").chmod(0o600)
    assert not_owner_only(root) == {}


@pytest.fixture(scope="module")
def tiny_run(shared_tiny_run):
    """``secagg simulate --tiny`` under umask 000 with a fresh cache (the cohort is generated too): the session's
    shared tiny run (tests/shared_runs.py builds it so), pristine - read here, never written."""
    assert shared_tiny_run.returncode == 0, shared_tiny_run.stderr[-3000:]
    return shared_tiny_run.run, shared_tiny_run.cache


@pytest.mark.slow
def test_everything_a_tiny_run_writes_is_owner_only(tiny_run, tmp_path):
    out, cache = tiny_run
    names = {p.name for p in modes(out)}
    assert {"config.json", "state.json", "metrics.jsonl", "ledger.sqlite", "ledger.head.json", "summary.json",
            "global.pt", "training.png"} <= names
    assert _assert_private(out) > 10
    assert _assert_private(cache) > 10  # the synthetic cohort and the preprocessing cache
    # What later commands add to the run directory is owner-only too: on a copy, as the run is shared
    # (copytree keeps every mode bit, so the copy starts exactly as private as the run checked above).
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    relative = {p.relative_to(copy): m for p, m in modes(copy).items()}
    assert relative == {p.relative_to(out): m for p, m in modes(out).items()}
    proc = _secagg("dpia", str(copy), "--format", "md")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (copy / "dpia.md").exists()
    _assert_private(copy)


@pytest.mark.slow
def test_skip_invalid_counts_each_bad_file_in_the_summary(tiny_run, tmp_path):
    _, cache = tiny_run
    cohort = next(cache.glob("cohort-tiny-*"))
    data = tmp_path / "data"
    shutil.copytree(cohort, data, symlinks=True)
    healthy = data / "site-1" / "healthy"
    bad = {}
    for name, (generate, fragment) in {**HOSTILE_HEADERS, **NON_REGULAR}.items():
        folder = tmp_path / "made" / name
        folder.mkdir(parents=True)
        made = generate(folder)
        target = healthy / f"bad-{name}{''.join(made.suffixes[-2:]) if made.name.endswith('.gz') else '.nii'}"
        os.rename(made, target)
        if name == "symlink-loop":  # the loop's other half travels along
            os.rename(folder / "loop-b.nii.gz", healthy / "loop-b.nii.gz")
            os.remove(target)
            os.symlink("loop-b.nii.gz", target)
            os.remove(healthy / "loop-b.nii.gz")
            os.symlink(target.name, healthy / "loop-b.nii.gz")
        bad[target.name] = fragment
    # Strict (the default): refused, one line naming a file.
    proc = _secagg("simulate", "--tiny", "--data", str(data), "--out", str(tmp_path / "strict"),
                   "--cache-dir", str(cache))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "bad-" in proc.stderr or "loop-b" in proc.stderr
    assert not (tmp_path / "strict").exists()
    # --skip-invalid: the run completes; each bad file is warned about and counted in summary.json.
    out = tmp_path / "skipping"
    proc = _secagg("simulate", "--tiny", "--data", str(data), "--out", str(out), "--cache-dir", str(cache),
                   "--skip-invalid", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    skipped = summary["skipped_files"]
    assert "files" not in skipped  # paths can name subjects: the list stays in the site-local folder
    local = json.loads((out / skipped["files_listed_in"]).read_text())
    listed = {Path(f["path"]).name: f["reason"] for f in local["files"]}
    assert skipped["count"] == len(listed) == len(bad) + 1  # + the loop's second half
    for name, fragment in bad.items():
        assert fragment in listed[name], (name, listed.get(name))
    assert f"skipped {skipped['count']} file(s)" in proc.stderr
    _assert_private(out)


def test_private_helpers_ignore_the_umask(tmp_path):
    from dp import PrivacyEvent, PrivacyLedger
    from simulation.federation.runstore import RunDirectory, atomic_write_json, private_dir

    previous = os.umask(0)
    try:
        nested = private_dir(tmp_path / "a" / "b")
        atomic_write_json(nested / "x.json", {"k": 1})
        store = RunDirectory(tmp_path / "run")
        store.create({"k": 1}, "f" * 64)
        store.append_metrics({"round": 0})
        store.write_state({"last_round": 0})
        ledger = PrivacyLedger.create(store.root, run_id="modes", delta=1e-5, budgets={"a": 1.0},
                                      accountants=("rdp",))
        ledger.commit_round(0, [PrivacyEvent("a", 0, 1.0, 0.01, 1, 1e-5)])
        ledger.close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    _assert_private(nested)
    _assert_private(store.root)
    names = {p.name for p in store.root.rglob("*")}
    assert {"config.json", "metrics.jsonl", "state.json", "ledger.sqlite", "ledger.head.json"} <= names


def test_an_existing_run_directory_is_narrowed(tmp_path):
    from simulation.federation.runstore import RunDirectory

    out = tmp_path / "given"
    out.mkdir(mode=0o755)
    os.chmod(out, 0o755)
    RunDirectory(out).create({"k": 1}, "f" * 64)
    _assert_private(out)


def test_a_new_key_directory_is_owner_only(tmp_path):
    from simulation.federation.identity import write_identity

    previous = os.umask(0)
    try:
        write_identity(tmp_path / "keys", "site-1")
    finally:
        os.umask(previous)
    _assert_private(tmp_path / "keys")
