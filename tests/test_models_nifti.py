"""NIfTI reading and writing: round trips, canonical orientation, and typed errors."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from models import NiftiError, load_mask, load_nifti, save_nifti
from models.nifti import is_nifti_path, nifti_stem


def _volume(shape=(20, 24, 16), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32) * 100


AFFINE = np.array([[2.0, 0, 0, -20], [0, 2.0, 0, -24], [0, 0, 3.0, -24], [0, 0, 0, 1]])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_preserves_data_and_affine(tmp_path, suffix):
    data = _volume()
    path = save_nifti(tmp_path / f"a{suffix}", data, AFFINE)
    volume = load_nifti(path)
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, AFFINE)
    assert volume.voxel_size == (2.0, 2.0, 3.0)
    assert volume.data.dtype == np.float32
    assert not volume.data.flags.writeable


def test_int16_storage_with_scaling_reads_as_float(tmp_path):
    data = np.arange(20 * 24 * 16, dtype=np.int16).reshape(20, 24, 16)
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(load_nifti(tmp_path / "scaled.nii.gz").data, data * 0.5 + 10.0)


def test_lps_file_comes_back_ras(tmp_path):
    """The same anatomy stored LPS (x and y flipped) reads as the RAS array."""
    data = _volume()
    save_nifti(tmp_path / "ras.nii.gz", data, AFFINE)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    flip[1, 3] = data.shape[1] - 1
    save_nifti(tmp_path / "lps.nii.gz", data[::-1, ::-1, :], AFFINE @ flip)
    ras, lps = load_nifti(tmp_path / "ras.nii.gz"), load_nifti(tmp_path / "lps.nii.gz")
    np.testing.assert_array_equal(lps.data, ras.data)
    np.testing.assert_allclose(lps.affine, ras.affine)
    assert nib.aff2axcodes(lps.affine) == ("R", "A", "S")


def test_permuted_axes_come_back_ras(tmp_path):
    """Axes stored (y, z, x) are transposed back to (x, y, z)."""
    data = _volume()
    stored = np.transpose(data, (1, 2, 0))
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = 2.0, 3.0, 2.0, 1.0
    save_nifti(tmp_path / "perm.nii.gz", stored, affine)
    np.testing.assert_array_equal(load_nifti(tmp_path / "perm.nii.gz").data, data)


def test_trailing_singleton_axis_is_squeezed(tmp_path):
    data = _volume()
    nib.save(nib.Nifti1Image(data[..., None], AFFINE), tmp_path / "v4.nii.gz")
    assert load_nifti(tmp_path / "v4.nii.gz").shape == data.shape


def _assert_names(excinfo, path, fragment):
    message = str(excinfo.value)
    assert str(path) in message, message
    assert fragment in message, message
    assert excinfo.value.path == path


def test_missing_file(tmp_path):
    path = tmp_path / "absent.nii.gz"
    with pytest.raises(NiftiError) as excinfo:
        load_nifti(path)
    _assert_names(excinfo, path, "does not exist")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_file(tmp_path, suffix):
    good = save_nifti(tmp_path / f"good{suffix}", _volume((40, 40, 40)), AFFINE)
    path = tmp_path / f"truncated{suffix}"
    raw = good.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(NiftiError) as excinfo:
        load_nifti(path)
    _assert_names(excinfo, path, "truncated or corrupt")


@pytest.mark.parametrize(
    "name, payload",
    [
        ("text.nii.gz", b"this is not a nifti file" * 20),
        ("random.nii", os.urandom(600)),
        ("gzipped-noise.nii.gz", gzip.compress(os.urandom(600))),
        ("empty.nii.gz", b""),
    ],
)
def test_non_nifti_bytes(tmp_path, name, payload):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(NiftiError) as excinfo:
        load_nifti(path)
    _assert_names(excinfo, path, "not a readable NIfTI")


def test_wrong_extension_is_refused(tmp_path):
    path = tmp_path / "volume.mgz"
    path.write_bytes(b"x")
    with pytest.raises(NiftiError, match="must end in .nii"):
        load_nifti(path)


def test_four_dimensional_series_is_refused(tmp_path):
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16, 3), np.float32), AFFINE), path)
    with pytest.raises(NiftiError) as excinfo:
        load_nifti(path)
    _assert_names(excinfo, path, "is 4-D")


@pytest.mark.parametrize("shape, fragment", [((64, 64), "is 2-D"), ((64, 64, 3), "too small")])
def test_wrongly_shaped_volumes_are_refused(tmp_path, shape, fragment):
    path = tmp_path / "slab.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), path)
    with pytest.raises(NiftiError) as excinfo:
        load_nifti(path)
    _assert_names(excinfo, path, fragment)


def test_non_finite_voxels_are_refused(tmp_path):
    data = _volume()
    data[3, 4, 5] = np.nan
    path = save_nifti(tmp_path / "nan.nii.gz", data, AFFINE)
    with pytest.raises(NiftiError, match="1 voxels are NaN"):
        load_nifti(path)


def test_singular_affine_is_refused(tmp_path):
    import warnings

    path = tmp_path / "flat.nii.gz"
    image = nib.Nifti1Image(_volume(), AFFINE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel itself warns while writing such a header
        image.set_qform(None, code=0)
        image.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=2)
        nib.save(image, path)
    with pytest.raises(NiftiError, match="singular"):
        load_nifti(path)


def test_mask_must_match_the_image_grid(tmp_path):
    image = load_nifti(save_nifti(tmp_path / "img.nii.gz", _volume(), AFFINE))
    good = save_nifti(tmp_path / "img_mask.nii.gz", (_volume() > 50).astype(np.uint8), AFFINE)
    mask = load_mask(good, image)
    assert mask.dtype == bool and mask.shape == image.shape
    wrong_shape = save_nifti(tmp_path / "bad_mask.nii.gz", np.zeros((20, 24, 15), np.uint8), AFFINE)
    with pytest.raises(NiftiError) as excinfo:
        load_mask(wrong_shape, image)
    _assert_names(excinfo, wrong_shape, "does not match")
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    wrong_grid = save_nifti(tmp_path / "shifted_mask.nii.gz", np.zeros((20, 24, 16), np.uint8), shifted)
    with pytest.raises(NiftiError, match="different grid"):
        load_mask(wrong_grid, image)


def test_probabilistic_mask_is_binarised_at_half(tmp_path):
    image = load_nifti(save_nifti(tmp_path / "img.nii.gz", _volume(), AFFINE))
    soft = np.zeros((20, 24, 16), np.float32)
    soft[0, 0, 0], soft[1, 0, 0], soft[2, 0, 0] = 0.49, 0.5, 0.9
    mask = load_mask(save_nifti(tmp_path / "soft.nii.gz", soft, AFFINE), image)
    assert mask[:3, 0, 0].tolist() == [False, True, True]


def test_error_is_a_value_error_and_picklable(tmp_path):
    import pickle

    error = NiftiError(tmp_path / "x.nii", "broken")
    assert isinstance(error, ValueError)
    clone = pickle.loads(pickle.dumps(error))
    assert clone.path == error.path and clone.reason == "broken" and str(clone) == str(error)


def test_name_helpers():
    assert is_nifti_path("a/B.NII.GZ") and is_nifti_path("x.nii") and not is_nifti_path("x.json")
    assert nifti_stem("dir/sub-01_lesion-ms.nii.gz") == "sub-01_lesion-ms"
    assert nifti_stem("sub.nii") == "sub"
