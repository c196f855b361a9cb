"""Applying an exported model (:mod:`models.modelfile`) to new scans: NIfTI maps a viewer overlays.

For one scan, :func:`detect_scan`:

1. **checks** that the scan fits the model's preprocessing
   (:func:`check_scan`): the modality (a BIDS-named file must carry the
   model's suffix, e.g. ``_FLAIR``); the resolution (no voxel edge coarser
   than 1.5 x the model's grid spacing, ``field_of_view_mm / image_size``:
   the model never saw such blur); the orientation (voxel axes within 20
   degrees of the world axes: the training scans were near-axial, registered
   brains); the normalisation (raw, non-negative intensities of a
   skull-stripped brain: at least 20 % of the voxels exactly zero; z-scored
   or skull-on images are refused). A refusal is a one-line :class:`ScanMismatchError`.
2. preprocesses it exactly as in training (:func:`models.preprocess.preprocess_volume`
   with the model's :class:`~models.preprocess.PreprocessConfig`), scores it
   (:func:`models.scoring.score_volume`, the model's median filter) and
   thresholds at the model's threshold (``score > threshold``);
3. **maps back to the scan's own grid**: every voxel ``v`` of the stored
   array is sent to world mm by the scan's affine ``A``, then into the
   model's slice grid ``G`` (``G^-1 A v``), and the score map is read there
   trilinearly (0 outside the scored slab); the segmentation is the
   resampled binary detection at >= 0.5. The NIfTI files are written with the
   input's affine, shape and header (data type float32 / uint8), in the
   input's storage order, so they overlay the scan in ITK-SNAP, FSLeyes or
   3D Slicer;
4. reports ``lesion_volume_ml`` = flagged voxels x ``|det A[:3, :3]|`` / 1000
   on the scan's grid (:func:`lesion_volume_ml`).

Only the axial slab the model was trained on (``PreprocessConfig.slice_range``
of the brain's height) is scored; outside it the maps are 0 and the JSON
gives the slab's extent.

**A raw scan** (``secagg detect --prepare``, :func:`detect_raw_scan`) is first
prepared (:func:`models.prepare.prepare_scan`: RAS, N4, affine registration to
MNI152, skull stripping, normalisation) into ``OUT/prepared/``, and detected
there as above: ``OUT/prepared/STEM_anomaly.nii.gz`` and ``_segmentation.nii.gz``
overlay the prepared scan (kept: they cost nothing more and show what the
model saw, with the montage). Both maps are then taken back to the raw scan's
own stored grid through the inverse of the recorded transform chain
(:func:`models.prepare.to_source_space`: trilinear for the anomaly map, nearest
neighbour for the segmentation) and written into ``OUT/`` with the raw scan's
affine, shape and header, so they overlay the scan the radiologist has. The
JSON's ``space`` says which grid each file is on, and ``lesion_volume_ml`` is
counted on the raw grid with the raw header's voxel volume.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, ModelsError
from .nifti import load_nifti, nifti_stem

__all__ = ["ScanMismatchError", "DetectionResult", "check_scan", "lesion_volume_ml", "detect_scan", "check_scans",
           "check_modality", "prepare_for_detection", "detect_raw_scan", "write_report", "INPUT_SPACE",
           "PREPARED_SPACE"]

MAX_COARSENING = 1.5
MAX_OBLIQUE_DEG = 20.0
MIN_ZERO_FRACTION = 0.2
#: The ``space`` of a file in the JSON record: the grid, affine and header of the scan given to ``detect``.
INPUT_SPACE = "input scan (its own affine, shape and header)"
#: ... or of the prepared scan (``detect --prepare``: MNI152 2009, 2 mm, when registered).
PREPARED_SPACE = "prepared scan (OUT/prepared/, MNI152 2009 2 mm when registered)"
_BIDS_SUFFIX = re.compile(r"^sub-[A-Za-z0-9]+(?:_[a-z]+-[A-Za-z0-9]+)*_([A-Za-z0-9]+)$")


class ScanMismatchError(ModelsError, ValueError):
    """A scan whose modality, resolution, orientation or normalisation does not match the model's."""


@dataclass(frozen=True)
class DetectionResult:
    """What :func:`detect_scan` wrote and measured for one scan."""

    scan: Path
    anomaly_map: Path
    segmentation: Path
    montage: Path
    record: dict


