"""Exact discrete noise from the CSPRNG: discrete Gaussian, Poisson and Skellam samplers.

What is sampled
---------------
* Discrete Gaussian ``N_Z(0, sigma^2)``: ``P[X = k] = exp(-k^2 / (2 sigma^2)) / Z`` on the integers
  (Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential Privacy", NeurIPS 2020).
  ``sigma^2`` is the *parameter*; the variance is slightly below it (CKS20: Var < sigma^2;
  the gap is negligible for sigma >= 1, see :func:`discrete_gaussian_variance`).
* ``Poisson(lam)``: ``P[X = k] = exp(-lam) lam^k / k!``.
* Symmetric Skellam ``Sk(mu, mu) = Poisson(mu) - Poisson(mu)`` (Agarwal, Kairouz, Liu, "The Skellam
  Mechanism for Differentially Private Federated Learning", NeurIPS 2021): mean 0, variance
  exactly ``2 mu``, and closed under sums (the sum of n independent ``Sk(mu, mu)`` is ``Sk(n mu, n mu)``).

Parameters are exact rationals (a float is a dyadic rational; :class:`fractions.Fraction` is taken
as is), so the distribution sampled is, bit for bit, the one the accountant analyses.

How: inversion against certified tables (exact, vectorised)
-----------------------------------------------------------
For a distribution with CDF ``F``, ``X = min{k : U < F(k)}`` with ``U`` uniform on [0, 1) has
exactly that distribution. ``U`` is revealed lazily from the AES-CTR keystream
(:mod:`secagg.prg`, keyed from :func:`secrets.token_bytes`): first one 64-bit word ``W``, so
``U`` lies in ``[W 2^-64, (W + 1) 2^-64)``.

*Fast path (numpy, all draws at once).* A table holds ``T_k = floor(F(k) 2^64)`` for every k
in a window around the mode. With ``i`` the first entry with ``T_i > W``:
``F(i) >= T_i 2^-64 >= (W + 1) 2^-64 > U``; and if ``T_{i-1} < W``, then
``F(i-1) < (T_{i-1} + 1) 2^-64 <= W 2^-64 <= U``. So ``X = i`` is *decided by integer
comparisons alone*. The lookup uses a guide table indexed by the top bits of ``W``.

*Slow path (pure Python, rare).* When ``W`` equals a threshold (probability <= 2^-64 per draw)
or ``U`` falls in a tail outside the window (probability < 2^-99), more keystream words extend
``U`` and it is compared with rational interval bounds on ``F`` at a higher precision, raising
the precision or revealing more bits until the comparison is decided.

Both paths return ``F^{-1}(U)`` for the *same* ``U``, so the output law is exactly the target
law; the only assumption is that the keystream is uniform (the security of AES-CTR).

Certification of the table. Weights relative to the mode are computed in fixed point with
``B`` fractional bits as integer *intervals*: every product and quotient is rounded down for the
lower end and up for the upper end (exact integer floor/ceil division), sums are exact integer
additions. Poisson ratios ``w(k+1)/w(k) = lam/(k+1)`` are rational; the discrete Gaussian needs
one transcendental, ``q = exp(-1/(2 sigma^2))`` (``w(k+1)/w(k) = q^(2k+1)``), taken from
:mod:`decimal`, whose ``exp`` is correctly rounded, and widened by one unit in the last place.
The mass beyond the computed range is bounded by a geometric series (both families are
log-concave, so the ratio of consecutive weights only shrinks away from the mode). With
``S`` the mass up to k and ``R`` the mass after it, ``F(k) = S / (S + R)`` lies in
``[S_lo / (S_lo + R_hi), S_hi / (S_hi + R_lo)]``; ``T_k`` enters the table only when that whole
interval times 2^64 lies in ``[T_k, T_k + 1)``, otherwise ``B`` is raised and the table rebuilt.

Why not rejection from a discrete Laplace (CKS20, Algorithm 3)? It is exact, but its acceptance
step needs a Bernoulli(exp(-gamma)) trial with a *sample-dependent* rational gamma whose
numerator and denominator overflow 64-bit integers at the scales used here (sigma of 10^3-10^5
ring units); vectorising it with floats would break exactness. Inversion needs transcendental
values only while the table is built, where interval arithmetic keeps them exact. The pure
Python CKS sampler is the peer in ``benchmarks/test_bench_samplers.py``.

Cost. One keystream word and a table lookup per draw (two for Skellam). Tables hold about
22 sigma (discrete Gaussian) or 22 sqrt(lam) (Poisson) uint64 entries, are built once per
parameter (pure Python, ~1-2 microseconds per entry) and cached.
"""

