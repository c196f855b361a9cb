"""End-to-end detection evaluation of a model against the intensity baseline.

:func:`evaluate` scores the healthy validation volumes, fixes each method's
threshold on them (:mod:`models.scoring`), scores the pathological test
volumes, and reports for the model *and* for the intensity baseline:

* ``dice_mean`` / ``dice_std`` / ``dice_per_volume`` - Dice of each
  pathological volume at the healthy-data threshold (the honest operating point);
* ``dice_pooled`` - Dice over all brain voxels of the set at that threshold
  (large lesions weigh more; false positives of every volume count);
* ``auroc`` / ``auprc`` - pooled over all brain voxels of all pathological
  volumes (exact by sorting up to ``max_exact_voxels``, else from 2^16-bin
  histograms, see :mod:`models.metrics`);
* ``best_dice`` - pooled Dice at the best threshold: an **upper bound that
  peeks at the labels** (it bounds ``dice_pooled``, not the per-volume mean),
  reported to show headroom, never as a result.

Everything is given overall and per lesion type (where types are known), and,
when the caller passes ``groups`` (one label per pathological volume, e.g. the
site it came from), per group (:attr:`MethodReport.by_group`).
Volumes whose lesion lies entirely outside the kept slices have no ground
truth to detect; they are left out of the Dice average and listed in
``DetectionReport.excluded`` (their voxels still count as negatives in the
pooled curves).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .errors import ScoringError
from .metrics import RankingCurve, dice, ranking_curve
from .preprocess import SliceVolume
from .scoring import (
    Threshold,
    VolumeScores,
    as_reconstruct_fn,
    calibrate_threshold,
    intensity_scores,
    score_volume,
)

__all__ = ["DetectionMetrics", "MethodReport", "DetectionReport", "evaluate", "score_examples"]

_HISTOGRAM_BINS = 1 << 16


@dataclass(frozen=True)
class DetectionMetrics:
    """Metrics of one method on one set of pathological volumes (see the module docstring)."""

    n_volumes: int
    n_brain_voxels: int
    n_lesion_voxels: int
    dice_mean: float
    dice_std: float
    dice_per_volume: tuple[float, ...]
    dice_pooled: float
    auroc: float
    auprc: float
    best_dice: float  # upper bound: threshold chosen with the labels
    best_dice_threshold: float
    exact: bool  # False when the pooled curve came from histograms


@dataclass(frozen=True)
class MethodReport:
    """One method (the model or the intensity baseline): its threshold and metrics."""

    method: str
    threshold: Threshold
    overall: DetectionMetrics
    by_lesion_type: Mapping[str, DetectionMetrics]
    by_group: Mapping[str, DetectionMetrics] = field(default_factory=dict)  # only when groups were given


@dataclass(frozen=True)
class DetectionReport:
    """Model and intensity-baseline results side by side."""

    fpr: float
    median_size: int | tuple[int, int, int]
    n_healthy_volumes: int
    volumes: tuple[str, ...]
    excluded: tuple[str, ...]
    model: MethodReport
    baseline: MethodReport

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary (infinite thresholds become strings)."""

        def clean(value):
            if isinstance(value, float) and not np.isfinite(value):
                return str(value)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            return value

        return clean(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def summary(self) -> str:
        """A fixed-width table: one row per method and lesion type."""
        lines = [
            f"threshold fixed on {self.n_healthy_volumes} healthy volumes at FPR {self.fpr:.2%}; "
            f"{len(self.volumes)} pathological volumes"
            + (f" ({len(self.excluded)} without lesion in the kept slices)" if self.excluded else ""),
            f"{'method':<20} {'lesions':<8} {'n':>3} {'Dice/volume':>13} {'pooled':>7} {'AUROC':>7} "
            f"{'AUPRC':>7} {'best*':>7}",
        ]
        for report in (self.model, self.baseline):
            rows = [("all", report.overall)] + sorted(report.by_lesion_type.items())
            for lesion, m in rows:
                lines.append(
                    f"{report.method:<20} {lesion:<8} {m.n_volumes:>3} {m.dice_mean:>6.3f}+-{m.dice_std:<5.3f} "
                    f"{m.dice_pooled:>7.3f} {m.auroc:>7.3f} {m.auprc:>7.3f} {m.best_dice:>7.3f}"
                )
        lines.append(
            "Dice at the healthy-data threshold, per volume (mean+-sd) and pooled over voxels; AUROC/AUPRC "
            "pooled over brain voxels\n* best pooled Dice picks its threshold with the labels: an upper "
            "bound on 'pooled', not a result"
        )
        return "\n".join(lines)


def _pooled_curve(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], max_exact: int) -> RankingCurve:
    total = sum(s.size for s in scores)
    if total <= max_exact:
        return ranking_curve(np.concatenate(scores), np.concatenate(labels))
    top = max(float(s.max()) for s in scores if s.size)
    low = min(float(s.min()) for s in scores if s.size)
    edges = np.linspace(low, top if top > low else low + 1.0, _HISTOGRAM_BINS + 1)
    pos = np.zeros(_HISTOGRAM_BINS, dtype=np.int64)
    neg = np.zeros(_HISTOGRAM_BINS, dtype=np.int64)
    for s, y in zip(scores, labels):
        pos += np.histogram(s[y], bins=edges)[0]
        neg += np.histogram(s[~y], bins=edges)[0]
    return RankingCurve.from_histograms(edges, pos, neg)


