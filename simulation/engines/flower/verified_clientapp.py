"""The node side of app signing (issue 21): a ``flwr-clientapp`` that checks the bundle before it runs.

How a node runs an app in flwr 1.42. ``flower-supernode`` (default ``--isolation subprocess``) starts
``flower-superexec``, which starts one ``flwr-clientapp`` process per message, each by its command
name from ``PATH`` (``flwr/supercore/constant.py::TASK_TYPE_TO_COMMAND``,
``flwr/supercore/superexec/executor/subprocess_executor.py``). That process
(``flwr/supernode/runtime/run_clientapp.py::run_clientapp``) pulls the message, context, run and bundle
from the SuperNode (``pull_task_input``), installs the bundle (``install_from_fab``) and then imports the
app from the installed folder. Nothing of the bundle is imported before ``install_from_fab``.

What this module does.
* :func:`start_supernode` (``secagg flower supernode --app-key KEY --trusted-apps DIR -- ARGS``) starts
  ``flower-supernode ARGS`` with a private folder first on its ``PATH`` whose only file is a
  ``flwr-clientapp`` that runs :func:`main` here with the node's trust settings. Its SuperExec, and so
  every ClientApp of this node, then goes through the check. The folder also holds a refusal under every
  other command flwr's SuperExec may start (``flwr-agentapp``, ``flwr-serverapp``, ...: the SuperNode makes
  an AGENT_APP task for any run whose bundle names an ``agentapp``, and ``flwr-agentapp`` installs and
  imports it unchecked). ``--isolation process`` is refused (the operator's own SuperExec would start the
  unchecked ``flwr-clientapp``), and so is ``--allow-runtime-dependency-installation`` (it would install
  the app's named dependencies from an index), each also as an argparse abbreviation (``--isol``).
* :func:`main` installs :func:`install_gate` and hands over to flwr's own ``flwr-clientapp`` entry
  point (``flwr.supernode.cli.flwr_clientapp.flwr_clientapp``) with the remaining arguments.

The one place that touches flwr internals is :func:`install_gate`. It wraps two names in the module of
``run_clientapp``: ``pull_task_input`` (to learn what the SuperLink claims about the bundle: its hash and
the run's app id and version) and ``install_from_fab`` (to check the bundle's bytes against the
consortium's signatures, :class:`~simulation.engines.flower.app_trust.AppTrust`, before flwr writes or imports
any of it). A refused bundle raises inside ``run_clientapp``'s ``try``: flwr then replies to the message
with an error naming the reason, and the node's log holds our one line. The gate fails closed:
:func:`check_flwr_shape` refuses to start when ``run_clientapp`` no longer calls those two names in that
order before loading the app (a new flwr), and the install wrapper refuses a bundle when the pull
wrapper did not see it. ``tests/test_flower_app_signing.py`` checks that shape against the installed flwr.
The security argument (what the node checks, what a SuperLink or Control-API attacker can then do and
cannot, the residual risk) is in :mod:`simulation.engines.flower.app_trust`.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .app_trust import AppNotTrustedError, AppTrust, AppTrustError, record_verified

__all__ = ["install_gate", "check_flwr_shape", "FlwrShapeError", "main", "start_supernode", "add_trust_arguments",
           "CLIENTAPP_COMMAND", "private_flwr_home", "pin_context_to_run"]

#: The command name flwr's SuperExec starts for a ClientApp (flwr/supercore/constant.py).
CLIENTAPP_COMMAND = "flwr-clientapp"


class FlwrShapeError(AppTrustError):
    """The installed flwr no longer runs a ClientApp the way the gate relies on: refuse to run anything."""


def _runtime_module():
    from flwr.supernode.runtime import run_clientapp as module

    return module


def check_flwr_shape(module=None) -> None:
    """Raise :class:`FlwrShapeError` unless ``run_clientapp`` pulls the task, installs the bundle's bytes
    and only then loads the app, through the two module-level names the gate wraps."""
    module = module or _runtime_module()
    where = f"{module.__name__}.run_clientapp"
    for name in ("pull_task_input", "install_from_fab", "run_clientapp"):
        if not callable(getattr(module, name, None)):
            raise FlwrShapeError(f"{where}: flwr's module has no {name}(); this flwr is not the one the app "
                                 "verifier knows (flwr 1.42): refusing to run any app")
    try:
        source = inspect.getsource(module.run_clientapp)
    except (OSError, TypeError):
        raise FlwrShapeError(f"{where}: its source is not readable, so the app verifier cannot check that it "
                             "installs before it loads: refusing to run any app") from None
    steps = ["pull_task_input(client)", "install_from_fab(fab.content", "load_client_app_fn("]
    found = [source.find(step) for step in steps]
    if -1 in found or found != sorted(found) or source.count("install_from_fab(") != 1:
        raise FlwrShapeError(f"{where} no longer runs {' -> '.join(steps)} in that order (once each): this flwr "
                             "is not the one the app verifier knows (flwr 1.42): refusing to run any app")


def install_gate(trust: AppTrust, module=None) -> None:
    """Wrap ``pull_task_input`` and ``install_from_fab`` in flwr's ``run_clientapp`` module (see above)."""
    module = module or _runtime_module()
    check_flwr_shape(module)
    original_pull, original_install = module.pull_task_input, module.install_from_fab
    claims: dict = {}
    pulled: dict = {}

    def pull_task_input(client):
        message, context, run, fab = original_pull(client)
        claims.clear()
        claims.update(claimed_hash=fab.hash_str, run_fab_hash=run.fab_hash, run_fab_id=run.fab_id,
                      run_fab_version=run.fab_version)
        pulled.clear()
        pulled.update(context=context, run=run)
        return message, context, run, fab

    def install_from_fab(fab_file, *args, **kwargs):
        try:
            if not isinstance(fab_file, bytes) or not claims:
                raise AppNotTrustedError("an app bundle reached installation without passing the verifier's pull "
                                         "step: refused")
            approval = trust.check(fab_file, **claims)
        except AppNotTrustedError as exc:
            record_verified(None)
            print(f"secagg app verifier: {exc}", file=sys.stderr, flush=True)
            raise
        record_verified(approval)
        print(f"secagg app verifier: app bundle sha256 {approval.fab_sha256} is signed by the consortium's app key "
              f"{trust.fingerprint()} ({Path(approval.signature_file).name}): installing it", file=sys.stderr,
              flush=True)
        pin_context_to_run(pulled.get("context"), pulled.get("run"), fab_file)
        private_flwr_home()
        return original_install(fab_file, *args, **kwargs)

    module.pull_task_input = pull_task_input
    module.install_from_fab = install_from_fab


