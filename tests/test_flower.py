"""Issue 9: the federated round over Flower, through Flower's own tooling (``flwr run``).

* deployment engine over **TLS**, in **active mode**: a SuperLink and 3 SuperNodes on
  loopback, with certificates made at run time (:mod:`simulation.flower.tls`) and each
  site's Ed25519 identity checked against the nodes' own registry (:mod:`simulation.identity`);
* simulation engine: a SuperLink in ``--simulation`` mode with 3 simulated nodes (Ray).

Each run: three sites, two rounds; in round 1 site-3 stops answering at
MaskedInputCollection and Flower's timeout (``send_and_receive(timeout=...)``) decides it
dropped. Checked: the coordinator's run directory (metrics, ledger, checkpoint, summary),
each node's own ledger, and the global model against the in-process engine run on the
same inputs with the same dropout (and against the FedAvg computed in numpy), up to the
fixed-point rounding. A third run trains with DP-SGD on real NIfTI data at the nodes,
with one node whose own budget is too small: it refuses the round and spends nothing.
The simulation-engine run and the DP-SGD run are in ``tests/test_flower_engine_dp.py`` (on the
same harness), so that under ``make test`` they run beside this file's on another worker. A
fourth (one round, two sites) runs a SuperLink with Flower's SuperNode authentication and the
registry's node keys: a stranger's node is refused by the SuperLink, and a node admitted under
another site's key cannot register as site-2.

Skipped when flwr (``pip install 'secagg[flower]'``) or its command-line tools are absent.
Every wait is bounded; ports are picked free at run time, from a block of its own for each
pytest-xdist worker (so that a run with other files' processes on other workers never collides); every process started here is
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
from dp import PrivacyLedger  # noqa: E402
from simulation.coordinator import Coordinator  # noqa: E402
from simulation.engine import run_masked_round  # noqa: E402
from simulation.flower.client_app import synthetic_update  # noqa: E402
from simulation.flower.tls import write_loopback_certificates  # noqa: E402
from simulation.site import encode_update, flatten  # noqa: E402
from tests.flower_poll import fast_poll_env  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "simulation" / "flower" / "app"
BIN = Path(sys.executable).parent
STAGE_TIMEOUT = 45.0  # headroom: under `make test -n 2` another worker shares the cores
SITES = ("site-1", "site-2", "site-3")
# Small and quick: compact-ae on 16 x 16 slices, two rounds.
RUN = {"rounds": 2, "num-sites": 3, "image-size": 16, "epsilon": 8.0, "local-steps": 2, "sample-rate": 0.25,
       "stage-timeout": STAGE_TIMEOUT, "node-wait": 90.0, "synthetic-seed": 11}

# `make test` hands out whole files (--dist loadfile): one worker runs this file's federations one after
# another, while the other Flower process files (tests/test_flower_engine_dp.py, test_flower_crash.py,
# test_flower_deploy.py) run theirs on other workers, each worker on its own block of ports. Each is a
# SuperLink, SuperNodes and a process per message; the 45 s stage timeouts leave honest nodes headroom
# for that on a loaded 2-core machine.
pytestmark = pytest.mark.slow


# Ports: each pytest-xdist worker (gw0, gw1, ...) draws from its own block below Linux's ephemeral
# range (32768+), so the kernel never hands one out to another socket meanwhile and no two workers
# pick the same one; within a block, a port is handed out once per process and only if it binds now
# (another program may hold it). The start inside the block depends on the pid, so that concurrent
# runs from other checkouts rarely start on the same port.
_PORT_BASE, _PORT_BLOCK = 20_000, 500
_handed_out: set[int] = set()


def _free_port() -> int:
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


def _wait_port(port: int, attempts: int) -> None:
    """Until something accepts on the port: ``attempts`` tries, 0.3 s apart (each try at most 1 s)."""
    for _ in range(attempts):
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {attempts} tries")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} not found beside {sys.executable}")
    return str(path)


def _config_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class _Federation:
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
        self.port = _free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "loop"\n\n[superlink.loop]\naddress = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.certs.ca_cert.resolve()}"\n')
        self.start([_tool("flower-superlink"), "--ssl-ca-certfile", str(self.certs.ca_cert),
                    "--ssl-certfile", str(self.certs.server_cert), "--ssl-keyfile", str(self.certs.server_key),
                    "--disable-runtime-dependency-installation", "--port", str(self.port), *extra], "superlink.log")
        _wait_port(self.port, 200)

    def supernode(self, index: int, node_config: str, *extra: str) -> subprocess.Popen:
        return self.start([_tool("flower-supernode"), "--root-certificates", str(self.certs.ca_cert),
                           "--superlink", f"127.0.0.1:{self.port}", "--port", str(_free_port()),
                           "--node-config", f"partition-id={index} {node_config}", *extra], f"supernode-{index}.log")

    def start(self, args, log: str) -> subprocess.Popen:
        self.procs.append(subprocess.Popen(args, stdout=open(self.tmp_path / log, "w"), stderr=subprocess.STDOUT,
                                           env=self.env, cwd=self.tmp_path, start_new_session=True))
        return self.procs[-1]

    def run(self, run_dir: Path, *options: str, **config) -> dict:
        """``flwr run`` the app; returns the coordinator's summary.json."""
        values = RUN | config | {"out": str(run_dir)}
        overrides = " ".join(f"{k}={_config_value(v)}" for k, v in values.items())
        try:
            run = subprocess.run([_tool("flwr"), "run", str(APP), "loop", "--stream", "--run-config", overrides,
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


@pytest.fixture
def federation(tmp_path):
    fed = _Federation(tmp_path)
    try:
        yield fed
    finally:
        fed.stop()


# -- what the runs must show -------------------------------------------------------------


def _initial_model():
    import torch

    import models

    torch.manual_seed(0)
    return models.create_model("compact-ae", image_size=RUN["image-size"])


def _expected_globals(survivors_per_round):
    """The global model after the rounds through the in-process engine, by numpy FedAvg, and the
    tolerance between them (fixed-point rounding)."""
    import models

    model = _initial_model()
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


def _check_run(run_dir: Path, summary: dict, node_state: dict[str, Path]) -> None:
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
    in_process, numpy_fedavg, tolerance, names = _expected_globals([SITES, ("site-1", "site-2")])
    flower_vector = flatten(flower_global, names)
    assert np.max(np.abs(flower_vector - in_process)) <= tolerance
    assert np.max(np.abs(flower_vector - numpy_fedavg)) <= tolerance
    assert np.max(np.abs(flower_vector - flatten(dict(_initial_model().named_parameters()), names))) > 10 * tolerance


def test_deployment_engine_over_tls_active_mode_two_rounds_with_a_dropout(federation, tmp_path):
    from simulation.identity import add_to_registry, write_identity

    # Each hospital's own identity; the registry reaches every node (and the coordinator) out of band.
    registry = tmp_path / "registry.json"
    keys = {site: write_identity(tmp_path / f"keys-{site}", site) for site in SITES}
    for identity in keys.values():
        add_to_registry(registry, identity)
    federation.superlink()
    states = {site: tmp_path / f"node-{site}" for site in SITES}
    for i, site in enumerate(SITES):
        drop = ' drop="1:mask"' if site == "site-3" else ""
        federation.supernode(i, f'site="{site}" state-dir="{states[site]}" epsilon-budget=8.0 '
                                f'signing-key="{keys[site].signing_key_path}" registry="{registry}"{drop}')
    run_dir = tmp_path / "run"
    summary = federation.run(run_dir, update="synthetic", active=True, registry=str(registry))
    _check_run(run_dir, summary, states)
    assert summary["active"] is True
    # Both ledgers carry the sites' signatures, and each node's anchor matches the coordinator's ledger.
    from dp import load_anchors, verify_ledger
    from simulation.identity import load_registry

    keys_of = load_registry(registry)
    anchors = load_anchors([states[site] / "anchors" for site in SITES])  # STATE_DIR/anchors/RUN_ID/
    report = verify_ledger(run_dir, registry=keys_of, anchors=anchors)
    assert report.ok and report.signatures_checked == 5 and sorted(report.anchors_checked) == list(SITES), report
    for site in SITES:
        own = verify_ledger(states[site] / "ledger", registry=keys_of)
        assert own.ok and own.signatures_checked == (1 if site == "site-3" else 2), own
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # The ConsistencyCheck round ran: the survivors signed the list of who uploaded.
    assert metrics[1]["survivors_per_stage"]["consistency"] == ["site-1", "site-2"]
    assert "Uvicorn running on https://" in (tmp_path / "superlink.log").read_text()
    # The compliance journey works on a deployment's run directory too.
    from simulation.dpia import write_dpia

    path, _ = write_dpia(run_dir, fmt="md", out=tmp_path / "dpia.md")
    text = path.read_text()
    assert "Flower deployment" in text and "held at the site (not released)" in text
    assert "checked against every node's own registry" in text


def test_node_authentication_admits_only_the_registry_nodes_each_as_its_own_site(federation, tmp_path, monkeypatch,
                                                                                   capsys):
    """Issues 18 and 21: a SuperLink with ``--enable-supernode-auth`` admits exactly the registry's node keys
    (``secagg keys register-nodes``). A stranger - a Flower key of its own, site-2's name and even site-2's
    signing key - is refused by the SuperLink and never becomes a node; a node that the SuperLink does admit
    (site-3's registered key) but that claims site-2 with site-2's signing key is left out by the coordinator,
    because its Flower key is not site-2's. The registered sites' run completes."""
    from dp import verify_ledger
    from simulation.cli import main as secagg
    from simulation.identity import load_registry
    from simulation.node_keys import write_node_key

    registry, keys = tmp_path / "registry.json", tmp_path / "keys"
    for site in SITES:  # each site's Ed25519 identity and Flower node key, both in the registry
        assert secagg(["keys", "new", "--site", site, "--out", str(keys / site), "--registry", str(registry)]) == 0
    stranger_key = write_node_key(tmp_path, "stranger").private_key_path  # never registered
    federation.superlink("--enable-supernode-auth")
    monkeypatch.setenv("FLWR_HOME", str(federation.home))
    assert secagg(["keys", "register-nodes", "--registry", str(registry), "--superlink", "loop"]) == 0

    def node(index, state, site, key_of, signing_of):
        return federation.supernode(index, f'site="{site}" state-dir="{tmp_path / state}" epsilon-budget=8.0 '
                                           f'signing-key="{keys / signing_of / (signing_of + ".ed25519")}"',
                                    "--auth-supernode-private-key", str(key_of))

    for i, site in enumerate(("site-1", "site-2")):
        node(i, f"node-{site}", site, keys / site / f"{site}.flower-auth", site)
    impostor = node(2, "impostor", "site-2", keys / "site-3" / "site-3.flower-auth", "site-2")
    stranger = node(3, "stranger", "site-2", stranger_key, "site-2")
    run_dir = tmp_path / "run"
    summary = federation.run(run_dir, update="synthetic", rounds=1, **{"num-sites": 2, "node-auth": True},
                             registry=str(registry))
    assert summary["rounds_completed"] == 1, federation.output[-3000:]
    assert summary["deployment"]["node_authentication"] == {"required": True, "sites_checked": ["site-1", "site-2"],
                                                           "sites_unchecked": []}
    assert "but its Flower node key is not the one the registry holds for that site" in federation.output
    # The spends are the real sites' own: each signed one in its own ledger; the impostor joined no session.
    for site in ("site-1", "site-2"):
        own = verify_ledger(tmp_path / f"node-{site}" / "ledger", registry=load_registry(registry))
        assert own.ok and own.signatures_checked == 1, own
    assert not (tmp_path / "impostor" / "ledger").exists() and impostor.poll() is None
    # The SuperLink refused the stranger's node outright: its SuperNode could not activate and exited.
    assert stranger.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in (tmp_path / "supernode-3.log").read_text()
    # register-nodes can run again; against a registry that no longer names site-3 it fails (exit 1) and
    # names the node the SuperLink still admits, removing nothing.
    assert secagg(["keys", "register-nodes", "--registry", str(registry), "--superlink", "loop"]) == 0
    smaller = json.loads(registry.read_text())
    del smaller["site-3"]
    (tmp_path / "smaller.json").write_text(json.dumps(smaller))
    capsys.readouterr()
    assert secagg(["keys", "register-nodes", "--registry", str(tmp_path / "smaller.json"), "--superlink", "loop"]) == 1
    assert "the SuperLink admits 1 node(s) whose key the registry does not name" in capsys.readouterr().err
    assert secagg(["keys", "register-nodes", "--registry", str(registry), "--superlink", "loop"]) == 0
