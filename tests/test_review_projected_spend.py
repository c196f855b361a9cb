"""Security review of the reused budget-check report (dp.ProjectedSpend, commits 9bac599..9e159f8).

Each test is an attack on ``PrivacyLedger.commit_round(..., projections=...)`` or on the Flower node
that seals the report in ``context.state``; each asserts the safe behaviour, so it fails if the attack
works: a spend recorded below the epsilon of its events, a budget passed, a stale report (another
round, run, site, delta, accountant set or library version) taken, or a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pickle

import pytest

import dp.accounting as accounting_module
from dp import BudgetExceededError, PrivacyEvent, SiteSignatureError, PrivacyLedger, ProjectedSpend, compute_epsilon, verify_ledger

DELTA = 1e-5
ACCOUNTANTS = ("rdp",)


def _event(site, round_index, sigma=1.0, q=0.02, steps=50, delta=DELTA):
    return PrivacyEvent(site, round_index, sigma, q, steps, delta)


def _create(path, budget=5.0, delta=DELTA, accountants=ACCOUNTANTS, run_id="node"):
    return PrivacyLedger.create(path, run_id=run_id, delta=delta, budgets={"a": budget, "b": budget},
                                accountants=accountants)


def _last_cumulative(directory, site):
    ledger = PrivacyLedger.open(directory)
    try:
        spends = [e for e in ledger.entries() if e.kind == "spend" and e.body["event"]["site"] == site]
        return spends[-1].body["cumulative"], ledger.events(site)
    finally:
        ledger.close()


def test_another_run_committing_between_check_and_commit_makes_the_report_stale(tmp_path, reuse_log):
    """A node's ledger composes across runs: run B commits between run A's setup check and its commit.
    A's report (one round short) must not be taken; the spend must be the epsilon of all three events."""
    ledger = _create(tmp_path)
    ledger.commit_round(0, [_event("a", 0)])
    ledger.close()
    run_a = PrivacyLedger.open(tmp_path)
    projection = run_a.check_budget("a", [_event("a", 1)]).projection  # run A's setup
    run_a.close()
    run_b = PrivacyLedger.open(tmp_path)
    run_b.commit_round(1, [_event("a", 1, sigma=0.7)])  # run B's commit (another sigma)
    run_b.close()
    run_a = PrivacyLedger.open(tmp_path)  # run A's masked-input message
    try:
        run_a.commit_round(2, [_event("a", 2)], projections=[projection])
    finally:
        run_a.close()
    assert reuse_log == [("a", False)]
    cumulative, events = _last_cumulative(tmp_path, "a")
    truth = compute_epsilon(events, DELTA, accountants=ACCOUNTANTS)
    assert len(events) == 3 and cumulative["bound"] == truth.bound > projection.report.bound
    assert verify_ledger(tmp_path).ok


def test_a_report_for_a_sigma_one_ulp_higher_is_not_taken_for_the_lower_sigma(tmp_path, reuse_log):
    """Float equality of events is exact: a report computed for sigma + 1 ulp (lower epsilon) is not reused
    for sigma; and a list of the same events is as good as the tuple (positive control)."""
    sigma = 1.0
    higher = math.nextafter(sigma, math.inf)
    ledger = _create(tmp_path)
    try:
        projection = ledger.check_budget("a", [_event("a", 0, sigma=higher)]).projection
        assert isinstance(projection, ProjectedSpend) and projection.events == (_event("a", 0, sigma=higher),)
        assert ledger.reusable_report(projection, "a", [_event("a", 0, sigma=higher)]) is projection.report
        assert ledger.reusable_report(projection, "a", [_event("a", 0, sigma=sigma)]) is None
        # Another clipping norm, unit, or secure_rng flag is another event too (all fields compare).
        assert ledger.reusable_report(projection, "a", [dataclasses.replace(_event("a", 0, sigma=higher),
                                                                            clipping_norm=2.0)]) is None
        ledger.commit_round(0, [_event("a", 0, sigma=sigma)], projections=[projection])
    finally:
        ledger.close()
    cumulative, _ = _last_cumulative(tmp_path, "a")
    assert cumulative["bound"] == compute_epsilon([_event("a", 0)], DELTA, accountants=ACCOUNTANTS).bound
    assert verify_ledger(tmp_path).ok


