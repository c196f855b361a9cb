"""Anomaly scores from reconstructions, and the healthy-data threshold.

For a volume ``x`` (stack of slices, brain mask ``B``) and its reconstruction
``x_hat``:

1. **positive residual** ``r = max(x - x_hat, 0) * B``. Only the positive part:
   the lesions of interest (MS plaques, oedema, enhancing tumour) are
   *hyperintense* in FLAIR, so a voxel darker than the model expects is not
   evidence of them (it would add the reconstruction's blur at dark CSF edges
   to the false positives). A dark necrotic core is missed by design.
2. **median filter** over the slice stack (``scipy.ndimage.median_filter``,
   ``size`` voxels per axis, or one size per axis ``(slices, rows, columns)``;
   5 by default as in FedDis), then masked again: isolated noisy voxels
   vanish, compact lesions survive - *if they are larger than the window*.
   A median keeps a voxel only when most of its window is lesion, so a 3-D
   window erases lesions narrower than about half of it. Measured on the tiny
   cohort (v2, 64 x 64, ~3.4 mm voxels, 4 sites, seed 0): a 3 x 3 x 3 median
   keeps 8 % of MS mask voxels and 18 % of vascular-WMH voxels (an in-plane
   1 x 3 x 3 one 31 % and 36 %; tumours 89-95 %), and the intensity baseline's
   MS AUPRC is 0.002 with it, 0.051 without. :func:`median_size_for` gives the
   window that does not erase plaques at a working resolution: none at 64 x 64,
   in-plane 3 x 3 at finer sizes (a 3-pixel window at 128 is ~5 mm, the size of
   small plaques).
3. **threshold** fixed on *healthy validation* volumes only: the ``(1 - fpr)``
   quantile of the filtered scores of all their brain voxels
   (:func:`models.metrics.threshold_at_fpr`; default ``fpr = 1 %``), so about
   1 % of healthy brain voxels are flagged. No lesion label is ever used to
   choose it. A voxel is flagged when its score is strictly greater.

The plain **intensity baseline** scores a voxel by its normalised intensity
itself (``x * B``), with the same filter and the same healthy-data threshold:
for hyperintense lesions it is a strong reference that every model result is
reported beside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .errors import ScoringError
from .metrics import threshold_at_fpr
from .preprocess import SliceVolume

__all__ = [
    "ReconstructFn",
    "as_reconstruct_fn",
    "reconstruct_volume",
    "positive_residual",
    "median_filter_scores",
    "median_size_for",
    "VolumeScores",
    "score_volume",
    "intensity_scores",
    "Threshold",
    "calibrate_threshold",
]

#: Maps a float32 batch ``(N, 1, H, W)`` to its reconstruction, same shape.
ReconstructFn = Callable[[np.ndarray], np.ndarray]


def as_reconstruct_fn(model_or_fn, *, batch_size: int = 64, device: str | None = None) -> ReconstructFn:
    """Wrap a ``torch.nn.Module`` (evaluated in ``eval()`` mode, no gradients, in
    batches of ``batch_size``) as a :data:`ReconstructFn`; a callable passes through."""
    try:
        import torch
    except ImportError:  # numpy-only callers can still pass a function
        torch = None  # type: ignore[assignment]
    if torch is None or not isinstance(model_or_fn, torch.nn.Module):
        if not callable(model_or_fn):
            raise ScoringError(f"expected a torch module or a callable; got {type(model_or_fn).__name__}")
        return model_or_fn
    model = model_or_fn
    if batch_size < 1:
        raise ScoringError(f"batch_size must be positive; got {batch_size}")
    if device is None:
        parameter = next(model.parameters(), None)
        device = str(parameter.device) if parameter is not None else "cpu"

    def reconstruct(batch: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        try:
            outputs = []
            with torch.no_grad():
                for start in range(0, len(batch), batch_size):
                    # A writable copy: inputs may be read-only views of a SliceVolume.
                    chunk = torch.from_numpy(np.array(batch[start : start + batch_size], dtype=np.float32))
                    chunk = chunk.to(device)
                    outputs.append(model(chunk).float().cpu().numpy())
            return np.concatenate(outputs, axis=0) if outputs else np.zeros_like(batch)
        finally:
            model.train(was_training)

    return reconstruct


def reconstruct_volume(reconstruct: ReconstructFn, volume: SliceVolume) -> np.ndarray:
    """The reconstruction ``(S, H, W)`` float32 of every slice of ``volume``."""
    batch = np.ascontiguousarray(volume.image[:, None, :, :], dtype=np.float32)
    out = np.asarray(reconstruct(batch))
    if out.shape != batch.shape:
        raise ScoringError(
            f"reconstruction of {volume.name} has shape {out.shape}; expected {batch.shape}"
        )
    out = out[:, 0].astype(np.float32, copy=False)
    if not np.all(np.isfinite(out)):
        raise ScoringError(f"reconstruction of {volume.name} contains NaN or infinite values")
    return out


def positive_residual(image: np.ndarray, reconstruction: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``max(image - reconstruction, 0)`` inside ``brain``, 0 outside (float32)."""
    image = np.asarray(image, dtype=np.float32)
    reconstruction = np.asarray(reconstruction, dtype=np.float32)
    if image.shape != reconstruction.shape or image.shape != np.shape(brain):
        raise ScoringError(
            f"image {image.shape}, reconstruction {reconstruction.shape} and brain {np.shape(brain)} must match"
        )
    return np.where(brain, np.maximum(image - reconstruction, 0.0), 0.0).astype(np.float32)


