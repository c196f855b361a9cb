"""Randomised Walsh-Hadamard rotation from public randomness ("flattening" before quantisation).

Math. For a vector x in R^d, pad with zeros to d' = 2^ceil(log2 d) and compute

    y = R x,   R = H D / sqrt(d'),

with H the d' x d' Sylvester-Hadamard matrix (entries +-1, H H^T = d' I) and D a diagonal of
independent uniform signs. R is orthogonal, so ||y||_2 = ||x||_2 and the inverse is
R^T = D H / sqrt(d') (H is symmetric). Each coordinate y_j = sum_k (H_jk / sqrt(d')) D_k x_k is
a Rademacher sum with coefficients of squared sum ||x||^2 / d', hence sub-Gaussian with variance
proxy ||x||^2 / d' (Hoeffding): the rotation spreads the mass of any fixed vector evenly over
the coordinates, which keeps every coordinate of a clipped update small and the modular sum far
from wrapping (Kairouz, Liu, Steinke, ICML 2021; Suresh, Yu, Kumar, McMahan, ICML 2017).

Randomness. The signs are *public*: every site and the decoder derive them from a shared public
seed (in the simulation, the round's session id) with HKDF-SHA256 and an AES-CTR keystream
(:mod:`secagg.crypto`, :mod:`secagg.prg`), so the decoder can invert the rotation. The
flattening guarantee needs the inputs to be chosen independently of the signs, so the seed must
be fresh for each round; a site that knew the seed in advance could only hurt accuracy (wrap
around), never anyone's privacy, which rests on the noise and the enforced norm bound alone.

Cost. The fast transform takes log2(d') vectorised butterfly passes, in place.
"""

from __future__ import annotations

import numpy as np

from secagg.crypto import derive_key
from secagg.prg import keystream_into

from .errors import InvalidPrivacyParameterError

__all__ = ["padded_dimension", "rotation_signs", "hadamard_transform", "rotate", "unrotate"]

_MIN_SEED_BYTES = 16


def padded_dimension(dimension: int) -> int:
    """The smallest power of two >= ``dimension``."""
    if isinstance(dimension, bool) or not isinstance(dimension, (int, np.integer)) or dimension < 1:
        raise InvalidPrivacyParameterError(f"dimension must be an int >= 1; got {dimension!r}")
    return 1 << (int(dimension) - 1).bit_length()


def _check_seed(public_seed) -> bytes:
    if not isinstance(public_seed, (bytes, bytearray)) or len(public_seed) < _MIN_SEED_BYTES:
        raise InvalidPrivacyParameterError(
            f"the public rotation seed must be at least {_MIN_SEED_BYTES} bytes (e.g. the round's session id); "
            f"got {type(public_seed).__name__} of length {len(public_seed) if hasattr(public_seed, '__len__') else '?'}"
        )
    return bytes(public_seed)


def rotation_signs(public_seed: bytes, padded: int) -> np.ndarray:
    """The diagonal of D: ``padded`` signs (+1.0/-1.0) derived deterministically from ``public_seed``."""
    seed = _check_seed(public_seed)
    if padded < 1 or padded & (padded - 1):
        raise InvalidPrivacyParameterError(f"the padded dimension must be a power of two; got {padded}")
    # The length is in the HKDF context so that two dimensions never share a sign prefix.
    key = derive_key(seed, "dp-rotation-signs", padded.to_bytes(8, "little"))
    raw = keystream_into(key, np.empty((padded + 7) // 8, dtype=np.uint8))
    bits = np.unpackbits(raw, bitorder="little")[:padded]
    return 1.0 - 2.0 * bits.astype(np.float64)


def hadamard_transform(values: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform ``H v / sqrt(len(v))`` (a new array; length a power of two)."""
    x = np.array(values, dtype=np.float64, copy=True)
    n = x.shape[0]
    if x.ndim != 1 or n < 1 or n & (n - 1):
        raise InvalidPrivacyParameterError(f"the Hadamard transform needs a 1-D power-of-two length; got {x.shape}")
    h = 1
    while h < n:
        # Blocks of 2h: (a, b) -> (a + b, a - b), in place on views of x.
        blocks = x.reshape(-1, 2, h)
        a, b = blocks[:, 0, :], blocks[:, 1, :]
        diff = a - b
        a += b
        b[...] = diff
        h *= 2
    x *= 1.0 / np.sqrt(n)
    return x


def rotate(values: np.ndarray, public_seed: bytes) -> np.ndarray:
    """``R [x, 0...0]``: pad to a power of two, flip the public signs, transform."""
    x = np.asarray(values, dtype=np.float64)
    padded = padded_dimension(x.shape[0])
    full = np.zeros(padded, dtype=np.float64)
    full[: x.shape[0]] = x
    full *= rotation_signs(public_seed, padded)
    return hadamard_transform(full)


def unrotate(values: np.ndarray, public_seed: bytes, dimension: int) -> np.ndarray:
    """``R^T y`` truncated to the first ``dimension`` coordinates (inverse of :func:`rotate`)."""
    y = np.asarray(values, dtype=np.float64)
    padded = y.shape[0]
    if padded != padded_dimension(dimension):
        raise InvalidPrivacyParameterError(
            f"a rotated vector of dimension {dimension} has length {padded_dimension(dimension)}; got {padded}"
        )
    x = hadamard_transform(y)
    x *= rotation_signs(public_seed, padded)
    return x[:dimension]
