"""Accountants: published reference values, the exact closed form, each other, properties."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import norm

from dp import PrivacyEvent, compute_epsilon, epsilon_for
from dp.accounting import ACCOUNTANTS
from dp.errors import InvalidPrivacyParameterError

BOUNDS = ("rdp", "prv", "pld", "rdp-dpa")


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of a Gaussian mechanism with mu = sensitivity/std (Balle & Wang 2018, Thm. 8):
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""
    def gap(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta
    return brentq(gap, 0.0, 500.0)


@pytest.mark.parametrize("sigma,steps", [(1.0, 1), (2.0, 10), (5.0, 100), (0.8, 4)])
def test_full_batch_composition_matches_closed_form(sigma, steps):
    """q = 1: T Gaussian steps with noise multiplier sigma compose exactly to one Gaussian
    mechanism with mu = sqrt(T)/sigma, whose epsilon has a closed form."""
    delta = 1e-5
    exact = exact_gaussian_epsilon(math.sqrt(steps) / sigma, delta)
    report = epsilon_for(noise_multiplier=sigma, sample_rate=1.0, steps=steps, delta=delta, accountants=BOUNDS)
    for result in report.results:
        assert result.ok, result.error
        assert result.epsilon >= exact * (1 - 1e-6), f"{result.accountant} is below the exact epsilon"
    assert report.epsilon("pld") <= exact * 1.01 + 1e-3  # PLD is tight
    assert report.epsilon("prv") <= exact * 1.02 + 1e-2
    assert report.bound >= exact * (1 - 1e-6)


def test_abadi_et_al_2016_moments_accountant_example():
    """Abadi et al., CCS 2016, Sec. 3.1: q = 0.01, sigma = 4, delta = 1e-5, T = 10,000 steps gives
    eps ~ 1.26 with the moments accountant. RDP-based accountants must not exceed it (modern
    conversions are tighter), and the numerical ones must be tighter still."""
    report = epsilon_for(noise_multiplier=4.0, sample_rate=0.01, steps=10_000, delta=1e-5, accountants=BOUNDS)
    assert report.epsilon("rdp") <= 1.26 + 0.01
    assert report.epsilon("pld") <= report.epsilon("rdp")
    assert report.bound > 0.5  # and not absurdly small


def test_opacus_documentation_example():
    """Opacus docs, 'Compute DP-SGD Privacy' script: N = 60000, batch 256, sigma = 1.12, 60 epochs,
    delta = 1e-5 gives (2.95, 1e-5) with orders {10, 20, 100}; a richer order grid and the
    improved conversion can only lower it."""
    q = 256 / 60000
    steps = int(60 / q)
    report = epsilon_for(noise_multiplier=1.12, sample_rate=q, steps=steps, delta=1e-5, accountants=BOUNDS)
    assert report.epsilon("rdp") <= 2.95 + 0.01
    assert report.epsilon("pld") <= report.epsilon("rdp")
    assert report.epsilon("pld") > 2.0


def test_bu_dong_long_su_2020_moments_accountant_example():
    """Bu, Dong, Long, Su, Harvard Data Science Review 2020, Fig. 4: p = 256/60000, sigma = 1.3,
    20 epochs: the moments accountant gives (1.34, 1e-5)."""
    q = 256 / 60000
    report = epsilon_for(noise_multiplier=1.3, sample_rate=q, steps=int(20 / q), delta=1e-5, accountants=BOUNDS)
    assert report.epsilon("rdp") <= 1.34 + 0.01


@pytest.mark.parametrize("sigma,q,steps", [(1.0, 0.01, 1000), (0.7, 0.05, 200), (2.0, 0.001, 5000)])
def test_two_rdp_implementations_agree(sigma, q, steps):
    report = epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5, accountants=BOUNDS)
    assert report.epsilon("rdp") == pytest.approx(report.epsilon("rdp-dpa"), rel=0.02)
    # The numerical accountants are tighter than RDP and agree with each other.
    assert report.epsilon("pld") <= report.epsilon("rdp") * 1.001
    # PRV works to an absolute epsilon error of 0.01 (Opacus default), hence the abs tolerance.
    assert report.epsilon("prv") == pytest.approx(report.epsilon("pld"), rel=0.05, abs=0.02)


@settings(max_examples=12, deadline=None)
@given(
    sigma=st.floats(0.6, 5.0),
    q=st.floats(0.001, 0.2),
    steps=st.integers(1, 500),
    extra=st.integers(1, 500),
)
def test_epsilon_grows_with_steps_and_shrinks_with_noise(sigma, q, steps, extra):
    def eps(s, t):
        return epsilon_for(noise_multiplier=s, sample_rate=q, steps=t, delta=1e-5, accountants=("rdp", "rdp-dpa")).bound

    base = eps(sigma, steps)
    assert eps(sigma, steps + extra) >= base * (1 - 1e-9)
    assert eps(sigma * 1.5, steps) <= base * (1 + 1e-9)


def test_composition_across_rounds_equals_one_long_run():
    events = [PrivacyEvent("a", r, 1.0, 0.02, 50, 1e-5) for r in range(4)]
    split = compute_epsilon(events, 1e-5, accountants=("rdp", "pld"))
    whole = epsilon_for(noise_multiplier=1.0, sample_rate=0.02, steps=200, delta=1e-5, accountants=("rdp", "pld"))
    assert split.epsilon("rdp") == pytest.approx(whole.epsilon("rdp"), rel=1e-9)
    assert split.epsilon("pld") == pytest.approx(whole.epsilon("pld"), rel=1e-3)


def test_failing_accountants_are_reported_not_raised():
    """Tiny noise and many steps: the numerical accountants run out of memory in their guarded
    child process; the report names why and keeps the valid RDP bound."""
    report = epsilon_for(noise_multiplier=0.3, sample_rate=0.5, steps=10_000, delta=1e-5)
    failed = {r.accountant: r.error for r in report.results if not r.ok}
    assert failed, "expected at least one numerical accountant to fail here"
    assert all(reason for reason in failed.values())
    assert report.bound is not None and report.bound_accountant == "rdp"


def test_gdp_is_labelled_and_never_the_bound():
    report = epsilon_for(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=1e-5, approximations=("gdp",))
    gdp = report.epsilon("gdp")
    assert gdp is not None and gdp < report.bound  # GDP under-estimates here: that is why it is not a bound
    assert report.bound_accountant != "gdp"
    assert report.to_dict()["approximations"]["gdp"]["note"].startswith("approximation")


def test_replace_one_adjacency():
    report = epsilon_for(noise_multiplier=1.0, sample_rate=0.01, steps=500, delta=1e-5, neighbouring="replace_one")
    assert report.epsilon("rdp") is None and "add/remove" in dict(
        (r.accountant, r.error) for r in report.results)["rdp"]
    add_remove = epsilon_for(noise_multiplier=1.0, sample_rate=0.01, steps=500, delta=1e-5)
    assert report.epsilon("pld") > add_remove.epsilon("pld")  # replace-one is the stronger relation
    assert report.bound_accountant == "pld"


@pytest.mark.parametrize("kwargs,match", [
    ({"delta": 0.0}, "delta"), ({"delta": 1.0}, "delta"), ({"sample_rate": 0.0}, "sample_rate"),
    ({"sample_rate": 1.5}, "sample_rate"), ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"steps": 0}, "steps"), ({"noise_multiplier": float("nan")}, "noise_multiplier"),
])
def test_bad_parameters_refused(kwargs, match):
    params = dict(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5) | kwargs
    with pytest.raises(InvalidPrivacyParameterError, match=match):
        epsilon_for(**params)


def test_registry_names():
    assert {"rdp", "prv", "pld"} <= set(ACCOUNTANTS)
    with pytest.raises(InvalidPrivacyParameterError, match="unknown accountant"):
        epsilon_for(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5, accountants=("gdp",))


def test_the_same_history_of_another_site_or_round_reuses_the_accounting(accountant_runs):
    """Accountants read only the mechanism parameters: a second site with the same spends costs nothing."""
    calls = accountant_runs
    first = compute_epsilon([PrivacyEvent(site="site-a", round=0, noise_multiplier=1.2345, sample_rate=0.0371,
                                          steps=17, delta=1e-5)], 1e-5, accountants=("rdp",))
    assert calls == ["rdp"]
    second = compute_epsilon([PrivacyEvent(site="site-b", round=4, noise_multiplier=1.2345, sample_rate=0.0371,
                                           steps=17, delta=1e-5)], 1e-5, accountants=("rdp",))
    assert calls == ["rdp"] and second.bound == first.bound
    compute_epsilon([PrivacyEvent(site="site-b", round=4, noise_multiplier=1.2345, sample_rate=0.0371,
                                  steps=18, delta=1e-5)], 1e-5, accountants=("rdp",))
    assert calls == ["rdp", "rdp"]  # another history is computed


@pytest.mark.parametrize("value, reason", [
    (None, "returned no number (NoneType)"), ("1.0", "returned no number (str)"), (True, "returned no number (bool)"),
    (float("nan"), "returned NaN"), (float("inf"), "returned infinity"), (-0.5, "returned a negative epsilon"),
])
def test_an_accountant_returning_no_valid_epsilon_is_a_failure_in_the_report_not_a_crash(monkeypatch, value, reason):
    """Whatever an accountant's computation returns, the report names the failure and the bound is the
    minimum over the others (here RDP's); nothing raises."""
    from dp import accounting
    from dp.events import PrivacyEvent

    monkeypatch.setitem(accounting.ACCOUNTANTS, "pld", accounting._Accountant(
        "pld", lambda events, delta: value, "numpy", "stand-in"))
    accounting._cached_run.cache_clear()
    try:
        report = accounting.compute_epsilon(
            [PrivacyEvent(site="a", round=0, noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5)], 1e-5,
            accountants=("rdp", "pld"))
    finally:
        accounting._cached_run.cache_clear()
    failed = report.results[1]
    assert failed.accountant == "pld" and failed.epsilon is None and reason in failed.error
    assert report.bound == report.results[0].epsilon and report.bound_accountant == "rdp"


def test_a_numpy_scalar_epsilon_is_a_number(monkeypatch):
    """The check for "no number" does not reject a numpy scalar (a float32 is not a Python float)."""
    import numpy as np

    from dp import accounting

    monkeypatch.setitem(accounting.ACCOUNTANTS, "pld", accounting._Accountant(
        "pld", lambda events, delta: np.float32(0.25), "numpy", "stand-in"))
    accounting._cached_run.cache_clear()
    try:
        report = accounting.compute_epsilon(
            [PrivacyEvent(site="a", round=0, noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5)], 1e-5,
            accountants=("pld",))
    finally:
        accounting._cached_run.cache_clear()
    assert report.results[0].ok and report.bound == 0.25 and report.bound_accountant == "pld"
