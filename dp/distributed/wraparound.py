"""Wrap-around: how likely the integer sum of the sites' noisy updates leaves the ring.

A coordinate of the integer sum A wraps if it leaves [-2^(b-1), 2^(b-1)). With n sites,
A = s (R y)_j + e_j + N_j with y the sum of the clipped inputs (||y|| <= n c), |e_j| < n the
rounding error and N_j the summed noise. :func:`wrap_probability_bound` takes the smaller of
two Chernoff bounds, union-bounded over the d' coordinates and both signs:
(i) with rotation, s (R y)_j is sub-Gaussian with proxy s^2 n^2 c^2 / d' (Hoeffding over the
public signs; inputs chosen independently of the seed), so
P[A_j >= 2^(b-1)] <= min_l exp(-l (2^(b-1) - n) + l^2 s^2 n^2 c^2 / (2 d') + K(l));
(ii) for any inputs, |sum of rounded inputs|_j <= n floor(B), so
P <= min_l exp(-l (2^(b-1) - n floor(B)) + K(l)); where K is the noise's cumulant bound:
n sigma^2 l^2 / 2 for the discrete Gaussian (it is sigma-sub-Gaussian, CKS20) and
2 n mu (cosh l - 1) for Skellam (its exact cumulant generating function).
A wrap corrupts the aggregate (accuracy), never privacy.
"""

from __future__ import annotations

import math

from ..errors import InvalidPrivacyParameterError
from .checks import int_at_least
from .events import MECHANISMS

__all__ = ["wrap_probability_bound"]


def _log_tail(mechanism: str, local_variance: float, contributors: int, threshold: float, signal_proxy: float) -> float:
    """log of min_l exp(-l u + l^2 a/2 + K(l)): Chernoff bound on P[signal + noise >= u]."""
    if threshold <= 0:
        return 0.0
    n, u, a = contributors, threshold, signal_proxy
    if mechanism == "ddg":
        proxy = a + n * local_variance  # both parts sub-Gaussian: proxies add
        return -u * u / (2.0 * proxy)
    m = n * local_variance  # K(l) = 2 n mu (cosh l - 1) = n v (cosh l - 1)

    def slope(l):
        return -u + l * a + m * math.sinh(l)

    upper = math.asinh(u / m)  # slope(upper) >= 0
    # Imported here, not at the top: every ``flwr-clientapp`` process imports dp (its ledger), and
    # scipy.optimize is about 0.4 CPU-s of its start-up that only the wrap-around calibration needs.
    from scipy.optimize import brentq

    best = brentq(slope, 0.0, upper, xtol=1e-14, rtol=1e-12) if slope(upper) > 0 else upper
    return -best * u + best * best * a / 2.0 + m * (math.cosh(best) - 1.0)


def wrap_probability_bound(
    *,
    mechanism: str,
    local_variance: float,
    scale: float,
    l2_clip: float,
    l2_norm_bound_squared: int,
    dimension: int,
    contributors: int,
    bits: int,
    rotation: bool,
) -> float:
    """Upper bound on P[some coordinate of the integer sum of ``contributors`` sites wraps in Z_2^bits].

    See the module docstring; ``dimension`` is the noised length d' and ``bits`` may be any
    width >= 2 (the protocol uses 32 or 64; small widths are for tests).
    """
    if mechanism not in MECHANISMS:
        raise InvalidPrivacyParameterError(f"mechanism must be one of {MECHANISMS}; got {mechanism!r}")
    n = int_at_least("contributors", contributors, 1)
    b = int_at_least("bits", bits, 2)
    d = int_at_least("dimension", dimension, 1)
    half = float(2 ** (b - 1))
    union = math.log(2.0 * d)
    # (ii) any inputs: each rounded update has every coordinate <= floor(B) in magnitude.
    largest = float(math.isqrt(int(l2_norm_bound_squared)))
    log_p = _log_tail(mechanism, local_variance, n, half - n * largest, 0.0)
    if rotation:
        # (i) rotated inputs: Hoeffding proxy s^2 ||y||^2 / d' with ||y|| <= n c; rounding error < n.
        proxy = (scale * n * l2_clip) ** 2 / d
        log_p = min(log_p, _log_tail(mechanism, local_variance, n, half - n, proxy))
    return float(min(1.0, math.exp(min(0.0, union + log_p))))
