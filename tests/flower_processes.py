"""Helpers for tests and benchmarks that drive real Flower processes (issue 18: crash, resume, load).

Built on the harness of ``tests/flower_federation.py`` (a SuperLink and SuperNodes on loopback over TLS, free
ports per pytest-xdist worker, every process stopped with its children): submitting a run without
streaming it, bounded polling, the SuperLink's ``flwr-serverapp`` processes and their SIGKILL, and
what a node's state directory shows of its progress (its session journal).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flower_federation import APP, RUN, SITES, Federation, check_run, config_value, free_port, tool
from tests.flower_poll import fast_poll_env

__all__ = ["Federation", "RUN", "SITES", "check_run", "wait_for", "submit", "serverapp_pids", "kill_serverapp",
           "journal_lines", "metrics", "start_verifying_supernode"]


def wait_for(condition, seconds: float, what: str, fed: Federation):
    """Poll ``condition`` every 0.1 s for at most ``seconds``; its first truthy value, or the test fails."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"not within {seconds:g} s: {what}\n{fed.logs()}")


def submit(fed: Federation, run_dir: Path, config: dict) -> None:
    """``flwr run`` without ``--stream``: it returns once the SuperLink accepted the run."""
    values = config | {"out": str(run_dir)}
    overrides = " ".join(f"{k}={config_value(v)}" for k, v in values.items())
    done = subprocess.run([tool("flwr"), "run", str(APP), "loop", "--run-config", overrides], capture_output=True,
                          text=True, env=fed.env, cwd=fed.tmp_path, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def serverapp_pids(fed: Federation) -> list[int]:
    """The pids of the ``flwr-serverapp`` processes under our SuperLink (it starts ``flower-superexec`` in a
    session of its own, which starts them): found by walking each process's parents up to the SuperLink."""
    parent, names = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        names[int(entry.name)] = {Path(a.decode(errors="replace")).name for a in argv if a}

    def under_superlink(pid: int) -> bool:
        for _ in range(16):
            pid = parent.get(pid, 0)
            if pid == fed.procs[0].pid:
                return True
            if pid <= 1:
                return False
        return False

    return sorted(pid for pid, argv in names.items() if "flwr-serverapp" in argv and under_superlink(pid))


def kill_serverapp(fed: Federation) -> None:
    pids = serverapp_pids(fed)
    assert len(pids) == 1, f"expected one flwr-serverapp in the SuperLink's group, found {pids}"
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: not serverapp_pids(fed), 30, "the killed flwr-serverapp is gone", fed)


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def journal_lines(state: Path) -> int:
    path = state / "sessions.journal"
    return len(path.read_text().splitlines()) if path.exists() else 0


def start_verifying_supernode(fed: Federation, tmp_path: Path, trusted: Path, extra_env: dict | None = None) -> Path:
    """One SuperNode started through ``secagg flower supernode`` (every ClientApp checked against the
    consortium key in ``tmp_path/consortium`` and the signatures in ``trusted``), logging to
    ``tmp_path/supernode-1.log``; returns its own (empty) ``FLWR_HOME``."""
    root = Path(__file__).resolve().parents[1]
    node_home = tmp_path / "node-flwr-home"
    node_home.mkdir()
    env = fast_poll_env(fed.env | (extra_env or {}) | {
        "FLWR_HOME": str(node_home), "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])})
    fed.procs.append(subprocess.Popen(
        [sys.executable, "-m", "simulation.cli", "flower", "supernode",
         "--app-key", str(tmp_path / "consortium" / "consortium-apps.pub"), "--trusted-apps", str(trusted), "--",
         "--root-certificates", str(fed.certs.ca_cert), "--superlink", f"127.0.0.1:{fed.port}",
         "--port", str(free_port())],
        stdout=open(tmp_path / "supernode-1.log", "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        start_new_session=True))
    return node_home
