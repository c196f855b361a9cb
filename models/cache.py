"""On-disk cache of preprocessed volumes (``.npz`` files in a cache directory).

Key: SHA-256 over a version tag, the :class:`~models.preprocess.PreprocessConfig`
fields, and for every source file (image, brain mask or "derived", lesion
mask or "none") a BLAKE2b digest of its *bytes*. Hashing content rather than
mtime and size means a copied, re-downloaded or touched file still hits, and
a file rewritten in place with the same size and timestamp still misses.
Reading a volume's bytes once costs far less than preprocessing it.

Entries are written atomically (temporary file, then ``os.replace``), so a
crash never leaves a half-written entry under a valid name; an unreadable or
inconsistent entry is treated as a miss and rewritten.

An entry is patient data (preprocessed slices and lesion masks): entries are
0600 (``mkstemp``) and the folders this cache creates 0700 whatever the umask
(issue 21), so a cache inside a Flower node's private state stays private.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .owner_only import owner_only_dirs
from .preprocess import PreprocessConfig, SliceVolume

__all__ = ["PreprocessCache", "file_digest", "CACHE_VERSION"]

#: Bump when preprocessing changes in a way that invalidates old entries.
CACHE_VERSION = 2  # 2: float32 Otsu and in-place smoothing (issue 18)


def file_digest(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """BLAKE2b-160 hex digest of a file's bytes."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PreprocessCache:
    """A directory of preprocessed volumes; counts its hits and misses."""

    directory: Path
    hits: int = field(default=0)
    misses: int = field(default=0)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    def key(self, config: PreprocessConfig, image: Path, brain: Path | None, lesion: Path | None) -> str:
        """Cache key of one volume's preprocessing (see the module docstring)."""
        payload = {
            "version": CACHE_VERSION,
            "config": config.as_dict(),
            "image": file_digest(image),
            "brain": file_digest(brain) if brain is not None else "derived",
            "lesion": file_digest(lesion) if lesion is not None else "none",
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npz"

    def load(self, key: str, *, name: str, source: Path) -> SliceVolume | None:
        """The cached volume for ``key``, or None (counted as a miss) if absent or unreadable."""
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as entry:
                image = entry["image"]
                brain = entry["brain"]
                lesion = entry["lesion"] if "lesion" in entry.files else None
                grid = entry["grid_affine"]
                fraction = entry["slice_fraction"]
                scale = float(entry["intensity_scale"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            self.misses += 1
            return None
        consistent = (
            image.ndim == 3
            and image.dtype == np.float32
            and brain.shape == image.shape
            and brain.dtype == np.bool_
            and (lesion is None or (lesion.shape == image.shape and lesion.dtype == np.bool_))
            and grid.shape == (4, 4)
            and fraction.shape == (image.shape[0],)
        )
        if not consistent:
            self.misses += 1
            return None
        for array in (image, brain, grid, fraction) + ((lesion,) if lesion is not None else ()):
            array.flags.writeable = False
        self.hits += 1
        return SliceVolume(
            name=name, source=source, image=image, brain=brain, lesion=lesion,
            grid_affine=grid, slice_fraction=fraction, intensity_scale=scale,
        )

    def store(self, key: str, volume: SliceVolume) -> None:
        """Write ``volume`` under ``key`` atomically."""
        path = self._path(key)
        owner_only_dirs(path.parent)
        arrays = {
            "image": volume.image,
            "brain": volume.brain,
            "grid_affine": volume.grid_affine,
            "slice_fraction": volume.slice_fraction,
            "intensity_scale": np.float64(volume.intensity_scale),
        }
        if volume.lesion is not None:
            arrays["lesion"] = volume.lesion
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
