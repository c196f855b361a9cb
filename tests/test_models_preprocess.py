"""Preprocessing: grid, orientation, normalisation, brain masks, slice selection."""

from __future__ import annotations

import numpy as np
import pytest

from models import ConfigError, NiftiError, PreprocessConfig, PreprocessWarning, derive_brain_mask, preprocess_volume
from models.metrics import dice
from models.nifti import NiftiVolume
from models.preprocess import brain_statistic, otsu_threshold
from tests.test_models_helpers import ellipsoid_volume


def _nifti(data, voxel=2.0, name="vol.nii.gz"):
    from pathlib import Path

    shape = np.array(data.shape)
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = -(shape - 1) / 2 * voxel  # centred on the world origin
    data = np.asarray(data, dtype=np.float32)
    data.flags.writeable = False
    return NiftiVolume(path=Path(name), data=data, affine=affine)


def _brain(shape=(50, 60, 44), value=100.0, voxel=2.0):
    # Semi-axes 60 x 75 x 45 mm whatever the voxel size.
    radii = (30.0 / voxel * 2, 37.5 / voxel * 2, 22.5 / voxel * 2)
    return ellipsoid_volume(shape, radii=radii, value=value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 8},
        {"image_size": 64.5},
        {"field_of_view_mm": 0},
        {"slice_spacing_mm": -1.0},
        {"slice_range": (0.7, 0.3)},
        {"slice_range": (0.0, 1.2)},
        {"slice_range": "central"},
        {"intensity_statistic": "mean"},
        {"clip_max": 1.0},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        PreprocessConfig(**kwargs)


def test_output_shape_spacing_and_display_orientation():
    data = _brain()
    marker = np.zeros_like(data, dtype=bool)
    # A bright blob on the patient's left (x < 0) and anterior (y > 0) side, at mid-height.
    marker[12:16, 40:44, 20:24] = True
    data = np.where(marker, 300.0, data)
    config = PreprocessConfig(image_size=64, slice_range=(0.0, 1.0))
    out = preprocess_volume(_nifti(data), config=config, brain_mask=data > 0)
    assert out.image.shape[1:] == (64, 64) and out.image.dtype == np.float32
    assert out.brain.dtype == np.bool_ and out.brain.shape == out.image.shape
    assert not out.image.flags.writeable
    k, row, col = np.unravel_index(np.argmax(out.image), out.image.shape)
    assert row < 32, "anterior must be at the top"
    assert col < 32, "the patient's left must be on the left (neurological)"
    # grid_affine maps (slice, row, col) to RAS mm: the blob's world position is left/anterior.
    world = out.grid_affine @ np.array([k, row, col, 1.0])
    assert world[0] < 0 and world[1] > 0
    assert out.image[~out.brain].max() == 0.0
    spacing = np.linalg.norm(out.grid_affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [220 / 64] * 3)


def test_fixed_physical_grid_makes_voxel_size_irrelevant():
    """The same 'brain' acquired at 1.5 mm and 3 mm gives (nearly) the same slices."""
    config = PreprocessConfig(image_size=64, slice_range=(0.2, 0.8))
    fine = _brain(shape=(100, 120, 88), voxel=1.5)
    coarse = _brain(shape=(50, 60, 44), voxel=3.0)
    a = preprocess_volume(_nifti(fine, voxel=1.5), config=config, brain_mask=fine > 0)
    b = preprocess_volume(_nifti(coarse, voxel=3.0), config=config, brain_mask=coarse > 0)
    assert abs(a.n_slices - b.n_slices) <= 1
    n = min(a.n_slices, b.n_slices)
    assert dice(a.brain[:n], b.brain[:n]) > 0.93


