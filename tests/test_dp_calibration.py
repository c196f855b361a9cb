"""Noise calibration for a whole run."""

import pytest

from dp import calibrate_noise, epsilon_for
from dp.errors import CalibrationError, InvalidPrivacyParameterError


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


def _full_minimum_bisection(bound, target, tolerance=1e-3):
    """The calibration as it was before the accountants were asked one at a time: the minimum over every
    accountant at every step (the reference the short-circuited bisection must agree with)."""
    hi = 1.0
    while bound(hi) > target:
        hi *= 2
    lo = hi / 2
    while lo > 1e-3 and bound(lo) <= target:
        hi, lo = lo, lo / 2
    while (hi - lo) / hi > tolerance:
        mid = (lo * hi) ** 0.5
        hi, lo = (mid, lo) if bound(mid) <= target else (hi, mid)
    return hi


@pytest.mark.parametrize("target", [0.7, 2.0, 5.0, 9.5])
def test_asking_one_accountant_at_a_time_returns_the_full_minimums_sigma(monkeypatch, target):
    """Three stand-in accountants whose order (which is tightest) changes with sigma: the sigma returned is
    the one a bisection on the minimum over all three returns, the report at it is every accountant's, and
    an accountant is skipped only at a sigma where an earlier one already met the target, or at or below a
    sigma where it was itself above the target (epsilon is non-increasing in sigma)."""
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
    expected = _full_minimum_bisection(lambda s: min(f(s) for f in curves.values()), target)
    assert cal.noise_multiplier == expected
    assert cal.epsilon == min(f(expected) for f in curves.values()) <= target
    assert cal.report.to_dict()["epsilon"] == {name: f(expected) for name, f in curves.items()}
    order = ("rdp", "prv", "pld")
    seen_above: dict[str, float] = {}  # the largest sigma at which each was computed above the target so far
    asked: dict[float, list[str]] = {}
    for name, sigma in calls:
        asked.setdefault(sigma, []).append(name)
    skipped_as_known_above = 0
    for name, sigma in calls:  # in the order they were computed
        names = asked[sigma]
        assert len(names) == len(set(names))  # each answer computed once (cached)
        if name == names[0] and len(names) < 3:  # a step that skipped some (the report at the end skips none)
            assert names == [n for n in order if n in names]  # asked in order
            met = curves[names[-1]](sigma) <= target
            assert all(curves[n](sigma) > target for n in names[:-1])  # stopped at the first at or under
            for n in (n for n in order if n not in names):
                before_the_decider = order.index(n) < order.index(names[-1])
                if met and not before_the_decider:
                    continue  # skipped because an earlier accountant met the target here
                # skipped because it was above the target at a sigma at least as large
                assert seen_above.get(n, 0.0) >= sigma, (sigma, n, names)
                skipped_as_known_above += 1
        if curves[name](sigma) > target:
            seen_above[name] = max(seen_above.get(name, 0.0), sigma)
    assert any(len(names) < 3 for names in asked.values()), "no accountant was ever skipped"
    if target != 0.7:  # at 0.7 (large sigma) "rdp", asked first, is the tightest and decides every step alone
        assert skipped_as_known_above > 0, "no accountant was skipped for an answer known from a larger sigma"
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
