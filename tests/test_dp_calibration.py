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
