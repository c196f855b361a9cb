"""``secagg experiment``: a fair multi-seed comparison of federated, local-only, central and non-private training.

Modules, one job each: :mod:`.config` (what runs), :mod:`.randomness` (the
seeded, labelled DP sampling and noise of experiment mode - never a
privacy guarantee, never the default), :mod:`.runner` (the arms, reusing
:mod:`simulation.simulate`'s run and baseline trainers), :mod:`.statistics`
(paired differences with 95% intervals), :mod:`.report` (``report.md`` and
plots).
"""

from .config import ARMS, ExperimentConfig, load_experiment_config
from .randomness import SEEDED_NOISE_LABEL, SeededExperimentNoise, SeededStream
from .report import render_report, write_report
from .runner import COMPARISONS, ExperimentError, ExperimentResult, report_metrics, run_experiment, summarise
from .statistics import PairedDifference, paired_bootstrap, paired_t, t_quantile

__all__ = [
    "ARMS", "ExperimentConfig", "load_experiment_config",
    "SEEDED_NOISE_LABEL", "SeededExperimentNoise", "SeededStream",
    "render_report", "write_report",
    "COMPARISONS", "ExperimentError", "ExperimentResult", "report_metrics", "run_experiment", "summarise",
    "PairedDifference", "paired_bootstrap", "paired_t", "t_quantile",
]
