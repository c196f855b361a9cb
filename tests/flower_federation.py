"""The harness of the tests that drive real Flower processes (a SuperLink and SuperNodes on loopback over
TLS, through ``flwr run``) and what a two-round run with site-3 dropping in round 1 must show.

Used by ``tests/test_flower.py``, ``tests/test_flower_engine_dp.py`` and, through
``tests/flower_processes.py``, the crash, signing and run-series tests. Ports are picked free at run time,
from a block of its own for each pytest-xdist worker; every process started is stopped (with its
children) by :meth:`Federation.stop`. Importing it skips the importing test module when flwr is absent.
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
from dp import PrivacyLedger  # noqa: E402
from simulation.federation.coordinator import Coordinator  # noqa: E402
from simulation.federation.protocol_round import run_masked_round  # noqa: E402
from simulation.engines.flower.client_app import synthetic_update  # noqa: E402
from simulation.engines.flower.tls import write_loopback_certificates  # noqa: E402
from simulation.federation.site import encode_update, flatten  # noqa: E402
from tests.flower_poll import fast_poll_env  # noqa: E402

__all__ = ["APP", "BIN", "STAGE_TIMEOUT", "SITES", "RUN", "free_port", "wait_port", "tool", "config_value",
           "Federation", "initial_model", "expected_globals", "check_run"]

APP = Path(__file__).resolve().parents[1] / "simulation" / "engines" / "flower" / "app"
BIN = Path(sys.executable).parent
STAGE_TIMEOUT = 45.0  # headroom: under `make test -n 2` another worker shares the cores
SITES = ("site-1", "site-2", "site-3")
# Small and quick: compact-ae on 16 x 16 slices, two rounds.
RUN = {"rounds": 2, "num-sites": 3, "image-size": 16, "epsilon": 8.0, "local-steps": 2, "sample-rate": 0.25,
       "stage-timeout": STAGE_TIMEOUT, "node-wait": 90.0, "synthetic-seed": 11}

# Ports: each pytest-xdist worker (gw0, gw1, ...) draws from its own block below Linux's ephemeral
# range (32768+), so the kernel never hands one out to another socket meanwhile and no two workers
# pick the same one; within a block, a port is handed out once per process and only if it binds now
# (another program may hold it). The start inside the block depends on the pid, so that concurrent
# runs from other checkouts rarely start on the same port.
_PORT_BASE, _PORT_BLOCK = 20_000, 500
_handed_out: set[int] = set()


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    first = _PORT_BASE + (index % 25) * _PORT_BLOCK
    start = os.getpid() % _PORT_BLOCK
    for offset in range(_PORT_BLOCK):
        port = first + (start + offset) % _PORT_BLOCK
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {first}-{first + _PORT_BLOCK - 1}")


def wait_port(port: int, attempts: int) -> None:
    """Until something accepts on the port: ``attempts`` tries, 0.3 s apart (each try at most 1 s)."""
    for _ in range(attempts):
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {attempts} tries")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} not found beside {sys.executable}")
    return str(path)


def config_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class Federation:
    """A SuperLink, SuperNodes and ``flwr run``, each process in its own session."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.home = tmp_path / "flwr-home"
        self.home.mkdir()
        self.certs = write_loopback_certificates(tmp_path / "tls")
        # SuperLink and SuperNode start flower-superexec / flwr-clientapp / flwr-serverapp from PATH. Their
        # polls wait 0.25 s instead of 1-3 s (tests/flower_poll.py: test-only; no timeout changes).
        self.env = fast_poll_env(os.environ | {"FLWR_HOME": str(self.home),
                                               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
        self.procs: list[subprocess.Popen] = []
        self.port = None
        self.output = ""

    def superlink(self, *extra: str) -> None:
        """A SuperLink serving its Fleet, Control and runtime APIs over TLS on one loopback port."""
        self.port = free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "loop"\n\n[superlink.loop]\naddress = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.certs.ca_cert.resolve()}"\n')
        self.start([tool("flower-superlink"), "--ssl-ca-certfile", str(self.certs.ca_cert),
                    "--ssl-certfile", str(self.certs.server_cert), "--ssl-keyfile", str(self.certs.server_key),
                    "--disable-runtime-dependency-installation", "--port", str(self.port), *extra], "superlink.log")
        wait_port(self.port, 200)

    def supernode(self, index: int, node_config: str, *extra: str) -> subprocess.Popen:
        return self.start([tool("flower-supernode"), "--root-certificates", str(self.certs.ca_cert),
                           "--superlink", f"127.0.0.1:{self.port}", "--port", str(free_port()),
                           "--node-config", f"partition-id={index} {node_config}", *extra], f"supernode-{index}.log")

    def start(self, args, log: str) -> subprocess.Popen:
        self.procs.append(subprocess.Popen(args, stdout=open(self.tmp_path / log, "w"), stderr=subprocess.STDOUT,
                                           env=self.env, cwd=self.tmp_path, start_new_session=True))
        return self.procs[-1]

    def run(self, run_dir: Path, *options: str, **config) -> dict:
        """``flwr run`` the app; returns the coordinator's summary.json."""
        values = RUN | config | {"out": str(run_dir)}
        overrides = " ".join(f"{k}={config_value(v)}" for k, v in values.items())
        try:
            run = subprocess.run([tool("flwr"), "run", str(APP), "loop", "--stream", "--run-config", overrides,
                                  *options], capture_output=True, text=True, env=self.env, cwd=self.tmp_path,
                                 timeout=480)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"flwr run did not finish in 480 s:\n{exc.stdout}\n{self.logs()}")
        self.output = run.stdout + run.stderr  # the ServerApp's log lines (--stream)
        summary = run_dir / "summary.json"
        assert summary.exists(), (f"the ServerApp wrote no summary (rc {run.returncode}):\n{run.stdout}\n"
                                  f"{run.stderr}\n{self.logs()}")
        return json.loads(summary.read_text())

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp_path.glob("*.log")))

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


