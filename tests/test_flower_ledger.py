"""Issue 15 over Flower: site-signed ledgers on both sides, anchored in the nodes' own state.

Through the real ServerApp and ClientApp code on the in-memory grid (tests/flower_harness.py):
each node signs its own ledger's spends and the spends the coordinator records for its site
(a ``query.ledger`` exchange, checked against the consortium's registry before the commit) and
anchors the coordinator's ledger in its own state directory. Then an attacker with sqlite3 and
the public chain formula (tests/ledger_rewrite.py) rewrites either ledger, and ``secagg ledger
verify`` must say so; and a node that signs with a foreign key, does not answer, or is asked to
sign an event it did not train with stops the commit.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("flwr")

from dp import PrivacyLedger, SiteSignatureError  # noqa: E402
from simulation.engines.flower import client_app  # noqa: E402
from simulation.engines.flower.ledger_link import ANCHORS_DIR, LEDGER, STATEMENT_RECORD  # noqa: E402
from simulation.engines.flower.server_app import DEFAULTS  # noqa: E402
from simulation.engines.flower.transport import HELLO  # noqa: E402
from simulation.federation.identity import write_identity  # noqa: E402

from .flower_harness import InMemoryGrid  # noqa: E402
from .inmemory_consortium import RUN, SITES, cli_verify, consortium, federate, ledger_run_id  # noqa: E402
from .ledger_rewrite import ledger_rows, recompute_epsilons, rewrite_ledger, spend_rows  # noqa: E402


@pytest.fixture(scope="module")
def federated(tmp_path_factory):
    """Two rounds, passive mode, with the consortium's registry on the coordinator."""
    base = tmp_path_factory.mktemp("flower-ledger")
    registry, states, nodes = consortium(base)
    run_dir = base / "run"
    summary = federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, registry=str(registry))
    assert summary["rounds_completed"] == 2 and summary["privacy"]["ledger_verified"]
    return base, registry, states, run_dir, summary


@pytest.fixture
def copies(federated, tmp_path):
    """A private copy of the run directory and the node states, for an attacker to rewrite."""
    base, registry, states, run_dir, _ = federated
    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy)
    state_copies = {site: tmp_path / state.name for site, state in states.items()}
    for site, state in states.items():
        shutil.copytree(state, state_copies[site])
    return registry, state_copies, run_copy


def test_a_nodes_own_ledger_is_site_signed_at_the_runs_privacy_unit(federated, capsys):
    _, registry, states, _, _ = federated
    for site, state in states.items():
        code, out, err = cli_verify(capsys, state / "ledger", "--registry", registry)
        assert code == 0, err
        assert "2 site signatures verified" in out
        assert "privacy unit: one patient (add/remove one patient)" in out
        ledger = PrivacyLedger.open(state / "ledger")
        try:
            assert ledger.unit == "patient"
            assert [e.unit for e in ledger.events(site)] == ["patient", "patient"]
        finally:
            ledger.close()
    # Signed by the node's key, not merely present: another key registered for site-1 does not verify it.
    from secagg.crypto import SigningKeyPair

    forged = json.loads(registry.read_text())
    forged["site-1"] = SigningKeyPair.generate().verify_key.hex()
    (states["site-1"].parent / "forged-registry.json").write_text(json.dumps(forged))
    code, _, err = cli_verify(capsys, states["site-1"] / "ledger", "--registry",
                           states["site-1"].parent / "forged-registry.json")
    assert code == 1 and "signature of site 'site-1' does not verify" in err


def test_the_coordinators_ledger_carries_every_sites_signature_and_the_nodes_anchor_it(federated, capsys):
    _, registry, states, run_dir, summary = federated
    run_id = ledger_run_id(run_dir)
    anchors = [states[site] / ANCHORS_DIR / run_id for site in SITES]
    code, out, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", *anchors)
    assert code == 0, err
    assert "6 site signatures verified" in out and "3 site anchors matched" in out
    for folder in anchors:
        anchor = folder / "ledger.anchor.json"
        assert anchor.stat().st_mode & 0o777 == 0o600
        assert json.loads(anchor.read_text())["seq"] > 1
    assert "checked against the registry" in summary["deployment"]["ledger_signatures"]
    from simulation.reports.dpia import write_dpia

    path, _ = write_dpia(run_dir, fmt="md", out=run_dir.parent / "dpia.md")
    assert ("Site signatures on the coordinator's ledger: every spend in the coordinator's ledger is signed on "
            "the site's node") in path.read_text()
    assert "Flower's node state, sealed as one record with XChaCha20-Poly1305" in path.read_text()  # tests/test_flower_inmemory.py


