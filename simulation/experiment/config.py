"""What one experiment runs: seeds, arms, the shared simulation settings, the epsilon sweep.

A TOML file (``experiments/reference.toml`` is the reference one)::

    name = "reference"
    seeds = [0, 1, 2, 3, 4]
    arms = ["federated", "local", "central", "non-private"]
    vary_data = true            # seed s generates the cohort with data_seed + s
    epsilons = [1.0, 4.0]       # privacy-utility curve: federated and central again at each
    lr_grid = [5e-4, 2e-3, 5e-3]  # learning rates tuned per arm on tuning_seed (empty: simulation's learning_rate)
    tuning_seed = 1000          # the seed of the tuning runs: never one of the evaluation seeds
    patience = 3                # early stopping: evaluations (rounds) without improvement; 0 = train T steps
    min_improvement = 0.0       # relative decrease of the validation loss that counts as an improvement
    held_out_site = true        # leave-one-site-out: seed s holds out sorted(sites)[s mod n_sites]
    [simulation]                # any simulation.config.SimulationConfig key
    scale = "tiny"
    rounds = 10

Fixed by the experiment, whatever the file says (each arm runs under the same
conditions): no protocol dropouts (``dropout = 0``, no schedule: the demo's
scripted dropouts would cost only the federated arm steps), no baselines
inside the federated run (the experiment trains them itself, with seeded
noise), ``secure_rng = false`` with the experiment's seeded generator
(:mod:`simulation.experiment.randomness`: NOT a privacy guarantee), and the
run seed ``seed = s``. ``mode = "plain"`` is refused: the federated arm runs
the real secure-aggregation path.

Learning rates (:mod:`.runner`): with a non-empty ``lr_grid`` every arm is
trained at every grid value on ``tuning_seed`` (its own cohort with
``vary_data``, its own split and initial weights) and keeps the value with
the lowest healthy validation loss; the evaluation seeds then train at
that value. Early stopping: :mod:`.early_stopping`. Held-out sites:
:mod:`.held_out`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..config import SimulationConfigError, SimulationConfig, load_config

__all__ = ["ARMS", "ExperimentConfig", "load_experiment_config"]

#: The arms, in report order. ``non-private`` is central (pooled) training WITHOUT DP: an upper bound.
ARMS = ("federated", "local", "central", "non-private")

#: Keys of [simulation] that the experiment sets itself (see the module docstring).
_FORCED = ("dropout", "dropout_schedule", "baselines", "secure_rng", "seed")


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: ``seeds`` x ``arms`` under one simulation configuration (see the module docstring)."""

    name: str = "experiment"
    seeds: tuple = (0, 1, 2, 3, 4)
    arms: tuple = ARMS
    vary_data: bool = True
    epsilons: tuple = ()
    lr_grid: tuple = ()
    tuning_seed: int = 1000
    patience: int = 0
    min_improvement: float = 0.0
    held_out_site: bool = False
    simulation: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "arms", tuple(self.arms))
        object.__setattr__(self, "epsilons", tuple(self.epsilons))
        object.__setattr__(self, "lr_grid", tuple(self.lr_grid))
        object.__setattr__(self, "simulation", dict(self.simulation))
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise SimulationConfigError(f"name must be a non-empty string without '/'; got {self.name!r}")
        if len(self.seeds) < 2:
            raise SimulationConfigError(f"an experiment needs at least 2 seeds for a confidence interval; got {list(self.seeds)}")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise SimulationConfigError(f"seeds must be integers >= 0; got {s!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SimulationConfigError(f"seeds must be distinct; got {list(self.seeds)}")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise SimulationConfigError(f"arms must be a non-empty subset of {', '.join(ARMS)}; got {list(self.arms)}")
        if "federated" not in self.arms:
            raise SimulationConfigError("the federated arm is what an experiment compares: arms must include 'federated'")
        if len(set(self.arms)) != len(self.arms):
            raise SimulationConfigError(f"arms must be distinct; got {list(self.arms)}")
        if not isinstance(self.vary_data, bool):
            raise SimulationConfigError(f"vary_data must be true or false; got {self.vary_data!r}")
        for e in self.epsilons:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not (math.isfinite(e) and e > 0):
                raise SimulationConfigError(f"epsilons must be positive numbers; got {e!r}")
        for lr in self.lr_grid:
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
                raise SimulationConfigError(f"lr_grid must hold positive learning rates; got {lr!r}")
        if len(set(self.lr_grid)) != len(self.lr_grid):
            raise SimulationConfigError(f"lr_grid values must be distinct; got {list(self.lr_grid)}")
        if isinstance(self.tuning_seed, bool) or not isinstance(self.tuning_seed, int) or self.tuning_seed < 0:
            raise SimulationConfigError(f"tuning_seed must be an integer >= 0; got {self.tuning_seed!r}")
        if self.lr_grid and self.tuning_seed in self.seeds:
            raise SimulationConfigError(f"tuning_seed {self.tuning_seed} is an evaluation seed: learning rates must be tuned "
                              "on a seed the comparison does not use")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise SimulationConfigError(f"patience must be an integer >= 0 (0: no early stopping); got {self.patience!r}")
        if (isinstance(self.min_improvement, bool) or not isinstance(self.min_improvement, (int, float))
                or not 0 <= self.min_improvement < 1):
            raise SimulationConfigError(f"min_improvement must be in [0, 1); got {self.min_improvement!r}")
        if not isinstance(self.held_out_site, bool):
            raise SimulationConfigError(f"held_out_site must be true or false; got {self.held_out_site!r}")
        forced = sorted(set(self.simulation) & set(_FORCED))
        if forced:
            raise SimulationConfigError(f"[simulation] may not set {forced}: the experiment fixes them (no dropouts, seeded "
                              "noise, its own seeds and baselines)")
        base = self.base_simulation()
        if base.mode == "plain":
            raise SimulationConfigError("mode 'plain' is not secure aggregation; the federated arm runs secagg, secagg+ or he")
        if self.held_out_site and base.data is None and base.sites < 3:
            raise SimulationConfigError(f"held_out_site needs at least 3 sites (2 to federate, 1 to hold out); got {base.sites}")

    def base_simulation(self) -> SimulationConfig:
        """The simulation configuration every arm shares (before the per-seed fields)."""
        values = dict(self.simulation)
        preset = values.pop("preset", "demo")
        try:
            return load_config(preset=preset, **values).with_overrides(
                dropout=0.0, dropout_schedule=None, baselines=(), secure_rng=False)
        except TypeError as exc:
            raise SimulationConfigError(f"invalid [simulation]: {exc}") from None

    def for_seed(self, seed: int, *, epsilon: float | None = None) -> SimulationConfig:
        """The simulation configuration of one seed (and optionally another epsilon)."""
        base = self.base_simulation()
        overrides = {"seed": seed}
        if self.vary_data:
            overrides["data_seed"] = base.data_seed + seed
        if epsilon is not None:
            overrides["epsilon"] = float(epsilon)
        return base.with_overrides(**overrides)

    def to_dict(self) -> dict:
        return {"name": self.name, "seeds": list(self.seeds), "arms": list(self.arms), "vary_data": self.vary_data,
                "epsilons": list(self.epsilons), "lr_grid": list(self.lr_grid), "tuning_seed": self.tuning_seed,
                "patience": self.patience, "min_improvement": self.min_improvement,
                "held_out_site": self.held_out_site, "simulation": dict(self.simulation)}


def load_experiment_config(toml_path: str | None = None, **overrides) -> ExperimentConfig:
    """Defaults < TOML file < ``overrides`` (``None`` values ignored; ``simulation`` merges key by key)."""
    values: dict = {}
    if toml_path is not None:
        path = Path(toml_path)
        if path.exists() and not path.is_file():
            raise SimulationConfigError(f"experiment file {path} is not a regular file")
        try:
            values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SimulationConfigError(f"experiment file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SimulationConfigError(f"experiment file {path} is not valid TOML: {exc}") from None
    simulation = dict(values.pop("simulation", {}) or {})
    simulation.update({k: v for k, v in (overrides.pop("simulation", None) or {}).items() if v is not None})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(ExperimentConfig)}
    unknown = set(values) - known
    if unknown:
        raise SimulationConfigError(f"unknown experiment keys {sorted(unknown)}; known: {sorted(known)} (simulation settings "
                          "go in the [simulation] table)")
    try:
        return ExperimentConfig(**values, simulation=simulation)
    except TypeError as exc:
        raise SimulationConfigError(f"invalid experiment configuration: {exc}") from None
