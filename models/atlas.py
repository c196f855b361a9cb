"""The MNI152 2009 tissue atlas that synthetic subjects are drawn from.

Source: the MNI ICBM152 2009 template and its grey- and white-matter
probability maps, which ship inside nilearn's wheel
(``nilearn.datasets.load_mni152_{template,gm_template,wm_template,brain_mask}``;
no download, nothing leaves the machine). At 1 mm the grid is 197 x 233 x 189.

Derived maps, all on the atlas grid:

* ``gm``, ``wm`` - probabilities, set to 0 outside the brain mask;
* ``csf = clip(brain - gm - wm, 0, 1)`` (the brief's definition);
* ``brain`` - the template's brain mask, as a fraction after downsampling;
* ``ventricles`` - lateral/third ventricles: CSF > 0.5 at least 20 mm from the
  brain's surface (sulcal CSF is shallow), cleaned of components < 1 ml;
* ``ventricle_distance_mm`` / ``surface_distance_mm`` - Euclidean distances to
  the ventricles and to the outside of the brain, used to place lesions.

Coarser atlases (2 mm) are 2x2x2 block averages of the 1 mm maps, which is the
exact partial-volume fraction on the coarser grid (no interpolation). Atlases
are cached per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._deps import require
from .errors import ConfigError

__all__ = ["TissueAtlas", "load_atlas"]


@dataclass(frozen=True, eq=False)  # identity semantics: atlases are cached singletons
class TissueAtlas:
    """Tissue maps on one grid; ``affine`` maps atlas voxel indices to MNI mm (RAS+)."""

    resolution_mm: int
    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    ventricle_distance_mm: np.ndarray
    surface_distance_mm: np.ndarray
    tissue_stack: np.ndarray  # (X, Y, Z, 3): GM, WM, brain channel-last, for one-pass sampling

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.gm.shape)  # type: ignore[return-value]

    def world(self, index: np.ndarray) -> np.ndarray:
        """MNI mm coordinates (N, 3) of voxel indices (N, 3)."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]


def _block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping factor^3 blocks (zero-padded to a multiple of factor)."""
    pad = [(0, (-n) % factor) for n in array.shape]
    a = np.pad(array, pad)
    s = [n // factor for n in a.shape]
    return a.reshape(s[0], factor, s[1], factor, s[2], factor).mean(axis=(1, 3, 5))


@lru_cache(maxsize=2)
def load_atlas(resolution_mm: int = 2) -> TissueAtlas:
    """Load (and cache) the MNI152 2009 tissue atlas at 1 or 2 mm."""
    if resolution_mm not in (1, 2):
        raise ConfigError(f"atlas resolution must be 1 or 2 mm; got {resolution_mm!r}")
    datasets = require("nilearn.datasets", purpose="synthetic cohorts (MNI152 templates)")
    ndimage = require("scipy.ndimage", purpose="synthetic cohorts")
    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    brain = np.asarray(mask_img.dataobj, dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    affine = np.asarray(mask_img.affine, dtype=np.float64)
    brain = (brain > 0.5).astype(np.float32)
    gm = np.clip(gm, 0.0, 1.0) * brain
    wm = np.clip(wm, 0.0, 1.0) * brain
    if resolution_mm == 2:
        gm, wm, brain = (_block_mean(a, 2) for a in (gm, wm, brain))
        # Block (i, j, k) averages 1 mm voxels 2i..2i+1: its centre sits half a voxel further.
        scale = np.diag([2.0, 2.0, 2.0, 1.0])
        scale[:3, 3] = 0.5
        affine = affine @ scale
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    voxel = float(resolution_mm)
    inside = brain >= 0.5
    surface_distance = ndimage.distance_transform_edt(inside) * voxel
    ventricles = (csf > 0.5) & (surface_distance > 20.0)
    labels, n = ndimage.label(ventricles)
    if n:
        sizes = np.bincount(labels.ravel()) * voxel**3
        sizes[0] = 0
        ventricles = np.isin(labels, np.flatnonzero(sizes >= 1000.0))
    ventricle_distance = ndimage.distance_transform_edt(~ventricles) * voxel
    arrays = dict(
        gm=gm, wm=wm, csf=csf, brain=brain, ventricles=ventricles,
        ventricle_distance_mm=ventricle_distance.astype(np.float32),
        surface_distance_mm=surface_distance.astype(np.float32),
        tissue_stack=np.ascontiguousarray(np.stack([gm, wm, brain], axis=-1)),
    )
    for value in arrays.values():
        value.flags.writeable = False
    affine.flags.writeable = False
    return TissueAtlas(resolution_mm=resolution_mm, affine=affine, **arrays)
