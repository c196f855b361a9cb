"""PNG figures are written, well-formed, and matplotlib is optional."""

from __future__ import annotations

import pytest

from models import (
    MissingDependencyError,
    calibrate_threshold,
    intensity_scores,
    plot_detection_examples,
    plot_site_examples,
)
from tests.test_models_helpers import blur_reconstruction, tiny_sites


def _read_png(path):
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def test_site_examples_png(tmp_path):
    path = plot_site_examples(tiny_sites(64), tmp_path / "sites.png")
    image = _read_png(path)
    assert image.shape[0] > 600 and image.shape[1] > 800
    assert image[..., :3].std() > 0.1  # not blank


def test_detection_png(tmp_path):
    site = tiny_sites(64)["site-2"]
    baseline = calibrate_threshold(((intensity_scores(v, median_size=3), v.brain) for v in site.healthy), 0.01)
    path = plot_detection_examples(
        blur_reconstruction, site.pathology, 0.3, tmp_path / "out" / "detection.png",
        per_type=1, median_size=3, baseline_threshold=baseline,
    )
    image = _read_png(path)
    assert image.shape[0] > 500 and image.shape[1] > 300
    # The detection colours (green true positives) appear somewhere.
    rgb = image[..., :3]
    greenish = (rgb[..., 1] > 0.6) & (rgb[..., 0] < 0.5) & (rgb[..., 2] < 0.6)
    assert greenish.sum() > 10


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    import importlib

    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
        return real(name, *args, **kwargs)

    # models imports its optional dependencies through importlib.import_module: matplotlib is absent there.
    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingDependencyError, match=r"pip install secagg\[mri\]"):
        plot_site_examples(tiny_sites(64), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
