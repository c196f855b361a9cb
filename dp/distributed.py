"""Distributed differential privacy: discrete noise added by each site before masking.

Pipeline (one site, one round; Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian
Mechanism for Federated Learning with Secure Aggregation", ICML 2021, Algorithm 1; Agarwal,
Kairouz, Liu, "The Skellam Mechanism for Differentially Private Federated Learning", NeurIPS 2021)

1. **Clip** the float update x in R^d to L2 norm c: ``x <- x min(1, c / ||x||_2)``.
2. **Rotate** (optional, default on): pad to d' = 2^ceil(log2 d) and apply the randomised
   Walsh-Hadamard rotation R = H D / sqrt(d') with signs D from the round's *public* seed
   (:mod:`dp.rotation`). R is orthogonal, so the norm stays <= c, and every coordinate becomes
   sub-Gaussian with variance proxy ||x||^2 / d': no coordinate carries much of the mass,
   which is what keeps the modular sum from wrapping (KLS21, "flattening").
3. **Scale** by s (ring units per input unit; the granularity is 1/s).
4. **Conditional randomised rounding** (KLS21): round each coordinate to
   floor(v) + Bernoulli(v - floor(v)) (unbiased; CSPRNG), and start again until the rounded
   integer vector satisfies ||x~||_2^2 <= B^2, with
   ``B^2 = floor(min{(c s + sqrt(d'))^2, (c s)^2 + d'/4 + sqrt(2 ln(1/beta)) (c s + sqrt(d')/2)})``.
   KLS21 show that one rounding exceeds the second bound with probability at most beta, so the
   expected number of attempts is at most 1/(1 - beta); the first bound always holds. The bound
   is *enforced* (integer arithmetic), so the sensitivity below is exact whatever beta says.
5. **Noise**: add ``N_Z(0, sigma^2)^(d')`` (discrete Gaussian, "ddg") or
   ``Sk(mu, mu)^(d')`` = Poisson(mu) - Poisson(mu) (Skellam, variance 2 mu), drawn with the
   exact CSPRNG samplers of :mod:`dp.discrete`.
6. **Reduce** modulo 2^b into the ring the secure-aggregation protocol masks (uint32/uint64).

The coordinator decodes the sum of the surviving sites: signed representative in
[-2^(b-1), 2^(b-1)), divide by s, inverse rotation, drop the padding.

Privacy guarantee (site level)
------------------------------
Adjacency: *zero-out* (default): two runs differ in one site's update being its clipped vector
or the zero vector, the site still taking part and adding its noise; the zero vector rounds to
zero, so the L2 sensitivity of the integer sum is B and its L1 sensitivity is at most
min(sqrt(d') B, B^2) (integer coordinates: |v| <= v^2). ``replace_one`` (one site's update
replaced by another) doubles both. The guarantee covers every site and every record at it, and
holds against the coordinator and anyone who sees the aggregate, as long as at least
``noise_contributors`` = t - (colluding sites) honest sites' noise is in the sum: the protocol
outputs nothing with fewer than t survivors, and colluders can subtract their own noise. More
contributors only add independent noise (post-processing), so the bound at t holds for any
completed round. The record-level DP-SGD guarantee of :mod:`dp.events` is a separate statement
about a different unit; the two are reported side by side, never added.

Accounting (Renyi DP, composed over rounds by addition, converted to (epsilon, delta))
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

Wrap-around
-----------
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
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import brentq

from secagg.encoding import SUPPORTED_BIT_WIDTHS, ring_dtype

from .discrete import (
    MAX_TABLE_ENTRIES,
    RandomWords,
    discrete_gaussian_sampler,
    discrete_gaussian_variance,
    poisson_sampler,
)
from .errors import CalibrationError, InvalidPrivacyParameterError, PrivacyError
from .events import validate_delta
from .rotation import padded_dimension, rotate, unrotate

__all__ = [
    "MECHANISMS",
    "DISTRIBUTED_NEIGHBOURING",
    "DEFAULT_ORDERS",
    "DistributedDpEvent",
    "DistributedDpConfig",
    "CalibratedDistributedDp",
    "PrivatizedUpdate",
    "rounded_l2_norm_bound",
    "distributed_rdp",
    "rdp_to_epsilon",
    "compute_distributed_epsilon",
    "wrap_probability_bound",
    "calibrate",
    "privatize",
    "privatize_detailed",
    "decode_sum",
]

MECHANISMS = ("ddg", "skellam")
DISTRIBUTED_NEIGHBOURING = ("zero_out", "replace_one")
SUPPORTED_RING_BITS = SUPPORTED_BIT_WIDTHS  # the rings secagg masks in: (32, 64)

#: Renyi orders: a fine grid near 1 (small epsilons), every integer to 512, then a sparse tail
#: (large epsilons). Skellam's bound is evaluated at ceil(alpha).
DEFAULT_ORDERS = np.concatenate(
    [1.0 + np.arange(1, 20) / 20.0, np.arange(2, 513, dtype=np.float64), [640, 768, 1024, 1536, 2048, 4096, 8192]]
)

_MAX_SCALED_CLIP = float(1 << 28)  # keeps every squared norm of a rounded vector exact in int64
_MAX_ROUNDING_ATTEMPTS = 1000


def _finite(name: str, value) -> float:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not numeric or not math.isfinite(value):
        raise InvalidPrivacyParameterError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _positive(name: str, value) -> float:
    value = _finite(name, value)
    if value <= 0:
        raise InvalidPrivacyParameterError(f"{name} must be > 0; got {value}")
    return value


def _int_at_least(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidPrivacyParameterError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def rounded_l2_norm_bound(scaled_clip: float, dimension: int, beta: float) -> float:
    """KLS21's bound on the L2 norm after randomised rounding of a vector of norm <= ``scaled_clip``.

    ``min{c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2))}``; the first always
    holds, the second with probability >= 1 - beta per rounding.
    """
    c = _positive("scaled_clip", scaled_clip)
    d = _int_at_least("dimension", dimension, 1)
    if not 0 < beta < 1:
        raise InvalidPrivacyParameterError(f"beta must be in (0, 1); got {beta}")
    always = c + math.sqrt(d)
    likely = math.sqrt(c * c + d / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (c + math.sqrt(d) / 2.0))
    return min(always, likely)


# --- the event --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedDpEvent:
    """One round's site-level guarantee of the distributed mechanism, as plain data.

    Every site whose noisy update entered the round's sum gets this guarantee (see the module
    docstring for the adjacency and the trust assumption). All quantities are in ring units
    (after scaling by ``scale``).

    Attributes:
        round: federated round index (0-based).
        mechanism: ``"ddg"`` (each site adds N_Z(0, local_variance)) or ``"skellam"`` (each site
            adds Sk(mu, mu) with 2 mu = local_variance, i.e. variance exactly local_variance).
        local_variance: sigma^2 of one site's discrete Gaussian (its variance is slightly lower),
            or the variance 2 mu of one site's Skellam noise; an exact dyadic rational.
        l2_norm_bound_squared: B^2, the enforced bound on ||rounded update||_2^2 (an integer).
        dimension: d', the length of the noised integer vector (padded when rotated).
        noise_contributors: the number of sites whose noise is guaranteed in the sum and unknown
            to the adversary (threshold t minus tolerated colluding sites).
        neighbouring: ``"zero_out"`` (sensitivity B) or ``"replace_one"`` (2B).
        scale: ring units per input unit (recorded for audits; not needed for epsilon).
        l2_clip: the L2 clipping norm c in input units (recorded for audits).
    """

    round: int
    mechanism: str
    local_variance: float
    l2_norm_bound_squared: int
    dimension: int
    noise_contributors: int
    neighbouring: str = "zero_out"
    scale: float = 1.0
    l2_clip: float = 1.0

    def __post_init__(self) -> None:
        _int_at_least("round", self.round, 0)
        if self.mechanism not in MECHANISMS:
            raise InvalidPrivacyParameterError(f"mechanism must be one of {MECHANISMS}; got {self.mechanism!r}")
        variance = _positive("local_variance", self.local_variance)
        _int_at_least("l2_norm_bound_squared", self.l2_norm_bound_squared, 1)
        _int_at_least("dimension", self.dimension, 1)
        _int_at_least("noise_contributors", self.noise_contributors, 1)
        if self.neighbouring not in DISTRIBUTED_NEIGHBOURING:
            raise InvalidPrivacyParameterError(
                f"neighbouring must be one of {DISTRIBUTED_NEIGHBOURING}; got {self.neighbouring!r}"
            )
        if self.mechanism == "ddg" and self.noise_contributors > 1 and variance < 0.25:
            raise InvalidPrivacyParameterError(
                f"the distributed discrete Gaussian bound (KLS21, Thm. 1) needs sigma >= 1/2, i.e. "
                f"local_variance >= 0.25; got {variance}"
            )
        object.__setattr__(self, "local_variance", variance)
        object.__setattr__(self, "l2_norm_bound_squared", int(self.l2_norm_bound_squared))
        object.__setattr__(self, "scale", _positive("scale", self.scale))
        object.__setattr__(self, "l2_clip", _positive("l2_clip", self.l2_clip))

    @property
    def l2_sensitivity_squared(self) -> float:
        factor = 1 if self.neighbouring == "zero_out" else 4
        return float(factor * self.l2_norm_bound_squared)

    @property
    def l1_sensitivity(self) -> float:
        b2 = float(self.l2_norm_bound_squared)
        one_site = min(math.sqrt(self.dimension * b2), b2)
        return one_site if self.neighbouring == "zero_out" else 2.0 * one_site

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DistributedDpEvent":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidPrivacyParameterError(f"unknown distributed-DP event fields {sorted(unknown)}")
        return cls(**data)


# --- accounting -------------------------------------------------------------------------------


def _ddg_tau(sigma_squared: float, contributors: int) -> float:
    """KLS21's tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1)) (0 for one contributor)."""
    return 10.0 * math.fsum(
        math.exp(-2.0 * math.pi**2 * sigma_squared * k / (k + 1)) for k in range(1, contributors)
    )


