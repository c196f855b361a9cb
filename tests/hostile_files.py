"""Generators of hostile NIfTI files and paths (issue 18), written into a test's tmp_path.

Nothing binary is committed: every case is built here from a few bytes. Each
generator returns the path it wrote; :data:`HOSTILE_HEADERS` maps a case name
to (generator, fragment of the expected refusal).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

AFFINE_2MM = np.diag([2.0, 2.0, 2.0, 1.0])


def _header_bytes(header_class, shape, dtype=np.uint8, zooms=None) -> bytes:
    """A single-file NIfTI header (plus the 4 extension bytes) declaring ``shape``; no voxels."""
    header = header_class()
    header.set_data_dtype(dtype)
    dim = header["dim"]
    dim[:] = 1
    dim[0] = len(shape)
    dim[1: len(shape) + 1] = shape  # set directly: set_data_shape would refuse NIfTI-1 overflows itself
    header["dim"] = dim
    header.set_zooms(zooms or (1.0,) * len(shape))
    header.set_qform(np.diag(list(zooms or (1.0, 1.0, 1.0))[:3] + [1.0]), code=1)
    header.set_sform(np.diag(list(zooms or (1.0, 1.0, 1.0))[:3] + [1.0]), code=1)
    header["vox_offset"] = header.single_vox_offset
    return header.binaryblock + b"\0\0\0\0"


def nifti2_huge_dims(directory: Path) -> Path:
    """A NIfTI-2 header declaring 2^31 x 2^31 x 2^31 voxels (a raw OverflowError before issue 18)."""
    path = Path(directory) / "nifti2-2^31.nii"
    path.write_bytes(_header_bytes(nib.Nifti2Header, (2**31, 2**31, 2**31)))
    return path


def tiny_gz_declaring_5gb(directory: Path) -> Path:
    """A ~112-byte .nii.gz whose header declares 2000 x 1600 x 1600 uint8 (about 5 GB)."""
    path = Path(directory) / "tiny-declares-5gb.nii.gz"
    path.write_bytes(gzip.compress(_header_bytes(nib.Nifti1Header, (2000, 1600, 1600)), mtime=0))
    return path


def gzip_bomb(directory: Path, trailing_mib: int = 256) -> Path:
    """A valid 32^3 uint8 volume followed by ``trailing_mib`` MiB of zeros: a .nii.gz of a few hundred KiB."""
    path = Path(directory) / "bomb.nii.gz"
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    voxels = np.zeros((32, 32, 32), np.uint8)
    voxels[8:24, 8:24, 8:24] = 100
    parts = [compressor.compress(_header_bytes(nib.Nifti1Header, (32, 32, 32)) + voxels.tobytes(order="F"))]
    zeros = bytes(1 << 20)
    parts.extend(compressor.compress(zeros) for _ in range(trailing_mib))
    parts.append(compressor.flush())
    path.write_bytes(b"".join(parts))
    return path


def huge_voxels(directory: Path) -> Path:
    """A valid 16^3 volume with 1e5 mm voxels (87,272 slices and a torch traceback before issue 18)."""
    path = Path(directory) / "voxels-1e5mm.nii.gz"
    data = np.zeros((16, 16, 16), np.float32)
    data[4:12, 4:12, 4:12] = 500.0
    image = nib.Nifti1Image(data, np.diag([1e5, 1e5, 1e5, 1.0]))
    nib.save(image, path)
    return path


def complex_voxels(directory: Path) -> Path:
    """A valid 16^3 complex64 volume: not a real-valued MRI."""
    path = Path(directory) / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.complex64), AFFINE_2MM), path)
    return path


#: case -> (generator, fragment of the refusal message)
HOSTILE_HEADERS = {
    "nifti2-2^31-dims": (nifti2_huge_dims, "above the limit max_axis = 512"),
    "112-byte-gz-declaring-5gb": (tiny_gz_declaring_5gb, "above the limit max_axis = 512"),
    "gzip-bomb": (gzip_bomb, "gzip bomb"),
    "1e5-mm-voxels": (huge_voxels, "outside the limits min_voxel_mm"),
    "complex-voxels": (complex_voxels, "is not allowed"),
}


def symlink_loop(directory: Path) -> Path:
    a, b = Path(directory) / "loop-a.nii.gz", Path(directory) / "loop-b.nii.gz"
    os.symlink(b.name, a)
    os.symlink(a.name, b)
    return a


def symlink_to_dev_zero(directory: Path) -> Path:
    path = Path(directory) / "zero.nii.gz"
    os.symlink("/dev/zero", path)
    return path


def directory_named_nifti(directory: Path) -> Path:
    path = Path(directory) / "folder.nii.gz"
    path.mkdir()
    return path


def fifo(directory: Path) -> Path:
    path = Path(directory) / "pipe.nii.gz"
    os.mkfifo(path)
    return path


def dangling_symlink(directory: Path) -> Path:
    path = Path(directory) / "dangling.nii.gz"
    os.symlink("no-such-target.nii.gz", path)
    return path


#: case -> (generator, fragment of the refusal message)
NON_REGULAR = {
    "symlink-loop": (symlink_loop, "symlink loop"),
    "symlink-to-dev-zero": (symlink_to_dev_zero, "character device"),
    "directory": (directory_named_nifti, "a directory"),
    "fifo": (fifo, "a FIFO"),
    "dangling-symlink": (dangling_symlink, "dangling symlink"),
}
