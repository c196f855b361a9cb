"""The site side of the distributed mechanism: clip, rotate, scale, round, add noise, reduce.

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
   is *enforced* (integer arithmetic), so the sensitivity of :mod:`dp.distributed.events` is exact whatever beta says.
5. **Noise**: add ``N_Z(0, sigma^2)^(d')`` (discrete Gaussian, "ddg") or
   ``Sk(mu, mu)^(d')`` = Poisson(mu) - Poisson(mu) (Skellam, variance 2 mu), drawn with the
   exact CSPRNG samplers of :mod:`dp.discrete`.
6. **Reduce** modulo 2^b into the ring the secure-aggregation protocol masks (uint32/uint64).

The coordinator undoes steps 2, 3 and 6 on the sum (:mod:`dp.distributed.coordinator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..discrete import RandomWords, discrete_gaussian_sampler, poisson_sampler
from ..errors import InvalidPrivacyParameterError, PrivacyError
from ..rotation import rotate
from .calibration import CalibratedDistributedDp

__all__ = ["PrivatizedUpdate", "privatize", "privatize_detailed", "rounded_update", "integer_update"]

_MAX_ROUNDING_ATTEMPTS = 1000


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


def rounded_update(vector, calibrated: CalibratedDistributedDp, public_seed: bytes, rng: RandomWords):
    """Steps 1-4 of the pipeline: clip, rotate, scale, round conditionally (int64, ||.||^2 <= B^2).

    Returns ``(rounded vector, clipped?, input norm, rounding attempts)``; each step is public so that
    it can be tested without the noise of step 5 (:func:`privatize_detailed` runs them all).
    """
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


def integer_update(vector, calibrated: CalibratedDistributedDp, public_seed: bytes, rng: RandomWords):
    """Steps 1-5 of the pipeline: the noisy integer vector (int64) before reduction mod 2^b, with what
    :func:`rounded_update` returns besides its vector."""
    rounded, clipped, norm, attempt = rounded_update(vector, calibrated, public_seed, rng)
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
    integers, clipped, norm, attempts = integer_update(vector, calibrated, public_seed, RandomWords(key))
    # Two's complement: the int64 -> uint64 view is reduction mod 2^64; narrowing keeps the low b bits.
    ring = integers.view(np.uint64).astype(calibrated.ring_dtype, copy=False)
    return PrivatizedUpdate(ring=np.ascontiguousarray(ring), clipped=clipped, input_norm=norm,
                            rounding_attempts=attempts)


def privatize(vector, calibrated: CalibratedDistributedDp, public_seed: bytes, *,
              key: bytes | None = None) -> np.ndarray:
    """The noisy ring vector (uint32/uint64, length ``calibrated.vector_length``) to be masked."""
    return privatize_detailed(vector, calibrated, public_seed, key=key).ring
