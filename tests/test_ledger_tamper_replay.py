"""More rewrites of a signed ledger (issue 15 review): duplicates, a site's own signature replayed
from another round, an anchor of another run. Reuses test_ledger_tamper's real tiny run."""

from __future__ import annotations

import pytest

from dp.ledger_signatures import ANCHOR_FILE, LedgerSigner
from simulation.federation.identity import load_signing_key

from .ledger_rewrite import ledger_rows, rewrite_ledger, spend_rows
from .test_ledger_tamper import assert_broken, auditor, built, run_dir, verify  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def test_a_duplicated_spend_breaks_the_next_signature(run_dir, auditor, capsys):  # noqa: F811
    rows = ledger_rows(run_dir)
    seq, body = spend_rows(rows)[0]
    rows.insert(seq, (rows[seq - 1][0], dict(body)))  # the same signed entry twice in a row
    rewrite_ledger(run_dir, rows)
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert_broken(code, err, f"entry {seq + 1} (site {body['event']['site']!r}, round 0)", "does not verify")


def test_a_sites_own_signature_from_another_round_does_not_verify(run_dir, auditor, capsys):  # noqa: F811
    rows = ledger_rows(run_dir)
    site = spend_rows(rows)[0][1]["event"]["site"]
    mine = [(seq, body) for seq, body in spend_rows(rows) if body["event"]["site"] == site]
    (_, first), (seq, second) = mine[0], mine[1]
    second["signature"] = first["signature"]  # a valid signature of this site, from round 0
    rewrite_ledger(run_dir, rows)
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert_broken(code, err, f"entry {seq} (site {site!r}, round 1)", f"signature of site {site!r} does not verify")


def test_a_valid_anchor_of_another_run_is_refused(run_dir, auditor, tmp_path, capsys):  # noqa: F811
    site_dir = sorted((run_dir / "sites").iterdir())[0]
    site = site_dir.name
    key = load_signing_key(site_dir / f"{site}.ed25519")
    folder = tmp_path / "other-run" / site
    LedgerSigner(site, key.seed, folder, signed={("other-run", 2): "00" * 32}).record_anchor("other-run", 2, "00" * 32)
    code = verify_with_anchor(run_dir, auditor, folder / ANCHOR_FILE)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert_broken(code, err, f"site {site!r}", "belongs to run 'other-run'")


def verify_with_anchor(run_dir, auditor, anchor):  # noqa: F811
    from simulation.cli import main

    return main(["ledger", "verify", str(run_dir), "--registry", str(auditor / "registry.json"), "--anchors", str(anchor)])


# -- what a site checks of a round's committed spends before it unmasks (dp.round_chain) ---------


def _round_1(run_dir):  # noqa: F811
    from dp import PrivacyLedger, round_chain
    from simulation.federation.identity import load_registry

    ledger = PrivacyLedger.open(run_dir)
    try:
        entries, run_id = ledger.entries(), ledger.run_id
    finally:
        ledger.close()
    chain = round_chain(entries, 1)
    return run_id, chain, load_registry(run_dir / "registry.json")


def _check(chain, run_id, registry, *, own=None, survivors=None, site_level=False, round_index=1):
    from dp import check_round_chain

    sites = sorted({e.site_and_round[0] for e in chain})
    return check_round_chain(chain, run_id=run_id, round_index=round_index,
                             own=({chain[0].seq: chain[0].digest()} if chain else {}) if own is None else own,
                             survivor_sites=sites if survivors is None else survivors, site_level=site_level,
                             registry=registry)


def test_a_rounds_chain_checks_and_gives_its_last_entry(run_dir):  # noqa: F811
    from dp import PrivacyLedger

    run_id, chain, registry = _round_1(run_dir)
    assert [e.kind for e in chain] == ["spend"] * 3 and [e.site_and_round[1] for e in chain] == [1, 1, 1]
    ledger = PrivacyLedger.open(run_dir)
    try:
        entries = ledger.entries()
    finally:
        ledger.close()
    assert _check(chain, run_id, registry) == (chain[-1].seq, entries[chain[-1].seq - 1].hash)


