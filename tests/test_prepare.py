"""``secagg data prepare``: registration recovers a known affine distortion, N4 removes a known bias field,
sidecars, resume and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("SimpleITK")
pytest.importorskip("nilearn")

import nibabel as nib  # noqa: E402

from models import generate_cohort, save_nifti  # noqa: E402
from models.prepare import PrepareOptions, prepare_scan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
THETA = np.deg2rad(8.0)
DISTORTION = np.array([[np.cos(THETA), -np.sin(THETA), 0, 6.0], [np.sin(THETA), np.cos(THETA), 0, -4.0],
                       [0, 0, 1, 3.0], [0, 0, 0, 1]])


def _log_bias(world: np.ndarray) -> np.ndarray:
    return 0.2 * np.sin(world[:, 0] / 60.0) + 0.15 * np.cos(world[:, 1] / 80.0)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A synthetic subject (3 mm, RAS) and the same voxels under a known affine distortion and bias field."""
    root = tmp_path_factory.mktemp("prepare")
    manifest = generate_cohort(root / "cohort", sites=1, scale="tiny", seed=5)
    source = root / "cohort" / next(s.image for s in manifest.subjects if s.kind == "healthy")
    image = nib.load(source)
    data = np.asarray(image.dataobj, dtype=np.float32)
    world = nib.affines.apply_affine(image.affine, np.indices(data.shape).reshape(3, -1).T)
    bias = np.exp(_log_bias(world)).reshape(data.shape)
    original = save_nifti(root / "in" / "orig.nii.gz", data, image.affine)
    distorted = save_nifti(root / "in" / "dist.nii.gz", (data * bias).astype(np.float32),
                           DISTORTION @ image.affine)
    return root, original, distorted


def _template_brain():
    from nilearn.datasets import load_mni152_brain_mask

    mask = load_mni152_brain_mask(resolution=2)
    return np.asarray(mask.get_fdata()) > 0.5, mask.affine


def test_prepare_recovers_a_known_affine_distortion_and_bias_field(scans):
    root, original, distorted = scans
    s0 = prepare_scan(original, root / "out" / "orig.nii.gz")
    s1 = prepare_scan(distorted, root / "out" / "dist.nii.gz")
    t0, t1 = (np.array(s["transform_template_to_source_ras"]) for s in (s0, s1))
    mask, affine = _template_brain()
    points = nib.affines.apply_affine(affine, np.argwhere(mask))
    # The distorted scan's world is DISTORTION applied to the original's: expect T1 = DISTORTION @ T0.
    error = np.linalg.norm(nib.affines.apply_affine(t1, points)
                           - nib.affines.apply_affine(DISTORTION @ t0, points), axis=1)
    # Stated tolerance (3 mm source voxels, 2 mm template): mean <= 2.5 mm, worst brain point <= 5 mm.
    assert error.mean() <= 2.5 and error.max() <= 5.0, (error.mean(), error.max())
    # N4: the known log-bias no longer explains the ratio of the two prepared volumes (slope ~ 0),
    # while without N4 it does (the check has teeth).
    a = nib.load(root / "out" / "orig.nii.gz").get_fdata()
    idx = np.argwhere(mask)
    known = _log_bias(nib.affines.apply_affine(t0, points))

    def slope(path):
        b = nib.load(path).get_fdata()
        av, bv = a[tuple(idx.T)], b[tuple(idx.T)]
        ok = (av > 0.3) & (bv > 0.3)
        return np.polyfit(known[ok], np.log(bv[ok] / av[ok]), 1)[0]

    assert abs(slope(root / "out" / "dist.nii.gz")) < 0.15
    prepare_scan(distorted, root / "out" / "dist-raw.nii.gz", PrepareOptions(n4=False))
    assert slope(root / "out" / "dist-raw.nii.gz") > 0.25
    # Output: the template grid, skull-stripped by its mask, brain median 1.
    out = nib.load(root / "out" / "orig.nii.gz")
    np.testing.assert_allclose(out.affine, affine)
    data = out.get_fdata()
    assert not data[~mask].any() and np.median(data[mask & (data > 0)]) == pytest.approx(1.0)
    assert s1["steps"] == ["reorient", "n4", "register", "skull_strip", "normalise"]
    assert set(s1["seconds"]) == {"load", "n4", "register"}
    assert json.loads((root / "out" / "dist.json").read_text())["source_sha256"] == s1["source_sha256"]


def secagg_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


