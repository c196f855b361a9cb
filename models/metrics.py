"""Voxel-wise detection metrics in plain numpy: AUROC, AUPRC, Dice, best Dice.

All ranking metrics come from one :class:`RankingCurve`: for every distinct
score ``t`` (descending), ``tp(t)`` and ``fp(t)`` count positive and negative
voxels with score ``>= t``. Then

* **AUROC** = trapezoidal area under ``(fp/N, tp/P)`` from (0, 0), which
  equals the Mann-Whitney probability ``P(s+ > s-) + 0.5 P(s+ = s-)`` exactly,
  ties included;
* **AUPRC** = average precision ``sum_k (R_k - R_{k-1}) P_k`` with recall
  ``R = tp/P`` and precision ``P = tp/(tp + fp)`` - the step-wise area that
  does not interpolate between operating points (the definition scikit-learn's
  ``average_precision_score`` uses);
* **best Dice** = ``max_t 2 tp / (tp + fp + P)``, the Dice of the best global
  threshold. It *peeks at the labels* and is an upper bound, never an
  operating point.

Exact curves sort the scores (``O(n log n)``; fine for tens of millions of
voxels). :meth:`RankingCurve.from_histograms` builds the same curve from
per-class histograms over fixed bins, which streams over volumes in ``O(n)``
memory ``O(bins)``; its result is exact for the binned scores, i.e. scores in the
same bin count as tied (error bounded by the pairs falling into one bin).

Thresholding convention everywhere in :mod:`models`: a voxel is flagged when
its score is *strictly greater* than the threshold, so a threshold at a
healthy quantile that falls on a mass of zero residuals flags none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ScoringError

__all__ = [
    "RankingCurve",
    "ranking_curve",
    "auroc",
    "auprc",
    "dice",
    "best_dice",
    "threshold_at_fpr",
]


def _as_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ScoringError(f"scores and labels differ in size: {s.size} vs {y.size}")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ScoringError("labels must be boolean or 0/1")
        y = y.astype(bool)
    if not np.all(np.isfinite(s)):
        raise ScoringError("scores contain NaN or infinite values")
    return s, y


@dataclass(frozen=True)
class RankingCurve:
    """Cumulative counts at decreasing thresholds (see the module docstring).

    ``thresholds[k]`` descending; ``tp[k]``/``fp[k]`` count positives/negatives
    with score ``>= thresholds[k]``; ``n_pos``/``n_neg`` the class totals;
    ``exact`` False when built from histograms (thresholds are bin lower edges).
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_pos: int
    n_neg: int
    exact: bool = True

    def _require(self, positives: bool = True, negatives: bool = True) -> None:
        if positives and self.n_pos == 0:
            raise ScoringError("no positive (lesion) voxels: the metric is undefined")
        if negatives and self.n_neg == 0:
            raise ScoringError("no negative (normal) voxels: the metric is undefined")

    def auroc(self) -> float:
        """Area under the ROC curve (trapezoidal; ties count one half)."""
        self._require()
        tpr = np.concatenate([[0.0], self.tp / self.n_pos])
        fpr = np.concatenate([[0.0], self.fp / self.n_neg])
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))

    def auprc(self) -> float:
        """Average precision: sum over thresholds of recall increment times precision."""
        self._require(negatives=False)
        recall = self.tp / self.n_pos
        flagged = self.tp + self.fp
        precision = np.divide(self.tp, flagged, out=np.ones_like(recall, dtype=np.float64), where=flagged > 0)
        return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))

    def best_dice(self) -> tuple[float, float]:
        """``(dice, threshold)`` maximising ``2 tp / (tp + fp + P)`` over thresholds.

        The threshold follows the package's strict convention (flag ``score >
        threshold``): it is the next lower curve point's score (or
        ``-inf`` when flagging every voxel is best). Upper bound: peeks at labels.
        """
        self._require(negatives=False)
        dice_values = 2.0 * self.tp / (self.tp + self.fp + self.n_pos)
        k = int(np.argmax(dice_values))
        threshold = float(self.thresholds[k + 1]) if k + 1 < len(self.thresholds) else float("-inf")
        return float(dice_values[k]), threshold

    @classmethod
    def from_histograms(
        cls, edges: np.ndarray, positive_counts: np.ndarray, negative_counts: np.ndarray
    ) -> "RankingCurve":
        """A curve from per-class histograms over ``edges`` (scores binned to their bin's lower edge)."""
        edges = np.asarray(edges, dtype=np.float64)
        pos = np.asarray(positive_counts, dtype=np.int64)
        neg = np.asarray(negative_counts, dtype=np.int64)
        if pos.shape != neg.shape or edges.shape != (pos.size + 1,):
            raise ScoringError("histograms need len(edges) == len(counts) + 1 for both classes")
        occupied = (pos + neg) > 0
        tp = np.cumsum(pos[::-1])[::-1][occupied][::-1]
        fp = np.cumsum(neg[::-1])[::-1][occupied][::-1]
        thresholds = edges[:-1][occupied][::-1]
        return cls(thresholds=thresholds, tp=tp, fp=fp, n_pos=int(pos.sum()), n_neg=int(neg.sum()), exact=False)


