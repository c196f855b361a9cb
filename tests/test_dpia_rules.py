"""The DPIA's risk rules (simulation/reports/dpia/risks.py) as its docstring states them, on inputs built by hand:
the epsilon levels, and how PLAIN, HE and active mode move each likelihood."""

from __future__ import annotations

import dataclasses

import pytest

from simulation.reports.dpia.document import LEVELS
from simulation.reports.dpia.risks import (CNIL_FAMILIES, MODEL_RISKS, RiskInputs, epsilon_level, high_residual_risks,
                                   worst_score)


@pytest.mark.parametrize("epsilon, unit, expected", [
    (0.5, "patient", 0), (1.0, "patient", 0), (1.01, "patient", 1), (4.0, "patient", 1), (4.5, "patient", 2),
    (10.0, "patient", 2), (10.5, "patient", 3), (None, "patient", 3), (0.5, "slice", 3),
])
def test_epsilon_levels(epsilon, unit, expected):
    assert epsilon_level(epsilon, unit) == expected


BASE = RiskInputs(mode="secagg", active=False, e=1, unit="patient", epsilon_text="2.0000 (patient)", aborted=[],
                  threshold=3, corrupt_fraction=0.1, dropout=0.0, update_clip=1.0)


def likelihoods(inputs: RiskInputs) -> dict[str, str]:
    return {risk.name: risk.assess(inputs)[2] for risk in CNIL_FAMILIES + MODEL_RISKS}


def test_plain_raises_access_by_one_and_reconstruction_by_two():
    masked, plain = likelihoods(BASE), likelihoods(dataclasses.replace(BASE, mode="plain"))
    step = {name: LEVELS.index(plain[name]) - LEVELS.index(masked[name]) for name in masked}
    assert step["Illegitimate access to data"] == 1
    assert step["Reconstruction of scans from updates or the model"] == 2
    assert plain["Coordinator collusion with sites"] == "maximum"


def test_he_makes_collusion_significant_and_active_mode_lowers_modification():
    assert likelihoods(dataclasses.replace(BASE, mode="he"))["Coordinator collusion with sites"] == "significant"
    assert likelihoods(BASE)["Coordinator collusion with sites"] == "limited"
    assert likelihoods(BASE)["Unwanted modification of data"] == "significant"
    assert likelihoods(dataclasses.replace(BASE, active=True))["Unwanted modification of data"] == "limited"


def test_aborted_rounds_and_dropouts_raise_availability_risks():
    quiet = likelihoods(BASE)
    assert quiet["Disappearance of data"] == quiet["Dropouts (availability, smaller sums)"] == "negligible"
    aborted = likelihoods(dataclasses.replace(BASE, aborted=[2]))
    assert aborted["Disappearance of data"] == aborted["Dropouts (availability, smaller sums)"] == "limited"
    assert likelihoods(dataclasses.replace(BASE, dropout=0.1))["Dropouts (availability, smaller sums)"] == "limited"


def test_levels_are_clamped_to_the_scale():
    low = likelihoods(dataclasses.replace(BASE, e=0))  # reconstruction: e - 1 = -1
    assert low["Reconstruction of scans from updates or the model"] == "negligible"
    high = likelihoods(dataclasses.replace(BASE, e=3, mode="plain"))  # access: 3 + 1
    assert high["Illegitimate access to data"] == "maximum"


def test_residual_risk_and_worst_score_follow_the_rows():
    families = [risk.assess(BASE) for risk in CNIL_FAMILIES]
    model = [risk.assess(BASE) for risk in MODEL_RISKS]
    assert high_residual_risks(families, model) == ["Unwanted modification of data", "Poisoning by a malicious site"]
    assert worst_score(families, model) == max(LEVELS.index(r[1]) + LEVELS.index(r[2]) for r in families + model)
    assert high_residual_risks([], []) == [] and worst_score([], []) == 0
