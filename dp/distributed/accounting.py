"""Accounting of the distributed mechanism: Renyi DP per round, composed by addition, then (epsilon, delta).

* ddg - KLS21, Theorem 1 / Proposition 14 (their Eq. 17): for n independent N_Z(0, sigma^2)
  shares with sigma >= 1/2, an integer shift Delta, tau = 10 sum_{k=1}^{n-1}
  exp(-2 pi^2 sigma^2 k/(k+1)), a = ||Delta||_2^2/(n sigma^2), b = ||Delta||_1/(sqrt(n) sigma):
  ``eps(alpha) = min{ alpha a/2 + tau d',  alpha/2 (a + 2 b tau + tau^2 d'),
  alpha/2 (sqrt(a) + tau sqrt(d'))^2 }``. With n = 1 (tau = 0) this is the exact discrete
  Gaussian bound alpha Delta^2 / (2 sigma^2) (Canonne, Kamath, Steinke, NeurIPS 2020).
* skellam - AKL21, Corollary 4.1 (multi-dimensional Skellam): the sum is Sk(n mu, n mu) with variance
  V = 2 n mu; for integer alpha > 1,
  ``eps(alpha) = alpha Delta_2^2/(2V) + min{((2 alpha - 1) Delta_2^2 + 6 Delta_1)/(4 V^2), 3 Delta_1/(2V)}``;
  a fractional order uses ceil(alpha) (Renyi divergence is non-decreasing in alpha).
* Conversion: ``eps = min_alpha rdp(alpha) + log((alpha-1)/alpha) - (log delta + log alpha)/(alpha-1)``
  (Canonne, Kamath, Steinke 2020, Prop. 12; the conversion Opacus and dp-accounting use).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from ..errors import InvalidPrivacyParameterError
from ..events import validate_delta
from .events import DistributedDpEvent

__all__ = ["DEFAULT_ORDERS", "event_rdp", "distributed_rdp", "rdp_to_epsilon", "compute_distributed_epsilon",
           "composed_epsilon"]

#: Renyi orders: a fine grid near 1 (small epsilons), every integer to 512, then a sparse tail
#: (large epsilons). Skellam's bound is evaluated at ceil(alpha).
DEFAULT_ORDERS = np.concatenate(
    [1.0 + np.arange(1, 20) / 20.0, np.arange(2, 513, dtype=np.float64), [640, 768, 1024, 1536, 2048, 4096, 8192]]
)


def _ddg_tau(sigma_squared: float, contributors: int) -> float:
    """KLS21's tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1)) (0 for one contributor)."""
    return 10.0 * math.fsum(
        math.exp(-2.0 * math.pi**2 * sigma_squared * k / (k + 1)) for k in range(1, contributors)
    )


def event_rdp(event: DistributedDpEvent, orders: np.ndarray) -> np.ndarray:
    """One round's Renyi DP at each order (the bounds in the module docstring); no argument checks."""
    d2 = event.l2_sensitivity_squared
    d1 = event.l1_sensitivity
    n = event.noise_contributors
    if event.mechanism == "ddg":
        s2 = event.local_variance
        tau = _ddg_tau(s2, n)
        a = d2 / (n * s2)
        b = d1 / math.sqrt(n * s2)
        d = float(event.dimension)
        first = orders * a / 2.0 + tau * d
        second = orders / 2.0 * (a + 2.0 * b * tau + tau * tau * d)
        third = orders / 2.0 * (math.sqrt(a) + tau * math.sqrt(d)) ** 2
        return np.minimum(np.minimum(first, second), third)
    total_variance = n * event.local_variance  # Sk(n mu, n mu) has variance 2 n mu
    alpha = np.ceil(orders)
    lead = alpha * d2 / (2.0 * total_variance)
    extra = np.minimum(((2.0 * alpha - 1.0) * d2 + 6.0 * d1) / (4.0 * total_variance**2),
                       3.0 * d1 / (2.0 * total_variance))
    return lead + extra


def distributed_rdp(events: Iterable[DistributedDpEvent], orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    """Renyi DP of the composition of ``events`` at each order (adds up across rounds)."""
    orders = np.asarray(orders, dtype=np.float64)
    if orders.ndim != 1 or orders.size == 0 or np.any(orders <= 1):
        raise InvalidPrivacyParameterError("orders must be a non-empty 1-D sequence of values > 1")
    total = np.zeros_like(orders)
    count = 0
    for event in events:
        if not isinstance(event, DistributedDpEvent):
            raise InvalidPrivacyParameterError(f"expected DistributedDpEvent; got {type(event).__name__}")
        total += event_rdp(event, orders)
        count += 1
    if count == 0:
        raise InvalidPrivacyParameterError("no distributed-DP events to account for")
    return total


def rdp_to_epsilon(orders: Sequence[float], rdp: Sequence[float], delta: float) -> tuple[float, float]:
    """(epsilon, optimal order) from an RDP curve (CKS20, Prop. 12; as in dp-accounting).

    ``eps = min_alpha rdp + log1p(-1/alpha) - log(delta alpha)/(alpha - 1)``; an order whose
    RDP already gives delta >= sqrt(1 - exp(-rdp)) (the KL route) yields epsilon 0.
    """
    delta = validate_delta(delta)
    orders = np.asarray(orders, dtype=np.float64)
    rdp = np.asarray(rdp, dtype=np.float64)
    if orders.shape != rdp.shape:
        raise InvalidPrivacyParameterError("orders and rdp must have the same length")
    eps = rdp + np.log1p(-1.0 / orders) - np.log(delta * orders) / (orders - 1.0)
    eps = np.where(delta**2 + np.expm1(-rdp) > 0, 0.0, eps)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(orders[best])


def compute_distributed_epsilon(events: Iterable[DistributedDpEvent], delta: float) -> float:
    """Site-level epsilon at ``delta`` of the composition of the rounds in ``events``."""
    delta = validate_delta(delta)
    return rdp_to_epsilon(DEFAULT_ORDERS, distributed_rdp(events), delta)[0]


def composed_epsilon(event: DistributedDpEvent, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``rounds`` rounds identical to ``event`` (what calibration searches over)."""
    return rdp_to_epsilon(DEFAULT_ORDERS, rounds * event_rdp(event, DEFAULT_ORDERS), delta)[0]
