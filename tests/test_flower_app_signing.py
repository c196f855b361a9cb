"""Issue 21: only consortium-signed app bundles run on a hospital's node.

* The checks (:class:`simulation.engines.flower.app_trust.AppTrust`): a signed bundle is approved; an unsigned one,
  one signed by another key, a signed one with one byte changed, and one the SuperLink misnames are
  refused, each with one line naming the hash and why.
* The gate (:mod:`simulation.engines.flower.verified_clientapp`) against the installed flwr: ``run_clientapp``
  still pulls, installs, then loads, through the names the gate wraps (fails loudly when flwr changes);
  a refused bundle never reaches flwr's installer.
* The CLI: ``secagg flower app-key``, ``sign-app`` (the hash is the one ``flwr run`` submits),
  ``supernode`` refusing a bad key or ``--isolation process``.
* Real processes (one SuperLink and one SuperNode started through ``secagg flower supernode``, loopback TLS):
  a probe app signed by the consortium runs; the same app unsigned, and signed by a foreign key (its
  signature file even in the node's folder), is refused: the round gets an error reply naming the
  refusal, none of its code runs (its import would write a marker file) and nothing of it is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest

from simulation.cli import main
from simulation.engines.flower.app_trust import (AppNotTrustedError, AppTrust, AppTrustError, fab_sha256, sign_fab,
                                         verified_app, write_signature)

pytest.importorskip("flwr")

from simulation.engines.flower import verified_clientapp  # noqa: E402
from simulation.engines.flower.verified_clientapp import FlwrShapeError, check_flwr_shape, install_gate  # noqa: E402

from .probe_apps import app_pyproject, fab_zip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]



PYPROJECT = ('[project]\nname = "probe-app"\nversion = "1.0.0"\n[tool.flwr.app]\npublisher = "stranger"\n')
BUNDLE = fab_zip({"pyproject.toml": PYPROJECT, "probe_client.py": "VARIANT = 'signed'\n"})


def _trust(tmp_path, seed: bytes, *bundles: bytes) -> AppTrust:
    folder = tmp_path / "trusted-apps"
    folder.mkdir(exist_ok=True)
    for bundle in bundles:
        write_signature(sign_fab(bundle, seed), folder)
    return AppTrust.load(bytes(nacl.signing.SigningKey(seed).verify_key).hex(), folder)


def _claims(bundle: bytes) -> dict:
    digest = hashlib.sha256(bundle).hexdigest()
    return {"claimed_hash": digest, "run_fab_hash": digest, "run_fab_id": "stranger/probe-app",
            "run_fab_version": "1.0.0"}


CONSORTIUM, FOREIGN = b"\x01" * 32, b"\x02" * 32


# -- the checks --------------------------------------------------------------------------


def test_a_signed_bundle_is_approved(tmp_path):
    trust = _trust(tmp_path, CONSORTIUM, BUNDLE)
    approval = trust.check(BUNDLE, **_claims(BUNDLE))
    assert approval.fab_sha256 == fab_sha256(BUNDLE) == hashlib.sha256(BUNDLE).hexdigest()
    assert approval.verify_key == trust.verify_key.hex()


def test_an_unsigned_bundle_is_refused(tmp_path):
    trust = _trust(tmp_path, CONSORTIUM, BUNDLE)
    other = fab_zip({"pyproject.toml": PYPROJECT, "probe_client.py": "VARIANT = 'unsigned'\n"})
    with pytest.raises(AppNotTrustedError, match=f"sha256 {fab_sha256(other)}: not signed by the consortium"):
        trust.check(other, **_claims(other))


def test_a_bundle_signed_by_a_foreign_key_is_refused_even_with_its_signature_file_at_the_node(tmp_path):
    trust = _trust(tmp_path, CONSORTIUM, BUNDLE)
    foreign = fab_zip({"pyproject.toml": PYPROJECT, "probe_client.py": "VARIANT = 'foreign'\n"})
    document = sign_fab(foreign, FOREIGN)
    write_signature(document, trust.signatures)
    with pytest.raises(AppNotTrustedError, match="does not verify under the consortium's app key") as refused:
        trust.check(foreign, **_claims(foreign))
    assert document["verify_key"][:16] in str(refused.value) and "\n" not in str(refused.value)
    # A foreign signature file that claims the consortium's key does not verify either.
    write_signature(document | {"verify_key": trust.verify_key.hex()}, trust.signatures)
    with pytest.raises(AppNotTrustedError, match="does not verify"):
        trust.check(foreign, **_claims(foreign))


def test_one_changed_byte_of_a_signed_bundle_is_refused(tmp_path):
    trust = _trust(tmp_path, CONSORTIUM, BUNDLE)
    changed = bytearray(BUNDLE)
    changed[len(changed) // 2] ^= 1
    with pytest.raises(AppNotTrustedError, match="not signed"):
        trust.check(bytes(changed), **_claims(bytes(changed)))


def test_the_folder_is_read_at_each_check_so_adding_or_deleting_a_signature_needs_no_restart(tmp_path):
    trust = _trust(tmp_path, CONSORTIUM)
    with pytest.raises(AppNotTrustedError, match="not signed"):
        trust.check(BUNDLE, **_claims(BUNDLE))
    path = write_signature(sign_fab(BUNDLE, CONSORTIUM), trust.signatures)
    assert trust.check(BUNDLE, **_claims(BUNDLE)).signature_file == str(path)
    path.unlink()  # revoked
    with pytest.raises(AppNotTrustedError, match="not signed"):
        trust.check(BUNDLE, **_claims(BUNDLE))


@pytest.mark.parametrize("lie", [{"claimed_hash": "0" * 64}, {"claimed_hash": None}, {"run_fab_hash": "1" * 64},
                                 {"run_fab_id": "secagg/secagg-flower"}, {"run_fab_version": "0.9.0"}])
def test_a_signed_bundle_the_superlink_misnames_is_refused(tmp_path, lie):
    """flwr loads the app from a folder named by the run's fab_id, version and claimed hash: each must be
    the checked bytes', or a signed bundle could be installed while another folder is loaded."""
    trust = _trust(tmp_path, CONSORTIUM, BUNDLE)
    with pytest.raises(AppNotTrustedError, match="refused"):
        trust.check(BUNDLE, **(_claims(BUNDLE) | lie))


