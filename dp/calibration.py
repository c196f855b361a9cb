"""Calibrate the DP-SGD noise multiplier for a whole planned run.

Given a target (epsilon, delta), the Poisson sample rate q and the *total*
number of DP-SGD steps a site will take over the run (rounds x local steps),
find the smallest noise multiplier sigma (to a relative tolerance) whose
composed epsilon is at most the target under the chosen accountant.

Epsilon is non-increasing in sigma for the subsampled Gaussian, so a
geometric bracket followed by bisection converges; the returned sigma is the
*upper* end of the final bracket, which satisfies the target (never the
lower end, which may not). Calibrating for the whole run, not per round or
per epoch, is what keeps the planned budget and the spent budget equal.

``accountant="all"`` calibrates against the tightest valid upper bound
(the minimum over the registered accountants that succeed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .accounting import ACCOUNTANTS, DEFAULT_ACCOUNTANTS, EpsilonReport, epsilon_for
from .errors import CalibrationError, InvalidPrivacyParameterError
from .events import validate_delta

__all__ = ["Calibration", "calibrate_noise"]

_MIN_SIGMA = 1e-3
_MAX_SIGMA = 1e4


@dataclass(frozen=True)
class Calibration:
    """The calibrated noise multiplier and the epsilon it achieves."""

    noise_multiplier: float
    target_epsilon: float
    delta: float
    sample_rate: float
    steps: int
    accountant: str  # "all" or one accountant's name
    epsilon: float  # achieved epsilon under ``accountant`` (<= target)
    report: EpsilonReport  # every accountant at the calibrated sigma

    def to_dict(self) -> dict:
        return {
            "noise_multiplier": self.noise_multiplier,
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "accountant": self.accountant,
            "epsilon": self.epsilon,
            "report": self.report.to_dict(),
        }


def _accountants(accountant: str) -> tuple[str, ...]:
    if accountant == "all":
        return DEFAULT_ACCOUNTANTS
    if accountant not in ACCOUNTANTS:
        raise InvalidPrivacyParameterError(
            f"unknown accountant {accountant!r}; choose one of {sorted(ACCOUNTANTS)} or 'all'"
        )
    return (accountant,)


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "all",
    tolerance: float = 1e-3,
) -> Calibration:
    """Smallest sigma (within ``tolerance`` relative) with epsilon(sigma) <= target."""
    if isinstance(target_epsilon, bool) or not isinstance(target_epsilon, (int, float)) or not (
        math.isfinite(target_epsilon) and target_epsilon > 0
    ):
        raise InvalidPrivacyParameterError(f"target epsilon must be a positive number; got {target_epsilon!r}")
    delta = validate_delta(delta)
    names = _accountants(accountant)

    def bound(sigma: float) -> tuple[float, EpsilonReport]:
        report = epsilon_for(
            noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=delta, accountants=names
        )
        return (math.inf if report.bound is None else report.bound), report

    hi = 1.0
    eps_hi, report_hi = bound(hi)
    while eps_hi > target_epsilon:
        if hi >= _MAX_SIGMA:
            raise CalibrationError(
                f"even noise multiplier {_MAX_SIGMA:g} gives epsilon {eps_hi:.4g} > target {target_epsilon} "
                f"with {accountant}; raise the target, lower the sample rate or the number of steps"
            )
        hi *= 2
        eps_hi, report_hi = bound(hi)
    lo = hi / 2
    while lo > _MIN_SIGMA and bound(lo)[0] <= target_epsilon:
        hi, lo = lo, lo / 2
        eps_hi, report_hi = bound(hi)
    while (hi - lo) / hi > tolerance:
        mid = math.sqrt(lo * hi)
        eps_mid, report_mid = bound(mid)
        if eps_mid <= target_epsilon:
            hi, eps_hi, report_hi = mid, eps_mid, report_mid
        else:
            lo = mid
    return Calibration(
        noise_multiplier=hi,
        target_epsilon=float(target_epsilon),
        delta=delta,
        sample_rate=float(sample_rate),
        steps=int(steps),
        accountant=accountant,
        epsilon=eps_hi,
        report=report_hi,
    )
