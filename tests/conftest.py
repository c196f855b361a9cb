"""Suite-wide settings for parallel runs (``make test`` runs pytest-xdist, ``--dist loadfile``).

**Threads.** Under xdist each worker gets an equal share of the cores (at least one) for torch's
intra-op threads, in-process and in the processes it starts (``OMP_NUM_THREADS``, unless already
set): ``w`` workers each running torch with all ``c`` cores would run ``w * c`` threads on ``c``
cores, and OpenMP threads that wait for each other spin. A thread count changes how fast a test
runs, never what it checks. Serial runs keep torch's defaults.

**Which file runs where.** Workers take whole files (``--dist loadfile``: a file's module and
session fixtures are built once, and a file's Flower federations never overlap each other).
:data:`FILE_SECONDS` holds each slow file's measured time; :func:`pytest_xdist_make_scheduler`
hands the longest file left to a worker that has nothing else to run (longest processing time
first), and, to a worker that is still busy with a long file, the shortest one left.

Why the second rule: an xdist worker runs a test only once it knows the next one (pytest's
``nextitem``, for teardown), so xdist queues a further file on a worker as soon as its current
file is down to two tests. On a one-test file such as the Flower crash test (minutes of waiting
on subprocesses) that queued file would wait behind it while other workers run dry; a short one
costs nothing there. While other files are left, at most :data:`FEDERATION_FILES_AT_ONCE` files of real Flower processes
run at a time (their processes need the CPU too). Only the order and the placement change: every collected test still runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


# Seconds per file: each file's test time (setup + call + teardown, from --junitxml) in a clean-clone `make test`
# run on the 2-core build machine with 2 workers, 2026-11-30 (1,640 tests, 18 min 39 s of pytest; a session
# fixture counts in the file that first needs it). Files under 5 s are not listed: they count as short and go
# by their number of tests. A stale figure only changes the placement, never what runs.
FILE_SECONDS: dict[str, float] = {
    "test_simulation.py": 447, "test_flower_crash.py": 256, "test_flower_deploy.py": 211, "test_flower.py": 206,
    "test_flower_engine_dp.py": 194, "test_detect.py": 89, "test_bids_prepare.py": 81, "test_experiment.py": 66,
    "test_dpia.py": 44, "test_experiment_fairness.py": 40, "test_flower_inmemory.py": 39, "test_flower_ledger.py": 36,
    "test_models_bids.py": 35, "test_audit.py": 32, "test_cli_dp.py": 30, "test_file_modes.py": 26,
    "test_ledger_tamper.py": 26, "test_flower_app_signing.py": 26, "test_adversary_search.py": 25,
    "test_review_projected_spend.py": 24, "test_review15_resume_on_rewritten_ledger.py": 23,
    "test_patient_privacy.py": 22, "test_attack21_agentapp.py": 21, "test_models_synth.py": 20,
    "test_attack21_run_series.py": 17, "test_review15_dpia_export_verified_without_signatures.py": 15,
    "test_models_lesions.py": 14, "test_cli_corpus.py": 13, "test_dp_accounting.py": 11, "test_prepare.py": 11,
    "test_model_differential.py": 10, "test_dp_ledger.py": 7, "test_experiment_parallel.py": 7,
    "test_attack21_node_guards.py": 6, "test_dp_calibration.py": 5,
}
SHORT_FILE_SECONDS = 2.0  # an unlisted file
# The files that run real Flower processes (a SuperLink, SuperNodes, a Python process per message). Each
# message's process costs about 2 CPU-seconds to start, so federations are CPU-bound on a loaded machine:
# with four at once beside other files on 2 cores (load 14), the crash test's round 0 missed its 240 s bound.
# While other files are left, at most FEDERATION_FILES_AT_ONCE of them run at a time.
FEDERATION_FILES = frozenset({"test_flower.py", "test_flower_engine_dp.py", "test_flower_crash.py",
                              "test_flower_deploy.py", "test_flower_app_signing.py", "test_attack21_agentapp.py",
                              "test_attack21_run_series.py"})
FEDERATION_FILES_AT_ONCE = 2
BUSY_SECONDS = 30.0  # a worker with more than this left of its queued files gets the shortest file left


def file_seconds(path: str) -> float:
    return FILE_SECONDS.get(Path(path).name, SHORT_FILE_SECONDS)


def worker_threads() -> int | None:
    """Cores per xdist worker (at least 1), or None outside an xdist worker."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not os.environ.get("PYTEST_XDIST_WORKER") or not workers:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(workers))


