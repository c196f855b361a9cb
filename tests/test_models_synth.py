"""Synthetic cohorts: determinism, manifest, site effects, lesion realism."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from models import CohortManifest, ConfigError, DatasetError, generate_cohort, load_nifti
from models.synth import SCALES, site_profiles
from tests.test_models_helpers import TINY_SEED, TINY_SITES, tiny_cohort, tiny_sites


def _arrays(root, manifest):
    out = {}
    for subject in manifest.subjects:
        for rel in (subject.image, subject.brain_mask, subject.lesion_mask):
            if rel:
                out[rel] = np.asanyarray(nib.load(root / rel).dataobj)
    return out


@pytest.mark.slow
def test_same_seed_same_arrays_whatever_the_workers_and_other_seed_differs(tmp_path):
    a = generate_cohort(tmp_path / "a", sites=1, scale="tiny", seed=11)
    b = generate_cohort(tmp_path / "b", sites=1, scale="tiny", seed=11, workers=2)
    c = generate_cohort(tmp_path / "c", sites=1, scale="tiny", seed=12)
    arrays_a, arrays_b, arrays_c = _arrays(a.root, a), _arrays(b.root, b), _arrays(c.root, c)
    assert arrays_a.keys() == arrays_b.keys()
    for rel, array in arrays_a.items():
        assert array.dtype == arrays_b[rel].dtype
        assert array.tobytes() == arrays_b[rel].tobytes(), rel
    assert a.sites == b.sites
    images = [s.image for s in a.subjects]
    assert all(arrays_a[rel].tobytes() != arrays_c[rel].tobytes() for rel in images if rel in arrays_c)
    assert a.sites != c.sites


def test_manifest_describes_the_files():
    root = tiny_cohort()
    manifest = CohortManifest.load(root)
    assert (manifest.seed, manifest.scale, len(manifest.sites)) == (TINY_SEED, "tiny", TINY_SITES)
    sizes = SCALES["tiny"].site_sizes(TINY_SITES)
    for site, (n_healthy, n_pathology) in zip(manifest.sites, sizes):
        assert manifest.count(site=site.name, kind="healthy") == n_healthy == site.n_healthy
        assert manifest.count(site=site.name, kind="pathology") == n_pathology == site.n_pathology
        assert manifest.count(site=site.name, lesion_type="ms") == 2
        assert manifest.count(site=site.name, lesion_type="vascular") == 2
        assert manifest.count(site=site.name, lesion_type="tumour") == 2
    for subject in manifest.subjects:
        assert (root / subject.image).is_file()
        if subject.kind == "pathology":
            assert (root / subject.lesion_mask).is_file() and subject.lesion_volume_ml > 0
            sidecar = json.loads((root / subject.image.replace(".nii.gz", ".json")).read_text())
            assert sidecar["lesion_type"] == subject.lesion_type
    payload = json.loads((root / "cohort.json").read_text())
    assert payload["sites"][0]["gamma"] == manifest.sites[0].gamma


def test_existing_cohort_is_reused_and_a_different_one_refused():
    root = tiny_cohort()
    before = (root / "cohort.json").stat().st_mtime_ns
    again = generate_cohort(root, sites=TINY_SITES, scale="tiny", seed=TINY_SEED)
    assert again.reused and (root / "cohort.json").stat().st_mtime_ns == before
    with pytest.raises(DatasetError, match="different cohort"):
        generate_cohort(root, sites=TINY_SITES, scale="tiny", seed=TINY_SEED + 1)


def test_overwrite_replaces_only_what_it_wrote(tmp_path):
    root = tmp_path / "c"
    (root / "site-1").mkdir(parents=True)
    (root / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="without a matching cohort.json"):
        generate_cohort(root, sites=1, scale="tiny", seed=1)
    manifest = generate_cohort(root, sites=1, scale="tiny", seed=1, overwrite=True)
    assert not manifest.reused and (root / "keep.txt").read_text() == "mine"
    assert (root / manifest.subjects[0].image).is_file()


@pytest.mark.parametrize("kwargs", [{"scale": "huge"}, {"sites": 0}, {"sites": 2.5}, {"seed": -1}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        generate_cohort(tmp_path / "x", **kwargs)


def test_scale_sizes():
    paper = SCALES["paper"].site_sizes(4)
    assert sum(h for h, _ in paper) == 1532 and sum(p for _, p in paper) == 538
    assert len({h for h, _ in paper}) == 4  # unequal sites
    small = SCALES["small"].site_sizes(4)
    assert all(18 <= h <= 40 for h, _ in small)
    # Generator v2: six pathological volumes per tiny site, two of each lesion type (was 2 MS + 2 tumour).
    assert SCALES["tiny"].site_sizes(4) == ((10, 6), (8, 6), (7, 6), (6, 6))
    assert sum(h for h, _ in SCALES["paper"].site_sizes(3)) == 1532


def test_site_acquisition_differs():
    root = tiny_cohort()
    manifest = CohortManifest.load(root)
    codes = []
    for site in manifest.sites:
        image = nib.load(root / next(s.image for s in manifest.subjects if s.site == site.name))
        codes.append("".join(nib.aff2axcodes(image.affine)))
        np.testing.assert_allclose(image.header.get_zooms(), site.voxel_size_mm, rtol=1e-4)
    assert codes == ["RAS", "LPS", "LAS"]
    assert manifest.sites[2].voxel_size_mm[2] > manifest.sites[2].voxel_size_mm[0]  # anisotropic site


def test_site_effects_are_present():
    """Raw scanner units and normalised tissue contrast both differ between sites."""
    root = tiny_cohort()
    manifest = CohortManifest.load(root)
    raw_medians, contrasts = [], []
    for site in manifest.sites:
        healthy = [s for s in manifest.subjects if s.site == site.name and s.kind == "healthy"][:3]
        values = [load_nifti(root / s.image).data for s in healthy]
        raw_medians.append(np.median(np.concatenate([v[v > 0] for v in values])))
    for data in tiny_sites(64).values():
        brain = np.concatenate([v.image[v.brain] for v in data.healthy])
        lo, hi = np.percentile(brain, [10, 90])
        contrasts.append(hi - lo)
    raw_medians, contrasts = np.array(raw_medians), np.array(contrasts)
    assert raw_medians.max() / raw_medians.min() > 1.5, raw_medians
    assert contrasts.max() / contrasts.min() > 1.1, contrasts
    profiles = site_profiles(TINY_SEED, "tiny", TINY_SITES)
    for field in ("gamma", "noise", "bias_amplitude", "gm_ratio", "intensity_scale"):
        assert len({getattr(p, field) for p in profiles}) == TINY_SITES


def test_lesions_are_hyperintense_where_the_masks_say():
    """Inside each ground-truth mask the FLAIR signal exceeds the surrounding tissue.

    Generator v2 makes 30 % of MS plaques and WMH faint (near normal brightness) and puts WMH
    bands beside bright periventricular caps, so for those classes the margin is 5 %, not 15 %."""
    root = tiny_cohort()
    manifest = CohortManifest.load(root)
    for subject in (s for s in manifest.subjects if s.kind == "pathology"):
        image = load_nifti(root / subject.image).data
        lesion = load_nifti(root / subject.lesion_mask).data > 0.5
        assert lesion.any()
        brain = image > 0
        assert not (lesion & ~brain).any(), "lesions lie inside the brain"
        ring = ndimage.binary_dilation(lesion, iterations=2) & ~lesion & brain
        inside, around = np.median(image[lesion]), np.median(image[ring])
        sidecar = json.loads((root / subject.image.replace(".nii.gz", ".json")).read_text())
        levels = [lesion.get("intensity", 2.0) for lesion in sidecar["lesions"]]
        levels += [f["intensity"] for lesion in sidecar["lesions"] for f in lesion.get("foci", [])]
        levels += [lesion["band_intensity"] for lesion in sidecar["lesions"] if "band_intensity" in lesion]
        if subject.lesion_type == "tumour":
            margin = 1.15
        elif min(levels) >= 1.2:  # no faint lesion in this subject
            margin = 1.05
        else:  # faint lesions are near normal brightness by design: not darker than their surroundings
            margin = 0.97
        assert inside > margin * around, (subject.image, inside, around, margin)
        if subject.lesion_type == "tumour":
            # The necrotic core is darker than the enhancing rim around it.
            core = ndimage.binary_erosion(lesion, iterations=2)
            if core.sum() > 5:
                assert np.percentile(image[lesion], 95) > np.percentile(image[core], 20)


def test_healthy_subjects_vary():
    sites = tiny_sites(64)
    first, second = sites["site-1"].healthy[:2]
    n = min(first.n_slices, second.n_slices)
    assert not np.allclose(first.image[:n], second.image[:n])
    assert 0.8 < first.brain.sum() / second.brain.sum() < 1.25
