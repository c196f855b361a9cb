"""An unusable ``--out`` is refused before a run does any work (cohort, models, noise calibration), and
nothing is written: RunDirectory.check_new refuses what RunDirectory.create refuses."""

import pytest

from simulation.config import load_config
from simulation.federation.runstore import RunDirectory, RunDirectoryError


def _cases(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    a_run = tmp_path / "a-run"
    a_run.mkdir()
    (a_run / "config.json").write_text("{}")
    return {"is not a directory": a_file, "is under": a_file / "sub" / "run", "not empty": full,
            "already holds a run": a_run}


def test_check_new_refuses_what_create_refuses_and_writes_nothing(tmp_path):
    for words, path in _cases(tmp_path).items():
        before = sorted(p.name for p in tmp_path.rglob("*"))
        with pytest.raises(RunDirectoryError, match=words):
            RunDirectory(path).check_new()
        with pytest.raises(RunDirectoryError, match=words):
            RunDirectory(path).create({}, "f")
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
    RunDirectory(tmp_path / "new" / "run").check_new()  # a new path, or an empty directory, is fine
    (tmp_path / "empty").mkdir()
    RunDirectory(tmp_path / "empty").check_new()
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("words", ["is not a directory", "is under", "not empty", "already holds a run"])
def test_the_in_process_engine_refuses_before_the_cohort_and_the_calibration(tmp_path, monkeypatch, words):
    pytest.importorskip("torch")
    from simulation.engines.inprocess import simulate

    def never(*args, **kwargs):
        raise AssertionError("the run did work before checking its run directory")

    monkeypatch.setattr(simulate, "_prepare_data", never)
    monkeypatch.setattr("dp.calibrate_noise", never)
    with pytest.raises(RunDirectoryError, match=words):
        simulate.run_simulation(load_config(preset="tiny"), _cases(tmp_path)[words], quiet=True)