def median_filter_scores(scores: np.ndarray, brain: np.ndarray, size: int | tuple[int, int, int] = 5) -> np.ndarray:
    """3-D median filter over the slice stack, then re-masked to the brain (size 1: no filter)."""
    from scipy import ndimage

    sizes = (size,) * 3 if isinstance(size, (int, np.integer)) else tuple(size)
    if len(sizes) != 3 or any(int(s) < 1 for s in sizes):
        raise ScoringError(f"median filter size must be a positive int or three of them; got {size!r}")
    scores = np.asarray(scores, dtype=np.float32)
    if all(int(s) == 1 for s in sizes):
        filtered = scores
    else:
        filtered = ndimage.median_filter(scores, size=tuple(int(s) for s in sizes), mode="constant", cval=0.0)
    return np.where(brain, filtered, 0.0).astype(np.float32)


def median_size_for(image_size: int) -> int | tuple[int, int, int]:
    """The median window (see the module docstring) that keeps small lesions at ``image_size``.

    ``1`` (no filter) up to 64 x 64, where one pixel is ~3.4 mm and a 3-pixel
    window (~10 mm) is larger than most MS plaques; ``(1, 3, 3)`` (in-plane only:
    the slice axis is the coarsest) above.
    """
    if int(image_size) < 1:
        raise ScoringError(f"image_size must be positive; got {image_size!r}")
    return 1 if int(image_size) <= 64 else (1, 3, 3)


@dataclass(frozen=True)
class VolumeScores:
    """Everything about one scored volume, all ``(S, H, W)``.

    ``residual`` is the raw positive residual, ``score`` the median-filtered
    one that is thresholded; ``lesion`` is ``None`` for healthy volumes.
    """

    name: str
    lesion_type: str | None
    image: np.ndarray
    reconstruction: np.ndarray
    residual: np.ndarray
    score: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray | None


def score_volume(
    volume: SliceVolume, reconstruct: ReconstructFn, *, median_size: int | tuple[int, int, int] = 5
) -> VolumeScores:
    """Reconstruct ``volume``, take the positive residual in the brain and median-filter it."""
    reconstruction = reconstruct_volume(reconstruct, volume)
    residual = positive_residual(volume.image, reconstruction, volume.brain)
    return VolumeScores(
        name=volume.name,
        lesion_type=volume.lesion_type,
        image=volume.image,
        reconstruction=reconstruction,
        residual=residual,
        score=median_filter_scores(residual, volume.brain, median_size),
        brain=volume.brain,
        lesion=volume.lesion,
    )


def intensity_scores(volume: SliceVolume, *, median_size: int | tuple[int, int, int] = 5) -> np.ndarray:
    """The intensity baseline's score map: the normalised image, median-filtered, in the brain."""
    return median_filter_scores(np.where(volume.brain, volume.image, 0.0), volume.brain, median_size)


@dataclass(frozen=True)
class Threshold:
    """A detection threshold fixed on healthy data.

    ``value``: flag voxels with score > value. ``target_fpr``: the requested
    false-positive rate; ``achieved_fpr``: the fraction of the calibration
    voxels above ``value`` (at most the target); ``n_voxels``: how many healthy
    brain voxels it was fixed on.
    """

    value: float
    target_fpr: float
    achieved_fpr: float
    n_voxels: int


def calibrate_threshold(healthy: Iterable[tuple[np.ndarray, np.ndarray]], fpr: float = 0.01) -> Threshold:
    """Fix the threshold at the ``(1 - fpr)`` quantile of healthy brain-voxel scores.

    ``healthy`` yields ``(score_map, brain_mask)`` pairs of healthy validation
    volumes; only voxels inside the brain count.
    """
    values = [np.asarray(score, dtype=np.float32)[np.asarray(brain, dtype=bool)] for score, brain in healthy]
    if not values or sum(v.size for v in values) == 0:
        raise ScoringError("no healthy brain voxels to calibrate the threshold on")
    pooled = np.concatenate(values)
    value = threshold_at_fpr(pooled, fpr)
    return Threshold(
        value=value,
        target_fpr=float(fpr),
        achieved_fpr=float(np.count_nonzero(pooled > value) / pooled.size),
        n_voxels=int(pooled.size),
    )
