"""Shared fixtures for the benchmark suites, and a ratio report at the end of the run.

Each benchmark records its median under a name in ``MEDIANS``; the terminal
summary prints ours/floor ratios (floors measured in the same run) and writes
them to ``$RESULTS/ratios.json`` (default ``results/``), never into the repository.
Interleaved (ABAB) measurements (:mod:`benchmarks.paired`) record their ratio directly
with :func:`record_paired`: the median of the paired ratios goes under ``ratios`` and its
quartiles, extremes and number of pairs under ``spread``.

``make bench-quick`` runs only the tests marked ``quick`` (the headline ratios) with
``BENCH_QUICK=1``: the same sizes, fewer timed rounds or pairs (:func:`rounds`), into the
same files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .report import spread_text

QUICK = os.environ.get("BENCH_QUICK") == "1"
MEDIANS: dict[str, float] = {}
PAIRED: dict[str, dict] = {}  # label -> PairedRatio.summary() | {"note": ...}

# (label, numerator, denominator or a constant in seconds, note)
RATIOS = [
    ("client masking m=1e6, k=10 / (k+1) AES-CTR floor masks", "client_mask_1m_k10", ("floor_keystream_1m", 11),
     "target <= 3x"),
    ("client masking m=1e6, k=10, active mode / (k+1) AES-CTR floor masks", "client_mask_1m_k10_active",
     ("floor_keystream_1m", 11), "signed masked input (SHA-256 + Ed25519), issue 14"),
    ("server unmask n=50, m=1e6, 10% dropped / 27 s peer", "server_unmask_n50_1m", 27.0, "target <= 1/20"),
    ("server unmask n=50, m=1e6 / plain numpy sum of 45 vectors", "server_unmask_n50_1m", ("floor_numpy_sum_45x1m", 1),
     "mask removal on top of the unavoidable sum"),
    ("client masking m=1e6, k=10 / Flower SecAgg+ client (same run)", "client_mask_1m_k10",
     ("peer_flower_client_mask_1m_k10", 1), "ours/peer; Flower's figure includes its quantization of the update"),
    ("server unmask n=50, m=1e6, 10% dropped / Flower SecAgg+ server (same run)", "server_unmask_n50_1m",
     ("peer_flower_server_unmask_n50_1m", 1), "ours/peer, target <= 1/20"),
    ("DP-SGD step (CSPRNG noise) / non-private step", "step_dp_sgd_csprng_b16_64px",
     ("step_non_private_b16_64px", 1), "separate blocks, load moves it: see the paired ratio; target <= 2.5x"),
    ("DP-SGD step, patient level (4 patients x 4 slices, CSPRNG) / non-private step",
     "step_dp_sgd_patient_csprng_b16_64px", ("step_non_private_b16_64px", 1), "the default privacy unit"),
    ("DP-SGD step (torch RNG) / non-private step", "step_dp_sgd_torch_rng_b16_64px",
     ("step_non_private_b16_64px", 1), "Opacus as shipped, separate blocks"),
]

# Streaming aggregation at m = 5e7, n = 10 (benchmarks/test_bench_stream.py, slow; peak RSS in extra_info).
RATIOS += [
    ("client masking m=5e7, n=10 / AES-CTR floor of the same 10 masks (same process)", "stream_client_mask_50m",
     ("stream_floor_keystream_50m_x10", 1), "target <= 2x (issue 20)"),
]

# Whole rounds of the scaling grid against Flower's SecAgg+ at the same n, m, dropouts, k and t
# (benchmarks/test_bench_scaling.py and test_bench_peer.py; both slow, both in `make bench`).
RATIOS += [
    (f"scaling {graph} n={n} m={m:.0e} drop={drop}% / Flower SecAgg+ (same run)",
     f"scaling_{graph}_n{n}_m{m}_drop{drop}", (f"peer_flower_scaling_{graph}_n{n}_m{m}_drop{drop}", 1),
     "ours/peer, whole round")
    for graph, sizes in (("complete", (10, 50, 100)), ("secagg+", (50, 100)))
    for n in sizes
    for m in (100_000, 1_000_000)
    for drop in (0, 10)
]

# The HE path against the CKKS setting other FL platforms ship (TenSEAL, N = 8192, [60, 40, 40]).
RATIOS += [
    (f"HE {what} {size} / peer-style CKKS [60,40,40] (same run)", f"he_ours_{what}_{size}",
     (f"he_peer_60_40_40_{what}_{size}", 1), "ours/peer")
    for what in ("encrypt_one_site", "coordinator_sum_10_sites", "decrypt_sum")
    for size in ("100k", "1m")
]


def rounds(full: int, quick: int) -> int:
    """Timed rounds (or pairs): ``full`` in `make bench`, ``quick`` in `make bench-quick`."""
    return quick if QUICK else full


def record(benchmark, name: str) -> None:
    MEDIANS[name] = benchmark.stats.stats.median


def record_paired(benchmark, label: str, name: str, result, note: str, **extra) -> None:
    """An interleaved measurement: each side's median under ``name_a`` / ``name_b``, the paired ratio under label."""
    summary = result.summary()
    MEDIANS[f"{name}_a"], MEDIANS[f"{name}_b"] = summary["a_median_s"], summary["b_median_s"]
    PAIRED[label] = summary | {"note": note}
    benchmark.extra_info.update(summary, **extra)


def pytest_terminal_summary(terminalreporter):
    if not MEDIANS:
        return
    lines, report = [], {"medians_s": dict(MEDIANS), "ratios": {}, "spread": {}}
    for label, num, den, note in RATIOS:
        if num not in MEDIANS:
            continue
        if isinstance(den, tuple):
            if den[0] not in MEDIANS:
                continue
            denominator = MEDIANS[den[0]] * den[1]
        else:
            denominator = den
        ratio = MEDIANS[num] / denominator
        report["ratios"][label] = ratio
        lines.append(f"{label}: {ratio:.3f}  ({note})")
    for label, s in PAIRED.items():
        report["ratios"][label] = s["median"]
        report["spread"][label] = {k: s[k] for k in ("q1", "q3", "min", "max", "pairs")}
        lines.append(f"{label}: {s['median']:.3f} ({spread_text(s)})  ({s['note']})")
    terminalreporter.section("secagg ratios")
    for name, value in sorted(MEDIANS.items()):
        terminalreporter.write_line(f"median {name}: {value * 1000:.2f} ms")
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(os.environ.get("RESULTS", "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ratios.json").write_text(json.dumps(report, indent=2))
