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

Each bisection step only needs to know whether that minimum is at most the
target, i.e. whether *some* accountant's epsilon is: the accountants are asked
one at a time, in the order given (``DEFAULT_ACCOUNTANTS`` puts the cheap RDP
first and the costly PLD last), and the first one at or under the target
decides. An accountant whose epsilon was above the target at some sigma' is
not asked at any sigma <= sigma' either: each accountant's epsilon is
non-increasing in sigma, so its answer there is known ("above"). Bisection
only ever asks below its current upper end, so once the tightest accountant
alone has met the target at that end, the later steps ask that one only (in a
``--tiny`` run: PLD, once the cheaper RDP and PRV were above the target at a
larger sigma). Under that monotonicity the decisions, hence the bracket and
the returned sigma, are those of evaluating the minimum over every accountant
at every step; only answers a decision did not need are skipped (each
accountant's answer is cached, so the full report at the returned sigma reuses
them). Were an accountant's numerics ever not monotone, a skipped answer could
only have been a lucky "at or under" at a smaller sigma: the returned sigma
still meets the target, since it is one at which an accountant computed it
(and the report at it is computed in full). Asking one at a time halved a
``--tiny`` run's calibration, which was most of the run; skipping the known
answers takes a further fifth off it.
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

    # The largest sigma at which each accountant's epsilon was found above the target: at any sigma up to
    # it, that accountant's epsilon is above the target too (non-increasing in sigma), so it is not asked.
    above_target_at = dict.fromkeys(names, 0.0)

    def satisfies(sigma: float) -> bool:
        """``bound(sigma)[0] <= target_epsilon``, asking one accountant at a time (see the module docstring)."""
        for name in names:
            if sigma <= above_target_at[name]:
                continue
            report = epsilon_for(
                noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=delta, accountants=(name,)
            )
            if report.bound is not None and report.bound <= target_epsilon:
                return True
            if report.bound is not None:  # a failed accountant says nothing about other sigmas
                above_target_at[name] = max(above_target_at[name], sigma)
        return False

    hi = 1.0
    while not satisfies(hi):
        if hi >= _MAX_SIGMA:
            raise CalibrationError(
                f"even noise multiplier {_MAX_SIGMA:g} gives epsilon {bound(hi)[0]:.4g} > target {target_epsilon} "
                f"with {accountant}; raise the target, lower the sample rate or the number of steps"
            )
        hi *= 2
    lo = hi / 2
    while lo > _MIN_SIGMA and satisfies(lo):
        hi, lo = lo, lo / 2
    while (hi - lo) / hi > tolerance:
        mid = math.sqrt(lo * hi)
        if satisfies(mid):
            hi = mid
        else:
            lo = mid
    eps_hi, report_hi = bound(hi)
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
