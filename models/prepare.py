"""``secagg data prepare``: from a scanner's FLAIR to the input the models were trained on.

Steps for one scan (:func:`prepare_scan`), each optional and recorded in a JSON sidecar:

1. **reorient** to canonical RAS+ (``nibabel.as_closest_canonical``);
2. **N4** bias-field correction (SimpleITK ``N4BiasFieldCorrectionImageFilter``), fitted on
   the image shrunk 4x inside an Otsu foreground mask, then divided out at full resolution;
3. **register** affinely to the MNI152 2009 template that nilearn ships (2 mm, no download):
   moments-initialised 12-parameter affine, Mattes mutual information (32 bins, 20 % of
   voxels sampled with a fixed seed), two resolution levels (shrink 4 and 2); the scan is
   resampled trilinearly onto the template grid;
4. **skull-strip** by the template's brain mask (in template space after registration);
5. **normalise**: divide by the median of the brain voxels (as :mod:`models.preprocess`).

The sidecar ``OUT.json`` records the steps, the input's SHA-256, the fitted transform (a
4x4 matrix ``T`` mapping template RAS mm to the input's RAS mm) and the seconds per step.
The image is resampled by the ITK transform rebuilt from that recorded ``T``, so the sidecar's
matrix is exactly what moved the voxels.

**Masks go with their image** (``masks=`` of :func:`prepare_scan`; used for a BIDS dataset's
``derivatives/`` lesion and brain masks, :mod:`models.bids_prepare`): each mask must lie on its
image's grid (as the BIDS reader requires) and is pushed onto the prepared grid through the same
recorded ``T`` by nearest neighbour (:func:`to_prepared_space`), then written as 0/1 ``uint8``; the
mask is not skull-stripped or otherwise altered. Prepared voxel ``p`` (affine ``P``) lies at template
RAS ``P p``, that is at input RAS ``T P p``, and reads input voxel ``A^-1 T P p``.

:func:`prepare_dataset` runs many scans on ``workers`` processes and skips a scan whose
output, masks and sidecar exist for the same input digests and options (resumable). The sidecar
is written last, so a scan interrupted half-way is redone. Given a BIDS dataset (or a folder of
them) it writes a BIDS dataset (:mod:`models.bids_prepare`).

**Back to the input's space** (:func:`to_source_space`, used by ``secagg detect --prepare``): a map
on the prepared grid (affine ``P``) is resampled onto the input scan's own stored grid (affine
``A``; shape and storage order as on disk) by the inverse of the recorded chain. Reorientation
changes only the storage order, never a voxel's world position, so it is undone by building the
output on ``A`` directly. Registration is undone with ``T``: input voxel ``v`` lies at input RAS
``A v``, that is at template RAS ``T^-1 A v``, so it is read at prepared voxel ``P^-1 T^-1 A v``
(SimpleITK ``Resample``: linear for anomaly maps, nearest neighbour for segmentations, 0 outside
the prepared grid). Without registration ``T`` is the identity. N4, skull stripping and
normalisation move no voxel.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, DatasetError
from .nifti import is_nifti_path

__all__ = ["PrepareOptions", "PrepareJob", "prepare_scan", "plan_prepare", "prepare_dataset", "to_source_space",
           "to_prepared_space", "SIDECAR_VERSION"]

SIDECAR_VERSION = 1
_LPS = np.diag([-1.0, -1.0, 1.0])  # ITK's physical space is LPS; nibabel's is RAS


@dataclass(frozen=True)
class PrepareOptions:
    """Which steps run (all by default); ``seed`` fixes the registration's voxel sampling."""

    reorient: bool = True
    n4: bool = True
    register: bool = True
    skull_strip: bool = True
    normalise: bool = True
    seed: int = 1

    def __post_init__(self) -> None:
        if self.skull_strip and not self.register:
            raise ConfigError("skull stripping uses the registered template mask: it needs the registration step")


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError as exc:
        from .errors import MissingDependencyError

        raise MissingDependencyError("secagg data prepare needs SimpleITK: pip install 'secagg[mri]'") from exc
    return sitk


def _to_sitk(data: np.ndarray, affine: np.ndarray):
    """A SimpleITK image of ``data`` (x, y, z) with nibabel affine ``affine`` (RAS mm)."""
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, dtype=np.float32).T))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in _LPS @ affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (_LPS @ affine[:3, :3] / spacing).ravel()))
    return image


def _from_sitk(image) -> np.ndarray:
    return _sitk().GetArrayFromImage(image).T.astype(np.float32)


