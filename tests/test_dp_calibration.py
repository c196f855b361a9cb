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
    an accountant is skipped only at a sigma where an earlier one already met the target."""
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
    asked = {}
    for name, sigma in calls:
        asked.setdefault(sigma, []).append(name)
    for sigma, names in asked.items():
        assert len(names) == len(set(names))  # each answer computed once (cached)
        order = [n for n in ("rdp", "prv", "pld") if n in names]
        skipped = [n for n in ("rdp", "prv", "pld") if n not in names]
        if skipped:  # asked in order, and stopped at the first at or under the target
            assert names == order and curves[names[-1]](sigma) <= target, (sigma, names)
            assert all(curves[n](sigma) > target for n in names[:-1])
    assert any(len(names) < 3 for names in asked.values()), "no accountant was ever skipped"
    assert math.isfinite(cal.epsilon)