def test_median_normalisation_is_robust_to_a_bright_lesion():
    rng = np.random.default_rng(0)
    healthy = _brain() * (1 + 0.05 * rng.standard_normal((50, 60, 44))).astype(np.float32)
    brain = healthy > 0
    lesion = np.zeros_like(brain)
    lesion[16:32, 22:40, 14:30] = True  # about 5 % of the brain
    assert 0.02 < lesion.sum() / brain.sum() < 0.08
    sick = np.where(lesion, 3.0 * healthy, healthy)
    for statistic, tolerance in (("median", 0.05), ("p99", None)):
        scale_healthy = brain_statistic(healthy, brain, statistic)
        scale_sick = brain_statistic(sick, brain, statistic)
        change = abs(scale_sick / scale_healthy - 1)
        if tolerance is not None:
            assert change < tolerance  # the median barely moves
        else:
            assert change > 0.5  # the 99th percentile jumps: the lesion would hide itself
    out = preprocess_volume(_nifti(healthy), config=PreprocessConfig(image_size=64), brain_mask=brain)
    assert abs(np.median(out.image[out.brain]) - 1.0) < 0.05


def test_lesion_mask_follows_the_image():
    data = _brain()
    lesion = np.zeros(data.shape, dtype=bool)
    lesion[28:34, 20:26, 20:26] = True
    data = np.where(lesion, 250.0, data)
    out = preprocess_volume(
        _nifti(data), config=PreprocessConfig(image_size=64, slice_range=(0.0, 1.0)),
        brain_mask=data > 0, lesion_mask=lesion,
    )
    assert out.lesion is not None and out.lesion.any()
    assert out.image[out.lesion].mean() > 2.0 * out.image[out.brain & ~out.lesion].mean()
    # Lesion volume is preserved by the area-preserving mask resampling (within 35 %).
    voxel_out = (220 / 64) ** 3
    assert abs(out.lesion.sum() * voxel_out / (lesion.sum() * 8.0) - 1) < 0.35


def test_slice_range_selects_the_central_fraction():
    data = _brain()
    volume = _nifti(data)
    brain = data > 0
    full = preprocess_volume(volume, config=PreprocessConfig(image_size=32, slice_range=(0.0, 1.0)), brain_mask=brain)
    mid = preprocess_volume(volume, config=PreprocessConfig(image_size=32, slice_range=(0.3, 0.7)), brain_mask=brain)
    assert full.brain.any(axis=(1, 2)).all()
    assert abs(mid.n_slices - 0.4 * full.n_slices) <= 1.5
    assert mid.slice_fraction.min() >= 0.3 and mid.slice_fraction.max() <= 0.7
    np.testing.assert_allclose(mid.grid_affine[:3, 0], [0.0, 0.0, 220 / 32])  # slices step along z only


def test_brain_larger_than_the_field_of_view_warns():
    data = _brain()
    with pytest.warns(PreprocessWarning, match="field of view"):
        config = PreprocessConfig(image_size=32, field_of_view_mm=100)
        preprocess_volume(_nifti(data), config=config, brain_mask=data > 0)


def test_empty_or_dark_brains_are_refused():
    data = _brain()
    with pytest.raises(NiftiError, match="brain mask is empty"):
        preprocess_volume(_nifti(data, name="e.nii.gz"), brain_mask=np.zeros(data.shape, bool))
    with pytest.raises(NiftiError, match="expected a positive value") as excinfo:
        preprocess_volume(_nifti(np.zeros_like(data), name="dark.nii.gz"), brain_mask=data > 0)
    assert excinfo.value.path.name == "dark.nii.gz"


def test_otsu_separates_two_modes():
    values = np.concatenate([np.full(1000, 10.0), np.full(500, 100.0)])
    assert 10.0 < otsu_threshold(values) <= 100.0
    assert otsu_threshold(np.full(10, 3.0)) == 3.0


def test_derived_mask_matches_the_true_brain_of_a_synthetic_subject():
    """Skull-stripped FLAIR with dark CSF and Rician noise: the derived mask recovers the brain."""
    from models.atlas import load_atlas
    from models.synth import SCALES, render_subject, site_profiles

    site = site_profiles(1, "tiny", 3)[2]  # the site that ships no brain masks
    subject = render_subject(load_atlas(2), site, SCALES["tiny"], np.random.default_rng(5), "tumour")
    derived = derive_brain_mask(subject.image.astype(np.float32), site.voxel_size_mm)
    assert dice(derived, subject.brain.astype(bool)) > 0.95
