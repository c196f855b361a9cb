"""Issue 9: the protocol over Flower, through Flower's own tooling (``flwr run``).

* deployment engine: a SuperLink and 3 SuperNodes on loopback (``--insecure``);
* simulation engine: a SuperLink in ``--simulation`` mode with 3 simulated SuperNodes
  (needs Ray: ``pip install 'flwr[simulation]'``; skipped without it).

Three sites, two rounds; in round 1 site 3 stops answering at MaskedInputCollection and
Flower's timeout (``send_and_receive(timeout=...)``) decides it dropped. The aggregates the
ServerApp computed must equal what the in-process engine computes from the same inputs and
the same dropout - bit for bit - and the plain sum of the survivors' inputs.

Skipped when flwr (``pip install 'secagg[flower]'``) or its command-line tools are absent.
Every wait is bounded; ports are picked free at run time; every process started here is
stopped (with its children) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

import secagg  # noqa: E402
from simulation.coordinator import Coordinator  # noqa: E402
from simulation.engine import run_masked_round  # noqa: E402
from simulation.flower.client_app import synthetic_ring  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "simulation" / "flower" / "app"
BIN = Path(sys.executable).parent
STAGE_TIMEOUT = 30.0
VECTOR_LENGTH = 64
SEED = 7

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} not found beside {sys.executable}")
    return str(path)


class _Processes:
    """Processes started by a test (each in its own session, so its children stop with it)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.home = tmp_path / "flwr-home"
        self.home.mkdir()
        # SuperLink and SuperNode start flower-superexec / flwr-clientapp / flwr-serverapp from PATH.
        self.env = os.environ | {"FLWR_HOME": str(self.home),
                                 "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.procs: list[subprocess.Popen] = []

    def superlink(self, *extra: str) -> int:
        port = _free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "loop"\n\n[superlink.loop]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
        self.start([_tool("flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                    "--port", str(port), *extra], "superlink.log")
        _wait_port(port, 60)
        return port

    def start(self, args, log: str) -> None:
        self.procs.append(subprocess.Popen(args, stdout=open(self.tmp_path / log, "w"), stderr=subprocess.STDOUT,
                                           env=self.env, cwd=self.tmp_path, start_new_session=True))

    def flwr_run(self, *options: str) -> list[dict]:
        out = self.tmp_path / "rounds.json"
        overrides = (f'update="synthetic" vector-length={VECTOR_LENGTH} seed={SEED} rounds=2 num-sites=3 '
                     f'stage-timeout={STAGE_TIMEOUT} node-wait=90.0 out="{out}"')
        try:
            run = subprocess.run([_tool("flwr"), "run", str(APP), "loop", "--stream", "--run-config", overrides,
                                  *options], capture_output=True, text=True, env=self.env, cwd=self.tmp_path,
                                 timeout=420)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"flwr run did not finish in 420 s:\n{exc.stdout}")
        assert out.exists(), f"the ServerApp wrote no results (rc {run.returncode}):\n{run.stdout}\n{run.stderr}"
        return json.loads(out.read_text())

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


@pytest.fixture
def processes(tmp_path):
    procs = _Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


def _in_process(record: dict, dropped: dict) -> np.ndarray:
    """The same session (same nonce, inputs and dropouts) through the in-process engine."""
    participants = (1, 2, 3)
    config = secagg.SessionConfig(session_id=bytes.fromhex(record["session_id"]), participants=participants,
                                  threshold=2, vector_length=VECTOR_LENGTH, bit_width=32)
    clients = {cid: secagg.ClientSession(config, cid, masked_input=synthetic_ring(SEED, cid, record["round"],
                                                                                   VECTOR_LENGTH, 32))
               for cid in participants}
    coordinator = Coordinator({}, [])
    outcome = run_masked_round(coordinator, config, clients, dropped, lambda released: None)
    assert outcome.completed
    assert outcome.alive == record["alive"]
    return coordinator.server.result.ring_sum


def _check(rounds: list[dict]) -> None:
    assert [r["completed"] for r in rounds] == [True, True]
    assert rounds[0]["survivors"] == [1, 2, 3]
    assert rounds[0]["released"] == [1, 2, 3]
    # Round 1: site 3 advertised and shared keys, then never uploaded: Flower's timeout dropped it,
    # its masks were removed with its reconstructed key, and it released nothing.
    assert rounds[1]["alive"]["share"] == [1, 2, 3]
    assert rounds[1]["alive"]["mask"] == [1, 2]
    assert rounds[1]["survivors"] == [1, 2]
    assert rounds[1]["released"] == [1, 2]
    for record, dropped in zip(rounds, ({}, {3: "mask"})):
        flower_sum = np.array(record["ring_sum"], dtype=np.uint32)
        np.testing.assert_array_equal(flower_sum, _in_process(record, dropped))
        plain = sum(synthetic_ring(SEED, cid, record["round"], VECTOR_LENGTH, 32).astype(np.uint64)
                    for cid in record["survivors"]) % 2**32
        np.testing.assert_array_equal(flower_sum, plain.astype(np.uint32))


def test_deployment_engine_two_rounds_with_a_dropout(processes):
    link = processes.superlink()
    for i in range(3):
        node_config = f"partition-id={i}" + (' drop="1:mask"' if i == 2 else "")
        processes.start([_tool("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                         "--port", str(_free_port()), "--node-config", node_config], f"supernode-{i}.log")
    _check(processes.flwr_run())


def test_simulation_engine_two_rounds_with_a_dropout(processes):
    pytest.importorskip("ray")
    processes.superlink("--simulation")
    # Simulated nodes have no config of their own: the run's simulate-drop makes site 3 vanish.
    _check(processes.flwr_run("--federation-config", "num-supernodes=3 client-resources-num-cpus=1",
                              "--run-config", 'simulate-drop="3:1:mask"'))
