"""Site layout discovery, typed errors, skip_invalid, caching, splits."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from models import (
    DatasetError,
    NiftiError,
    SkippedFilesWarning,
    load_cohort,
    load_site,
    save_nifti,
    split_healthy,
    training_array,
)
from tests.test_models_helpers import ellipsoid_volume, tiny_cohort, tiny_sites

AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
AFFINE[:3, 3] = [-60.0, -72.0, -54.0]
SHAPE = (40, 48, 36)


def _write(path, seed=0, lesion=False, brainmask=False, sidecar=None):
    rng = np.random.default_rng(seed)
    brain = ellipsoid_volume(SHAPE, value=1.0) > 0
    data = np.where(brain, 500.0 + 20.0 * rng.standard_normal(SHAPE), 0.0).astype(np.float32)
    stem = path.name.removesuffix(".nii.gz")
    if lesion:
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[18:23, 22:27, 16:20] = 1
        data = np.where(mask > 0, 1000.0, data)
        save_nifti(path.with_name(stem + "_mask.nii.gz"), mask, AFFINE)
    if brainmask:
        save_nifti(path.with_name(stem + "_brainmask.nii.gz"), brain.astype(np.uint8), AFFINE)
    if sidecar is not None:
        path.with_name(stem + ".json").write_text(json.dumps(sidecar))
    return save_nifti(path, data, AFFINE)


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "hospital-a"
    _write(root / "healthy" / "sub-01.nii.gz", seed=1, brainmask=True)
    _write(root / "healthy" / "sub-02.nii.gz", seed=2)
    _write(root / "healthy" / "sub-03.nii.gz", seed=3)
    _write(root / "pathology" / "sub-10.nii.gz", seed=10, lesion=True, sidecar={"lesion_type": "tumour"})
    _write(root / "pathology" / "sub-11_lesion-ms.nii.gz", seed=11, lesion=True, brainmask=True)
    (root / "healthy" / "notes.txt").write_text("not an image")
    return root


def test_load_site_follows_the_layout(site):
    data = load_site(site, image_size=32, slice_range=(0.2, 0.8))
    assert data.name == "hospital-a"
    assert [v.name for v in data.healthy] == ["sub-01", "sub-02", "sub-03"]
    assert [v.name for v in data.pathology] == ["sub-10", "sub-11_lesion-ms"]
    assert [v.lesion_type for v in data.pathology] == ["tumour", "ms"]  # sidecar, then name entity
    assert data.lesion_types == ("ms", "tumour")
    for volume in data.healthy + data.pathology:
        assert volume.image.shape[1:] == (32, 32) and volume.image.dtype == np.float32
        assert volume.brain.shape == volume.image.shape
    assert all(v.lesion is None for v in data.healthy)
    assert all(v.lesion is not None and v.lesion.any() for v in data.pathology)
    assert data.config.image_size == 32 and data.skipped == ()


def test_missing_empty_or_unstructured_sites(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_site(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DatasetError, match="healthy/"):
        load_site(tmp_path / "flat")
    (tmp_path / "empty" / "healthy").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no NIfTI images"):
        load_site(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no site directories"):
        load_cohort(tmp_path / "flat")


def test_pathology_without_ground_truth(site):
    lonely = _write(site / "pathology" / "sub-12.nii.gz", seed=12)
    with pytest.raises(DatasetError, match="without its ground-truth mask") as excinfo:
        load_site(site, image_size=32)
    assert str(lonely) in str(excinfo.value)


def _corrupt_files(site):
    healthy = site / "healthy"
    raw = (healthy / "sub-02.nii.gz").read_bytes()
    (healthy / "sub-04-truncated.nii.gz").write_bytes(raw[: len(raw) // 3])
    (healthy / "sub-05-text.nii.gz").write_bytes(b"definitely not nifti" * 30)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE + (2,), np.float32), AFFINE), healthy / "sub-06-series.nii.gz")
    save_nifti(healthy / "sub-07_brainmask.nii.gz", np.ones(SHAPE, np.uint8), AFFINE)  # orphan
    save_nifti(healthy / "sub-01-copy.nii.gz", np.ones(SHAPE, np.float32), AFFINE)
    save_nifti(healthy / "sub-01-copy_brainmask.nii.gz", np.ones((40, 48, 30), np.uint8), AFFINE)  # wrong shape
    return {
        "sub-04-truncated.nii.gz": "truncated",
        "sub-05-text.nii.gz": "not a readable NIfTI",
        "sub-06-series.nii.gz": "4-D",
        "sub-07_brainmask.nii.gz": "mask without an image",
        "sub-01-copy.nii.gz": "does not match",
    }


def test_invalid_files_raise_naming_the_file(site):
    _corrupt_files(site)
    with pytest.raises(NiftiError) as excinfo:
        load_site(site, image_size=32)
    assert excinfo.value.path.name in {"sub-04-truncated.nii.gz", "sub-05-text.nii.gz", "sub-06-series.nii.gz",
                                       "sub-01-copy_brainmask.nii.gz"}


def test_skip_invalid_warns_and_skips(site):
    expected = _corrupt_files(site)
    with pytest.warns(SkippedFilesWarning) as record:
        data = load_site(site, image_size=32, skip_invalid=True)
    message = str(record[0].message)
    for name, reason in expected.items():
        assert name in message and reason in message, (name, message)
    assert [v.name for v in data.healthy] == ["sub-01", "sub-02", "sub-03"]
    assert {s.path.name for s in data.skipped} == set(expected)


def test_all_invalid_still_raises(tmp_path):
    site = tmp_path / "bad"
    (site / "healthy").mkdir(parents=True)
    (site / "healthy" / "a.nii.gz").write_bytes(b"junk" * 100)
    with pytest.raises(DatasetError, match="no usable volume"), warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)
        load_site(site, skip_invalid=True)


def test_malformed_sidecar(site):
    (site / "pathology" / "sub-10.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable JSON sidecar"):
        load_site(site, image_size=32)


def test_cache_hits_on_second_load_and_misses_after_a_change(site, tmp_path):
    cache = tmp_path / "cache"
    first = load_site(site, image_size=32, cache_dir=cache)
    assert (first.cache_hits, first.cache_misses) == (0, 5)
    second = load_site(site, image_size=32, cache_dir=cache)
    assert (second.cache_hits, second.cache_misses) == (5, 0)
    for a, b in zip(first.healthy + first.pathology, second.healthy + second.pathology):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.brain, b.brain)
        assert a.lesion_type == b.lesion_type and a.name == b.name
        if a.lesion is not None:
            np.testing.assert_array_equal(a.lesion, b.lesion)
    # New content (same name) and new parameters both miss.
    _write(site / "healthy" / "sub-02.nii.gz", seed=99)
    third = load_site(site, image_size=32, cache_dir=cache)
    assert (third.cache_hits, third.cache_misses) == (4, 1)
    entries_32 = sorted(cache.rglob("*.npz"))
    assert load_site(site, image_size=48, cache_dir=cache).cache_hits == 0
    # A corrupt entry is a miss, then rewritten.
    entries_32[0].write_bytes(b"garbage")
    fourth = load_site(site, image_size=32, cache_dir=cache)
    assert fourth.cache_misses == 1 and fourth.cache_hits == 4
    assert not any(p.suffix == ".tmp" for p in cache.rglob("*"))


def test_split_is_by_subject_and_deterministic(site):
    data = load_site(site, image_size=32)
    split = split_healthy(data, val_fraction=0.34, seed=3)
    assert len(split.val) == 1 and len(split.train) == 2
    assert {v.name for v in split.train}.isdisjoint({v.name for v in split.val})
    again = split_healthy(data, val_fraction=0.34, seed=3)
    assert [v.name for v in again.val] == [v.name for v in split.val]
    seen = {split_healthy(data, val_fraction=0.34, seed=s).val[0].name for s in range(12)}
    assert len(seen) > 1
    with pytest.raises(ValueError):
        split_healthy(data, val_fraction=1.0)
    with pytest.raises(DatasetError, match="at least 2"):
        split_healthy(data.healthy[:1])
    x = training_array(split.train)
    assert x.shape == (sum(v.n_slices for v in split.train), 1, 32, 32) and x.dtype == np.float32
    assert x.flags.c_contiguous and x.flags.writeable


def test_tiny_cohort_loads_through_the_same_path():
    sites = tiny_sites(64)
    assert list(sites) == ["site-1", "site-2", "site-3"]
    for data in sites.values():
        assert data.lesion_types == ("ms", "tumour", "vascular")  # generator v2 adds vascular WMH
        assert len(data.healthy) >= 6 and len(data.pathology) == 6
        assert all(v.lesion_voxels > 0 for v in data.pathology)
        # Normalised intensities: brain median 1 whatever the scanner's units.
        values = np.concatenate([v.image[v.brain] for v in data.healthy])
        assert abs(np.median(values) - 1.0) < 0.05
    assert not any(p.name.endswith("_brainmask.nii.gz") for p in (tiny_cohort() / "site-3").rglob("*"))


def test_cache_entries_and_folders_are_owner_only_whatever_the_umask(site, tmp_path):
    """Entries are patient data (issue 21): folders 0700, entries 0600, even under umask 000."""
    import os
    import stat

    cache = tmp_path / "deep" / "cache"
    previous = os.umask(0)
    try:
        load_site(site, image_size=32, cache_dir=cache)
    finally:
        os.umask(previous)
    made = [tmp_path / "deep", *(tmp_path / "deep").rglob("*")]
    assert any(p.suffix == ".npz" for p in made)
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)}
    assert not wrong, wrong