def _metrics(
    maps: Sequence[np.ndarray], volumes: Sequence[SliceVolume], threshold: float, max_exact: int
) -> DetectionMetrics:
    dices = []
    scores, labels = [], []
    overlap = flagged = 0
    for score, volume in zip(maps, volumes):
        assert volume.lesion is not None
        if volume.lesion.any():
            dices.append(dice(score > threshold, volume.lesion))
        s, y = score[volume.brain], volume.lesion[volume.brain]
        scores.append(s)
        labels.append(y)
        overlap += int(np.count_nonzero((s > threshold) & y))
        flagged += int(np.count_nonzero(s > threshold))
    curve = _pooled_curve(scores, labels, max_exact)
    if curve.n_pos == 0:
        raise ScoringError("the pathological volumes have no lesion voxel inside the kept slices")
    best, best_threshold = curve.best_dice()
    return DetectionMetrics(
        n_volumes=len(dices),
        n_brain_voxels=int(curve.n_pos + curve.n_neg),
        n_lesion_voxels=int(curve.n_pos),
        dice_mean=float(np.mean(dices)) if dices else float("nan"),
        dice_std=float(np.std(dices)) if dices else float("nan"),
        dice_per_volume=tuple(float(d) for d in dices),
        dice_pooled=2.0 * overlap / (flagged + curve.n_pos),
        auroc=curve.auroc(),
        auprc=curve.auprc(),
        best_dice=best,
        best_dice_threshold=best_threshold,
        exact=curve.exact,
    )


def _method(
    method: str,
    healthy_maps: Sequence[np.ndarray],
    healthy: Sequence[SliceVolume],
    test_maps: Sequence[np.ndarray],
    pathology: Sequence[SliceVolume],
    fpr: float,
    max_exact: int,
    groups: Sequence[str] | None = None,
) -> MethodReport:
    threshold = calibrate_threshold(((m, v.brain) for m, v in zip(healthy_maps, healthy)), fpr)
    overall = _metrics(test_maps, pathology, threshold.value, max_exact)
    by_type = {}
    for lesion_type in sorted({v.lesion_type for v in pathology if v.lesion_type is not None}):
        index = [i for i, v in enumerate(pathology) if v.lesion_type == lesion_type]
        subset = [pathology[i] for i in index]
        if not any(v.lesion.any() for v in subset):  # type: ignore[union-attr]
            continue
        by_type[lesion_type] = _metrics([test_maps[i] for i in index], subset, threshold.value, max_exact)
    by_group = {}
    for group in sorted(set(groups or ())):
        index = [i for i, g in enumerate(groups) if g == group]
        subset = [pathology[i] for i in index]
        if not any(v.lesion.any() for v in subset):  # type: ignore[union-attr]
            continue  # no lesion voxel in this group's kept slices: no curve to draw
        by_group[group] = _metrics([test_maps[i] for i in index], subset, threshold.value, max_exact)
    return MethodReport(method=method, threshold=threshold, overall=overall, by_lesion_type=by_type,
                        by_group=by_group)


