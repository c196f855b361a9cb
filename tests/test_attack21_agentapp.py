"""Attack on issue 21's app verification: an unsigned *AgentApp* bundle runs on a verifying node.

flwr 1.42's SuperNode does not only run ClientApps. When the run a message belongs to has primary task
type ``flwr-agentapp`` (the SuperLink sets it for any bundle whose ``pyproject.toml`` names an ``agentapp``
component, ``control_handlers._get_app_type``), the SuperNode creates an AGENT_APP task
(``start_client_internal._pull_and_store_message``) and its SuperExec, whose plugin accepts every task type
(``AutoExecPlugin.supported_task_types == frozenset(TaskType)``), starts ``flwr-agentapp`` from PATH
(``TASK_TYPE_TO_COMMAND``). ``flwr-agentapp`` installs the bundle and imports it
(``run_agentapp._prepare_task_app``). ``secagg flower supernode`` shims only ``flwr-clientapp``, so
``flwr-agentapp`` resolves to flwr's own entry point beside the Python, and nothing is checked.

Whoever reaches the Control API (the attacker the app_trust docstring addresses) submits an agent bundle
with a user prompt; the SuperLink runs it (its own SuperExec), it pushes one message to every node, and
every node installs and imports the same unsigned bundle.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from simulation.cli import main

pytest.importorskip("flwr")

from .probe_apps import app_pyproject  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- unit level: what the verifying node's SuperExec would start --------------------------


def test_every_task_command_a_verifying_node_can_start_goes_through_the_verifier(tmp_path, monkeypatch):
    """Each command the node's SuperExec may launch must be the verifier's shim or a refusal, never flwr's
    own unchecked entry point (it would install and import a bundle nobody signed)."""
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND
    from flwr.supercore.superexec.plugin import AutoExecPlugin

    from simulation.engines.flower import verified_clientapp

    (tmp_path / "sigs").mkdir()
    seen = {}

    class FakeSupernode:
        def __init__(self, args, env):
            import shutil

            for task_type in AutoExecPlugin.supported_task_types:
                command = TASK_TYPE_TO_COMMAND[task_type]
                where = shutil.which(command, path=env["PATH"])
                seen[command] = (where, Path(where).read_text(errors="replace") if where else "")

        def wait(self):
            return 0

        def send_signal(self, signum):
            pass

    monkeypatch.setattr(verified_clientapp, "subprocess", SimpleNamespace(Popen=FakeSupernode))
    assert verified_clientapp.start_supernode("ab" * 32, tmp_path / "sigs", []) == 0
    assert "simulation.engines.flower.verified_clientapp" in seen["flwr-clientapp"][1]
    unchecked = {command: where for command, (where, text) in seen.items()
                 if where and "secagg" not in text}
    assert not unchecked, f"a verifying node would start these unchecked: {unchecked}"


# -- real processes: a Control-API user runs unsigned code on a verifying node ---------------

AGENT_PYPROJECT = app_pyproject("evil-agent", {"agentapp": "evil_agent:app"})

# Its import writes a marker where PROBE_MARKER_DIR is set (only the node's environment has it).
AGENT = """import json, os, time
from pathlib import Path
from flwr.agentapp import AgentApp

if os.environ.get("PROBE_MARKER_DIR"):
    (Path(os.environ["PROBE_MARKER_DIR"]) / "evil-agent").write_text("imported")

app = AgentApp()


@app.main()
def main(agent, context):
    if os.environ.get("PROBE_MARKER_DIR"):
        return
    nodes, deadline = [], time.monotonic() + 60
    while not nodes and time.monotonic() < deadline:
        out = agent.grid.call({"name": "get_nodes", "call_id": "1", "arguments": {}})
        nodes = json.loads(out["output"])["nodes"]
        time.sleep(0.5)
    agent.grid.call({"name": "push_messages", "call_id": "2", "arguments": {
        "messages": [{"dst_node_id": n["id"], "payload": "hello"} for n in nodes]}})
    time.sleep(60)
"""

SUBMIT = """import hashlib, sys
from pathlib import Path
from flwr.cli.build import build_fab_from_disk
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import init_http_client_from_connection
from flwr.common.serde import fab_to_proto
from flwr.proto.control_pb2 import StartRunRequest
from flwr.supercore.fab import Fab

content = build_fab_from_disk(Path(sys.argv[1]))
connection = read_superlink_connection("loop")
client = init_http_client_from_connection(connection)
res = client.StartRun(StartRunRequest(fab=fab_to_proto(Fab(hashlib.sha256(content).hexdigest(), content, {})),
                                      user_prompt="hello", federation=connection.federation or ""))
print("run", res.run_id if res.HasField("run_id") else None)
"""


def test_an_unsigned_agentapp_bundle_never_runs_on_a_verifying_node(tmp_path):
    from tests.flower_processes import Federation, start_verifying_supernode

    fed = Federation(tmp_path)
    try:
        app = tmp_path / "apps" / "evil"
        app.mkdir(parents=True)
        (app / "pyproject.toml").write_text(AGENT_PYPROJECT)
        (app / "evil_agent.py").write_text(AGENT)
        assert main(["flower", "app-key", "--out", str(tmp_path / "consortium")]) == 0
        trusted = tmp_path / "trusted-apps"
        trusted.mkdir()
        fed.superlink()
        markers = tmp_path / "markers"
        markers.mkdir()
        node_home = start_verifying_supernode(fed, tmp_path, trusted, {"PROBE_MARKER_DIR": str(markers)})
        (tmp_path / "submit.py").write_text(SUBMIT)
        done = subprocess.run([sys.executable, str(tmp_path / "submit.py"), str(app)], capture_output=True,
                              text=True, env=fed.env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0 and "run None" not in done.stdout, f"{done.stdout}\n{done.stderr}"
        # Bounded: the node pulls every 3 s; give the chain (SuperLink agent -> message -> node) 90 s to end
        # in either outcome: the bundle's code ran on the node, or the node refused to start flwr-agentapp.
        log = tmp_path / "supernode-1.log"
        deadline = time.monotonic() + 90
        while (time.monotonic() < deadline and not (markers / "evil-agent").exists()
               and "flwr-agentapp refused" not in log.read_text()):
            time.sleep(0.5)
        assert not (markers / "evil-agent").exists(), (
            "code of an unsigned agent bundle ran on a node started with `secagg flower supernode`\n" + fed.logs())
        assert "secagg app verifier: flwr-agentapp refused" in log.read_text(), fed.logs()
        assert not (node_home / "apps").exists() or not any((node_home / "apps").iterdir())
    finally:
        fed.stop()
