"""One Opacus DP-SGD step of each compact model on 16 slices of 64 x 64 (the CPU demo's budget: well
under 100 ms), measured with :func:`models.measure_cost` (best of its repeats, per thread count)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from models import available_models, measure_cost  # noqa: E402

from .conftest import record  # noqa: E402

COMPACT = [name for name in available_models() if name.startswith("compact")]


@pytest.mark.parametrize("name", COMPACT)
@pytest.mark.parametrize("threads", [1, 2])
def test_compact_dp_step(benchmark, name, threads):
    cost = benchmark.pedantic(measure_cost, args=(name,),
                              kwargs={"image_size": 64, "batch_size": 16, "private": True, "repeats": 3,
                                      "threads": threads}, rounds=1, iterations=1)
    benchmark.extra_info.update(step_ms=cost.step_ms, threads=threads, target_ms=100.0)
    record(benchmark, f"dp_step_{name}_{threads}threads")
