"""PNG figures: example slices per site and lesion type; detection panels.

Rendered with matplotlib's Agg canvas through the object-oriented API
(``matplotlib.figure.Figure``), so no global backend is switched and nothing
needs a display. matplotlib is imported lazily (``pip install secagg[mri]``).

Display conventions (those of :mod:`models.preprocess`): anterior at the top,
the patient's left on the left (neurological); grey levels span normalised
intensities 0-2.2 (brain median = 1) identically in every panel, so contrast
differences between sites stay visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ._deps import require
from .dataset import SiteData
from .errors import ConfigError
from .metrics import dice
from .preprocess import SliceVolume
from .scoring import Threshold, VolumeScores

__all__ = ["plot_site_examples", "plot_detection", "plot_detection_examples"]

_VMAX = 2.2
_LESION = "#ff3b30"
_TP, _FP, _FN = "#34c759", "#ff3b30", "#0a84ff"


def _figure(width: float, height: float):
    require("matplotlib", purpose="figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor=fig.get_facecolor())
    return path


def _best_slice(volume: SliceVolume | VolumeScores) -> int:
    """The slice with the largest lesion area, else the one with the most brain."""
    if volume.lesion is not None and volume.lesion.any():
        return int(np.argmax(volume.lesion.sum(axis=(1, 2))))
    return int(np.argmax(volume.brain.sum(axis=(1, 2))))


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _overlay(ax, mask: np.ndarray, color: str, alpha: float = 0.55) -> None:
    """Fill ``mask`` with a translucent colour (nearest-neighbour, pixel-exact)."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros(mask.shape + (4,), dtype=np.float32)
    rgba[mask] = to_rgba(color, alpha)
    ax.imshow(rgba, interpolation="nearest")


def _outline(ax, mask: np.ndarray, color: str) -> None:
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=0.9)


def plot_site_examples(
    sites: Mapping[str, SiteData] | Sequence[SiteData],
    path: str | Path,
    *,
    histogram: bool = True,
) -> Path:
    """A grid of example slices: one row per site; columns healthy, then each lesion type.

    Lesion cells show the volume of that type with the largest lesion at its
    slice of largest lesion area, ground truth outlined in red. With
    ``histogram``, a last column overlays the normalised brain-intensity
    histogram of the site's healthy volumes on all sites' (grey), showing how
    contrast differs between sites after normalisation. Returns ``path``.
    """
    site_list = list(sites.values()) if isinstance(sites, Mapping) else list(sites)
    if not site_list:
        raise ConfigError("no sites to plot")
    types = sorted({v.lesion_type or "unknown" for s in site_list for v in s.pathology})
    columns = ["healthy"] + types
    n_cols = len(columns) + (1 if histogram else 0)
    height = 2.05 * len(site_list) + 0.9
    fig = _figure(2.0 * n_cols + 1.1, height)
    grid = fig.add_gridspec(
        len(site_list), n_cols, left=1.0 / (2.0 * n_cols + 1.1), right=0.99, top=1.0 - 0.75 / height,
        bottom=0.35 / height, wspace=0.08, hspace=0.22,
    )
    histograms = {}
    if histogram:
        bins = np.linspace(0.0, _VMAX, 56)
        for site in site_list:
            values = np.concatenate([v.image[v.brain] for v in site.healthy]) if site.healthy else np.zeros(0)
            histograms[site.name] = np.histogram(values, bins=bins, density=True)[0] if values.size else None
    for row, site in enumerate(site_list):
        for col, column in enumerate(columns):
            ax = fig.add_subplot(grid[row, col])
            _blank(ax)
            if column == "healthy":
                candidates = list(site.healthy)
            else:
                candidates = [v for v in site.pathology if (v.lesion_type or "unknown") == column]
            if not candidates:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="0.5", transform=ax.transAxes)
                ax.set_facecolor("0.95")
            else:
                volume = max(candidates, key=lambda v: v.lesion_voxels) if column != "healthy" else candidates[0]
                k = _best_slice(volume) if column != "healthy" else int(np.argmin(np.abs(volume.slice_fraction - 0.6)))
                ax.imshow(volume.image[k], cmap="gray", vmin=0.0, vmax=_VMAX, interpolation="nearest")
                if volume.lesion is not None:
                    _outline(ax, volume.lesion[k], _LESION)
                ax.set_title(f"{volume.name} z{k}", fontsize=6.5, color="0.25", pad=2)
            if row == 0:
                ax.annotate(column, (0.5, 1.16), xycoords="axes fraction", ha="center", fontsize=10, weight="bold")
            if col == 0:
                label = f"{site.name}\n{len(site.healthy)} healthy\n{len(site.pathology)} pathol."
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
        if histogram:
            ax = fig.add_subplot(grid[row, len(columns)])
            centres = 0.5 * (bins[1:] + bins[:-1])
            for other, h in histograms.items():
                if h is not None and other != site.name:
                    ax.plot(centres, h, color="0.8", linewidth=0.8)
            if histograms.get(site.name) is not None:
                ax.fill_between(centres, histograms[site.name], color="#0a84ff", alpha=0.35, linewidth=0)
                ax.plot(centres, histograms[site.name], color="#0a84ff", linewidth=1.2)
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            ax.set_xlim(0, _VMAX)
            if row == 0:
                ax.annotate("brain intensities", (0.5, 1.16), xycoords="axes fraction", ha="center",
                            fontsize=10, weight="bold")
            if row == len(site_list) - 1:
                ax.set_xlabel("normalised intensity (brain median = 1)", fontsize=6.5)
    fig.suptitle("Example axial slices per site and lesion type (ground truth outlined in red)", fontsize=11,
                 y=1.0 - 0.12 / height)
    return _save(fig, path)