# -- what the runs must show -------------------------------------------------------------


def initial_model():
    import torch

    import models

    torch.manual_seed(0)
    return models.create_model("compact-ae", image_size=RUN["image-size"])


def expected_globals(survivors_per_round):
    """The global model after the rounds through the in-process engine, by numpy FedAvg, and the
    tolerance between them (fixed-point rounding)."""
    import models

    model = initial_model()
    names = models.shared_parameter_names(model)
    shared = {n: p.detach().clone() for n, p in model.named_parameters()}
    length = sum(shared[n].numel() for n in names)
    coordinator = Coordinator(shared, names)
    encoder = secagg.FixedPointEncoder.create(clip=1.0, max_summands=len(SITES))
    weight_bound = 1.0  # public, equal FedAvg weights
    reference = flatten(shared, names)
    ids = {site: i + 1 for i, site in enumerate(SITES)}
    tolerance = 0.0
    for round_index, survivors in enumerate(survivors_per_round):
        updates = {s: synthetic_update(RUN["synthetic-seed"], s, round_index, length, 1.0) for s in SITES}
        session = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=(1, 2, 3), threshold=2,
                                       vector_length=length + 1, bit_width=encoder.bit_width)
        clients = {ids[s]: secagg.ClientSession(session, ids[s],
                                                masked_input=encode_update(updates[s][0], 1.0, encoder,
                                                                           weight_bound)[0])
                   for s in SITES}
        dropped = {ids[s]: "mask" for s in SITES if s not in survivors}
        outcome = run_masked_round(coordinator, session, clients, dropped, lambda released: None)
        assert outcome.completed
        coordinator.apply(coordinator.finish_round(encoder))
        weights = np.ones(len(survivors))  # public, equal weights: no site's record count
        reference = reference + np.sum([w * updates[s][0] for w, s in zip(weights, survivors)], axis=0) / weights.sum()
        # Each summand is off by < 1/scale per coordinate (weight included); |mean| <= clip = 1.
        tolerance += 2 * len(survivors) / encoder.scale / (weights.sum() / weight_bound)
    # float32 model weights: a few ulps per round on top.
    return flatten(coordinator.global_shared, names), reference, 2 * tolerance + 1e-6, names


def check_run(run_dir: Path, summary: dict, node_state: dict[str, Path]) -> None:
    import torch

    assert summary["rounds_completed"] == 2 and summary["privacy"]["ledger_verified"], summary
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["status"] for m in metrics] == ["completed", "completed"]
    assert metrics[0]["included"] == list(SITES) and metrics[0]["released"] == list(SITES)
    # Round 1: site-3 advertised and shared keys, then never uploaded: Flower's timeout dropped it,
    # its masks were removed with its reconstructed key, and it released (and spent) nothing.
    assert metrics[1]["survivors_per_stage"]["share"] == list(SITES)
    assert metrics[1]["survivors_per_stage"]["mask"] == ["site-1", "site-2"]
    assert metrics[1]["released"] == metrics[1]["included"] == ["site-1", "site-2"]
    assert all("loss" not in m and "clipped_coordinates" not in m for m in metrics)  # nodes keep their losses

    ledger = PrivacyLedger.open(run_dir)
    try:
        assert [e.round for e in ledger.events("site-1")] == [0, 1]
        assert [e.round for e in ledger.events("site-3")] == [0]
    finally:
        ledger.close()
    for site, state in node_state.items():
        own = PrivacyLedger.open(state / "ledger")  # the node's own ledger agrees
        try:
            assert [e.round for e in own.events(site)] == ([0] if site == "site-3" else [0, 1])
        finally:
            own.close()

    flower_global = torch.load(run_dir / "checkpoints" / "global.pt", weights_only=True)
    in_process, numpy_fedavg, tolerance, names = expected_globals([SITES, ("site-1", "site-2")])
    flower_vector = flatten(flower_global, names)
    assert np.max(np.abs(flower_vector - in_process)) <= tolerance
    assert np.max(np.abs(flower_vector - numpy_fedavg)) <= tolerance
    assert np.max(np.abs(flower_vector - flatten(dict(initial_model().named_parameters()), names))) > 10 * tolerance