def private_flwr_home() -> Path:
    """Point ``FLWR_HOME`` of this ClientApp process at a fresh 0700 folder (removed at exit); its path.

    flwr installs a bundle into ``$FLWR_HOME/apps/<publisher>.<name>.<version>.<first 8 hex of its hash>``
    and skips the install when that folder exists (``flwr/cli/install.py``), then imports the app from it.
    A folder planted there in advance - by anyone who can write to a shared ``FLWR_HOME``, e.g. the
    SuperLink's ``flwr-serverapp`` on the same host, after a 32-bit prefix search against the reproducible
    hash of a signed bundle - would run instead of the bytes the gate approved. In a fresh folder of this
    process alone nothing exists before the install, so what is imported is exactly what was checked.
    (flwr reads ``FLWR_HOME`` each time it derives a path, ``flwr.supercore.utils.get_flwr_home``.)
    """
    import atexit

    home = Path(tempfile.mkdtemp(prefix="secagg-clientapp-home."))
    atexit.register(shutil.rmtree, home, True)
    os.environ["FLWR_HOME"] = str(home)
    return home


def pin_context_to_run(context, run, fab_bytes: bytes) -> None:
    """Give the approved run's ClientApp its own run id and run config, whatever the SuperNode handed it.

    flwr 1.42 keeps one node Context per run *series*: on the first message of an unknown run the SuperNode
    rebuilds the series' context with that run's id and run config, and every ClientApp of every run of the
    series receives it (``flwr/supernode/start_client_internal.py``). ``StartRun`` accepts any existing
    series id, so a stranger's run started in a consortium run's series (even of a bundle the node then
    refuses) would hand the consortium's next ClientApp the stranger's run id and run config. Here, after
    the bundle of *this* run was approved, the context is rebuilt from this run the way the SuperNode does
    it (``get_fused_config_from_fab``: the signed bundle's defaults fused with this run's overrides).
    The series' shared ``context.state`` stays shared: the app seals its session under the run id
    (:mod:`simulation.engines.flower.sealed_state`), so another run's records cannot be opened as this run's.
    """
    run_id = getattr(run, "run_id", None)
    if run_id is None or not hasattr(context, "run_id") or context.run_id == run_id:
        return
    from flwr.common.config import get_fused_config_from_fab

    print(f"secagg app verifier: the node handed run {run_id}'s ClientApp the context of run "
          f"{context.run_id} (same run series): restored to run {run_id}'s own id and run config",
          file=sys.stderr, flush=True)
    context.run_id = run_id
    context.run_config = get_fused_config_from_fab(fab_bytes, run)


