"""The privacy ledger: budgets, the hash chain, tamper detection, crash safety."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dp import BudgetExceededError, LedgerError, PrivacyEvent, PrivacyLedger, verify_ledger
from dp.ledger import HEAD_FILE, LEDGER_FILE

DELTA = 1e-5


def _event(site, round_index, sigma=1.0, q=0.02, steps=50):
    return PrivacyEvent(site, round_index, sigma, q, steps, DELTA)


@pytest.fixture
def run_dir(tmp_path):
    ledger = PrivacyLedger.create(tmp_path, run_id="r1", delta=DELTA, budgets={"a": 5.0, "b": 5.0},
                                  accountants=("rdp",))
    for r in range(3):
        ledger.commit_round(r, [_event("a", r), _event("b", r)])
    ledger.close()
    return tmp_path


def _raw(run_dir):
    """A connection that bypasses the append-only triggers, as an attacker with sqlite3 would."""
    conn = sqlite3.connect(Path(run_dir) / LEDGER_FILE, isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("DROP TRIGGER entries_no_delete")
    return conn


def test_ledger_with_every_accountant(tmp_path):
    ledger = PrivacyLedger.create(tmp_path, run_id="all", delta=DELTA, budgets={"a": 5.0})
    ledger.commit_round(0, [_event("a", 0)])
    ledger.commit_round(1, [_event("a", 1)])
    spent = ledger.spent("a")
    assert {r.accountant for r in spent.results} == {"rdp", "prv", "pld"}
    assert spent.bound_accountant in ("prv", "pld")
    ledger.close()
    report = verify_ledger(tmp_path)
    assert report.ok and report.epsilon["a"]["bound"] == pytest.approx(spent.bound)


def test_intact_ledger_verifies_and_reports_epsilon(run_dir):
    report = verify_ledger(run_dir)
    assert report.ok, report.reason
    assert report.entries == 1 + 3 * 3  # genesis, then 2 spends + 1 round entry per round
    assert set(report.epsilon) == {"a", "b"}
    assert report.epsilon["a"]["bound"] > 0


def test_spent_epsilon_composes_rounds(run_dir):
    with PrivacyLedger.open(run_dir) as ledger:
        assert ledger.spent("a").bound == pytest.approx(verify_ledger(run_dir).epsilon["a"]["bound"])
        assert ledger.committed_rounds() == {0, 1, 2}
        assert len(ledger.events("a")) == 3


def test_budget_is_enforced_before_training(tmp_path):
    ledger = PrivacyLedger.create(tmp_path, run_id="r", delta=DELTA, budgets={"a": 1.0}, accountants=("rdp",))
    big = _event("a", 0, sigma=0.7, q=0.1, steps=500)
    decision = ledger.check_budget("a", [big])
    assert not decision.allowed and decision.projected.bound > 1.0
    with pytest.raises(BudgetExceededError, match="sit out"):
        ledger.require_budget("a", [big])
    with pytest.raises(BudgetExceededError):
        ledger.commit_round(0, [big])  # never silently exceeded, even if the check was skipped
    assert ledger.committed_rounds() == set()
    small = _event("a", 0, sigma=5.0, q=0.01, steps=10)
    assert ledger.check_budget("a", [small]).allowed
    ledger.commit_round(0, [small], skipped={})
    assert verify_ledger(tmp_path).ok


def test_round_cannot_be_committed_twice(run_dir):
    with PrivacyLedger.open(run_dir) as ledger:
        with pytest.raises(LedgerError, match="already committed"):
            ledger.commit_round(1, [_event("a", 1)])


def test_append_only_triggers(run_dir):
    conn = sqlite3.connect(Path(run_dir) / LEDGER_FILE)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE entries SET body = '{}' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM entries WHERE seq = 2")


def test_edit_detected(run_dir):
    conn = _raw(run_dir)
    body = json.loads(conn.execute("SELECT body FROM entries WHERE seq = 3").fetchone()[0])
    body["event"]["noise_multiplier"] = 10.0
    conn.execute("UPDATE entries SET body = ? WHERE seq = 3",
                 (json.dumps(body, sort_keys=True, separators=(",", ":")),))
    report = verify_ledger(run_dir)
    assert not report.ok and report.first_broken == 3 and "altered" in report.reason


def test_edit_with_rehashed_chain_detected_by_epsilon_recomputation(run_dir):
    """An attacker who edits an event AND recomputes every hash (and the head record) is still
    caught: the stored cumulative epsilons no longer match the events."""
    from dp.ledger import canonical_json
    from dp.ledger_format import chain_hash, genesis_hash

    conn = _raw(run_dir)
    rows = conn.execute("SELECT seq, kind, body FROM entries ORDER BY seq").fetchall()
    prev = genesis_hash("r1")
    for seq, kind, body in rows:
        parsed = json.loads(body)
        if seq == 2:
            parsed["event"]["steps"] = 5  # claim less spend
        text = canonical_json(parsed)
        digest = chain_hash(prev, kind, text)
        conn.execute("UPDATE entries SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?", (text, prev, digest, seq))
        prev = digest
    (Path(run_dir) / HEAD_FILE).write_text(json.dumps({"run_id": "r1", "entries": len(rows), "head": prev}))
    report = verify_ledger(run_dir)
    assert not report.ok and report.first_broken == 2 and "recomputed" in report.reason


def test_deletion_detected(run_dir):
    _raw(run_dir).execute("DELETE FROM entries WHERE seq = 4")
    report = verify_ledger(run_dir)
    assert not report.ok and report.first_broken == 4


def test_reordering_detected(run_dir):
    conn = _raw(run_dir)
    a = conn.execute("SELECT kind, body, prev_hash, hash FROM entries WHERE seq = 2").fetchone()
    b = conn.execute("SELECT kind, body, prev_hash, hash FROM entries WHERE seq = 3").fetchone()
    conn.execute("UPDATE entries SET kind=?, body=?, prev_hash=?, hash=? WHERE seq = 2", b)
    conn.execute("UPDATE entries SET kind=?, body=?, prev_hash=?, hash=? WHERE seq = 3", a)
    report = verify_ledger(run_dir)
    assert not report.ok and report.first_broken == 2


def test_truncation_detected_by_head_record(run_dir):
    _raw(run_dir).execute("DELETE FROM entries WHERE seq >= 8")
    report = verify_ledger(run_dir)
    assert not report.ok and "truncated" in report.reason


def test_missing_head_record_is_reported(run_dir):
    (Path(run_dir) / HEAD_FILE).unlink()
    assert not verify_ledger(run_dir).ok


def test_missing_and_foreign_ledgers(tmp_path):
    with pytest.raises(LedgerError, match="no privacy ledger"):
        verify_ledger(tmp_path)
    (tmp_path / LEDGER_FILE).write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="not a secagg privacy ledger"):
        PrivacyLedger.open(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    conn = sqlite3.connect(other / LEDGER_FILE)
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.commit()
    with pytest.raises(LedgerError):
        PrivacyLedger.open(other)
    with pytest.raises(LedgerError, match="already exists"):
        PrivacyLedger.create(other, run_id="x", delta=DELTA, budgets={"a": 1.0})


def test_sigkill_during_writes_loses_no_committed_round(tmp_path):
    writer = Path(__file__).with_name("ledger_writer.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for attempt, wait in enumerate((1.0, 2.5)):
        run_dir = tmp_path / f"run{attempt}"
        proc = subprocess.Popen([sys.executable, str(writer), str(run_dir)], stdout=subprocess.PIPE, text=True,
                                env=env)
        acknowledged = []
        deadline = time.monotonic() + wait + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
            if len(acknowledged) >= 3 and time.monotonic() > deadline - 30:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert acknowledged, "the writer committed nothing"
        report = verify_ledger(run_dir)
        assert report.ok, report.reason
        with PrivacyLedger.open(run_dir) as ledger:
            assert set(acknowledged) <= ledger.committed_rounds()


# -- schema v2: site signatures, anchors, unit and adjacency ------------------------------------------


def _signed_run(tmp_path, rounds=2):
    """A ledger whose spends are signed by per-site identities (as the simulation makes them)."""
    from dp import LedgerSigner
    from simulation.federation.identity import run_site_identities

    ids = run_site_identities(tmp_path, ["a", "b"], create=True)
    signers = {s: LedgerSigner(s, ids.keys[s].seed, ids.folders[s]) for s in ("a", "b")}
    ledger = PrivacyLedger.create(tmp_path, run_id="signed", delta=DELTA, budgets={"a": 5.0, "b": 5.0},
                                  accountants=("rdp",))
    for r in range(rounds):
        ledger.commit_round(r, [_event("a", r), _event("b", r)], signers=signers)
    ledger.close()
    return ids, signers


def test_signed_spends_and_anchors_verify(tmp_path):
    from dp import load_anchors

    ids, _ = _signed_run(tmp_path)
    report = verify_ledger(tmp_path, registry=ids.registry, anchors=load_anchors([tmp_path / "sites"]))
    assert report.ok, report.reason
    assert report.signatures_checked == 4 and sorted(report.anchors_checked) == ["a", "b"]
    assert not any("registry" in w or "anchors" in w for w in report.warnings)
    unchecked = verify_ledger(tmp_path)
    assert unchecked.ok and unchecked.signatures_checked == 0
    assert any("signatures were not checked" in w for w in unchecked.warnings)
    assert any("no site anchors" in w for w in unchecked.warnings)


def test_a_site_signs_only_its_own_spend_and_anchors_only_what_it_signed(tmp_path):
    from dp import EntryStatement, LedgerSigner

    _, signers = _signed_run(tmp_path, rounds=1)
    with PrivacyLedger.open(tmp_path) as ledger:
        with pytest.raises(LedgerError, match="has no signer"):
            ledger.commit_round(1, [_event("a", 1), _event("b", 1)], signers={"a": signers["a"]})
        assert ledger.committed_rounds() == {0}  # nothing written
    statement = EntryStatement("signed", 9, "00" * 32, "spend", {"event": _event("b", 3).to_dict()})
    with pytest.raises(LedgerError, match="refuses to sign"):
        signers["a"].sign_entry(statement)
    with pytest.raises(LedgerError, match="anchors only what it signed"):
        signers["a"].record_anchor("signed", 99, "00" * 32)

    def refuse(statement):
        raise LedgerError("not what I trained")

    picky = LedgerSigner("a", b"\x01" * 32, tmp_path / "picky", approve=refuse)
    with pytest.raises(LedgerError, match="not what I trained"):
        picky.sign_entry(EntryStatement("signed", 9, "00" * 32, "spend", {"event": _event("a", 3).to_dict()}))


def test_unsigned_spends_fail_against_a_registry(run_dir, tmp_path):
    from simulation.federation.identity import run_site_identities

    registry = run_site_identities(tmp_path / "ids", ["a", "b"], create=True).registry
    report = verify_ledger(run_dir, registry=registry)
    assert not report.ok and report.first_broken == 2 and report.site == "a" and report.round == 0
    assert "carries no signature" in report.reason


def test_unit_and_adjacency_are_recorded(tmp_path):
    ledger = PrivacyLedger.create(tmp_path, run_id="u", delta=DELTA, budgets={"a": 5.0}, accountants=("rdp",),
                                  unit="patient")
    ledger.close()
    with PrivacyLedger.open(tmp_path) as reopened:
        assert reopened.unit == "patient" and reopened.adjacency == "add/remove one patient"
        genesis = reopened.entries()[0].body
    assert genesis["unit"] == "patient" and genesis["adjacency"] == "add/remove one patient"
    report = verify_ledger(tmp_path)
    assert report.unit == "patient" and report.adjacency == "add/remove one patient"


def test_old_schema_is_refused_naming_its_version(run_dir):
    conn = sqlite3.connect(Path(run_dir) / LEDGER_FILE, isolation_level=None)
    conn.execute("UPDATE meta SET value = 'secagg-ledger-v1' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(LedgerError, match="'secagg-ledger-v1'.*'secagg-ledger-v3'"):
        PrivacyLedger.open(run_dir)
    with pytest.raises(LedgerError, match="secagg-ledger-v1"):
        verify_ledger(run_dir)


def test_invalid_json_is_a_typed_error_naming_the_entry(run_dir):
    from dp import LedgerIntegrityError

    conn = _raw(run_dir)
    conn.execute("UPDATE entries SET body = '{oops' WHERE seq = 5")
    with pytest.raises(LedgerIntegrityError, match="entry 5") as caught:
        PrivacyLedger.open(run_dir)
    assert caught.value.seq == 5
    report = verify_ledger(run_dir)
    assert not report.ok and report.first_broken == 5


def test_a_budget_checks_report_is_reused_at_commit_only_for_exactly_the_history_it_was_computed_for(
        tmp_path, monkeypatch):
    """``commit_round(projections=...)`` takes a :class:`dp.ProjectedSpend` from :meth:`check_budget` instead of
    computing the same report again - only for the same site, events, delta, accountants and library versions."""
    import dataclasses

    import dp.ledger as ledger_module
    from dp import ProjectedSpend

    computed = []
    compute = ledger_module.compute_epsilon
    monkeypatch.setattr(ledger_module, "compute_epsilon", lambda events, *a, **k: computed.append(len(events))
                        or compute(events, *a, **k))
    ledger = PrivacyLedger.create(tmp_path, run_id="r", delta=DELTA, budgets={"a": 5.0, "b": 5.0},
                                  accountants=("rdp",))
    try:
        first = ledger.check_budget("a", [_event("a", 0)]).projection
        assert isinstance(first, ProjectedSpend) and first.events == (_event("a", 0),)
        computed.clear()
        ledger.commit_round(0, [_event("a", 0)], projections=[first])
        assert computed == []  # the exact history it was computed for: reused
        assert ledger.spent("a").bound == first.report.bound
        # Stale (its history is one round short now), another site's, other accountants', another library
        # version's, or not a projection at all: each is computed again.
        stale = ledger.check_budget("a", [_event("a", 1)]).projection
        ledger.commit_round(1, [_event("a", 1)])
        other_site = ledger.check_budget("b", [_event("b", 2)]).projection
        versions = dataclasses.replace(other_site.report, results=tuple(
            dataclasses.replace(r, library=r.library + ".old") for r in other_site.report.results))
        wrong = [stale, dataclasses.replace(other_site, site="a"), dataclasses.replace(other_site, accountants=("pld",)),
                 dataclasses.replace(other_site, report=versions), "not a projection"]
        for projection in wrong:
            assert ledger.reusable_report(projection, "b" if projection is not stale else "a",
                                          [_event("b", 2)] if projection is not stale else
                                          [_event("a", 0), _event("a", 1), _event("a", 2)]) is None
        computed.clear()
        ledger.commit_round(2, [_event("a", 2)], projections=[stale])
        assert computed == [3]
        assert verify_ledger(tmp_path).ok
        # Reuse trusts the report: a forged one (the caller must keep it sealed) is what verification catches.
        forged = ledger.check_budget("b", [_event("b", 3)]).projection
        halved = tuple(dataclasses.replace(r, epsilon=r.epsilon / 2) for r in forged.report.results)
        forged = dataclasses.replace(forged, report=dataclasses.replace(forged.report, results=halved,
                                                                         bound=forged.report.bound / 2))
        ledger.commit_round(3, [_event("b", 3)], projections=[forged])
        # And a reused report over the budget is refused as a computed one is.
        big = _event("a", 4, sigma=0.5, q=0.5, steps=500)
        over = ledger.check_budget("a", [big])
        assert not over.allowed
        with pytest.raises(BudgetExceededError):
            ledger.commit_round(4, [big], projections=[over.projection])
    finally:
        ledger.close()
    report = verify_ledger(tmp_path)
    assert not report.ok and "differs from the recomputed" in report.reason and report.site == "b", report


def test_a_budget_decision_computes_the_history_alone_only_when_its_spent_is_read(tmp_path, monkeypatch):
    import dp.ledger as ledger_module

    computed = []
    compute = ledger_module.compute_epsilon
    monkeypatch.setattr(ledger_module, "compute_epsilon", lambda events, *a, **k: computed.append(len(events))
                        or compute(events, *a, **k))
    ledger = PrivacyLedger.create(tmp_path, run_id="r", delta=DELTA, budgets={"a": 5.0}, accountants=("rdp",))
    try:
        assert ledger.check_budget("a", [_event("a", 0)]).spent is None  # no history yet
        ledger.commit_round(0, [_event("a", 0)])
        computed.clear()
        decision = ledger.check_budget("a", [_event("a", 1)])
        assert computed == [2]  # the history and the planned event only
        ledger.commit_round(1, [_event("a", 1)])  # read later, it is still the bound before this round
        before = compute([_event("a", 0)], DELTA, accountants=("rdp",)).bound
        assert decision.spent == before and computed == [2, 2, 1]
        assert decision.spent == before and computed == [2, 2, 1]  # computed once
    finally:
        ledger.close()
