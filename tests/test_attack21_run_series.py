"""Attack on a running consortium-signed app: a stranger's run in the same *run series* takes over its node
context.

flwr 1.42 keeps one node Context per run series, not per run: the SuperNode, on the first message of an
unknown run, builds that run's context (its run_id, its run config) on the series' state and stores it as the
series context (``start_client_internal._pull_and_store_message``), and every ClientApp of every run in the
series is handed that one context (``runtime_handlers.pull_task_input``). ``StartRun`` accepts any existing
``series_id`` of the federation, and ``ListRuns``/``StartRun`` show it. So whoever reaches the Control API
starts a run - of any bundle, even an unsigned one the node then refuses - in the series of a running
consortium run: the node's series context is replaced *in the SuperNode process, before the verifier sees
anything*, and the consortium's ClientApp then runs its next message with another run's id, run config and
a state both runs share (a secagg node unseals its session under ``context.run_id``: it fails).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulation.cli import main

pytest.importorskip("flwr")

from .probe_apps import app_pyproject  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# Round 1, then (the victim only) wait for the gate file, then round 2; the replies go to `out`.
SERVER = """import json, time
from pathlib import Path
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    out, gate = context.run_config["out"], context.run_config["gate"]
    nodes, deadline = [], time.monotonic() + 60
    while not nodes and time.monotonic() < deadline:
        nodes = sorted(grid.get_node_ids())
        time.sleep(0.2)
    records = []
    for round_ in (1, 2) if gate else (1,):
        if round_ == 2:
            deadline = time.monotonic() + 150
            while not Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        messages = [Message(RecordDict({"q": ConfigRecord({"round": round_})}), dst_node_id=n, message_type="query")
                    for n in nodes]
        replies = list(grid.send_and_receive(messages, timeout=90))
        records += [{"round": round_, "run_id": context.run_id,
                     "error": r.error.reason if r.has_error() else None,
                     "context_run_id": None if r.has_error() else int(r.content["a"]["context-run-id"]),
                     "seen": None if r.has_error() else list(r.content["a"]["seen"]),
                     "context_out": None if r.has_error() else r.content["a"]["context-out"]} for r in replies]
        Path(out + f".round{round_}").write_text(json.dumps(records))
"""

CLIENT = """from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    seen = list(context.state["probe"]["seen"]) if "probe" in context.state else []
    seen.append(str(msg.metadata.run_id))
    context.state["probe"] = ConfigRecord({"seen": seen})
    return Message(RecordDict({"a": ConfigRecord({"context-run-id": str(context.run_id), "seen": seen,
                                                   "context-out": str(context.run_config.get("out"))})}),
                   reply_to=msg)
"""

SUBMIT = """import hashlib, json, sys
from pathlib import Path
from flwr.cli.build import build_fab_from_disk
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import init_http_client_from_connection
from flwr.common.config import parse_config_args
from flwr.common.serde import fab_to_proto, user_config_to_proto
from flwr.proto.control_pb2 import StartRunRequest
from flwr.supercore.fab import Fab

app, config, series = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
content = build_fab_from_disk(app)
connection = read_superlink_connection("loop")
client = init_http_client_from_connection(connection)
request = StartRunRequest(fab=fab_to_proto(Fab(hashlib.sha256(content).hexdigest(), content, {})),
                          override_config=user_config_to_proto(parse_config_args([config])),
                          federation=connection.federation or "")
if series:
    request.series_id = int(series)
res = client.StartRun(request)
print(json.dumps({"run_id": res.run_id if res.HasField("run_id") else None,
                  "series_id": res.series_id if res.HasField("series_id") else None}))
"""


def _app(root: Path, name: str) -> Path:
    app = root / name
    app.mkdir(parents=True)
    components = {"serverapp": "probe_server:app", "clientapp": "probe_client:app"}
    (app / "pyproject.toml").write_text(app_pyproject(name, components, publisher="probe", config={"out": "", "gate": ""}))
    (app / "probe_server.py").write_text(SERVER)
    (app / "probe_client.py").write_text(CLIENT)
    return app


def _wait(path: Path, seconds: float, fed) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.3)
    assert path.exists(), f"{path.name} not written within {seconds:g} s\n{fed.logs()}"
    return json.loads(path.read_text())


def test_a_strangers_run_in_the_same_series_does_not_take_over_a_signed_runs_node_context(tmp_path):
    from tests.flower_processes import Federation, start_verifying_supernode

    fed = Federation(tmp_path)
    try:
        victim, intruder = _app(tmp_path / "apps", "victim"), _app(tmp_path / "apps", "intruder")
        assert main(["flower", "app-key", "--out", str(tmp_path / "consortium")]) == 0
        trusted = tmp_path / "trusted-apps"
        assert main(["flower", "sign-app", str(victim), "--out", str(trusted),
                     "--key", str(tmp_path / "consortium" / "consortium-apps.ed25519")]) == 0
        fed.superlink()
        start_verifying_supernode(fed, tmp_path, trusted)
        (tmp_path / "submit.py").write_text(SUBMIT)

        def submit(app: Path, config: str, series: str = "") -> dict:
            done = subprocess.run([sys.executable, str(tmp_path / "submit.py"), str(app), config, series],
                                  capture_output=True, text=True, env=fed.env, cwd=tmp_path, timeout=120)
            assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
            return json.loads(done.stdout.strip().splitlines()[-1])

        gate = tmp_path / "go"
        run_a = submit(victim, f'out="{tmp_path / "victim"}" gate="{gate}"')
        [first] = _wait(tmp_path / "victim.round1", 120, fed)
        assert first["error"] is None and first["context_run_id"] == run_a["run_id"], first
        # The stranger: an unsigned bundle, in the victim's run series (StartRun told the series id).
        run_b = submit(intruder, f'out="{tmp_path / "intruder"}" gate=""', str(run_a["series_id"]))
        [refused] = _wait(tmp_path / "intruder.round1", 120, fed)
        assert refused["error"] and "AppNotTrustedError" in refused["error"], refused  # the node refused its code
        gate.write_text("go")
        second = _wait(tmp_path / "victim.round2", 120, fed)[-1]
        assert second["error"] is None, second
        assert second["context_run_id"] == run_a["run_id"], (
            f"the signed run {run_a['run_id']}'s ClientApp ran with the context of the stranger's run "
            f"{run_b['run_id']}: {second}")
    finally:
        fed.stop()
