"""Load run (issue 18): 1,000 sites on SecAgg+ for several rounds, 5% of the sites dropping at every stage.

Each round drives one full session through the real client and server sessions and wire bytes
(:func:`secagg.run_local`): a fresh session and fresh updates per round, and an independent 5% of
the sites still present going silent at each of the five stages (advertise, share, mask,
consistency, unmask), so about 23% are gone by the end of a round. The graph degree and threshold
come from :func:`secagg.find_parameters` for that dropout rate. The benchmark asserts that every
round's decoded sum equals the exact sum of the survivors' clipped inputs within the encoding's
stated bound (``len(survivors) * resolution``), and records the wall time of the run and the
process's peak RSS (``ru_maxrss``) in ``extra_info``. The dropout choice uses a seeded
``numpy`` generator: it picks who is silent in a benchmark, never a key, mask or noise.
"""

from __future__ import annotations

import resource

import numpy as np
import pytest

import secagg
from secagg import STAGES

N_SITES, LENGTH, ROUNDS, DROP_PER_STAGE = 1000, 10_000, 3, 0.05


def _dropouts(rng: np.random.Generator, ids: list[int]) -> dict[str, set[int]]:
    """An independent 5% of the sites still present goes silent at each stage."""
    present, silent = list(ids), {}
    for stage in STAGES:
        chosen = set(rng.choice(present, size=int(round(DROP_PER_STAGE * len(present))), replace=False).tolist())
        silent[stage] = chosen
        present = [i for i in present if i not in chosen]
    return silent


def _load_run() -> dict:
    rng = np.random.default_rng(2026)
    # Cumulative dropout over the five stages: 1 - 0.95^5 ~ 22.6%; ask for parameters that tolerate 25%.
    params = secagg.find_parameters(N_SITES, corrupt_fraction=0.05, dropout_fraction=0.25)
    ids = list(range(1, N_SITES + 1))
    exact_rounds = 0
    survivors = []
    for _ in range(ROUNDS):
        updates = {i: rng.uniform(-1.0, 1.0, size=LENGTH) for i in ids}
        result = secagg.run_local(updates, threshold=params.threshold,
                                  neighbors=None if params.complete else params.degree,
                                  dropouts=_dropouts(rng, ids))
        expected = np.sum([np.clip(updates[i], -1.0, 1.0) for i in sorted(result.survivors)], axis=0)
        error = float(np.max(np.abs(result.aggregate - expected)))
        assert error <= len(result.survivors) * result.resolution, error
        exact_rounds += 1
        survivors.append(len(result.survivors))
    return {"rounds_exact": exact_rounds, "survivors_per_round": survivors, "degree": params.degree,
            "threshold": params.threshold}


@pytest.mark.slow
def test_load_1000_sites_secaggplus_5pct_dropouts_every_stage(benchmark):
    outcome = benchmark.pedantic(_load_run, rounds=1, iterations=1)
    assert outcome["rounds_exact"] == ROUNDS
    # 5% leave at each of advertise, share, mask: ~857 inputs are in the sum (later dropouts still count).
    assert all(N_SITES * 0.8 < s < N_SITES * 0.9 for s in outcome["survivors_per_round"])
    benchmark.extra_info.update(outcome, sites=N_SITES, vector_length=LENGTH, drop_per_stage=DROP_PER_STAGE,
                                peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