def test_a_bad_verify_key_or_missing_folder_is_a_typed_error(tmp_path):
    with pytest.raises(AppTrustError, match="hex characters"):
        (tmp_path / "k.pub").write_text("nope")
        AppTrust.load(tmp_path / "k.pub", tmp_path)
    with pytest.raises(AppTrustError, match="does not exist"):
        AppTrust.load("ab" * 32, tmp_path / "missing")


# -- the gate against the installed flwr --------------------------------------------------


def test_flwr_run_clientapp_still_pulls_then_installs_then_loads():
    """Fails loudly when a new flwr moves the install or the load: the gate would then not sit in front."""
    check_flwr_shape()


def test_the_shape_check_refuses_a_flwr_that_loads_before_it_installs():
    class Reordered:
        __name__ = "fake.run_clientapp"

        @staticmethod
        def pull_task_input(client):
            return client

        @staticmethod
        def install_from_fab(content):
            return content

        @staticmethod
        def run_clientapp(client):
            message, context, run, fab = pull_task_input(client)  # noqa: F821
            app = load_client_app_fn(run)  # noqa: F821
            install_from_fab(fab.content, skip_prompt=True)  # noqa: F821
            return app, message, context

    with pytest.raises(FlwrShapeError, match="no longer runs"):
        check_flwr_shape(Reordered)
    del Reordered.install_from_fab
    with pytest.raises(FlwrShapeError, match="has no install_from_fab"):
        check_flwr_shape(Reordered)


