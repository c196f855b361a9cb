"""Data Protection Impact Assessment (GDPR Art. 35) drawn from a run directory.

:func:`build_dpia` reads what the run itself recorded - ``config.json``,
``summary.json``, ``metrics.jsonl``, the privacy ledger (opened with
:meth:`dp.ledger.PrivacyLedger.open` and checked with
:func:`dp.ledger.verify_ledger`), ``plots/*.png`` and, when present, an
empirical audit ``audit.json`` - plus the organisational facts that no run
can know (controller, DPO, purposes, lawful basis, retention, ...) from a
TOML file (:data:`ORG_FIELDS`; a documented example ships as
``simulation/reports/templates/org.example.toml``). Every number in the document
comes from the run; an organisational fact that is missing stays visibly
unfilled as ``[TO BE COMPLETED: <field>]``.

Structure: Art. 35(7)(a) systematic description and purposes, (b) necessity
and proportionality, (c) risks to the rights and freedoms of data subjects,
(d) measures envisaged; screening against the nine criteria of the Article 29
Working Party guidelines WP248 rev.01; roles; a data-flow diagram (inline
SVG); the three risk families of the CNIL PIA method (illegitimate access,
unwanted modification, disappearance of data) and model-specific risks, each
with severity and likelihood on the CNIL four-level scale (negligible,
limited, significant, maximum); residual risk, DPO advice and sign-off.

The risk levels are a documented, rule-based *starting point* derived from the
run's parameters (the rule tables of :mod:`simulation.reports.dpia.risks`); the
controller and the DPO must review them - the document says so.

:func:`render_dpia` renders the document to self-contained HTML (inline CSS,
figures embedded as base64 PNG), Markdown, or PDF (headless Chromium, only
when installed). Errors (no ledger, bad org file) raise :class:`DPIAError`,
which the CLI reports in one line with exit code 2.

The package, one job a module, in the order the data flows:

* :mod:`~simulation.reports.dpia.facts` - the facts read from the run (:class:`RunFacts`);
* :mod:`~simulation.reports.dpia.org` - the organisational facts (:data:`ORG_FIELDS`, :func:`load_org`);
* :mod:`~simulation.reports.dpia.risks` - the risk rules, one table row a risk;
* :mod:`~simulation.reports.dpia.sections` - one function per section (Art. 35(7)(a)-(c), screening,
  roles, residual risk, DPO advice, sign-off), :mod:`~simulation.reports.dpia.measures` - section 6,
  Art. 35(7)(d), :mod:`~simulation.reports.dpia.deployment` - a Flower run's deployment facts in words,
  :mod:`~simulation.reports.dpia.dataflow` - the mode in words and the data-flow diagram;
* :mod:`~simulation.reports.dpia.document` - the blocks, scale and formats the sections are made of;
* :mod:`~simulation.reports.dpia.build` - :func:`build_dpia`, the sections in order;
* :mod:`~simulation.reports.dpia.render` - :func:`render_dpia` and :func:`write_dpia` (the templates in
  ``simulation/reports/templates``).
"""

from .build import build_dpia
from .document import LEVELS, PLACEHOLDER, DPIAError
from .org import ORG_FIELDS, load_org
from .render import find_chromium, render_dpia, write_dpia

__all__ = ["DPIAError", "ORG_FIELDS", "LEVELS", "PLACEHOLDER", "load_org", "build_dpia", "render_dpia",
           "write_dpia", "find_chromium"]
