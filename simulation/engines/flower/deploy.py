"""What a deployment of the Flower engine needs from ``secagg`` itself (no ``flwr`` import here).

* :func:`app_path` - the Flower app folder (``pyproject.toml`` naming the ServerApp and the
  ClientApp, ``README.md``, ``deploy-local.sh``) as installed: it ships inside the ``simulation``
  package (``package-data`` in the project's ``pyproject.toml``), so ``flwr run "$(secagg flower
  app-path)"`` works from a wheel, without a source checkout.
* :func:`transport_security` and :func:`deployment_facts` - the deployment as it was, for the run's
  ``summary.json`` and its DPIA: whether TLS was on (read from the command line Flower started the
  ServerApp process with), active mode, the registry, where the coordinator's ledger lives, and
  where each node keeps its ledger and signing key (as the node reported it at registration).
* :func:`run_outcome` - whether a Flower run directory holds a finished run. ``flwr run`` exits 0
  even when the ServerApp raised (Flower records the run as failed, the CLI does not report it), so
  a deployment script cannot use its exit code; the ServerApp writes ``summary.json`` last, after
  every round, so a missing summary, or one with fewer completed rounds than planned, is a failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["app_path", "RunOutcome", "run_outcome", "APP_FILES", "transport_security", "deployment_facts"]

#: The files of the app folder that a deployment uses (all shipped in the wheel).
APP_FILES = ("pyproject.toml", "README.md", "deploy-local.sh")


def app_path() -> Path:
    """The installed Flower app folder (the one ``flwr run`` takes); it holds ``pyproject.toml``."""
    return Path(__file__).resolve().parent / "app"


@dataclass(frozen=True)
class RunOutcome:
    """The verdict on one Flower run directory."""

    ok: bool
    reason: str
    rounds_completed: int = 0
    rounds_planned: int = 0
    run_id: str = ""
    """The coordinator's ledger run id: the folder name of the nodes' anchors (``STATE_DIR/anchors/RUN_ID``)."""


def run_outcome(run_dir) -> RunOutcome:
    """Did the ServerApp finish every planned round in ``run_dir``?

    ``ok`` only when ``summary.json`` exists, comes from the Flower engine, and records as many
    completed rounds as were planned (a run stopped early for budget, or with aborted rounds, is
    not the run that was asked for). ``reason`` is one line for the operator.
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        started = (run_dir / "config.json").is_file()
        return RunOutcome(False, f"{run_dir} holds no summary.json: the run "
                                 + ("started but did not finish" if started else "never opened its run directory")
                                 + " (the reason is in the output of `flwr run --stream`, or `flwr log RUN_ID`)")
    try:
        summary = json.loads(summary_path.read_text())
        completed, planned = int(summary["rounds_completed"]), int(summary["rounds_planned"])
        engine = summary.get("engine")
    except (ValueError, KeyError, TypeError):
        return RunOutcome(False, f"{summary_path} is not a run summary")
    if engine != "flower":
        return RunOutcome(False, f"{run_dir} is not a Flower run (engine {engine!r})")
    if completed != planned:
        stopped = summary.get("stopped")
        aborted = summary.get("rounds_aborted") or []
        why = "; ".join(filter(None, [f"stopped: {stopped}" if stopped else "",
                                      f"aborted rounds {aborted}" if aborted else ""]))
        return RunOutcome(False, f"{run_dir}: {completed} of {planned} rounds completed" + (f" ({why})" if why else ""),
                          completed, planned)
    from dp import PrivacyLedger
    from dp.errors import LedgerError

    try:
        with PrivacyLedger.open(run_dir) as ledger:
            run_id = ledger.run_id
    except LedgerError as exc:
        return RunOutcome(False, f"{run_dir}: its ledger does not open: {exc}", completed, planned)
    return RunOutcome(True, f"{run_dir}: {completed} of {planned} rounds completed", completed, planned, run_id)


def transport_security(argv) -> dict:
    """Whether the SuperLink's APIs ran over TLS, read from this ServerApp process's command line.

    In flwr 1.42 the SuperLink serves its Fleet, Control and runtime APIs on one port, over HTTPS
    unless it was started with ``--insecure``; its SuperExec then starts ``flwr-serverapp`` with
    ``--insecure`` too (otherwise with ``--root-certificates`` or the system roots), and a SuperNode
    cannot connect to an HTTPS port in plain HTTP. So the ServerApp's own flags tell TLS on or off.
    Outside ``flwr-serverapp`` (in-process tests, the simulation engine) nothing is observed: ``None``.
    """
    argv = list(argv or [])
    if not argv or Path(argv[0]).name != "flwr-serverapp":
        return {"tls": None, "observed": "not observed: the ServerApp did not run as flwr-serverapp "
                                         "(in-process or Flower's simulation engine)"}
    if "--insecure" in argv:
        return {"tls": False, "observed": "flwr-serverapp was started with --insecure: the SuperLink served its "
                                          "Fleet, Control and runtime APIs without TLS"}
    pinned = "--root-certificates" in argv
    return {"tls": True, "observed": "flwr-serverapp was started without --insecure"
                                     + (" and with --root-certificates" if pinned else "")
                                     + ": the SuperLink served its Fleet, Control and runtime APIs over HTTPS"}


def deployment_facts(cfg: dict, transport: dict, nodes: dict) -> dict:
    """The deployment facts of a run for ``summary.json`` (``deployment``): read from the run config
    ``cfg``, the observed ``transport`` (:func:`transport_security`) and what each registered node
    reported (``nodes``: site -> ``client_app.node_facts``); nothing assumed."""
    def node(facts: dict) -> dict:
        if not facts:
            return {"reported": False}
        return {"reported": True, "ledger": str(facts.get("ledger") or "") or None,
                "signing_key": str(facts.get("signing-key") or "") or None,
                "key_protected": bool(facts.get("key-protected")),
                "registry": str(facts.get("registry") or "") or None,
                "app_verified": bool(facts.get("app-sha256")),
                "app_sha256": str(facts.get("app-sha256") or "") or None,
                "app_key": str(facts.get("app-key") or "") or None}

    registry = str(cfg.get("registry") or "")
    return {
        "tls": transport["tls"],
        "tls_observed": transport["observed"],
        "active_mode": bool(cfg.get("active")),
        "registry": registry or None,
        "registration": ("names as given (no registry)" if not registry else
                         "names as given (registration = names)" if str(cfg.get("registration")) == "names" else
                         "a node registers only by signing a fresh challenge with its site's registered key"),
        "coordinator_ledger": str(Path(str(cfg["out"])).resolve() / "ledger.sqlite"),
        "nodes": {site: node(facts) for site, facts in sorted(nodes.items())},
        "app_verification": _app_verification(nodes),
    }


def _app_verification(nodes: dict) -> str:
    """Whether the registered nodes ran the app only after checking its consortium signature, as reported."""
    verified = sorted(site for site, facts in nodes.items() if facts and facts.get("app-sha256"))
    if not nodes:
        return "not observed (no node registered)"
    if not verified:
        return ("OFF: no node reported checking the app bundle's consortium signature before running it "
                "(nodes started without `secagg flower supernode`)")
    hashes = sorted({str(nodes[site]["app-sha256"]) for site in verified})
    keys = sorted({str(nodes[site].get("app-key") or "")[:16] for site in verified})
    state = ("ON" if len(verified) == len(nodes)
             else f"ON at {len(verified)} of {len(nodes)} nodes ({', '.join(verified)})")
    return (f"{state}: the node ran the app bundle sha256 {', '.join(hashes)} only after verifying its signature "
            f"under the consortium's app key {', '.join(keys)}")
