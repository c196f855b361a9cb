"""The in-process engine: a whole federation on one machine, every site an object in this process.

One job: run the federation's round (:mod:`simulation.federation`) with the sites in memory, the
dropouts simulated, and everything only a one-machine simulation can do around it.

* :mod:`.simulate` - ``secagg simulate`` (:func:`run_simulation`): the cohort (synthetic or a
  directory of NIfTI files) split into sites, the rounds, and the evaluation at the end (the federated
  model against local-only, central and intensity baselines, research-only); also what ``secagg
  experiment`` runs for its federated arm;
* :mod:`.fleet` - :class:`InProcessFleet`, the federation's ``Fleet`` whose sites live here: it trains
  and encodes at each site, hands the sessions to the shared protocol loop, spends or rolls back, and
  keeps the site-local statistics in ``RUN_DIR/site-local/``;
* :mod:`.demo` - ``secagg demo``: one secure-aggregation session of synthetic updates in process,
  with dropouts and a malicious coordinator (the protocol alone, no training).
"""

from ...lazy import lazy_exports

# Each public name and the submodule it lives in, imported on first use (simulation.lazy: a
# process that needs one name does not import the rest).
__getattr__, __dir__ = lazy_exports(__name__, {
    "DemoReport": ".demo", "run_demo": ".demo",
    "SITE_LOCAL_DIR": ".fleet", "SITE_LOCAL_LABEL": ".fleet", "InProcessFleet": ".fleet",
    "CohortSplit": ".simulate", "SimulationResult": ".simulate", "evaluate_model": ".simulate",
    "format_summary": ".simulate", "new_model": ".simulate", "pathology_sites": ".simulate",
    "pooled_training_data": ".simulate", "prepare_cohort": ".simulate", "run_simulation": ".simulate",
    "train_baseline": ".simulate",
})

__all__ = [
    "run_simulation", "SimulationResult", "format_summary", "CohortSplit", "prepare_cohort", "new_model",
    "evaluate_model", "train_baseline", "pooled_training_data", "pathology_sites",
    "InProcessFleet", "SITE_LOCAL_DIR", "SITE_LOCAL_LABEL", "DemoReport", "run_demo",
]
