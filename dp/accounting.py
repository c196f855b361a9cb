"""Epsilon from privacy events, with several accountants side by side.

Each accountant turns a sequence of :class:`~dp.events.PrivacyEvent` (the
composition of Poisson-subsampled Gaussian mechanisms) into an epsilon at a
given delta. All registered accountants return **valid upper bounds**:

=========  =======================================================  =====================
name       method                                                   library
=========  =======================================================  =====================
``rdp``    Renyi DP of the subsampled Gaussian (Mironov et al.      Opacus ``RDPAccountant``
           2019), converted with the improved RDP -> (eps, delta)
           conversion; add/remove adjacency only
``prv``    numerical composition of privacy-loss random variables   Opacus ``PRVAccountant``
           (Gopi, Lee, Wutschitz 2021); we report the *upper* end
           of its error interval; add/remove adjacency only
``pld``    privacy-loss distributions with pessimistic              dp-accounting ``PLDAccountant``
           discretisation (Meiser & Mohammadi 2018; Doroshenko et
           al. 2022); add/remove or replace-one adjacency
``rdp-dpa``  RDP as implemented by dp-accounting (cross-check of      dp-accounting ``RdpAccountant``
           Opacus' RDP)
=========  =======================================================  =====================

:func:`compute_epsilon` runs every requested accountant, reports each one's
value or its failure reason (an exception, inf, NaN, a non-positive value),
and takes the **tightest valid upper bound** (the minimum over accountants
that succeeded: each is an upper bound, so their minimum is one too).

The accountants see (sigma, q, steps) only: the privacy unit of the events
(patient or slice, :mod:`dp.events`) decides what the epsilon protects, not
its value. Events of different units are never composed together.

The Gaussian-DP (GDP/CLT) accountant is an *approximation*, not a bound: it
can under-estimate epsilon. It is shown only when asked for, labelled as an
approximation, and never used as the bound.
"""

from __future__ import annotations

import importlib
import math
import numbers
import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import metadata
from typing import Callable, Iterable, Sequence

from .errors import InvalidPrivacyParameterError
from .events import PrivacyEvent, validate_delta
from .isolation import IsolatedFailure, run_isolated

__all__ = [
    "ACCOUNTANTS",
    "APPROXIMATIONS",
    "AccountantResult",
    "EpsilonReport",
    "compute_epsilon",
    "epsilon_for",
    "accountant_version",
    "merge_events",
    "run_accountant",
    "numerical_stack",
    "NUMERICAL_LIBRARIES",
]


def _library_version(dist: str) -> str:
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist} (not installed)"


def _require_add_remove(events: Sequence[PrivacyEvent], name: str) -> None:
    relations = {e.neighbouring for e in events}
    if relations - {"add_remove_one"}:
        raise InvalidPrivacyParameterError(
            f"the {name} accountant supports add/remove-one adjacency only; events use {sorted(relations)}"
        )


def _opacus_history(events: Sequence[PrivacyEvent]) -> list[tuple[float, float, int]]:
    return [(e.noise_multiplier, e.sample_rate, e.steps) for e in events]


def _eps_opacus_rdp(events: Sequence[PrivacyEvent], delta: float) -> float:
    from opacus.accountants import RDPAccountant

    _require_add_remove(events, "Opacus RDP")
    accountant = RDPAccountant()
    accountant.history = _opacus_history(events)
    # Orders up to 256 plus a fine grid at small orders (Opacus' defaults stop at 63,
    # which is loose for large noise multipliers and many steps).
    alphas = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [80, 96, 128, 192, 256]
    return float(accountant.get_epsilon(delta, alphas=alphas))


def _eps_opacus_prv(events: Sequence[PrivacyEvent], delta: float) -> float:
    from opacus.accountants import PRVAccountant

    _require_add_remove(events, "Opacus PRV")
    accountant = PRVAccountant()
    accountant.history = _opacus_history(events)
    return float(accountant.get_epsilon(delta))  # Opacus returns the upper end of the error interval


def _dpa_events(events: Sequence[PrivacyEvent]):
    import dp_accounting

    return [
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(e.sample_rate, dp_accounting.GaussianDpEvent(e.noise_multiplier)),
            e.steps,
        )
        for e in events
    ]


def _dpa_relation(events: Sequence[PrivacyEvent]):
    from dp_accounting import NeighboringRelation

    relations = {e.neighbouring for e in events}
    if len(relations) != 1:
        raise InvalidPrivacyParameterError(f"events mix neighbouring relations {sorted(relations)}")
    return (
        NeighboringRelation.ADD_OR_REMOVE_ONE
        if relations == {"add_remove_one"}
        else NeighboringRelation.REPLACE_ONE
    )


def _eps_dpa_pld(events: Sequence[PrivacyEvent], delta: float) -> float:
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant(neighboring_relation=_dpa_relation(events))
    for event in _dpa_events(events):
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def _eps_dpa_rdp(events: Sequence[PrivacyEvent], delta: float) -> float:
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant(neighboring_relation=_dpa_relation(events))
    for event in _dpa_events(events):
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def _eps_opacus_gdp(events: Sequence[PrivacyEvent], delta: float) -> float:
    from opacus.accountants import GaussianAccountant

    _require_add_remove(events, "Opacus GDP")
    accountant = GaussianAccountant()
    accountant.history = _opacus_history(events)
    return float(accountant.get_epsilon(delta))