@pytest.mark.parametrize("attack, reason", [
    ("omit a survivor", "holds no spend of survivor site"),
    ("no site-level spend under distributed DP", "holds no site_level_spend of survivor site"),
    ("a spend of another round", "charges round 0, not round 1"),
    ("a site twice", "two survivors are named as one site"),
    ("another run's signatures", "does not verify"),
    ("own entry missing", "omits entry"),
    ("empty", "shows no committed spend"),
])
def test_a_rounds_chain_that_does_not_charge_every_survivor_is_refused(run_dir, attack, reason):  # noqa: F811
    from dp import ChainEntry, LedgerError

    run_id, chain, registry = _round_1(run_dir)
    sites = [e.site_and_round[0] for e in chain]
    kwargs = {}
    if attack == "omit a survivor":
        chain = chain[:-1]
        kwargs["survivors"] = sites
    elif attack == "no site-level spend under distributed DP":
        kwargs["site_level"] = True
    elif attack == "a spend of another round":
        kwargs["round_index"], kwargs["own"] = 1, {}
        body = dict(chain[0].body)
        body["event"] = dict(body["event"], round=0)
        chain = [ChainEntry(chain[0].seq, chain[0].prev_hash, chain[0].kind, body)]
        kwargs["survivors"] = sites[:1]
        registry = None
    elif attack == "a site twice":
        kwargs["survivors"] = sites + sites[:1]
    elif attack == "another run's signatures":
        run_id = "another-run"
    elif attack == "own entry missing":
        kwargs["own"] = {chain[0].seq - 1: "00" * 32}
    elif attack == "empty":
        chain = []
    with pytest.raises(LedgerError, match=reason):
        _check(chain, run_id, registry, **kwargs)


def test_a_site_anchors_a_chain_only_from_an_entry_it_signed_and_only_linked(run_dir, tmp_path):  # noqa: F811
    from dp import ChainEntry, LedgerError

    run_id, chain, _ = _round_1(run_dir)
    first = chain[0]
    site = first.site_and_round[0]
    key = load_signing_key(run_dir / "sites" / site / f"{site}.ed25519")
    signer = LedgerSigner(site, key.seed, tmp_path / site, signed={(run_id, first.seq): first.digest()})
    with pytest.raises(LedgerError, match="signed no entry of the chain"):
        signer.record_chain_anchor(run_id, chain[1:])
    broken = chain[:2] + [ChainEntry(chain[2].seq, "00" * 32, chain[2].kind, chain[2].body)]
    with pytest.raises(LedgerError, match="does not link"):
        signer.record_chain_anchor(run_id, broken)
    assert not signer.anchor_path.exists()
    anchor = signer.record_chain_anchor(run_id, chain)
    assert (anchor.seq, anchor.hash) == (chain[-1].seq, chain[-1].digest())
    # The simulation's rule is unchanged: record_anchor still takes only an entry the signer signed.
    with pytest.raises(LedgerError, match="anchors only what it signed"):
        signer.record_anchor(run_id, chain[-1].seq, chain[-1].digest())


def test_a_chain_entrys_digest_is_the_ledgers_own_hash(run_dir):  # noqa: F811
    """A site computes each entry's hash itself (its anchor, its own signed hashes): it must be the ledger's.

    With the kind inside the hash (schema v3), a digest without it made every honest node refuse to
    unmask over Flower ("entry 2 does not parse"): found by tests/test_flower_crash.py.
    """
    from dp import PrivacyLedger

    _, chain, _ = _round_1(run_dir)
    ledger = PrivacyLedger.open(run_dir)
    try:
        stored = {e.seq: e.hash for e in ledger.entries()}
    finally:
        ledger.close()
    assert chain and all(entry.digest() == stored[entry.seq] for entry in chain)