def ranking_curve(scores, labels) -> RankingCurve:
    """The exact :class:`RankingCurve` of ``scores`` against boolean ``labels`` (sorting)."""
    s, y = _as_scores_labels(scores, labels)
    if s.size == 0:
        raise ScoringError("no scores")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Last index of each run of equal scores: the cumulative counts at that threshold.
    ends = np.concatenate([np.flatnonzero(np.diff(s_sorted) != 0), [s.size - 1]])
    tp = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fp = (ends + 1) - tp
    return RankingCurve(
        thresholds=s_sorted[ends], tp=tp, fp=fp, n_pos=int(y.sum()), n_neg=int(s.size - y.sum())
    )


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (exact, ties = 1/2)."""
    return ranking_curve(scores, labels).auroc()


def auprc(scores, labels) -> float:
    """Average precision (area under the precision-recall steps) of ``scores``."""
    return ranking_curve(scores, labels).auprc()


def best_dice(scores, labels) -> tuple[float, float]:
    """``(dice, threshold)`` of the best global threshold - an upper bound that peeks at labels."""
    return ranking_curve(scores, labels).best_dice()


def dice(prediction, truth) -> float:
    """Dice overlap ``2 |A & B| / (|A| + |B|)`` of two boolean arrays; 1.0 when both are empty."""
    a = np.asarray(prediction, dtype=bool)
    b = np.asarray(truth, dtype=bool)
    if a.shape != b.shape:
        raise ScoringError(f"prediction and truth differ in shape: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def threshold_at_fpr(negative_scores, fpr: float) -> float:
    """The smallest observed score ``t`` with ``mean(negatives > t) <= fpr``.

    With ``n`` sorted negatives ``v_(1) <= ... <= v_(n)`` and ``a = floor(fpr n)``
    allowed false positives, this is the order statistic ``v_(n - a)``: at most
    ``a`` values exceed it, and every smaller observed value is exceeded by at
    least ``a + 1``. Selection, not a full sort (``numpy.partition``, linear time).
    """
    v = np.asarray(negative_scores, dtype=np.float64).ravel()
    if v.size == 0:
        raise ScoringError("no healthy scores to calibrate the threshold on")
    if not 0.0 < fpr < 1.0:
        raise ScoringError(f"fpr must lie strictly between 0 and 1; got {fpr!r}")
    if not np.all(np.isfinite(v)):
        raise ScoringError("healthy scores contain NaN or infinite values")
    allowed = int(np.floor(fpr * v.size + 1e-9))  # the epsilon absorbs 0.01 * 1000 = 9.999...
    k = min(max(v.size - 1 - allowed, 0), v.size - 1)
    return float(np.partition(v, k)[k])
