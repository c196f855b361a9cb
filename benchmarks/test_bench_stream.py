"""Large models, streaming masking: m = 50,000,000, n = 10 (complete graph, 32-bit ring).

Each figure comes from a fresh subprocess (:mod:`benchmarks.stream_probe`), so one
measurement's allocations never inflate another's peak:

* client: time to answer the masked-input request (masking), against the AES-CTR floor
  measured in the same process (``cryptography`` alone producing the same n * m * 4
  keystream bytes); target ratio <= 2x (issue 20). Peak RSS above the process's baseline,
  update included, in MiB and in vectors (one vector = m * 4 bytes = 200 MB).
* server: 9 masked inputs received (one client dropped out before masking), then the
  unmasking time (self masks of 9 survivors, pairwise masks of the dropped one); peak RSS
  above the baseline over receiving and unmasking.
* HE (``tenseal`` installed): the site's encryption, the coordinator's sum of 10 uploads and
  the key holder's decryption at m = 1,000,000, with peak RSS; the 50M figure in
  :mod:`secagg.he.config` is this one scaled linearly (stated as such there).

Slow (about a minute each on two cores): `make bench` only, never `make bench-quick`.
The probe uses only the public API, so ``PYTHONPATH=<other checkout> python
benchmarks/stream_probe.py client 50000000 10 32`` measures another version (the
"before" figures of issue 20 were taken that way).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MEDIANS

M, N, BITS = 50_000_000, 10, 32
PROBE = Path(__file__).with_name("stream_probe.py")


def _probe(role: str, m: int = M) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(PROBE), role, str(m), str(N), str(BITS)], env=env,
                          capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run(benchmark, role: str, m: int = M) -> dict:
    figures = benchmark.pedantic(_probe, args=(role, m), rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(figures)
    return figures


@pytest.mark.slow
def test_stream_client_50m(benchmark):
    figures = _run(benchmark, "client")
    MEDIANS["stream_client_mask_50m"] = figures["mask_s"]
    MEDIANS["stream_floor_keystream_50m_x10"] = figures["floor_s"]
    benchmark.extra_info["paired_ratio_median"] = figures["ratio"]


@pytest.mark.slow
def test_stream_server_50m(benchmark):
    figures = _run(benchmark, "server")
    MEDIANS["stream_server_unmask_50m"] = figures["unmask_s"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tenseal") is None, reason="tenseal (the he extra) not installed")
def test_stream_he_1m(benchmark):
    figures = _run(benchmark, "he", 1_000_000)
    MEDIANS["stream_he_site_encrypt_1m"] = figures["site_encrypt_s"]
