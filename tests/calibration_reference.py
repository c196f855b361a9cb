"""The reference the calibration's tests compare with: the plain bisection of ``dp.calibration`` on the
minimum over every accountant at every step (no accountant skipped, no answer inferred, no probe), with the
code's own midpoint arithmetic (``math.sqrt``; ``(lo * hi) ** 0.5`` differs from it in the last bit at times)."""

from __future__ import annotations

import math

__all__ = ["full_minimum_bisection"]


def full_minimum_bisection(bound, target, tolerance=1e-3, evaluated=None):
    """The smallest sigma the plain bisection finds with ``bound(sigma) <= target``; ``evaluated`` (a set)
    collects the sigmas it computes at."""
    if evaluated is not None:
        bound = (lambda plain: lambda s: evaluated.add(s) or plain(s))(bound)
    hi = 1.0
    while bound(hi) > target:
        hi *= 2
    lo = hi / 2
    while lo > 1e-3 and bound(lo) <= target:
        hi, lo = lo, lo / 2
    while (hi - lo) / hi > tolerance:
        mid = math.sqrt(lo * hi)
        hi, lo = (mid, lo) if bound(mid) <= target else (hi, mid)
    return hi
