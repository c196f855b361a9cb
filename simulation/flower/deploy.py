"""What a deployment of the Flower engine needs from ``secagg`` itself (no ``flwr`` import here).

* :func:`app_path` - the Flower app folder (``pyproject.toml`` naming the ServerApp and the
  ClientApp, ``README.md``, ``deploy-local.sh``) as installed: it ships inside the ``simulation``
  package (``package-data`` in the project's ``pyproject.toml``), so ``flwr run "$(secagg flower
  app-path)"`` works from a wheel, without a source checkout.
* :func:`run_outcome` - whether a Flower run directory holds a finished run. ``flwr run`` exits 0
  even when the ServerApp raised (Flower records the run as failed, the CLI does not report it), so
  a deployment script cannot use its exit code; the ServerApp writes ``summary.json`` last, after
  every round, so a missing summary, or one with fewer completed rounds than planned, is a failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["app_path", "RunOutcome", "run_outcome", "APP_FILES"]

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
