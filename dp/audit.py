"""Empirical privacy auditing of DP-SGD with one training run (Steinke, Nasr and Jagielski 2023).

An audit gives a LOWER bound on epsilon, to set beside the accountant's UPPER
bound (:func:`dp.accounting.epsilon_for`): a lower bound above the accounted
epsilon means the implementation or the accounting is wrong.

Method ("Privacy Auditing with One (1) Training Run", T. Steinke, M. Nasr,
M. Jagielski, NeurIPS 2023, arXiv:2305.08846). m canaries are each included in
the training data independently with probability 1/2 (the secret bits S come
from the CSPRNG, :mod:`secrets`); the model is trained ONCE; every canary gets
a score; the auditor guesses "included" for the k+ highest scores and
"excluded" for the k- lowest (abstaining on the rest), r = k+ + k- guesses of
which v are correct. The paper's main theorem for (epsilon, delta)-DP bounds
the tail of the number of correct guesses W: if the training algorithm is
(epsilon, delta)-DP in each canary then, with q = e^eps / (e^eps + 1),

    P[W >= v] <= P[Binomial(r, q) >= v] + 2 m delta * alpha,
    alpha = max_{i = 1..v} P[v > Binomial(r, q) >= v - i] / i.

The right-hand side is :func:`p_value`; an (epsilon, delta) claim is rejected at
significance beta = 1 - confidence when ``p_value(m, r, v, epsilon, delta) <
beta``, and the reported lower bound is the largest epsilon so rejected
(:func:`epsilon_lower_bound`, bisection; the p-value increases with epsilon, so the rejected
claims form an interval [0, epsilon_lower)).

Provenance, stated honestly: I could not retrieve the paper's own text in this
session. The formula above (delta term included) is the one in the paper's
Appendix D code (``p_value_DP_audit`` / ``get_eps_audit``) as reproduced by
Google DeepMind's ``jax_privacy.auditing._one_run_p_value`` and by a line-for-line
port that cites it as **Corollary 5.4** of arXiv:2305.08846v1 (pp. 15-16; the
(epsilon, delta) form of the paper's main theorem). The tests reproduce the two
values the paper prints - 0.673 for (m, r, v, delta) = (1000, 100, 75, 1e-4) at 95%
(App. D, p. 46) and 2.675 for (100000, 1510, 1439, 1e-5) at 95% (Sec. 7, p. 28) -
which a version without the delta term, or with r in place of m, does not. Check
the theorem number against the paper before citing it externally.

Canaries here are white-box and exact ("Dirac" canaries in the paper's sense):
the audited model is a bias-free linear autoencoder ``x -> W x`` with the
reconstruction loss of :func:`dp.training.train_dp_sgd`; canary j is the scaled
basis vector a e_j, so its clipped gradient moves only W[j, j], and the score of
canary j is W_T[j, j] - W_0[j, j]. Training is the project's own
:func:`dp.training.train_dp_sgd` (Poisson sampling, clipping, CSPRNG Gaussian
noise) with SGD. The k+/k- split is fixed before training (no search over k, so
the confidence is not diluted by multiple testing).

Fault injection for tests: ``effective_noise_multiplier`` trains with a
different sigma than the one accounted - e.g. 1e-9, "noise switched off while
the accountant thinks it is on" - which the audit must catch.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import InvalidPrivacyParameterError

__all__ = ["AuditResult", "p_value", "epsilon_lower_bound", "audit_dp_sgd", "write_audit", "AUDIT_FILE"]

AUDIT_FILE = "audit.json"


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[W >= v] for an (epsilon, delta)-DP algorithm: m canaries, r guesses, v correct."""
    from scipy.stats import binom

    if not (0 <= v <= r <= m):
        raise InvalidPrivacyParameterError(f"need 0 <= v <= r <= m; got m={m}, r={r}, v={v}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise InvalidPrivacyParameterError(f"need epsilon >= 0 and delta in [0, 1]; got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += float(binom.pmf(v - i, r, q))  # P[v > Binomial(r, q) >= v - i]
        alpha = max(alpha, total / i)
    return min(beta + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float, confidence: float = 0.95) -> float:
    """Largest epsilon whose (epsilon, delta) claim the observation (m, r, v) rejects at ``confidence``."""
    if not 0 < confidence < 1:
        raise InvalidPrivacyParameterError(f"confidence must be in (0, 1); got {confidence}")
    significance = 1 - confidence
    if p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < significance:
        low, high = high, high * 2
        if high > 1e3:  # pragma: no cover - cannot happen for finite r
            return low
    for _ in range(60):
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) < significance:
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True)
class AuditResult:
    """One audit: the empirical lower bound beside the accounted upper bound."""

    epsilon_lower_bound: float
    confidence: float
    epsilon_accounted: float | None
    accountant: str | None
    delta: float
    canaries: int
    included: int
    guesses: int
    correct: int
    noise_multiplier: float
    effective_noise_multiplier: float
    sample_rate: float
    steps: int
    clipping_norm: float
    method: str = ("one-run audit, Steinke, Nasr and Jagielski (NeurIPS 2023), white-box Dirac canaries on a "
                   "linear autoencoder trained with dp.training.train_dp_sgd")

    @property
    def consistent(self) -> bool:
        """False when the lower bound exceeds the accounted upper bound: a privacy bug."""
        return self.epsilon_accounted is None or self.epsilon_lower_bound <= self.epsilon_accounted

    def to_dict(self) -> dict:
        return asdict(self) | {"consistent": self.consistent}