@dataclass(frozen=True)
class _Accountant:
    name: str
    compute: Callable[[Sequence[PrivacyEvent], float], float]
    library: str
    description: str
    isolate: bool = False  # numerical methods run in a memory-capped child (see dp.isolation)
    # Modules ``compute`` imports, imported here before a child is forked: the child then inherits them
    # instead of importing them itself on every call (measured: about 0.05 CPU-s saved per child once
    # Opacus has loaded scipy; the computation itself, 0.25-1.1 s, dominates). Only when the import happens
    # changes.
    modules: tuple[str, ...] = ()


#: Accountants whose outputs are valid upper bounds, by name.
ACCOUNTANTS: dict[str, _Accountant] = {
    "rdp": _Accountant("rdp", _eps_opacus_rdp, "opacus", "Renyi DP (Opacus RDPAccountant)"),
    "prv": _Accountant("prv", _eps_opacus_prv, "opacus", "PRV upper bound (Opacus PRVAccountant)", isolate=True,
                         modules=("opacus.accountants",)),
    "pld": _Accountant(
        "pld", _eps_dpa_pld, "dp-accounting", "PLD, pessimistic (dp-accounting PLDAccountant)", isolate=True,
        modules=("dp_accounting", "dp_accounting.pld.pld_privacy_accountant"),
    ),
    "rdp-dpa": _Accountant("rdp-dpa", _eps_dpa_rdp, "dp-accounting", "Renyi DP (dp-accounting RdpAccountant)"),
}

#: Approximations: shown only on request, labelled, never used as the bound.
APPROXIMATIONS: dict[str, _Accountant] = {
    "gdp": _Accountant("gdp", _eps_opacus_gdp, "opacus", "Gaussian DP CLT approximation (NOT an upper bound)"),
}

DEFAULT_ACCOUNTANTS = ("rdp", "prv", "pld")


#: The numerical libraries every accountant computes with, beside its own (:func:`numerical_stack`).
NUMERICAL_LIBRARIES = ("numpy", "scipy", "secagg")


def numerical_stack() -> tuple[tuple[str, str], ...]:
    """(distribution, version) of :data:`NUMERICAL_LIBRARIES` as installed: with the accountants' own
    libraries (:func:`accountant_version`) and the inputs, what an epsilon report depends on (``secagg`` is
    this project's own distribution, :mod:`dp.accounting` included)."""
    return tuple((name, _library_version(name)) for name in NUMERICAL_LIBRARIES)


def accountant_version(name: str) -> str:
    """Library and version behind an accountant, for reports and the ledger."""
    entry = ACCOUNTANTS.get(name) or APPROXIMATIONS.get(name)
    if entry is None:
        raise InvalidPrivacyParameterError(f"unknown accountant {name!r}; known: {sorted(ACCOUNTANTS)}")
    return _library_version(entry.library)


@dataclass(frozen=True)
class AccountantResult:
    """One accountant's answer: an epsilon, or the reason it failed."""

    accountant: str
    epsilon: float | None
    error: str | None
    library: str
    is_upper_bound: bool = True

    @property
    def ok(self) -> bool:
        return self.epsilon is not None


@dataclass(frozen=True)
class EpsilonReport:
    """Every accountant's epsilon for one set of events, and the tightest valid bound."""

    delta: float
    results: tuple[AccountantResult, ...]
    bound: float | None
    bound_accountant: str | None
    approximations: tuple[AccountantResult, ...] = field(default=())

    def epsilon(self, accountant: str) -> float | None:
        for result in self.results + self.approximations:
            if result.accountant == accountant:
                return result.epsilon
        raise KeyError(accountant)

    def to_dict(self) -> dict:
        return {
            "delta": self.delta,
            "epsilon": {r.accountant: r.epsilon for r in self.results},
            "failures": {r.accountant: r.error for r in self.results if not r.ok},
            "bound": self.bound,
            "bound_accountant": self.bound_accountant,
            "libraries": {r.accountant: r.library for r in self.results + self.approximations},
            "approximations": {
                r.accountant: {"epsilon": r.epsilon, "error": r.error, "note": "approximation, not an upper bound"}
                for r in self.approximations
            },
        }


def _quiet(compute, events, delta) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute(events, delta)


