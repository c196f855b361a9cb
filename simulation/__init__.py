"""Composition root: sites, coordinator, rounds, dropouts, engines and the ``secagg`` CLI.

* :func:`run_simulation` / :class:`SimulationConfig` / :func:`load_config` - ``secagg simulate``
  (:mod:`simulation.engines.inprocess.simulate`): federated DP-SGD with secure aggregation, dropouts, ledger,
  checkpoints, resume, plots and summary.
* :mod:`simulation.federation.protocol_round` - the in-process transport for the masking, HE and plain paths.
* :func:`export_run` / :func:`model_from_run` - ``secagg export`` (:mod:`simulation.reports.export`): a run's
  model as one self-describing file.
* :func:`run_experiment` / :func:`load_experiment_config` - ``secagg experiment``
  (:mod:`simulation.experiment`): federated vs local, central and non-private over seeds, with
  seeded (labelled, never a privacy guarantee) noise, paired statistics and a report.
* :mod:`simulation.federation.server_optimizer` - FedAvg, server momentum, FedAdam on the decoded mean.
* :mod:`simulation.reports.dpia` - ``secagg dpia``; :mod:`simulation.engines.inprocess.demo` - ``secagg demo``.
* :mod:`simulation.engines.flower` - the Flower engine (prototype, optional ``flower`` extra).
* :mod:`simulation.errors` - :class:`SimulationInputError`, the base of every simulation-side
  bad-input error (configuration, run directory, DPIA, keys, experiment), which the CLI catches
  once (exit code 2) beside the bad-input bases of secagg, dp and models.
"""

from .config import ConfigError, SimulationConfig, SimulationConfigError, load_config
from .engines.inprocess.demo import DemoReport, run_demo
from .errors import SimulationInputError
from .experiment import ExperimentConfig, load_experiment_config, run_experiment
from .reports.export import export_run, model_from_run
from .federation.setup import SimulationError
from .engines.inprocess.simulate import SimulationResult, format_summary, run_simulation

__all__ = [
    "SimulationConfig", "load_config", "SimulationConfigError", "ConfigError", "SimulationInputError",
    "run_simulation", "SimulationResult", "SimulationError", "format_summary",
    "DemoReport", "run_demo", "export_run", "model_from_run",
    "ExperimentConfig", "load_experiment_config", "run_experiment",
]