def test_nothing_the_coordinator_publishes_holds_a_wall_clock_time(federated):
    _, _, _, run_dir, summary = federated
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert "seconds" not in record and "bytes_up" in record
    assert "seconds" not in summary
    assert "seconds" not in json.loads((run_dir / "summary.json").read_text())


def test_an_edited_node_ledger_fails_verification_even_rehashed(copies, capsys):
    registry, states, _ = copies
    directory = states["site-2"] / "ledger"
    rows = ledger_rows(directory)
    seq, body = spend_rows(rows)[1]
    body["event"]["steps"] = 1  # the node's second release, made to look cheaper
    rewrite_ledger(directory, recompute_epsilons(rows))
    code, _, err = cli_verify(capsys, directory)
    assert code == 0  # without the registry, a rehashed edit is not caught (and verify says so)
    code, _, err = cli_verify(capsys, directory, "--registry", registry)
    assert code == 1 and f"entry {seq} (site 'site-2', round 1)" in err and "signature" in err


def test_a_rewritten_coordinator_ledger_fails_against_a_nodes_anchor(copies, capsys):
    registry, states, run_dir = copies
    anchor = states["site-1"] / ANCHORS_DIR / ledger_run_id(run_dir)
    rows = ledger_rows(run_dir)
    round_ends = [i for i, (kind, _) in enumerate(rows) if kind == "round"]
    kept = rows[: round_ends[-2] + 1]  # the last round deleted, the chain rehashed, the head rewritten
    rewrite_ledger(run_dir, kept)
    code, _, _ = cli_verify(capsys, run_dir, "--registry", registry)
    assert code == 0  # every remaining spend keeps its valid signature: only an anchor sees this
    code, _, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", anchor)
    assert code == 1 and "truncated" in err and "site 'site-1'" in err


def test_every_node_anchors_the_last_spend_of_the_last_round(federated):
    """A node anchors the last entry of the round's chain it checked before unmasking, not only its own."""
    _, _, states, run_dir, _ = federated
    ledger = PrivacyLedger.open(run_dir)
    try:
        entries = ledger.entries()
    finally:
        ledger.close()
    last = max(e.seq for e in entries if e.kind == "spend")
    assert entries[last].kind == "round" and entries[last].body["round"] == 1  # the last round's last spend
    for site in SITES:
        anchor = json.loads((states[site] / ANCHORS_DIR / ledger.run_id / "ledger.anchor.json").read_text())
        assert (anchor["seq"], anchor["hash"]) == (last, entries[last - 1].hash)


@pytest.mark.parametrize("deleted", SITES)
def test_deleting_any_sites_last_spend_breaks_every_other_nodes_anchor(copies, capsys, deleted):
    """One honest node's anchor covers every survivor's spend of the round it unmasked, so the deletion
    of another site's spend (the chain rehashed, the head rewritten) fails against it."""
    registry, states, run_dir = copies
    run_id = ledger_run_id(run_dir)
    rows = ledger_rows(run_dir)
    seq = max(seq for seq, body in spend_rows(rows) if body["event"]["site"] == deleted)
    rewrite_ledger(run_dir, rows[: seq - 1] + rows[seq:])
    code, _, err = cli_verify(capsys, run_dir, "--registry", registry)
    assert code == 1, err  # the round record that closes the round still lists the deleted site, at least
    # A careful coordinator also drops the site from that round record. Then the spends after the deleted
    # one no longer verify (a signature covers the previous hash); the round's last spend (site-3's) has
    # none after it: there only an anchor sees the deletion.
    closing = next(i for i in range(seq - 1, len(rows)) if rows[i][0] == "round")
    rows[closing][1]["sites"] = [s for s in rows[closing][1]["sites"] if s != deleted]
    rewrite_ledger(run_dir, rows[: seq - 1] + rows[seq:])
    code, _, err = cli_verify(capsys, run_dir, "--registry", registry)
    assert code == (0 if deleted == "site-3" else 1), err
    for other in (s for s in SITES if s != deleted):
        code, _, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", states[other] / ANCHORS_DIR / run_id)
        assert code == 1, err
        if deleted == "site-3":  # before, site-1's and site-2's anchors stopped at their own entries
            assert f"not the entry site {other!r} countersigned" in err, err


def test_an_edited_coordinator_spend_fails_its_sites_signature(copies, capsys):
    registry, _, run_dir = copies
    rows = ledger_rows(run_dir)
    seq, body = spend_rows(rows)[0]
    body["event"]["noise_multiplier"] *= 4
    rewrite_ledger(run_dir, recompute_epsilons(rows))
    code, _, err = cli_verify(capsys, run_dir, "--registry", registry)
    assert code == 1 and f"entry {seq}" in err and "does not verify" in err