def evaluate(
    model_or_reconstruct_fn,
    healthy_val: Sequence[SliceVolume],
    pathology: Sequence[SliceVolume],
    *,
    fpr: float = 0.01,
    median_size: int | tuple[int, int, int] = 5,
    batch_size: int = 64,
    max_exact_voxels: int = 30_000_000,
    groups: Sequence[str] | None = None,
) -> DetectionReport:
    """Evaluate anomaly detection of a model beside the intensity baseline.

    ``model_or_reconstruct_fn``: a ``torch.nn.Module`` mapping ``(B, 1, H, W)``
    to its reconstruction, or a function doing that on numpy arrays.
    ``healthy_val``: healthy validation volumes (never seen in training) that
    fix each method's threshold at false-positive rate ``fpr``.
    ``pathology``: volumes with lesion masks. See :mod:`models.scoring` for the
    scores and the module docstring for the metrics. ``groups``: one label per
    pathological volume (e.g. its site); each method's metrics are then also given per
    group, at the same healthy-data threshold.
    """
    healthy_val, pathology = tuple(healthy_val), tuple(pathology)
    if groups is not None:
        groups = tuple(str(g) for g in groups)
        if len(groups) != len(pathology):
            raise ScoringError(f"groups has {len(groups)} labels for {len(pathology)} pathological volumes")
    if not healthy_val:
        raise ScoringError("no healthy validation volumes to fix the threshold on")
    if not pathology:
        raise ScoringError("no pathological volumes to evaluate")
    for volume in pathology:
        if volume.lesion is None:
            raise ScoringError(f"pathological volume {volume.name} has no lesion mask")
    shapes = {v.image.shape[1:] for v in healthy_val + pathology}
    if len(shapes) != 1:
        raise ScoringError(f"volumes have different slice sizes {sorted(shapes)}")
    reconstruct = as_reconstruct_fn(model_or_reconstruct_fn, batch_size=batch_size)

    def model_maps(volumes: Sequence[SliceVolume]) -> list[np.ndarray]:
        return [score_volume(v, reconstruct, median_size=median_size).score for v in volumes]

    def baseline_maps(volumes: Sequence[SliceVolume]) -> list[np.ndarray]:
        return [intensity_scores(v, median_size=median_size) for v in volumes]

    model = _method(
        "model", model_maps(healthy_val), healthy_val, model_maps(pathology), pathology, fpr, max_exact_voxels,
        groups,
    )
    baseline = _method(
        "intensity baseline", baseline_maps(healthy_val), healthy_val, baseline_maps(pathology), pathology,
        fpr, max_exact_voxels, groups,
    )
    return DetectionReport(
        fpr=float(fpr),
        median_size=median_size,
        n_healthy_volumes=len(healthy_val),
        volumes=tuple(v.name for v in pathology),
        excluded=tuple(v.name for v in pathology if not v.lesion.any()),  # type: ignore[union-attr]
        model=model,
        baseline=baseline,
    )


def score_examples(
    model_or_reconstruct_fn, volumes: Sequence[SliceVolume], *, median_size=5, batch_size: int = 64
) -> list[VolumeScores]:
    """Full :class:`VolumeScores` (image, reconstruction, residual, score) for plotting."""
    reconstruct = as_reconstruct_fn(model_or_reconstruct_fn, batch_size=batch_size)
    return [score_volume(v, reconstruct, median_size=median_size) for v in volumes]