def test_prepare_cli_is_resumable_and_parallel(scans):
    root, _, _ = scans
    fast = ("--no-register", "--no-skull-strip")
    out = root / "cli-out"
    code, stdout, stderr = secagg_cli("data", "prepare", str(root / "in"), "--out", str(out), "--workers", "2",
                                      *fast, "--json")
    assert code == 0, stderr
    assert sorted(Path(p).name for p in json.loads(stdout)["prepared"]) == ["dist.nii.gz", "orig.nii.gz"]
    sidecar = json.loads((out / "orig.json").read_text())
    assert sidecar["steps"] == ["reorient", "n4", "normalise"] and sidecar["transform_template_to_source_ras"] is None
    code, stdout, _ = secagg_cli("data", "prepare", str(root / "in"), "--out", str(out), *fast, "--json")
    again = json.loads(stdout)
    assert again["prepared"] == [] and len(again["skipped"]) == 2  # resumed: nothing redone
    code, stdout, _ = secagg_cli("data", "prepare", str(root / "in"), "--out", str(out), *fast, "--no-n4", "--json")
    assert len(json.loads(stdout)["prepared"]) == 2  # other options: redone
    code, _, stderr = secagg_cli("data", "prepare", str(root / "nothing"), "--out", str(out))
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "no such file" in stderr
    code, _, stderr = secagg_cli("data", "prepare", str(root / "in"), "--out", str(out), "--no-register")
    assert code == 2 and "needs the registration step" in stderr


# -- back to the input's space ---------------------------------------------------------------------


def _lps_source(shape=(30, 32, 26)):
    """An LPS-stored 3 mm grid (as DICOM-derived scans often are) and a 2 mm RAS 'prepared' grid."""
    source = np.array([[-3.0, 0, 0, 45.0], [0, -3.0, 0, 48.0], [0, 0, 3.0, -39.0], [0, 0, 0, 1]])
    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    grid[:3, 3] = [-40.0, -44.0, -36.0]
    return shape, source, grid


def test_to_source_space_reads_the_prepared_grid_through_the_inverse_transform():
    """Input voxel v gets the prepared map at P^-1 T^-1 A v (checked against scipy, which shares no code):
    exactly inside the grid, trilinear; nearest neighbour keeps labels; 0 outside the prepared grid."""
    from scipy import ndimage

    from models.prepare import to_source_space

    shape, source, grid = _lps_source()
    rng = np.random.default_rng(3)
    data = ndimage.gaussian_filter(rng.random((40, 44, 36)), 3).astype(np.float32)
    theta = np.deg2rad(10.0)
    transform = np.array([[np.cos(theta), -np.sin(theta), 0, 5.0], [np.sin(theta), np.cos(theta), 0, -3.0],
                          [0, 0, 1.1, 2.0], [0, 0, 0, 1]])
    out = to_source_space(data, grid, source, shape, transform)
    index = np.linalg.inv(grid) @ np.linalg.inv(transform) @ source
    expected = ndimage.affine_transform(data, index[:3, :3], offset=index[:3, 3], output_shape=shape, order=1,
                                        mode="constant", cval=0.0, prefilter=False)
    points = nib.affines.apply_affine(index, np.indices(shape).reshape(3, -1).T).reshape(*shape, 3)
    inside = np.all((points >= 0) & (points <= np.array(data.shape) - 1), axis=-1)
    assert out.shape == shape and inside.mean() > 0.3 and (~inside).any()
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-5)
    far = np.any((points < -1) | (points > np.array(data.shape)), axis=-1)
    assert far.any() and not out[far].any()
    # The forward transform in place of the inverse reads elsewhere.
    wrong = to_source_space(data, grid, source, shape, np.linalg.inv(transform))
    assert np.abs(wrong[inside] - expected[inside]).max() > 0.05
    labels = (data > np.median(data)).astype(np.float32)
    nearest = to_source_space(labels, grid, source, shape, transform, nearest=True)
    assert set(np.unique(nearest)) <= {0.0, 1.0}
    rounded = np.rint(points[inside]).astype(int)
    np.testing.assert_array_equal(nearest[inside], labels[tuple(rounded.T)])


def test_to_source_space_without_registration_undoes_the_reorientation_exactly():
    """No registration (transform None): the prepared grid is the canonical (RAS) grid of the input, and the
    map comes back in the input's own LPS storage order, voxel for voxel."""
    from models.prepare import to_source_space

    shape, source, _ = _lps_source()
    stored = np.random.default_rng(4).random(shape).astype(np.float32)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(stored, source))
    out = to_source_space(np.asarray(canonical.dataobj), canonical.affine, source, shape, None)
    np.testing.assert_allclose(out, stored, atol=1e-6)
    assert not np.allclose(np.asarray(canonical.dataobj), stored)  # the orders differ: the check has teeth


def test_to_source_space_refuses_a_singular_or_non_finite_transform():
    from models import DatasetError
    from models.prepare import to_source_space

    shape, source, grid = _lps_source()
    for bad in (np.zeros((4, 4)), np.full((4, 4), np.nan), np.eye(3)):
        with pytest.raises(DatasetError, match="not a finite, invertible 4x4"):
            to_source_space(np.zeros((40, 44, 36), np.float32), grid, source, shape, bad)
