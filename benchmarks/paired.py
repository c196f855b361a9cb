"""Interleaved (ABAB) timing of two steps, summarised as the median of the paired ratios.

Timing A in one block and B in another lets load that comes and goes on a shared
machine land on one side only: issue 20 saw the DP/non-private ratio move from
1.18x to 3.4x between runs of unchanged code. Here every pair (a_i, b_i) runs
back to back, so a burst of load hits both sides of a pair; the statistic is
the median of r_i = b_i / a_i with its quartiles and extremes, never a ratio of
two block medians. Torch's intra-op threads are pinned for the whole
measurement (and restored), since the thread count changes both sides.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedRatio:
    """Median and spread of b_i / a_i over interleaved pairs (seconds per side kept too)."""

    a_s: tuple[float, ...]
    b_s: tuple[float, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(b / a for a, b in zip(self.a_s, self.b_s))

    def summary(self) -> dict:
        r = sorted(self.ratios)
        q1, _, q3 = statistics.quantiles(r, n=4, method="inclusive") if len(r) > 1 else (r[0], r[0], r[0])
        return {"median": statistics.median(r), "q1": q1, "q3": q3, "min": r[0], "max": r[-1], "pairs": len(r),
                "a_median_s": statistics.median(self.a_s), "b_median_s": statistics.median(self.b_s)}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Pin torch's intra-op thread count to ``n`` for the block, then restore it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleave(step_a: Callable[[], object], step_b: Callable[[], object], *, pairs: int,
               warmup: int = 3) -> PairedRatio:
    """Run ``warmup`` untimed pairs, then ``pairs`` timed ones: A, B, A, B, ..."""
    for _ in range(warmup):
        step_a()
        step_b()
    a_s, b_s = [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        step_a()
        t1 = time.perf_counter()
        step_b()
        t2 = time.perf_counter()
        a_s.append(t1 - t0)
        b_s.append(t2 - t1)
    return PairedRatio(tuple(a_s), tuple(b_s))
