"""The ledger tamper suite (issue 15): every rewrite a coordinator could try, against a real run's signed ledger.

The ledger is written by the project's own writer - one ``secagg simulate --tiny`` run (each site
signs its spends and anchors the head in its own folder ``RUN_DIR/sites/SITE``). Right after the
run the auditor keeps copies of the registry and of the sites' anchors *outside* the run directory;
then each test plays a coordinator that rewrites the run directory with sqlite3 and the public chain
formula (recomputing every hash, every epsilon and the head record), and checks through the CLI that
``secagg ledger verify`` exits 1 with one line naming the entry - never a traceback.
"""

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dp.ledger import HEAD_FILE, LEDGER_FILE
from dp.ledger_format import chain_hash
from simulation.cli import main

from .ledger_rewrite import ledger_rows, recompute_epsilons, rewrite_ledger, spend_rows

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # one real `secagg simulate --tiny` run for the module


@pytest.fixture(scope="module")
def built(shared_ledger_run):
    """One real run (``secagg simulate --tiny --sites 3 --rounds 3 --local-steps 2 --baselines none``), and the
    auditor's copies of its registry and anchors taken right after it: built once per session for this file and
    test_ledger_tamper_replay (conftest.shared_ledger_run, tests/shared_runs.py). Pristine: tests use copies."""
    assert shared_ledger_run.returncode == 0, shared_ledger_run.stderr[-2000:]
    run, auditor = shared_ledger_run.run, shared_ledger_run.folder / "auditor"
    assert not (run / (LEDGER_FILE + "-wal")).exists() or (run / (LEDGER_FILE + "-wal")).stat().st_size == 0
    return run, auditor


@pytest.fixture
def run_dir(built, tmp_path):
    run, _ = built
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.fixture
def auditor(built):
    return built[1]


def verify(run_dir, auditor=None, *, anchors=True, capsys):
    args = ["ledger", "verify", str(run_dir)]
    if auditor is not None:
        args += ["--registry", str(auditor / "registry.json")]
        if anchors:
            args += ["--anchors", str(auditor / "anchors")]
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def assert_broken(code, err, *needles):
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- an attacker's tools: sqlite3 and the public chain formula ----------------------------------


_rows = ledger_rows
_rewrite = rewrite_ledger
_recompute_epsilons = recompute_epsilons
_spends = spend_rows


# -- the intact run --------------------------------------------------------------------------


def test_intact_run_verifies_with_signatures_and_anchors(run_dir, auditor, capsys):
    code, out, err = verify(run_dir, auditor, capsys=capsys)
    assert code == 0, err
    spends = len([1 for kind, _ in _rows(run_dir) if kind == "spend"])
    assert spends == 9 and f"{spends} site signatures verified" in out and "3 site anchors matched" in out
    assert "privacy unit: one patient (add/remove one patient)" in out
    # The simulation keeps the site keys in the run directory: verify must not let signatures overclaim.
    assert "site signing key(s) are inside the run directory" in out and "prove nothing against its owner" in out
    assert "anchors lie inside the run directory" not in out  # the auditor's anchors were copied out
    code, out, err = main(["ledger", "verify", str(run_dir), "--registry", str(auditor / "registry.json"),
                           "--anchors", str(run_dir / "sites")]), *capsys.readouterr()
    assert code == 0 and "anchors lie inside the run directory" in out, err


def test_default_registry_is_the_run_directorys_and_says_so(run_dir, capsys):
    code, out, _ = verify(run_dir, capsys=capsys)
    assert code == 0
    assert f"registry: {run_dir / 'registry.json'}" in out and "only as trustworthy as the directory" in out
    assert "no site anchors" in out
    assert "checked against the registry copy inside the run directory" in out  # a warning, not only a note


def test_each_site_keeps_its_key_and_anchor_private(run_dir):
    registry = json.loads((run_dir / "registry.json").read_text())
    assert sorted(registry) == ["site-1", "site-2", "site-3"]
    for site in registry:
        folder = run_dir / "sites" / site
        assert folder.stat().st_mode & 0o777 == 0o700
        for name in (f"{site}.ed25519", "ledger.anchor.json"):
            assert (folder / name).stat().st_mode & 0o777 == 0o600
        anchor = json.loads((folder / "ledger.anchor.json").read_text())
        assert anchor["site"] == site and anchor["seq"] > 1


