"""Time of the SecAgg+ parameter finder at n = 10,000 (it runs once per session at the coordinator).

Moved here from a timed unit test: speed is measured, never asserted in tests/.
The finder's output is checked by tests/test_params.py.
"""

from __future__ import annotations

import pytest

from secagg import find_parameters

SETTINGS = ((0.05, 0.05), (0.1, 0.1), (1 / 3, 0.1))


@pytest.mark.parametrize("malicious", [False, True], ids=["semi-honest", "malicious"])
def test_bench_find_parameters_n_10000(benchmark, malicious):
    def run():
        return [find_parameters(10_000, corrupt_fraction=cf, dropout_fraction=df, malicious=malicious)
                for cf, df in SETTINGS]

    params = benchmark.pedantic(run, rounds=3, iterations=1)
    assert all(p.threshold <= 10_000 for p in params)