def audit_dp_sgd(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float = 1e-5,
    clipping_norm: float = 1.0,
    canaries: int = 200,
    guesses_per_side: int | None = None,
    confidence: float = 0.95,
    learning_rate: float = 0.1,
    effective_noise_multiplier: float | None = None,
) -> AuditResult:
    """Audit DP-SGD with (sigma, q, steps, C) in one run; returns lower and accounted epsilon.

    ``guesses_per_side`` (k+ = k-) defaults to canaries // 4. ``effective_noise_multiplier``
    (tests only) trains with another sigma than the accounted one.
    """
    import torch

    from .accounting import epsilon_for
    from .training import DpSgdConfig, train_dp_sgd

    m = int(canaries)
    if m < 2:
        raise InvalidPrivacyParameterError(f"need at least 2 canaries; got {canaries}")
    k = int(guesses_per_side) if guesses_per_side is not None else max(1, m // 4)
    if not 1 <= k <= m // 2:
        raise InvalidPrivacyParameterError(f"guesses per side must be in [1, {m // 2}]; got {k}")
    if not 0 < confidence < 1:
        raise InvalidPrivacyParameterError(f"confidence must be in (0, 1); got {confidence}")
    sigma_run = noise_multiplier if effective_noise_multiplier is None else effective_noise_multiplier
    config = DpSgdConfig(noise_multiplier=sigma_run, max_grad_norm=clipping_norm, sample_rate=sample_rate,
                         steps=int(steps), learning_rate=learning_rate, optimizer="sgd", delta=delta,
                         # One canary is one record (a patient with one slice): the record-level path is
                         # the same mechanism; the public normaliser is q * m (m is public).
                         privacy_unit="slice", public_size=m)
    report = epsilon_for(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=int(steps), delta=delta)

    included = [secrets.randbits(1) == 1 for _ in range(m)]  # S_i, each with probability 1/2, CSPRNG
    if not any(included):  # pragma: no cover - probability 2^-m
        included[secrets.randbelow(m)] = True
    d = m
    # Canary j = a e_j with a^2 = d * C: its per-example gradient at W = 0 has norm 2C, so it is clipped to C.
    scale = math.sqrt(d * clipping_norm)
    rows = [j for j in range(m) if included[j]]
    data = torch.zeros(len(rows), d)
    for row, j in enumerate(rows):
        data[row, j] = scale
    model = torch.nn.Linear(d, d, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    train_dp_sgd(model, data, config, site="audit", round_index=0)
    scores = torch.diagonal(model.weight.detach()).tolist()  # W_T[j, j] - W_0[j, j], W_0 = 0

    order = sorted(range(m), key=lambda j: scores[j])
    guess_out, guess_in = order[:k], order[m - k:]
    correct = sum(included[j] for j in guess_in) + sum(not included[j] for j in guess_out)
    lower = epsilon_lower_bound(m, 2 * k, correct, delta=delta, confidence=confidence)
    return AuditResult(
        epsilon_lower_bound=lower, confidence=confidence, epsilon_accounted=report.bound,
        accountant=report.bound_accountant, delta=delta, canaries=m, included=len(rows), guesses=2 * k,
        correct=correct, noise_multiplier=noise_multiplier, effective_noise_multiplier=sigma_run,
        sample_rate=sample_rate, steps=int(steps), clipping_norm=clipping_norm,
    )


def write_audit(run_dir, result: AuditResult) -> Path:
    """Write ``audit.json`` into ``run_dir`` (atomically), where ``secagg dpia`` shows it."""
    import os

    path = Path(run_dir) / AUDIT_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # owner-only whatever the umask, like the rest of the run directory
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