# -- the rewrites of the issue ---------------------------------------------------------------


def test_deleting_the_last_round_with_rehash_and_new_head(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    round_ends = [i for i, (kind, _) in enumerate(rows) if kind == "round"]
    kept = rows[: round_ends[-2] + 1]
    _rewrite(run_dir, kept)
    # Without the sites' anchors this is NOT caught: the kept entries keep valid signatures and the
    # head record was rewritten (the module docstring says so).
    code, out, _ = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert code == 0 and "no site anchors" in out
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, "truncated", f"ends at entry {len(kept)}", "site 'site-")


def test_lower_steps_raise_sigma_with_epsilons_recomputed(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    seq, body = _spends(rows)[3]  # round 1, the first site
    body["event"]["steps"] = 1
    body["event"]["noise_multiplier"] = body["event"]["noise_multiplier"] * 4
    _rewrite(run_dir, _recompute_epsilons(rows))
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    site = body["event"]["site"]
    assert_broken(code, err, f"entry {seq} (site {site!r}, round 1)", "signature", "does not verify")


def test_raising_the_budget(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    rows[0][1]["budgets"] = {site: 1000.0 for site in rows[0][1]["budgets"]}
    _rewrite(run_dir, rows)
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    first_seq, first = _spends(rows)[0]
    # Caught at the first signed spend: its signed previous hash chains back to the genesis entry.
    assert_broken(code, err, f"entry {first_seq} (site {first['event']['site']!r}, round 0)", "signature")


def test_flipping_a_byte_in_the_file(run_dir, auditor, capsys):
    conn = sqlite3.connect(run_dir / LEDGER_FILE)
    seq, body = conn.execute("SELECT seq, body FROM entries WHERE kind='spend' ORDER BY seq DESC LIMIT 1").fetchone()
    conn.close()
    data = bytearray((run_dir / LEDGER_FILE).read_bytes())
    at = data.find(body.encode())
    assert at >= 0 and data.find(body.encode(), at + 1) < 0
    marker = data.find(b'"steps":', at) + len(b'"steps":')
    data[marker] = ord("9") if data[marker] != ord("9") else ord("8")
    (run_dir / LEDGER_FILE).write_bytes(bytes(data))
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    event = json.loads(body)["event"]
    assert_broken(code, err, f"entry {seq} (site {event['site']!r}, round {event['round']})", "altered")


def test_reordering_entries(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    (a, _), (b, _) = _spends(rows)[:2]
    swapped = list(rows)
    swapped[a - 1], swapped[b - 1] = rows[b - 1], rows[a - 1]
    _rewrite(run_dir, swapped)  # rehashed: the chain itself is consistent again
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert_broken(code, err, f"entry {a} (site {rows[b - 1][1]['event']['site']!r}, round 0)", "signature")


def test_another_sites_signature(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    spends = _spends(rows)
    (seq, victim), (_, other) = spends[0], spends[1]
    assert victim["event"]["site"] != other["event"]["site"]
    victim["signature"] = other["signature"]
    _rewrite(run_dir, rows)
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert_broken(code, err, f"entry {seq} (site {victim['event']['site']!r}, round 0)",
                  f"signature of site {victim['event']['site']!r} does not verify")


def test_unsigned_spend_is_refused_with_a_registry(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    seq, body = _spends(rows)[-1]
    del body["signature"]
    _rewrite(run_dir, rows)
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert_broken(code, err, f"entry {seq} (site", "carries no signature")


def test_anchor_forged_by_the_coordinator(run_dir, auditor, tmp_path, capsys):
    rows = _rows(run_dir)
    round_ends = [i for i, (kind, _) in enumerate(rows) if kind == "round"]
    _rewrite(run_dir, rows[: round_ends[-2] + 1])
    forged = tmp_path / "forged"
    shutil.copytree(auditor / "anchors", forged)
    for path in forged.glob("*/ledger.anchor.json"):
        anchor = json.loads(path.read_text())
        anchor["seq"] = 2
        path.write_text(json.dumps(anchor))
    code = main(["ledger", "verify", str(run_dir), "--registry", str(auditor / "registry.json"),
                 "--anchors", str(forged)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert_broken(code, err, "does not carry site", "signature")


# -- corruptions: a typed one-line error naming the entry ------------------------------------------


def test_invalid_json_in_an_entry(run_dir, auditor, capsys):
    conn = sqlite3.connect(run_dir / LEDGER_FILE, isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_update")
    seq, prev = conn.execute("SELECT seq, prev_hash FROM entries WHERE kind='spend' ORDER BY seq LIMIT 1").fetchone()
    text = '{"event": {"site": "site-1"'
    conn.execute("UPDATE entries SET body = ?, hash = ? WHERE seq = ?", (text, chain_hash(prev, "spend", text), seq))
    conn.close()
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, f"entry {seq}", "not valid JSON")
    code = main(["ledger", "show", str(run_dir), "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert_broken(code, err, f"entry {seq}", "not valid JSON")


def test_missing_key_in_an_entry(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    seq, body = _spends(rows)[2]
    del body["cumulative"]
    _rewrite(run_dir, rows)
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, f"entry {seq} (site {body['event']['site']!r}, round 0)", "missing the key",
                  "cumulative")
    rows = _rows(run_dir)
    del rows[seq - 1][1]["event"]["steps"]
    _rewrite(run_dir, rows)
    code = main(["ledger", "show", str(run_dir)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert_broken(code, err, f"entry {seq}", "steps")


def test_damaged_last_page(run_dir, auditor, capsys):
    path = run_dir / LEDGER_FILE
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    data[-page:] = b"\xa5" * page  # the last page (the newest entries) overwritten
    path.write_bytes(bytes(data))
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, "entry ", "damaged")


def test_truncated_file(run_dir, auditor, capsys):
    path = run_dir / LEDGER_FILE
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - page - page // 2])
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, "entry ")


def test_missing_ledger_file(run_dir, auditor, capsys):
    (run_dir / LEDGER_FILE).unlink()
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, "no privacy ledger", LEDGER_FILE)


def test_other_schema_version(run_dir, auditor, capsys):
    conn = sqlite3.connect(run_dir / LEDGER_FILE, isolation_level=None)
    conn.execute("UPDATE meta SET value = 'secagg-ledger-v1' WHERE key = 'schema'")
    conn.close()
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, "'secagg-ledger-v1'", "'secagg-ledger-v3'")


def test_head_record_that_does_not_parse(run_dir, auditor, capsys):
    (run_dir / HEAD_FILE).write_text('{"entries": ')
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, "the head record", "does not parse")


def test_cli_in_a_subprocess_has_no_traceback(run_dir, auditor):
    rows = _rows(run_dir)
    rows[0][1]["budgets"] = {site: 1000.0 for site in rows[0][1]["budgets"]}
    _rewrite(run_dir, rows)
    result = subprocess.run([sys.executable, "-m", "simulation.cli", "ledger", "verify", str(run_dir),
                             "--registry", str(auditor / "registry.json"), "--anchors", str(auditor / "anchors")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "ledger BROKEN at entry 2" in result.stderr


# -- the attack review of issue 15, second round (/work/notes/attack15b): the kind column, damage ------


def _relabel(run_dir, where: str, kind: str = "genesis") -> list[int]:
    """Change the ``kind`` column of some rows with one SQL UPDATE: no rehash, no key, head untouched."""
    conn = sqlite3.connect(run_dir / LEDGER_FILE, isolation_level=None)
    try:
        seqs = [s for (s,) in conn.execute(f"SELECT seq FROM entries WHERE {where} ORDER BY seq")]
        conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
        conn.execute(f"UPDATE entries SET kind=? WHERE {where}", (kind,))
    finally:
        conn.close()
    return seqs


@pytest.mark.parametrize("kind", ["genesis", "round", "note"])
def test_relabelling_every_spend_is_caught_at_the_first(run_dir, auditor, capsys, kind):
    """Schema v2 kept the kind outside the hash: this hid every spend from verify, show and the budget."""
    seqs = _relabel(run_dir, "kind='spend'", kind)
    assert len(seqs) == 9
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, f"entry {seqs[0]}")
    from dp import LedgerIntegrityError, PrivacyLedger

    with pytest.raises(LedgerIntegrityError, match=f"entry {seqs[0]} breaks the ledger's hash chain"):
        PrivacyLedger.open(run_dir)  # so a resume never takes its budget back from a relabelled ledger


def test_relabelling_the_last_rounds_spends_is_caught(run_dir, auditor, capsys):
    last = max(seq for seq, (kind, _) in enumerate(_rows(run_dir), start=1) if kind == "spend")
    seqs = _relabel(run_dir, f"kind='spend' AND seq > {last - 3}", "round")
    assert len(seqs) == 3
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, f"entry {seqs[0]}")


def test_relabelled_spends_with_the_chain_rehashed_are_caught_without_anchors(run_dir, auditor, capsys):
    """The public formula (now with the kind) recomputed and the head rewritten: a spend body is not a round record."""
    rows = _rows(run_dir)
    last = max(i for i, (kind, _) in enumerate(rows) if kind == "spend")
    rows[last] = ("round", rows[last][1])
    _rewrite(run_dir, rows)
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert_broken(code, err, f"entry {last + 1} (round record)", "are not a round record's")


def test_a_spend_deleted_with_its_round_record_kept_is_caught_without_anchors(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    last = max(i for i, (kind, _) in enumerate(rows) if kind == "spend")
    del rows[last]
    _rewrite(run_dir, rows)
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert_broken(code, err, "(round record)", "lists the sites")


def test_a_trailing_round_record_deleted_is_caught_without_anchors(run_dir, auditor, capsys):
    rows = _rows(run_dir)
    assert rows[-1][0] == "round"
    _rewrite(run_dir, rows[:-1])
    code, _, err = verify(run_dir, auditor, anchors=False, capsys=capsys)
    assert_broken(code, err, "no round record closes")


def _rewrite_raw(run_dir, seq_to_edit, edit):
    """Rehash the chain with entry ``seq_to_edit``'s raw body text replaced by ``edit(text)``; new head."""
    from dp.ledger_format import genesis_hash

    conn = sqlite3.connect(run_dir / LEDGER_FILE, isolation_level=None)
    rows = conn.execute("SELECT seq, kind, body FROM entries ORDER BY seq").fetchall()
    conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
    conn.execute("DROP TRIGGER IF EXISTS entries_no_delete")
    run_id = json.loads(rows[0][2])["run_id"]
    prev = genesis_hash(run_id)
    conn.execute("BEGIN")
    conn.execute("DELETE FROM entries")
    for seq, kind, body in rows:
        if seq == seq_to_edit:
            body = edit(body)
        digest = chain_hash(prev, kind, body)
        conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", (seq, kind, body, prev, digest))
        prev = digest
    conn.execute("COMMIT")
    conn.close()
    (run_dir / HEAD_FILE).write_text(json.dumps({"run_id": run_id, "entries": len(rows), "head": prev}))


@pytest.mark.parametrize("payload", ["NaN", "[" * 100_000 + "]" * 100_000], ids=["nan", "deep"])
def test_a_body_json_reads_but_canonical_json_cannot_is_named(run_dir, auditor, capsys, payload):
    last = len(_rows(run_dir))
    _rewrite_raw(run_dir, last, lambda body: body[:-1] + ',"z":' + payload + "}")
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, f"entry {last}")


def test_an_infinite_entry_count_in_the_head_record_is_named(run_dir, auditor, capsys):
    head = json.loads((run_dir / HEAD_FILE).read_text())
    (run_dir / HEAD_FILE).write_text(json.dumps({**head, "entries": float("inf")}))
    code, _, err = verify(run_dir, auditor, capsys=capsys)
    assert_broken(code, err, "head record")


@pytest.mark.parametrize("key,value", [("accountants", ["bogus"]), ("delta", 5)])
def test_invalid_genesis_parameters_without_a_registry_name_entry_1(run_dir, capsys, key, value):
    rows = _rows(run_dir)
    rows[0][1][key] = value
    _rewrite(run_dir, rows)
    (run_dir / "registry.json").unlink()  # a ledger checked on its own (no registry to hand)
    code, _, err = verify(run_dir, capsys=capsys)
    assert_broken(code, err, "entry 1")


def test_anchors_of_only_some_sites_are_named_in_a_warning(run_dir, auditor, capsys):
    code = main(["ledger", "verify", str(run_dir), "--registry", str(auditor / "registry.json"),
                 "--anchors", str(auditor / "anchors" / "site-1")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "no anchor given for the site(s) site-2, site-3" in out