def test_the_gate_hands_flwr_only_signed_bundles(tmp_path, monkeypatch):
    """Through the real module of ``run_clientapp``: a refused bundle never reaches flwr's installer."""
    from types import SimpleNamespace

    from flwr.supernode.runtime import run_clientapp as module

    node_home = tmp_path / "node-flwr-home"
    monkeypatch.setenv("FLWR_HOME", str(node_home))  # restored after the test: the gate repoints it
    unsigned = fab_zip({"pyproject.toml": PYPROJECT, "probe_client.py": "VARIANT = 'unsigned'\n"})
    installed = []
    tasks = iter([BUNDLE, unsigned])

    def pull(client):
        content = next(tasks)
        run = SimpleNamespace(fab_hash=fab_sha256(content), fab_id="stranger/probe-app", fab_version="1.0.0")
        return "message", "context", run, SimpleNamespace(hash_str=fab_sha256(content), content=content)

    monkeypatch.setattr(module, "pull_task_input", pull)
    monkeypatch.setattr(module, "install_from_fab", lambda content, **kw: installed.append(content) or "dir")
    install_gate(_trust(tmp_path, CONSORTIUM, BUNDLE), module)
    for expected in ("approved", "refused"):
        *_, fab = module.pull_task_input(None)
        if expected == "approved":
            assert module.install_from_fab(fab.content, skip_prompt=True) == "dir"
            assert verified_app().fab_sha256 == fab_sha256(BUNDLE)
            # flwr installs into (and loads from) a fresh private FLWR_HOME of this process, never the node's.
            private = Path(os.environ["FLWR_HOME"])
            assert private != node_home and private.is_dir() and not any(private.iterdir())
            assert private.stat().st_mode & 0o077 == 0
        else:
            with pytest.raises(AppNotTrustedError, match="not signed"):
                module.install_from_fab(fab.content, skip_prompt=True)
            assert verified_app() is None
    assert installed == [BUNDLE]


def test_the_deployment_facts_say_which_nodes_verified_the_app():
    from simulation.engines.flower.deploy import deployment_facts

    verified = {"app-sha256": "ab" * 32, "app-key": "cd" * 32}
    facts = lambda nodes: deployment_facts({"out": "/r"}, {"tls": True, "observed": "x"}, nodes)  # noqa: E731
    assert facts({"site-1": verified, "site-2": verified})["app_verification"].startswith("ON: ")
    mixed = facts({"site-1": verified, "site-2": {"ledger": "/l"}})
    assert mixed["app_verification"].startswith("ON at 1 of 2 nodes (site-1): ")
    assert mixed["nodes"]["site-2"]["app_verified"] is False and mixed["nodes"]["site-1"]["app_key"] == "cd" * 32
    assert facts({"site-1": {"ledger": "/l"}})["app_verification"].startswith("OFF: ")


# -- the CLI ------------------------------------------------------------------------------


def test_sign_app_signs_the_bundle_flwr_run_submits(tmp_path, capsys):
    """``flwr build`` (what sign-app runs) and ``flwr run`` build the same bytes; the signature verifies."""
    from flwr.cli.build import build_fab_from_disk

    assert main(["flower", "app-key", "--out", str(tmp_path / "consortium")]) == 0
    key = tmp_path / "consortium" / "consortium-apps.ed25519"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    capsys.readouterr()
    app = ROOT / "simulation" / "engines" / "flower" / "app"
    assert main(["flower", "sign-app", str(app), "--key", str(key), "--out", str(tmp_path / "sigs"),
                 "--json"]) == 0
    signed = json.loads(capsys.readouterr().out)
    assert signed["fab_sha256"] == fab_sha256(build_fab_from_disk(app))
    trust = AppTrust.load(tmp_path / "consortium" / "consortium-apps.pub", tmp_path / "sigs")
    content = build_fab_from_disk(app)
    assert trust.check(content, claimed_hash=fab_sha256(content)).fab_sha256 == signed["fab_sha256"]


