"""Issue 21: a deployment that works from the guide as written.

* The Flower app folder ships in the package (``secagg flower app-path``; ``package-data``).
* ``secagg flower check`` says whether a Flower run directory holds a finished run: ``flwr run``
  exits 0 on a failed run, so this is what a script can rely on.
* ``simulation/engines/flower/app/deploy-local.sh`` - the guide as a script - end to end with real
  processes (a SuperLink and three SuperNodes over loopback TLS): exit 0, both sides' ledgers,
  the DPIA, the app bundle verified at every node against the consortium's signature, owner-only
  modes of what the run wrote; and a non-zero exit when the run fails
  (``num-sites`` larger than the nodes started).
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from simulation.cli import main
from simulation.engines.flower.deploy import APP_FILES, app_path, run_outcome
from tests.file_modes import not_owner_only
from tests.flower_poll import fast_poll_env

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "simulation" / "engines" / "flower" / "app" / "deploy-local.sh"


# -- the app folder ships with the package ------------------------------------------------


def test_app_path_is_the_app_folder_with_its_pyproject(capsys):
    folder = app_path()
    assert main(["flower", "app-path"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
    app = tomllib.loads((folder / "pyproject.toml").read_text())
    assert app["tool"]["flwr"]["app"]["components"] == {"serverapp": "simulation.engines.flower.server_app:app",
                                                        "clientapp": "simulation.engines.flower.client_app:app"}
    for name in APP_FILES:
        assert (folder / name).is_file(), name


def test_the_wheel_config_ships_every_file_of_the_app_folder():
    """Every file of the app folder matches a ``package-data`` pattern of the ``simulation`` package, and the
    package finder includes ``simulation``: a non-editable install has ``flwr run "$(secagg flower app-path)"``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert any(fnmatch.fnmatch("simulation.engines.flower", pattern) for pattern in setuptools["packages"]["find"]["include"])
    patterns = setuptools["package-data"]["simulation"]
    base = ROOT / "simulation"
    files = [p.relative_to(base).as_posix() for p in app_path().iterdir() if p.is_file()
             and not p.name.startswith(".")]
    assert set(APP_FILES) <= {Path(f).name for f in files}
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not unshipped, unshipped


def test_the_script_is_executable():
    assert SCRIPT.stat().st_mode & stat.S_IXUSR


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_the_script_refuses_a_directory_that_is_not_empty(tmp_path):
    """A node's ledger in a reused directory would carry its spent budget into the new run."""
    (tmp_path / "nodes").mkdir()
    proc = _script("--dir", str(tmp_path))
    assert proc.returncode == 2 and "is not empty" in proc.stderr and not proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes"]


@pytest.mark.parametrize("args", [["--bogus"], ["--sites", "three"], ["--rounds", "-1"], ["--dir"],
                                  ["--passphrase-env", "SECAGG_TEST_UNSET_PASSPHRASE_VARIABLE"],
                                  ["--passphrase-env", "1-not-a-name"]])
def test_the_script_refuses_bad_options_before_doing_anything(tmp_path, args):
    proc = _script(*args)
    assert proc.returncode != 0 and proc.stderr.strip() and not proc.stdout


def test_the_script_help_lists_every_option():
    proc = _script("--help")
    assert proc.returncode == 0
    options = {"--dir", "--active", "--sites", "--num-sites", "--rounds", "--port", "--epsilon-budget", "--insecure",
               "--passphrase-env", "--run-config"}
    assert all(option in proc.stdout for option in options)
    assert all(f"{option})" in SCRIPT.read_text() for option in options)  # and the script parses each


# -- secagg flower check -------------------------------------------------------------------


def _summary(run_dir: Path, completed: int, planned: int, **extra) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({"engine": "flower", "rounds_completed": completed,
                                                      "rounds_planned": planned} | extra))


def test_check_fails_without_a_summary(tmp_path, capsys):
    assert main(["flower", "check", str(tmp_path / "never")]) == 1
    assert "never opened its run directory" in capsys.readouterr().err
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.json").write_text("{}")
    assert main(["flower", "check", str(started)]) == 1
    err = capsys.readouterr().err
    assert "started but did not finish" in err and len(err.strip().splitlines()) == 1


