"""The distributed mechanism's privacy event: one round's site-level guarantee, as plain data.

Privacy guarantee (site level)
------------------------------
Adjacency: *zero-out* (default): two runs differ in one site's update being its clipped vector
or the zero vector, the site still taking part and adding its noise; the zero vector rounds to
zero, so the L2 sensitivity of the integer sum is B and its L1 sensitivity is at most
min(sqrt(d') B, B^2) (integer coordinates: |v| <= v^2). ``replace_one`` (one site's update
replaced by another) doubles both. The guarantee covers every site and every record at it, and
holds against the coordinator and anyone who sees the aggregate, as long as at least
``noise_contributors`` = t - (colluding sites) honest sites' noise is in the sum: the protocol
outputs nothing with fewer than t survivors, and colluders can subtract their own noise. More
contributors only add independent noise (post-processing), so the bound at t holds for any
completed round. The record-level DP-SGD guarantee of :mod:`dp.events` is a separate statement
about a different unit; the two are reported side by side, never added.

The rounding bound B, the noise and the ring are fixed by :mod:`dp.distributed.calibration`;
:mod:`dp.distributed.accounting` turns events into epsilon.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import InvalidPrivacyParameterError
from .checks import int_at_least, positive

__all__ = ["MECHANISMS", "DISTRIBUTED_NEIGHBOURING", "DistributedDpEvent"]

MECHANISMS = ("ddg", "skellam")
DISTRIBUTED_NEIGHBOURING = ("zero_out", "replace_one")


@dataclass(frozen=True)
class DistributedDpEvent:
    """One round's site-level guarantee of the distributed mechanism, as plain data.

    Every site whose noisy update entered the round's sum gets this guarantee (see the module
    docstring for the adjacency and the trust assumption). All quantities are in ring units
    (after scaling by ``scale``).

    Attributes:
        round: federated round index (0-based).
        mechanism: ``"ddg"`` (each site adds N_Z(0, local_variance)) or ``"skellam"`` (each site
            adds Sk(mu, mu) with 2 mu = local_variance, i.e. variance exactly local_variance).
        local_variance: sigma^2 of one site's discrete Gaussian (its variance is slightly lower),
            or the variance 2 mu of one site's Skellam noise; an exact dyadic rational.
        l2_norm_bound_squared: B^2, the enforced bound on ||rounded update||_2^2 (an integer).
        dimension: d', the length of the noised integer vector (padded when rotated).
        noise_contributors: the number of sites whose noise is guaranteed in the sum and unknown
            to the adversary (threshold t minus tolerated colluding sites).
        neighbouring: ``"zero_out"`` (sensitivity B) or ``"replace_one"`` (2B).
        scale: ring units per input unit (recorded for audits; not needed for epsilon).
        l2_clip: the L2 clipping norm c in input units (recorded for audits).
    """

    round: int
    mechanism: str
    local_variance: float
    l2_norm_bound_squared: int
    dimension: int
    noise_contributors: int
    neighbouring: str = "zero_out"
    scale: float = 1.0
    l2_clip: float = 1.0

    def __post_init__(self) -> None:
        int_at_least("round", self.round, 0)
        if self.mechanism not in MECHANISMS:
            raise InvalidPrivacyParameterError(f"mechanism must be one of {MECHANISMS}; got {self.mechanism!r}")
        variance = positive("local_variance", self.local_variance)
        int_at_least("l2_norm_bound_squared", self.l2_norm_bound_squared, 1)
        int_at_least("dimension", self.dimension, 1)
        int_at_least("noise_contributors", self.noise_contributors, 1)
        if self.neighbouring not in DISTRIBUTED_NEIGHBOURING:
            raise InvalidPrivacyParameterError(
                f"neighbouring must be one of {DISTRIBUTED_NEIGHBOURING}; got {self.neighbouring!r}"
            )
        if self.mechanism == "ddg" and self.noise_contributors > 1 and variance < 0.25:
            raise InvalidPrivacyParameterError(
                f"the distributed discrete Gaussian bound (KLS21, Thm. 1) needs sigma >= 1/2, i.e. "
                f"local_variance >= 0.25; got {variance}"
            )
        object.__setattr__(self, "local_variance", variance)
        object.__setattr__(self, "l2_norm_bound_squared", int(self.l2_norm_bound_squared))
        object.__setattr__(self, "scale", positive("scale", self.scale))
        object.__setattr__(self, "l2_clip", positive("l2_clip", self.l2_clip))

    @property
    def l2_sensitivity_squared(self) -> float:
        factor = 1 if self.neighbouring == "zero_out" else 4
        return float(factor * self.l2_norm_bound_squared)

    @property
    def l1_sensitivity(self) -> float:
        b2 = float(self.l2_norm_bound_squared)
        one_site = min(math.sqrt(self.dimension * b2), b2)
        return one_site if self.neighbouring == "zero_out" else 2.0 * one_site

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DistributedDpEvent":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidPrivacyParameterError(f"unknown distributed-DP event fields {sorted(unknown)}")
        return cls(**data)
