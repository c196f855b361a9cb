"""Calibration of the distributed mechanism: what the consortium asks, and the scale, noise and ring that meet it.

:class:`DistributedDpConfig` is the request (mechanism, clip, target epsilon over the planned
rounds, threshold and colluders, ring width); :func:`calibrate` answers with a
:class:`CalibratedDistributedDp` that every site uses to privatize (:mod:`dp.distributed.site`)
and the coordinator uses to decode (:mod:`dp.distributed.coordinator`). The rounding bound is
KLS21's (:func:`rounded_l2_norm_bound`), the epsilon is :mod:`dp.distributed.accounting`'s and
the ring width is the narrowest whose :func:`dp.distributed.wraparound.wrap_probability_bound`
is acceptable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from secagg.encoding import SUPPORTED_BIT_WIDTHS, ring_dtype

from ..discrete import MAX_TABLE_ENTRIES, discrete_gaussian_variance
from ..errors import CalibrationError, InvalidPrivacyParameterError
from ..events import validate_delta
from ..rotation import padded_dimension
from .accounting import DEFAULT_ORDERS, composed_epsilon, event_rdp, rdp_to_epsilon
from .checks import finite, int_at_least, positive
from .events import DISTRIBUTED_NEIGHBOURING, MECHANISMS, DistributedDpEvent
from .wraparound import wrap_probability_bound

__all__ = ["DistributedDpConfig", "CalibratedDistributedDp", "rounded_l2_norm_bound", "calibrate"]

SUPPORTED_RING_BITS = SUPPORTED_BIT_WIDTHS  # the rings secagg masks in: (32, 64)

_MAX_SCALED_CLIP = float(1 << 28)  # keeps every squared norm of a rounded vector exact in int64


def rounded_l2_norm_bound(scaled_clip: float, dimension: int, beta: float) -> float:
    """KLS21's bound on the L2 norm after randomised rounding of a vector of norm <= ``scaled_clip``.

    ``min{c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2))}``; the first always
    holds, the second with probability >= 1 - beta per rounding.
    """
    c = positive("scaled_clip", scaled_clip)
    d = int_at_least("dimension", dimension, 1)
    if not 0 < beta < 1:
        raise InvalidPrivacyParameterError(f"beta must be in (0, 1); got {beta}")
    always = c + math.sqrt(d)
    likely = math.sqrt(c * c + d / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (c + math.sqrt(d) / 2.0))
    return min(always, likely)


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
        object.__setattr__(self, "l2_clip", positive("l2_clip", self.l2_clip))
        object.__setattr__(self, "target_epsilon", positive("target_epsilon", self.target_epsilon))
        object.__setattr__(self, "delta", validate_delta(self.delta))
        int_at_least("rounds", self.rounds, 1)
        t = int_at_least("min_contributors", self.min_contributors, 1)
        n = t if self.max_contributors is None else int_at_least("max_contributors", self.max_contributors, 1)
        if n < t:
            raise InvalidPrivacyParameterError(f"max_contributors ({n}) must be >= min_contributors ({t})")
        object.__setattr__(self, "max_contributors", n)
        colluding = int_at_least("colluding_sites", self.colluding_sites, 0)
        if colluding >= t:
            raise InvalidPrivacyParameterError(
                f"with {colluding} colluding site(s) and threshold t = {t}, a sum may contain no honest noise; "
                "raise the threshold or lower the number of tolerated colluders"
            )
        if self.bits is not None and self.bits not in SUPPORTED_RING_BITS:
            raise InvalidPrivacyParameterError(f"bits must be one of {SUPPORTED_RING_BITS} or None; got {self.bits!r}")
        if not isinstance(self.rotation, bool):
            raise InvalidPrivacyParameterError(f"rotation must be a bool; got {self.rotation!r}")
        beta = finite("beta", self.beta)
        if not 0 < beta < 1:
            raise InvalidPrivacyParameterError(f"beta must be in (0, 1); got {beta}")
        wrap = finite("max_wrap_probability", self.max_wrap_probability)
        if not 0 < wrap < 1:
            raise InvalidPrivacyParameterError(f"max_wrap_probability must be in (0, 1); got {wrap}")
        inflation = finite("rounding_inflation", self.rounding_inflation)
        if not 0 < inflation <= 1:
            raise InvalidPrivacyParameterError(f"rounding_inflation must be in (0, 1]; got {inflation}")
        if self.scale is not None:
            object.__setattr__(self, "scale", positive("scale", self.scale))
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
        n = int_at_least("contributors", contributors, 1)
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
    d = int_at_least("dimension", dimension, 1)
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
        return composed_epsilon(template(variance), config.rounds, config.delta)

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
    reached, order = rdp_to_epsilon(DEFAULT_ORDERS, config.rounds * event_rdp(template(variance), DEFAULT_ORDERS),
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
