"""``simulation.experiment.parallel``: units over spawned processes, results in order, one torch thread each.

The end-to-end check that an experiment's numbers do not depend on ``--jobs`` is
``tests/test_experiment.py::test_same_seed_same_metrics_and_different_seeds_differ``.
"""

import os

import pytest

torch = pytest.importorskip("torch")

from simulation.experiment.parallel import default_jobs, run_units, single_torch_thread  # noqa: E402
from tests.parallel_units import fail_on, unit_report, wait_for_parent  # noqa: E402


def test_results_come_back_in_unit_order_with_their_logs_from_other_processes():
    lines = []
    units = [(i,) for i in range(5)]
    out = run_units(unit_report, units, jobs=2, log=lines.append)
    assert [o["value"] for o in out] == [0, 1, 4, 9, 16]
    assert all(o["threads"] == 1 for o in out)  # one torch thread in every worker
    assert {o["pid"] for o in out} - {os.getpid()}  # really elsewhere
    assert os.getpid() not in {o["pid"] for o in out}
    assert sorted(lines) == sorted(f"unit {i} done" for i in range(5))


def test_one_job_runs_here_on_one_thread_and_restores_the_callers_threads():
    before = torch.get_num_threads()
    lines = []
    out = run_units(unit_report, [(3,), (4,)], jobs=1, log=lines.append)
    assert [o["pid"] for o in out] == [os.getpid()] * 2 and all(o["threads"] == 1 for o in out)
    assert lines == ["unit 3 done", "unit 4 done"]  # logged as they go, in order
    assert torch.get_num_threads() == before


def test_a_failing_unit_raises_its_own_error_in_the_caller():
    with pytest.raises(ValueError, match="unit 2 refused"):
        run_units(fail_on, [(i, 2) for i in range(4)], jobs=2, log=lambda line: None)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_units(fail_on, [(0, 2)], jobs=0, log=lambda line: None)


def test_default_jobs_is_one_per_cpu_and_never_more_than_the_units():
    assert default_jobs(1) == 1
    assert default_jobs(1000) == (os.cpu_count() or 1)
    with single_torch_thread():
        assert torch.get_num_threads() == 1


def test_a_units_log_is_printed_when_it_ends_not_when_all_have(tmp_path):
    flag = tmp_path / "parent-printed-unit-0"

    def log(line):
        if line == "unit 0 finished":
            flag.touch()

    assert run_units(wait_for_parent, [(0, str(flag)), (1, str(flag))], jobs=2, log=log) == [True, True]
