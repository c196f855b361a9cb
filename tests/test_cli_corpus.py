"""No traceback ever reaches a user of the CLI (issue 18).

Every ``secagg`` subcommand runs on the bad inputs of tests/cli_corpus.py (files,
configurations, run directories, ledgers, TOML, registries, hostile NIfTI files):
each gives its documented exit code (2 bad input, 1 failed verification) and one
line on stderr, never a traceback. An unexpected error gives exit code 3, one
line, and a crash report (mode 0600) in the run directory or a private
temporary directory.
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("nibabel")

from simulation import cli  # noqa: E402
from simulation.cli import ledger as ledger_commands  # noqa: E402
from simulation.cli import protocol  # noqa: E402
from tests.cli_corpus import CASES, Corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return Corpus(tmp_path_factory.mktemp("cli-corpus"))


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every leaf subcommand path of the parser, e.g. {"demo", "ledger verify", ...}."""
    found = set()
    for action in parser._actions:  # argparse offers no public walk of subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                found |= _subcommands(sub, path) or {path}
    return found


def test_the_corpus_covers_every_subcommand():
    covered = {case.command for case in CASES}
    missing = _subcommands(cli.build_parser()) - covered
    assert not missing, f"add bad-input cases to tests/cli_corpus.py for: {sorted(missing)}"


@pytest.mark.slow  # one case generates the synthetic cohort (about a minute on 2 cores)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_line_and_the_documented_exit_code(case, corpus, capsys, monkeypatch):
    monkeypatch.chdir(corpus.root)
    code = cli.main(case.argv(corpus))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert code == case.code, (code, err[-2000:])
    lines = [line for line in err.strip().splitlines() if not line.startswith("secagg: warning: ")]
    assert len(lines) == 1, err[-2000:]  # one error line (beside one-line warnings, e.g. files skipped)
    assert case.fragment in lines[0], lines[0]
    assert "internal error" not in lines[0]


def _run(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_the_real_entry_point_prints_no_traceback(corpus):
    for args, code in ((["demo", "--length", "-5"], 2), (["ledger", "verify", corpus.run_dir("ledger-tampered")], 1),
                       (["simulate", "--config", corpus.fifo()], 2)):
        proc = _run(*args)
        assert proc.returncode == code, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _crashing(args):
    raise RuntimeError("an injected bug")


def test_unexpected_error_writes_a_crash_report_in_the_run_directory(corpus, capsys, monkeypatch):
    run_dir = corpus.run_dir("ledger-valid")
    monkeypatch.setattr(ledger_commands, "cmd_ledger_show", _crashing)
    code = cli.main(["ledger", "show", run_dir])
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "internal error (RuntimeError: an injected bug)" in err
    report = Path(err.strip().rsplit("crash report: ", 1)[1])
    assert report.parent == Path(run_dir) and report.is_file()
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    text = report.read_text()
    assert "Traceback" in text and "an injected bug" in text and "ledger show" in text


def test_unexpected_error_without_a_run_directory_goes_to_a_private_temp_dir(capsys, monkeypatch):
    monkeypatch.setattr(protocol, "cmd_params", _crashing)
    code = cli.main(["params", "--n", "10"])
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1
    report = Path(err.strip().rsplit("crash report: ", 1)[1])
    assert report.is_file() and stat.S_IMODE(report.stat().st_mode) == 0o600
    assert stat.S_IMODE(report.parent.stat().st_mode) == 0o700
    assert "an injected bug" in report.read_text()


def test_keyboard_interrupt_is_one_line(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(protocol, "cmd_params", interrupted)
    assert cli.main(["params", "--n", "10"]) == 130
    assert capsys.readouterr().err.strip() == "secagg params: interrupted"


def test_warnings_are_one_line(capsys, monkeypatch):
    import warnings

    def warns(args):
        warnings.warn("something odd\nacross lines", UserWarning)
        return 0

    monkeypatch.setattr(protocol, "cmd_params", warns)
    assert cli.main(["params", "--n", "10"]) == 0
    assert capsys.readouterr().err.strip() == "secagg: warning: something odd across lines"