def _event_rdp(event: DistributedDpEvent, orders: np.ndarray) -> np.ndarray:
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
        total += _event_rdp(event, orders)
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


def _composed_epsilon(event: DistributedDpEvent, rounds: int, delta: float) -> float:
    return rdp_to_epsilon(DEFAULT_ORDERS, rounds * _event_rdp(event, DEFAULT_ORDERS), delta)[0]


# --- wrap-around --------------------------------------------------------------------------------


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
    n = _int_at_least("contributors", contributors, 1)
    b = _int_at_least("bits", bits, 2)
    d = _int_at_least("dimension", dimension, 1)
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


# --- configuration and calibration ---------------------------------------------------------------


@dataclass(frozen=True)
class DistributedDpConfig:
    """What the consortium asks of the distributed mechanism.

    Attributes:
        mechanism: ``"skellam"`` or ``"ddg"``.
        l2_clip: c, the L2 norm every site's update is clipped to (input units).
        target_epsilon, delta: the site-level target over ``rounds`` rounds.
        rounds: planned number of rounds (the budget is spread evenly over them).
        min_contributors: t, the protocol's threshold (no sum of fewer sites is ever output).
        max_contributors: n, the most sites in one sum (wrap-around bound); default t.
        colluding_sites: sites that may collude with the coordinator and subtract their noise.
        bits: ring width 32 or 64; None picks 32 when its wrap bound is met, else 64.
        rotation: randomised Hadamard flattening before rounding.
        beta: conditional rounding's per-attempt failure probability bound (KLS21 use e^-1/2).
        max_wrap_probability: the largest acceptable wrap-around bound per round.
        rounding_inflation: picks the scale: the smallest s whose rounded-norm bound B exceeds
            c s by at most this fraction (noise grows by the same fraction).
        scale: fix s (ring units per input unit) instead.
        neighbouring: ``"zero_out"`` or ``"replace_one"``.
    """

    mechanism: str
    l2_clip: float
    target_epsilon: float
    delta: float
    rounds: int
    min_contributors: int
    max_contributors: int | None = None
    colluding_sites: int = 0
    bits: int | None = None
    rotation: bool = True
    beta: float = math.exp(-0.5)
    max_wrap_probability: float = 1e-9
    rounding_inflation: float = 0.01
    scale: float | None = None
    neighbouring: str = "zero_out"

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise InvalidPrivacyParameterError(
                f"mechanism must be one of {MECHANISMS} (Skellam or distributed discrete Gaussian); "
                f"got {self.mechanism!r}"
            )
        object.__setattr__(self, "l2_clip", _positive("l2_clip", self.l2_clip))
        object.__setattr__(self, "target_epsilon", _positive("target_epsilon", self.target_epsilon))
        object.__setattr__(self, "delta", validate_delta(self.delta))
        _int_at_least("rounds", self.rounds, 1)
        t = _int_at_least("min_contributors", self.min_contributors, 1)
        n = t if self.max_contributors is None else _int_at_least("max_contributors", self.max_contributors, 1)
        if n < t:
            raise InvalidPrivacyParameterError(f"max_contributors ({n}) must be >= min_contributors ({t})")
        object.__setattr__(self, "max_contributors", n)
        colluding = _int_at_least("colluding_sites", self.colluding_sites, 0)
        if colluding >= t:
            raise InvalidPrivacyParameterError(
                f"with {colluding} colluding site(s) and threshold t = {t}, a sum may contain no honest noise; "
                "raise the threshold or lower the number of tolerated colluders"
            )
        if self.bits is not None and self.bits not in SUPPORTED_RING_BITS:
            raise InvalidPrivacyParameterError(f"bits must be one of {SUPPORTED_RING_BITS} or None; got {self.bits!r}")
        if not isinstance(self.rotation, bool):
            raise InvalidPrivacyParameterError(f"rotation must be a bool; got {self.rotation!r}")
        beta = _finite("beta", self.beta)
        if not 0 < beta < 1:
            raise InvalidPrivacyParameterError(f"beta must be in (0, 1); got {beta}")
        wrap = _finite("max_wrap_probability", self.max_wrap_probability)
        if not 0 < wrap < 1:
            raise InvalidPrivacyParameterError(f"max_wrap_probability must be in (0, 1); got {wrap}")
        inflation = _finite("rounding_inflation", self.rounding_inflation)
        if not 0 < inflation <= 1:
            raise InvalidPrivacyParameterError(f"rounding_inflation must be in (0, 1]; got {inflation}")
        if self.scale is not None:
            object.__setattr__(self, "scale", _positive("scale", self.scale))
        if self.neighbouring not in DISTRIBUTED_NEIGHBOURING:
            raise InvalidPrivacyParameterError(
                f"neighbouring must be one of {DISTRIBUTED_NEIGHBOURING}; got {self.neighbouring!r}"
            )

    @property
    def noise_contributors(self) -> int:
        return self.min_contributors - self.colluding_sites

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CalibratedDistributedDp:
    """Everything a site needs to privatize and the coordinator needs to decode, for one run.

    ``local_variance`` is in ring units (see :class:`DistributedDpEvent`); ``epsilon`` is the
    site-level epsilon of ``config.rounds`` rounds at ``config.delta``; ``wrap_probability``
    bounds the chance that one round's sum of ``config.max_contributors`` sites wraps.
    """

    config: DistributedDpConfig
    dimension: int
    padded_dimension: int
    scale: float
    l2_norm_bound_squared: int
    local_variance: float
    bits: int
    wrap_probability: float
    epsilon: float
    optimal_order: float = field(default=float("nan"))

    @property
    def vector_length(self) -> int:
        """Length of the ring vector each site masks (d' = padded dimension when rotated)."""
        return self.padded_dimension

    @property
    def granularity(self) -> float:
        return 1.0 / self.scale

    @property
    def l2_norm_bound(self) -> float:
        return math.sqrt(self.l2_norm_bound_squared)

    @property
    def ring_dtype(self) -> np.dtype:
        return ring_dtype(self.bits)

    @property
    def local_noise_variance(self) -> float:
        """The actual per-coordinate variance of one site's noise, in ring units."""
        if self.config.mechanism == "ddg":
            return discrete_gaussian_variance(self.local_variance)
        return self.local_variance

    def noise_std(self, contributors: int) -> float:
        """Per-coordinate std of (decoded sum - sum of clipped inputs) for ``contributors`` sites,
        in input units: noise plus at most 1/4 of rounding variance per site (approximate)."""
        n = _int_at_least("contributors", contributors, 1)
        return math.sqrt(n * (self.local_noise_variance + 0.25)) / self.scale

    def event(self, round_index: int) -> DistributedDpEvent:
        """The round's guarantee, for the privacy ledger."""
        return DistributedDpEvent(
            round=round_index, mechanism=self.config.mechanism, local_variance=self.local_variance,
            l2_norm_bound_squared=self.l2_norm_bound_squared, dimension=self.padded_dimension,
            noise_contributors=self.config.noise_contributors, neighbouring=self.config.neighbouring,
            scale=self.scale, l2_clip=self.config.l2_clip,
        )

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(), "dimension": self.dimension, "padded_dimension": self.padded_dimension,
            "scale": self.scale, "granularity": self.granularity, "l2_norm_bound_squared": self.l2_norm_bound_squared,
            "local_variance": self.local_variance, "bits": self.bits, "wrap_probability": self.wrap_probability,
            "epsilon": self.epsilon, "optimal_order": self.optimal_order,
        }