def lesion_volume_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Volume of the true voxels of ``mask`` in millilitres: count x |det affine[:3, :3]| mm^3 / 1000."""
    return float(np.count_nonzero(mask)) * abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def check_modality(path: str | Path, model) -> None:
    """Refuse a BIDS-named scan whose suffix (``sub-01_T1w``) is not the model's modality (``FLAIR``).

    Read from the name alone, so ``detect --prepare`` refuses before spending time on preparation.
    """
    match = _BIDS_SUFFIX.match(nifti_stem(path))
    if match and match.group(1) != model.modality:
        raise ScanMismatchError(f"{path}: a {match.group(1)} scan; this model was trained on {model.modality} "
                                "(wrong modality)")


def check_scan(path: Path, image, model) -> None:
    """Refuse a scan the model's preprocessing does not fit (rules in the module docstring).

    ``image`` is the nibabel image as stored, ``model`` a :class:`~models.modelfile.ModelFile`.
    """
    check_modality(path, model)
    affine = np.asarray(image.affine, dtype=np.float64)
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    grid = max(model.preprocess.pixel_spacing_mm, model.preprocess.plane_spacing_mm)
    if voxel.max() > MAX_COARSENING * grid:
        raise ScanMismatchError(f"{path}: voxels of {voxel.max():.2f} mm are coarser than {MAX_COARSENING} x the "
                                f"model's {grid:.2f} mm grid (resolution mismatch)")
    cosines = np.abs(affine[:3, :3]) / voxel
    angle = math.degrees(math.acos(min(1.0, float(cosines.max(axis=0).min()))))
    if angle > MAX_OBLIQUE_DEG:
        raise ScanMismatchError(f"{path}: voxel axes are {angle:.0f} degrees oblique to the world axes (more than "
                                f"{MAX_OBLIQUE_DEG:.0f}); register it to MNI space first (orientation mismatch)")
    data = np.asarray(image.dataobj, dtype=np.float32)
    if float(data.min()) < 0:
        raise ScanMismatchError(f"{path}: negative intensities (minimum {float(data.min()):.3g}): already "
                                "normalised (e.g. z-scored); the model expects raw intensities (normalisation mismatch)")
    zero = float(np.count_nonzero(data == 0)) / data.size
    if zero < MIN_ZERO_FRACTION:
        raise ScanMismatchError(f"{path}: only {100 * zero:.0f}% of the voxels are zero: not skull-stripped; the "
                                "model expects a skull-stripped brain (normalisation mismatch)")


def check_scans(model, scans, *, names=None) -> None:
    """Open and :func:`check_scan` every scan before any is scored, so a bad one stops the batch early.

    Two scans with the same file stem would write the same outputs: a :class:`DatasetError`. ``names``
    (default ``scans``) are the paths whose stems must differ, checked even when ``scans`` is empty.
    """
    from .nifti import read_nifti_image

    stems: dict[str, Path] = {}
    for scan in scans if names is None else names:
        other = stems.setdefault(nifti_stem(scan), Path(scan))
        if other != Path(scan):
            raise DatasetError(f"{scan} and {other} have the same name: their outputs would overwrite each other")
    for scan in scans:
        check_scan(Path(scan), read_nifti_image(Path(scan)), model)


def _to_scan_grid(grid_map: np.ndarray, grid_affine: np.ndarray, canonical_affine: np.ndarray,
                  canonical_shape) -> np.ndarray:
    """Trilinear resampling of a slice-grid map onto the canonical voxel grid of the scan (0 outside)."""
    from scipy import ndimage

    index_map = np.linalg.inv(grid_affine) @ canonical_affine
    return ndimage.affine_transform(np.asarray(grid_map, dtype=np.float32), index_map[:3, :3],
                                    offset=index_map[:3, 3], output_shape=tuple(canonical_shape), order=1,
                                    mode="constant", cval=0.0, prefilter=False)


def _to_storage_order(array: np.ndarray, image):
    """Undo nibabel's as_closest_canonical: a canonical (RAS) array back into the scan's storage order."""
    import nibabel as nib

    original = nib.orientations.io_orientation(image.affine)
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), original)
    return nib.orientations.apply_orientation(array, transform)


def _save_like(path: Path, array: np.ndarray, image, dtype) -> Path:
    import nibabel as nib

    header = image.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(np.asarray(array, dtype=dtype), image.affine, header=header)
    out.header.set_slope_inter(1.0, 0.0)
    out.set_qform(image.affine, code=int(image.header["qform_code"]) or 1)
    out.set_sform(image.affine, code=int(image.header["sform_code"]) or 1)
    nib.save(out, str(path))
    return path


def _montage(path: Path, volume, score: np.ndarray, detection: np.ndarray, threshold: float, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = volume.n_slices
    picks = np.unique(np.linspace(0, n - 1, min(6, n)).round().astype(int))
    fig, axes = plt.subplots(2, len(picks), figsize=(2.2 * len(picks), 5.0), squeeze=False)
    top = max(threshold * 2.0, float(np.percentile(score, 99.5)) if score.any() else 1.0, 1e-6)
    for j, k in enumerate(picks):
        axes[0, j].imshow(volume.image[k], cmap="gray", vmin=0, vmax=max(float(volume.image.max()), 1e-6), aspect="equal")
        axes[0, j].set_title(f"slice {k}", fontsize=8)
        axes[1, j].imshow(volume.image[k], cmap="gray", vmin=0, vmax=max(float(volume.image.max()), 1e-6), aspect="equal")
        axes[1, j].imshow(np.ma.masked_where(score[k] <= 0, score[k]), cmap="hot", vmin=0, vmax=top, alpha=0.6, aspect="equal")
        if detection[k].any():
            axes[1, j].contour(detection[k], levels=[0.5], colors="cyan", linewidths=0.8)
        for row in range(2):
            axes[row, j].axis("off")
    axes[0, 0].set_ylabel("input")
    fig.suptitle(f"{title}\nanomaly score (hot) and detection > {threshold:.3g} (cyan)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def detect_scan(model, scan: str | Path, out_dir: str | Path, *, reconstruct=None) -> DetectionResult:
    """Detect anomalies in one scan with ``model`` (a :class:`~models.modelfile.ModelFile`); write
    ``STEM_anomaly.nii.gz``, ``STEM_segmentation.nii.gz`` and ``STEM_montage.png`` into ``out_dir``.

    ``reconstruct`` (optional) is the model's :data:`~models.scoring.ReconstructFn`, built once by the
    caller for many scans; by default it is built from ``model``.
    """
    from .nifti import read_nifti_image
    from .preprocess import preprocess_volume
    from .scoring import as_reconstruct_fn, score_volume

    scan = Path(scan)
    image = read_nifti_image(scan)
    check_scan(scan, image, model)
    volume = load_nifti(scan)
    sliced = preprocess_volume(volume, config=model.preprocess)
    if reconstruct is None:
        reconstruct = as_reconstruct_fn(model.build_model())
    scores = score_volume(sliced, reconstruct, median_size=model.median_size)
    threshold = float(model.threshold["value"])
    detection = scores.score > threshold
    score_scan = _to_scan_grid(scores.score, sliced.grid_affine, volume.affine, volume.shape)
    seg_scan = _to_scan_grid(detection.astype(np.float32), sliced.grid_affine, volume.affine, volume.shape) >= 0.5
    score_stored = _to_storage_order(score_scan, image)
    seg_stored = _to_storage_order(seg_scan.astype(np.uint8), image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = nifti_stem(scan)
    anomaly_path = _save_like(out / f"{stem}_anomaly.nii.gz", score_stored, image, np.float32)
    seg_path = _save_like(out / f"{stem}_segmentation.nii.gz", seg_stored, image, np.uint8)
    montage = _montage(out / f"{stem}_montage.png", sliced, scores.score, detection, threshold, stem)
    brain_scores = scores.score[sliced.brain]
    z = sliced.grid_affine[2, 3] + sliced.grid_affine[2, 0] * np.array([0, sliced.n_slices - 1])
    record = {
        "scan": str(scan),
        "anomaly_map": str(anomaly_path),
        "segmentation": str(seg_path),
        "montage": str(montage),
        "shape": list(image.shape[:3]),
        "score": {"max": float(brain_scores.max()) if brain_scores.size else 0.0,
                  "mean": float(brain_scores.mean()) if brain_scores.size else 0.0,
                  "p99": float(np.percentile(brain_scores, 99)) if brain_scores.size else 0.0,
                  "flagged_fraction_of_brain": float(detection.sum() / max(int(sliced.brain.sum()), 1))},
        "lesion_volume_ml": lesion_volume_ml(seg_stored, image.affine),
        "lesion_volume_ml_model_grid": lesion_volume_ml(detection, sliced.grid_affine),
        "scored_slab_z_mm": [float(z[0]), float(z[1])],
        "threshold": {"value": threshold, **{k: v for k, v in model.threshold.items() if k != "value"}},
        "space": {"anomaly_map": INPUT_SPACE, "segmentation": INPUT_SPACE},
    }
    return DetectionResult(scan, anomaly_path, seg_path, montage, record)


def prepare_for_detection(scans, out_dir: str | Path, options=None) -> dict[Path, tuple[Path, dict]]:
    """Run :func:`models.prepare.prepare_scan` on each raw scan (``detect --prepare``); returns raw ->
    (prepared scan, its sidecar).

    The prepared scans go to ``out_dir/prepared/STEM.nii.gz`` with their JSON sidecars (steps, input
    SHA-256, the fitted transform), keeping the stem so the modality check still reads the BIDS suffix.
    """
    from .prepare import PrepareOptions, prepare_scan

    folder = Path(out_dir) / "prepared"
    folder.mkdir(parents=True, exist_ok=True)
    prepared = {}
    for scan in scans:
        dst = folder / f"{nifti_stem(Path(scan))}.nii.gz"
        prepared[Path(scan)] = (dst, prepare_scan(scan, dst, options or PrepareOptions()))
    return prepared


def detect_raw_scan(model, raw_scan: str | Path, prepared_scan: str | Path, sidecar: dict, out_dir: str | Path, *,
                    reconstruct=None) -> DetectionResult:
    """Detect on ``prepared_scan`` (maps into ``out_dir/prepared/``) and write both maps back on the raw
    scan's own grid into ``out_dir`` (module docstring); returns the raw-space result.

    ``sidecar`` is :func:`models.prepare.prepare_scan`'s record for ``raw_scan``; its
    ``transform_template_to_source_ras`` (``None`` without registration) is inverted to map back.
    """
    import nibabel as nib

    from .nifti import read_nifti_image
    from .prepare import to_source_space

    raw_scan, out = Path(raw_scan), Path(out_dir)
    on_grid = detect_scan(model, prepared_scan, out / "prepared", reconstruct=reconstruct)
    raw = read_nifti_image(raw_scan)
    transform = sidecar.get("transform_template_to_source_ras")
    maps = {}
    for name, path, nearest in (("anomaly", on_grid.anomaly_map, False), ("segmentation", on_grid.segmentation, True)):
        grid = nib.load(str(path))
        maps[name] = to_source_space(np.asarray(grid.dataobj, dtype=np.float32), grid.affine, raw.affine,
                                     raw.shape[:3], transform, nearest=nearest)
    seg = maps["segmentation"] > 0.5
    stem = nifti_stem(raw_scan)
    anomaly_path = _save_like(out / f"{stem}_anomaly.nii.gz", maps["anomaly"], raw, np.float32)
    seg_path = _save_like(out / f"{stem}_segmentation.nii.gz", seg.astype(np.uint8), raw, np.uint8)
    record = dict(on_grid.record)
    record.update({
        "prepared_from": str(raw_scan),
        "anomaly_map": str(anomaly_path),
        "segmentation": str(seg_path),
        "shape": list(raw.shape[:3]),
        "lesion_volume_ml": lesion_volume_ml(seg, raw.affine),
        "transform_template_to_source_ras": transform,
        "space": {"anomaly_map": INPUT_SPACE, "segmentation": INPUT_SPACE, "montage": PREPARED_SPACE,
                  "scored_slab_z_mm": PREPARED_SPACE},
        "prepared_grid": {"anomaly_map": str(on_grid.anomaly_map), "segmentation": str(on_grid.segmentation),
                          "space": PREPARED_SPACE, "lesion_volume_ml": on_grid.record["lesion_volume_ml"]},
    })
    return DetectionResult(raw_scan, anomaly_path, seg_path, on_grid.montage, record)


def write_report(path: str | Path, model, results: list[DetectionResult]) -> Path:
    """``detections.json``: the model, its threshold and privacy guarantee, and one record per scan."""
    payload = {"model": {"architecture": model.architecture, "image_size": model.image_size,
                         "modality": model.modality, "file": str(model.path) if model.path else None,
                         "source": model.source, "privacy": model.privacy},
               "threshold": model.threshold,
               "scans": [r.record for r in results]}
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return Path(path)
