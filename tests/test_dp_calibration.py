"""Noise calibration for a whole run."""

import pytest

from dp import calibrate_noise, epsilon_for
from dp.errors import CalibrationError, InvalidPrivacyParameterError
from tests.calibration_reference import full_minimum_bisection


@pytest.mark.parametrize("accountant", ["rdp", "all"])
def test_calibrated_sigma_meets_target_and_is_nearly_minimal(accountant):
    target, delta, q, steps = 2.0, 1e-5, 0.02, 300
    cal = calibrate_noise(target_epsilon=target, delta=delta, sample_rate=q, steps=steps, accountant=accountant)
    names = ("rdp", "prv", "pld") if accountant == "all" else (accountant,)
    at = epsilon_for(noise_multiplier=cal.noise_multiplier, sample_rate=q, steps=steps, delta=delta, accountants=names)
    assert at.bound <= target
    below = epsilon_for(noise_multiplier=cal.noise_multiplier * 0.99, sample_rate=q, steps=steps, delta=delta,
                        accountants=names)
    assert below.bound > target  # 1% less noise would overspend
    assert cal.accountant == accountant and cal.epsilon == pytest.approx(at.bound)


def test_tightest_bound_needs_no_more_noise_than_rdp():
    kwargs = dict(target_epsilon=2.0, delta=1e-5, sample_rate=0.02, steps=300)
    # Repeats the parametrised calls above: the accountants' results are cached.
    assert calibrate_noise(accountant="all", **kwargs).noise_multiplier <= calibrate_noise(
        accountant="rdp", **kwargs).noise_multiplier


def test_calibrating_for_more_steps_needs_more_noise():
    short = calibrate_noise(target_epsilon=1.0, delta=1e-5, sample_rate=0.05, steps=100, accountant="rdp")
    long = calibrate_noise(target_epsilon=1.0, delta=1e-5, sample_rate=0.05, steps=1000, accountant="rdp")
    assert long.noise_multiplier > short.noise_multiplier


def test_unreachable_and_invalid_targets():
    with pytest.raises(CalibrationError):
        calibrate_noise(target_epsilon=1e-9, delta=1e-5, sample_rate=1.0, steps=10**6, accountant="rdp")
    with pytest.raises(InvalidPrivacyParameterError):
        calibrate_noise(target_epsilon=-1, delta=1e-5, sample_rate=0.1, steps=10)
    with pytest.raises(InvalidPrivacyParameterError):
        calibrate_noise(target_epsilon=1, delta=2, sample_rate=0.1, steps=10)
    with pytest.raises(InvalidPrivacyParameterError, match="unknown accountant"):
        calibrate_noise(target_epsilon=1, delta=1e-5, sample_rate=0.1, steps=10, accountant="gdp")


@pytest.mark.parametrize("target", [0.7, 2.0, 5.0, 9.5])
def test_asking_one_accountant_at_a_time_returns_the_full_minimums_sigma(monkeypatch, target):
    """Three stand-in accountants whose order (which is tightest) changes with sigma: the sigma returned is
    the one a bisection on the minimum over all three returns, the report at it is every accountant's, no
    epsilon is computed twice, and far fewer are computed than that bisection's points times three."""
    import math

    from dp import accounting

    curves = {  # epsilon(sigma), decreasing; "pld" is tightest at small sigma, "rdp" at large sigma
        "rdp": lambda s: 3.0 / s ** 1.5,
        "prv": lambda s: 2.6 / s + 0.2,
        "pld": lambda s: 2.2 / s ** 1.2 + 0.35,
    }
    calls = []

    def stand_in(name):
        def compute(events, delta):
            calls.append((name, events[0].noise_multiplier))
            return curves[name](events[0].noise_multiplier)
        return compute

    for name in curves:
        monkeypatch.setitem(accounting.ACCOUNTANTS, name,
                            accounting._Accountant(name, stand_in(name), "numpy", f"stand-in {name}"))
    accounting._cached_run.cache_clear()
    try:
        cal = calibrate_noise(target_epsilon=target, delta=1e-5, sample_rate=0.1, steps=7, accountant="all")
    finally:
        accounting._cached_run.cache_clear()
    plain_points = set()
    expected = full_minimum_bisection(lambda s: min(f(s) for f in curves.values()), target, evaluated=plain_points)
    assert cal.noise_multiplier == expected
    assert cal.epsilon == min(f(expected) for f in curves.values()) <= target
    assert cal.report.to_dict()["epsilon"] == {name: f(expected) for name, f in curves.items()}
    computed = [(name, sigma) for name, sigma in calls]
    assert len(computed) == len(set(computed))  # each accountant's answer at a sigma computed once (cached)
    asked = {sigma for _, sigma in calls}
    # The probes near the crossing leave few sigmas to compute at (12-13 points for that bisection, 6-8 here),
    assert len(asked) <= len(plain_points) - 4, (len(asked), len(plain_points))
    # and few epsilons in all (14-15 here; 36-39 for every accountant at each of that bisection's points).
    assert len(calls) < 1.5 * len(plain_points), (len(calls), len(plain_points))
    assert math.isfinite(cal.epsilon)