def _run(entry: _Accountant, events: Sequence[PrivacyEvent], delta: float, *, upper: bool) -> AccountantResult:
    library = _library_version(entry.library)
    try:
        if entry.isolate:
            for module in entry.modules:
                with warnings.catch_warnings():  # as in _quiet: a library's import-time warnings are not the user's
                    warnings.simplefilter("ignore")
                    importlib.import_module(module)
            value = run_isolated(_quiet, entry.compute, events, delta)
        else:
            value = _quiet(entry.compute, events, delta)
    except IsolatedFailure as exc:
        return AccountantResult(entry.name, None, str(exc), library, upper)
    except Exception as exc:  # an accountant failing must never crash the report
        return AccountantResult(entry.name, None, f"{type(exc).__name__}: {exc}", library, upper)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are Real too
        return AccountantResult(entry.name, None, f"returned no number ({type(value).__name__})", library, upper)
    if math.isnan(value):
        return AccountantResult(entry.name, None, "returned NaN", library, upper)
    if math.isinf(value):
        return AccountantResult(entry.name, None, "returned infinity (no finite bound at this delta)", library, upper)
    if value < 0:
        return AccountantResult(entry.name, None, f"returned a negative epsilon ({value})", library, upper)
    return AccountantResult(entry.name, value, None, library, upper)


def run_accountant(name: str, events: Sequence[PrivacyEvent], delta: float, *, upper: bool = True) -> AccountantResult:
    """One accountant's epsilon for ``events`` at ``delta``, uncached (what :func:`compute_epsilon`
    runs per accountant); a failure is an :class:`AccountantResult` with ``error`` set, never an exception."""
    return _run(ACCOUNTANTS[name], events, delta, upper=upper)


def merge_events(events: Sequence[PrivacyEvent]) -> tuple[PrivacyEvent, ...]:
    """Group events with the same mechanism parameters, summing their steps.

    Exact, not an approximation: composition is commutative, and T1 steps of a
    mechanism followed by T2 steps of the same mechanism are T1 + T2 steps of
    it. Accountants then compose a few long runs (PLD/PRV by repeated
    squaring/FFT) instead of one short run per round, which is both faster and
    numerically tighter.
    """
    groups: dict[tuple, int] = {}
    template: dict[tuple, PrivacyEvent] = {}
    for event in events:
        key = (event.noise_multiplier, event.sample_rate, event.neighbouring, event.mechanism, event.unit)
        groups[key] = groups.get(key, 0) + event.steps
        template.setdefault(key, event)
    return tuple(
        PrivacyEvent(
            site=template[key].site, round=template[key].round, noise_multiplier=key[0], sample_rate=key[1],
            steps=steps, delta=template[key].delta, clipping_norm=template[key].clipping_norm,
            neighbouring=key[2], mechanism=key[3], unit=key[4],
        )
        for key, steps in sorted(groups.items(), key=lambda item: item[0][:2])
    )


@lru_cache(maxsize=1024)
def _cached_run(name: str, events: tuple, delta: float, upper: bool) -> AccountantResult:
    """Accountants are deterministic functions of (events, delta): budget checks, commits and
    verification of the same history reuse one computation."""
    entry = ACCOUNTANTS[name] if upper else APPROXIMATIONS[name]
    return _run(entry, events, delta, upper=upper)


def compute_epsilon(
    events: Iterable[PrivacyEvent],
    delta: float,
    *,
    accountants: Sequence[str] = DEFAULT_ACCOUNTANTS,
    approximations: Sequence[str] = (),
) -> EpsilonReport:
    """Epsilon of the composition of ``events`` at ``delta`` under each accountant.

    ``bound`` is the minimum over accountants that returned a valid value; it
    is ``None`` only when every accountant failed.
    """
    delta = validate_delta(delta)
    events = list(events)
    if not events:
        raise InvalidPrivacyParameterError("no privacy events to account for")
    unknown = [a for a in accountants if a not in ACCOUNTANTS]
    unknown += [a for a in approximations if a not in APPROXIMATIONS]
    if unknown:
        raise InvalidPrivacyParameterError(
            f"unknown accountant(s) {unknown}; valid bounds: {sorted(ACCOUNTANTS)}, approximations: {sorted(APPROXIMATIONS)}"
        )
    if not accountants:
        raise InvalidPrivacyParameterError("at least one accountant is needed")
    units = {e.unit for e in events}
    if len(units) > 1:
        # Composing a slice-level and a patient-level spend gives no bound in either unit.
        raise InvalidPrivacyParameterError(f"events mix privacy units {sorted(units)}; account them separately")
    # The accountants read only the mechanism parameters: one cache entry per history, whichever site or
    # round it belongs to (every site of a run spends the same events).
    merged = tuple(replace(e, site="merged", round=0) for e in merge_events(events))
    results = tuple(_cached_run(a, merged, delta, True) for a in accountants)
    approx = tuple(_cached_run(a, merged, delta, False) for a in approximations)
    valid = [r for r in results if r.ok]
    best = min(valid, key=lambda r: r.epsilon) if valid else None
    return EpsilonReport(
        delta=delta,
        results=results,
        bound=best.epsilon if best else None,
        bound_accountant=best.accountant if best else None,
        approximations=approx,
    )


def epsilon_for(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountants: Sequence[str] = DEFAULT_ACCOUNTANTS,
    approximations: Sequence[str] = (),
    neighbouring: str = "add_remove_one",
) -> EpsilonReport:
    """Convenience: epsilon of ``steps`` DP-SGD steps with one (sigma, q)."""
    event = PrivacyEvent(
        site="query", round=0, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
        steps=steps, delta=delta, neighbouring=neighbouring,
    )
    return compute_epsilon([event], delta, accountants=accountants, approximations=approximations)
