"""Shamir t-out-of-n secret sharing of 32-byte secrets over GF(p), p = 2^256 + 297.

Math. A secret s (32 bytes, read big-endian, so 0 <= s < 2^256 < p) is the
constant term of a polynomial f(X) = s + a_1 X + ... + a_{t-1} X^{t-1} over
GF(p) with a_i uniform in GF(p) (from :mod:`secrets`). Party with x-coordinate
x_j (never 0) receives f(x_j). Any t shares determine f and hence
s = f(0) = sum_j y_j * lambda_j with Lagrange coefficients
lambda_j = prod_{m != j} x_m / (x_m - x_j); any t-1 shares are jointly uniform
and independent of s (perfect hiding).

p is the smallest prime above 2^256 (primality checked in the tests with an
independent implementation), so every 32-byte string is a field element and
reconstruction returns exactly the bytes that were shared.

Sharing is not robust: a malicious share holder can make reconstruction return
a wrong value. The protocol detects this for key shares (the reconstructed
secret key must match the advertised public key) and checks any surplus
shares for consistency with the interpolated polynomial.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Iterable, Mapping

from .errors import InvalidInputError, ReconstructionError

__all__ = ["PRIME", "SECRET_BYTES", "SHARE_BYTES", "split", "reconstruct", "x_coordinate"]

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33  # field elements need 257 bits on the wire
_MAX_ID = 2**32


def x_coordinate(client_id: int) -> int:
    """The evaluation point of a client: its id + 1 (0 is reserved for the secret)."""
    if not 0 <= client_id < _MAX_ID:
        raise InvalidInputError(f"client ids must be in [0, 2^32); got {client_id}")
    return client_id + 1


def split(secret: bytes, threshold: int, xs: Iterable[int]) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for each x-coordinate in ``xs``."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_BYTES:
        raise InvalidInputError(f"Shamir secrets are {SECRET_BYTES} bytes; got {len(secret)}")
    points = list(xs)
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise InvalidInputError(f"share x-coordinates must be distinct and in (0, p); got {points}")
    if not 1 <= threshold <= len(points):
        raise InvalidInputError(
            f"threshold must be between 1 and the number of shares ({len(points)}); got {threshold}"
        )
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in points:
        acc = 0
        for c in reversed(coefficients):  # Horner
            acc = (acc * x + c) % PRIME
        shares[x] = acc
    return shares


@lru_cache(maxsize=4096)
def _lagrange_at(xs: tuple[int, ...], target: int) -> tuple[int, ...]:
    """Lagrange basis values ell_j(target) for the nodes ``xs`` (cached: the same
    responder sets recur for many reconstructions in one round)."""
    coefficients = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * (target - xm) % PRIME
                den = den * (xj - xm) % PRIME
        coefficients.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(coefficients)


def _interpolate(points: list[tuple[int, int]], target: int) -> int:
    xs = tuple(x for x, _ in points)
    return sum(y * c for (_, y), c in zip(points, _lagrange_at(xs, target))) % PRIME


def reconstruct(shares: Mapping[int, int], threshold: int, *, check_extra: int = 1) -> bytes:
    """Recover the 32-byte secret from at least ``threshold`` shares ``{x: y}``.

    Interpolates through the ``threshold`` shares with the smallest x, then
    checks up to ``check_extra`` surplus shares against the polynomial.
    Raises :class:`ReconstructionError` with too few shares or inconsistent ones.
    """
    if len(shares) < threshold:
        raise ReconstructionError(f"need {threshold} shares to reconstruct; got {len(shares)}")
    for x, y in shares.items():
        if not 0 < x < PRIME or not 0 <= y < PRIME:
            raise ReconstructionError(f"share ({x}, ...) is not a point of GF(p)")
    ordered = sorted(shares.items())
    base, extra = ordered[:threshold], ordered[threshold : threshold + check_extra]
    value = _interpolate(base, 0)
    for x, y in extra:
        if _interpolate(base, x) != y:
            raise ReconstructionError(
                f"share at x={x} is inconsistent with the other {threshold} shares "
                "(a share holder sent a corrupted share)"
            )
    if value >= 2 ** (8 * SECRET_BYTES):
        raise ReconstructionError("reconstructed value is not a 32-byte secret (corrupted shares)")
    return value.to_bytes(SECRET_BYTES, "big")
