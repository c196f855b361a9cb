"""Hostile files (issue 18): resource limits on the header, a bounded reader, non-regular paths.

Every file is generated in the test (tests/hostile_files.py). Refusals are shown to
come before any large allocation in two ways: the same refusal is raised by
:func:`models.nifti.read_nifti_header`, which reads at most 540 bytes; and a
subprocess whose address space is capped at its current size + 192 MiB (too
little for the 5 GB, 256 MiB or 2^93-byte payloads these files declare or expand
to, as a control allocation proves) gets the typed refusal, not a MemoryError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from models import DatasetError, NiftiError, SkippedFilesWarning, load_site, save_nifti
from models.errors import ConfigError
from models.nifti import VolumeLimits, load_nifti, non_regular_reason, read_nifti_header
from tests.hostile_files import HOSTILE_HEADERS, NON_REGULAR, nifti2_huge_dims, tiny_gz_declaring_5gb
from tests.test_models_helpers import ellipsoid_volume

ROOT = Path(__file__).resolve().parents[1]
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
AFFINE[:3, 3] = [-60.0, -72.0, -54.0]
SHAPE = (40, 48, 36)


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_hostile_header_is_refused_naming_file_and_limit(tmp_path, case):
    generate, fragment = HOSTILE_HEADERS[case]
    path = generate(tmp_path)
    with pytest.raises(NiftiError) as excinfo:
        load_nifti(path)
    assert excinfo.value.path == path and str(path) in str(excinfo.value)
    assert fragment in str(excinfo.value)
    assert len(str(excinfo.value).splitlines()) == 1
    if case != "gzip-bomb":  # the bomb's header is valid: it is stopped by the bounded reader instead
        with pytest.raises(NiftiError, match=fragment.replace(".", r"\.")):
            read_nifti_header(path)
    else:
        assert read_nifti_header(path).nbytes == 32**3


_CAPPED = r"""
import json, resource, sys
import numpy as np
from models.nifti import VolumeLimits, load_nifti

def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

cap = vm_bytes() + (192 << 20)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
results = {}
try:
    np.ones(1 << 30, np.uint8)  # control: 1 GiB must not fit under the cap
    results["control"] = "allocated"
except MemoryError:
    results["control"] = "MemoryError"
huge = VolumeLimits(max_axis=2**62, max_voxels=2**200, max_bytes=2**200)
for name, path, limits in json.loads(sys.argv[1]):
    try:
        load_nifti(path, limits=huge if limits == "huge" else None)
        results[name] = "accepted"
    except Exception as exc:
        results[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(results))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the address-space cap")
def test_refusals_happen_before_allocation_under_an_address_space_cap(tmp_path):
    cases = [(name, str(generate(tmp_path / name)), None) for name, (generate, _) in HOSTILE_HEADERS.items()
             if (tmp_path / name).mkdir() is None]
    # With every limit lifted, the header-only files must still not allocate what they declare:
    # the .nii is checked against its size on disk, the .nii.gz buffer grows only with real bytes.
    (tmp_path / "lifted").mkdir()
    cases.append(("nifti2-lifted", str(nifti2_huge_dims(tmp_path / "lifted")), "huge"))
    cases.append(("5gb-gz-lifted", str(tiny_gz_declaring_5gb(tmp_path / "lifted")), "huge"))
    proc = subprocess.run([sys.executable, "-c", _CAPPED, json.dumps(cases)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert results.pop("control") == "MemoryError"  # the cap is real
    for name, (_, fragment) in HOSTILE_HEADERS.items():
        assert results[name].startswith("NiftiError: ") and fragment in results[name], (name, results[name])
    assert "truncated or corrupt" in results["nifti2-lifted"], results["nifti2-lifted"]
    assert "truncated or corrupt" in results["5gb-gz-lifted"], results["5gb-gz-lifted"]


def test_nifti2_huge_dims_never_overflow(tmp_path):
    path = nifti2_huge_dims(tmp_path)
    lifted = VolumeLimits(max_axis=2**62, max_voxels=2**200, max_bytes=2**200)
    header = read_nifti_header(path, limits=lifted)
    assert header.shape == (2**31, 2**31, 2**31) and header.nbytes == 2**93
    with pytest.raises(NiftiError, match="truncated or corrupt"):
        load_nifti(path, limits=lifted)


@pytest.mark.parametrize("case", sorted(NON_REGULAR))
def test_non_regular_path_is_refused_by_the_reader(tmp_path, case):
    generate, fragment = NON_REGULAR[case]
    path = generate(tmp_path)
    assert fragment in non_regular_reason(path)
    with pytest.raises(NiftiError, match=fragment) as excinfo:
        load_nifti(path)
    assert excinfo.value.path == path


def _write(path, seed=0):
    rng = np.random.default_rng(seed)
    brain = ellipsoid_volume(SHAPE, value=1.0) > 0
    data = np.where(brain, 500.0 + 20.0 * rng.standard_normal(SHAPE), 0.0).astype(np.float32)
    return save_nifti(path, data, AFFINE)


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "hospital"
    _write(root / "healthy" / "sub-01.nii.gz", seed=1)
    _write(root / "healthy" / "sub-02.nii.gz", seed=2)
    return root


@pytest.mark.parametrize("case", sorted(NON_REGULAR))
def test_non_regular_path_in_a_site_strict_refuses_skip_warns(site, case):
    generate, fragment = NON_REGULAR[case]
    path = generate(site / "healthy")
    with pytest.raises(NiftiError, match=fragment) as excinfo:
        load_site(site, image_size=32)
    assert excinfo.value.path == path
    with pytest.warns(SkippedFilesWarning) as record:
        data = load_site(site, image_size=32, skip_invalid=True)
    assert path.name in str(record[0].message) and fragment in str(record[0].message)
    assert [v.name for v in data.healthy] == ["sub-01", "sub-02"]
    assert path in {s.path for s in data.skipped}  # (a symlink loop is two such paths)
    assert data.skipped and all(fragment in s.reason for s in data.skipped)


def test_every_hostile_header_in_a_site_is_skipped_and_counted(site):
    written = {name: generate(site / "healthy") for name, (generate, _) in HOSTILE_HEADERS.items()}
    with pytest.raises(NiftiError):
        load_site(site, image_size=32)
    with pytest.warns(SkippedFilesWarning) as record:
        data = load_site(site, image_size=32, skip_invalid=True)
    message = str(record[0].message)
    assert f"skipped {len(written)} file(s)" in message
    reasons = {s.path.name: s.reason for s in data.skipped}
    for name, path in written.items():
        assert HOSTILE_HEADERS[name][1] in reasons[path.name], (name, reasons)
    assert len(data.healthy) == 2


def test_limits_are_configurable(tmp_path):
    path = tmp_path / "coarse.nii.gz"
    data = np.zeros((16, 16, 16), np.float32)
    data[4:12, 4:12, 4:12] = 1.0
    nib.save(nib.Nifti1Image(data, np.diag([12.0, 12.0, 12.0, 1.0])), path)
    with pytest.raises(NiftiError, match="max_voxel_mm = 10"):
        load_nifti(path)
    assert load_nifti(path, limits=VolumeLimits(max_voxel_mm=20.0)).shape == (16, 16, 16)
    with pytest.raises(NiftiError, match="above the limit max_axis = 15"):
        load_nifti(path, limits=VolumeLimits(max_axis=15, max_voxel_mm=20.0))
    with pytest.raises(NiftiError, match="above the limit max_voxels = 4,095"):
        load_nifti(path, limits=VolumeLimits(max_voxels=4095, max_voxel_mm=20.0))
    with pytest.raises(NiftiError, match="above the limit max_bytes = 16,383"):
        load_nifti(path, limits=VolumeLimits(max_bytes=16383, max_voxel_mm=20.0))
    with pytest.raises(NiftiError, match="float32 is not allowed"):
        load_nifti(path, limits=VolumeLimits(dtypes=("uint8",), max_voxel_mm=20.0))
    fine = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.05, 0.05, 0.05, 1.0])), fine)
    with pytest.raises(NiftiError, match="min_voxel_mm = 0.1"):
        load_nifti(fine)


