"""Reading and writing NIfTI volumes, with every failure turned into :class:`NiftiError`.

Reading (:func:`load_nifti`) does four things and nothing else:

1. opens ``.nii`` / ``.nii.gz`` with nibabel and refuses anything that is not a
   NIfTI-1/2 image (Analyze, MGH, random bytes, empty files);
2. reorients to the closest canonical orientation, RAS+ (``nibabel.as_closest_canonical``):
   voxel axis 0 runs Left->Right, axis 1 Posterior->Anterior, axis 2
   Inferior->Superior, so an LPS-stored scan and an RAS-stored scan give the same array;
3. reads the voxels as float32 (applying ``scl_slope``/``scl_inter``), turning
   truncated or corrupt payloads into an error instead of a deep traceback;
4. checks that the result is one 3-D volume (a trailing singleton 4th axis is
   squeezed; real 4-D series are refused), at least ``min_extent`` voxels along
   each axis, finite, with an invertible affine.

Masks (:func:`load_mask`) are read the same way, binarised at 0.5 (so
probabilistic masks work) and must lie on exactly the grid of their image.

The array is made read-only: a :class:`NiftiVolume` is a value, and
preprocessing works on copies.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import NiftiError

__all__ = [
    "NIFTI_SUFFIXES",
    "NiftiVolume",
    "load_nifti",
    "load_mask",
    "save_nifti",
    "is_nifti_path",
    "nifti_stem",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Smallest accepted extent of any axis; anything smaller is not a brain volume.
MIN_EXTENT = 8
# Tolerance (in mm) when checking that a mask lies on the grid of its image.
_AFFINE_TOLERANCE_MM = 1e-3


def is_nifti_path(path: str | Path) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """The file name without its ``.nii`` / ``.nii.gz`` suffix."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class NiftiVolume:
    """One 3-D volume in canonical RAS+ orientation.

    ``data[i, j, k]`` is the voxel whose world position (mm, RAS+) is
    ``affine @ (i, j, k, 1)``; axis 0 runs Left->Right, 1 Posterior->Anterior,
    2 Inferior->Superior. ``data`` is float32 and read-only.
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm (norms of the affine's columns)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def _read_image(path: Path):
    """Open ``path`` with nibabel, mapping every failure to :class:`NiftiError`."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    if not path.exists():
        raise NiftiError(path, "file does not exist")
    if not path.is_file():
        raise NiftiError(path, "is not a regular file")
    if not is_nifti_path(path):
        raise NiftiError(path, "file name must end in .nii or .nii.gz")
    try:
        with warnings.catch_warnings():
            # nibabel warns about odd headers (e.g. degenerate affines); they are checked below.
            warnings.simplefilter("ignore", RuntimeWarning)
            image = nib.load(str(path))
    except ImageFileError as exc:
        raise NiftiError(path, f"not a readable NIfTI file ({exc})") from exc
    except (OSError, EOFError, ValueError, zlib.error, MemoryError, HeaderDataError) as exc:
        raise NiftiError(path, f"unreadable header ({type(exc).__name__}: {exc})") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(path, f"not a NIfTI image (nibabel read it as {type(image).__name__})")
    return image


def load_nifti(path: str | Path, *, min_extent: int = MIN_EXTENT) -> NiftiVolume:
    """Read one 3-D NIfTI volume, reoriented to canonical RAS+, as float32.

    Raises :class:`NiftiError` (naming ``path``) when the file is missing, not
    NIfTI, truncated or corrupt, not 3-D, smaller than ``min_extent`` voxels
    along an axis, holds non-finite or non-real values, or has a singular affine.
    """
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    path = Path(path)
    image = _read_image(path)
    shape = tuple(int(n) for n in image.shape)
    # A trailing run of singleton axes (e.g. (x, y, z, 1)) is still one volume.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        dims = "4-D" if len(shape) == 4 else f"{len(shape)}-D"
        raise NiftiError(path, f"is {dims} with shape {tuple(image.shape)}; expected one 3-D volume")
    if min(shape) < min_extent:
        raise NiftiError(
            path, f"shape {shape} is too small: every axis needs at least {min_extent} voxels"
        )
    dtype = image.get_data_dtype()
    if dtype.kind not in "biuf":
        raise NiftiError(path, f"unsupported voxel data type {dtype} (need real numbers)")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiError(path, "affine (voxel-to-world matrix) is singular or non-finite")
    if len(image.shape) > 3:
        image = image.slicer[(...,) + (0,) * (len(image.shape) - 3)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            canonical = nib.as_closest_canonical(image)
            data = np.asarray(canonical.get_fdata(dtype=np.float32))
    except (OSError, EOFError, ValueError, zlib.error, MemoryError, HeaderDataError) as exc:
        raise NiftiError(path, f"truncated or corrupt data ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3:
        raise NiftiError(path, f"voxel array has shape {data.shape}; expected 3-D")
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise NiftiError(path, f"{bad} voxels are NaN or infinite")
    data = np.ascontiguousarray(data)
    data.flags.writeable = False
    canonical_affine = np.array(canonical.affine, dtype=np.float64)
    canonical_affine.flags.writeable = False
    return NiftiVolume(path=path, data=data, affine=canonical_affine)


def load_mask(path: str | Path, reference: NiftiVolume) -> np.ndarray:
    """Read a mask that must lie on the grid of ``reference``; returns a read-only bool array.

    Voxels >= 0.5 are inside (so binary and probabilistic masks both work).
    Raises :class:`NiftiError` naming the mask when it is unreadable or its
    shape or affine differs from the reference image's.
    """
    volume = load_nifti(path, min_extent=1)
    if volume.shape != reference.shape:
        raise NiftiError(
            volume.path,
            f"mask shape {volume.shape} does not match the shape {reference.shape} "
            f"of its image {reference.path.name} (both in RAS orientation)",
        )
    # Compare voxel-to-world maps via the world positions of the grid corners.
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in reference.shape], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    offset = np.abs(volume.affine @ corners - reference.affine @ corners).max()
    if offset > max(_AFFINE_TOLERANCE_MM, 0.01 * min(reference.voxel_size)):
        raise NiftiError(
            volume.path,
            f"mask lies on a different grid than its image {reference.path.name} "
            f"(corners differ by up to {offset:.3g} mm)",
        )
    mask = volume.data >= 0.5
    mask.flags.writeable = False
    return mask


def save_nifti(
    path: str | Path, data: np.ndarray, affine: np.ndarray, *, dtype: np.dtype | type | None = None
) -> Path:
    """Write ``data`` with voxel-to-world ``affine`` as NIfTI-1 (gzip if the name ends in .gz).

    ``dtype`` sets the on-disk type (default: the array's); the qform and sform
    both carry ``affine`` with code 1 (scanner anatomical). Returns the path.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise NiftiError(path, "file name must end in .nii or .nii.gz")
    array = np.asarray(data)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path
