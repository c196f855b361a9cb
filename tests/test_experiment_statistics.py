"""Paired statistics of ``secagg experiment`` on known data: hand-computed values, scipy.stats as the reference."""

import math

import numpy as np
import pytest
from scipy import stats

from simulation.experiment import paired_bootstrap, paired_t


def test_paired_t_matches_a_hand_computed_interval():
    # d = a - b = [0.1, 0.2, 0.3]: mean 0.2, sd 0.1, t_{0.975, 2} = 4.302652729911275
    a, b = [0.6, 0.7, 0.8], [0.5, 0.5, 0.5]
    result = paired_t(a, b)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert result.n == 3
    assert result.mean == pytest.approx(0.2)
    assert result.sd == pytest.approx(0.1)
    assert (result.low, result.high) == pytest.approx((0.2 - half, 0.2 + half))
    assert result.verdict == "inconclusive"  # 0.2 - 0.2484 < 0


def test_paired_t_matches_scipy_ttest_rel():
    rng = np.random.default_rng(7)
    a = rng.normal(0.5, 0.1, 6)
    b = a - rng.normal(0.05, 0.02, 6)
    ours = paired_t(a, b, confidence=0.95)
    ci = stats.ttest_rel(a, b).confidence_interval(confidence_level=0.95)
    assert (ours.low, ours.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert ours.verdict == "higher"
    ours90 = paired_t(a, b, confidence=0.9)
    ci90 = stats.ttest_rel(a, b).confidence_interval(confidence_level=0.9)
    assert (ours90.low, ours90.high) == pytest.approx((ci90.low, ci90.high), rel=1e-12)


def test_paired_t_is_paired_not_two_sample():
    # Large between-seed spread, constant pairwise gap: the paired interval is tight and excludes 0.
    a = [0.2, 0.5, 0.8, 0.3, 0.6]
    b = [x - 0.01 for x in a[:-1]] + [a[-1] - 0.012]
    assert paired_t(a, b).verdict == "higher"
    assert stats.ttest_ind(a, b).pvalue > 0.5  # an unpaired test would see nothing


def test_lower_verdict_and_single_seed():
    assert paired_t([0.1, 0.2, 0.15], [0.3, 0.41, 0.35]).verdict == "lower"
    single = paired_t([0.4], [0.3])
    assert single.mean == pytest.approx(0.1) and math.isnan(single.low) and single.verdict == "inconclusive"


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        paired_t([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        paired_t([1, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="confidence"):
        paired_t([1, 2], [1, 2], confidence=1.5)


def test_bootstrap_of_constant_differences_is_the_point():
    result = paired_bootstrap([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert (result.low, result.high) == pytest.approx((0.1, 0.1))
    assert result.verdict == "higher"


def test_bootstrap_agrees_with_scipy_percentile_bootstrap_and_repeats():
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 0.05, 8)
    ours = paired_bootstrap(d, np.zeros(8), resamples=20_000, seed=1)
    ref = stats.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=20_000, method="percentile",
                          random_state=np.random.default_rng(2)).confidence_interval
    # Two Monte-Carlo estimates of the same percentiles: equal up to resampling noise.
    assert ours.low == pytest.approx(ref.low, abs=0.006) and ours.high == pytest.approx(ref.high, abs=0.006)
    assert ours.mean == pytest.approx(d.mean())
    assert paired_bootstrap(d, np.zeros(8), resamples=20_000, seed=1) == ours  # fixed seed: reproducible


def test_rank_correlation_matches_hand_ranks_and_refuses_what_it_cannot_rank():
    from simulation.experiment.statistics import rank_correlation

    # ranks of a: 1 2 3 4 5; ranks of b: 2 1 4 3 5 -> d^2 = 1+1+1+1+0 = 4; rho = 1 - 6*4/(5*24) = 0.8
    c = rank_correlation([1.0, 2.0, 3.0, 4.0, 5.0], [20.0, 10.0, 40.0, 30.0, 50.0])
    assert c["rho"] == pytest.approx(0.8) and c["n"] == 5
    # two-sided p of t = rho sqrt((n-2)/(1-rho^2)) on n-2 df
    from scipy.stats import t as student

    t = 0.8 * (3 / (1 - 0.64)) ** 0.5
    assert c["p"] == pytest.approx(2 * student.sf(t, 3))
    assert rank_correlation([1.0, 2.0], [2.0, 1.0]) == {"rho": None, "p": None, "n": 2}
    assert rank_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["rho"] is None
    with pytest.raises(ValueError):
        rank_correlation([1.0, 2.0, 3.0], [1.0, 2.0])