def test_a_report_from_a_ledger_with_a_larger_budget_does_not_pass_a_smaller_one(tmp_path):
    """The budget is the committing ledger's, never the projection's: a report that was allowed elsewhere
    is refused here, and nothing is written."""
    rich = _create(tmp_path / "rich", budget=100.0)
    big = _event("a", 0, sigma=0.8, q=0.1, steps=200)
    try:
        decision = rich.check_budget("a", [big])
    finally:
        rich.close()
    assert decision.allowed
    poor = _create(tmp_path / "poor", budget=decision.projected.bound / 2)
    try:
        before = len(poor.entries())
        with pytest.raises(BudgetExceededError):
            poor.commit_round(0, [big], projections=[decision.projection])
        assert len(poor.entries()) == before and poor.events("a") == []
    finally:
        poor.close()


def test_a_report_at_another_delta_or_accountant_set_is_not_taken(tmp_path, reuse_log):
    """check_budget does not check the planned events' delta against the ledger's, so a ledger at delta
    1e-5 can compute a projection of events at 1e-6: its report (at 1e-5, lower epsilon) must not be
    taken by a ledger at 1e-6. Nor a report of other accountants (or in another order)."""
    events = [_event("a", 0, delta=1e-6)]
    loose = _create(tmp_path / "loose", delta=1e-5)
    wide = _create(tmp_path / "wide", delta=1e-6, accountants=("rdp", "rdp-dpa"))
    try:
        projection = loose.check_budget("a", events).projection
        other = wide.check_budget("a", events).projection
    finally:
        loose.close()
        wide.close()
    strict = _create(tmp_path / "strict", delta=1e-6, accountants=("rdp-dpa", "rdp"))
    try:
        assert strict.reusable_report(projection, "a", events) is None
        assert strict.reusable_report(other, "a", events) is None
        strict.commit_round(0, events, projections=[projection, other])
    finally:
        strict.close()
    assert reuse_log[-2:] == [("a", False), ("a", False)]
    cumulative, _ = _last_cumulative(tmp_path / "strict", "a")
    truth = compute_epsilon(events, 1e-6, accountants=("rdp-dpa", "rdp"))
    assert cumulative["bound"] == truth.bound and cumulative["delta"] == 1e-6
    assert verify_ledger(tmp_path / "strict").ok


def test_a_report_of_another_site_with_the_same_parameters_is_not_taken(tmp_path):
    ledger = _create(tmp_path)
    try:
        projection = ledger.check_budget("b", [_event("b", 0)]).projection
        assert ledger.reusable_report(projection, "a", [_event("a", 0)]) is None
        relabelled = dataclasses.replace(projection, site="a")  # the events still name b
        assert ledger.reusable_report(relabelled, "a", [_event("a", 0)]) is None
    finally:
        ledger.close()


def test_an_accountant_library_upgraded_between_check_and_commit_is_computed_again(tmp_path, reuse_log,
                                                                                   monkeypatch):
    """A co-tenant upgrades Opacus between the setup and the masked-input message: the setup's report
    names the old version and must not be taken."""
    ledger = _create(tmp_path)
    try:
        projection = ledger.check_budget("a", [_event("a", 0)]).projection
        version = accounting_module.metadata.version
        monkeypatch.setattr(accounting_module.metadata, "version",
                            lambda dist: "999.0" if dist == "opacus" else version(dist))
        assert ledger.reusable_report(projection, "a", [_event("a", 0)]) is None
        ledger.commit_round(0, [_event("a", 0)], projections=[projection])
    finally:
        ledger.close()
    assert reuse_log[-1] == ("a", False)


def test_a_numerical_dependency_upgraded_between_check_and_commit_is_computed_again(tmp_path, reuse_log,
                                                                                    monkeypatch):
    """The accountants' numbers come from numpy and scipy as much as from Opacus / dp-accounting (RDP's
    log-binomial sums, PRV's FFT, PLD's convolutions). A co-tenant upgrading scipy or numpy between the
    setup and the commit changes what compute_epsilon gives now; the setup's report must then not be taken
    (ProjectedSpend's docstring: reused only when the report is what would be computed now)."""
    ledger = _create(tmp_path)
    try:
        projection = ledger.check_budget("a", [_event("a", 0)]).projection
        version = accounting_module.metadata.version
        monkeypatch.setattr(accounting_module.metadata, "version",
                            lambda dist: "999.0" if dist in ("scipy", "numpy") else version(dist))
        assert ledger.reusable_report(projection, "a", [_event("a", 0)]) is None
    finally:
        ledger.close()


