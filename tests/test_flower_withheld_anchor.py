"""Issue 15, attack review: a coordinator that controls when nodes anchor, or skips a site's signature.

Through the real ServerApp and ClientApp code on the in-memory grid. Before the fix a coordinator
could withhold the last round's anchors (the nodes anchored only what the coordinator delivered),
then delete that round from its ledger, and ``ledger verify --registry --anchors`` said OK. Now
a node anchors its own signed entry itself when it is asked to unmask, and refuses to unmask a
round whose spend it did not sign; a site whose update left without a signed spend is named by
``verify`` from the site's own release record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

pytest.importorskip("flwr")

from dp import ChainEntry, PrivacyLedger  # noqa: E402
from dp.ledger_signatures import entry_site_and_round  # noqa: E402
from secagg import wire  # noqa: E402
from secagg.messages import UnmaskRequest  # noqa: E402
from simulation.federation import rounds  # noqa: E402
from simulation.engines.flower import client_app  # noqa: E402
from simulation.engines.flower.ledger_link import ANCHOR_RECORD, ANCHORS_DIR, ROUND_CHAIN_RECORD  # noqa: E402
from simulation.engines.flower.server_app import DEFAULTS  # noqa: E402
from simulation.engines.flower.transport import STEP  # noqa: E402

from .flower_harness import InMemoryGrid  # noqa: E402
from .ledger_rewrite import ledger_rows, rewrite_ledger, spend_rows  # noqa: E402
from .inmemory_consortium import RUN, SITES, cli_verify, consortium, federate, ledger_run_id  # noqa: E402


class _WithholdingGrid(InMemoryGrid):
    """Delivers each node only its first anchor (round 0); every later anchor is stripped."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: set = set()

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            records = m.content.config_records
            if ANCHOR_RECORD in records:
                node = m.metadata.dst_node_id
                if node in self.seen:
                    del records[ANCHOR_RECORD]
                else:
                    self.seen.add(node)
        return super().send_and_receive(messages, timeout=timeout)


def test_withheld_last_anchor_then_truncated_round_is_caught(tmp_path, capsys):
    registry, states, nodes = consortium(tmp_path)
    run_dir = tmp_path / "run"
    summary = federate(_WithholdingGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, registry=str(registry))
    assert summary["rounds_completed"] == 2
    run_id = ledger_run_id(run_dir)
    anchors = [states[s] / ANCHORS_DIR / run_id for s in states]
    # Each node anchored its round-1 entry itself when it was asked to unmask round 1.
    rows = ledger_rows(run_dir)
    last_spend = max(i for i, (kind, _) in enumerate(rows) if kind == "spend") + 1
    assert max(json.loads((a / "ledger.anchor.json").read_text())["seq"] for a in anchors) >= last_spend
    round_ends = [i for i, (kind, _) in enumerate(rows) if kind == "round"]
    rewrite_ledger(run_dir, rows[: round_ends[-2] + 1])  # round 1 (released, unmasked, applied) deleted
    code, out, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", *anchors)
    assert code == 1, "the coordinator under-reported round 1 and verify said OK"
    assert "the ledger was truncated" in err and "ledger BROKEN at entry" in err


