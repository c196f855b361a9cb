"""More rewrites of a signed ledger (issue 15 review): duplicates, a site's own signature replayed
from another round, an anchor of another run. Reuses test_ledger_tamper's real tiny run."""

from __future__ import annotations

import pytest

from dp.ledger_signatures import ANCHOR_FILE, LedgerSigner
from simulation.identity import load_signing_key

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
