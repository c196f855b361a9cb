"""Reading and writing NIfTI volumes, with every failure turned into :class:`NiftiError`.

Reading (:func:`load_nifti`) does five things and nothing else:

1. opens the path only if it is a regular file (checked on the open
   descriptor: a symlink loop, a symlink to ``/dev/zero``, a directory named
   ``*.nii.gz`` or a FIFO is refused, never read or waited on);
2. reads the header alone (at most 540 decompressed bytes, nibabel's header
   classes) and checks it against :class:`VolumeLimits` *before any voxel
   buffer exists*: NIfTI-1/2 single-file magic, 1-7 dimensions, every axis
   <= ``max_axis`` (512), voxels <= ``max_voxels`` (2^27), declared payload
   <= ``max_bytes`` (1 GiB), a real voxel type from ``dtypes``, voxel edges in
   [``min_voxel_mm``, ``max_voxel_mm``] = [0.1, 10] mm, a finite invertible
   affine, one 3-D volume (a trailing singleton 4th axis is squeezed; real
   4-D series are refused) at least ``min_extent`` voxels along each axis.
   Dimensions are Python integers, so a NIfTI-2 header declaring 2^31 x 2^31
   x 2^31 voxels is a typed refusal, not an ``OverflowError``;
3. reads exactly the declared payload through a bounded reader: a ``.nii`` is
   checked against its size on disk first; a ``.nii.gz`` is decompressed in
   4 MiB chunks into a buffer that grows only with what was decompressed, and
   one byte beyond the declared size refuses the file - a gzip bomb stops at
   the header's (bounded) size;
4. converts to float32 (applying ``scl_slope``/``scl_inter``; no copy for
   native unscaled float32) and refuses non-finite values;
5. reorients to the closest canonical orientation, RAS+ (as
   ``nibabel.as_closest_canonical``): voxel axis 0 runs Left->Right, axis 1
   Posterior->Anterior, axis 2 Inferior->Superior, so an LPS-stored scan and an
   RAS-stored scan give the same array.

Every refusal names the file and, for a limit, the limit's name and value.
Change the limits with ``load_nifti(path, limits=VolumeLimits(max_axis=1024))``,
``models.load_site(..., limits=...)``, or a ``[volume_limits]`` table in the
TOML file of ``secagg simulate --config``.

Masks (:func:`load_mask`) are read the same way, binarised at 0.5 (so
probabilistic masks work) and must lie on exactly the grid of their image.

The array is made read-only: a :class:`NiftiVolume` is a value, and
preprocessing works on copies.
"""

from __future__ import annotations

import errno
import gzip
import math
import os
import stat
import warnings
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .errors import ConfigError, NiftiError

