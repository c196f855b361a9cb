"""The risk rules: severity and likelihood of each risk, on the CNIL four-level scale, from the run's parameters.

The levels are a documented, rule-based *starting point* for the controller and the DPO to
review (the document says so). One row a risk, in two tables: :data:`CNIL_FAMILIES` (the three
risk families of the CNIL PIA method) and :data:`MODEL_RISKS` (risks specific to training a
model). A row fixes the severity; its likelihood is a level index computed from the run's
:class:`RiskInputs` and clamped to the scale. The rules:

* the epsilon level ``e`` (:func:`epsilon_level`): <= 1 negligible, <= 4 limited, <= 10
  significant, otherwise (or unknown, or a slice-level epsilon, which does not bound what is
  learnt about a patient with many slices) maximum;
* PLAIN mode raises the likelihood of illegitimate access by one level and of reconstruction by
  two (the coordinator sees each individual update); HE mode raises coordinator collusion to
  significant (one colluding site suffices); active mode lowers unwanted modification by one level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .document import LEVELS, level, num
from .facts import RunFacts, guarantee

__all__ = ["RiskInputs", "Risk", "CNIL_FAMILIES", "MODEL_RISKS", "epsilon_level", "risk_inputs", "assess",
           "high_residual_risks", "worst_score"]


def epsilon_level(max_epsilon: float | None, unit: str) -> int:
    """The level index (0 negligible ... 3 maximum) that the largest epsilon spent gives."""
    if unit != "patient" or max_epsilon is None:
        return 3
    return 0 if max_epsilon <= 1 else 1 if max_epsilon <= 4 else 2 if max_epsilon <= 10 else 3


@dataclass(frozen=True)
class RiskInputs:
    """What the rules read of a run."""

    mode: str
    active: bool
    e: int  # epsilon_level
    unit: str
    epsilon_text: str  # the largest epsilon and its guarantee, in words
    aborted: list  # indices of the rounds that aborted
    threshold: object
    corrupt_fraction: object
    dropout: object
    update_clip: object

    @property
    def plain(self) -> bool:
        return self.mode == "plain"


def risk_inputs(facts: RunFacts) -> RiskInputs:
    proto, max_eps = facts.protocol, facts.max_epsilon
    return RiskInputs(
        mode=proto["mode"], active=proto["active"], e=epsilon_level(max_eps, facts.unit), unit=facts.unit,
        epsilon_text=("unknown" if max_eps is None else f"{max_eps:.4f}") + f" ({guarantee(facts.unit)})",
        aborted=facts.summary.get("rounds_aborted") or [], threshold=proto["threshold"],
        corrupt_fraction=proto["corrupt_fraction"], dropout=proto["dropout"], update_clip=proto["update_clip"],
    )


Text = Callable[[RiskInputs], str]


@dataclass(frozen=True)
class Risk:
    """One row: the risk, its fixed severity, and the rules for its likelihood, rationale and measures."""

    name: str
    severity: str
    likelihood: Callable[[RiskInputs], int]  # a level index; clamped to the scale by level()
    rationale: Text
    measures: Text

    def assess(self, r: RiskInputs) -> tuple[str, str, str, str, str]:
        return self.name, self.severity, level(self.likelihood(r)), self.rationale(r), self.measures(r)


CNIL_FAMILIES = (
    Risk("Illegitimate access to data", "maximum",
         likelihood=lambda r: r.e + (1 if r.plain else 0),
         rationale=lambda r: (
             f"health data; raw scans never leave the sites, so access is by inference from released updates, "
             f"bounded by {r.unit}-level DP (max epsilon {r.epsilon_text})"
             + ("; PLAIN mode shows each update to the coordinator" if r.plain else
                "; the coordinator sees only sums" + (" (and ciphertexts)" if r.mode == "he" else ""))),
         measures=lambda r: "DP-SGD (clipping + Gaussian noise), secure aggregation, site IT security"),
    Risk("Unwanted modification of data", "significant",
         likelihood=lambda r: 1 if r.active else 2,
         rationale=lambda r: ("a corrupted or poisoned model could produce wrong anomaly maps if used clinically; "
                              "the scans themselves are read-only for training"),
         measures=lambda r: (
             f"update clipping (L2 {num(r.update_clip)}), "
             f"{'active-mode signatures and consistency check' if r.active else 'no signatures (semi-honest mode)'}; "
             "model validation before use")),
    Risk("Disappearance of data", "limited",
         likelihood=lambda r: 1 if r.aborted else 0,
         rationale=lambda r: ("training reads copies of the scans; originals stay in the hospitals' systems; dropouts "
                              f"can abort rounds (aborted rounds in this run: {len(r.aborted)})"),
         measures=lambda r: "scans untouched at the sites; crash-safe run directory with checkpoints; threshold t"),
)

MODEL_RISKS = (
    Risk("Membership inference", "significant",
         likelihood=lambda r: r.e,
         rationale=lambda r: (
             f"patient-level (epsilon, delta)-DP bounds the advantage of any test of whether a patient's scans "
             f"were used; max epsilon {r.epsilon_text}" if r.unit == "patient" else
             f"SLICE-level (epsilon, delta)-DP bounds membership of one slice only, not of a patient (group "
             f"privacy over a patient's slices); max epsilon {r.epsilon_text}"),
         measures=lambda r: "DP-SGD accounted in the hash-chained ledger; per-site budgets enforced before each round"),
    Risk("Reconstruction of scans from updates or the model", "maximum",
         likelihood=lambda r: r.e - 1 + (2 if r.plain else 0),
         rationale=lambda r: "gradient inversion needs individual updates; " + (
             "PLAIN mode exposes them" if r.plain else "the coordinator sees only the sum of at least t sites"),
         measures=lambda r: "clipping, noise, secure aggregation / encryption"),
    Risk("Coordinator collusion with sites", "maximum",
         likelihood=lambda r: 3 if r.plain else 2 if r.mode == "he" else 1,
         rationale=lambda r: (
             "PLAIN: nothing to collude against" if r.plain else
             "HE: ANY ONE site colluding with the coordinator decrypts every update" if r.mode == "he" else
             f"masking: no shared decryption key; a coordinator colluding with sites learns only the sum of the "
             f"honest sites' updates while the colluders stay within what threshold t = {r.threshold} "
             f"tolerates (parameter-finder corrupt fraction {num(r.corrupt_fraction)})"),
         measures=lambda r: "threshold t = " + str(r.threshold) + "; DP noise still bounds what a sum reveals"),
    Risk("Dropouts (availability, smaller sums)", "limited",
         likelihood=lambda r: 1 if (r.dropout or r.aborted) else 0,
         rationale=lambda r: (f"a round with fewer than t survivors aborts with no output; dropout probability per "
                              f"stage {num(r.dropout)}; aborted rounds {r.aborted}"),
         measures=lambda r: "threshold t, Shamir recovery of dropped sites' masks, abort without output"),
    Risk("Poisoning by a malicious site", "significant",
         likelihood=lambda r: 2,
         rationale=lambda r: ("secure aggregation hides individual updates, so a malicious update cannot be "
                              "inspected; the protocol checks only the range of the sum"),
         measures=lambda r: (f"per-site update clipping (L2 {num(r.update_clip)}) bounds each site's influence; "
                             "contractual vetting of sites; model validation")),
)


def assess(facts: RunFacts) -> tuple[list, list]:
    """(CNIL families, model risks) as rows ``(risk, severity, likelihood, rationale, measures)``."""
    inputs = risk_inputs(facts)
    return [risk.assess(inputs) for risk in CNIL_FAMILIES], [risk.assess(inputs) for risk in MODEL_RISKS]


def high_residual_risks(families: list, model_risks: list) -> list[str]:
    """The risks whose severity and likelihood are both at least significant (section 7, Art. 36)."""
    return [r[0] for r in families + model_risks if LEVELS.index(r[1]) >= 2 and LEVELS.index(r[2]) >= 2]


def worst_score(families: list, model_risks: list) -> int:
    """The largest severity + likelihood (level indices, 0 to 6) of any risk."""
    return max((LEVELS.index(r[1]) + LEVELS.index(r[2]) for r in families + model_risks), default=0)
