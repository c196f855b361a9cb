"""Suite-wide settings for parallel runs (``make test`` runs pytest-xdist, one worker per core).

Under xdist each worker gets an equal share of the cores for torch's intra-op threads,
in-process and in the processes it starts (``OMP_NUM_THREADS``, unless already set):
``w`` workers each running torch with all ``c`` cores would run ``w * c`` threads on ``c``
cores, and OpenMP threads that wait for each other spin. A thread count changes how fast a
test runs, never what it checks. Serial runs keep torch's defaults.
"""

from __future__ import annotations

import os


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
