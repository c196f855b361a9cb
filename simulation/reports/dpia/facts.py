"""The facts a DPIA reads from a run directory: what the run itself recorded, nothing assumed.

``config.json``, ``summary.json``, ``metrics.jsonl``, the privacy ledger (opened with
:meth:`dp.ledger.PrivacyLedger.open` and checked as ``secagg ledger verify`` checks it),
``plots/*.png`` and, when present, an empirical audit ``audit.json``. :func:`read_facts` returns
them as one :class:`RunFacts` with what several sections derive from them (the protocol's
parameters, the privacy unit, the largest epsilon spent); every number in the document comes
from here. A Flower run's deployment facts are ``RunFacts.deployment``, put in words by
:mod:`simulation.reports.dpia.deployment`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .document import DPIAError

__all__ = ["RunFacts", "read_facts", "guarantee"]


@dataclass(frozen=True)
class RunFacts:
    """One run as a DPIA sees it.

    ``run`` is what was read (``config``, ``fingerprint``, ``summary`` (None when the run did not
    finish), ``audit``, ``metrics``, ``ledger``, ``verification``, ``figures``); the other fields
    are derived from it once, for every section.
    """

    run_dir: Path
    run: dict
    protocol: dict
    unit: str
    sites: list
    max_epsilon: float | None

    @property
    def config(self) -> dict:
        return self.run["config"]

    @property
    def summary(self) -> dict:
        return self.run["summary"] or {}

    @property
    def ledger(self) -> dict:
        return self.run["ledger"]

    @property
    def verification(self):
        return self.run["verification"]

    @property
    def privacy(self) -> dict:
        return self.summary.get("privacy") or {}

    @property
    def mode(self) -> str:
        return self.protocol["mode"]

    @property
    def flower(self) -> bool:
        return self.summary.get("engine") == "flower"

    @property
    def deployment(self) -> dict:
        """What a Flower run recorded of its deployment (empty for other engines or older runs)."""
        return self.summary.get("deployment") or {}


def read_facts(run_dir) -> RunFacts:
    """Read ``run_dir``; :class:`DPIAError` when it holds no run, no ledger or a corrupt file."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    led = run["ledger"]
    sites = sorted(led["budgets"])
    bounds = [led["spent"][s]["bound"] for s in sites if led["spent"].get(s) and led["spent"][s]["bound"] is not None]
    return RunFacts(run_dir=run_dir, run=run, protocol=protocol_facts(run), unit=privacy_unit(run), sites=sites,
                    max_epsilon=max(bounds) if bounds else None)


def read_json(path: Path, what: str, required: bool):
    if not path.is_file():
        if required:
            raise DPIAError(f"{path} is missing: {what}")
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DPIAError(f"{path} is corrupt ({what})") from None


def read_run(run_dir: Path) -> dict:
    """The run's files and its ledger (opened, summarised and verified), as plain data."""
    from dp.errors import LedgerError
    from dp.ledger import LEDGER_FILE, PrivacyLedger

    if not run_dir.is_dir():
        raise DPIAError(f"{run_dir} is not a directory")
    if not (run_dir / LEDGER_FILE).is_file():
        raise DPIAError(f"no privacy ledger in {run_dir} ({LEDGER_FILE} missing): a DPIA needs the run's ledger")
    stored = read_json(run_dir / "config.json", "the run's configuration", required=True)
    config = stored.get("config", stored)
    summary = read_json(run_dir / "summary.json", "the run's summary (did the run finish?)", required=False)
    if isinstance(summary, dict) and summary.get("seeded_noise"):
        raise DPIAError(f"{run_dir} is a `secagg experiment` run whose DP noise was seeded (seeded noise: not a "
                        "privacy guarantee); no DPIA can rest on it")
    audit = read_json(run_dir / "audit.json", "the empirical privacy audit", required=False)
    metrics = []
    if (run_dir / "metrics.jsonl").is_file():
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:
                break
    try:
        with PrivacyLedger.open(run_dir) as ledger:
            genesis = next(e.body for e in ledger.entries() if e.kind == "genesis")
            sites = sorted(ledger.budgets)
            reports = {s: ledger.spent(s) for s in sites}
            spent = {s: (r.to_dict() if r is not None else None) for s, r in reports.items()}
            events = {s: [e.to_dict() for e in ledger.events(s)] for s in sites}
            site_level = {s: ledger.site_level_spent(s) for s in sites} if ledger.site_level else None
            ledger_info = {
                "run_id": ledger.run_id, "delta": ledger.delta, "budgets": dict(ledger.budgets),
                "accountants": list(ledger.accountants), "libraries": dict(genesis.get("libraries", {})),
                "site_level_meta": ledger.site_level, "entries": len(ledger.entries()),
                "spent": spent, "events": events, "site_level": site_level,
            }
    except LedgerError as exc:
        raise DPIAError(str(exc)) from None
    from ...federation.ledger_check import verify_run_ledger

    check = verify_run_ledger(run_dir)
    verification = check.report
    ledger_info["verification_scope"] = check.scope
    figures = sorted((run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    return {"config": config, "fingerprint": stored.get("fingerprint"), "summary": summary, "audit": audit,
            "metrics": metrics, "ledger": ledger_info, "verification": verification, "figures": figures}


def protocol_facts(run: dict) -> dict:
    """The aggregation protocol's parameters as the run recorded them (the summary wins over the configuration)."""
    cfg, summary = run["config"], run["summary"] or {}
    mode = cfg.get("mode")
    finder = summary.get("secagg_plus_parameters")
    facts = {
        "mode": mode,
        "active": bool(cfg.get("active")),
        "threshold": summary.get("threshold", cfg.get("threshold")),
        "graph": summary.get("graph", "n/a"),
        "degree": finder.get("degree") if finder else None,
        "complete": (finder.get("complete") if finder else None) or summary.get("graph") == "complete",
        "security_failure": finder.get("security_failure") if finder else None,
        "correctness_failure": finder.get("correctness_failure") if finder else None,
        "corrupt_fraction": cfg.get("corrupt_fraction"),
        "dropout": cfg.get("dropout"),
        "update_clip": cfg.get("update_clip"),
    }
    return facts


def privacy_unit(run: dict) -> str:
    """The run's privacy unit, from its ledger events (events stored without one were slice-level)."""
    units = {e.get("unit", "slice") for events in run["ledger"]["events"].values() for e in events}
    if len(units) == 1:
        return units.pop()
    return (run["summary"] or {}).get("privacy", {}).get("privacy_unit") or run["config"].get("privacy_unit",
                                                                                               "slice")


def guarantee(unit: str) -> str:
    """The guarantee's unit and adjacency in words (:func:`dp.events.describe_guarantee`)."""
    from dp.events import describe_guarantee

    return describe_guarantee(unit)
