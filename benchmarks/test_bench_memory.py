"""Peak memory of reading and preprocessing one large valid volume (issue 18).

A synthetic brain-like float32 volume of ``SECAGG_BENCH_VOLUME`` voxels per axis
(default 448, the issue's case: 448^3 float32 = 343 MiB, a few hundred KiB
gzipped) is written once; a fresh subprocess then imports everything, notes its
resident set size, runs :func:`models.load_nifti` and
:func:`models.preprocess_volume` (brain mask derived, the heavier path) and
reads its peak RSS from ``resource.getrusage``. The figure reported is

    multiple = (peak RSS - RSS before loading) / (voxels x 4 bytes)

i.e. how many float32 copies of the volume the pipeline held at its worst.
Before issue 18 the same 448^3 volume peaked at 4,957 MiB (14.4 volumes);
the bound asserted here is :data:`MAX_MULTIPLE`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nibabel")
pytest.importorskip("scipy")

from models import save_nifti  # noqa: E402

from .conftest import record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Largest accepted peak, in float32 copies of the volume.
MAX_MULTIPLE = 5.0

_CHILD = r"""
import json, resource, sys
import numpy as np
import scipy.ndimage, nibabel  # noqa: F401  (imported before the baseline is taken)
from models.nifti import load_nifti
from models.preprocess import PreprocessConfig, preprocess_volume

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

before = rss()
volume = load_nifti(sys.argv[1])
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
result = preprocess_volume(volume, config=PreprocessConfig(image_size=128))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak_load": after_load, "peak": peak,
                  "voxels": int(volume.data.size), "slices": int(result.n_slices)}))
"""


def _brain_volume(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A skull-stripped-looking float32 volume: an ellipsoid brain of two tissues, 0 outside."""
    axis = (np.arange(n, dtype=np.float32) - (n - 1) / 2) / (0.42 * n)
    x2 = axis[:, None, None] ** 2
    y2 = (axis[None, :, None] / 1.2) ** 2
    z2 = (axis[None, None, :] / 0.95) ** 2
    r2 = x2 + y2 + z2
    data = np.where(r2 < 1.0, np.float32(500.0), np.float32(0.0))
    data[r2 < 0.15] = 700.0  # a brighter core
    voxel = 200.0 / n  # a ~200 mm field whatever n, like a real head scan
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = -100.0
    return data, affine


@pytest.fixture(scope="module")
def large_volume(tmp_path_factory):
    n = int(os.environ.get("SECAGG_BENCH_VOLUME", "448"))
    data, affine = _brain_volume(n)
    path = tmp_path_factory.mktemp("memory") / f"brain-{n}.nii.gz"
    save_nifti(path, data, affine)
    return path, n


def test_peak_rss_of_loading_and_preprocessing_one_volume(benchmark, large_volume):
    path, n = large_volume
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run():
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    figures = benchmark.pedantic(run, rounds=1, iterations=1)
    volume_bytes = figures["voxels"] * 4
    multiple = (figures["peak"] - figures["before"]) / volume_bytes
    load_multiple = (figures["peak_load"] - figures["before"]) / volume_bytes
    benchmark.extra_info.update(
        voxels_per_axis=n, volume_mib=round(volume_bytes / 2**20, 1), gz_kib=round(path.stat().st_size / 1024, 1),
        peak_mib=round(figures["peak"] / 2**20, 1), baseline_mib=round(figures["before"] / 2**20, 1),
        multiple_of_volume=round(multiple, 2), load_multiple_of_volume=round(load_multiple, 2),
        max_multiple=MAX_MULTIPLE,
    )
    record(benchmark, f"load_preprocess_{n}cubed")
    print(f"\n{n}^3 float32 ({volume_bytes / 2**20:.0f} MiB, {path.stat().st_size / 1024:.0f} KiB gzipped): "
          f"peak RSS {figures['peak'] / 2**20:.0f} MiB over a {figures['before'] / 2**20:.0f} MiB baseline = "
          f"{multiple:.2f} x the volume (loading alone {load_multiple:.2f} x)")
    assert multiple <= MAX_MULTIPLE
