"""Calibrate the DP-SGD noise multiplier for a whole planned run.

Given a target (epsilon, delta), the Poisson sample rate q and the *total*
number of DP-SGD steps a site will take over the run (rounds x local steps),
find the smallest noise multiplier sigma (to a relative tolerance) whose
composed epsilon is at most the target under the chosen accountant.

Epsilon is non-increasing in sigma for the subsampled Gaussian, so a
geometric bracket followed by bisection converges; the returned sigma is the
*upper* end of the final bracket, which satisfies the target (never the
lower end, which may not; for the one exception, an accountant that is not
monotone, see the last paragraph). Calibrating for the whole run, not per
round or per epoch, is what keeps the planned budget and the spent budget
equal.

``accountant="all"`` calibrates against the tightest valid upper bound
(the minimum over the registered accountants that succeed).

Each bisection step only needs to know whether that minimum is at most the
target, i.e. whether *some* accountant's epsilon is. Every accountant's epsilon
is non-increasing in sigma, so answers are also known without computing:

* at any sigma at or above one where some accountant's epsilon was computed at
  or under the target, the answer is "yes";
* an accountant whose epsilon was computed above the target at some sigma' is
  above it at every sigma <= sigma', and is not asked there.

The other accountants are asked one at a time, in the order given
(``DEFAULT_ACCOUNTANTS`` puts the cheap RDP first and the costly PLD last), and
the first one at or under the target decides.

Before bisecting, the oracle probes near the crossing (:meth:`_Oracle.probe`):
every accountant but the costliest at the bracket's upper end; every accountant
at up to two successive estimates of where the lowest of them crosses the
target (log epsilon interpolated linearly in log sigma between each one's
closest values on either side; an estimate is used only if there is one and it
lies inside the bracket); then the plain answer a quarter-tolerance either side
of a third estimate. The bisection then runs exactly as before, at its usual
midpoints; those on the known side of a probe need no computation. So when
every accountant is monotone and succeeds wherever it is asked, the decisions,
hence the bracket and the returned sigma, are those of evaluating the minimum
over every accountant at every step, bit for bit (tests check this against that
bisection on thousands of stand-in curves); only the number of epsilons
computed changes. (An accountant that fails at some sigmas, e.g. one that runs
out of memory, can make the "yes" above a sigma it met differ from the minimum
over the others there; the sigma returned still meets the target.)

Epsilons computed by one calibration with an empty cache (delta 1e-5, the
returned sigma's full report included), before (commit f505175: one
accountant at a time, cheapest first) -> now; RDP, PRV, PLD:

=====================================  ==============  ==============
q, steps, target epsilon               then            now
=====================================  ==============  ==============
0.1, 6, 10 (``--tiny``)                12, 9, 4        4, 4, 4
0.25, 4, 8 (the Flower test runs)      12, 11, 9       4, 5, 6
0.25, 40, 8                            12, 10, 8       4, 5, 7
0.01, 5000, 1                          13, 12, 11      5, 6, 7
=====================================  ==============  ==============

A PLD call costs 0.5-1.1 s at these settings, PRV about 0.2-0.3 s, RDP about
0.1 s (once Opacus is imported). A ``--tiny`` run (cohort cached) went from
14.8 s to 13.2 s of wall time, one run each on an otherwise idle machine.

The returned sigma's full report (every accountant) is always computed. Were
an accountant's numerics ever not monotone, an inferred "yes" could be wrong;
then the full report at the bisection's sigma is above the target, and the
smallest sigma at which an accountant actually computed an epsilon at or under
it is returned instead. A final check raises :class:`CalibrationError` rather
than return a sigma whose full report is above the target (only an accountant
that contradicts itself, giving different answers for the same input, could
get there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .accounting import ACCOUNTANTS, DEFAULT_ACCOUNTANTS, EpsilonReport, epsilon_for
from .errors import CalibrationError, InvalidPrivacyParameterError
from .events import validate_delta

__all__ = ["Calibration", "calibrate_noise"]

_MIN_SIGMA = 1e-3
_MAX_SIGMA = 1e4  # the doubling from 1 stops at the first power of two at or above it (16384)
_MIN_TOLERANCE = 1e-9
_MAX_TOLERANCE = 0.5


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
    """Smallest sigma (within ``tolerance`` relative, in [1e-9, 0.5]) with epsilon(sigma) <= target."""
    if isinstance(target_epsilon, bool) or not isinstance(target_epsilon, (int, float)) or not (
        math.isfinite(target_epsilon) and target_epsilon > 0
    ):
        raise InvalidPrivacyParameterError(f"target epsilon must be a positive number; got {target_epsilon!r}")
    delta = validate_delta(delta)
    names = _accountants(accountant)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
        _MIN_TOLERANCE <= tolerance <= _MAX_TOLERANCE
    ):  # NaN fails the comparison too; below about 1e-16 the bisection could never end
        raise InvalidPrivacyParameterError(
            f"tolerance must be a number in [{_MIN_TOLERANCE:g}, {_MAX_TOLERANCE:g}]; got {tolerance!r}"
        )

    def bound(sigma: float) -> tuple[float, EpsilonReport]:
        report = epsilon_for(
            noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=delta, accountants=names
        )
        return (math.inf if report.bound is None else report.bound), report

    oracle = _Oracle(names, float(target_epsilon), lambda sigma, name: epsilon_for(
        noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=delta, accountants=(name,)).bound)
    satisfies = oracle.satisfies

    hi = 1.0
    while not satisfies(hi):
        if hi >= _MAX_SIGMA:
            raise CalibrationError(
                f"even noise multiplier {hi:g} gives epsilon {bound(hi)[0]:.4g} > target {target_epsilon} "
                f"with {accountant}; raise the target, lower the sample rate or the number of steps"
            )
        hi *= 2
    lo = hi / 2
    while lo > _MIN_SIGMA and satisfies(lo):
        hi, lo = lo, lo / 2
    if (hi - lo) / hi > tolerance:
        oracle.probe(lo, hi, tolerance)
    while (hi - lo) / hi > tolerance:
        mid = math.sqrt(lo * hi)
        if satisfies(mid):
            hi = mid
        else:
            lo = mid
    eps_hi, report_hi = bound(hi)
    if eps_hi > target_epsilon:  # only if an accountant is not monotone in sigma (see the module docstring)
        hi = oracle.met_at
        eps_hi, report_hi = bound(hi)
    if not eps_hi <= target_epsilon:  # never returned: a sigma is only ever returned with its report at or under
        raise CalibrationError(f"no noise multiplier found whose full report is within target {target_epsilon} "
                               f"(at {hi:.6g}: {eps_hi:.6g}); the accountants disagree with themselves")
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


class _Oracle:
    """Whether the minimum over ``names`` of epsilon(sigma) is at most ``target``, computing as few
    accountants' epsilons as the answers already known allow (each epsilon is non-increasing in sigma).
    ``names`` are in order of cost, the cheapest first (as ``DEFAULT_ACCOUNTANTS``).

    * ``met_at``: the smallest sigma at which some accountant's epsilon was computed at or under the
      target; the answer at any larger sigma is "yes".
    * ``above_target_at[name]``: the largest sigma at which that accountant's epsilon was computed above
      the target; at any smaller sigma it is above too, and it is not asked.
    """

    def __init__(self, names, target: float, epsilon) -> None:
        self.names, self.target, self.epsilon = tuple(names), target, epsilon
        self.above_target_at = dict.fromkeys(self.names, 0.0)
        self.met_at = math.inf
        self.computed: dict[str, dict[float, float]] = {name: {} for name in self.names}

    def _answer(self, name: str, sigma: float) -> bool | None:
        """Whether ``name``'s epsilon at ``sigma`` is at or under the target (None: the accountant failed,
        about which this oracle then infers nothing); computed once, and what it implies recorded."""
        if sigma <= self.above_target_at[name]:
            return False
        if sigma not in self.computed[name]:
            value = self.epsilon(sigma, name)
            if value is None:
                return None
            self.computed[name][sigma] = value
        if self.computed[name][sigma] <= self.target:
            self.met_at = min(self.met_at, sigma)
            return True
        self.above_target_at[name] = max(self.above_target_at[name], sigma)
        return False

    def satisfies(self, sigma: float) -> bool:
        """The bisection's question, asking the accountants in order until one answers "yes"."""
        return sigma >= self.met_at or any(self._answer(name, sigma) for name in self.names)

    def _crossing(self) -> float | None:
        """An estimate of the smallest sigma at which the minimum over accountants meets the target: for
        each accountant computed both above and at or under the target, where it crosses, interpolating
        log epsilon linearly in log sigma between its closest such pair; the smallest of those."""
        estimates = []
        for values in self.computed.values():
            above = [s for s, e in values.items() if e > self.target]
            met = [s for s, e in values.items() if e <= self.target]
            if not above or not met:
                continue
            s_no, s_yes = max(above), min(met)
            e_no, e_yes = values[s_no], values[s_yes]
            if not (s_no < s_yes and e_no > e_yes > 0):
                continue
            fraction = math.log(e_no / self.target) / math.log(e_no / e_yes)
            estimates.append(math.exp(math.log(s_no) + fraction * math.log(s_yes / s_no)))
        return min(estimates, default=None)

    def probe(self, lo: float, hi: float, tolerance: float) -> None:
        """Learn answers near the crossing before bisecting ``(lo, hi]`` (``lo`` "no", ``hi`` "yes").

        1. Every accountant but the costliest at ``hi``: each then has a value on either side of its
           crossing (at ``lo`` the answer was "no", so each accountant was computed there, or at a larger
           sigma where it was above the target, or it failed).
        2. Every accountant at up to two successive estimates of the crossing (:meth:`_crossing`), each
           only if there is one and it lies inside the bracket.
        3. The plain answer a quarter-tolerance either side of a third estimate.

        The bisection that follows asks :meth:`satisfies` at its usual midpoints; those on the known
        side of a probe are answered without computing, so only the cost of its decisions changes,
        never the decisions."""
        for name in self.names[:-1]:
            self._answer(name, hi)
        for _ in range(2):
            estimate = self._crossing()
            if estimate is None or not lo < estimate < hi:
                return
            for name in self.names:
                self._answer(name, estimate)
        estimate = self._crossing()
        for sigma in () if estimate is None else (estimate * (1 - tolerance / 4), estimate * (1 + tolerance / 4)):
            if lo < sigma < hi:
                self.satisfies(sigma)
