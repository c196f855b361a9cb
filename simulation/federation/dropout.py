"""Who vanishes, and at which protocol stage: seeded, reproducible dropout models.

A dropout model answers, for each round, ``site -> first silent stage`` (or
no entry: the site stays). Stages are :data:`secagg.STAGES`
(``advertise, share, mask, consistency, unmask``); a site silent from
``advertise`` on does not even train that round.

* :class:`ProbabilisticDropout`: at each stage, each still-present site drops
  with probability p, independently; draws come from
  ``numpy.random.default_rng((seed, round))`` - *public simulation
  randomness*, deliberately reproducible, never used for anything secret.
* :class:`ScheduledDropout`: an explicit schedule from a JSON or TOML file,
  ``{"<round>": {"<stage>": ["site", ...]}}``.
"""

from __future__ import annotations

import abc
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from secagg import STAGES

from ..config import SimulationConfigError

__all__ = ["DropoutModel", "ProbabilisticDropout", "ScheduledDropout", "NoDropout", "load_schedule", "parse_schedule"]


class DropoutModel(abc.ABC):
    """Interface: ``plan(round_index, sites) -> {site: stage}``."""

    @abc.abstractmethod
    def plan(self, round_index: int, sites: Sequence[str]) -> dict[str, str]:
        """Site -> first silent stage, for the sites that drop in this round."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for logs and the summary."""


class NoDropout(DropoutModel):
    def plan(self, round_index: int, sites: Sequence[str]) -> dict[str, str]:
        return {}

    def describe(self) -> str:
        return "no dropouts"


@dataclass(frozen=True)
class ProbabilisticDropout(DropoutModel):
    probability: float
    seed: int = 0

    def plan(self, round_index: int, sites: Sequence[str]) -> dict[str, str]:
        rng = np.random.default_rng([self.seed, round_index])
        plan: dict[str, str] = {}
        for stage in STAGES:
            for site in sites:
                if site not in plan and rng.random() < self.probability:
                    plan[site] = stage
        return plan

    def describe(self) -> str:
        return f"each site drops at each stage with probability {self.probability} (seed {self.seed})"


@dataclass(frozen=True)
class ScheduledDropout(DropoutModel):
    schedule: Mapping[int, Mapping[str, str]]  # round -> site -> stage
    source: str = ""

    def plan(self, round_index: int, sites: Sequence[str]) -> dict[str, str]:
        return {s: st for s, st in self.schedule.get(round_index, {}).items() if s in sites}

    def describe(self) -> str:
        return f"explicit schedule from {self.source}"


def load_schedule(schedule, site_names: Sequence[str]) -> ScheduledDropout:
    """Validate a dropout schedule (a file path, or an inline mapping) against the run's site names."""
    if isinstance(schedule, Mapping):
        return parse_schedule(schedule, site_names, "the configuration")
    file = Path(schedule)
    if file.exists() and not file.is_file():  # a FIFO or device would block or never end
        raise SimulationConfigError(f"dropout schedule {file} is not a regular file")
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise SimulationConfigError(f"dropout schedule {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SimulationConfigError(f"cannot read dropout schedule {file}: {exc}") from None
    try:
        raw = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SimulationConfigError(f"dropout schedule {file} is not valid {file.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    return parse_schedule(raw, site_names, str(file))


def parse_schedule(raw, site_names: Sequence[str], file: str) -> ScheduledDropout:
    """``{round: {stage: [sites]}}`` -> :class:`ScheduledDropout` (earliest stage wins per site)."""
    if not isinstance(raw, Mapping):
        raise SimulationConfigError(f"dropout schedule {file} must map rounds to {{stage: [sites]}}")
    schedule: dict[int, dict[str, str]] = {}
    for round_key, stages in raw.items():
        try:
            round_index = int(round_key)
        except ValueError:
            raise SimulationConfigError(f"dropout schedule {file}: round {round_key!r} is not an integer") from None
        if not isinstance(stages, Mapping):
            raise SimulationConfigError(f"dropout schedule {file}: round {round_key} must map stages to site lists")
        for stage, sites in stages.items():
            if stage not in STAGES:
                raise SimulationConfigError(f"dropout schedule {file}: unknown stage {stage!r}; stages are {', '.join(STAGES)}")
            unknown = [s for s in sites if s not in site_names]
            if unknown:
                raise SimulationConfigError(f"dropout schedule {file}: unknown sites {unknown}; sites are {list(site_names)}")
            for site in sites:
                earlier = schedule.setdefault(round_index, {}).get(site)
                if earlier is None or STAGES.index(stage) < STAGES.index(earlier):
                    schedule[round_index][site] = stage
    return ScheduledDropout(schedule, file)