from __future__ import annotations

import abc
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Iterator

import numpy as np

from secagg.crypto import derive_key, random_bytes
from secagg.prg import keystream_words

from .errors import InvalidPrivacyParameterError

__all__ = [
    "MAX_TABLE_ENTRIES",
    "RandomWords",
    "InversionSampler",
    "Family",
    "DiscreteGaussianFamily",
    "PoissonFamily",
    "CdfWalk",
    "certified_floor",
    "exact_rational",
    "discrete_gaussian_sampler",
    "poisson_sampler",
    "sample_discrete_gaussian",
    "sample_poisson",
    "sample_skellam",
    "discrete_gaussian_variance",
]

#: Largest table (entries) a sampler may build: ~64 MiB of uint64 and ~10 s of build time.
MAX_TABLE_ENTRIES = 1 << 23
_TWO64 = 1 << 64
_MASK64 = _TWO64 - 1
_TAIL_BITS = 100  # mass left outside the computed range is < 2^-100 of the total
_BASE_BITS = 160  # fixed-point fractional bits of the first certification attempt
_MAX_REFINEMENTS = 200  # slow-path safety stop; reaching it means a bug, never a silent inexact draw


# --- randomness -----------------------------------------------------------------


class RandomWords:
    """Uniform 64-bit words from the AES-256-CTR keystream of :mod:`secagg.prg`.

    ``key=None`` (the default, and the only setting for real noise): every request is the
    keystream of a fresh 32-byte key from :func:`secrets.token_bytes`, so no stream is reused.
    With an explicit 32-byte ``key``, request i uses the key HKDF(key, "dp-discrete-noise", i):
    reproducible draws for tests and audits, never for noise that protects anyone.
    """

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and (not isinstance(key, (bytes, bytearray)) or len(key) != 32):
            raise InvalidPrivacyParameterError(f"the noise key must be 32 bytes or None; got {key!r:.40}")
        self._key = None if key is None else bytes(key)
        self._counter = 0

    def words(self, count: int) -> np.ndarray:
        if self._key is None:
            key = random_bytes()
        else:
            key = derive_key(self._key, "dp-discrete-noise", self._counter.to_bytes(8, "little"))
            self._counter += 1
        return keystream_words(key, int(count), np.uint64)

    def word(self) -> int:
        return int(self.words(1)[0])


def exact_rational(value, name: str) -> Fraction:
    """``value`` (int, finite float or Fraction, > 0) as the exact rational it denotes."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise InvalidPrivacyParameterError(f"{name} must be a number; got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidPrivacyParameterError(f"{name} must be finite; got {value!r}")
    exact = Fraction(value)
    if exact <= 0:
        raise InvalidPrivacyParameterError(f"{name} must be > 0; got {value!r}")
    return exact


# --- distribution families: weights relative to the mode, as fixed-point intervals ---------


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class Family(abc.ABC):
    """A log-concave pmf on the integers given by its mode and the ratios of consecutive weights.

    ``up_ratios(bits)`` yields integer intervals ``(lo, hi)`` (fixed point, ``bits`` fractional
    bits) containing ``w(k+1)/w(k)`` for k = mode, mode+1, ...; ``down_ratios(bits)`` contains
    ``w(k-1)/w(k)`` for k = mode, mode-1, ... and stops where the support ends. Both sequences
    are non-increasing (log-concavity), which is what makes the geometric tail bounds valid.
    """

    name: str
    mode: int

    @abc.abstractmethod
    def up_ratios(self, bits: int) -> Iterator[tuple[int, int]]:
        """Intervals containing w(k+1)/w(k) for k = mode, mode+1, ..."""

    @abc.abstractmethod
    def down_ratios(self, bits: int) -> Iterator[tuple[int, int]]:
        """Intervals containing w(k-1)/w(k) for k = mode, mode-1, ... down to the support's end."""

    @abc.abstractmethod
    def extent_estimate(self) -> int:
        """Roughly how many entries the table will have (for the size guard)."""


