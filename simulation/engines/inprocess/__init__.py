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

from .demo import DemoReport, run_demo
from .fleet import SITE_LOCAL_DIR, SITE_LOCAL_LABEL, InProcessFleet
from .simulate import (CohortSplit, SimulationResult, evaluate_model, format_summary, new_model, pathology_sites,
                       pooled_training_data, prepare_cohort, run_simulation, train_baseline)

__all__ = [
    "run_simulation", "SimulationResult", "format_summary", "CohortSplit", "prepare_cohort", "new_model",
    "evaluate_model", "train_baseline", "pooled_training_data", "pathology_sites",
    "InProcessFleet", "SITE_LOCAL_DIR", "SITE_LOCAL_LABEL", "DemoReport", "run_demo",
]
