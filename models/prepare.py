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

:func:`prepare_dataset` runs many scans on ``workers`` processes and skips a scan whose
output and sidecar exist for the same input digest and options (resumable).

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

__all__ = ["PrepareOptions", "prepare_scan", "plan_prepare", "prepare_dataset", "to_source_space", "SIDECAR_VERSION"]

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
    matrix = np.eye(4) if transform is None else np.asarray(transform, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-6:
        raise DatasetError("the recorded transform is not a finite, invertible 4x4 matrix")
    shape = tuple(int(n) for n in source_shape[:3])
    reference = _to_sitk(np.zeros(shape, dtype=np.float32), np.asarray(source_affine, dtype=np.float64))
    moving = _to_sitk(data, np.asarray(grid_affine, dtype=np.float64))
    # ITK's Resample reads the moving image at transform(reference point): input RAS -> template RAS = T^-1.
    inverse = _itk_affine(np.linalg.inv(matrix))
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return _from_sitk(sitk.Resample(moving, reference, inverse, interpolator, 0.0, sitk.sitkFloat32))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_scan(src: str | Path, dst: str | Path, options: PrepareOptions | None = None) -> dict:
    """Prepare one scan into ``dst`` (NIfTI) and ``dst``'s JSON sidecar; returns the sidecar."""
    import nibabel as nib

    from .nifti import load_nifti, save_nifti

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
    seconds["load"] = time.perf_counter() - start
    scan = _to_sitk(data, affine)
    if options.n4:
        start = time.perf_counter()
        scan = _n4(sitk.Cast(scan, sitk.sitkFloat32) + 1e-3)
        seconds["n4"] = time.perf_counter() - start
    matrix = None
    metric = None
    out_affine = affine
    if options.register:
        start = time.perf_counter()
        template, template_affine, template_mask = _template()
        fixed = _to_sitk(template, template_affine)
        transform, metric = _register(fixed, sitk.Cast(scan, sitk.sitkFloat32), options.seed)
        scan = sitk.Resample(scan, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        matrix = _transform_matrix(transform)
        out_affine = template_affine
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
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    _sidecar_path(dst).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def _sidecar_path(dst: Path) -> Path:
    name = dst.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return dst.with_name(name[: -len(ext)] + ".json")
    return dst.with_suffix(".json")


def _done(src: Path, dst: Path, options: PrepareOptions) -> bool:
    sidecar = _sidecar_path(dst)
    if not (dst.is_file() and sidecar.is_file()):
        return False
    try:
        record = json.loads(sidecar.read_text())
    except ValueError:
        return False
    return record.get("source_sha256") == _sha256(src) and record.get("options") == asdict(options)


def _job(args) -> tuple[str, dict]:
    src, dst, options = args
    return str(src), prepare_scan(src, dst, options)


def plan_prepare(src_root: str | Path, out_root: str | Path, options: PrepareOptions) -> tuple[list, list]:
    """(to do, already done): the ``(source, output)`` pairs of :func:`prepare_dataset`."""
    src_root, out_root = Path(src_root), Path(out_root)
    if src_root.is_file():
        pairs = [(src_root, out_root / src_root.name)]
    elif src_root.is_dir():
        pairs = [(p, out_root / p.relative_to(src_root)) for p in sorted(src_root.rglob("*"))
                 if p.is_file() and is_nifti_path(p) and "derivatives" not in p.relative_to(src_root).parts
                 and not p.name.split(".")[0].endswith(("_mask", "_brainmask"))]
    else:
        raise DatasetError(f"{src_root}: no such file or directory")
    if not pairs:
        raise DatasetError(f"{src_root}: no NIfTI images to prepare")
    todo = [(s, d) for s, d in pairs if not _done(s, d, options)]
    return todo, [(s, d) for s, d in pairs if (s, d) not in todo]


def prepare_dataset(src_root: str | Path, out_root: str | Path, *, options: PrepareOptions | None = None,
                    workers: int = 1, progress=None) -> dict:
    """Prepare every NIfTI image under ``src_root`` (a file, or a folder searched recursively,
    masks and ``derivatives/`` skipped) into the same relative path under ``out_root``; returns
    ``{"prepared": [...], "skipped": [...]}`` (skipped: already done for this input and options).
    ``progress(name)`` is called after each scan."""
    options = options or PrepareOptions()
    pending, done = plan_prepare(src_root, out_root, options)
    todo = [(s, d, options) for s, d in pending]
    skipped = [str(s) for s, _ in done]
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
    return {"prepared": prepared, "skipped": skipped}