def _min_scaled_clip(dimension: int, beta: float, inflation: float) -> float:
    """Smallest c s with rounded_l2_norm_bound(c s) <= (1 + inflation) c s (the ratio decreases in c s)."""
    def excess(cs):
        return rounded_l2_norm_bound(cs, dimension, beta) / cs - (1.0 + inflation)

    if excess(_MAX_SCALED_CLIP) > 0:
        raise CalibrationError(
            f"dimension {dimension} is too large for a rounding inflation of {inflation:.3g} within a scaled "
            f"clip of 2^28; allow a larger rounding_inflation"
        )
    lo, hi = 1e-9, _MAX_SCALED_CLIP
    for _ in range(200):  # bisection on log(c s)
        mid = math.sqrt(lo * hi)
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-12:
            break
    return hi


def _table_entries(mechanism: str, local_variance: float) -> float:
    """Size of the sampler's table (see dp.discrete): ~25 sigma entries (sigma of one Poisson for Skellam)."""
    sigma = math.sqrt(local_variance if mechanism == "ddg" else local_variance / 2.0)
    return 25.0 * sigma


def calibrate(config: DistributedDpConfig, dimension: int) -> CalibratedDistributedDp:
    """Scale, noise, ring width and wrap-around bound for ``dimension``-long updates.

    1. Scale s: ``config.scale`` or the smallest s whose rounded-norm bound inflates c s by at
       most ``config.rounding_inflation``; B^2 = floor(rounded_l2_norm_bound(c s)^2).
    2. Noise: the smallest local variance (to 1e-6 relative, by bisection) whose composed
       site-level epsilon over ``config.rounds`` identical rounds is <= ``target_epsilon``
       (sigma >= 1/2 for the distributed discrete Gaussian).
    3. Ring: 32 bits if the wrap bound at ``max_contributors`` is <= ``max_wrap_probability``,
       else 64 (or exactly ``config.bits``); otherwise :class:`CalibrationError` names the bound.
    """
    if not isinstance(config, DistributedDpConfig):
        raise InvalidPrivacyParameterError(f"expected DistributedDpConfig; got {type(config).__name__}")
    d = _int_at_least("dimension", dimension, 1)
    padded = padded_dimension(d) if config.rotation else d
    if config.scale is not None:
        scaled_clip = config.l2_clip * config.scale
        if scaled_clip > _MAX_SCALED_CLIP:
            raise CalibrationError(f"scale * l2_clip = {scaled_clip:.4g} exceeds 2^28; choose a smaller scale")
    else:
        scaled_clip = _min_scaled_clip(padded, config.beta, config.rounding_inflation)
    scale = scaled_clip / config.l2_clip
    bound_squared = int(math.floor(rounded_l2_norm_bound(scaled_clip, padded, config.beta) ** 2))
    if bound_squared < 1:
        raise CalibrationError(f"the rounded norm bound is below 1 ring unit (scale {scale:.4g}); raise the scale")

    def template(variance: float) -> DistributedDpEvent:
        return DistributedDpEvent(
            round=0, mechanism=config.mechanism, local_variance=variance, l2_norm_bound_squared=bound_squared,
            dimension=padded, noise_contributors=config.noise_contributors, neighbouring=config.neighbouring,
            scale=scale, l2_clip=config.l2_clip,
        )

    floor_variance = 0.25 if config.mechanism == "ddg" else 1e-6
    target = config.target_epsilon

    def epsilon(variance: float) -> float:
        return _composed_epsilon(template(variance), config.rounds, config.delta)

    if epsilon(floor_variance) <= target:
        hi = floor_variance
    else:
        lo, hi = floor_variance, max(float(bound_squared), 2.0 * floor_variance)
        while epsilon(hi) > target:  # epsilon decreases to 0 as the variance grows
            lo, hi = hi, hi * 4.0
            if hi > 2.0**200:
                raise CalibrationError(f"no noise level reaches epsilon {target} (a bug: epsilon must vanish)")
        while hi / lo > 1 + 1e-6:  # invariant: lo misses the target, hi meets it
            mid = math.sqrt(lo * hi)
            if epsilon(mid) > target:
                lo = mid
            else:
                hi = mid
    variance = hi
    if _table_entries(config.mechanism, variance) > MAX_TABLE_ENTRIES:
        raise CalibrationError(
            f"the calibrated local noise (variance {variance:.4g} ring units^2) is too large for the exact "
            f"sampler's table; use a smaller scale (larger rounding_inflation) or a larger target epsilon"
        )
    reached, order = rdp_to_epsilon(DEFAULT_ORDERS, config.rounds * _event_rdp(template(variance), DEFAULT_ORDERS),
                                    config.delta)

    widths = SUPPORTED_RING_BITS if config.bits is None else (config.bits,)
    wraps = {}
    for bits in widths:
        wraps[bits] = wrap_probability_bound(
            mechanism=config.mechanism, local_variance=variance, scale=scale, l2_clip=config.l2_clip,
            l2_norm_bound_squared=bound_squared, dimension=padded, contributors=config.max_contributors,
            bits=bits, rotation=config.rotation,
        )
        if wraps[bits] <= config.max_wrap_probability:
            return CalibratedDistributedDp(
                config=config, dimension=d, padded_dimension=padded, scale=scale,
                l2_norm_bound_squared=bound_squared, local_variance=variance, bits=bits,
                wrap_probability=wraps[bits], epsilon=reached, optimal_order=order,
            )
    shown = ", ".join(f"{b} bits: {p:.3g}" for b, p in wraps.items())
    raise CalibrationError(
        f"the sum of {config.max_contributors} noisy updates may wrap around the ring: bound {shown} > "
        f"max_wrap_probability {config.max_wrap_probability:g} (local noise std "
        f"{math.sqrt(variance):.4g} ring units, scaled clip {scaled_clip:.4g}); allow 64 bits, enable rotation, "
        "lower the scale, or accept a larger wrap probability"
    )


