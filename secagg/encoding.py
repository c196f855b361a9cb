"""Fixed-point encoding of float vectors into the ring Z_{2^b}, and back.

Math. Given a clipping bound ``c`` and at most ``n`` summands, choose the
largest integer ``S = min(floor((2^(b-1) - 1) / n), 2^52)`` and the scale
``S / c`` (the 2^52 cap keeps every scaled value exact in float64).
Each coordinate x is clipped to [-c, c], scaled to v = x * S / c in [-S, S]
and rounded *stochastically*: to floor(v) + 1 with probability v - floor(v),
else floor(v). The rounding is unbiased (E[round(v)] = v) and the rounding
noise is driven by the CSPRNG (AES-CTR keyed from :mod:`secrets`), so it does
not leak a predictable pattern. The integer is stored in two's complement in
Z_{2^b}. A sum of at most n encoded vectors lies in [-nS, nS], strictly inside
(-2^(b-1), 2^(b-1)), so it can never wrap and decodes exactly to the integer
sum; the decoded float sum differs from the sum of clipped inputs by less than
``n * resolution`` with ``resolution = c / S`` (one quantisation step each).

Bit width. b = 32 unless the requested resolution needs more, then 64;
settings that even 64 bits cannot meet are refused before any key exists.

FedAvg weights ride inside the masked vector: :func:`weighted_vector`
appends the normalised weight as one more coordinate, so the coordinator
learns only the *sum* of the weights, never an individual one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crypto import random_bytes
from .errors import InfeasibleParametersError, InvalidInputError
from .prg import uniform_floats

__all__ = [
    "SUPPORTED_BIT_WIDTHS",
    "FixedPointEncoder",
    "EncodedVector",
    "ring_dtype",
    "weighted_vector",
    "weighted_mean",
]

SUPPORTED_BIT_WIDTHS = (32, 64)
_MAX_EXACT_BOUND = 1 << 52


def ring_dtype(bit_width: int) -> np.dtype:
    """The unsigned numpy dtype that holds Z_{2^b} with wrap-around arithmetic."""
    if bit_width == 32:
        return np.dtype(np.uint32)
    if bit_width == 64:
        return np.dtype(np.uint64)
    raise InvalidInputError(f"bit width must be one of {SUPPORTED_BIT_WIDTHS}; got {bit_width}")


def check_finite_vector(values, *, length: int | None = None, name: str = "input") -> np.ndarray:
    """Return ``values`` as a 1-D float64 array, refusing wrong shapes, lengths and NaN/Inf."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be a 1-D array of numbers; got {type(values).__name__}: {exc}") from None
    if array.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D; got shape {array.shape}")
    if length is not None and array.shape[0] != length:
        raise InvalidInputError(f"{name} must have length {length}; got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InvalidInputError(f"{name} contains {bad} NaN/Inf value(s); refusing to encode it")
    return array


@dataclass(frozen=True)
class EncodedVector:
    """A vector in Z_{2^b} plus what the encoder had to do to it."""

    ring: np.ndarray
    clipped: int  # how many coordinates were clipped to [-clip, clip]


@dataclass(frozen=True)
class FixedPointEncoder:
    """Encoder for sums of at most ``max_summands`` vectors clipped to ``[-clip, clip]``."""

    clip: float
    max_summands: int
    bit_width: int
    bound: int  # S: the largest encoded magnitude of one summand

    @classmethod
    def create(
        cls,
        *,
        clip: float,
        max_summands: int,
        resolution: float | None = None,
        bit_width: int | None = None,
    ) -> "FixedPointEncoder":
        """Pick b and S so that n sums never wrap and the step is at most ``resolution``."""
        if not isinstance(clip, (int, float)) or not np.isfinite(clip) or clip <= 0:
            raise InvalidInputError(f"clip must be a positive finite number; got {clip!r}")
        if not isinstance(max_summands, int) or max_summands < 1:
            raise InvalidInputError(f"max_summands must be a positive int; got {max_summands!r}")
        if resolution is not None and (not np.isfinite(resolution) or resolution <= 0):
            raise InvalidInputError(f"resolution must be a positive finite number; got {resolution!r}")
        widths = SUPPORTED_BIT_WIDTHS if bit_width is None else (bit_width,)
        if bit_width is not None:
            ring_dtype(bit_width)
        for b in widths:
            # Cap at 2^52 so that every scaled value and its floor are exact in float64.
            bound = min(((1 << (b - 1)) - 1) // max_summands, _MAX_EXACT_BOUND)
            if bound < 1:
                continue
            if resolution is None or clip / bound <= resolution:
                return cls(float(clip), max_summands, b, bound)
        raise InfeasibleParametersError(
            f"cannot encode sums of {max_summands} vectors clipped to {clip} with resolution "
            f"{resolution} in {'/'.join(map(str, widths))}-bit rings without wrap-around; "
            "raise the resolution, lower the clip or the number of clients"
        )

    @property
    def scale(self) -> float:
        return self.bound / self.clip

    @property
    def resolution(self) -> float:
        """One quantisation step in input units: ``|decoded - exact| < n * resolution``."""
        return self.clip / self.bound

    @property
    def dtype(self) -> np.dtype:
        return ring_dtype(self.bit_width)

    def encode(self, values, *, length: int | None = None) -> EncodedVector:
        """Clip, scale, round stochastically (CSPRNG) and map into Z_{2^b}."""
        x = check_finite_vector(values, length=length)
        clipped = int(np.count_nonzero(np.abs(x) > self.clip))
        v = np.clip(x, -self.clip, self.clip) * self.scale
        # Guard against x * (S/c) landing a hair outside [-S, S] in floating point.
        np.clip(v, -self.bound, self.bound, out=v)
        floor = np.floor(v)
        up = uniform_floats(random_bytes(), x.shape[0]) < (v - floor)
        integers = floor.astype(np.int64) + up
        # Integer-domain guard: no summand ever exceeds the bound that rules out wrap-around.
        np.clip(integers, -self.bound, self.bound, out=integers)
        # Two's complement: the int64 -> uint64 view is reduction mod 2^64;
        # the narrowing cast keeps the low b bits, i.e. reduction mod 2^b.
        ring = integers.view(np.uint64).astype(self.dtype, copy=False)
        return EncodedVector(ring=np.ascontiguousarray(ring), clipped=clipped)

    def decode(self, ring_sum: np.ndarray) -> np.ndarray:
        """Map a sum in Z_{2^b} (never wrapped, by construction) back to float64."""
        array = np.asarray(ring_sum)
        if array.dtype != self.dtype or array.ndim != 1:
            raise InvalidInputError(f"expected a 1-D {self.dtype} ring vector; got {array.dtype}{array.shape}")
        signed = array.view(np.int32 if self.bit_width == 32 else np.int64)
        return signed.astype(np.float64) / self.scale


def weighted_vector(update, weight: float, *, max_weight: float, clip: float) -> np.ndarray:
    """``[w' * clip(update), w' * clip]`` with w' = weight / max_weight in (0, 1].

    Every coordinate stays within [-clip, clip], so the vector encodes like any
    other; the coordinator recovers the weighted mean with :func:`weighted_mean`
    from the sum alone.
    """
    x = check_finite_vector(update, name="update")
    if not (np.isfinite(weight) and np.isfinite(max_weight) and 0 < weight <= max_weight):
        raise InvalidInputError(f"weight must be in (0, max_weight={max_weight}]; got {weight}")
    w = weight / max_weight
    return np.append(np.clip(x, -clip, clip) * w, w * clip)


def weighted_mean(aggregate: np.ndarray, *, clip: float) -> tuple[np.ndarray, float]:
    """Invert :func:`weighted_vector` on a sum: (sum_i w_i x_i / sum_i w_i, sum_i w_i').

    The second value is the sum of the normalised weights (in units of max_weight).
    """
    aggregate = np.asarray(aggregate, dtype=np.float64)
    total = aggregate[-1] / clip
    if not total > 0:
        raise InvalidInputError(f"the summed weight must be positive; got {total}")
    return aggregate[:-1] / total, float(total)