class DiscreteGaussianFamily(Family):
    """The discrete Gaussian N_Z(0, sigma^2) as a :class:`Family` (the one transcendental, exp, from decimal)."""

    def __init__(self, sigma_squared: Fraction) -> None:
        self.sigma_squared = sigma_squared
        self.name = f"discrete Gaussian (sigma^2 = {float(sigma_squared):.6g})"
        self.mode = 0

    def _q(self, bits: int) -> tuple[int, int]:
        """Fixed-point interval around q = exp(-1/(2 sigma^2))."""
        digits = int(bits * 0.30103) + 12
        down = Context(prec=digits, rounding=ROUND_FLOOR)
        up = Context(prec=digits, rounding=ROUND_CEILING)
        num, den = self.sigma_squared.numerator, self.sigma_squared.denominator
        x_lo = down.divide(Decimal(den), Decimal(2 * num))  # 1/(2 sigma^2) = den / (2 num)
        x_hi = up.divide(Decimal(den), Decimal(2 * num))
        ulp = Decimal(10) ** (1 - digits)  # exact: a power of ten
        # Decimal.exp is correctly rounded (half-even) whatever the context's rounding mode, so its
        # error is below half a unit in the last place: widening by one relative unit is safe.
        q_lo = down.multiply(down.exp(down.minus(x_hi)), down.subtract(Decimal(1), ulp))
        q_hi = up.multiply(up.exp(up.minus(x_lo)), up.add(Decimal(1), ulp))
        scale = Decimal(1 << bits)
        lo = int(down.multiply(q_lo, scale))  # int() truncates: floor for positive values
        hi = int(up.multiply(q_hi, scale).to_integral_value(rounding=ROUND_CEILING))
        return max(lo, 0), min(hi, (1 << bits) - 1)  # 0 < q < 1

    def up_ratios(self, bits: int) -> Iterator[tuple[int, int]]:
        q_lo, q_hi = self._q(bits)
        q2_lo = (q_lo * q_lo) >> bits
        q2_hi = _ceil_div(q_hi * q_hi, 1 << bits)
        r_lo, r_hi = q_lo, q_hi  # w(1)/w(0) = q; then w(k+1)/w(k) = q^(2k+1)
        while True:
            yield r_lo, r_hi
            r_lo = (r_lo * q2_lo) >> bits
            r_hi = _ceil_div(r_hi * q2_hi, 1 << bits)

    down_ratios = up_ratios  # symmetric about 0

    def extent_estimate(self) -> int:
        return int(25 * math.sqrt(self.sigma_squared)) + 24


class PoissonFamily(Family):
    """Poisson(lam) as a :class:`Family` (every ratio is rational)."""

    def __init__(self, lam: Fraction) -> None:
        self.lam = lam
        self.name = f"Poisson (lambda = {float(lam):.6g})"
        self.mode = math.floor(lam)

    def up_ratios(self, bits: int) -> Iterator[tuple[int, int]]:
        a, b = self.lam.numerator, self.lam.denominator
        top = a << bits
        k = self.mode
        while True:  # w(k+1)/w(k) = lam/(k+1) = a / (b (k+1))
            den = b * (k + 1)
            yield top // den, _ceil_div(top, den)
            k += 1

    def down_ratios(self, bits: int) -> Iterator[tuple[int, int]]:
        a, b = self.lam.numerator, self.lam.denominator
        for k in range(self.mode, 0, -1):  # w(k-1)/w(k) = k/lam = k b / a; nothing below 0
            top = (k * b) << bits
            yield top // a, _ceil_div(top, a)

    def extent_estimate(self) -> int:
        return int(25 * math.sqrt(self.lam)) + 2 * _TAIL_BITS + 24