def test_sign_app_with_a_passphrase_protected_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("APP_PASS", "correct horse battery staple")
    assert main(["flower", "app-key", "--out", str(tmp_path / "c"), "--passphrase-env", "APP_PASS"]) == 0
    (tmp_path / "b.fab").write_bytes(BUNDLE)
    key = str(tmp_path / "c" / "consortium-apps.ed25519")
    monkeypatch.setenv("APP_PASS", "wrong")
    assert main(["flower", "sign-app", str(tmp_path / "b.fab"), "--key", key, "--out", str(tmp_path / "s"),
                 "--passphrase-env", "APP_PASS"]) == 2
    assert "wrong passphrase" in capsys.readouterr().err
    monkeypatch.setenv("APP_PASS", "correct horse battery staple")
    assert main(["flower", "sign-app", str(tmp_path / "b.fab"), "--key", key, "--out", str(tmp_path / "s"),
                 "--passphrase-env", "APP_PASS"]) == 0
    assert (tmp_path / "s" / f"{fab_sha256(BUNDLE)}.json").exists()


def test_the_node_launcher_refuses_a_bad_key_and_process_isolation(tmp_path, capsys):
    (tmp_path / "sigs").mkdir()
    assert main(["flower", "supernode", "--app-key", "xyz", "--trusted-apps", str(tmp_path / "sigs"), "--"]) == 2
    assert "app verify key" in capsys.readouterr().err
    assert main(["flower", "supernode", "--app-key", "ab" * 32, "--trusted-apps", str(tmp_path / "sigs"), "--",
                 "--isolation", "process"]) == 2
    err = capsys.readouterr().err
    assert "--isolation process" in err and len(err.strip().splitlines()) == 1


# -- real processes -----------------------------------------------------------------------

PROBE_PYPROJECT = app_pyproject("probe-app", {"serverapp": "probe_server:app", "clientapp": "probe_client:app"},
                              config={"out": ""})

PROBE_SERVER = """import json, time
from pathlib import Path
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    nodes, deadline = [], time.monotonic() + 60
    while not nodes and time.monotonic() < deadline:
        nodes = sorted(grid.get_node_ids())
        time.sleep(0.2)
    messages = [Message(RecordDict({"q": ConfigRecord({"x": 1})}), dst_node_id=n, message_type="query")
                for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=90))
    Path(context.run_config["out"]).write_text(json.dumps(
        [{"error": r.error.reason if r.has_error() else None,
          "variant": None if r.has_error() else r.content["a"]["variant"]} for r in replies]))
"""

# Its import writes a marker (only where PROBE_MARKER_DIR is set: the node): proof that code of it ran there.
PROBE_CLIENT = """import os
from pathlib import Path
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

VARIANT = "{variant}"
if os.environ.get("PROBE_MARKER_DIR"):
    (Path(os.environ["PROBE_MARKER_DIR"]) / VARIANT).write_text("imported")

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    return Message(RecordDict({{"a": ConfigRecord({{"variant": VARIANT}})}}), reply_to=msg)
"""


def _probe_app(root: Path, variant: str) -> Path:
    app = root / variant / "probeapp"
    app.mkdir(parents=True)
    (app / "pyproject.toml").write_text(PROBE_PYPROJECT)
    (app / "probe_server.py").write_text(PROBE_SERVER)
    (app / "probe_client.py").write_text(PROBE_CLIENT.format(variant=variant))
    return app


