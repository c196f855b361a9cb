"""One-run privacy audit (dp.audit, `secagg audit`): small and fast (a linear model, 200 canaries)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import binom

from dp.audit import AUDIT_FILE, audit_dp_sgd, epsilon_lower_bound, p_value, write_audit
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