def test_a_reused_report_is_re_derived_by_verify_ledger_and_a_budget_decision_reads_its_history_later(tmp_path):
    ledger = _create(tmp_path)
    try:
        decision = ledger.check_budget("a", [_event("a", 0)])
        ledger.commit_round(0, [_event("a", 0)], projections=[decision.projection])
        second = ledger.check_budget("a", [_event("a", 1)])
        ledger.commit_round(1, [_event("a", 1)], projections=[second.projection])
    finally:
        ledger.close()
    # Read after the ledger moved on and was closed: the history as it was at the check, no crash.
    assert decision.spent is None
    assert second.spent == compute_epsilon([_event("a", 0)], DELTA, accountants=ACCOUNTANTS).bound
    report = verify_ledger(tmp_path)
    assert report.ok and report.epsilon["a"]["bound"] == second.projection.report.bound


# -- the Flower node -------------------------------------------------------------------------------

flwr = pytest.importorskip("flwr")

from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402

from simulation.engines.flower import client_app  # noqa: E402
from simulation.engines.flower.sealed_state import unseal  # noqa: E402
from simulation.engines.flower.server_app import DEFAULTS, run_federation  # noqa: E402

from .flower_harness import InMemoryGrid, as_node  # noqa: E402

SITES = ("site-1", "site-2", "site-3")
RUN = {"num-sites": 3, "rounds": 2, "image-size": 16, "epsilon": 8.0, "local-steps": 2, "sample-rate": 0.25,
       "update": "synthetic", "synthetic-seed": 5, "node-wait": 5.0}
STATE = "secagg-client"


def _nodes(base):
    return {100 + i: {"partition-id": i, "site": site, "state-dir": str(base / f"node-{site}"),
                      "epsilon-budget": 8.0, "drop-sleep": 0.0} for i, site in enumerate(SITES)}


def _federate(grid, run_dir, **config):
    with as_node(SUPERLINK_NODE_ID):
        return run_federation(grid, DEFAULTS | RUN | {"out": str(run_dir)} | config)


class _BeforeMasking(InMemoryGrid):
    """Calls ``hook(self, round)`` before each round's first protocol exchange (after every setup)."""

    def __init__(self, *args, hook, **kwargs):
        super().__init__(*args, **kwargs)
        self.hook, self.done = hook, set()

    def push_messages(self, messages):
        messages = list(messages)
        meta = messages[0].metadata
        if meta.message_type == "query.secagg" and meta.group_id not in self.done:
            self.done.add(meta.group_id)
            self.hook(self, int(meta.group_id))
        return super().push_messages(messages)


def test_a_stale_or_another_sites_sealed_state_is_refused_and_no_commit_takes_a_stale_report(tmp_path, reuse_log):
    """Whoever writes Flower's state moves sealed records around (the whole state is one sealed record, under
    the node's key, bound to its site and run): site-1's state gets site-2's in round 0 (another site: it
    does not open); site-2's gets its own round-0 state back in round 1 (stale). Neither crashes a node, no
    commit takes a report for other events than its own, and every node's ledger verifies."""
    kept = {}

    def swap(grid, round_index):
        one, two = (grid.contexts[n].state.config_records[STATE] for n in (100, 101))
        if round_index == 0:
            kept["site-2"] = bytes(two["sealed"])
            one["sealed"] = kept["site-2"]
        else:
            two["sealed"] = kept["site-2"]

    nodes = _nodes(tmp_path)
    with contextlib.suppress(SiteSignatureError):
        _federate(_BeforeMasking(client_app.app, nodes, DEFAULTS | RUN, hook=swap), tmp_path / "run")
    assert ("site-3", True) in reuse_log  # the untouched node still reuses its own report
    for site in SITES:
        directory = tmp_path / f"node-{site}" / "ledger"
        if not (directory / "ledger.sqlite").exists():
            continue
        cumulative, events = _last_cumulative(directory, site)
        rounds = [e.round for e in events]
        assert len(rounds) == len(set(rounds)), rounds  # nothing committed twice
        if events:
            assert cumulative["bound"] == compute_epsilon(events, events[0].delta).bound
        assert verify_ledger(directory).ok


def test_a_library_upgrade_between_setup_and_masked_input_is_not_covered_by_the_setups_report(
        tmp_path, reuse_log, monkeypatch):
    """A co-tenant upgrades dp-accounting on the node's machine after the setups of round 0: no commit of
    either round may reuse a report computed under the old version (round 1's setup runs under the new)."""
    version = accounting_module.metadata.version

    def upgrade(grid, round_index):
        if round_index == 0:
            monkeypatch.setattr(accounting_module.metadata, "version",
                                lambda dist: "999.0" if dist == "dp-accounting" else version(dist))

    accounting_module._cached_run.cache_clear()  # a fresh process per message: no report cached across them
    summary = _federate(_BeforeMasking(client_app.app, _nodes(tmp_path), DEFAULTS | RUN, hook=upgrade),
                        tmp_path / "run", rounds=1)
    assert summary["rounds_completed"] == 1
    assert sorted(reuse_log) == [(site, False) for site in SITES]