def plot_detection(
    examples: Sequence[VolumeScores],
    threshold: Threshold | float,
    path: str | Path,
    *,
    baseline_scores: Sequence[np.ndarray] | None = None,
    baseline_threshold: Threshold | float | None = None,
    title: str | None = None,
) -> Path:
    """Columns of examples; rows input, reconstruction, residual score, detection.

    Detection colours: green = true positive, red = false positive, blue =
    missed lesion, at the healthy-data threshold (``score > threshold``). With
    ``baseline_scores`` (one intensity-baseline score map per example, from
    :func:`models.scoring.intensity_scores`) and ``baseline_threshold``, a last
    row shows the baseline's detection at its own threshold. The residual row shows the median-filtered score with a
    common scale (0 to twice the largest of threshold and score 99.5th percentile).
    """
    if not examples:
        raise ConfigError("no examples to plot")
    t = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    tb = None
    if (baseline_scores is None) != (baseline_threshold is None):
        raise ConfigError("give both baseline_scores and baseline_threshold, or neither")
    if baseline_threshold is not None:
        tb = baseline_threshold.value if isinstance(baseline_threshold, Threshold) else float(baseline_threshold)
        if len(baseline_scores) != len(examples):  # type: ignore[arg-type]
            raise ConfigError("need one baseline score map per example")
    rows = ["input", "reconstruction", "residual score", "detection"]
    if tb is not None:
        rows.append("intensity baseline")
    n = len(examples)
    fig = _figure(1.85 * n + 1.2, 1.95 * len(rows) + 0.6)
    grid = fig.add_gridspec(len(rows), n + 1, width_ratios=[1.0] * n + [0.06], left=0.09, right=0.95,
                            top=0.90, bottom=0.03, wspace=0.06, hspace=0.1)
    score_top = max(float(np.percentile(e.score[e.brain], 99.5)) if e.brain.any() else 0.0 for e in examples)
    vmax = max(2.0 * t, score_top, 1e-3)
    heat = None
    for col, example in enumerate(examples):
        k = _best_slice(example)
        lesion = example.lesion[k] if example.lesion is not None else np.zeros_like(example.brain[k])
        detected = example.score[k] > t
        for row, kind in enumerate(rows):
            ax = fig.add_subplot(grid[row, col])
            _blank(ax)
            if kind == "input":
                ax.imshow(example.image[k], cmap="gray", vmin=0, vmax=_VMAX, interpolation="nearest")
                _outline(ax, lesion, _LESION)
                volume_dice = dice(example.score > t, example.lesion) if example.lesion is not None else float("nan")
                ax.set_title(f"{example.name}\n{example.lesion_type or 'healthy'} z{k}  Dice {volume_dice:.2f}",
                             fontsize=6.5, pad=2)
            elif kind == "reconstruction":
                ax.imshow(np.where(example.brain[k], example.reconstruction[k], 0.0), cmap="gray", vmin=0,
                          vmax=_VMAX, interpolation="nearest")
            elif kind == "residual score":
                heat = ax.imshow(example.score[k], cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
            else:
                flagged = detected if kind == "detection" else (baseline_scores[col][k] > tb)  # type: ignore[index]
                ax.imshow(example.image[k], cmap="gray", vmin=0, vmax=_VMAX, interpolation="nearest")
                _overlay(ax, flagged & lesion, _TP)
                _overlay(ax, flagged & ~lesion, _FP)
                _overlay(ax, ~flagged & lesion, _FN)
            if col == 0:
                ax.set_ylabel(kind, fontsize=9)
    if heat is not None:
        cax = fig.add_subplot(grid[2, n])
        bar = fig.colorbar(heat, cax=cax)
        bar.ax.tick_params(labelsize=6)
        bar.ax.axhline(t, color="white", linewidth=1.2)
    legend = fig.add_subplot(grid[3, n])
    _blank(legend)
    for y, (label, color) in zip((0.8, 0.5, 0.2), (("TP", _TP), ("FP", _FP), ("FN", _FN))):
        legend.text(0.5, y, label, color=color, fontsize=7, ha="center", weight="bold", transform=legend.transAxes)
    if title is None:
        title = f"Anomaly detection: flag score > {t:.3f}"
        if isinstance(threshold, Threshold):
            title += f", the threshold giving {threshold.target_fpr:.1%} false positives on healthy validation brains"
        title += "  (line on the colour bar)"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_detection_examples(
    model_or_reconstruct_fn,
    volumes: Sequence[SliceVolume],
    threshold: Threshold | float,
    path: str | Path,
    *,
    per_type: int = 2,
    median_size: int | tuple[int, int, int] = 5,
    baseline_threshold: Threshold | float | None = None,
    title: str | None = None,
) -> Path:
    """Score the ``per_type`` volumes with the largest lesions of each lesion type and plot them."""
    from .evaluation import score_examples
    from .scoring import intensity_scores

    by_type: dict[str, list[SliceVolume]] = {}
    for v in volumes:
        by_type.setdefault(v.lesion_type or "unknown", []).append(v)
    chosen = []
    for lesion_type in sorted(by_type):
        chosen += sorted(by_type[lesion_type], key=lambda v: -v.lesion_voxels)[:per_type]
    examples = score_examples(model_or_reconstruct_fn, chosen, median_size=median_size)
    baseline = None
    if baseline_threshold is not None:
        baseline = [intensity_scores(volume, median_size=median_size) for volume in chosen]
    return plot_detection(
        examples, threshold, path, baseline_scores=baseline, baseline_threshold=baseline_threshold, title=title
    )
