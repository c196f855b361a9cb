"""Generator v2: lesion classes match their masks, look-alikes stay outside them, sites differ, seeds fix all."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from models import GENERATOR_VERSION, LESION_TYPES, CohortManifest, load_nifti
from models.atlas import load_atlas
from models.lesions import FAINT_CONTRAST, VascularWMH, lookalike_maps, LOOKALIKE_CHANNELS
from models.synth import SCALES, lesion_counts, render_subject, site_profiles
from tests.test_models_helpers import tiny_cohort, tiny_sites

PROFILES = site_profiles(7, "tiny", 3)


def _render(lesion_type, seed=0, site=0):
    rng = np.random.default_rng(np.random.SeedSequence([seed, site, 99]))
    return render_subject(load_atlas(2), PROFILES[site], SCALES["tiny"], rng, lesion_type)


def test_version_and_lesion_types():
    assert GENERATOR_VERSION == 2
    assert LESION_TYPES == ("ms", "vascular", "tumour")


@pytest.mark.parametrize("lesion_type", LESION_TYPES)
def test_masks_are_exactly_the_rendered_lesion(lesion_type):
    """The mask is 1 exactly where the rendered lesion occupies at least half the voxel, in the brain."""
    for seed in range(3):
        subject = _render(lesion_type, seed, seed % 3)
        assert subject.lesion_occupancy is not None and subject.lesion.any()
        expected = ((subject.lesion_occupancy >= 0.5) & (subject.brain > 0)).astype(np.uint8)
        assert np.array_equal(subject.lesion, expected)
        # The lesion changes the image where the mask is: brighter than the brain's median there.
        assert np.median(subject.image[subject.lesion > 0]) > np.median(subject.image[subject.brain > 0])


def test_vascular_lesions_are_periventricular_band_plus_deep_foci():
    subject = _render("vascular", 1)
    (wmh,) = subject.lesions
    assert isinstance(wmh, VascularWMH) and 1.5 <= wmh.band_mm <= 6.0 and 2 <= len(wmh.foci) <= 12
    volume_ml = subject.lesion.sum() * np.prod(PROFILES[0].voxel_size_mm) / 1000.0
    assert 1.0 < volume_ml < 80.0  # mild to severe small-vessel disease, not a whole hemisphere


def test_faint_lesions_exist_near_normal_brightness():
    levels = []
    for seed in range(8):
        levels += [p.intensity for p in _render("ms", seed).lesions]
    faint = [v for v in levels if FAINT_CONTRAST[0] <= v <= FAINT_CONTRAST[1]]
    assert faint and len(faint) < len(levels)
    assert min(levels) < 1.25 < max(levels)


@pytest.mark.parametrize("lesion_type", [None, *LESION_TYPES])
def test_lookalikes_are_present_and_outside_every_mask(lesion_type):
    for seed in range(3):
        subject = _render(lesion_type, seed, seed % 3)
        visible = subject.lookalike_occupancy > 0.5
        assert visible.any(), "caps, the ventricle outline and the tract are in every subject"
        if subject.lesion is not None:
            assert not (visible & (subject.lesion > 0)).any()
        brain = subject.brain > 0
        # Their brightest part (the caps) is above the brain's median signal, like lesions (their danger).
        assert np.percentile(subject.image[visible & brain], 90) > np.median(subject.image[brain])


def test_lookalike_maps_are_small_periventricular_foci():
    atlas = load_atlas(2)
    maps = lookalike_maps(atlas)
    assert maps.shape == (*atlas.shape, len(LOOKALIKE_CHANNELS))
    for k, name in enumerate(LOOKALIKE_CHANNELS[1:5], start=1):
        volume_ml = float((maps[..., k] > 0.5).sum()) * 8.0 / 1000.0
        assert 0.1 < volume_ml < 3.0, (name, volume_ml)  # foci under ~1 cm across
        assert not (maps[..., k] > 0)[atlas.ventricles].any()  # parenchymal, never inside a ventricle
        assert (maps[..., 0][maps[..., k] > 0.5] <= 6.0).all()  # next to the ventricle


def test_same_seed_same_subject_other_seed_differs():
    a, b, c = _render("vascular", 5), _render("vascular", 5), _render("vascular", 6)
    for field in ("image", "brain", "lesion", "lesion_occupancy", "lookalike_occupancy"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.lesions == b.lesions and a.lookalikes == b.lookalikes
    assert not np.array_equal(a.image, c.image)


def test_every_type_at_every_scale():
    for scale in ("small", "paper"):
        for sites in (1, 4):
            for (_, n_pathology), mix in zip(SCALES[scale].site_sizes(sites), [(0.4, 0.3, 0.3)] * sites):
                counts = lesion_counts(n_pathology, mix)
                assert sum(counts) == n_pathology and min(counts) >= 1
    assert lesion_counts(6, (0.5, 0.3, 0.2)) == [2, 2, 2]


def test_cohort_files_carry_every_class_and_its_mask():
    root = tiny_cohort()
    manifest = CohortManifest.load(root)
    assert manifest.generator_version == GENERATOR_VERSION
    for subject in (s for s in manifest.subjects if s.kind == "pathology"):
        mask = load_nifti(root / subject.lesion_mask).data > 0.5
        assert mask.any(), subject.image


def test_site_shift_exceeds_subject_variation():
    """Normalised healthy intensities differ more between sites than between subjects of one site."""
    samples = {name: [v.image[v.brain] for v in data.healthy] for name, data in tiny_sites(64).items()}
    within = [stats.ks_2samp(s[i], s[j]).statistic
              for s in samples.values() for i in range(len(s)) for j in range(i + 1, len(s))]
    names = list(samples)
    between = [stats.ks_2samp(x, y).statistic for i, a in enumerate(names) for b in names[i + 1:]
               for x in samples[a] for y in samples[b]]
    assert np.mean(between) > 1.3 * np.mean(within), (np.mean(between), np.mean(within))
    upper = [np.percentile(np.concatenate(s), 95) for s in samples.values()]
    assert max(upper) - min(upper) > 0.15, upper  # bright normal tissue at one site ~ a faint lesion at another
