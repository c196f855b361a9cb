"""Exact discrete samplers: vectorised (dp.discrete) against pure-Python exact peers (issue 7).

Targets: >= 5 million draws per second on one core for the noise the distributed pipeline adds
(sigma = 1000 ring units per site, a typical calibrated scale), i.e. ~1000x a pure-Python exact
sampler (~5 thousand per second).

Peers, written here for comparison only:
* discrete Gaussian - Canonne, Kamath, Steinke (NeurIPS 2020), Algorithms 1-3, in pure Python
  with exact rationals (``fractions.Fraction``) and ``secrets.randbelow`` (the OS CSPRNG): the
  textbook exact sampler;
* Skellam - the same exact inversion as dp.discrete (same certified table) but one draw at a time
  in Python (``secrets.randbits`` + ``bisect``), so the ratio isolates what vectorisation buys.

The one-time table build (pure Python, cached per parameter) is measured separately.
"""

from __future__ import annotations

import bisect
import secrets
from fractions import Fraction

import pytest

from dp import discrete
from dp.discrete import RandomWords, discrete_gaussian_sampler, poisson_sampler

from .conftest import RATIOS, record

COUNT = 1_000_000
PEER_COUNT = 2_000
SIGMA_SQUARED = 1_000_000  # sigma = 1000 ring units
MU = 500_000  # Sk(mu, mu): standard deviation 1000 ring units

_OURS = [
    ("pure-Python CKS discrete Gaussian / dp.discrete, per draw", "ddg_python_cks_2k",
     ("ddg_numpy_1m", PEER_COUNT / COUNT), "target >= 1000x"),
    ("pure-Python Skellam (same table) / dp.discrete, per draw", "skellam_python_2k",
     ("skellam_numpy_1m", PEER_COUNT / COUNT), "vectorisation alone"),
    ("dp.discrete discrete Gaussian, 1e6 draws / 0.2 s", "ddg_numpy_1m", 0.2, "<= 1 means >= 5M draws/s"),
    ("dp.discrete Skellam, 1e6 draws / 0.2 s", "skellam_numpy_1m", 0.2, "<= 1 means >= 5M draws/s"),
]
RATIOS.extend(entry for entry in _OURS if entry not in RATIOS)


# --- pure-Python exact peer (CKS20) --------------------------------------------------------


def _bernoulli(p: Fraction) -> bool:
    """Bernoulli(p) for rational p in [0, 1], exactly."""
    return secrets.randbelow(p.denominator) < p.numerator


def _bernoulli_exp(gamma: Fraction) -> bool:
    """Bernoulli(exp(-gamma)) for rational gamma >= 0 (CKS20, Algorithm 1)."""
    while gamma > 1:  # exp(-gamma) = exp(-1)^floor(gamma) * exp(-frac(gamma))
        if not _bernoulli_exp(Fraction(1)):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k):
        k += 1
    return k % 2 == 1


def _discrete_laplace(t: int) -> int:
    """P[Y = y] proportional to exp(-|y|/t), integer t >= 1 (CKS20, Algorithm 2 with s = 1)."""
    while True:
        u = secrets.randbelow(t)
        if not _bernoulli_exp(Fraction(u, t)):
            continue
        v = 0
        while _bernoulli_exp(Fraction(1)):
            v += 1
        y = u + t * v
        negative = secrets.randbits(1) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def cks_discrete_gaussian(sigma_squared: Fraction) -> int:
    """One exact draw of N_Z(0, sigma^2) (CKS20, Algorithm 3)."""
    t = int(sigma_squared**0.5) + 1  # any t >= 1 is exact; floor(sigma) + 1 is efficient
    while True:
        y = _discrete_laplace(t)
        if _bernoulli_exp((abs(y) - sigma_squared / t) ** 2 / (2 * sigma_squared)):
            return y


def python_skellam(count: int) -> list[int]:
    """Sk(mu, mu) one draw at a time: two exact inversions of Poisson(mu) on the certified table."""
    sampler = poisson_sampler(MU)
    table, offset = sampler.table.tolist(), sampler.offset
    rng = RandomWords()

    def poisson() -> int:
        w = secrets.randbits(64)
        i = bisect.bisect_right(table, w)
        if 0 < i < len(table) and table[i - 1] < w:
            return offset + i
        return sampler.slow_path(w, offset + i, rng)

    return [poisson() - poisson() for _ in range(count)]


# --- benchmarks -------------------------------------------------------------------------------


def test_ddg_numpy(benchmark):
    sampler = discrete_gaussian_sampler(SIGMA_SQUARED)
    draws = benchmark.pedantic(sampler.sample, args=(COUNT,), rounds=7, warmup_rounds=1)
    assert draws.shape == (COUNT,)
    record(benchmark, "ddg_numpy_1m")


def test_skellam_numpy(benchmark):
    draws = benchmark.pedantic(discrete.sample_skellam, args=(MU, COUNT), rounds=7, warmup_rounds=1)
    assert draws.shape == (COUNT,)
    record(benchmark, "skellam_numpy_1m")


def test_ddg_pure_python_cks(benchmark):
    sigma_squared = Fraction(SIGMA_SQUARED)
    draws = benchmark.pedantic(lambda: [cks_discrete_gaussian(sigma_squared) for _ in range(PEER_COUNT)],
                               rounds=3, warmup_rounds=0)
    assert len(draws) == PEER_COUNT
    record(benchmark, "ddg_python_cks_2k")


def test_skellam_pure_python(benchmark):
    poisson_sampler(MU)  # the table is shared with the vectorised sampler: build it outside the timing
    draws = benchmark.pedantic(python_skellam, args=(PEER_COUNT,), rounds=3, warmup_rounds=0)
    assert len(draws) == PEER_COUNT
    record(benchmark, "skellam_python_2k")


@pytest.mark.parametrize("family", ["ddg", "poisson"])
def test_table_build(benchmark, family):
    """One-time cost per parameter (cached afterwards): certified pure-Python fixed point."""
    if family == "ddg":
        build = lambda: discrete.InversionSampler(discrete.DiscreteGaussianFamily(Fraction(SIGMA_SQUARED)))  # noqa: E731
    else:
        build = lambda: discrete.InversionSampler(discrete.PoissonFamily(Fraction(MU)))  # noqa: E731
    sampler = benchmark.pedantic(build, rounds=3, warmup_rounds=0)
    assert sampler.table.size > 1000
    record(benchmark, f"table_build_{family}")
