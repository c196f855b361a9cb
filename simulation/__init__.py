"""Composition root, laid out by job: the federation, its two engines, reports, experiments and the CLI.

* :mod:`simulation.federation` - what a federated run is, whatever carries its messages: the round
  (:mod:`~simulation.federation.rounds`, with the protocol loop of
  :mod:`~simulation.federation.protocol_round`), coordinator and server optimiser, sites, dropouts,
  the run setup shared by every engine (:func:`~simulation.federation.setup.open_run`), the run
  directory and its ledger check, site identities, node keys and passphrases.
* :mod:`simulation.engines` - how the messages travel: :mod:`~simulation.engines.inprocess` (every
  site in this process: :func:`run_simulation` - ``secagg simulate`` - and :func:`run_demo` -
  ``secagg demo``) and :mod:`~simulation.engines.flower` (a Flower ``ServerApp`` and ``ClientApp``,
  optional ``flower`` extra).
* :mod:`simulation.reports` - what a finished run yields: the DPIA (``secagg dpia``), plots,
  ``secagg audit --own-training`` and :func:`export_run` / :func:`model_from_run` (``secagg export``).
* :mod:`simulation.experiment` - ``secagg experiment`` (:func:`run_experiment`,
  :func:`load_experiment_config`): federated vs local, central and non-private over seeds, with
  seeded (labelled, never a privacy guarantee) noise, paired statistics and a report.
* :mod:`simulation.cli` - the ``secagg`` command, one module per command group.
* :mod:`simulation.config` - :class:`SimulationConfig` / :func:`load_config`, a run's settings;
  :mod:`simulation.progress` - progress lines and bars for the CLI, the in-process engine and
  the experiment.
* :mod:`simulation.errors` - :class:`SimulationInputError`, the base of every simulation-side
  bad-input error (configuration, run directory, DPIA, keys, experiment), which the CLI catches
  once (exit code 2) beside the bad-input bases of secagg, dp and models.

Imports inside flow one way: the engines, reports, experiment and CLI use the federation; the
federation uses none of them.
"""

from .lazy import lazy_exports

# Each public name and the submodule it lives in, imported on first use (simulation.lazy: a
# process that needs one name does not import the rest).
__getattr__, __dir__ = lazy_exports(__name__, {
    "ConfigError": ".config", "SimulationConfig": ".config", "SimulationConfigError": ".config",
    "load_config": ".config",
    "DemoReport": ".engines.inprocess.demo", "run_demo": ".engines.inprocess.demo",
    "SimulationResult": ".engines.inprocess.simulate", "format_summary": ".engines.inprocess.simulate",
    "run_simulation": ".engines.inprocess.simulate",
    "SimulationInputError": ".errors",
    "ExperimentConfig": ".experiment", "load_experiment_config": ".experiment", "run_experiment": ".experiment",
    "SimulationError": ".federation.setup",
    "export_run": ".reports.export", "model_from_run": ".reports.export",
})

__all__ = [
    "SimulationConfig", "load_config", "SimulationConfigError", "ConfigError", "SimulationInputError",
    "run_simulation", "SimulationResult", "SimulationError", "format_summary",
    "DemoReport", "run_demo", "export_run", "model_from_run",
    "ExperimentConfig", "load_experiment_config", "run_experiment",
]