__all__ = [
    "NIFTI_SUFFIXES",
    "NiftiVolume",
    "NiftiHeader",
    "VolumeLimits",
    "load_nifti",
    "read_nifti_header",
    "read_nifti_image",
    "non_regular_reason",
    "load_mask",
    "save_nifti",
    "is_nifti_path",
    "nifti_stem",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Smallest accepted extent of any axis; anything smaller is not a brain volume.
MIN_EXTENT = 8
# Decompression chunk: bounds what one read can add past the declared size.
_CHUNK = 1 << 22
#: Voxel types of real MRI (NIfTI codes 2, 4, 8, 16, 64, 256, 512, 768, 1024, 1280).
SANE_DTYPES = ("uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")
# Tolerance (in mm) when checking that a mask lies on the grid of its image.
_AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class VolumeLimits:
    """Bounds a NIfTI header must meet before any voxel is read (defaults: adult brain MRI).

    ``max_axis`` (512) voxels along any axis; ``max_voxels`` (2^27 = 134,217,728)
    in all; ``max_bytes`` (2^30, 1 GiB) of declared voxel payload
    (voxels x bytes per voxel); voxel edges (norms of the affine's columns)
    between ``min_voxel_mm`` (0.1) and ``max_voxel_mm`` (10) mm; ``dtypes`` the
    allowed voxel types (:data:`SANE_DTYPES`: real integers and floats, no
    complex, RGB or float128); ``max_extension_bytes`` (16 MiB) of header
    extensions before the voxels. A clinical 3-D scan (0.5-1 mm, up to
    512 x 512 x 400) fits; a header beyond them is refused by
    :func:`read_nifti_header` naming the file and the limit. Raise a limit with
    ``VolumeLimits(max_axis=1024)`` (``load_nifti(..., limits=)``,
    ``load_site(..., limits=)``) or, for ``secagg simulate``, a
    ``[volume_limits]`` table in the run's TOML file.
    """

    max_axis: int = 512
    max_voxels: int = 2**27
    max_bytes: int = 2**30
    min_voxel_mm: float = 0.1
    max_voxel_mm: float = 10.0
    dtypes: tuple[str, ...] = SANE_DTYPES
    max_extension_bytes: int = 2**24

    def __post_init__(self) -> None:
        for name in ("max_axis", "max_voxels", "max_bytes", "max_extension_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"volume limit {name} must be a positive integer; got {value!r}")
        for name in ("min_voxel_mm", "max_voxel_mm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"volume limit {name} must be a positive number; got {value!r}")
        if self.min_voxel_mm > self.max_voxel_mm:
            raise ConfigError(f"volume limit min_voxel_mm {self.min_voxel_mm} exceeds max_voxel_mm {self.max_voxel_mm}")
        if isinstance(self.dtypes, str) or not all(isinstance(d, str) for d in self.dtypes):
            raise ConfigError(f"volume limit dtypes must be a list of numpy type names; got {self.dtypes!r}")
        unknown = [d for d in self.dtypes if d not in SANE_DTYPES]
        if unknown or not self.dtypes:
            raise ConfigError(f"volume limit dtypes must be a non-empty subset of {', '.join(SANE_DTYPES)}; "
                              f"got {list(self.dtypes)}")
        object.__setattr__(self, "dtypes", tuple(self.dtypes))

    @classmethod
    def from_mapping(cls, values: dict | None) -> "VolumeLimits":
        """Limits from a mapping such as a TOML table; unknown keys are a :class:`ConfigError`."""
        if values is None:
            return cls()
        if not isinstance(values, dict):
            raise ConfigError(f"volume_limits must be a table of limits; got {values!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown volume limits {unknown}; known: {sorted(known)}")
        return cls(**values)


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


def non_regular_reason(path: str | Path) -> str | None:
    """``None`` when ``path`` is (a symlink to) a regular file; else why it is not one.

    Reasons: a symlink loop, a dangling symlink, a missing path, or the kind of
    the target (directory, FIFO, character device such as ``/dev/zero``, block
    device, socket). Nothing is opened, so a FIFO cannot block the caller.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is not a regular file (a symlink loop)"
        if exc.errno == errno.ENOENT:
            return "is not a regular file (a dangling symlink)" if os.path.lexists(path) else "file does not exist"
        return f"cannot be inspected ({exc.strerror})"
    return None if stat.S_ISREG(mode) else f"is not a regular file ({_kind(mode)})"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def _open_regular(path: Path):
    """Open ``path`` for reading only if it is a regular file (checked on the open descriptor).

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; ``fstat`` on the descriptor (not
    the name) means a path swapped after a check cannot smuggle in a device or FIFO.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        reason = non_regular_reason(path)
        raise NiftiError(path, reason or f"cannot be opened ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NiftiError(path, f"is not a regular file ({_kind(mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_up_to(stream, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream)."""
    parts, got = [], 0
    while got < n:
        block = stream.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


@dataclass(frozen=True)
class NiftiHeader:
    """What the header of a NIfTI file declares, after :class:`VolumeLimits` accepted it.

    ``shape`` has the trailing singleton axes dropped (one 3-D volume), ``dtype``
    carries the file's byte order, ``nbytes`` is the size of the voxel payload
    that starts ``offset`` bytes into the (decompressed) file, ``slope`` /
    ``inter`` the intensity scaling (``None`` when the file is unscaled).
    """

    path: Path
    version: int
    shape: tuple[int, int, int]
    dtype: np.dtype
    affine: np.ndarray
    offset: int
    nbytes: int
    slope: float | None
    inter: float | None
    compressed: bool

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def _parse_header(path: Path, block: bytes, limits: VolumeLimits, min_extent: int, compressed: bool) -> NiftiHeader:
    """Validate the header bytes against the NIfTI format and ``limits``; allocate nothing."""
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    if len(block) < 348:
        what = "an empty file" if not block else f"only {len(block)} bytes"
        raise NiftiError(path, f"not a readable NIfTI file ({what}: shorter than a NIfTI header)")
    sizes = {int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")}
    if 348 in sizes:
        klass, size, version, magics = nib.Nifti1Header, 348, 1, (b"n+1",)
    elif 540 in sizes and len(block) >= 540:
        klass, size, version, magics = nib.Nifti2Header, 540, 2, (b"n+2",)
    else:
        raise NiftiError(path, "not a readable NIfTI file (its first 4 bytes are not a NIfTI-1 or NIfTI-2 header size)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = klass(binaryblock=block[:size], check=False)
            magic = bytes(header["magic"].item()).rstrip(b"\0")[:3]
    except (ValueError, HeaderDataError) as exc:
        raise NiftiError(path, f"not a readable NIfTI file ({exc})") from None
    if magic not in magics:
        detail = ("the header of a .hdr/.img pair, not a single-file NIfTI" if magic in (b"ni1", b"ni2")
                  else "no NIfTI magic: Analyze 7.5 or not an image")
        raise NiftiError(path, f"not a readable NIfTI file ({detail})")
    dim = [int(d) for d in header["dim"]]  # Python ints: a NIfTI-2 dim of 2^63 cannot overflow
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise NiftiError(path, f"unreadable header: declares {ndim} dimensions (NIfTI allows 1 to 7)")
    declared = tuple(dim[1: ndim + 1])
    if min(declared) < 1:
        raise NiftiError(path, f"unreadable header: declares a non-positive dimension in shape {declared}")
    for axis, n in enumerate(declared):
        if n > limits.max_axis:
            raise NiftiError(path, f"axis {axis} declares {n:,} voxels, above the limit max_axis = {limits.max_axis:,}")
    voxels = math.prod(declared)
    if voxels > limits.max_voxels:
        raise NiftiError(path, f"declares {voxels:,} voxels {declared}, above the limit max_voxels = "
                               f"{limits.max_voxels:,}")
    try:
        dtype = header.get_data_dtype()
    except (HeaderDataError, KeyError, ValueError, TypeError):
        raise NiftiError(path, f"unreadable header: unknown data type code {int(header['datatype'])}") from None
    if dtype.name not in limits.dtypes:
        raise NiftiError(path, f"voxel data type {dtype} is not allowed (limit dtypes = {', '.join(limits.dtypes)}; "
                               "need real numbers)")
    nbytes = voxels * dtype.itemsize
    if nbytes > limits.max_bytes:
        raise NiftiError(path, f"declares {nbytes:,} bytes of voxels, above the limit max_bytes = {limits.max_bytes:,}")
    shape = declared
    while len(shape) > 3 and shape[-1] == 1:  # (x, y, z, 1) is still one volume
        shape = shape[:-1]
    if len(shape) != 3:
        dims = "4-D" if len(shape) == 4 else f"{len(shape)}-D"
        raise NiftiError(path, f"is {dims} with shape {declared}; expected one 3-D volume")
    if min(shape) < min_extent:
        raise NiftiError(path, f"shape {shape} is too small: every axis needs at least {min_extent} voxels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            affine = np.asarray(header.get_best_affine(), dtype=np.float64)
            slope, inter = header.get_slope_inter()
            offset = int(header.get_data_offset())
    except (HeaderDataError, ValueError, OverflowError, np.linalg.LinAlgError) as exc:
        raise NiftiError(path, f"unreadable header ({type(exc).__name__}: {exc})") from None
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiError(path, "affine (voxel-to-world matrix) is singular or non-finite")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if spacing.min() < limits.min_voxel_mm or spacing.max() > limits.max_voxel_mm:
        sizes_mm = " x ".join(f"{v:.4g}" for v in spacing)
        raise NiftiError(path, f"voxel size {sizes_mm} mm lies outside the limits min_voxel_mm = "
                               f"{limits.min_voxel_mm:g} .. max_voxel_mm = {limits.max_voxel_mm:g}")
    if not size + 4 <= offset <= size + 4 + limits.max_extension_bytes:
        raise NiftiError(path, f"unreadable header: data offset {offset:,} is not within [{size + 4}, "
                               f"{size + 4 + limits.max_extension_bytes:,}] (limit max_extension_bytes)")
    for name, value in (("scl_slope", slope), ("scl_inter", inter)):
        if value is not None and not math.isfinite(value):
            raise NiftiError(path, f"unreadable header: {name} is {value}")
    return NiftiHeader(path=path, version=version, shape=shape, dtype=dtype, affine=affine, offset=offset,
                       nbytes=nbytes, slope=None if slope is None else float(slope),
                       inter=None if inter is None else float(inter), compressed=compressed)


def _stream(path: Path, handle):
    return gzip.GzipFile(fileobj=handle, mode="rb") if path.name.lower().endswith(".gz") else handle


def read_nifti_header(path: str | Path, *, limits: VolumeLimits | None = None,
                      min_extent: int = MIN_EXTENT) -> NiftiHeader:
    """Read and check only the header of ``path`` (at most 540 decompressed bytes).

    Raises :class:`NiftiError` naming the file (and the limit, where one is passed)
    for anything :func:`load_nifti` would refuse before reading a voxel.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise NiftiError(path, "file name must end in .nii or .nii.gz")
    limits = limits or VolumeLimits()
    with _open_regular(path) as handle:
        stream = _stream(path, handle)
        try:
            block = _read_up_to(stream, 540)
        except (OSError, EOFError, zlib.error) as exc:
            raise NiftiError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        return _parse_header(path, block, limits, min_extent, stream is not handle)


def read_nifti_image(path: str | Path, *, limits: VolumeLimits | None = None, min_extent: int = MIN_EXTENT):
    """The nibabel image of ``path`` as stored (its own affine, header and voxel order).

    For tools that must write results in the scan's own space (``secagg detect``).
    The header is checked against ``limits`` first (:func:`read_nifti_header`), so
    nibabel later reads only the declared, bounded number of voxel bytes.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    path = Path(path)
    read_nifti_header(path, limits=limits, min_extent=min_extent)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # odd headers are checked by the caller
            return nib.load(str(path))
    except ImageFileError as exc:
        raise NiftiError(path, f"not a readable NIfTI file ({exc})") from None
    except (OSError, EOFError, ValueError, zlib.error, MemoryError, HeaderDataError) as exc:
        raise NiftiError(path, f"unreadable header ({type(exc).__name__}: {exc})") from None


def _read_payload(path: Path, limits: VolumeLimits, min_extent: int) -> tuple[NiftiHeader, bytearray]:
    """The checked header and exactly its declared voxel bytes, read through a bounded reader.

    A plain ``.nii`` is checked against its size on disk first (no allocation for a
    truncated file). A ``.nii.gz`` is decompressed in chunks into a buffer that grows
    only with the bytes actually decompressed, up to the declared size; one byte
    more means the stream holds more than the header declares (a gzip bomb or
    trailing data) and the file is refused, so decompression never passes
    ``offset + nbytes + 1`` bytes whatever the stream would expand to.
    """
    with _open_regular(path) as handle:
        stream = _stream(path, handle)
        compressed = stream is not handle
        try:
            block = _read_up_to(stream, 540)
        except (OSError, EOFError, zlib.error) as exc:
            raise NiftiError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        header = _parse_header(path, block, limits, min_extent, compressed)
        end = header.offset + header.nbytes
        if not compressed:
            size = os.fstat(handle.fileno()).st_size
            if size < end:
                raise NiftiError(path, f"truncated or corrupt data (the file has {size:,} bytes; its header "
                                       f"declares {end:,})")
        payload = bytearray(block[header.offset:end])
        try:
            if len(block) < header.offset:
                skipped = len(_read_up_to(stream, header.offset - len(block)))
                if skipped < header.offset - len(block):
                    raise EOFError("the stream ends inside the header extensions")
            while len(payload) < header.nbytes:
                chunk = stream.read(min(_CHUNK, header.nbytes - len(payload)))
                if not chunk:
                    raise EOFError(f"the stream ends after {len(payload):,} of {header.nbytes:,} voxel bytes")
                payload += chunk
            extra = compressed and (len(block) > end or stream.read(1))
        except (OSError, EOFError, zlib.error) as exc:
            raise NiftiError(path, f"truncated or corrupt data ({type(exc).__name__}: {exc})") from None
    if extra:
        raise NiftiError(path, f"decompresses to more than the {end:,} bytes its header declares "
                               "(a gzip bomb or trailing data); reading stopped there")
    return header, payload


def load_nifti(path: str | Path, *, min_extent: int = MIN_EXTENT, limits: VolumeLimits | None = None) -> NiftiVolume:
    """Read one 3-D NIfTI volume, reoriented to canonical RAS+, as float32.

    The header is checked against ``limits`` (default :class:`VolumeLimits`)
    before any voxel is read or any buffer is allocated. Raises
    :class:`NiftiError` (naming ``path``) when the path is not a regular file,
    the file is missing, not NIfTI, over a limit, truncated or corrupt, not 3-D,
    smaller than ``min_extent`` voxels along an axis, holds non-finite values,
    or has a singular affine.

    Memory: the raw payload plus one float32 copy (none when the file is
    native float32 and unscaled) plus the contiguous canonical copy.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    path = Path(path)
    if not is_nifti_path(path):
        raise NiftiError(path, "file name must end in .nii or .nii.gz")
    header, payload = _read_payload(path, limits or VolumeLimits(), min_extent)
    raw = np.frombuffer(payload, dtype=header.dtype).reshape(header.shape, order="F")
    del payload  # ``raw`` keeps the buffer alive only as long as it is needed
    if raw.dtype == np.float32 and header.slope is None and header.inter is None:
        data = raw  # native float32: no copy at all
    else:
        data = raw.astype(np.float32)  # one float32 copy (nibabel's get_fdata(float32) semantics)
        del raw
        if header.slope is not None and header.slope != 1.0:
            data *= np.float32(header.slope)
        if header.inter is not None and header.inter != 0.0:
            data += np.float32(header.inter)
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise NiftiError(path, f"{bad} voxels are NaN or infinite")
    ornt = io_orientation(header.affine)  # as nibabel.as_closest_canonical
    canonical_affine = header.affine @ inv_ornt_aff(ornt, header.shape)
    data = np.ascontiguousarray(apply_orientation(data, ornt))
    data.flags.writeable = False
    canonical_affine.flags.writeable = False
    return NiftiVolume(path=path, data=data, affine=canonical_affine)


def load_mask(path: str | Path, reference: NiftiVolume, *, limits: VolumeLimits | None = None) -> np.ndarray:
    """Read a mask that must lie on the grid of ``reference``; returns a read-only bool array.

    Voxels >= 0.5 are inside (so binary and probabilistic masks both work).
    Raises :class:`NiftiError` naming the mask when it is unreadable or its
    shape or affine differs from the reference image's, or it breaks ``limits``.
    """
    volume = load_nifti(path, min_extent=1, limits=limits)
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