def test_an_accountant_that_is_not_monotone_still_gets_a_sigma_that_meets_the_target(monkeypatch):
    """The skip assumes each accountant's epsilon is non-increasing in sigma. A stand-in that is not (a dip
    under the target below a sigma where it was above it) may make the bisection miss the dip, never
    return a sigma whose full report is above the target."""
    from dp import accounting

    def wobbly(s):  # above 3.0 at 0.9 and at 1.0, under it on (0.55, 0.6): not monotone
        return 2.0 if 0.55 < s < 0.6 else 3.0 / s ** 2

    monkeypatch.setitem(accounting.ACCOUNTANTS, "pld", accounting._Accountant(
        "pld", lambda events, delta: wobbly(events[0].noise_multiplier), "numpy", "stand-in"))
    accounting._cached_run.cache_clear()
    try:
        cal = calibrate_noise(target_epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=7, accountant="pld")
    finally:
        accounting._cached_run.cache_clear()
    assert cal.epsilon == wobbly(cal.noise_multiplier) <= 3.0
    assert cal.report.bound == cal.epsilon


def test_a_sigma_inferred_from_a_lucky_answer_is_checked_in_full_before_it_is_returned(monkeypatch):
    """The bisection answers "at or under the target" without computing at any sigma above one where an
    accountant met it. An accountant that is not monotone (here: one answer far too low, on its third
    computation: the first probe, well under the crossing at 0.866) makes that inference wrong above the
    lucky sigma; the returned sigma's report is computed in full, and as it is above the target, the
    lucky sigma itself, whose report is at or under it, is returned instead."""
    from dp import accounting

    count = []

    def flaky(events, delta):
        sigma = events[0].noise_multiplier
        count.append(sigma)
        return 0.1 if len(count) == 3 else (3.0 / sigma ** 2 if sigma >= 0.8 else 4.7)

    monkeypatch.setitem(accounting.ACCOUNTANTS, "pld", accounting._Accountant("pld", flaky, "numpy", "stand-in"))
    accounting._cached_run.cache_clear()
    try:
        cal = calibrate_noise(target_epsilon=4.0, delta=1e-5, sample_rate=0.1, steps=7, accountant="pld")
    finally:
        accounting._cached_run.cache_clear()
    assert count[2] < 0.8 and len(count) > 3  # the lucky answer came from a probe, and more were computed
    assert cal.noise_multiplier == count[2]  # the lucky sigma, not the one inferred from it
    assert cal.epsilon == cal.report.bound == 0.1 <= 4.0


def test_an_accountant_that_contradicts_itself_gets_an_error_not_a_sigma_above_the_target(monkeypatch):
    """The last line of defence: the returned sigma's full report must be at or under the target. A stand-in
    whose answers change between calls (it empties the answer cache and answers "met" only the first time
    it is asked at a sigma) leaves no such sigma: the calibration raises instead of returning one."""
    from dp import accounting
    from dp.errors import CalibrationError

    asked = set()

    def contradicts(events, delta):
        sigma = events[0].noise_multiplier
        accounting._cached_run.cache_clear()
        first = sigma not in asked
        asked.add(sigma)
        return 1.0 if first and sigma >= 0.7 else 9.0

    monkeypatch.setitem(accounting.ACCOUNTANTS, "pld", accounting._Accountant("pld", contradicts, "numpy", "stand-in"))
    accounting._cached_run.cache_clear()
    try:
        with pytest.raises(CalibrationError, match="disagree with themselves"):
            calibrate_noise(target_epsilon=4.0, delta=1e-5, sample_rate=0.1, steps=7, accountant="pld")
    finally:
        accounting._cached_run.cache_clear()