class _TamperingGrid(InMemoryGrid):
    """Alters or loses the ``query.ledger`` messages to one node."""

    def __init__(self, *args, victim: int, action: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.victim, self.action = victim, action

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for message in messages:
            if message.metadata.dst_node_id != self.victim or message.metadata.message_type != LEDGER:
                continue
            record = message.content.config_records.get(STATEMENT_RECORD)
            if record is None:
                continue
            if self.action == "lose":
                return []
            body = json.loads(str(record["body"]))
            body["event"]["steps"] = 1  # a coordinator that wants a cheaper spend signed
            record["body"] = json.dumps(body)
        return super().send_and_receive(messages, timeout=timeout)


@pytest.mark.parametrize("attack, expected", [
    ("foreign key", "signature of site 'site-2' does not verify"),
    ("lost reply", "did not answer"),
    ("altered event", "refused to sign"),
])
def test_a_spend_without_its_sites_valid_signature_is_not_committed(tmp_path, attack, expected):
    registry, states, nodes = consortium(tmp_path)
    if attack == "foreign key":  # site-2's node signs with a key the consortium never registered
        class _KeySwap(InMemoryGrid):
            """site-2's key is replaced after it registered (which it does with the registered key)."""

            swapped = False

            def send_and_receive(self, messages, *, timeout=None):
                messages = list(messages)
                if not self.swapped and messages[0].metadata.message_type != HELLO:
                    (states["site-2"] / "site-2.ed25519").unlink()
                    write_identity(states["site-2"], "site-2")
                    self.swapped = True
                return super().send_and_receive(messages, timeout=timeout)

        grid = _KeySwap(client_app.app, nodes, DEFAULTS | RUN)
    else:
        grid = _TamperingGrid(client_app.app, nodes, DEFAULTS | RUN, victim=101,
                              action="lose" if attack == "lost reply" else "alter")
    run_dir = tmp_path / "run"
    with pytest.raises(SiteSignatureError, match=expected) as caught:
        federate(grid, run_dir, rounds=1, registry=str(registry))
    assert caught.value.site == "site-2" and caught.value.round == 0
    ledger = PrivacyLedger.open(run_dir)
    try:  # nothing of the round reached the coordinator's ledger, and no aggregate was applied
        assert ledger.committed_rounds() == set() and ledger.events("site-1") == []
    finally:
        ledger.close()
    assert not (run_dir / "metrics.jsonl").exists() or (run_dir / "metrics.jsonl").read_text() == ""


def test_a_node_gone_before_unmasking_gets_its_last_anchor_at_the_end_of_the_run(tmp_path, capsys):
    registry, states, nodes = consortium(tmp_path)
    nodes[102]["drop"] = "1:unmask"  # site-3 releases in round 1, then answers nothing more that round
    run_dir = tmp_path / "run"
    summary = federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, registry=str(registry))
    assert summary["rounds_completed"] == 2
    last_spend = max(seq for seq, body in spend_rows(ledger_rows(run_dir)) if body["event"]["site"] == "site-3")
    anchor = states["site-3"] / ANCHORS_DIR / ledger_run_id(run_dir)
    assert json.loads((anchor / "ledger.anchor.json").read_text())["seq"] == last_spend
    code, out, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", anchor)
    assert code == 0 and "1 site anchors matched" in out, err


def test_without_a_registry_spends_are_signed_unchecked_and_a_node_keeps_its_unit_and_needs_an_identity(
        tmp_path, capsys):
    registry, states, nodes = consortium(tmp_path)
    del nodes[102]["state-dir"]  # site-3's node: no state-dir and no signing-key, so nothing to sign with
    run_dir = tmp_path / "run"
    summary = federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, rounds=1, epsilon=2.0)
    record = json.loads((run_dir / "metrics.jsonl").read_text())
    assert record["included"] == ["site-1", "site-2"] and "no identity" in record["refusals"]["site-3"]
    assert "not checked by the coordinator (no registry)" in summary["deployment"]["ledger_signatures"]
    code, out, err = cli_verify(capsys, run_dir, "--registry", registry)  # the auditor checks them afterwards
    assert code == 0 and "2 site signatures verified" in out, err
    # The nodes' ledgers account per patient: a run at slice level is refused, nothing is spent.
    summary = federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), tmp_path / "slice", rounds=1,
                        epsilon=2.0, **{"privacy-unit": "slice"})
    record = json.loads((tmp_path / "slice" / "metrics.jsonl").read_text())
    assert record["status"] == "aborted" and "privacy unit" in record["refusals"]["site-1"]
    ledger = PrivacyLedger.open(states["site-1"] / "ledger")
    try:
        assert [e.unit for e in ledger.events("site-1")] == ["patient"]
    finally:
        ledger.close()