# --- site side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivatizedUpdate:
    """A site's noisy ring vector and what happened on the way."""

    ring: np.ndarray  # uint32/uint64, length calibrated.vector_length, ready to be masked
    clipped: bool  # the input's L2 norm exceeded the clip
    input_norm: float  # ||x||_2 before clipping
    rounding_attempts: int  # conditional rounding retries (>= 1)


def _check_update(values, dimension: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidPrivacyParameterError(f"the update must be a 1-D array of numbers: {exc}") from None
    if array.ndim != 1 or array.shape[0] != dimension:
        raise InvalidPrivacyParameterError(f"the update must be 1-D of length {dimension}; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InvalidPrivacyParameterError(f"the update contains {bad} NaN/Inf value(s); refusing to privatize it")
    return array


def _uniform53(rng: RandomWords, count: int) -> np.ndarray:
    """Uniform floats on the 2^-53 grid from the CSPRNG (rounding randomness)."""
    return (rng.words(count) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _rounded_update(vector, calibrated: CalibratedDistributedDp, public_seed: bytes, rng: RandomWords):
    """Steps 1-4 of the pipeline: clip, rotate, scale, round conditionally (int64, ||.||^2 <= B^2)."""
    config = calibrated.config
    x = _check_update(vector, calibrated.dimension)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    # Factor out the largest magnitude so that huge (finite) inputs cannot overflow the norm.
    norm = peak * float(np.linalg.norm(x / peak)) if peak > 0 else 0.0
    clipped = norm > config.l2_clip
    if clipped:
        x = x * (config.l2_clip / norm)
    # Both branches give a fresh array, so scaling in place never touches the caller's input.
    y = rotate(x, public_seed) if config.rotation else x.copy()
    y *= calibrated.scale
    floor = np.floor(y)
    fraction = y - floor
    base = floor.astype(np.int64)
    for attempt in range(1, _MAX_ROUNDING_ATTEMPTS + 1):
        rounded = base + (_uniform53(rng, base.shape[0]) < fraction)
        # Exact integer check of the enforced bound (values are far below 2^31, sums below 2^63).
        if int(np.dot(rounded, rounded)) <= calibrated.l2_norm_bound_squared:
            break
    else:
        raise PrivacyError(
            f"conditional rounding failed {_MAX_ROUNDING_ATTEMPTS} times; the clipped update's norm "
            f"{norm:.6g} cannot fit the bound (this indicates a bug, not bad luck)"
        )
    return rounded, clipped, norm, attempt


def _integer_update(vector, calibrated: CalibratedDistributedDp, public_seed: bytes, rng: RandomWords):
    """Steps 1-5 of the pipeline: the noisy integer vector (int64) before reduction mod 2^b."""
    rounded, clipped, norm, attempt = _rounded_update(vector, calibrated, public_seed, rng)
    length = rounded.shape[0]
    if calibrated.config.mechanism == "ddg":
        noise = discrete_gaussian_sampler(Fraction(calibrated.local_variance)).sample(length, rng)
    else:
        # Sk(mu, mu) with 2 mu = local_variance, exactly (halving a float is exact).
        poisson = poisson_sampler(Fraction(calibrated.local_variance) / 2)
        noise = poisson.sample(length, rng)
        noise -= poisson.sample(length, rng)
    noise += rounded
    return noise, clipped, norm, attempt


def privatize_detailed(vector, calibrated: CalibratedDistributedDp, public_seed: bytes, *,
                       key: bytes | None = None) -> PrivatizedUpdate:
    """Clip, rotate (public seed), scale, round conditionally, add noise, reduce mod 2^b.

    ``key`` (32 bytes) makes rounding and noise reproducible - for tests only; by default every
    random word comes from fresh CSPRNG keys.
    """
    if not isinstance(calibrated, CalibratedDistributedDp):
        raise InvalidPrivacyParameterError(f"expected CalibratedDistributedDp; got {type(calibrated).__name__}")
    integers, clipped, norm, attempts = _integer_update(vector, calibrated, public_seed, RandomWords(key))
    # Two's complement: the int64 -> uint64 view is reduction mod 2^64; narrowing keeps the low b bits.
    ring = integers.view(np.uint64).astype(calibrated.ring_dtype, copy=False)
    return PrivatizedUpdate(ring=np.ascontiguousarray(ring), clipped=clipped, input_norm=norm,
                            rounding_attempts=attempts)


def privatize(vector, calibrated: CalibratedDistributedDp, public_seed: bytes, *,
              key: bytes | None = None) -> np.ndarray:
    """The noisy ring vector (uint32/uint64, length ``calibrated.vector_length``) to be masked."""
    return privatize_detailed(vector, calibrated, public_seed, key=key).ring


# --- coordinator side ------------------------------------------------------------------------


def decode_sum(ring_sum, calibrated: CalibratedDistributedDp, public_seed: bytes, n_contributors: int) -> np.ndarray:
    """The noisy float sum (length ``calibrated.dimension``) of ``n_contributors`` privatized updates.

    Refuses ``n_contributors`` below the threshold t (the calibration assumed at least t noise
    shares) or above ``max_contributors`` (the wrap-around bound assumed at most that many).
    """
    if not isinstance(calibrated, CalibratedDistributedDp):
        raise InvalidPrivacyParameterError(f"expected CalibratedDistributedDp; got {type(calibrated).__name__}")
    config = calibrated.config
    n = _int_at_least("n_contributors", n_contributors, 1)
    if not config.min_contributors <= n <= config.max_contributors:
        raise InvalidPrivacyParameterError(
            f"n_contributors must be in [{config.min_contributors}, {config.max_contributors}] (the threshold "
            f"and the calibrated maximum); got {n}"
        )
    array = np.asarray(ring_sum)
    if array.dtype != calibrated.ring_dtype or array.ndim != 1 or array.shape[0] != calibrated.vector_length:
        raise InvalidPrivacyParameterError(
            f"expected a 1-D {calibrated.ring_dtype} ring vector of length {calibrated.vector_length}; "
            f"got {array.dtype}{array.shape}"
        )
    signed = array.view(np.int32 if calibrated.bits == 32 else np.int64).astype(np.float64)
    signed /= calibrated.scale
    if config.rotation:
        return unrotate(signed, public_seed, calibrated.dimension)
    return signed[: calibrated.dimension]
