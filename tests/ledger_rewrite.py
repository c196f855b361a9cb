"""An attacker's tools against a privacy ledger: sqlite3 and the public chain formula (test helper).

Whoever controls a ledger's directory can replace every entry, recompute every cumulative epsilon,
rehash the whole chain and rewrite the head record. The tamper tests use these to play that
attacker; verification must still catch what the site signatures and anchors protect.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from dp import PrivacyEvent, compute_epsilon
from dp.ledger import HEAD_FILE, LEDGER_FILE, canonical_json
from dp.ledger_format import chain_hash, genesis_hash

__all__ = ["ledger_rows", "rewrite_ledger", "recompute_epsilons", "spend_rows"]


def ledger_rows(directory) -> list[tuple[str, dict]]:
    """Every entry as (kind, body), in order."""
    conn = sqlite3.connect(Path(directory) / LEDGER_FILE, isolation_level=None)
    try:
        return [(k, json.loads(b)) for k, b in conn.execute("SELECT kind, body FROM entries ORDER BY seq")]
    finally:
        conn.close()


def rewrite_ledger(directory, rows) -> None:
    """Replace every entry by ``rows`` (kind, body), rehash the whole chain and rewrite the head record."""
    path = Path(directory) / LEDGER_FILE
    conn = sqlite3.connect(path, isolation_level=None)
    run_id = rows[0][1]["run_id"]
    conn.execute("DROP TRIGGER IF EXISTS entries_no_update")
    conn.execute("DROP TRIGGER IF EXISTS entries_no_delete")
    conn.execute("BEGIN")
    conn.execute("DELETE FROM entries")
    prev = genesis_hash(run_id)
    for seq, (kind, body) in enumerate(rows, start=1):
        text = canonical_json(body)
        digest = chain_hash(prev, kind, text)
        conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", (seq, kind, text, prev, digest))
        prev = digest
    conn.execute("COMMIT")
    conn.close()
    (Path(directory) / HEAD_FILE).write_text(json.dumps({"run_id": run_id, "entries": len(rows), "head": prev}))


def recompute_epsilons(rows):
    """Every stored cumulative epsilon re-derived from the (edited) events, as an attacker would."""
    meta = rows[0][1]
    history = {}
    for kind, body in rows:
        if kind == "spend":
            event = PrivacyEvent.from_dict(body["event"])
            history.setdefault(event.site, []).append(event)
            body["cumulative"] = compute_epsilon(history[event.site], meta["delta"],
                                                 accountants=meta["accountants"]).to_dict()
    return rows


def spend_rows(rows) -> list[tuple[int, dict]]:
    """(seq, body) of every spend entry."""
    return [(seq, body) for seq, (kind, body) in enumerate(rows, start=1) if kind == "spend"]
