"""What comes out of a finished run for the people who sign it off or use it: DPIA, figures, audit, model file.

One job: read a run directory (``config.json``, ``summary.json``, the ledger verified with the
registry and anchors the directory holds, :func:`simulation.federation.verify_run_ledger`) and turn
it into a document, a figure or a file; nothing here runs a round.

* :mod:`.dpia` - ``secagg dpia``: the Data Protection Impact Assessment (facts read from the run, risk
  rules as a table, one function per Art. 35 section, HTML/Markdown/PDF rendering from the
  templates in ``simulation/reports/templates``, which also hold the example organisation file);
* :mod:`.plots` - a run's published figures (epsilon per site, survivors per stage);
* :mod:`.audit_run` - ``secagg audit --own-training``: an empirical lower bound on a run's own DP-SGD;
* :mod:`.export` - ``secagg export``: a run's federated model, threshold and privacy guarantee as one
  self-describing file (refused when the ledger does not verify).
"""

from ..lazy import lazy_exports

# Each public name and the submodule it lives in, imported on first use (simulation.lazy: a
# process that needs one name does not import the rest).
__getattr__, __dir__ = lazy_exports(__name__, {
    "audit_own_training": ".audit_run",
    "LEVELS": ".dpia", "ORG_FIELDS": ".dpia", "PLACEHOLDER": ".dpia", "DPIAError": ".dpia", "build_dpia": ".dpia",
    "find_chromium": ".dpia", "load_org": ".dpia", "render_dpia": ".dpia", "write_dpia": ".dpia",
    "export_run": ".export", "model_from_run": ".export",
    "plot_run": ".plots",
})

__all__ = [
    "DPIAError", "ORG_FIELDS", "LEVELS", "PLACEHOLDER", "load_org", "build_dpia", "render_dpia", "write_dpia",
    "find_chromium", "plot_run", "audit_own_training", "export_run", "model_from_run",
]