def test_a_coordinator_that_records_no_spend_for_a_site_cannot_decode_it(tmp_path, capsys, monkeypatch):
    """The coordinator records no spend for site-1 in round 1 and never asks it to sign. Before, the other
    two sites revealed site-1's self-mask shares (threshold 2 of 3) and its update was decoded uncharged.
    Now each of them is shown round 1's committed spends with the unmask request, finds no spend of the
    survivor site-1 and reveals nothing; site-1 refuses too (it signed nothing): the round aborts with no
    unmask share revealed, nothing of round 1 is decoded, and verify names the uncharged release."""
    honest_call = rounds.ReleaseCommitter.__call__

    def omit_site_1_in_round_1(self, released_ids):
        if self.plan.round_index != 1:
            return honest_call(self, released_ids)
        honest_call(self, frozenset(i for i in released_ids if self.ctx.site_of(i) != "site-1"))
        self.released_sites = sorted(self.ctx.site_of(i) for i in released_ids)  # hide it from its own check

    monkeypatch.setattr(rounds.ReleaseCommitter, "__call__", omit_site_1_in_round_1)
    registry, states, nodes = consortium(tmp_path)
    run_dir = tmp_path / "run"
    summary = federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, registry=str(registry))
    capsys.readouterr()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["rounds_completed"] == 1 and metrics[1]["status"] == "aborted"
    assert metrics[1]["included"] == [] and metrics[1]["survivors_per_stage"]["unmask"] == []  # no share left a node
    refusals = metrics[1]["refusals"]
    assert "unmasks round 1 only after it signed its spend" in refusals["site-1"]
    for site in ("site-2", "site-3"):
        assert "holds no spend of survivor site 'site-1' in round 1" in refusals[site], refusals
    run_id = ledger_run_id(run_dir)
    for site in SITES:  # nobody anchored round 1, nobody was a survivor of it
        released = json.loads((states[site] / ANCHORS_DIR / run_id / "released.json").read_text())
        assert released["rounds"] == {"0": "survivor", "1": "released"}
    spends = [entry_site_and_round(kind, body) for kind, body in ledger_rows(run_dir) if kind == "spend"]
    assert set(spends) == {(s, r) for s in SITES for r in (0, 1)} - {("site-1", 1)}
    anchors = [states[s] / ANCHORS_DIR / run_id for s in SITES]
    code, out, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", *anchors)
    assert code == 0, err  # every recorded entry is intact: the omission is a warning, not a broken chain
    assert ("site 'site-1' released a masked update in round 1" in out
            and "charges it no spend for that round" in out), out


def _last_round_chain(grid_messages):
    """The ROUND_CHAIN_RECORD of each unmask request in ``grid_messages`` (dst node -> record)."""
    return {m.metadata.dst_node_id: m.content.config_records[ROUND_CHAIN_RECORD] for m in grid_messages
            if m.metadata.message_type == STEP and ROUND_CHAIN_RECORD in m.content.config_records}


class _ChainTamperingGrid(InMemoryGrid):
    """Applies ``tamper(record)`` to the committed spends attached to every unmask request."""

    def __init__(self, *args, tamper, **kwargs):
        super().__init__(*args, **kwargs)
        self.tamper, self.tampered = tamper, 0

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for record in _last_round_chain(messages).values():
            self.tamper(record)
            self.tampered += 1
        return super().send_and_receive(messages, timeout=timeout)


def _alter_first(record):
    bodies = list(record["bodies"])
    body = json.loads(bodies[0])
    body["cumulative"]["epsilon"] = {k: (v or 0.0) / 2 for k, v in body["cumulative"]["epsilon"].items()}
    bodies[0] = json.dumps(body)
    record["bodies"] = bodies


def _fork_second(record):
    prevs = list(record["prev-hashes"])
    prevs[1] = hashlib.sha256(b"another history").hexdigest()
    record["prev-hashes"] = prevs


def _rehash_without_first(record):
    """A consistent chain without site-1's spend: every later entry moved up and rehashed (a real fork)."""
    chain = [ChainEntry(q, p, k, json.loads(b)) for q, p, k, b in
             zip(record["seqs"], record["prev-hashes"], record["kinds"], record["bodies"])]
    prev, seq, rebuilt = chain[0].prev_hash, chain[0].seq, []
    for entry in chain[1:]:
        rebuilt.append(ChainEntry(seq, prev, entry.kind, entry.body))
        prev, seq = rebuilt[-1].digest(), seq + 1
    record["seqs"], record["prev-hashes"] = [e.seq for e in rebuilt], [e.prev_hash for e in rebuilt]
    record["kinds"], record["bodies"] = [e.kind for e in rebuilt], [json.dumps(dict(e.body)) for e in rebuilt]


