"""Run an experiment's independent units (a tuning rate, a seed, a seed at another epsilon) over processes.

**Why processes, and one torch thread each.** The arms of this project are
small convolutional autoencoders trained on batches of a few dozen slices:
torch's intra-op threads then spend much of their time synchronising, and
two single-threaded processes on two cores finish about twice the work of
one two-threaded process. Units share nothing but the read-only caches
(:func:`warm_cohorts` fills them first, so no two processes generate the
same cohort), and each unit draws all its randomness from its own seeds
(:mod:`.randomness`, ``new_model``'s ``torch.manual_seed``).

**Same results for any ``jobs``.** Every unit runs with exactly one torch
thread, whether in a worker or, with ``jobs = 1``, in this process (the
caller's thread count is restored afterwards): a float reduction then sums
in the same order, so a unit's numbers do not depend on how many ran
beside it (``tests/test_experiment_parallel.py`` compares ``jobs = 1`` with
``jobs = 2``). The federated arm's stochastic rounding stays on the CSPRNG
(:mod:`secagg.encoding`) and repeats only up to that rounding, as in a
sequential run.

Workers are *spawned*, never forked: the parent may hold torch/OpenMP
thread pools that a fork would leave broken. A worker's log lines come back
with its result and are printed then, unit by unit, in completion order.
A failing unit stops the experiment: the pending units are cancelled and
its error is raised in the parent, unchanged.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Sequence

__all__ = ["default_jobs", "run_units", "single_torch_thread"]


def default_jobs(units: int) -> int:
    """One process per CPU, never more than there are units."""
    return max(1, min(os.cpu_count() or 1, units))


@contextmanager
def single_torch_thread():
    """Run the body with one torch intra-op thread; restore the caller's count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_one(function: Callable, args: tuple) -> tuple:
    """In a worker: ``function(*args, log=...)`` on one torch thread; (value, log lines)."""
    lines: list[str] = []
    with single_torch_thread():
        value = function(*args, log=lines.append)
    return value, lines


def run_units(function: Callable, units: Sequence[tuple], *, jobs: int, log: Callable[[str], None]) -> list:
    """``[function(*unit, log=...) for unit in units]``, ``jobs`` at a time, results in ``units`` order.

    ``function`` must be a module-level function (a spawned worker imports it by name) and each unit's
    arguments picklable. With ``jobs == 1`` the units run here, one after another, logging as they go.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1; got {jobs}")
    if jobs == 1 or len(units) <= 1:
        with single_torch_thread():
            return [function(*unit, log=log) for unit in units]
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    results: list = [None] * len(units)
    with ProcessPoolExecutor(max_workers=min(jobs, len(units)), mp_context=context) as pool:
        futures = {pool.submit(_run_one, function, tuple(unit)): i for i, unit in enumerate(units)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)  # log each unit as it ends
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                value, lines = future.result()
                for line in lines:
                    log(line)
                results[futures[future]] = value
    return results
