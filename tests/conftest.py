"""Suite-wide settings for parallel runs (``make test`` runs pytest-xdist, one worker per core).

Under xdist each worker gets an equal share of the cores for torch's intra-op threads,
in-process and in the processes it starts (``OMP_NUM_THREADS``, unless already set):
``w`` workers each running torch with all ``c`` cores would run ``w * c`` threads on ``c``
cores, and OpenMP threads that wait for each other spin. A thread count changes how fast a
test runs, never what it checks. Serial runs keep torch's defaults.

``make test`` hands whole files to the workers in collection order (``--dist loadfile
--no-loadscope-reorder``); :data:`SLOWEST_FIRST` moves the files that take longest to the front,
so that they start at once and the run does not end waiting on one of them (longest first).
Only the order changes: every collected test still runs.
"""

from __future__ import annotations

import os


# Slowest first: the Flower crash-and-resume federation (three `flwr run`s, two stage timeouts), the Flower
# process federations (~5 min on 2 cores), the simulation CLI runs, the DPIA's simulated run, then the
# in-memory Flower runs, the app-signing federation (~45 s), the ledger's kill tests and the TenSEAL suites.
SLOWEST_FIRST = ("test_flower_crash.py", "test_flower.py", "test_simulation.py", "test_dpia.py", "test_flower_inmemory.py",
                 "test_flower_app_signing.py",
                 "test_dp_ledger.py", "test_he_adversarial.py", "test_he_protocol.py", "test_dp_accounting.py")


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
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FIRST)))  # stable: the rest keep their order