# --- certified CDF ---------------------------------------------------------------------------


class CdfWalk:
    """Pass 1 of a certification at ``bits`` fractional bits: the range [a, b] and mass totals.

    Integer intervals (fixed point): ``down_lo/hi`` is the mass of [a, mode-1], ``up_lo/hi`` that
    of [mode+1, b] (the mode weighs exactly 1), ``left_hi``/``right_hi`` bound the mass below a
    and above b.
    """

    def __init__(self, family: Family, bits: int, need_lo: int | None = None, need_hi: int | None = None) -> None:
        self.family, self.bits = family, bits
        one = 1 << bits
        limit = MAX_TABLE_ENTRIES
        # Upward.
        wl = wh = one
        sum_lo = one
        up_lo = up_hi = 0
        k = family.mode
        right_hi = None
        for rl, rh in family.up_ratios(bits):
            if rh < one:
                bound = _ceil_div(wh * rh, one - rh)  # sum_{j>k} w(j) <= w(k) r / (1 - r)
                if (need_hi is None or k >= need_hi) and bound <= (sum_lo >> _TAIL_BITS):
                    right_hi = bound
                    break
            wl, wh = (wl * rl) >> bits, _ceil_div(wh * rh, one)
            k += 1
            up_lo += wl
            up_hi += wh
            sum_lo += wl
            if k - family.mode > limit:
                raise InvalidPrivacyParameterError(
                    f"the {family.name} needs more than {limit:,} table entries; lower the noise scale "
                    "(a smaller scale factor / larger rounding-inflation tolerance)"
                )
        self.b = k
        self.right_hi = right_hi
        # Downward.
        wl = wh = one
        down_lo = down_hi = 0
        k = family.mode
        left_hi = 0  # stays 0 when the support ends (Poisson at 0)
        for rl, rh in family.down_ratios(bits):
            if rh < one:
                bound = _ceil_div(wh * rh, one - rh)
                if (need_lo is None or k <= need_lo) and bound <= (sum_lo >> _TAIL_BITS):
                    left_hi = bound
                    break
            wl, wh = (wl * rl) >> bits, _ceil_div(wh * rh, one)
            k -= 1
            down_lo += wl
            down_hi += wh
            sum_lo += wl
            if self.b - k > limit:
                raise InvalidPrivacyParameterError(
                    f"the {family.name} needs more than {limit:,} table entries; lower the noise scale"
                )
        self.a = k
        self.left_hi = left_hi
        self.total_lo = down_lo + one + up_lo  # mass of [a, b], lower end
        self.total_hi = down_hi + one + up_hi
        self.down_lo, self.down_hi = down_lo, down_hi
        self._cache: dict | None = None

    def cdf_bounds(self) -> Iterator[tuple[int, int, int, int, int]]:
        """Pass 2: ``(k, S_lo, S_hi, R_lo, R_hi)`` for every k in [a-1, b], in no particular order.

        ``F(k) = S/(S+R)`` with S the mass of (-inf, k] and R that of (k, inf); the interval
        bounds are exact integers (fixed point), so ``F(k)`` lies in
        ``[S_lo/(S_lo+R_hi), S_hi/(S_hi+R_lo)]``.
        """
        family, bits, one = self.family, self.bits, 1 << self.bits
        total_lo, total_hi = self.total_lo, self.total_hi
        left_hi, right_hi = self.left_hi, self.right_hi

        def bounds(k, s_lo, s_in_hi):  # s_in_*: mass of [a, k]
            return (k, s_lo, s_in_hi + left_hi, total_lo - s_lo, total_hi - s_in_hi + right_hi)

        # k = mode, mode+1, ..., b: S = [a, mode-1] + [mode, k].
        s_lo, s_hi = self.down_lo + one, self.down_hi + one
        yield bounds(family.mode, s_lo, s_hi)
        wl = wh = one
        k = family.mode
        for rl, rh in family.up_ratios(bits):
            if k >= self.b:
                break
            wl, wh = (wl * rl) >> bits, _ceil_div(wh * rh, one)
            k += 1
            s_lo += wl
            s_hi += wh
            yield bounds(k, s_lo, s_hi)
        # k = mode-1, ..., a-1: S = [a, k] = [a, mode-1] minus [k+1, mode-1].
        s_lo, s_hi = self.down_lo, self.down_hi
        wl = wh = one
        k = family.mode
        yield bounds(k - 1, s_lo, s_hi)
        for rl, rh in family.down_ratios(bits):
            if k <= self.a:
                break
            wl, wh = (wl * rl) >> bits, _ceil_div(wh * rh, one)
            k -= 1
            s_lo -= wl
            s_hi -= wh
            yield bounds(k - 1, s_lo, s_hi)

    def cdf_at(self, k: int) -> tuple[int, int, int, int]:
        """``(S_lo, S_hi, R_lo, R_hi)`` at one k in [a-1, b] (slow path only).

        Small ranges are tabulated once; large ones are walked from the mode on each call (the slow
        path runs with probability about 2^-64 per draw there, so memory beats speed).
        """
        if not self.a - 1 <= k <= self.b:
            raise AssertionError(f"k = {k} outside the certified range [{self.a - 1}, {self.b}]")
        if self.b - self.a < 4096:
            if self._cache is None:
                self._cache = {kk: rest for kk, *rest in self.cdf_bounds()}
            return tuple(self._cache[k])
        for kk, s_lo, s_hi, r_lo, r_hi in self.cdf_bounds():
            if kk == k:
                return s_lo, s_hi, r_lo, r_hi
        raise AssertionError("unreachable")