def _template():
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=2)
    mask = load_mni152_brain_mask(resolution=2)
    return (np.asarray(template.get_fdata(), dtype=np.float32), np.asarray(template.affine, dtype=np.float64),
            np.asarray(mask.get_fdata()) > 0.5)


def _n4(image):
    sitk = _sitk()
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    shrink = 4
    small = sitk.Shrink(image, [shrink] * 3)
    small_mask = sitk.Shrink(mask, [shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([30, 20, 10])
    corrector.Execute(small, small_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    return image / sitk.Exp(log_bias)


def _register(fixed, moving, seed: int):
    """The affine transform mapping fixed (template) LPS points to moving (scan) LPS points."""
    sitk = _sitk()
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=200,
                                                    relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed, moving)
    return transform, float(method.GetMetricValue())


def _transform_matrix(transform) -> np.ndarray:
    """4x4 RAS matrix of an ITK transform given as fixed LPS -> moving LPS."""
    sitk = _sitk()
    affine = sitk.AffineTransform(sitk.CompositeTransform(transform).GetNthTransform(0)) \
        if transform.GetName() == "CompositeTransform" else sitk.AffineTransform(transform)
    a = np.array(affine.GetMatrix()).reshape(3, 3)
    c = np.array(affine.GetCenter())
    t = np.array(affine.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + c - a @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def _itk_affine(ras: np.ndarray):
    """The ITK transform (LPS -> LPS) of a 4x4 RAS -> RAS matrix (inverse of :func:`_transform_matrix`)."""
    sitk = _sitk()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ ras @ flip
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(float(v) for v in lps[:3, :3].ravel()))
    transform.SetTranslation(tuple(float(v) for v in lps[:3, 3]))
    return transform


def to_source_space(data: np.ndarray, grid_affine: np.ndarray, source_affine: np.ndarray, source_shape,
                    transform: np.ndarray | None, *, nearest: bool = False) -> np.ndarray:
    """Resample ``data`` (on the prepared grid, affine ``grid_affine``) onto the input scan's stored grid.

    ``source_affine`` and ``source_shape`` are the input's as stored on disk (not reoriented);
    ``transform`` is the sidecar's ``transform_template_to_source_ras`` (``None``: no registration,
    the identity). Returns a float32 array of ``source_shape`` in the input's storage order: the
    value at input voxel ``v`` is ``data`` read at ``grid_affine^-1 transform^-1 source_affine v``,
    trilinearly, or by nearest neighbour when ``nearest`` (segmentations), 0 outside the grid.
    """
    sitk = _sitk()
    matrix = _checked_matrix(transform)
    shape = tuple(int(n) for n in source_shape[:3])
    reference = _to_sitk(np.zeros(shape, dtype=np.float32), np.asarray(source_affine, dtype=np.float64))
    moving = _to_sitk(data, np.asarray(grid_affine, dtype=np.float64))
    # ITK's Resample reads the moving image at transform(reference point): input RAS -> template RAS = T^-1.
    inverse = _itk_affine(np.linalg.inv(matrix))
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return _from_sitk(sitk.Resample(moving, reference, inverse, interpolator, 0.0, sitk.sitkFloat32))


def to_prepared_space(data: np.ndarray, source_affine: np.ndarray, grid_affine: np.ndarray, grid_shape,
                      transform: np.ndarray | None, *, nearest: bool = True) -> np.ndarray:
    """Resample ``data`` (on an input grid, affine ``source_affine``) onto the prepared grid: the forward
    counterpart of :func:`to_source_space`, by the same recorded ``transform`` (``None``: identity).

    The value at prepared voxel ``p`` is ``data`` read at ``source_affine^-1 transform grid_affine p``, by
    nearest neighbour (masks: labels are kept, never blended) or trilinearly, 0 outside the input grid.
    """
    sitk = _sitk()
    matrix = _checked_matrix(transform)
    shape = tuple(int(n) for n in grid_shape[:3])
    reference = _to_sitk(np.zeros(shape, dtype=np.float32), np.asarray(grid_affine, dtype=np.float64))
    moving = _to_sitk(data, np.asarray(source_affine, dtype=np.float64))
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return _from_sitk(sitk.Resample(moving, reference, _itk_affine(matrix), interpolator, 0.0, sitk.sitkFloat32))


def _checked_matrix(transform) -> np.ndarray:
    matrix = np.eye(4) if transform is None else np.asarray(transform, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-6:
        raise DatasetError("the recorded transform is not a finite, invertible 4x4 matrix")
    return matrix


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_scan(src: str | Path, dst: str | Path, options: PrepareOptions | None = None, *,
                 masks=(), extra: dict | None = None) -> dict:
    """Prepare one scan into ``dst`` (NIfTI) and ``dst``'s JSON sidecar; returns the sidecar.

    ``masks``: ``(source mask, output path)`` pairs, each mask on ``src``'s grid, pushed onto the
    prepared grid by the same recorded transform (nearest neighbour, written 0/1 ``uint8``) and listed in
    the sidecar's ``masks``. ``extra``: keys merged into the sidecar (a BIDS image's own sidecar), the
    preparation's keys winning on a clash. The sidecar is written last (atomically), after every file.
    """
    import nibabel as nib

    from .nifti import load_mask, load_nifti, save_nifti

    options = options or PrepareOptions()
    src, dst = Path(src), Path(dst)
    sitk = _sitk()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if options.reorient:
        volume = load_nifti(src)  # canonical RAS+, checked
        data, affine = np.array(volume.data), np.array(volume.affine)
    else:
        image = nib.load(str(src))
        data, affine = np.asarray(image.get_fdata(), dtype=np.float32), np.array(image.affine)
    # Masks are read (and checked to lie on the image's grid) before any work, so a bad one costs nothing.
    mask_pairs = [(Path(m), Path(d)) for m, d in masks]
    reference = load_nifti(src) if mask_pairs and not options.reorient else (volume if mask_pairs else None)
    mask_data = [(m, d, load_mask(m, reference)) for m, d in mask_pairs]
    seconds["load"] = time.perf_counter() - start
    scan = _to_sitk(data, affine)
    if options.n4:
        start = time.perf_counter()
        scan = _n4(sitk.Cast(scan, sitk.sitkFloat32) + 1e-3)
        seconds["n4"] = time.perf_counter() - start
    matrix = None
    metric = None
    out_affine = affine
    out_shape = data.shape[:3]
    if options.register:
        start = time.perf_counter()
        template, template_affine, template_mask = _template()
        fixed = _to_sitk(template, template_affine)
        transform, metric = _register(fixed, sitk.Cast(scan, sitk.sitkFloat32), options.seed)
        matrix = _transform_matrix(transform)
        # Resampled by the transform rebuilt from the recorded matrix: what the sidecar says moved the voxels.
        scan = sitk.Resample(scan, fixed, _itk_affine(matrix), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        out_affine = template_affine
        out_shape = template.shape[:3]
        seconds["register"] = time.perf_counter() - start
    data = np.maximum(_from_sitk(scan), 0.0)
    if options.skull_strip:
        data = np.where(template_mask, data, 0.0)
    if options.normalise:
        brain = template_mask if options.skull_strip else data > 0
        values = data[brain & (data > 0)]
        if values.size == 0:
            raise DatasetError(f"{src}: nothing left inside the brain after preparation")
        data = data / float(np.median(values))
    mask_records = []
    for mask_src, mask_dst, mask in mask_data:
        pushed = to_prepared_space(mask.astype(np.float32), reference.affine, out_affine, out_shape, matrix,
                                   nearest=True)
        save_nifti(mask_dst, (pushed >= 0.5).astype(np.uint8), out_affine)
        mask_records.append({"source": str(mask_src), "source_sha256": _sha256(mask_src), "output": mask_dst.name,
                             "interpolation": "nearest"})
    save_nifti(dst, data.astype(np.float32), out_affine)
    sidecar = {
        "version": SIDECAR_VERSION,
        "source": str(src),
        "source_sha256": _sha256(src),
        "options": asdict(options),
        "steps": [s for s in ("reorient", "n4", "register", "skull_strip", "normalise") if getattr(options, s)],
        "template": "MNI152 2009 (nilearn), 2 mm" if options.register else None,
        "transform_template_to_source_ras": matrix.tolist() if matrix is not None else None,
        "registration_metric": metric,
        "masks": mask_records,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    sidecar = {**{k: v for k, v in (extra or {}).items() if k not in sidecar}, **sidecar}
    _write_atomic(_sidecar_path(dst), json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _sidecar_path(dst: Path) -> Path:
    name = dst.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return dst.with_name(name[: -len(ext)] + ".json")
    return dst.with_suffix(".json")


@dataclass(frozen=True)
class PrepareJob:
    """One scan to prepare: ``source`` into ``output``, its ``masks`` (source, output) and ``extra`` sidecar keys."""

    source: Path
    output: Path
    masks: tuple = ()
    extra: dict | None = None


def _done(job: PrepareJob, options: PrepareOptions) -> bool:
    sidecar = _sidecar_path(job.output)
    if not (job.output.is_file() and sidecar.is_file()):
        return False
    try:
        record = json.loads(sidecar.read_text())
    except ValueError:
        return False
    if not isinstance(record, dict):
        return False
    if record.get("source_sha256") != _sha256(job.source) or record.get("options") != asdict(options):
        return False
    done_masks = {(m.get("output"), m.get("source_sha256")) for m in record.get("masks", []) if isinstance(m, dict)}
    wanted = {(d.name, _sha256(m)) for m, d in job.masks}
    if done_masks != wanted or not all(d.is_file() for _, d in job.masks):
        return False
    return all(record.get(k) == v for k, v in (job.extra or {}).items() if k not in _PREPARE_KEYS)


_PREPARE_KEYS = frozenset({"version", "source", "source_sha256", "options", "steps", "template",
                           "transform_template_to_source_ras", "registration_metric", "masks", "seconds"})


def _job(args) -> tuple[str, dict]:
    job, options = args
    return str(job.source), prepare_scan(job.source, job.output, options, masks=job.masks, extra=job.extra)


def _plan_jobs(src_root: Path, out_root: Path, bids) -> tuple[list[PrepareJob], object]:
    """Every job under ``src_root`` and, for BIDS input, the :class:`models.bids_prepare.BidsPreparePlan`."""
    if src_root.is_dir():
        from .bids import find_bids_datasets

        if find_bids_datasets(src_root) is not None:
            from .bids_prepare import plan_bids

            plan = plan_bids(src_root, out_root, bids)
            return list(plan.jobs), plan
    if src_root.is_file():
        jobs = [PrepareJob(src_root, out_root / src_root.name)]
    elif src_root.is_dir():
        jobs = [PrepareJob(p, out_root / p.relative_to(src_root)) for p in sorted(src_root.rglob("*"))
                if p.is_file() and is_nifti_path(p) and "derivatives" not in p.relative_to(src_root).parts
                and not p.name.split(".")[0].endswith(("_mask", "_brainmask"))]
    else:
        raise DatasetError(f"{src_root}: no such file or directory")
    if not jobs:
        raise DatasetError(f"{src_root}: no NIfTI images to prepare")
    return jobs, None


def plan_prepare(src_root: str | Path, out_root: str | Path, options: PrepareOptions, *,
                 bids=None) -> tuple[list, list]:
    """(to do, already done): the :class:`PrepareJob` of :func:`prepare_dataset`. Every input is checked
    here (for BIDS: participants, names, every mask paired with an image), before any work."""
    jobs, _ = _plan_jobs(Path(src_root), Path(out_root), bids)
    todo = [j for j in jobs if not _done(j, options)]
    return todo, [j for j in jobs if j not in todo]


def prepare_dataset(src_root: str | Path, out_root: str | Path, *, options: PrepareOptions | None = None,
                    workers: int = 1, progress=None, bids=None) -> dict:
    """Prepare every NIfTI image under ``src_root`` (a file, or a folder searched recursively,
    masks and ``derivatives/`` skipped) into the same relative path under ``out_root``; returns
    ``{"prepared": [...], "skipped": [...], "masks": n, "bids_datasets": [...]}`` (skipped: already done
    for this input and options; masks: how many were pushed this time).
    ``progress(name)`` is called after each scan.

    A BIDS dataset, or a folder of them (:func:`models.bids.find_bids_datasets`), is read as the BIDS
    reader reads it (``bids``: :class:`models.bids.BidsOptions`) and written as a BIDS dataset that
    the reader loads (:mod:`models.bids_prepare`): the images of the BIDS suffix, their masks from
    ``derivatives/<pipeline>/`` pushed through each image's transform, the metadata copied.
    """
    options = options or PrepareOptions()
    jobs, plan = _plan_jobs(Path(src_root), Path(out_root), bids)
    if plan is not None:
        plan.begin()  # OUT stops being a BIDS dataset until every scan is done
    pending = [j for j in jobs if not _done(j, options)]
    todo = [(j, options) for j in pending]
    skipped = [str(j.source) for j in jobs if j not in pending]
    prepared = []
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for name, _ in pool.map(_job, todo):
                prepared.append(name)
                if progress:
                    progress(name)
    else:
        for job in todo:
            name, _ = _job(job)
            prepared.append(name)
            if progress:
                progress(name)
    written = plan.finish(options) if plan is not None else []
    return {"prepared": prepared, "skipped": skipped, "masks": sum(len(j.masks) for j, _ in todo),
            "bids_datasets": [str(p) for p in written]}