@pytest.mark.parametrize("tamper, reason", [
    (_alter_first, "does not link to entry"),
    (_fork_second, "does not link to entry"),
    (_rehash_without_first, "is not the entry this site signed"),
])
def test_a_node_refuses_to_unmask_against_an_altered_or_forked_chain(tmp_path, tamper, reason):
    registry, states, nodes = consortium(tmp_path)
    run_dir = tmp_path / "run"
    grid = _ChainTamperingGrid(client_app.app, nodes, DEFAULTS | RUN, tamper=tamper)
    summary = federate(grid, run_dir, rounds=1, registry=str(registry))
    assert grid.tampered == 3
    record = json.loads((run_dir / "metrics.jsonl").read_text())
    assert summary["rounds_completed"] == 0 and record["status"] == "aborted"
    assert record["survivors_per_stage"]["unmask"] == []  # not one share revealed
    assert set(record["refusals"]) == set(SITES) and all("LedgerError" in r for r in record["refusals"].values())
    assert reason in record["refusals"]["site-2"], record["refusals"]
    own = {body["event"]["site"]: seq for seq, body in spend_rows(ledger_rows(run_dir))}
    for site in SITES:  # nobody anchored the chain it refused: only its own entry, delivered at the end
        anchor = json.loads((states[site] / ANCHORS_DIR / ledger_run_id(run_dir) / "ledger.anchor.json").read_text())
        assert anchor["seq"] == own[site]


def _forge_last_signature(record):
    """Site-3's spend (the last entry) re-signed with a key the consortium never registered."""
    from secagg.crypto import SigningKeyPair, sign

    bodies = list(record["bodies"])
    body = json.loads(bodies[-1])
    entry = ChainEntry(record["seqs"][-1], record["prev-hashes"][-1], record["kinds"][-1], body)
    body["signature"] = sign(SigningKeyPair.generate().seed, entry.statement(str(record["run-id"])).message()).hex()
    bodies[-1] = json.dumps(body)
    record["bodies"] = bodies


def test_with_a_registry_at_the_nodes_a_forged_signature_in_the_chain_is_refused(tmp_path):
    from simulation.federation.identity import add_to_registry, write_identity

    registry, states, nodes = consortium(tmp_path)
    keys = {site: write_identity(tmp_path / "keys", site) for site in SITES}
    registry.unlink()
    for site, identity in keys.items():
        add_to_registry(registry, identity)
    for node in nodes.values():  # active mode: each node signs with its key and holds the registry
        node |= {"signing-key": str(keys[node["site"]].signing_key_path), "registry": str(registry)}
    run_dir = tmp_path / "run"
    grid = _ChainTamperingGrid(client_app.app, nodes, DEFAULTS | RUN, tamper=_forge_last_signature)
    summary = federate(grid, run_dir, rounds=1, active=True, registry=str(registry))
    record = json.loads((run_dir / "metrics.jsonl").read_text())
    assert grid.tampered == 3 and summary["rounds_completed"] == 0 and record["status"] == "aborted"
    assert record["survivors_per_stage"]["unmask"] == []
    for site in SITES:  # the chain links (only the last entry changed): the signature is what fails
        assert "(spend, site 'site-3'): the signature of site 'site-3' does not verify" in record["refusals"][site]


def test_without_a_registry_at_the_nodes_a_forged_signature_is_anchored_and_fails_the_audit(tmp_path, capsys):
    """The residual of passive mode: nodes without a registry cannot check the signatures they are shown.
    Sites 1 and 2 anchor the chain with the forged entry (threshold 2 of 3, so the round completes); the
    ledger holds the genuine entry, and verify with the registry and their anchors fails."""
    registry, states, nodes = consortium(tmp_path)
    run_dir = tmp_path / "run"
    grid = _ChainTamperingGrid(client_app.app, nodes, DEFAULTS | RUN, tamper=_forge_last_signature)
    summary = federate(grid, run_dir, rounds=1, registry=str(registry))
    record = json.loads((run_dir / "metrics.jsonl").read_text())
    assert summary["rounds_completed"] == 1 and record["survivors_per_stage"]["unmask"] == ["site-1", "site-2"]
    run_id = ledger_run_id(run_dir)
    anchors = [states[s] / ANCHORS_DIR / run_id for s in ("site-1", "site-2")]
    code, _, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", *anchors)
    assert code == 1 and "is not the entry site 'site-1' countersigned" in err, err
    # Had the coordinator written the forged entry into its ledger instead, its signature would fail.
    ledger = PrivacyLedger.open(run_dir)
    try:
        entries = ledger.entries()
    finally:
        ledger.close()
    last = entries[-2]  # site-3's spend, right before the round entry
    assert (last.kind, last.body["event"]["site"]) == ("spend", "site-3")
    forged = {"seqs": [last.seq], "prev-hashes": [last.prev_hash], "kinds": [last.kind],
              "bodies": [json.dumps(last.body)], "run-id": run_id}
    _forge_last_signature(forged)
    rows = ledger_rows(run_dir)
    rows[-2] = ("spend", json.loads(forged["bodies"][0]))
    rewrite_ledger(run_dir, rows)
    code, _, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", *anchors)
    assert code == 1 and "signature of site 'site-3' does not verify" in err, err


