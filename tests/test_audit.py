"""One-run privacy audit (dp.audit, `secagg audit`): the ceiling, auto canaries, synthetic and own-training modes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import binom

from dp.audit import (AUDIT_FILE, audit_ceiling, audit_dp_sgd, audit_training, choose_canaries,
                      default_guesses_per_side, epsilon_lower_bound, p_value, write_audit)
from dp.errors import InvalidPrivacyParameterError

ROOT = Path(__file__).resolve().parents[1]


def test_p_value_is_the_binomial_tail_plus_the_delta_term():
    m, r, v, eps = 100, 40, 30, 1.0
    q = math.exp(eps) / (1 + math.exp(eps))
    tail = binom.sf(v - 1, r, q)
    assert p_value(m, r, v, eps, 0.0) == pytest.approx(tail)
    alpha = max(sum(binom.pmf(v - j, r, q) for j in range(1, i + 1)) / i for i in range(1, v + 1))
    assert p_value(m, r, v, eps, 1e-3) == pytest.approx(tail + 2 * m * 1e-3 * alpha)
    assert p_value(m, r, v, eps, 1e-3) > p_value(m, r, v, eps, 0.0)
    # P[Bin(r, q) >= v] increases with q = e^eps / (1 + e^eps): the p-value increases with epsilon.
    assert p_value(m, r, v, 0.5, 0) < p_value(m, r, v, 2.0, 0)


@pytest.mark.parametrize("m, r, v, delta, published", [
    (1000, 100, 75, 1e-4, 0.673),  # arXiv:2305.08846v1, Appendix D, p. 46
    (100000, 1510, 1439, 1e-5, 2.675),  # arXiv:2305.08846v1, Section 7, p. 28
])
def test_reproduces_the_papers_printed_values(m, r, v, delta, published):
    assert epsilon_lower_bound(m, r, v, delta=delta, confidence=0.95) == pytest.approx(published, abs=1e-3)


def test_lower_bound_limits():
    assert epsilon_lower_bound(200, 100, 50, delta=1e-5) == 0.0  # chance accuracy proves nothing
    perfect = epsilon_lower_bound(200, 100, 100, delta=0.0, confidence=0.95)
    assert (1 / (1 + math.exp(-perfect))) ** 100 == pytest.approx(0.05, rel=1e-3)  # q^r = beta
    assert epsilon_lower_bound(200, 100, 100, delta=1e-5) <= perfect
    assert epsilon_lower_bound(200, 100, 90, delta=1e-5, confidence=0.99) < \
        epsilon_lower_bound(200, 100, 90, delta=1e-5, confidence=0.9)
    with pytest.raises(InvalidPrivacyParameterError):
        p_value(10, 5, 6, 1.0, 0.0)


def test_lower_bound_never_exceeds_the_accounted_epsilon():
    result = audit_dp_sgd(noise_multiplier=1.0, sample_rate=0.5, steps=10, canaries=200, confidence=0.99)
    assert result.epsilon_accounted == pytest.approx(10.46, abs=0.05)
    assert 0 <= result.epsilon_lower_bound <= result.epsilon_accounted
    assert result.consistent
    assert result.guesses == 100 and 0 <= result.correct <= 100 and 0 < result.included < 200


def test_noise_switched_off_is_caught():
    # The accountant believes sigma = 4 (epsilon ~1.66); training actually adds (almost) no noise.
    result = audit_dp_sgd(noise_multiplier=4.0, sample_rate=0.5, steps=10, canaries=200,
                          effective_noise_multiplier=1e-9)
    assert result.epsilon_accounted < 2
    assert result.epsilon_lower_bound > result.epsilon_accounted
    # Nearly every guess is right; a canary that Poisson sampling never picked (probability
    # 0.5^10 each) can still be missed, so exact equality would be a flaky assertion.
    assert not result.consistent and result.correct >= 0.9 * result.guesses


def test_cli_audit_writes_audit_json_for_the_dpia(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: subprocess.run([sys.executable, "-m", "simulation.cli", "audit", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=180)
    result = run("--noise-multiplier", "2", "--sample-rate", "0.5", "--steps", "5", "--canaries", "100", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["consistent"] and data["epsilon_lower_bound"] <= data["epsilon_accounted"]
    bad = run("--steps", "5")
    assert bad.returncode == 2 and bad.stderr.startswith("secagg audit: error:") and bad.stderr.count("\n") == 1
    bad = run(tmp_path)  # not a run directory
    assert bad.returncode == 2 and "no privacy ledger" in bad.stderr


def test_write_audit(tmp_path):
    result = audit_dp_sgd(noise_multiplier=2.0, sample_rate=0.5, steps=3, canaries=40)
    path = write_audit(tmp_path, result)
    assert path.name == AUDIT_FILE
    data = json.loads(path.read_text())
    assert data["epsilon_lower_bound"] == result.epsilon_lower_bound and data["canaries"] == 40


# -- the ceiling and the choice of m ----------------------------------------------------------------


@pytest.mark.parametrize("m, r, delta", [(200, 100, 1e-5), (1000, 500, 0.0), (29523, 14760, 1e-5)])
def test_ceiling_is_the_bound_of_a_perfect_score(m, r, delta):
    ceiling = audit_ceiling(m, r, delta=delta)
    assert ceiling == epsilon_lower_bound(m, r, r, delta=delta)
    assert epsilon_lower_bound(m, r, r - 1, delta=delta) < ceiling  # one wrong guess shows less
    if delta == 0:
        assert (1 / (1 + math.exp(-ceiling))) ** r == pytest.approx(0.05, rel=1e-3)  # q^r = beta


def test_the_vectorised_p_value_matches_the_direct_sum_and_never_undershoots():
    cases = [(200, 100, 100, 3.0, 1e-5), (5000, 2500, 2400, 2.0, 1e-4), (40000, 20000, 20000, 7.0, 1e-5)]
    for m, r, v, eps, delta in cases:
        q = 1 / (1 + math.exp(-eps))
        pmf = binom.pmf(list(range(v - 1, -1, -1)), r, q)
        partial, alpha = 0.0, 0.0
        for i, value in enumerate(pmf, start=1):
            partial += value
            alpha = max(alpha, partial / i)
        exact = min(binom.sf(v - 1, r, q) + 2 * m * delta * alpha, 1.0)
        assert p_value(m, r, v, eps, delta) >= exact * (1 - 1e-9)
        assert p_value(m, r, v, eps, delta) == pytest.approx(exact, rel=1e-6)


def test_delta_caps_the_ceiling_below_10_at_delta_1e5():
    # The largest ceiling of ANY m with the rule k = m // 4 at delta 1e-5 and 95%: about 7.55
    # (module docstring); guessing on every canary would give about 8.24. 10 is out of reach.
    plan = choose_canaries(10.0, delta=1e-5)
    assert not plan.reaches_target
    assert plan.best_ceiling == pytest.approx(7.55, abs=0.02) and 20_000 < plan.best_canaries < 40_000
    assert plan.canaries == plan.best_canaries and plan.ceiling == plan.best_ceiling
    assert audit_ceiling(26938, 26938, delta=1e-5) == pytest.approx(8.24, abs=0.02)
    assert audit_ceiling(10 * plan.best_canaries, 2 * default_guesses_per_side(10 * plan.best_canaries),
                         delta=1e-5) < plan.best_ceiling  # more canaries make it worse: the delta term


def test_auto_reaches_10_at_a_smaller_delta_with_the_smallest_m():
    plan = choose_canaries(10.0, delta=1e-7)
    assert plan.reaches_target and plan.ceiling >= 10.0
    assert plan.guesses_per_side == plan.canaries // 4
    m = plan.canaries
    assert audit_ceiling(m - 1, 2 * default_guesses_per_side(m - 1), delta=1e-7) < 10.0  # the smallest m
    assert 100_000 < m < 200_000


def test_auto_audit_reaches_an_accounted_epsilon_of_10():
    # sigma 1.2, q 0.5, 10 steps: epsilon ~10.04 at delta 1e-7. Auto picks m so the ceiling reaches it,
    # and training ~140,000 gradient canaries stays cheap (a 375 x 375 linear model).
    result = audit_dp_sgd(noise_multiplier=1.2, sample_rate=0.5, steps=10, delta=1e-7)
    assert result.epsilon_accounted >= 10.0
    assert result.canaries_chosen == "auto" and result.ceiling >= result.epsilon_accounted >= 10.0
    assert result.ceiling_reaches_accounted and result.max_ceiling is None
    assert result.consistent and 0 <= result.epsilon_lower_bound <= result.ceiling


def test_noise_switched_off_is_caught_with_auto_canaries():
    result = audit_dp_sgd(noise_multiplier=4.0, sample_rate=0.5, steps=20, effective_noise_multiplier=1e-9)
    assert result.canaries_chosen == "auto" and result.ceiling >= result.epsilon_accounted
    assert not result.consistent and result.epsilon_lower_bound > result.epsilon_accounted


def test_record_canaries_still_catch_noise_switched_off():
    result = audit_dp_sgd(noise_multiplier=4.0, sample_rate=0.5, steps=10, canaries=200, canary_kind="record",
                          effective_noise_multiplier=1e-9)
    assert result.canary_kind == "record" and not result.consistent
    with pytest.raises(InvalidPrivacyParameterError, match="cap"):
        audit_dp_sgd(noise_multiplier=4.0, sample_rate=0.5, steps=1, canaries=5000, canary_kind="record")


# -- the training hook ------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["patient", "slice"])
def test_gradient_canaries_enter_the_clipped_sum_before_the_noise(unit):
    # q = 1, SGD with lr 1, normaliser 1, (almost) no noise: each canary moves its coordinate by
    # -sign * C per step, exactly; the real records (all zero: zero gradient) move nothing.
    import torch

    from dp.training import AuditCanaries, DpSgdConfig, train_dp_sgd

    model = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    config = DpSgdConfig(noise_multiplier=1e-12, max_grad_norm=0.5, sample_rate=1.0, steps=3, learning_rate=1.0,
                         optimizer="sgd", privacy_unit=unit)
    canaries = AuditCanaries(coordinates=(0, 5, 15), signs=(1, -1, 1))
    result = train_dp_sgd(model, torch.zeros(2, 4), config, site="t", round_index=0, patients=[0, 1],
                          audit_canaries=canaries)
    flat = result.delta["weight"].reshape(-1)
    expected = torch.zeros(16)
    expected[0], expected[5], expected[15] = -1.5, 1.5, -1.5
    assert torch.allclose(flat, expected, atol=1e-6)
    with pytest.raises(InvalidPrivacyParameterError, match="outside"):
        train_dp_sgd(model, torch.zeros(2, 4), config, site="t", round_index=0, patients=[0, 1],
                     audit_canaries=AuditCanaries(coordinates=(16,), signs=(1,)))
    for bad in [dict(coordinates=(1, 1), signs=(1, 1)), dict(coordinates=(1,), signs=(2,)),
                dict(coordinates=(), signs=())]:
        with pytest.raises(InvalidPrivacyParameterError):
            AuditCanaries(**bad)


# -- own-training mode ------------------------------------------------------------------------------


def _small_training(unit="patient"):
    import torch

    from dp.training import DpSgdConfig

    torch.manual_seed(0)  # test data and initial weights only: no key, seed, mask or DP noise
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 16))
    data = torch.randn(30, 16)
    patients = [i // 3 for i in range(30)]  # 10 patients, 3 records each
    config = DpSgdConfig(noise_multiplier=4.0, max_grad_norm=1.0, sample_rate=0.5, steps=12, learning_rate=1e-2,
                         optimizer="adam", privacy_unit=unit)
    return model, data, patients, config


@pytest.mark.parametrize("unit", ["patient", "slice"])
def test_own_training_catches_noise_switched_off(unit):
    model, data, patients, config = _small_training(unit)
    result = audit_training(model, data, config, patients=patients, canaries=200, effective_noise_multiplier=1e-9,
                            site="site-x", model_name="mlp")
    assert result.mode == "own-training" and result.privacy_unit == unit and result.site == "site-x"
    assert result.epsilon_lower_bound > result.epsilon_accounted and not result.consistent


def test_own_training_with_the_accounted_noise_is_consistent():
    model, data, patients, config = _small_training()
    result = audit_training(model, data, config, patients=patients)
    assert result.canaries_chosen == "auto" and result.ceiling >= result.epsilon_accounted
    assert result.consistent and result.effective_noise_multiplier == config.noise_multiplier
    with pytest.raises(InvalidPrivacyParameterError, match="cap of 280"):  # one coordinate per canary
        audit_training(model, data, config, patients=patients, canaries=500)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_tiny_run):
    """One tiny simulated run (1 round x 4 steps, q 0.5, epsilon 1) for the own-training CLI tests; its cache
    starts as a copy of the session's shared tiny run's (same cohort; tests/shared_runs.py)."""
    from tests.shared_runs import seed_cache

    base = tmp_path_factory.mktemp("audit-run")
    seed_cache(shared_tiny_run.cache, base / "cache")
    (base / "q.toml").write_text("sample_rate = 0.5\n")
    result = subprocess.run([sys.executable, "-m", "simulation.cli", "simulate", "--tiny", "--rounds", "1",
                             "--local-steps", "4", "--epsilon", "1", "--config", str(base / "q.toml"),
                             "--out", str(base / "run"), "--cache-dir", str(base / "cache"), "--json"],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=900)
    assert result.returncode == 0, result.stderr
    return base / "run"


def _main(capsys, *args):
    """``secagg audit ARGS`` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from simulation.cli import main

    code = main(["audit", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_own_training_on_a_run_directory(tiny_run, capsys):
    from simulation.reports.audit_run import audit_own_training

    broken = audit_own_training(tiny_run, canaries=200, effective_noise_multiplier=1e-9)
    assert broken.mode == "own-training" and broken.site == "site-1" and "compact-ae" in broken.model
    assert broken.steps == 4 and broken.sample_rate == 0.5 and broken.privacy_unit == "patient"
    assert broken.epsilon_lower_bound > broken.epsilon_accounted and not broken.consistent
    code, out, err = _main(capsys, tiny_run, "--own-training", "--site", "site-2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["mode"] == "own-training" and data["site"] == "site-2" and data["canaries_chosen"] == "auto"
    assert data["ceiling"] >= data["epsilon_accounted"] and data["ceiling_reaches_accounted"]
    assert data["warnings"] == [] and data["consistent"]
    assert json.loads((tiny_run / AUDIT_FILE).read_text())["mode"] == "own-training"
    code, _, err = _main(capsys, tiny_run, "--own-training", "--site", "site-9")
    assert code == 2 and "no site 'site-9'" in err and err.count("\n") == 1


def test_cli_prints_the_ceiling_and_says_when_it_is_below_the_accounted_epsilon(tmp_path, capsys):
    # epsilon ~10.46 at delta 1e-5: unreachable; a cap of 300 canaries makes it cheap and lower still.
    code, out, err = _main(capsys, "--noise-multiplier", "1", "--sample-rate", "0.5", "--steps", "10",
                           "--max-canaries", "300")
    assert code == 0, err
    ceiling = audit_ceiling(300, 150, delta=1e-5)
    assert f"ceiling: this setting can certify at most epsilon >= {ceiling:.4f}" in out
    assert "synthetic mode" in out and "300 gradient canaries (auto;" in out
    assert f"this audit cannot detect a violation above epsilon {ceiling:.4f}" in err
    assert "no number of canaries up to the cap reaches the accounted epsilon" in err
    code, out, err = _main(capsys, "--noise-multiplier", "1", "--sample-rate", "0.5", "--steps", "10",
                           "--max-canaries", "300", "--json")
    data = json.loads(out)
    assert data["ceiling"] == pytest.approx(ceiling) and data["canaries"] == 300
    assert data["max_ceiling"] == data["ceiling"]
    assert not data["ceiling_reaches_accounted"] and len(data["warnings"]) == 2
    assert data["mode"] == "synthetic" and data["canary_kind"] == "gradient"
    code, out, err = _main(capsys, "--noise-multiplier", "4", "--sample-rate", "0.5", "--steps", "10", "--json")
    fine = json.loads(out)
    assert fine["ceiling_reaches_accounted"] and fine["warnings"] == [] and fine["canaries_chosen"] == "auto"
    for args, message in [(("--own-training",), "needs a RUN_DIR"), (("--canaries", "x", "--steps", "1"), "auto"),
                          (("--site", "a", "--noise-multiplier", "1", "--sample-rate", "0.5", "--steps", "1"),
                           "--site needs --own-training"),
                          ((tmp_path, "--own-training", "--steps", "3"), "drop --steps")]:
        code, _, err = _main(capsys, *args)
        assert code == 2 and message in err and err.count("\n") == 1, err
