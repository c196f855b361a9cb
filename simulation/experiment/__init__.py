"""``secagg experiment``: a fair multi-seed comparison of federated, local-only, central and non-private training.

Modules, one job each: :mod:`.config` (what runs), :mod:`.randomness` (the
seeded, labelled DP sampling and noise of experiment mode - never a
privacy guarantee, never the default), :mod:`.early_stopping` (one
stopping rule on the healthy validation loss for every arm),
:mod:`.tuning` (learning rates chosen per arm on a tuning seed),
:mod:`.held_out` (the leave-one-site-out split), :mod:`.site_shift` (the
study's premise, measured three ways), :mod:`.arms` (training
each arm of a seed, reusing :mod:`simulation.engines.inprocess.simulate`'s run),
:mod:`.runner` (seeds, evaluation, summary), :mod:`.parallel` (tuning rates,
seeds and sweep points run ``--jobs`` at a time in spawned processes, one torch
thread each: the same numbers for any ``jobs``), :mod:`.statistics` (paired
differences with 95% intervals, rank correlation), :mod:`.report`
(``report.md`` and plots).
"""

from .arms import TrainedArm, privacy_of, stopping_rule, train_arms
from .config import ARMS, ExperimentConfig, load_experiment_config
from .early_stopping import (
    EarlyStopping,
    StoppingRule,
    StopTraining,
    ValidationMonitor,
    train_with_stopping,
    validation_loss,
    validation_slices,
)
from .held_out import held_out_site_for, split_held_out_site, without_test_volumes
from .randomness import SEEDED_NOISE_LABEL, SeededExperimentNoise, SeededStream
from .report import render_report, write_report
from .runner import (
    COMPARISONS,
    ExperimentError,
    ExperimentResult,
    report_metrics,
    run_experiment,
    summarise,
    tune_learning_rates,
)
from .parallel import default_jobs, run_units
from .site_shift import healthy_residual_by_site, healthy_variance_shares, site_shift
from .statistics import PairedDifference, paired_bootstrap, paired_t, rank_correlation, t_quantile
from .tuning import TUNING_NOTE, score_by_arm, select_learning_rate

__all__ = [
    "TrainedArm", "privacy_of", "stopping_rule", "train_arms",
    "EarlyStopping", "StoppingRule", "StopTraining", "ValidationMonitor", "train_with_stopping", "validation_loss",
    "validation_slices",
    "held_out_site_for", "split_held_out_site", "without_test_volumes",
    "site_shift", "healthy_residual_by_site", "healthy_variance_shares", "tune_learning_rates", "TUNING_NOTE", "score_by_arm", "select_learning_rate",
    "ARMS", "ExperimentConfig", "load_experiment_config",
    "SEEDED_NOISE_LABEL", "SeededExperimentNoise", "SeededStream",
    "render_report", "write_report",
    "COMPARISONS", "ExperimentError", "ExperimentResult", "report_metrics", "run_experiment", "summarise",
    "PairedDifference", "paired_bootstrap", "paired_t", "t_quantile", "rank_correlation",
    "default_jobs", "run_units",
]
