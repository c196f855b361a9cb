"""Training to convergence: one early-stopping rule on the healthy validation loss, the same for every arm.

**The rule** (:class:`StoppingRule`). An arm may take at most ``max_steps``
optimiser steps (T = rounds x local_steps). Every ``every`` steps (one
federated round: ``every = local_steps``) its model's validation loss is
measured; an evaluation *improves* when its loss is below
``best x (1 - min_improvement)``. Training stops after ``patience``
evaluations in a row without an improvement, or at ``max_steps``, and the
model of the best evaluation is restored (so an arm is judged by its best
validation point, whichever step that was). ``patience = 0`` turns early
stopping off: every arm trains for ``max_steps`` and keeps its last model
(the validation curve is still recorded).

**The validation loss** (:func:`validation_loss`): the mean squared
reconstruction error over every pixel of the healthy validation slices
(pooled over the sites the arm's experiment trains on; never a test
volume). For a model with several personalised variants (FedDis: each
site's local appearance parts) it is the mean over the variants.

**Privacy.** A DP arm that stops at step t < T has released only t steps:
its accounted epsilon is that of t steps at the noise calibrated for T
(:func:`simulation.experiment.runner`), below the target. Looking at the
validation loss is itself a use of the validation subjects that no DP
accounting here covers (research-only, like the whole experiment).

How the arms use it: the federated run calls :class:`ValidationMonitor`
after each round (:func:`simulation.engines.inprocess.simulate.run_simulation`'s
``experiment_monitor``); the DP baselines stop through
:func:`train_with_stopping` (the trainer's per-step ``progress`` callback
raises :class:`StopTraining`, which unwinds the trainer - whose ``finally``
removes Opacus' hooks - so the optimiser keeps its state for the whole run,
as it did without early stopping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["StoppingRule", "EarlyStopping", "StopTraining", "ValidationMonitor", "validation_loss",
           "validation_slices", "train_with_stopping"]


@dataclass(frozen=True)
class StoppingRule:
    """When to measure, when to stop (module docstring). ``patience = 0``: never stop early."""

    every: int
    max_steps: int
    patience: int = 0
    min_improvement: float = 0.0

    def __post_init__(self) -> None:
        for name in ("every", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0; got {self.patience!r}")
        if not (isinstance(self.min_improvement, (int, float)) and 0 <= self.min_improvement < 1):
            raise ValueError(f"min_improvement must be in [0, 1); got {self.min_improvement!r}")

    @property
    def enabled(self) -> bool:
        return self.patience > 0


@dataclass
class EarlyStopping:
    """The state of :class:`StoppingRule` over one training run (pure bookkeeping, no model)."""

    rule: StoppingRule
    best_loss: float = math.inf
    best_step: int | None = None
    stopped_step: int | None = None  # the step training stopped at (early or at max_steps)
    since_best: int = 0
    history: list = field(default_factory=list)  # [(step, loss)]

    def update(self, step: int, loss: float) -> tuple[bool, bool]:
        """Record the validation ``loss`` at ``step``: (improved, stop now)."""
        if self.stopped_step is not None:
            raise RuntimeError(f"training already stopped at step {self.stopped_step}")
        if not math.isfinite(loss):  # a diverged model never counts as an improvement
            loss = math.inf
        self.history.append((int(step), float(loss)))
        improved = loss < self.best_loss * (1 - self.rule.min_improvement)  # the first finite loss improves
        if improved:
            self.best_loss, self.best_step, self.since_best = float(loss), int(step), 0
        else:
            self.since_best += 1
        stop = step >= self.rule.max_steps or (self.rule.enabled and self.since_best >= self.rule.patience)
        if stop:
            self.stopped_step = int(step)
        return improved, stop

    @property
    def stopped_early(self) -> bool:
        return self.stopped_step is not None and self.stopped_step < self.rule.max_steps

    def describe(self) -> dict:
        return {"max_steps": self.rule.max_steps, "every": self.rule.every, "patience": self.rule.patience,
                "min_improvement": self.rule.min_improvement, "stopped_step": self.stopped_step,
                "stopped_early": self.stopped_early, "best_step": self.best_step,
                "best_val_loss": self.best_loss if math.isfinite(self.best_loss) else None,
                "history": [[s, v if math.isfinite(v) else None] for s, v in self.history]}


def validation_slices(volumes) -> np.ndarray:
    """Every slice of the healthy validation ``volumes``, ``(N, 1, H, W)`` float32."""
    import models

    return models.training_array(volumes)


def validation_loss(models_, slices: np.ndarray, batch_size: int = 64) -> float:
    """Mean squared reconstruction error over every pixel of ``slices`` (the mean over ``models_`` when
    several personalised variants are given). The models are evaluated in eval mode without gradients."""
    from models.scoring import as_reconstruct_fn

    if not isinstance(models_, (list, tuple)):
        models_ = [models_]
    losses = []
    for model in models_:
        recon = as_reconstruct_fn(model, batch_size=batch_size)(slices)
        losses.append(float(np.mean((recon.astype(np.float64) - slices) ** 2)))
    return float(np.mean(losses))


class StopTraining(Exception):
    """Raised from a trainer's per-step callback to end training early (caught by :func:`train_with_stopping`)."""


class ValidationMonitor:
    """The federated arm's early stopping: called by the simulation after each round with the current
    model(s) and a function that snapshots the whole training state; keeps the best state to restore."""

    def __init__(self, rule: StoppingRule, slices: np.ndarray) -> None:
        self.stopping = EarlyStopping(rule)
        self.slices = slices
        self.best_state = None

    def after_round(self, round_index: int, models_, snapshot: Callable[[], object]) -> str | None:
        """A stop reason, or None to continue. Round r ends at step (r + 1) x every."""
        step = (round_index + 1) * self.stopping.rule.every
        improved, stop = self.stopping.update(step, validation_loss(models_, self.slices))
        if improved and self.stopping.rule.enabled:  # without early stopping the last model is kept
            self.best_state = snapshot()
        if stop and self.stopping.stopped_early:
            return (f"early stopping: no validation improvement in {self.stopping.rule.patience} rounds "
                    f"(best at step {self.stopping.best_step})")
        return None


def train_with_stopping(train: Callable[[Callable], None], model, rule: StoppingRule, slices: np.ndarray
                        ) -> EarlyStopping:
    """Run ``train(progress)`` - a trainer that calls ``progress(step, loss)`` after each of its
    ``rule.max_steps`` steps on ``model`` - with early stopping; restore the best model; return the record."""
    stopping = EarlyStopping(rule)
    best = {}

    def progress(step, _loss=None):
        if step % rule.every and step != rule.max_steps:
            return
        improved, stop = stopping.update(step, validation_loss(model, slices))
        if improved and rule.enabled:  # without early stopping the last model is kept
            best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stop and stopping.stopped_early:
            raise StopTraining

    try:
        train(progress)
    except StopTraining:
        pass
    if stopping.stopped_step is None:
        raise RuntimeError(f"the trainer ended before step {rule.max_steps} without reporting it")
    if "state" in best:
        model.load_state_dict(best["state"])
    return stopping