def test_check_fails_on_a_run_that_stopped_early(tmp_path, capsys):
    _summary(tmp_path, 1, 2, stopped="budget exhausted", rounds_aborted=[1])
    assert main(["flower", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 rounds completed" in err and "budget exhausted" in err and "[1]" in err


def test_check_fails_on_a_summary_of_another_engine(tmp_path):
    _summary(tmp_path, 2, 2, engine="in-process")
    assert not run_outcome(tmp_path).ok


def test_check_passes_a_finished_run_and_names_its_ledger_run_id(tmp_path, capsys):
    from dp import PrivacyLedger

    PrivacyLedger.create(tmp_path, run_id="the-run", delta=1e-5, budgets={"site-1": 8.0}).close()
    _summary(tmp_path, 2, 2)
    assert main(["flower", "check", str(tmp_path), "--run-id"]) == 0
    assert capsys.readouterr().out.strip() == "the-run"
    assert main(["flower", "check", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == "the-run"


# -- the guide as a script, with real processes -------------------------------------------

# Ports: a block per pytest-xdist worker in 15000-19999, below tests/test_flower.py's blocks (20000 and up)
# and Linux's ephemeral range (32768 and up), so neither the kernel nor that file hands them out meanwhile.
_PORT_BASE, _PORT_BLOCK = 15_000, 200


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that all bind now."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    first = _PORT_BASE + (index % 25) * _PORT_BLOCK
    for start in range(first + os.getpid() % 50, first + _PORT_BLOCK - count):
        sockets = []
        try:
            for port in range(start, start + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} free consecutive loopback ports in {first}-{first + _PORT_BLOCK - 1}")


# Small and quick: synthetic updates (fixed floats; DP-SGD on real NIfTI data is tests/test_flower_engine_dp.py's),
# 16 x 16 slices; the stage timeout leaves room for a loaded machine.
_QUICK = 'update="synthetic" image-size=16 local-steps=2 sample-rate=0.25 stage-timeout=60.0 node-wait=60.0'


def _deploy(directory: Path, *options: str, timeout: float = 1200, **env: str) -> subprocess.CompletedProcess:
    """Run the script as a user would: ``secagg`` and Flower's commands on PATH, this checkout's code."""
    for tool in ("flower-superlink", "flower-supernode", "flwr"):
        if not (BIN / tool).exists():
            pytest.skip(f"{tool} not found beside {sys.executable} (pip install 'secagg[flower]')")
    shim = directory.parent / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "secagg").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m simulation.cli "$@"\n')
    os.chmod(shim / "secagg", 0o700)
    # The script's Flower processes poll every 0.25 s instead of 1-3 s (tests/flower_poll.py: test-only).
    env = fast_poll_env(os.environ | {"PATH": f"{shim}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                                      "PYTHONPATH": str(ROOT), "TMPDIR": str(directory.parent)} | env)
    proc = subprocess.Popen(["bash", str(SCRIPT), "--dir", str(directory), "--port", str(_free_ports(4)), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=directory.parent,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the script's trap stops the SuperLink and SuperNodes
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"deploy-local.sh did not finish in {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_the_script_takes_a_new_user_to_a_verified_run_and_its_dpia(tmp_path):
    """Active mode (its one set of paths: each node's key in its state-dir, one registry), over TLS, with the
    keys under a passphrase that the SuperNodes read from their environment."""
    directory = tmp_path / "deploy"
    proc = _deploy(directory, "--active", "--passphrase-env", "DEMO_KEY_PASSPHRASE", "--rounds", "2",
                   "--run-config", _QUICK, DEMO_KEY_PASSPHRASE="a passphrase of the demo hospitals")
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((directory / "logs").glob("*.log")))
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{logs}"
    steps = [line for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert [s.split()[1] for s in steps] == [f"{i}/8" for i in range(1, 9)]
    summary = json.loads((directory / "run" / "summary.json").read_text())
    assert (summary["rounds_completed"], summary["rounds_planned"]) == (2, 2)
    # Both sides' ledgers verified: the coordinator's with the three nodes' anchors, then each node's own.
    assert proc.stdout.count("ledger OK") == 4
    assert "3 site anchors matched" in proc.stdout
    for site in ("site-1", "site-2", "site-3"):
        assert (directory / "nodes" / site / "ledger" / "ledger.sqlite").is_file()
        assert (directory / "nodes" / site / f"{site}.ed25519").read_text().lstrip().startswith("{")  # sealed
    assert summary["active"] is True
    # The DPIA states what the run observed: TLS from flwr-serverapp's real command line, active mode, and
    # each node's ledger and key where the script put them.
    dpia = " ".join((directory / "run" / "dpia.md").read_text().split())
    assert "Transport: TLS ON" in dpia and "with --root-certificates" in dpia
    assert "against a malicious coordinator): ON" in dpia
    assert dpia.count("(passphrase-protected)") == 3
    for site in ("site-1", "site-2", "site-3"):
        assert (f"{site} (as its node reported at registration): own ledger {directory / 'nodes' / site / 'ledger'}; "
                f"signing key {directory / 'nodes' / site / (site + '.ed25519')}") in dpia
    # Every node ran the app only after checking the consortium's signature of it (secagg flower supernode).
    digest = json.loads(next((directory / "trusted-apps").glob("*.json")).read_text())["fab_sha256"]
    assert summary["deployment"]["app_verification"].startswith(f"ON: the node ran the app bundle sha256 {digest} ")
    assert ("App verification at the nodes (a verifying node runs only consortium-signed app bundles; as the nodes "
            "reported at registration; it does not protect a node that shares the SuperLink's host and user, where a "
            f"submitted ServerApp runs unchecked): ON: the node ran the app bundle sha256 {digest} only after "
            "verifying") in dpia
    for i in (1, 2, 3):
        log = (directory / "logs" / f"supernode-{i}.log").read_text()
        assert f"app bundle sha256 {digest} is signed by the consortium" in log
    # Least privilege: what the run wrote on both sides is owner-only.
    for part in ("run", "nodes"):
        assert not not_owner_only(directory / part), not_owner_only(directory / part)
    # Flower's own files (the installed app bundle) stayed under the directory too.
    assert list((directory / "flwr-home" / "apps").glob("secagg.secagg-flower.*"))


@pytest.mark.slow
def test_the_script_exits_non_zero_when_the_run_fails(tmp_path):
    """Two nodes for a run that waits for three: the ServerApp gives up after node-wait; ``flwr run`` exits 0,
    the script does not. Without TLS (``--insecure``): the nodes and the CLI still reach the SuperLink."""
    directory = tmp_path / "deploy"
    proc = _deploy(directory, "--insecure", "--sites", "2", "--num-sites", "3", "--rounds", "1",
                   "--run-config", _QUICK.replace("node-wait=60.0", "node-wait=3.0"))
    assert proc.returncode == 1, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "only 2 of 3 nodes connected" in proc.stdout  # the ServerApp's own reason, streamed by `flwr run`
    assert "the run failed" in proc.stderr
    assert "run FAILED" in proc.stderr
    assert not (directory / "run" / "dpia.md").exists()
