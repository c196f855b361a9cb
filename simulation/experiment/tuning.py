"""Learning rates tuned per arm on healthy validation data, on a seed the comparison does not use.

For each value of ``lr_grid`` every arm trains on the tuning seed's cohort
(``tuning_seed``: its own synthetic cohort with ``vary_data``, its own
healthy split and initial weights; with ``held_out_site`` the site that
seed holds out is left out, as in evaluation) under the same early-stopping
rule as the evaluation runs, with the same seeded noise at every grid value
(the comparison between learning rates is paired). The score of a run is
its best validation loss (:mod:`.early_stopping`: reconstruction MSE on the
healthy validation slices); an arm keeps the grid value with the lowest
score (:func:`select_learning_rate`). The local arm keeps one learning rate
for all its site models, chosen by the mean of their scores.

**No test volume is ever seen**: the tuning cohort has its pathological
volumes removed (:func:`.held_out.without_test_volumes`) before any arm
trains, and the simulation skips its detection evaluation for it.

**Privacy.** Under DP, choosing hyperparameters on the training data
costs privacy in a real deployment (Papernot & Steinke 2022,
"Hyperparameter tuning with Renyi differential privacy", ICLR 2022): the
grid's runs and the choice itself are releases. This experiment does not
account it; it is research-only, and the report says so.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["select_learning_rate", "score_by_arm", "TUNING_NOTE"]

TUNING_NOTE = ("Under DP, tuning hyperparameters on the data costs privacy in a real deployment (Papernot & Steinke "
               "2022, \"Hyperparameter tuning with Renyi differential privacy\"); this experiment does not account "
               "the tuning runs or the choice (research-only).")


def select_learning_rate(scores: dict) -> float:
    """The learning rate with the lowest score (``scores``: rate -> best validation loss); ties go to the smaller
    rate; non-finite scores (diverged runs) never win. Raises ValueError when no score is finite."""
    finite = {float(lr): float(v) for lr, v in scores.items() if v is not None and math.isfinite(v)}
    if not finite:
        raise ValueError(f"no learning rate of {sorted(scores)} reached a finite validation loss")
    return min(finite, key=lambda lr: (finite[lr], lr))


def score_by_arm(trained) -> dict:
    """arm -> score of one grid value: the best validation loss (local: the mean over the site models)."""
    by_arm: dict = {}
    for t in trained:
        loss = t.stopping.best_loss
        by_arm.setdefault(t.arm, []).append(loss if math.isfinite(loss) else math.inf)
    return {arm: float(np.mean(v)) for arm, v in by_arm.items()}