def test_the_node_commits_the_spend_it_trained_with_not_a_setup_rewritten_in_its_state(tmp_path):
    """Whoever writes Flower's state (what sealed_state guards against) writes a setup whose noise multiplier
    is ten times the real one after the node trained and masked with the real one - as a plain pickle in the
    old ``setup`` slot, and as the whole record unsealed: the node must refuse, or commit the spend of the
    noise it really added - never the smaller epsilon of the rewritten setup."""
    real = {}

    def rewrite(grid, round_index):
        context = grid.contexts[100]
        record = context.state.config_records[STATE]
        state = pickle.loads(unseal(tmp_path / "node-site-1", "site-1", context.run_id, bytes(record["sealed"])))
        setup = state["setup"]
        real["sigma"] = setup.noise_multiplier
        forged = dataclasses.replace(setup, noise_multiplier=10 * setup.noise_multiplier)
        record["setup"] = pickle.dumps(forged)
        if round_index == 1:
            record["sealed"] = pickle.dumps(state | {"setup": forged})

    nodes = _nodes(tmp_path)
    # The coordinator's own commit then stops: site-1 refuses to sign the real spend (it is not the one in
    # the rewritten setup). That is the coordinator's business; the question is site-1's own ledger.
    with contextlib.suppress(SiteSignatureError):
        _federate(_BeforeMasking(client_app.app, nodes, DEFAULTS | RUN, hook=rewrite), tmp_path / "run", rounds=2)
    ledger = PrivacyLedger.open(tmp_path / "node-site-1" / "ledger")
    try:
        spent = ledger.events("site-1")
    finally:
        ledger.close()
    assert all(event.noise_multiplier == real["sigma"] for event in spent), (real, spent)


def test_the_sealed_report_opens_only_for_its_own_site_and_run(tmp_path):
    """The report is bound to (site, run) by the seal's associated data: not another run's or site's."""
    from simulation.engines.flower.sealed_state import seal

    sealed = seal(tmp_path, "site-1", 1, pickle.dumps("report"))
    assert pickle.loads(unseal(tmp_path, "site-1", 1, sealed)) == "report"
    import secagg

    for site, run in (("site-2", 1), ("site-1", 2)):
        with pytest.raises(secagg.ProtocolError):
            unseal(tmp_path, site, run, sealed)


class _Touch:
    """A pickle whose loading creates a file: what any code run by ``pickle.loads`` could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_whoever_writes_flowers_state_cannot_run_code_in_the_node(tmp_path):
    """Whoever writes Flower's state store - which sealed_state.py treats as untrusted - plants a pickle in
    the node's state (in the old ``setup`` slot and as the sealed record itself): it must not get code run
    in the node (here: a file created) nor a traceback; the message must be refused."""
    marker = tmp_path / "ran-code-in-the-node"

    def plant(grid, round_index):
        record = grid.contexts[100].state.config_records[STATE]
        record["setup"] = pickle.dumps(_Touch(marker))
        record["sealed"] = pickle.dumps(_Touch(marker))

    with contextlib.suppress(Exception):  # whatever the coordinator makes of it; the question is the node
        _federate(_BeforeMasking(client_app.app, _nodes(tmp_path), DEFAULTS | RUN, hook=plant), tmp_path / "run",
                  rounds=1)
    assert not marker.exists()


def test_a_replayed_round_0_state_record_in_round_1_releases_nothing_twice(tmp_path):
    """Whoever writes Flower's state puts back site-1's whole round-0 record (setup, sealed session and
    sealed report, all of this run) before round 1's protocol: site-1 must not commit round 0's spend
    again nor reuse its report for another round; its ledger stays verifiable."""
    from flwr.app import ConfigRecord

    saved = {}

    def replay(grid, round_index):
        if round_index == 0:
            saved.update(dict(grid.contexts[100].state.config_records[STATE]))
        else:
            grid.contexts[100].state.config_records[STATE] = ConfigRecord(dict(saved))

    with contextlib.suppress(SiteSignatureError):
        _federate(_BeforeMasking(client_app.app, _nodes(tmp_path), DEFAULTS | RUN, hook=replay), tmp_path / "run")
    directory = tmp_path / "node-site-1" / "ledger"
    ledger = PrivacyLedger.open(directory)
    try:
        released = [(e.body["extra"]["run"], e.body["extra"]["round"]) for e in ledger.entries()
                    if e.kind == "round"]
    finally:
        ledger.close()
    assert len(released) == len(set(released)) and (released[0][1] == 0 if released else True), released
    assert verify_ledger(directory).ok
