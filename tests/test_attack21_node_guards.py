"""Attacks on issue 21's node-side guards: the launcher's argument check, the trusted-apps folder, FLWR_HOME.

* ``secagg flower supernode`` refuses ``--isolation process`` by looking for the literal option name, but
  ``flower-supernode`` parses its arguments with argparse's default ``allow_abbrev=True``: ``--isol process``
  is the same option, not seen by the check.
* Runtime dependency installation (``--allow-runtime-dependency-installation``, or any abbreviation of it)
  makes every node ``uv sync`` the signed app's *named* dependencies (``secagg[flower,sim]``) from a
  package index into an environment first on ``sys.path``: bytes the consortium never signed.
* A hostile file in the trusted-apps folder (the suite itself puts a stranger's signature file there) must
  approve nothing and block nothing; a deeply nested JSON document raises RecursionError out of
  ``AppTrust.check``, so the consortium's own signed bundle is refused.
* ``$FLWR_HOME/apps`` (documented as residual risk): a folder already there under the name flwr derives
  from (publisher, name, version, 8 hex digits of the hash) is used without reinstalling, so a signed
  bundle's approval runs whatever that folder holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nacl.signing
import pytest

from simulation.engines.flower.app_trust import AppNotTrustedError, AppTrust, AppTrustError, fab_sha256, sign_fab, \
    write_signature

pytest.importorskip("flwr")

from simulation.engines.flower import verified_clientapp  # noqa: E402

from .probe_apps import app_pyproject, fab_zip  # noqa: E402

CONSORTIUM = b"\x01" * 32
ROOT = Path(__file__).resolve().parents[1]



def _trust(folder: Path, *bundles: bytes) -> AppTrust:
    folder.mkdir(exist_ok=True)
    for bundle in bundles:
        write_signature(sign_fab(bundle, CONSORTIUM), folder)
    return AppTrust.load(bytes(nacl.signing.SigningKey(CONSORTIUM).verify_key).hex(), folder)


def _flower_supernode_accepts(*args: str) -> str:
    """flower-supernode's own parser on ARGS plus ``--isol bogus`` (so it stops at parsing): its error line.
    It names only --isolation when ARGS parsed and the abbreviation ``--isol`` was taken as --isolation."""
    binary = Path(sys.executable).parent / "flower-supernode"
    done = subprocess.run([str(binary), *args, "--isol", "bogus"], capture_output=True, text=True, timeout=120)
    return done.stderr.strip().splitlines()[-1]


@pytest.fixture
def no_supernode(monkeypatch):
    """``start_supernode`` with flower-supernode replaced by a recorder (it exits 0 at once)."""
    started = []

    class Recorder:
        def __init__(self, args, env):
            started.append(args)

        def wait(self):
            return 0

        def send_signal(self, signum):
            pass

    monkeypatch.setattr(verified_clientapp, "subprocess", SimpleNamespace(Popen=Recorder))
    return started


@pytest.mark.parametrize("args", [["--isol", "process"], ["--isolat=process"]])
def test_process_isolation_is_refused_however_flower_supernode_would_parse_it(tmp_path, no_supernode, args):
    assert "argument --isolation: invalid choice: 'bogus'" in _flower_supernode_accepts()  # flwr's reading
    (tmp_path / "sigs").mkdir()
    with pytest.raises(AppTrustError, match="isolation"):
        verified_clientapp.start_supernode("ab" * 32, tmp_path / "sigs", args)
    assert no_supernode == []


@pytest.mark.parametrize("flag", ["--allow-runtime-dependency-installation", "--allow-runtime"])
def test_runtime_dependency_installation_is_refused_on_a_verifying_node(tmp_path, no_supernode, flag):
    assert "argument --isolation: invalid choice: 'bogus'" in _flower_supernode_accepts(flag)  # flwr takes it
    (tmp_path / "sigs").mkdir()
    with pytest.raises(AppTrustError, match="dependency"):
        verified_clientapp.start_supernode("ab" * 32, tmp_path / "sigs", [flag])
    assert no_supernode == []


BUNDLE = fab_zip({"pyproject.toml": '[project]\nname = "probe-app"\nversion = "1.0.0"\n[tool.flwr.app]\n'
                                 'publisher = "stranger"\n', "probe_client.py": "VARIANT = 'signed'\n"})


def test_a_deeply_nested_file_in_the_trusted_apps_folder_does_not_block_a_signed_bundle(tmp_path):
    trust = _trust(tmp_path / "sigs", BUNDLE)
    (tmp_path / "sigs" / "0000-hostile.json").write_text("[" * 200_000)
    digest = fab_sha256(BUNDLE)
    assert trust.check(BUNDLE, claimed_hash=digest).fab_sha256 == digest


def test_a_fifo_in_the_trusted_apps_folder_does_not_hang_the_check(tmp_path):
    """Run in a child with a bound: reading a FIFO with no writer blocks forever."""
    trust = _trust(tmp_path / "sigs", BUNDLE)
    os.mkfifo(tmp_path / "sigs" / "0000-fifo.json")
    (tmp_path / "bundle.fab").write_bytes(BUNDLE)
    code = ("import sys; from pathlib import Path; from simulation.engines.flower.app_trust import AppTrust, fab_sha256\n"
            "b = Path(sys.argv[3]).read_bytes(); t = AppTrust.load(sys.argv[1], sys.argv[2])\n"
            "print(t.check(b, claimed_hash=fab_sha256(b)).fab_sha256)")
    try:
        done = subprocess.run([sys.executable, "-c", code, trust.verify_key.hex(), str(trust.signatures),
                               str(tmp_path / "bundle.fab")], capture_output=True, text=True, timeout=60,
                              env=os.environ | {"PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        pytest.fail("AppTrust.check blocked on a FIFO in the trusted-apps folder")
    assert done.stdout.strip() == fab_sha256(BUNDLE), done.stderr


APP_PYPROJECT = app_pyproject("probe-app", {"serverapp": "probe_client:app", "clientapp": "probe_client:app"},
                              wheel_packages=False)


def test_a_prepopulated_install_folder_is_not_what_a_signed_bundle_runs(tmp_path, monkeypatch):
    """The gate approves the signed bytes, then flwr skips installing them because a folder of the derived
    name exists: what the node would import is not what the consortium signed."""
    from flwr.cli.install import install_from_fab
    from flwr.common.config import get_project_dir
    from types import SimpleNamespace

    from flwr.supernode.runtime import run_clientapp as module

    from flwr.cli.build import build_fab_from_disk

    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(APP_PYPROJECT)
    (app / "probe_client.py").write_text("VARIANT = 'signed'\n")
    bundle = build_fab_from_disk(app)
    home = tmp_path / "flwr-home"
    monkeypatch.setenv("FLWR_HOME", str(home))
    digest = fab_sha256(bundle)
    # Another party (anyone who can write to $FLWR_HOME/apps) planted the folder flwr derives for it.
    planted = get_project_dir("stranger/probe-app", "1.0.0", digest)
    planted.mkdir(parents=True)
    (planted / "pyproject.toml").write_text(APP_PYPROJECT)
    (planted / "probe_client.py").write_text("VARIANT = 'planted'\n")

    def pull(client):
        run = SimpleNamespace(fab_hash=digest, fab_id="stranger/probe-app", fab_version="1.0.0")
        return "message", "context", run, SimpleNamespace(hash_str=digest, content=bundle)

    monkeypatch.setattr(module, "pull_task_input", pull)
    monkeypatch.setattr(module, "install_from_fab", install_from_fab)
    verified_clientapp.install_gate(_trust(tmp_path / "sigs", bundle), module)
    *_, fab = module.pull_task_input(None)
    try:
        installed = module.install_from_fab(fab.content, skip_prompt=True)
    except AppNotTrustedError:
        return  # refused: the folder does not hold the signed bytes
    assert (Path(installed) / "probe_client.py").read_text() == "VARIANT = 'signed'\n", \
        "the approved bundle runs from a folder holding other code than the one signed"


def test_the_node_s_working_directory_cannot_replace_the_verifier(tmp_path, monkeypatch):
    """The shim runs ``python -m simulation.engines.flower.verified_clientapp`` in the SuperNode's working directory;
    ``-m`` puts that directory first on sys.path, so a ``simulation`` package lying there would run instead
    of the verifier (with every bundle then unchecked)."""
    cwd = tmp_path / "cwd"
    (cwd / "simulation" / "engines" / "flower").mkdir(parents=True)
    (cwd / "simulation" / "__init__.py").write_text("")
    (cwd / "simulation" / "engines" / "__init__.py").write_text("")
    (cwd / "simulation" / "engines" / "flower" / "__init__.py").write_text("")
    (cwd / "simulation" / "engines" / "flower" / "verified_clientapp.py").write_text(
        f"open({str(tmp_path / 'planted-ran')!r}, 'w').write('yes')\n")
    (tmp_path / "sigs").mkdir()
    ran = []

    class Recorder:
        def __init__(self, args, env):
            shim = Path(env["PATH"].split(os.pathsep)[0]) / "flwr-clientapp"
            ran.append(subprocess.run([str(shim), "--help"], cwd=cwd, capture_output=True, text=True,
                                      timeout=120, env=os.environ | {"PYTHONPATH": str(ROOT)}))

        def wait(self):
            return 0

    monkeypatch.setattr(verified_clientapp, "subprocess", SimpleNamespace(Popen=Recorder))
    monkeypatch.chdir(cwd)
    assert verified_clientapp.start_supernode("ab" * 32, tmp_path / "sigs", []) == 0
    assert ran and ran[0].returncode == 0 and "usage" in ran[0].stdout.lower(), ran
    assert not (tmp_path / "planted-ran").exists(), "a `simulation` package in the node's cwd ran as the verifier"
