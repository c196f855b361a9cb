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

What the bound can show: the ceiling. Even if every guess is right (v = r)
the lower bound cannot exceed :func:`audit_ceiling` ``(m, r) =
epsilon_lower_bound(m, r, r)``: an audit whose ceiling is below the accounted
epsilon cannot detect a violation above its ceiling, whatever the mechanism
does. For delta > 0 the term 2 m delta alpha grows with m, so the ceiling does
not grow without limit: with the default rule (k+ = k- = m // 4, so r = m / 2)
at delta = 1e-5 and 95% confidence the largest ceiling of ANY m is about 7.55
(with about 27,000-30,000 canaries; tests/test_audit.py pins it); guessing on every canary (r = m), a
perfect score the auditor cannot reach in practice (the number included is random),
would only raise it to about 8.24. Each tenfold smaller delta raises it by about ln 10 = 2.30
(e^eps * delta is what the delta term sees): at delta = 1e-7 the ceiling
passes 10. So a run accounted at epsilon 10 with delta 1e-5 cannot be audited
up to its epsilon at that delta; auditing its (epsilon(delta'), delta') claim
at a smaller delta' (``--delta``; the accountants bound epsilon at every delta,
and a broken implementation, e.g. one without noise, breaks those claims as well) is the way up.
:func:`choose_canaries` picks the smallest m (with the default rule) whose
ceiling reaches a target, or says that no m up to the cap does and which m
gives the largest ceiling.

Canaries. Both modes use white-box "Dirac" canaries: a canary whose gradient
has a single non-zero coordinate, the white-box DP-SGD setting of the paper
and of Nasr et al., "Tight Auditing of Differentially Private Machine
Learning" (USENIX Security 2023), which audit DP-SGD with such gradient
canaries. (This description is from memory: the search in this session found
only the papers' abstracts and third-party summaries, not their text.)

* ``canary_kind="gradient"`` (default): canary j is a privacy unit whose
  clipped gradient is ``s_j * C * e_{c_j}`` for a distinct parameter coordinate
  c_j and a sign s_j (both from :mod:`secrets`); the included canaries are
  Poisson-sampled each step with the run's q and added to the clipped sum
  before the noise by :func:`dp.training.train_dp_sgd` itself
  (:class:`dp.training.AuditCanaries`, a hook used only here). Score of canary
  j: the projection on its direction of the sum over the steps of the RELEASED
  (clipped, canaries added, noised) gradient, ``s_j * sum_t g~_t[c_j]`` - the
  white-box view of an auditor who sees every step's privatised gradient, which
  is exactly what the accountant composes, so any function of it is a valid
  score. With SGD this is the total parameter change projected on the canary
  direction, times -normaliser / lr; with Adam (the runs' optimiser) the
  parameter change is not linear in the gradients and, measured on it, the
  scores lose most of their power (Adam moves every coordinate by about lr
  whatever the gradient's size), hence the released gradients. It needs as
  many trainable parameters as canaries, not m^2. Differences from the papers:
  the canary's own clipping is not exercised (it is injected at norm exactly C;
  the real records are clipped as in the run).
* ``canary_kind="record"`` (the original design, synthetic mode only, m <=
  2000): a bias-free linear autoencoder ``x -> W x``, canary j the data record
  a e_j, whose per-example gradient (norm 2C at W = 0) goes through the real
  clipping; score W_T[j, j] - W_0[j, j]. W is m x m, hence the cap.

Modes. :func:`audit_dp_sgd` ("synthetic") audits the DP-SGD mechanism (sigma,
q, steps, C) on a small synthetic model. :func:`audit_training`
("own-training") audits the run's own DP-SGD on the run's model architecture,
its hyper-parameters (sigma, q, steps, C, privacy unit, public normaliser,
optimiser, learning rate) and one site's real training data mixed with the
canaries. Neither attacks the secure-aggregation sum or the FedAvg between
rounds (post-processing of each site's DP-SGD output); the own-training audit
trains one site for all of its steps in one go from the run's initial weights
(the run restarts the optimiser and reloads the global weights each round).

The k+/k- split is fixed before training (no search over k, so the confidence
is not diluted by multiple testing).

Fault injection for tests: ``effective_noise_multiplier`` trains with a
different sigma than the one accounted - e.g. 1e-9, "noise switched off while
the accountant thinks it is on" - which the audit must catch.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .errors import InvalidPrivacyParameterError

__all__ = ["AuditResult", "CanaryPlan", "p_value", "epsilon_lower_bound", "audit_ceiling",
           "default_guesses_per_side", "choose_canaries", "audit_dp_sgd", "audit_training", "write_audit",
           "AUDIT_FILE", "DEFAULT_MAX_CANARIES", "RECORD_MAX_CANARIES"]

AUDIT_FILE = "audit.json"
#: Cap of ``canaries="auto"``: the number of canaries, and (gradient canaries) of model coordinates, it may use.
DEFAULT_MAX_CANARIES = 1_000_000
#: Record canaries train an m x m linear model: beyond this it no longer fits a test machine.
RECORD_MAX_CANARIES = 2_000
_TAIL_SDS = 15.0  # the window of Binomial(r, q) below v over which alpha is summed exactly (see p_value)


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[W >= v] for an (epsilon, delta)-DP algorithm: m canaries, r guesses, v correct.

    alpha = max_i P[v > B >= v - i] / i (B ~ Binomial(r, q)) is computed exactly over the
    window v - i >= r q - 15 sd - 50 and bounded above beyond it: for larger i the partial sum
    grows by at most P[B < window start], so (sum + that tail) / (window + 1) bounds every
    later ratio. Vectorised, so m of a million takes milliseconds; never below the exact value.
    """
    import numpy as np
    from scipy.stats import binom

    if not (0 <= v <= r <= m):
        raise InvalidPrivacyParameterError(f"need 0 <= v <= r <= m; got m={m}, r={r}, v={v}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise InvalidPrivacyParameterError(f"need epsilon >= 0 and delta in [0, 1]; got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    start = min(max(0, int(r * q - _TAIL_SDS * math.sqrt(r * q * (1 - q)) - 50)), v - 1)
    pmf = binom.pmf(np.arange(v - 1, start - 1, -1), r, q)  # P[B = v - i], i = 1 .. v - start
    partial = np.cumsum(pmf)
    alpha = float(np.max(partial / np.arange(1, pmf.size + 1)))
    if start > 0:
        alpha = max(alpha, (float(partial[-1]) + float(binom.cdf(start - 1, r, q))) / (pmf.size + 1))
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


def audit_ceiling(m: int, guesses: int, *, delta: float, confidence: float = 0.95) -> float:
    """The largest lower bound a setting can ever certify: every one of the r guesses right.

    ``epsilon_lower_bound(m, r, r)``: the p-value falls as v grows, so no outcome of an audit
    with m canaries and r = ``guesses`` guesses at (delta, confidence) reports more.
    """
    return epsilon_lower_bound(int(m), int(guesses), int(guesses), delta=delta, confidence=confidence)


def default_guesses_per_side(m: int) -> int:
    """The rule k+ = k- = max(1, m // 4): guess on half the canaries, abstain on the middle half."""
    return max(1, int(m) // 4)


@dataclass(frozen=True)
class CanaryPlan:
    """What :func:`choose_canaries` found: the m to use and what the setting can show."""

    canaries: int
    guesses_per_side: int
    ceiling: float
    target: float
    reaches_target: bool
    max_canaries: int
    # Only when the target is not reached: the m with the largest ceiling found (grid up to the cap,
    # stopped once well past the peak) and that ceiling, the most any audit at (delta, confidence) shows.
    best_canaries: int | None = None
    best_ceiling: float | None = None


def _rule_ceiling(m: int, delta: float, confidence: float) -> float:
    return audit_ceiling(m, 2 * default_guesses_per_side(m), delta=delta, confidence=confidence)


def choose_canaries(target_epsilon: float, *, delta: float, confidence: float = 0.95,
                    max_canaries: int = DEFAULT_MAX_CANARIES) -> CanaryPlan:
    """The smallest m (rule :func:`default_guesses_per_side`) whose ceiling reaches ``target_epsilon``.

    The ceiling of the rule first rises with m (more guesses), then falls (the delta term
    2 m delta alpha). m runs over a geometric grid (x1.2) from 4 to ``max_canaries``; the first
    grid point that reaches the target is refined by bisection against the previous one. When
    none does (the target is above the ceiling of every m up to the cap), ``reaches_target`` is
    False and ``canaries`` is the grid point with the largest ceiling: the strongest audit the
    setting allows, whose ceiling the caller must report as what the audit cannot see past.
    """
    if not (isinstance(target_epsilon, (int, float)) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise InvalidPrivacyParameterError(f"target epsilon must be a positive number; got {target_epsilon!r}")
    cap = int(max_canaries)
    if cap < 4:
        raise InvalidPrivacyParameterError(f"the cap on canaries must be at least 4; got {max_canaries}")
    best = (-1.0, 4)
    previous, m = None, 4
    while True:
        ceiling = _rule_ceiling(m, delta, confidence)
        if ceiling > best[0]:
            best = (ceiling, m)
        if ceiling >= target_epsilon:
            low, high = (previous if previous is not None else 3), m  # ceiling(low) < target <= ceiling(high)
            while high - low > 1:
                mid = (low + high) // 2
                if _rule_ceiling(mid, delta, confidence) >= target_epsilon:
                    high = mid
                else:
                    low = mid
            chosen = _rule_ceiling(high, delta, confidence)
            return CanaryPlan(high, default_guesses_per_side(high), chosen, float(target_epsilon), True, cap)
        if m >= cap or ceiling < best[0] - 0.5:  # the cap, or well past the peak of a rise-then-fall curve
            break
        previous, m = m, min(cap, max(m + 1, int(m * 1.2)))
    return CanaryPlan(best[1], default_guesses_per_side(best[1]), best[0], float(target_epsilon), False, cap,
                      best[1], best[0])


@dataclass(frozen=True)
class AuditResult:
    """One audit: the empirical lower bound beside the accounted upper bound, and the ceiling."""

    epsilon_lower_bound: float
    ceiling: float  # the largest lower bound this (m, r, delta, confidence) could ever report
    confidence: float
    epsilon_accounted: float | None
    accountant: str | None
    delta: float
    canaries: int
    canaries_chosen: str  # "auto" (choose_canaries) or "given"
    included: int
    guesses: int
    correct: int
    noise_multiplier: float
    effective_noise_multiplier: float
    sample_rate: float
    steps: int
    clipping_norm: float
    mode: str  # "synthetic" (audit_dp_sgd) or "own-training" (audit_training)
    canary_kind: str  # "gradient" or "record"
    privacy_unit: str
    model: str
    # auto, target not reached: the largest ceiling of any m up to the cap, and that m (CanaryPlan.best_*)
    max_ceiling: float | None = None
    max_ceiling_canaries: int | None = None
    site: str | None = None
    method: str = "one-run audit, Steinke, Nasr and Jagielski (NeurIPS 2023), white-box Dirac canaries"
    scope: str = ""

    @property
    def consistent(self) -> bool:
        """False when the lower bound exceeds the accounted upper bound: a privacy bug."""
        return self.epsilon_accounted is None or self.epsilon_lower_bound <= self.epsilon_accounted

    @property
    def ceiling_reaches_accounted(self) -> bool:
        """False when even a perfect score could not certify the accounted epsilon: violations above
        the ceiling are invisible to this audit."""
        return self.epsilon_accounted is None or self.ceiling >= self.epsilon_accounted

    def to_dict(self) -> dict:
        return asdict(self) | {"consistent": self.consistent,
                               "ceiling_reaches_accounted": self.ceiling_reaches_accounted}


_SCOPE_SYNTHETIC = ("the DP-SGD mechanism (sigma, q, steps, C) of dp.training.train_dp_sgd on a synthetic linear "
                    "model; not the run's model or data, not the secure-aggregation sum")
_SCOPE_OWN = ("the run's own DP-SGD (dp.training.train_dp_sgd) on the run's model architecture, hyper-parameters "
              "and one site's real training data mixed with canaries, all of that site's steps in one go from the "
              "run's initial weights; not the secure-aggregation sum or the FedAvg between rounds "
              "(post-processing of each site's DP-SGD output)")


def _plan(canaries, guesses_per_side, accounted: float, delta: float, confidence: float, cap: int):
    """(m, k, chosen, plan) for ``canaries`` = "auto" or an int; validates both."""
    if canaries == "auto":
        plan = choose_canaries(accounted, delta=delta, confidence=confidence, max_canaries=cap)
        m = plan.canaries
        k = int(guesses_per_side) if guesses_per_side is not None else plan.guesses_per_side
        return m, k, "auto", plan
    if isinstance(canaries, bool) or not isinstance(canaries, int):
        raise InvalidPrivacyParameterError(f"canaries must be 'auto' or an int; got {canaries!r}")
    m = int(canaries)
    if m < 2:
        raise InvalidPrivacyParameterError(f"need at least 2 canaries; got {canaries}")
    if m > cap:
        raise InvalidPrivacyParameterError(f"{m} canaries exceed the cap of {cap}")
    k = int(guesses_per_side) if guesses_per_side is not None else default_guesses_per_side(m)
    return m, k, "given", None


def _check(m: int, k: int, confidence: float) -> None:
    if not 1 <= k <= m // 2:
        raise InvalidPrivacyParameterError(f"guesses per side must be in [1, {m // 2}]; got {k}")
    if not 0 < confidence < 1:
        raise InvalidPrivacyParameterError(f"confidence must be in (0, 1); got {confidence}")


def _inclusion_bits(m: int) -> list:
    """S_i, each 1 with probability 1/2, from the CSPRNG; at least one canary included."""
    import numpy as np

    bits = np.unpackbits(np.frombuffer(secrets.token_bytes((m + 7) // 8), dtype=np.uint8))[:m].astype(bool)
    if not bits.any():  # pragma: no cover - probability 2^-m
        bits[secrets.randbelow(m)] = True
    return bits.tolist()


def _score_and_bound(scores, included, m: int, k: int, delta: float, confidence: float):
    order = sorted(range(m), key=lambda j: scores[j])
    guess_out, guess_in = order[:k], order[m - k:]
    correct = sum(included[j] for j in guess_in) + sum(not included[j] for j in guess_out)
    return correct, epsilon_lower_bound(m, 2 * k, correct, delta=delta, confidence=confidence)


def _gradient_canary_run(model, data, config, m: int, *, patients, loss_fn, site: str):
    """Train with m gradient canaries (half included, by CSPRNG bits); returns (scores, included)."""
    import torch

    from .training import AuditCanaries, train_dp_sgd

    params = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in params)
    if m > total:
        raise InvalidPrivacyParameterError(
            f"{m} gradient canaries need as many trainable parameters; the model has {total}")
    rng = secrets.SystemRandom()
    coordinates = rng.sample(range(total), m)  # distinct coordinates, CSPRNG
    signs = [1 if secrets.randbits(1) else -1 for _ in range(m)]
    included = _inclusion_bits(m)
    rows = [j for j in range(m) if included[j]]
    canaries = AuditCanaries(coordinates=tuple(coordinates[j] for j in rows), signs=tuple(signs[j] for j in rows),
                             observe=tuple(coordinates))
    result = train_dp_sgd(model, data, config, site=site, round_index=0, patients=patients, loss_fn=loss_fn,
                          audit_canaries=canaries)
    # s_j * (sum over steps of the released noisy gradient at c_j): the white-box score.
    scores = [sign * value for sign, value in zip(signs, result.audit_observations)]
    return scores, included


def _record_canary_run(m: int, config):
    """The original record canaries: m x m linear autoencoder, canary j = a e_j (module docstring)."""
    import torch

    from .training import train_dp_sgd

    included = _inclusion_bits(m)
    d = m
    # Canary j = a e_j with a^2 = d * C: its per-example gradient at W = 0 has norm 2C, so it is clipped to C.
    scale = math.sqrt(d * config.max_grad_norm)
    rows = [j for j in range(m) if included[j]]
    data = torch.zeros(len(rows), d)
    for row, j in enumerate(rows):
        data[row, j] = scale
    model = torch.nn.Linear(d, d, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    train_dp_sgd(model, data, config, site="audit", round_index=0)
    return torch.diagonal(model.weight.detach()).tolist(), included  # W_T[j, j] - W_0[j, j], W_0 = 0


def audit_dp_sgd(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float = 1e-5,
    clipping_norm: float = 1.0,
    canaries: int | str = "auto",
    guesses_per_side: int | None = None,
    confidence: float = 0.95,
    learning_rate: float = 0.1,
    effective_noise_multiplier: float | None = None,
    canary_kind: str = "gradient",
    max_canaries: int = DEFAULT_MAX_CANARIES,
) -> AuditResult:
    """Synthetic mode: audit DP-SGD with (sigma, q, steps, C) in one run; lower, accounted and ceiling.

    ``canaries="auto"`` (default) takes the smallest m whose ceiling reaches the accounted
    epsilon (:func:`choose_canaries`, capped at ``max_canaries``). Gradient canaries (default)
    train a bias-free linear autoencoder ``x -> W x`` with d^2 >= m weights (d = ceil(sqrt m)),
    zero-initialised, on 8 small fixed background records (each its own unit), with SGD; record
    canaries use the m x m model of the module docstring (m <= :data:`RECORD_MAX_CANARIES`).
    ``guesses_per_side`` (k+ = k-) defaults to the rule. ``effective_noise_multiplier`` (tests
    only) trains with another sigma than the accounted one.
    """
    import torch

    from .accounting import epsilon_for
    from .training import DpSgdConfig

    if canary_kind not in ("gradient", "record"):
        raise InvalidPrivacyParameterError(f"canary kind must be 'gradient' or 'record'; got {canary_kind!r}")
    report = epsilon_for(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=int(steps), delta=delta)
    cap = min(int(max_canaries), RECORD_MAX_CANARIES) if canary_kind == "record" else int(max_canaries)
    m, k, chosen, plan = _plan(canaries, guesses_per_side, report.bound, delta, confidence, cap)
    _check(m, k, confidence)
    sigma_run = noise_multiplier if effective_noise_multiplier is None else effective_noise_multiplier
    config = DpSgdConfig(noise_multiplier=sigma_run, max_grad_norm=clipping_norm, sample_rate=sample_rate,
                         steps=int(steps), learning_rate=learning_rate, optimizer="sgd", delta=delta,
                         # One canary is one record (a patient with one slice): the record-level path is
                         # the same mechanism; the public normaliser is q * m (m is public).
                         privacy_unit="slice", public_size=m)
    if canary_kind == "record":
        scores, included = _record_canary_run(m, config)
        model_name = f"linear autoencoder {m}x{m} (record canaries)"
    else:
        d = math.isqrt(m - 1) + 1
        model = torch.nn.Linear(d, d, bias=False)
        with torch.no_grad():
            model.weight.zero_()
        # Fixed, public background records, small: each per-example gradient (norm ~ 0.007 C at W = 0)
        # perturbs the canaries' coordinates far less than one canary step of C.
        background = torch.linspace(-0.1, 0.1, 8 * d).reshape(8, d)
        config = replace(config, privacy_unit="patient")  # each background record is its own patient
        scores, included = _gradient_canary_run(model, background, config, m, patients=list(range(8)),
                                                loss_fn=None, site="audit")
        model_name = f"linear autoencoder {d}x{d} (gradient canaries)"
    correct, lower = _score_and_bound(scores, included, m, k, delta, confidence)
    return AuditResult(
        epsilon_lower_bound=lower, ceiling=audit_ceiling(m, 2 * k, delta=delta, confidence=confidence),
        confidence=confidence, epsilon_accounted=report.bound, accountant=report.bound_accountant, delta=delta,
        canaries=m, canaries_chosen=chosen, included=sum(included), guesses=2 * k, correct=correct,
        noise_multiplier=noise_multiplier, effective_noise_multiplier=sigma_run, sample_rate=sample_rate,
        steps=int(steps), clipping_norm=clipping_norm, mode="synthetic", canary_kind=canary_kind,
        privacy_unit="record", model=model_name,  # each canary or background record is one unit
        max_ceiling=plan.best_ceiling if plan else None, max_ceiling_canaries=plan.best_canaries if plan else None,
        scope=_SCOPE_SYNTHETIC,
    )


def audit_training(
    model,
    data,
    config,
    *,
    patients=None,
    canaries: int | str = "auto",
    guesses_per_side: int | None = None,
    confidence: float = 0.95,
    max_canaries: int = DEFAULT_MAX_CANARIES,
    effective_noise_multiplier: float | None = None,
    loss_fn=None,
    site: str = "audit",
    model_name: str = "",
) -> AuditResult:
    """Own-training mode: audit ``config`` (the run's :class:`~dp.training.DpSgdConfig`) on ``model``
    (the run's architecture, initial weights) and ``data``/``patients`` (a site's real records).

    Gradient canaries (module docstring) are mixed into the site's data as extra privacy units
    of the run's kind (patients, or slices); everything else is the run's own DP-SGD path.
    ``config.steps`` is the number of steps audited (all of the site's), ``config.delta`` the
    audit's delta; the accounted epsilon is that of (sigma, q, steps, delta). ``canaries="auto"``
    uses :func:`choose_canaries`, capped by ``max_canaries`` and by the model's trainable
    parameter count (one coordinate per canary). ``model`` is trained in place.
    """
    from .accounting import epsilon_for

    report = epsilon_for(noise_multiplier=config.noise_multiplier, sample_rate=config.sample_rate,
                         steps=config.steps, delta=config.delta)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cap = min(int(max_canaries), parameters)
    m, k, chosen, plan = _plan(canaries, guesses_per_side, report.bound, config.delta, confidence, cap)
    _check(m, k, confidence)
    run_config = config if effective_noise_multiplier is None else replace(
        config, noise_multiplier=effective_noise_multiplier)
    scores, included = _gradient_canary_run(model, data, run_config, m, patients=patients, loss_fn=loss_fn,
                                            site=site)
    correct, lower = _score_and_bound(scores, included, m, k, config.delta, confidence)
    return AuditResult(
        epsilon_lower_bound=lower, ceiling=audit_ceiling(m, 2 * k, delta=config.delta, confidence=confidence),
        confidence=confidence, epsilon_accounted=report.bound, accountant=report.bound_accountant,
        delta=config.delta, canaries=m, canaries_chosen=chosen, included=sum(included), guesses=2 * k,
        correct=correct, noise_multiplier=config.noise_multiplier,
        effective_noise_multiplier=run_config.noise_multiplier, sample_rate=config.sample_rate, steps=config.steps,
        clipping_norm=config.max_grad_norm, mode="own-training", canary_kind="gradient",
        privacy_unit=config.privacy_unit, model=model_name or type(model).__name__,
        max_ceiling=plan.best_ceiling if plan else None, max_ceiling_canaries=plan.best_canaries if plan else None,
        site=site, scope=_SCOPE_OWN,
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
