"""Anomaly scores, the healthy-data threshold, and the end-to-end evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models import (
    ScoringError,
    as_reconstruct_fn,
    calibrate_threshold,
    dice,
    evaluate,
    intensity_scores,
    median_filter_scores,
    positive_residual,
    score_volume,
    split_healthy,
)
from tests.test_models_helpers import blur_reconstruction, tiny_sites


def test_positive_residual_hand_computed():
    image = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    reconstruction = np.array([[[2.0, 1.0], [3.0, 1.0]]])
    brain = np.array([[[True, True], [True, False]]])
    np.testing.assert_array_equal(positive_residual(image, reconstruction, brain), [[[0.0, 1.0], [0.0, 0.0]]])
    with pytest.raises(ScoringError):
        positive_residual(image, reconstruction[:, :1], brain)


def test_median_filter_removes_specks_and_keeps_blobs():
    scores = np.zeros((9, 12, 12), dtype=np.float32)
    scores[4, 2, 2] = 5.0  # a single hot voxel
    scores[3:6, 6:9, 6:9] = 2.0  # a 3x3x3 lesion
    brain = np.ones_like(scores, dtype=bool)
    brain[:, :, 11] = False
    filtered = median_filter_scores(scores, brain, size=3)
    assert filtered[4, 2, 2] == 0.0
    assert filtered[4, 7, 7] == 2.0
    assert not filtered[:, :, 11].any()
    np.testing.assert_array_equal(median_filter_scores(scores, brain, size=1), np.where(brain, scores, 0))
    with pytest.raises(ScoringError):
        median_filter_scores(scores, brain, size=0)


def test_threshold_gives_about_the_target_fpr_on_unseen_healthy_volumes():
    healthy = tiny_sites(64)["site-1"].healthy
    calibration, held_out = healthy[:5], healthy[5:]
    reconstruct = blur_reconstruction
    for score_maps in (
        lambda vols: [score_volume(v, reconstruct, median_size=3).score for v in vols],
        lambda vols: [intensity_scores(v, median_size=3) for v in vols],
    ):
        threshold = calibrate_threshold(zip(score_maps(calibration), (v.brain for v in calibration)), fpr=0.01)
        assert 0.005 <= threshold.achieved_fpr <= 0.01
        assert threshold.n_voxels == sum(int(v.brain.sum()) for v in calibration)
        unseen = np.concatenate([m[v.brain] for m, v in zip(score_maps(held_out), held_out)])
        assert 0.002 <= np.mean(unseen > threshold.value) <= 0.03


def test_evaluate_reports_model_and_baseline_per_lesion_type():
    site = tiny_sites(64)["site-2"]
    split = split_healthy(site, val_fraction=0.4, seed=0)
    report = evaluate(blur_reconstruction, split.val, site.pathology, fpr=0.01, median_size=3)
    # Generator v2: three lesion types, two volumes each per tiny site.
    assert set(report.model.by_lesion_type) == {"ms", "tumour", "vascular"} == set(report.baseline.by_lesion_type)
    assert report.n_healthy_volumes == len(split.val) and len(report.volumes) == 6
    for method in (report.model, report.baseline):
        m = method.overall
        assert 0.5 < m.auroc <= 1.0 and 0.0 < m.auprc <= 1.0 and m.exact
        assert len(m.dice_per_volume) == m.n_volumes == 6
        assert 0.0 <= m.dice_mean <= 1.0
        assert method.threshold.achieved_fpr <= 0.01
        # The best Dice is an upper bound on the pooled Dice at the operating threshold.
        assert m.best_dice >= m.dice_pooled - 1e-12
    # Bright lesions on FLAIR: the intensity baseline separates them well.
    assert report.baseline.overall.auroc > 0.8
    assert report.baseline.by_lesion_type["tumour"].dice_mean > 0.3
    text = report.summary()
    assert "intensity baseline" in text and "upper bound" in text and "tumour" in text
    assert json.loads(report.to_json())["model"]["overall"]["auroc"] == pytest.approx(report.model.overall.auroc)


def test_a_model_reconstructing_zeros_is_the_intensity_baseline():
    """Residual of a zero reconstruction = the image: model and baseline must agree exactly."""
    site = tiny_sites(64)["site-1"]
    split = split_healthy(site, val_fraction=0.3, seed=1)
    report = evaluate(np.zeros_like, split.val, site.pathology, median_size=3)
    assert report.model.threshold.value == report.baseline.threshold.value
    assert report.model.overall == report.baseline.overall
    # And the pooled best Dice bounds the pooled Dice at the operating point.
    threshold = report.model.threshold.value
    pooled = dice(
        np.concatenate([intensity_scores(v, median_size=3)[v.brain] > threshold for v in site.pathology]),
        np.concatenate([v.lesion[v.brain] for v in site.pathology]),
    )
    assert report.model.overall.dice_pooled == pytest.approx(pooled)
    assert report.model.overall.best_dice >= pooled - 1e-12


def test_torch_models_are_wrapped_and_their_mode_restored():
    site = tiny_sites(64)["site-1"]

    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.scale

    model = Identity()
    model.train()
    reconstruct = as_reconstruct_fn(model, batch_size=7)
    scored = score_volume(site.healthy[0], reconstruct, median_size=3)
    assert model.training
    assert np.abs(scored.reconstruction - site.healthy[0].image).max() < 1e-6
    assert scored.residual.max() < 1e-6


def test_bad_inputs_are_refused():
    site = tiny_sites(64)["site-1"]
    healthy, sick = site.healthy[:2], site.pathology
    with pytest.raises(ScoringError, match="healthy"):
        evaluate(blur_reconstruction, [], sick)
    with pytest.raises(ScoringError, match="no lesion mask"):
        evaluate(blur_reconstruction, healthy, healthy)
    with pytest.raises(ScoringError, match="shape"):
        evaluate(lambda x: x[:, :, :32, :32], healthy, sick)
    with pytest.raises(ScoringError, match="NaN"):
        evaluate(lambda x: np.full_like(x, np.nan), healthy, sick)
    with pytest.raises(ScoringError):
        as_reconstruct_fn(42)


def test_median_size_for_keeps_small_plaques_that_a_3d_median_erases():
    """A 2 x 2-pixel plaque on two slices (~7 mm at 64 x 64) survives the recommended window, not 3 x 3 x 3."""
    from models import ScoringError, median_size_for

    scores = np.zeros((6, 16, 16), dtype=np.float32)
    scores[2:4, 7:9, 7:9] = 1.0
    brain = np.ones_like(scores, dtype=bool)
    assert median_size_for(64) == 1 and median_size_for(32) == 1 and median_size_for(128) == (1, 3, 3)
    kept = median_filter_scores(scores, brain, size=median_size_for(64))
    assert np.array_equal(kept > 0.5, scores > 0.5)
    assert not (median_filter_scores(scores, brain, size=3) > 0.5).any()
    # In-plane 3 x 3 at 128: a 3 x 3-pixel plaque (~5 mm) on one slice keeps its centre.
    plaque = np.zeros((6, 16, 16), dtype=np.float32)
    plaque[2, 7:10, 7:10] = 1.0
    assert median_filter_scores(plaque, brain, size=median_size_for(128))[2, 8, 8] == 1.0
    assert not (median_filter_scores(plaque, brain, size=3) > 0.5).any()
    with pytest.raises(ScoringError):
        median_size_for(0)
