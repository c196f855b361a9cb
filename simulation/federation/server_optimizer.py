"""Server optimisers: how the coordinator turns the decoded FedAvg mean into a step of the global model.

The coordinator only ever holds the decoded *sum* of a round (and from it
the FedAvg mean Δ_t, :meth:`simulation.federation.coordinator.Coordinator.finish_round`).
A server optimiser is public computation on that sequence Δ_1, Δ_2, ...
and public hyper-parameters - a pure function, :func:`server_step`, of the
aggregate and the optimiser's own state - so it is post-processing of
released values: it costs no privacy and sees nothing a site sent alone.

Rules (Reddi et al., "Adaptive Federated Optimization", ICLR 2021):

* ``fedavg``: x_{t+1} = x_t + η Δ_t (η = 1: plain FedAvg);
* ``momentum`` (server momentum, FedAvgM; Hsu et al. 2019):
  v_t = β v_{t-1} + Δ_t, x_{t+1} = x_t + η v_t;
* ``adam`` (FedAdam): m_t = β1 m_{t-1} + (1 - β1) Δ_t,
  v_t = β2 v_{t-1} + (1 - β2) Δ_t², x_{t+1} = x_t + η m_t / (√v_t + τ)
  (no bias correction, as in the paper's Algorithm 2).

Defaults: η = 1 for fedavg and momentum, η = 0.01 for adam; β = 0.9,
β1 = 0.9, β2 = 0.99, τ = 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SERVER_OPTIMIZERS", "ServerRule", "ServerState", "server_step"]

SERVER_OPTIMIZERS = ("fedavg", "momentum", "adam")


@dataclass(frozen=True)
class ServerRule:
    """A server optimiser and its public hyper-parameters."""

    name: str = "fedavg"
    learning_rate: float | None = None  # None: 1.0 (fedavg, momentum) or 0.01 (adam)
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in SERVER_OPTIMIZERS:
            raise ValueError(f"server optimiser must be one of {', '.join(SERVER_OPTIMIZERS)}; got {self.name!r}")
        if self.learning_rate is not None and (isinstance(self.learning_rate, bool) or not isinstance(
                self.learning_rate, (int, float)) or not (np.isfinite(self.learning_rate) and self.learning_rate > 0)):
            raise ValueError(f"server learning rate must be a positive number; got {self.learning_rate!r}")
        for field_name in ("momentum", "beta1", "beta2"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"server {field_name} must be in [0, 1); got {value!r}")
        if not (np.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"server tau must be positive; got {self.tau!r}")

    @property
    def eta(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 0.01 if self.name == "adam" else 1.0


@dataclass(frozen=True)
class ServerState:
    """The optimiser's state after t aggregates (first and second moments; None before the first)."""

    t: int = 0
    first: np.ndarray | None = None
    second: np.ndarray | None = None


def server_step(rule: ServerRule, mean_update, state: ServerState) -> tuple[np.ndarray, ServerState]:
    """The step to add to the global model for the decoded FedAvg mean ``mean_update``, and the new state.

    A pure function: the same rule, aggregate and state always give the same step; nothing else is read.
    """
    delta = np.asarray(mean_update, dtype=np.float64)
    if delta.ndim != 1 or not np.all(np.isfinite(delta)):
        raise ValueError("the aggregate must be a finite 1-D vector")
    for moment in (state.first, state.second):
        if moment is not None and moment.shape != delta.shape:
            raise ValueError(f"the server state has {moment.shape[0]} values; the aggregate {delta.shape[0]}")
    eta = rule.eta
    if rule.name == "fedavg":
        return eta * delta, ServerState(state.t + 1)
    if rule.name == "momentum":
        velocity = delta.copy() if state.first is None else rule.momentum * state.first + delta
        return eta * velocity, ServerState(state.t + 1, velocity)
    first = (1 - rule.beta1) * delta if state.first is None else rule.beta1 * state.first + (1 - rule.beta1) * delta
    second = ((1 - rule.beta2) * delta**2 if state.second is None
              else rule.beta2 * state.second + (1 - rule.beta2) * delta**2)
    return eta * first / (np.sqrt(second) + rule.tau), ServerState(state.t + 1, first, second)
