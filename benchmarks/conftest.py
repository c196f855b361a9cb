"""Shared fixtures for the benchmark suites, and a ratio report at the end of the run.

Each benchmark records its median under a name in ``MEDIANS``; the terminal
summary prints ours/floor ratios (floors measured in the same run) and writes
them to ``$RESULTS/ratios.json`` (default ``results/``), never into the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MEDIANS: dict[str, float] = {}

# (label, numerator, denominator or a constant in seconds, note)
RATIOS = [
    ("client masking m=1e6, k=10 / (k+1) AES-CTR floor masks", "client_mask_1m_k10", ("floor_keystream_1m", 11),
     "target <= 3x"),
    ("server unmask n=50, m=1e6, 10% dropped / 27 s peer", "server_unmask_n50_1m", 27.0, "target <= 1/20"),
    ("server unmask n=50, m=1e6 / plain numpy sum of 45 vectors", "server_unmask_n50_1m", ("floor_numpy_sum_45x1m", 1),
     "mask removal on top of the unavoidable sum"),
    ("DP-SGD step (CSPRNG noise) / non-private step", "step_dp_sgd_csprng_b16_64px",
     ("step_non_private_b16_64px", 1), "target <= 2.5x"),
    ("DP-SGD step (torch RNG) / non-private step", "step_dp_sgd_torch_rng_b16_64px",
     ("step_non_private_b16_64px", 1), "Opacus as shipped"),
]


def record(benchmark, name: str) -> None:
    MEDIANS[name] = benchmark.stats.stats.median


def pytest_terminal_summary(terminalreporter):
    if not MEDIANS:
        return
    lines, report = [], {"medians_s": dict(MEDIANS), "ratios": {}}
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
    terminalreporter.section("secagg ratios")
    for name, value in sorted(MEDIANS.items()):
        terminalreporter.write_line(f"median {name}: {value * 1000:.2f} ms")
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(os.environ.get("RESULTS", "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ratios.json").write_text(json.dumps(report, indent=2))
