"""Metrics against hand-computed cases and brute-force reference computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import ScoringError, auprc, auroc, best_dice, dice, ranking_curve, threshold_at_fpr
from models.metrics import RankingCurve

# ---------------------------------------------------------------- hand-computed cases


def test_auroc_hand_computed():
    # Pairs (pos, neg): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, 0.1) win, (0.8, 0.4) win -> 3/4.
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    # All scores tied: every pair counts one half.
    assert auroc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5
    # One tie among the four pairs: (1 + 1 + 1 + 0.5) / 4.
    assert auroc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)


def test_auprc_hand_computed():
    # Thresholds 0.8 (R .5, P 1), 0.4 (R .5, P .5), 0.35 (R 1, P 2/3), 0.1 (R 1, P .5):
    # AP = 0.5 * 1 + 0 * 0.5 + 0.5 * 2/3 + 0 = 0.8333...
    assert auprc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert auprc([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0
    # Everything tied: one operating point, precision = prevalence.
    assert auprc([1, 1, 1, 1], [1, 0, 0, 0]) == pytest.approx(0.25)


def test_dice_hand_computed():
    assert dice([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert dice([0, 0], [0, 0]) == 1.0
    assert dice([1, 0], [0, 0]) == 0.0
    assert dice(np.ones((2, 3)), np.ones((2, 3))) == 1.0
    with pytest.raises(ScoringError, match="shape"):
        dice(np.ones(3), np.ones(4))


def test_best_dice_hand_computed():
    # Flag >= 0.8 gives Dice 1 and "score > 0.3" is the same rule in the strict convention.
    value, threshold = best_dice([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0])
    assert value == 1.0 and threshold == 0.3
    # Best is to flag everything: 2*3/(4+3) = 6/7, threshold -inf.
    value, threshold = best_dice([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 1])
    assert value == pytest.approx(6 / 7) and threshold == float("-inf")


def test_threshold_at_fpr_hand_computed():
    values = np.arange(1, 101, dtype=float)
    assert threshold_at_fpr(values, 0.05) == 95.0  # 96..100 exceed it: exactly 5 %
    assert threshold_at_fpr(values, 0.01) == 99.0
    assert threshold_at_fpr(np.arange(1000.0), 0.01) == 989.0  # 990..999: 10 of 1000
    # A mass of zeros (positive residuals): the threshold sits on it and flags none of them.
    zeros = np.concatenate([np.zeros(995), np.arange(1.0, 6.0)])
    assert threshold_at_fpr(zeros, 0.01) == 0.0
    assert np.mean(zeros > 0.0) <= 0.01
    with pytest.raises(ScoringError):
        threshold_at_fpr(values, 0.0)
    with pytest.raises(ScoringError):
        threshold_at_fpr([], 0.01)


def test_undefined_and_invalid_inputs():
    with pytest.raises(ScoringError, match="no positive"):
        auroc([0.1, 0.2], [0, 0])
    with pytest.raises(ScoringError, match="no negative"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ScoringError, match="NaN"):
        auroc([0.1, np.nan], [0, 1])
    with pytest.raises(ScoringError, match="0/1"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ScoringError, match="differ in size"):
        auroc([0.1, 0.2, 0.3], [0, 1])


# ---------------------------------------------------------------- brute-force references


def _auroc_pairs(s, y):
    pos, neg = s[y], s[~y]
    diff = pos[:, None] - neg[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _ap_reference(s, y):
    ap, previous_recall = 0.0, 0.0
    for t in np.unique(s)[::-1]:
        flagged = s >= t
        tp = np.sum(flagged & y)
        recall = tp / y.sum()
        ap += (recall - previous_recall) * tp / flagged.sum()
        previous_recall = recall
    return ap


def _best_dice_reference(s, y):
    best = 0.0
    for t in np.concatenate([np.unique(s), [-np.inf]]):
        best = max(best, dice(s > t, y))
    return best


samples = st.lists(st.tuples(st.integers(0, 12), st.booleans()), min_size=2, max_size=60).filter(
    lambda pairs: any(p[1] for p in pairs) and not all(p[1] for p in pairs)
)


@settings(max_examples=150, deadline=None)
@given(samples)
def test_metrics_match_brute_force(pairs):
    s = np.array([p[0] for p in pairs], dtype=float) / 4.0  # many ties
    y = np.array([p[1] for p in pairs])
    assert auroc(s, y) == pytest.approx(_auroc_pairs(s, y), abs=1e-12)
    assert auprc(s, y) == pytest.approx(_ap_reference(s, y), abs=1e-12)
    value, threshold = best_dice(s, y)
    assert value == pytest.approx(_best_dice_reference(s, y), abs=1e-12)
    assert dice(s > threshold, y) == pytest.approx(value, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(samples, st.floats(0.1, 10.0), st.floats(-5.0, 5.0))
def test_ranking_metrics_are_invariant_to_increasing_maps(pairs, scale, shift):
    s = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs])
    mapped = np.exp(scale * s / 12.0) + shift
    assert auroc(mapped, y) == pytest.approx(auroc(s, y))
    assert auprc(mapped, y) == pytest.approx(auprc(s, y))


@settings(max_examples=60, deadline=None)
@given(samples)
def test_histogram_curve_equals_exact_curve_on_the_bin_grid(pairs):
    s = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs])
    edges = np.arange(0.0, 14.0)  # one bin per integer score
    pos = np.histogram(s[y], bins=edges)[0]
    neg = np.histogram(s[~y], bins=edges)[0]
    binned = RankingCurve.from_histograms(edges, pos, neg)
    exact = ranking_curve(s, y)
    assert not binned.exact and exact.exact
    np.testing.assert_array_equal(binned.thresholds, exact.thresholds)
    assert binned.auroc() == pytest.approx(exact.auroc())
    assert binned.auprc() == pytest.approx(exact.auprc())
    assert binned.best_dice()[0] == pytest.approx(exact.best_dice()[0])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=300), st.floats(0.001, 0.5))
def test_threshold_is_the_smallest_meeting_the_fpr(values, fpr):
    v = np.array(values, dtype=float)
    t = threshold_at_fpr(v, fpr)
    assert t in v
    assert np.mean(v > t) <= fpr + 1e-12
    smaller = v[v < t]
    if smaller.size:
        assert np.mean(v > smaller.max()) > fpr


def test_large_pooled_inputs_are_fast_and_exact():
    """Two million voxels: the sorting implementation agrees with a binned Mann-Whitney count."""
    rng = np.random.default_rng(0)
    y = rng.random(2_000_000) < 0.01
    s = np.round(rng.normal(0.0, 1.0, y.size) + 1.5 * y, 2)  # rounded: heavy ties
    value = auroc(s, y)
    # Mann-Whitney through counts per distinct value.
    values, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse, weights=y, minlength=values.size)
    neg = np.bincount(inverse, weights=~y, minlength=values.size)
    below = np.cumsum(neg) - neg
    reference = float(np.sum(pos * (below + 0.5 * neg)) / (pos.sum() * neg.sum()))
    assert value == pytest.approx(reference, abs=1e-12)
    assert 0.8 < value < 0.9
