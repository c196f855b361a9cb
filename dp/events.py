"""Privacy events: one record per private release, in the spirit of dp-accounting's DpEvents.

A :class:`PrivacyEvent` describes one site's local DP-SGD run in one round:
``steps`` applications of the Poisson-subsampled Gaussian mechanism.

Math. One DP-SGD step samples each of the site's N records independently with
probability q (Poisson sampling), clips each sampled per-example gradient to
L2 norm C, sums them and adds N(0, sigma^2 C^2 I). Relative to C, the sum has
sensitivity 1 under add/remove-one adjacency (a record is present or absent)
and 2 under replace-one adjacency, so one step is the Poisson-subsampled
Gaussian mechanism with noise multiplier sigma and rate q; an event is its
``steps``-fold adaptive composition. Events of one site compose across rounds.

Privacy unit. ``unit`` says what one "record" is. ``"patient"`` (the
default, the GDPR data subject): DP-SGD Poisson-samples *patients* and clips
the sum of each sampled patient's per-slice gradients to C, so adding or
removing one patient - all of their slices - changes the noised sum by at
most C (:func:`dp.training.train_dp_sgd`); the epsilon then bounds
membership of a whole patient. ``"slice"``: each 2-D slice is a record,
the guarantee covers one slice only, and a patient with k slices gets at best
the group-privacy bound of k records (often meaningless); it stays
available as an explicitly labelled option. The accountants' math is the same
for both units - only what one record *is* changes - so every printed epsilon
names its unit and adjacency (:func:`describe_guarantee`).

The guarantee holds against anyone who sees the site's released update - the
coordinator in plain mode, nobody in masked modes (where the coordinator sees
only the sum).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import InvalidPrivacyParameterError

__all__ = ["PrivacyEvent", "NEIGHBOURING_RELATIONS", "PRIVACY_UNITS", "MECHANISM_DPSGD", "validate_delta",
           "describe_guarantee", "LEGACY_UNIT"]

NEIGHBOURING_RELATIONS = ("add_remove_one", "replace_one")
PRIVACY_UNITS = ("patient", "slice")
#: The unit of events stored before events carried one: DP-SGD then sampled and clipped slices.
LEGACY_UNIT = "slice"
MECHANISM_DPSGD = "poisson_subsampled_gaussian"


def describe_guarantee(unit: str, neighbouring: str = "add_remove_one") -> str:
    """The words every printed epsilon carries, e.g. ``"patient-level, add/remove one patient"``."""
    if unit not in PRIVACY_UNITS:
        raise InvalidPrivacyParameterError(f"privacy unit must be one of {PRIVACY_UNITS}; got {unit!r}")
    if neighbouring not in NEIGHBOURING_RELATIONS:
        raise InvalidPrivacyParameterError(f"neighbouring must be one of {NEIGHBOURING_RELATIONS}; got {neighbouring!r}")
    relation = f"add/remove one {unit}" if neighbouring == "add_remove_one" else f"replace one {unit}"
    return f"{unit}-level, {relation}"


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidPrivacyParameterError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def validate_delta(delta) -> float:
    delta = _number("delta", delta)
    if not 0 < delta < 1:
        raise InvalidPrivacyParameterError(f"delta must be in (0, 1); got {delta}")
    return delta


@dataclass(frozen=True)
class PrivacyEvent:
    """One site's private release in one round.

    Attributes:
        site: the site's name.
        round: federated round index (0-based).
        noise_multiplier: sigma (noise std / clipping norm), > 0.
        sample_rate: q, Poisson sampling probability per step, in (0, 1].
        steps: number of DP-SGD steps, >= 1.
        delta: the run's target delta, in (0, 1).
        clipping_norm: C, per-example L2 clipping norm (not needed for epsilon; recorded for audits).
        neighbouring: ``"add_remove_one"`` (Opacus' and the default) or ``"replace_one"``.
        mechanism: always the Poisson-subsampled Gaussian today.
        secure_rng: whether sampling and noise came from the CSPRNG (see :mod:`dp.training`).
        unit: the privacy unit, ``"patient"`` (default: q samples patients, C bounds a patient's
            summed gradient) or ``"slice"`` (labelled option: q samples slices, C bounds one slice).
    """

    site: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    clipping_norm: float = 1.0
    neighbouring: str = "add_remove_one"
    mechanism: str = MECHANISM_DPSGD
    secure_rng: bool = True
    unit: str = "patient"

    def __post_init__(self) -> None:
        if not isinstance(self.site, str) or not self.site:
            raise InvalidPrivacyParameterError(f"site must be a non-empty string; got {self.site!r}")
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 0:
            raise InvalidPrivacyParameterError(f"round must be an int >= 0; got {self.round!r}")
        sigma = _number("noise_multiplier", self.noise_multiplier)
        if sigma <= 0:
            raise InvalidPrivacyParameterError(f"noise_multiplier must be > 0; got {sigma}")
        q = _number("sample_rate", self.sample_rate)
        if not 0 < q <= 1:
            raise InvalidPrivacyParameterError(f"sample_rate must be in (0, 1]; got {q}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InvalidPrivacyParameterError(f"steps must be an int >= 1; got {self.steps!r}")
        validate_delta(self.delta)
        if _number("clipping_norm", self.clipping_norm) <= 0:
            raise InvalidPrivacyParameterError(f"clipping_norm must be > 0; got {self.clipping_norm}")
        if self.neighbouring not in NEIGHBOURING_RELATIONS:
            raise InvalidPrivacyParameterError(
                f"neighbouring must be one of {NEIGHBOURING_RELATIONS}; got {self.neighbouring!r}"
            )
        if self.unit not in PRIVACY_UNITS:
            raise InvalidPrivacyParameterError(f"unit must be one of {PRIVACY_UNITS}; got {self.unit!r}")
        if self.mechanism != MECHANISM_DPSGD:
            raise InvalidPrivacyParameterError(f"unsupported mechanism {self.mechanism!r}")
        object.__setattr__(self, "noise_multiplier", sigma)
        object.__setattr__(self, "sample_rate", q)
        object.__setattr__(self, "delta", float(self.delta))
        object.__setattr__(self, "clipping_norm", float(self.clipping_norm))

    @property
    def guarantee(self) -> str:
        """Unit and adjacency in words, e.g. ``"patient-level, add/remove one patient"``."""
        return describe_guarantee(self.unit, self.neighbouring)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PrivacyEvent":
        """Parse a stored event; one stored before events named their unit was slice-level (:data:`LEGACY_UNIT`)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidPrivacyParameterError(f"unknown privacy-event fields {sorted(unknown)}")
        return cls(**({"unit": LEGACY_UNIT} | dict(data)))