def certified_floor(s_lo: int, s_hi: int, r_lo: int, r_hi: int) -> int | None:
    """``floor(F 2^64)`` for ``F`` in ``[s_lo/(s_lo+r_hi), s_hi/(s_hi+r_lo)]``, or None if not unique."""
    t = min((s_lo << 64) // (s_lo + r_hi), _MASK64)
    # F < 1 always (every tail has positive mass), so floor(F 2^64) <= 2^64 - 1.
    if t == _MASK64 or (s_hi << 64) < (t + 1) * (s_hi + r_lo):
        return t
    return None


# --- the sampler ----------------------------------------------------------------------------


class InversionSampler:
    """Exact sampler of one distribution by inversion (see the module docstring).

    ``window=(lo, hi)`` restricts the fast-path table to [lo, hi] (everything else goes through
    the exact slow path); it exists to test the slow path and changes nothing in the law.
    The families, :class:`CdfWalk`, :func:`certified_floor` and :meth:`slow_path` are public so
    that the exactness of each step can be tested directly (a tie on the slow path happens with
    probability 2^-64 per draw: no test reaches it through :meth:`sample`).
    """

    def __init__(self, family: Family, *, window: tuple[int, int] | None = None) -> None:
        if family.extent_estimate() > MAX_TABLE_ENTRIES:
            raise InvalidPrivacyParameterError(
                f"the {family.name} would need about {family.extent_estimate():,} table entries "
                f"(limit {MAX_TABLE_ENTRIES:,}); lower the noise scale in ring units"
            )
        self.family = family
        bits = _BASE_BITS
        while True:
            walk = CdfWalk(family, bits)
            lo, hi = walk.a, walk.b
            if window is not None:
                lo, hi = max(lo, int(window[0])), min(hi, int(window[1]))
                if lo > hi:
                    raise InvalidPrivacyParameterError(f"window {window} misses the support [{walk.a}, {walk.b}]")
            table = np.empty(hi - lo + 2, dtype=np.uint64)  # k = lo-1, ..., hi
            ok = True
            for k, s_lo, s_hi, r_lo, r_hi in walk.cdf_bounds():
                if lo - 1 <= k <= hi:
                    t = certified_floor(s_lo, s_hi, r_lo, r_hi)
                    if t is None:
                        ok = False
                        break
                    table[k - lo + 1] = t
            if ok:
                break
            bits += 64  # an interval straddled a multiple of 2^-64: sharpen and rebuild
        self._bits = bits
        self._walks: dict[int, CdfWalk] = {bits: walk}
        self.offset = lo - 1  # table index i <-> value offset + i
        self.table = table
        n = table.shape[0]
        # Sentinels past the end let two unconditional advance steps index safely.
        self._padded = np.concatenate([table, np.full(3, _MASK64, dtype=np.uint64)])
        self._guide_bits = int(min(24, max(8, math.ceil(math.log2(n)) + 1)))
        starts = np.arange(1 << self._guide_bits, dtype=np.uint64) << np.uint64(64 - self._guide_bits)
        # guide[h]: first index whose threshold exceeds the smallest W with top bits h.
        self._guide = np.searchsorted(table, starts, side="right").astype(np.int64)

    @property
    def support_window(self) -> tuple[int, int]:
        """The values the fast path can return (all others come from the slow path)."""
        return self.offset + 1, self.offset + self.table.shape[0] - 1

    def sample(self, size, rng: RandomWords | None = None) -> np.ndarray:
        """``size`` independent draws (int64), exactly from the distribution."""
        rng = rng if rng is not None else RandomWords()
        shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
        count = int(np.prod(shape, dtype=np.int64))
        words = rng.words(count)
        table, padded = self.table, self._padded
        n = table.shape[0]
        idx = self._guide[words >> np.uint64(64 - self._guide_bits)]
        for _ in range(2):  # guide buckets hold ~0.5 thresholds each in the bulk
            idx += padded[idx] <= words
        late = np.flatnonzero(padded[idx] <= words)  # crowded buckets (far tails): binary search
        if late.size:
            idx[late] = np.searchsorted(table, words[late], side="right")
        np.minimum(idx, n, out=idx)
        # Decided iff the previous threshold is strictly below W (and i is inside the table).
        decided = (table[np.maximum(idx - 1, 0)] < words) & (idx > 0) & (idx < n)
        out = idx + self.offset
        for j in np.flatnonzero(~decided):
            out[j] = self.slow_path(int(words[j]), int(out[j]), rng)
        return out.reshape(shape)

    # -- slow path -----------------------------------------------------------------------

    def _walk_covering(self, bits: int, k_lo: int, k_hi: int) -> CdfWalk:
        """A certification at ``bits`` whose range [a-1, b] contains [k_lo, k_hi] (built on demand)."""
        walk = self._walks.get(bits)
        if walk is None or k_lo < walk.a - 1 or k_hi > walk.b:
            base = walk or self._walks[self._bits]
            need_lo = min(base.a, k_lo - 8)
            need_hi = max(base.b, k_hi + 8)
            walk = CdfWalk(self.family, bits, need_lo=need_lo, need_hi=need_hi)
            self._walks[bits] = walk
        return walk

    def slow_path(self, prefix: int, guess: int, rng: RandomWords) -> int:
        """Exact ``F^{-1}(U)`` for ``U`` in ``[prefix 2^-64, (prefix+1) 2^-64)``, revealing more bits as needed.

        Invariant: U's revealed bits are uniform and independent of every decision taken so far
        (the fast path looked only at the same prefix), so the returned k satisfies
        F(k-1) <= U < F(k) for a uniform U.
        """
        a_num, nbits = prefix, 64  # U in [a_num / 2^nbits, (a_num + 1) / 2^nbits)
        bits = self._bits
        k = guess
        for _ in range(_MAX_REFINEMENTS):
            walk = self._walk_covering(bits, k - 1, k)
            rel, width = self._compare(walk, k, a_num, nbits)
            if rel > 0:  # U >= F(k)
                k += 1
                continue
            if rel < 0:  # U < F(k): is U >= F(k-1)?
                rel, width = self._compare(walk, k - 1, a_num, nbits)
                if rel > 0:
                    return k
                if rel < 0:
                    k -= 1
                    continue
            # Undecided: sharpen F if its interval is not much narrower than U's, else reveal 64 more bits.
            if width * (1 << (nbits + 2)) > 1:
                bits += 64
            else:
                a_num = (a_num << 64) | rng.word()
                nbits += 64
        raise RuntimeError(f"exact inversion of the {self.family.name} did not terminate; this is a bug")

    @staticmethod
    def _compare(walk: CdfWalk, k: int, a_num: int, nbits: int) -> tuple[int, Fraction]:
        """+1 if surely U >= F(k), -1 if surely U < F(k), 0 if undecided; and F(k)'s interval width."""
        s_lo, s_hi, r_lo, r_hi = walk.cdf_at(k)
        # U < F(k) surely when (a+1)/2^n <= s_lo/(s_lo+r_hi); U >= F(k) surely when a/2^n >= s_hi/(s_hi+r_lo).
        if (a_num + 1) * (s_lo + r_hi) <= (s_lo << nbits):
            rel = -1
        elif a_num * (s_hi + r_lo) >= (s_hi << nbits):
            rel = 1
        else:
            rel = 0
        width = Fraction(s_hi, s_hi + r_lo) - Fraction(s_lo, s_lo + r_hi)
        return rel, width


# --- public entry points ------------------------------------------------------------------


@lru_cache(maxsize=8)
def _gaussian(sigma_squared: Fraction) -> InversionSampler:
    return InversionSampler(DiscreteGaussianFamily(sigma_squared))


@lru_cache(maxsize=8)
def _poisson(lam: Fraction) -> InversionSampler:
    return InversionSampler(PoissonFamily(lam))


def discrete_gaussian_sampler(sigma_squared) -> InversionSampler:
    """The (cached) exact sampler of ``N_Z(0, sigma_squared)``."""
    return _gaussian(exact_rational(sigma_squared, "sigma_squared"))


def poisson_sampler(lam) -> InversionSampler:
    """The (cached) exact sampler of ``Poisson(lam)``."""
    return _poisson(exact_rational(lam, "lam"))


def sample_discrete_gaussian(sigma_squared, size, *, key: bytes | None = None) -> np.ndarray:
    """``size`` draws of the discrete Gaussian ``N_Z(0, sigma_squared)`` (int64), exact."""
    return discrete_gaussian_sampler(sigma_squared).sample(size, RandomWords(key))


def sample_poisson(lam, size, *, key: bytes | None = None) -> np.ndarray:
    """``size`` draws of ``Poisson(lam)`` (int64), exact."""
    return poisson_sampler(lam).sample(size, RandomWords(key))


def sample_skellam(mu, size, *, key: bytes | None = None) -> np.ndarray:
    """``size`` draws of ``Sk(mu, mu) = Poisson(mu) - Poisson(mu)`` (int64), exact; variance 2 mu."""
    sampler = poisson_sampler(mu)
    rng = RandomWords(key)
    first = sampler.sample(size, rng)
    first -= sampler.sample(size, rng)
    return first


def discrete_gaussian_variance(sigma_squared) -> float:
    """``E[X^2]`` of ``N_Z(0, sigma^2)`` in float64 (for reports and error estimates, not privacy).

    Below sigma^2 (CKS20). By Poisson summation the relative gap is of order
    ``sigma^2 exp(-2 pi^2 sigma^2)``: sizeable below sigma = 1/2, under 10^-130 from sigma^2 = 16,
    where sigma^2 itself is returned; below that the pmf is summed.
    """
    s2 = float(exact_rational(sigma_squared, "sigma_squared"))
    if s2 >= 16.0:
        return s2
    half = int(40 * math.sqrt(s2)) + 40
    k = np.arange(-half, half + 1, dtype=np.float64)
    w = np.exp(-k * k / (2 * s2))
    return float(np.dot(k * k, w) / w.sum())