class _CallItDropped(InMemoryGrid):
    """Rewrites site-1's unmask request so that it lists site-1 itself as dropped."""

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            record = m.content.config_records.get("secagg")
            if m.metadata.dst_node_id != 100 or m.metadata.message_type != STEP or record is None:
                continue
            request = wire.decode(bytes(record["wire"]))
            if isinstance(request, UnmaskRequest):
                moved = dataclasses.replace(request, survivors=request.survivors - {request.recipient},
                                            dropped=request.dropped | {request.recipient})
                record["wire"] = wire.encode(moved)
        return super().send_and_receive(messages, timeout=timeout)


def test_calling_a_released_update_a_dropout_does_not_erase_its_release_record(tmp_path):
    registry, states, nodes = consortium(tmp_path)
    run_dir = tmp_path / "run"
    federate(_CallItDropped(client_app.app, nodes, DEFAULTS | RUN), run_dir, rounds=1, registry=str(registry))
    record = json.loads((run_dir / "metrics.jsonl").read_text())
    assert "listed as dropped" in record["refusals"]["site-1"]
    released = json.loads((states["site-1"] / ANCHORS_DIR / ledger_run_id(run_dir) / "released.json").read_text())
    assert released["rounds"] == {"0": "released"}  # still evidence that its update left it


def test_a_damaged_anchor_file_is_a_broken_ledger_not_a_usage_error(tmp_path, capsys):
    registry, states, nodes = consortium(tmp_path)
    run_dir = tmp_path / "run"
    federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, registry=str(registry))
    folder = states["site-2"] / ANCHORS_DIR / ledger_run_id(run_dir)
    (folder / "ledger.anchor.json").write_text("{not json")
    code, _, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", folder)
    assert code == 1 and "ledger BROKEN" in err and "ledger.anchor.json does not parse" in err
    # An anchor signed by the wrong site is named as that anchor, not as "the head record".
    other = states["site-3"] / ANCHORS_DIR / ledger_run_id(run_dir) / "ledger.anchor.json"
    forged = json.loads(other.read_text()) | {"site": "site-2"}
    (folder / "ledger.anchor.json").write_text(json.dumps(forged))
    code, _, err = cli_verify(capsys, run_dir, "--registry", registry, "--anchors", folder)
    assert code == 1 and "BROKEN at the anchor of site 'site-2'" in err, err


class _SwapNames(InMemoryGrid):
    """Tells site-3's node that client 1 is site-2 and client 2 is site-1 (the client-id -> site map)."""

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            if m.metadata.dst_node_id == 102 and m.metadata.message_type == "train":
                record = m.content.config_records["session"]
                names = list(record["site-names"])
                names[0], names[1] = names[1], names[0]
                record["site-names"] = names
        return super().send_and_receive(messages, timeout=timeout)


@pytest.mark.parametrize("active", [True, False])
def test_the_client_to_site_map_is_checked_against_the_registry_in_active_mode_only(tmp_path, active):
    """What the passive-mode residual rests on: a node without a registry takes the coordinator's map."""
    from simulation.federation.identity import add_to_registry, write_identity

    registry, states, nodes = consortium(tmp_path)
    if active:
        keys = {site: write_identity(tmp_path / "keys", site) for site in SITES}
        registry.unlink()
        for site, identity in keys.items():
            add_to_registry(registry, identity)
        for node in nodes.values():
            node |= {"signing-key": str(keys[node["site"]].signing_key_path), "registry": str(registry)}
    run_dir = tmp_path / "run"
    federate(_SwapNames(client_app.app, nodes, DEFAULTS | RUN), run_dir, rounds=1, active=active,
              registry=str(registry))
    record = json.loads((run_dir / "metrics.jsonl").read_text())
    if active:
        assert "verify key of site 'site-2' (client 1) differs from the registry's" in record["refusals"]["site-3"]
        assert record["included"] == ["site-1", "site-2"]
    else:  # the lie goes unnoticed: the same sites are charged, so every chain check passes
        assert record["refusals"] == {} and record["included"] == list(SITES)
