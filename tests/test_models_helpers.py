"""Shared, cached test data for the ``test_models_*`` modules (no tests here).

A tiny synthetic cohort is generated once per test session into a temporary
directory (three sites: RAS, LPS and an anisotropic LAS site without brain
masks, so both mask paths are exercised) and reused by every module.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

TINY_SEED = 7
TINY_SITES = 3


@functools.lru_cache(maxsize=None)
def tiny_cohort() -> Path:
    """Root of a 3-site tiny cohort (generated on first use, removed at exit)."""
    from models import generate_cohort

    root = Path(tempfile.mkdtemp(prefix="models-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate_cohort(root / "cohort", sites=TINY_SITES, scale="tiny", seed=TINY_SEED)
    return root / "cohort"


@functools.lru_cache(maxsize=None)
def tiny_sites(image_size: int = 64):
    """The tiny cohort loaded at ``image_size`` (dict site name -> SiteData)."""
    from models import load_cohort

    return load_cohort(tiny_cohort(), image_size=image_size)


def ellipsoid_volume(shape=(40, 48, 36), centre=None, radii=(14.0, 18.0, 12.0), value=100.0) -> np.ndarray:
    """A bright ellipsoid 'brain' on a zero background (float32)."""
    centre = np.asarray(centre if centre is not None else [(n - 1) / 2 for n in shape])
    grid = np.indices(shape, dtype=np.float32)
    rho = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    return np.where(rho <= 1.0, value, 0.0).astype(np.float32)


def blur_reconstruction(batch: np.ndarray) -> np.ndarray:
    """A stand-in 'autoencoder': a Gaussian blur of each slice (keeps anatomy, loses detail)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(batch, sigma=(0, 0, 2.0, 2.0)).astype(np.float32)
