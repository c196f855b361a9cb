"""A --threshold override in active SecAgg+ mode gets its own security bound, or is refused.

Found by the independent review of issue 14's fix: ``protocol_parameters`` used to take ``threshold = config.threshold or
params.threshold`` and only checks (k+1)/2 < t. At n = 200, 5% corrupt, the finder picks
k = 28, t = 20 (security failure ~7e-15); with ``threshold = k/2 + 1 = 15`` the run uses
c_min = min(2t - (k+1), t - 1) = 1 (one corrupt neighbour suffices: bound 1.0), yet the run
summary's ``secagg_plus_parameters`` (which the DPIA prints as "Security failure bound") still
says ~7e-15. A secure implementation refuses the override or reports the bound of the t it
uses.
"""

from __future__ import annotations

import pytest

import secagg
from simulation.config import SimulationConfig
from simulation.federation.setup import SimulationError, protocol_parameters


def test_an_overridden_threshold_is_not_reported_with_the_finders_security_bound():
    n = 200
    base = protocol_parameters(SimulationConfig(mode="secagg+", active=True, corrupt_fraction=0.05, dropout=0.01), n)
    k = base["degree"]
    overridden = SimulationConfig(mode="secagg+", active=True, corrupt_fraction=0.05, dropout=0.01,
                                  threshold=k // 2 + 1)
    with pytest.raises(SimulationError, match="security failure bound"):
        protocol_parameters(overridden, n)
    # a stronger override is accepted and reported with its own (smaller) bound
    stronger = SimulationConfig(mode="secagg+", active=True, corrupt_fraction=0.05, dropout=0.01,
                                threshold=base["threshold"] + 1)
    used = protocol_parameters(stronger, n)
    true_security, _ = secagg.failure_bounds(n, k, used["threshold"], corrupt_fraction=0.05,
                                             dropout_fraction=1 - 0.99 ** 5, malicious=True)
    reported = used["finder"]["security_failure"]
    assert reported == true_security <= base["finder"]["security_failure"], (
        f"session runs t = {used['threshold']} (security failure bound {true_security}) but reports the finder's "
        f"t = {used['finder']['threshold']} bound {reported:.3g}")