def test_defaults_are_the_documented_ones():
    limits = VolumeLimits()
    assert (limits.max_axis, limits.max_voxels, limits.max_bytes) == (512, 2**27, 2**30)
    assert (limits.min_voxel_mm, limits.max_voxel_mm) == (0.1, 10.0)
    assert "float32" in limits.dtypes and "complex64" not in limits.dtypes


@pytest.mark.parametrize("values, fragment", [
    ({"max_axis": 0}, "positive integer"),
    ({"max_voxels": 1.5}, "positive integer"),
    ({"min_voxel_mm": -1}, "positive number"),
    ({"min_voxel_mm": 5, "max_voxel_mm": 1}, "exceeds"),
    ({"dtypes": ["complex64"]}, "subset"),
    ({"dtypes": "float32"}, "list of numpy type names"),
    ({"max_axes": 3}, "unknown volume limits"),
])
def test_bad_limits_are_a_config_error(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        VolumeLimits.from_mapping(values)


def test_limits_apply_before_the_cache(site, tmp_path):
    cache = tmp_path / "cache"
    assert load_site(site, image_size=32, cache_dir=cache).cache_misses == 2
    with pytest.raises(NiftiError, match="max_axis = 30"):
        load_site(site, image_size=32, cache_dir=cache, limits=VolumeLimits(max_axis=30))


def test_out_of_memory_on_one_volume_is_a_typed_skip(site, monkeypatch):
    import models.dataset

    real = models.dataset.preprocess_volume

    def oom_for_sub02(volume, **kwargs):
        if volume.path.name == "sub-02.nii.gz":
            raise MemoryError
        return real(volume, **kwargs)

    monkeypatch.setattr(models.dataset, "preprocess_volume", oom_for_sub02)
    with pytest.raises(NiftiError, match="out of memory") as excinfo:
        load_site(site, image_size=32)
    assert excinfo.value.path.name == "sub-02.nii.gz"
    with pytest.warns(SkippedFilesWarning, match="out of memory"):
        data = load_site(site, image_size=32, skip_invalid=True)
    assert [v.name for v in data.healthy] == ["sub-01"]


def test_a_site_of_only_hostile_files_still_raises(tmp_path):
    root = tmp_path / "bad"
    (root / "healthy").mkdir(parents=True)
    for generate, _ in HOSTILE_HEADERS.values():
        generate(root / "healthy")
    with pytest.raises(DatasetError, match="no usable volume"), warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)
        load_site(root, skip_invalid=True)


def test_symlink_to_a_regular_file_is_accepted(site):
    target = site / "healthy" / "sub-02.nii.gz"
    os.symlink(target.name, site / "healthy" / "sub-03.nii.gz")
    assert [v.name for v in load_site(site, image_size=32).healthy] == ["sub-01", "sub-02", "sub-03"]
