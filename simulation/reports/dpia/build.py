"""The DPIA as a structured document: read the run, assess the risks, write each section, in order."""

from __future__ import annotations

import base64
import datetime as _dt

from . import sections
from .facts import read_facts
from .measures import measures
from .org import ORG_FIELDS
from .risks import assess, worst_score

__all__ = ["build_dpia", "TITLE"]

TITLE = "Data Protection Impact Assessment - federated training with secure aggregation"


def build_dpia(run_dir, org: dict | None = None, *, today: str | None = None) -> dict:
    """The DPIA as a structured document: ``{"title", "sections", "placeholders", "figures", "facts"}``."""
    facts = read_facts(run_dir)
    org = dict(org or {})
    today = today or _dt.date.today().isoformat()
    families, model_risks = assess(facts)
    document_sections = [
        sections.overview(facts, org, today),
        sections.screening(facts),
        sections.description(facts, org),
        sections.necessity(facts, org),
        sections.risks(families, model_risks),
        measures(facts, org),
        sections.residual(families, model_risks, org),
        sections.dpo_advice(org),
        sections.signoff(org, today),
    ]
    led = facts.ledger
    return {
        "title": TITLE,
        "sections": document_sections,
        "placeholders": sorted(k for k in ORG_FIELDS if k not in org),
        "figures": [{"name": f.name, "path": str(f), "b64": base64.b64encode(f.read_bytes()).decode()}
                    for f in facts.run["figures"]],
        "facts": {"mode": facts.mode, "max_epsilon": facts.max_epsilon,
                  "epsilon": {s: (led["spent"][s] or {}).get("bound") for s in facts.sites},
                  "delta": led["delta"], "ledger_ok": facts.verification.ok,
                  "worst_score": worst_score(families, model_risks)},
    }
