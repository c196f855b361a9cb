"""tests/shared_runs.py builds a shared run once per session, also when xdist workers ask at the same time."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from tests.shared_runs import build_once, session_folder


class _Factory:
    """The part of pytest's ``tmp_path_factory`` that build_once uses: a worker's base temporary folder."""

    def __init__(self, base: Path):
        self.base = base

    def getbasetemp(self) -> Path:
        return self.base


def _slow_build(folder: Path) -> None:
    with open(folder.parent / "builds.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(0.5)  # long enough for the other worker to arrive while this one builds
    (folder / "artefact").write_text("built")


def _worker(session: str, name: str, seen) -> None:
    os.environ["PYTEST_XDIST_WORKER"] = name
    base = Path(session) / f"popen-{name}"
    base.mkdir()
    folder = build_once(_Factory(base), "run", _slow_build)
    seen.put((str(folder), (folder / "artefact").read_text()))


def test_two_workers_asking_at_once_build_once_and_both_see_the_finished_run(tmp_path):
    context = multiprocessing.get_context("spawn")
    seen = context.Queue()
    workers = [context.Process(target=_worker, args=(str(tmp_path), name, seen)) for name in ("gw0", "gw1")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    results = [seen.get(timeout=5) for _ in workers]
    shared = tmp_path / "shared-runs"
    assert results == [(str(shared / "run"), "built")] * 2
    assert len((shared / "builds.log").read_text().splitlines()) == 1


def test_outside_xdist_the_folder_is_the_sessions_own(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert session_folder(_Factory(tmp_path)) == tmp_path / "shared-runs"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert session_folder(_Factory(tmp_path / "popen-gw3")) == tmp_path / "shared-runs"