def pytest_configure(config) -> None:
    threads = worker_threads()
    if threads is None:
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch
    except ImportError:  # the core tests run without the torch extras
        return
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items) -> None:
    """Longest files first (stable: files of equal weight keep their order), also in a serial run."""
    items.sort(key=lambda item: -file_seconds(str(item.path)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the placement described in the module docstring; other modes unchanged."""
    if config.getvalue("dist") != "loadfile":
        return None
    return longest_file_first(config, log)


def longest_file_first(config, log=None):
    """xdist's ``loadfile`` scheduler, placing files by :data:`FILE_SECONDS` (see the module docstring)."""
    from xdist.scheduler import LoadFileScheduling

    class LongestFileFirst(LoadFileScheduling):
        def _left(self, node) -> float:
            """Estimated seconds of the tests queued on ``node`` and not finished."""
            left = 0.0
            for scope, unit in self.assigned_work[node].items():
                if unit:
                    left += file_seconds(scope) * sum(not done for done in unit.values()) / len(unit)
            return left

        def _federations_running(self) -> int:
            return sum(1 for work in self.assigned_work.values() for scope, unit in work.items()
                       if Path(scope).name in FEDERATION_FILES and not all(unit.values()))

        def _assign_work_unit(self, node) -> None:
            candidates = list(self.workqueue)
            if self._federations_running() >= FEDERATION_FILES_AT_ONCE:
                candidates = [s for s in candidates if Path(s).name not in FEDERATION_FILES] or candidates
            pick = min if self._left(node) > BUSY_SECONDS else max  # among unlisted files: by test count
            scope = pick(candidates, key=lambda scope: (file_seconds(scope), len(self.workqueue[scope])))
            unit = self.workqueue.pop(scope)
            self.assigned_work.setdefault(node, {})[scope] = unit
            collection = self.registered_collections[node]
            node.send_runtest_some([collection.index(nodeid) for nodeid, done in unit.items() if not done])

    return LongestFileFirst(config, log)


@pytest.fixture(autouse=True)
def app_verifier_state_stays_in_its_test():
    """The node's app verifier keeps its approval in a process global and points ``FLWR_HOME`` at a fresh
    folder (``simulation.engines.flower.app_trust.record_verified``, ``verified_clientapp.private_flwr_home``): in a
    deployment each ``flwr-clientapp`` process handles one message, but here one worker runs many tests,
    and a later test of another file (the DPIA's deployment facts) must not see an earlier test's approval."""
    home = os.environ.get("FLWR_HOME")
    yield
    module = sys.modules.get("simulation.engines.flower.app_trust")
    if module is not None:
        module.record_verified(None)
    if home is None:
        os.environ.pop("FLWR_HOME", None)
    else:
        os.environ["FLWR_HOME"] = home


@pytest.fixture
def federation(tmp_path):
    """A fresh set of real Flower processes (``tests/flower_federation.Federation``), stopped after the test."""
    from tests.flower_federation import Federation

    fed = Federation(tmp_path)
    try:
        yield fed
    finally:
        fed.stop()


@pytest.fixture(scope="session")
def shared_tiny_run(tmp_path_factory):
    """``secagg simulate --tiny --mode secagg`` (umask 000, fresh cache), once per session across workers
    (:mod:`tests.shared_runs`). Pristine: a test that writes into a run uses ``shared_runs.copy_run``."""
    from tests import shared_runs

    return shared_runs.load(shared_runs.build_once(tmp_path_factory, "tiny", shared_runs.build_tiny))


@pytest.fixture(scope="session")
def shared_ledger_run(tmp_path_factory, shared_tiny_run):
    """The ledger-tamper tests' run (3 rounds x 2 steps; :data:`tests.shared_runs.LEDGER`) and, beside it,
    ``auditor/`` (the registry and anchors copied right after it), once per session across workers."""
    from tests import shared_runs

    folder = shared_runs.build_once(tmp_path_factory, "ledger",
                                    lambda f: shared_runs.build_ledger(f, shared_tiny_run.cache))
    return shared_runs.load(folder)


@pytest.fixture
def reuse_log(monkeypatch):
    """(site, reused?) for every budget-check report a ledger commit was offered (dp.ProjectedSpend): the
    answers of ``PrivacyLedger.reusable_report``, which is otherwise unchanged."""
    import dp.ledger as ledger_module

    log = []
    reusable = ledger_module.PrivacyLedger.reusable_report

    def offered(self, projection, site, events):
        report = reusable(self, projection, site, events)
        log.append((site, report is not None))
        return report

    monkeypatch.setattr(ledger_module.PrivacyLedger, "reusable_report", offered)
    return log


@pytest.fixture
def accountant_runs(monkeypatch):
    """The name of every accountant computation (``dp.accounting._run``: a cached answer is not one) made
    during the test, in order; the computations themselves are unchanged."""
    import dp.accounting as accounting

    computed = []
    run = accounting._run

    def counting(entry, events, delta, *, upper):
        computed.append(entry.name)
        return run(entry, events, delta, upper=upper)

    monkeypatch.setattr(accounting, "_run", counting)
    return computed