def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app-key", required=True,
                        help="the consortium's app verify key: 64 hex characters or a file holding them "
                             "(`secagg flower app-key` writes it as DIR/consortium-apps.pub)")
    parser.add_argument("--trusted-apps", required=True,
                        help="folder of the consortium's app signature files (`secagg flower sign-app` writes "
                             "them); read again for every message, so a new signature needs no restart")


def main(argv: list[str] | None = None) -> int:
    """``python -m simulation.engines.flower.verified_clientapp --app-key K --trusted-apps DIR FLWR_CLIENTAPP_ARGS``."""
    parser = argparse.ArgumentParser(prog="secagg-verified-clientapp", allow_abbrev=False)
    add_trust_arguments(parser)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        trust = AppTrust.load(args.app_key, args.trusted_apps)
        install_gate(trust)
    except AppTrustError as exc:
        print(f"secagg app verifier: {exc}", file=sys.stderr, flush=True)
        return 2
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    sys.argv = [CLIENTAPP_COMMAND, *rest]
    flwr_clientapp()
    return 0


def _shim(directory: Path, trust: AppTrust) -> None:
    """DIRECTORY/flwr-clientapp: runs :func:`main` with this node's trust settings and flwr's arguments."""
    path = directory / CLIENTAPP_COMMAND
    # -P: no working directory first on sys.path (a `simulation` package lying there would replace the verifier).
    command = [sys.executable, "-P", "-m", "simulation.engines.flower.verified_clientapp",
               "--app-key", trust.verify_key.hex(), "--trusted-apps", str(trust.signatures)]
    path.write_text("#!/bin/sh\n# secagg: every ClientApp of this node is checked against the consortium's "
                    "app signatures first\nexec " + " ".join(shlex.quote(c) for c in command) + ' "$@"\n')
    path.chmod(0o700)
    # flwr's SuperExec on a node starts any task type (AutoExecPlugin), e.g. flwr-agentapp for a run whose
    # bundle names an agentapp: each of those would install and import the bundle unchecked. Refuse them all.
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND

    for command in set(TASK_TYPE_TO_COMMAND.values()) - {CLIENTAPP_COMMAND}:
        refuse = directory / command
        line = (f"secagg app verifier: {command} refused: this node runs only ClientApps, each checked against "
                "the consortium's app signatures")
        refuse.write_text(f"#!/bin/sh\necho {shlex.quote(line)} >&2\nexit 126\n")
        refuse.chmod(0o700)


def _refuse_unsafe_arguments(args: list[str]) -> None:
    """Refuse ``--isolation`` other than subprocess and runtime dependency installation, also when written as
    an abbreviation (flower-supernode's argparse accepts any unambiguous prefix, e.g. ``--isol``)."""
    for i, arg in enumerate(args):
        name, has_value, value = arg.partition("=")
        if len(name) < 3 or not name.startswith("--"):
            continue
        if "--allow-runtime-dependency-installation".startswith(name):
            raise AppTrustError(f"{arg}: runtime dependency installation would install the app's named dependencies "
                                "from a package index, code the consortium did not sign; install them beforehand")
        value = value if has_value else (args[i + 1] if i + 1 < len(args) else None)
        if "--isolation".startswith(name) and value is not None and value != "subprocess":
            raise AppTrustError(f"--isolation {value}: the SuperNode would leave starting its ClientApps to a process "
                                "of yours that the app verifier does not control; use the default (subprocess)")


def start_supernode(app_key, trusted_apps, supernode_args: list[str]) -> int:
    """Run ``flower-supernode SUPERNODE_ARGS`` with every ClientApp checked; its exit status.

    Raises :class:`AppTrustError` (one line) for a bad key or folder, ``--isolation process`` or runtime
    dependency installation (however abbreviated)."""
    trust = AppTrust.load(app_key, trusted_apps)
    check_flwr_shape()
    _refuse_unsafe_arguments(supernode_args)
    shim = Path(tempfile.mkdtemp(prefix="secagg-verified-clientapp."))
    try:
        _shim(shim, trust)
        env = dict(os.environ)
        env["PATH"] = f"{shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        supernode = shutil.which("flower-supernode", path=env["PATH"])
        if supernode is None:
            raise AppTrustError("flower-supernode is not on PATH nor beside this Python (pip install 'secagg[flower]')")
        print(f"secagg app verifier: this node runs only app bundles signed by the consortium's app key "
              f"{trust.fingerprint()} (signatures in {trust.signatures})", file=sys.stderr, flush=True)
        proc = subprocess.Popen([supernode, *supernode_args], env=env)

        def forward(signum, _frame):
            proc.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = proc.wait()
            return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    finally:
        shutil.rmtree(shim, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
