"""Exact discrete samplers: distributions against the exact pmf, moments, the certified table,
the slow path (tails and ties), reproducibility and refusals.

Draws use fixed keys (HKDF subkeys of a test label), so every statistical test is reproducible;
the p-value thresholds (1e-3) are for a fixed seed, not a false-alarm rate.
"""

import hashlib
import math
from decimal import Decimal, getcontext
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from dp import discrete
from dp.discrete import (
    InversionSampler,
    RandomWords,
    discrete_gaussian_sampler,
    discrete_gaussian_variance,
    poisson_sampler,
    sample_discrete_gaussian,
    sample_poisson,
    sample_skellam,
)
from dp.errors import InvalidPrivacyParameterError

N = 200_000


def key(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def dg_pmf(sigma_squared: float, ks: np.ndarray) -> np.ndarray:
    half = int(40 * math.sqrt(sigma_squared)) + 40
    grid = np.arange(-half, half + 1, dtype=np.float64)
    z = np.exp(-grid * grid / (2 * sigma_squared)).sum()
    ks = np.asarray(ks, dtype=np.float64)
    return np.exp(-ks * ks / (2 * sigma_squared)) / z


def chi_square_pvalue(samples: np.ndarray, pmf) -> float:
    """Pearson chi-square over every value with expected count >= 10, the rest pooled in one bin."""
    values, counts = np.unique(samples, return_counts=True)
    ks = np.arange(values.min() - 5, values.max() + 6)
    expected = pmf(ks) * samples.size
    observed = np.zeros(ks.size)
    observed[values - ks[0]] = counts
    bulk = expected >= 10
    obs = np.append(observed[bulk], observed[~bulk].sum())
    exp = np.append(expected[bulk], samples.size - expected[bulk].sum())
    assert bulk.sum() >= 3
    return float(stats.chisquare(obs, exp).pvalue)


# --- distributions ------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_squared", [0.25, 1.0, 2.5, 100.0, 12345.5])
def test_discrete_gaussian_matches_exact_pmf(sigma_squared):
    x = sample_discrete_gaussian(sigma_squared, N, key=key(f"dg{sigma_squared}"))
    assert x.dtype == np.int64 and x.shape == (N,)
    assert chi_square_pvalue(x, lambda k: dg_pmf(sigma_squared, k)) > 1e-3


@pytest.mark.parametrize("sigma_squared", [0.3, 4.0, 900.0])
def test_discrete_gaussian_moments(sigma_squared):
    """Mean 0; variance the exact E[X^2] (below sigma^2 for small sigma), within 5 standard errors."""
    x = sample_discrete_gaussian(sigma_squared, N, key=key(f"dgm{sigma_squared}")).astype(np.float64)
    half = int(40 * math.sqrt(sigma_squared)) + 40
    grid = np.arange(-half, half + 1, dtype=np.float64)
    p = dg_pmf(sigma_squared, grid)
    var = float(np.dot(grid**2, p))
    fourth = float(np.dot(grid**4, p))
    assert var <= sigma_squared  # strictly below, but within float precision once sigma >= 1
    assert discrete_gaussian_variance(sigma_squared) == pytest.approx(var, rel=1e-12)
    assert abs(x.mean()) < 5 * math.sqrt(var / N)
    assert abs(np.mean(x**2) - var) < 5 * math.sqrt((fourth - var**2) / N)


def test_discrete_gaussian_variance_gap_is_visible_below_one():
    """sigma = 0.5: the variance is ~14% below sigma^2 (the parameter is not the variance)."""
    assert discrete_gaussian_variance(0.25) == pytest.approx(0.2150, abs=5e-4)
    assert discrete_gaussian_variance(4.0) == pytest.approx(4.0, rel=1e-12)


@pytest.mark.parametrize("lam", [0.3, 7.5, 10_000.0])
def test_poisson_matches_exact_pmf(lam):
    x = sample_poisson(lam, N, key=key(f"p{lam}"))
    assert chi_square_pvalue(x, lambda k: stats.poisson.pmf(k, lam)) > 1e-3
    assert x.min() >= 0


@pytest.mark.parametrize("mu", [0.7, 50.0, 50_000.0])
def test_skellam_matches_exact_pmf_and_moments(mu):
    x = sample_skellam(mu, N, key=key(f"sk{mu}"))
    assert chi_square_pvalue(x, lambda k: stats.skellam.pmf(k, mu, mu)) > 1e-3
    xf = x.astype(np.float64)
    var = 2 * mu  # exactly
    fourth = 2 * mu + 12 * mu**2  # kappa_4 + 3 kappa_2^2 with kappa_2 = kappa_4 = 2 mu
    assert abs(xf.mean()) < 5 * math.sqrt(var / N)
    assert abs(np.mean(xf**2) - var) < 5 * math.sqrt((fourth - var**2) / N)


def test_large_parameters_keep_the_right_scale():
    """The scales the pipeline uses (sigma ~ 10^3-10^4 ring units)."""
    x = sample_discrete_gaussian(4.0e6, N, key=key("big-dg")).astype(np.float64)
    assert np.std(x) == pytest.approx(2000.0, rel=0.01)
    y = sample_skellam(2.0e7, N, key=key("big-sk")).astype(np.float64)
    assert np.var(y) == pytest.approx(4.0e7, rel=0.02)


# --- the certified table -------------------------------------------------------------------


def exact_dg_cdf_floor(sigma_squared: Fraction, k: int) -> int:
    """floor(F(k) 2^64) from an independent 60-digit Decimal computation (no interval arithmetic)."""
    getcontext().prec = 60
    s2 = Decimal(sigma_squared.numerator) / Decimal(sigma_squared.denominator)
    half = int(60 * math.sqrt(float(sigma_squared))) + 60
    weights = {j: (Decimal(-j * j) / (2 * s2)).exp() for j in range(-half, half + 1)}
    total = sum(weights.values())
    below = sum(w for j, w in weights.items() if j <= k)
    return int(below / total * Decimal(2) ** 64)


@pytest.mark.parametrize("sigma_squared", [Fraction(1, 4), Fraction(2), Fraction(37, 3)])
def test_table_thresholds_equal_an_independent_high_precision_computation(sigma_squared):
    sampler = InversionSampler(discrete.DiscreteGaussianFamily(sigma_squared))
    table = sampler.table
    assert np.all(np.diff(table.astype(object)) >= 0)  # a CDF
    for i in range(table.size):
        assert int(table[i]) == exact_dg_cdf_floor(sigma_squared, sampler.offset + i)


def test_poisson_table_matches_exact_rational_cdf():
    lam = Fraction(5, 2)
    sampler = InversionSampler(discrete.PoissonFamily(lam))
    getcontext().prec = 60
    lam_d = Decimal(5) / Decimal(2)
    cdf = Decimal(0)
    term = (-lam_d).exp()
    for i in range(1, sampler.table.size):
        k = sampler.offset + i
        cdf += term
        term = term * lam_d / (k + 1)
        assert int(sampler.table[i]) == int(cdf * Decimal(2) ** 64)
    assert int(sampler.table[0]) == 0  # F(-1) = 0


def test_certified_floor_refuses_straddling_intervals():
    one = 1 << 64
    # F in [1/2 - 2^-70, 1/2 + 2^-70]: floor(F 2^64) is 2^63 - 1 or 2^63.
    s_lo, r_hi = (one << 6) - 1, (one << 6) + 1
    s_hi, r_lo = (one << 6) + 1, (one << 6) - 1
    assert discrete.certified_floor(s_lo, s_hi, r_lo, r_hi) is None
    assert discrete.certified_floor(1, 1, 3, 3) == 1 << 62  # exactly 1/4


# --- the slow path ---------------------------------------------------------------------------


def test_slow_path_tails_are_exact():
    """A fast table restricted to [-1, 1] sends ~60% of the draws through the exact slow path."""
    sampler = InversionSampler(discrete.DiscreteGaussianFamily(Fraction(4)), window=(-1, 1))
    assert sampler.support_window == (-1, 1)
    x = sampler.sample(6000, RandomWords(key("slow-dg")))
    assert np.abs(x).max() > 4
    assert chi_square_pvalue(x, lambda k: dg_pmf(4.0, k)) > 1e-3
    sampler = InversionSampler(discrete.PoissonFamily(Fraction(3)), window=(3, 4))
    y = sampler.sample(6000, RandomWords(key("slow-p")))
    assert chi_square_pvalue(y, lambda k: stats.poisson.pmf(k, 3)) > 1e-3


def test_slow_path_resolves_ties_with_the_exact_conditional_law():
    """W equal to a threshold T_i = floor(F(k) 2^64): the answer is k with probability
    frac(F(k) 2^64) and k+1 otherwise (U's next bits decide)."""
    sampler = discrete_gaussian_sampler(9)
    i = int(np.argmin(np.abs(sampler.table.astype(np.float64) - 2.0**63)))  # a bulk threshold
    k = sampler.offset + i
    w = int(sampler.table[i])
    walk = discrete.CdfWalk(sampler.family, 320)
    s_lo, s_hi, r_lo, r_hi = walk.cdf_at(k)
    frac = float(Fraction(s_lo, s_lo + r_hi) * 2**64 - w)
    assert 0 < frac < 1
    rng = RandomWords(key("ties"))
    draws = [sampler.slow_path(w, k, rng) for _ in range(600)]
    assert set(draws) <= {k, k + 1}
    hits = draws.count(k)
    assert stats.binomtest(hits, 600, frac).pvalue > 1e-3


# --- randomness and refusals ----------------------------------------------------------------


def test_keys_make_draws_reproducible_and_default_draws_fresh():
    a = sample_skellam(10.0, 1000, key=key("r"))
    assert np.array_equal(a, sample_skellam(10.0, 1000, key=key("r")))
    assert not np.array_equal(a, sample_skellam(10.0, 1000, key=key("s")))
    assert not np.array_equal(sample_discrete_gaussian(100.0, 1000), sample_discrete_gaussian(100.0, 1000))


def test_samplers_are_cached_per_exact_parameter():
    assert discrete_gaussian_sampler(2.5) is discrete_gaussian_sampler(Fraction(5, 2))
    assert poisson_sampler(3) is poisson_sampler(3.0)


def test_shapes():
    assert sample_discrete_gaussian(2.0, (3, 4), key=key("shape")).shape == (3, 4)
    assert sample_poisson(2.0, 0).shape == (0,)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2", None])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(InvalidPrivacyParameterError):
        discrete_gaussian_sampler(bad)
    with pytest.raises(InvalidPrivacyParameterError):
        poisson_sampler(bad)


def test_tables_beyond_the_size_limit_are_refused_before_building():
    with pytest.raises(InvalidPrivacyParameterError, match="table entries"):
        discrete_gaussian_sampler(1e13)
    with pytest.raises(InvalidPrivacyParameterError, match="table entries"):
        poisson_sampler(1e13)


def test_noise_key_must_be_32_bytes():
    with pytest.raises(InvalidPrivacyParameterError):
        sample_skellam(1.0, 10, key=b"short")