def test_nodes_run_the_consortium_signed_app_and_refuse_unsigned_and_foreign_signed_ones(tmp_path):
    from tests.flower_federation import tool
    from tests.flower_processes import Federation, start_verifying_supernode

    fed = Federation(tmp_path)
    try:
        apps = {variant: _probe_app(tmp_path / "apps", variant) for variant in ("signed", "unsigned", "foreign")}
        assert main(["flower", "app-key", "--out", str(tmp_path / "consortium")]) == 0
        assert main(["flower", "app-key", "--out", str(tmp_path / "stranger")]) == 0
        trusted = tmp_path / "trusted-apps"
        assert main(["flower", "sign-app", str(apps["signed"]), "--out", str(trusted),
                     "--key", str(tmp_path / "consortium" / "consortium-apps.ed25519")]) == 0
        # The stranger's signature file even sits in the node's folder: it still does not verify.
        assert main(["flower", "sign-app", str(apps["foreign"]), "--out", str(trusted),
                     "--key", str(tmp_path / "stranger" / "consortium-apps.ed25519")]) == 0
        fed.superlink()
        markers = tmp_path / "markers"
        markers.mkdir()
        node_home = start_verifying_supernode(fed, tmp_path, trusted, {"PROBE_MARKER_DIR": str(markers)})

        def run(variant: str) -> list[dict]:
            out = tmp_path / f"{variant}.json"
            done = subprocess.run([tool("flwr"), "run", str(apps[variant]), "loop", "--stream", "--run-config",
                                   f'out="{out}"'], capture_output=True, text=True, env=fed.env, cwd=tmp_path,
                                  timeout=240)
            assert out.exists(), f"{variant}: no reply record (rc {done.returncode})\n{done.stdout}\n{done.stderr}\n" \
                                 f"{fed.logs()}"
            return json.loads(out.read_text())

        for variant in ("unsigned", "foreign"):
            digest = fab_sha256(_built(apps[variant]))
            [reply] = run(variant)
            assert reply["variant"] is None and "AppNotTrustedError" in reply["error"], reply
            assert digest in reply["error"] and "refused" in reply["error"]
            assert not (markers / variant).exists(), f"code of the {variant} bundle ran on the node"
            log = (tmp_path / "supernode-1.log").read_text()
            assert f"secagg app verifier: app bundle sha256 {digest}: " in log
        assert "not signed by the consortium's app key" in log and "does not verify under" in log
        [reply] = run("signed")
        assert reply == {"error": None, "variant": "signed"}
        assert (markers / "signed").read_text() == "imported"
        assert sorted(os.listdir(markers)) == ["signed"]
        # Nothing was installed into the node's own FLWR_HOME: each checked ClientApp installs the approved
        # bundle into a fresh private FLWR_HOME of its own (no planted folder can be reused), removed at exit.
        assert not (node_home / "apps").exists() or not any((node_home / "apps").iterdir())
    finally:
        fed.stop()


def _built(app: Path) -> bytes:
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(app)


def test_the_module_runs_as_a_flwr_clientapp_replacement():
    """The shim execs ``python -m simulation.engines.flower.verified_clientapp``: its bad-key path is one line, exit 2."""
    done = subprocess.run([sys.executable, "-m", "simulation.engines.flower.verified_clientapp", "--app-key", "zz",
                           "--trusted-apps", ".", "--token", "x"], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stderr.strip().startswith("secagg app verifier: app verify key")
    assert verified_clientapp.CLIENTAPP_COMMAND == "flwr-clientapp"


def test_an_approved_run_gets_back_its_own_run_id_and_run_config_from_a_series_context():
    """flwr keeps one node Context per run series: another run of the series may have replaced it."""
    from types import SimpleNamespace

    from simulation.engines.flower.verified_clientapp import pin_context_to_run

    bundle = fab_zip({"pyproject.toml": PYPROJECT + '[tool.flwr.app.components]\nserverapp = "probe_server:app"\n'
                   'clientapp = "probe_client:app"\n[tool.flwr.app.config]\nrounds = 1\nout = ""\n',
                   "probe_client.py": "VARIANT = 'signed'\n"})
    run = SimpleNamespace(run_id=7, override_config={"rounds": 3})
    context = SimpleNamespace(run_id=99, run_config={"out": "/stranger", "rounds": 1})
    pin_context_to_run(context, run, bundle)
    assert context.run_id == 7
    assert context.run_config == {"rounds": 3, "out": ""}  # the signed bundle's defaults, this run's overrides
    same = SimpleNamespace(run_id=7, run_config={"rounds": 3, "kept": True})
    pin_context_to_run(same, run, bundle)
    assert same.run_config == {"rounds": 3, "kept": True}  # its own context is left as it is
