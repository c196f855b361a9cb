"""The privacy ledger: append-only, hash-chained, in SQLite inside the run directory.

What it proves. Every private release of every site is an entry; entry i
stores ``hash_i = SHA-256(hash_{i-1} || canonical_json(body_i))`` with
``hash_0 = SHA-256("secagg/ledger/v1" || run_id)``. Changing, deleting or
reordering any entry breaks every later hash; dropping the *tail* of the
chain is caught by the head record (entry count and head hash) that the
ledger rewrites atomically into ``ledger.head.json`` after each commit.
:func:`verify_ledger` recomputes the chain, compares it with the head record,
and re-derives every site's epsilon from the recorded events with the same
accountants, so edited epsilons are caught as well.

When spend happens. A site spends privacy when it *releases* an update (its
masked vector reaches the coordinator, whether or not the round later
completes): the coordinator commits the round's spend with
:meth:`PrivacyLedger.commit_round` - one SQLite transaction - before the
round's aggregate is applied to the global model. Budgets are enforced
*before* a site trains: :meth:`PrivacyLedger.check_budget` refuses a round
that would take the site past its budget, and the site sits out.

Durability. WAL journal, ``synchronous=FULL``: a commit that returned
survives a crash or SIGKILL; an interrupted commit leaves no partial round.
Triggers refuse UPDATE and DELETE on entries (a guard against mistakes; a
deliberate edit with another tool is caught by verification instead).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .accounting import DEFAULT_ACCOUNTANTS, EpsilonReport, accountant_version, compute_epsilon
from .errors import BudgetExceededError, InvalidPrivacyParameterError, LedgerError
from .events import PrivacyEvent, validate_delta

__all__ = [
    "LEDGER_FILE",
    "HEAD_FILE",
    "LedgerEntry",
    "BudgetDecision",
    "PrivacyLedger",
    "VerificationReport",
    "verify_ledger",
    "canonical_json",
]

LEDGER_FILE = "ledger.sqlite"
HEAD_FILE = "ledger.head.json"
_SCHEMA_VERSION = "secagg-ledger-v1"
_RELATIVE_TOLERANCE = 1e-6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
"""


def canonical_json(value) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats in repr form."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _genesis_hash(run_id: str) -> str:
    return hashlib.sha256(f"secagg/ledger/v1\x00{run_id}".encode()).hexdigest()


def _chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode()).hexdigest()


def _atomic_write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    kind: str
    body: dict
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class BudgetDecision:
    """Whether a site may spend ``planned`` events without passing its budget."""

    site: str
    allowed: bool
    budget: float
    spent: float | None
    projected: EpsilonReport


@dataclass
class VerificationReport:
    """Outcome of :func:`verify_ledger`."""

    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None
    run_id: str | None = None
    notes: list = field(default_factory=list)
    epsilon: dict = field(default_factory=dict)  # site -> report dict of its final spend
    site_level_epsilon: dict = field(default_factory=dict)  # site -> site-level epsilon (distributed DP)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class PrivacyLedger:
    """Per-run privacy ledger. Create once with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, meta: dict) -> None:
        self.run_dir = Path(run_dir)
        self._conn = conn
        self.run_id: str = meta["run_id"]
        self.delta: float = meta["delta"]
        self.budgets: dict[str, float] = dict(meta["budgets"])
        self.accountants: tuple[str, ...] = tuple(meta["accountants"])
        self.site_level: dict | None = meta.get("site_level")
        self._events: dict[str, list[PrivacyEvent]] = {}
        self._site_level_events: dict[str, list] = {}
        for entry in self.entries():
            if entry.kind == "spend":
                event = PrivacyEvent.from_dict(entry.body["event"])
                self._events.setdefault(event.site, []).append(event)
            elif entry.kind == "site_level_spend":
                self._site_level_events.setdefault(entry.body["site"], []).append(
                    _site_level_event(entry.body["event"]))

    # -- lifecycle ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_dir,
        *,
        run_id: str,
        delta: float,
        budgets: Mapping[str, float],
        accountants: Sequence[str] = DEFAULT_ACCOUNTANTS,
        site_level_budget: float | None = None,
        site_level_delta: float | None = None,
    ) -> "PrivacyLedger":
        """Create the ledger of a new run; refuses to overwrite an existing one.

        ``site_level_budget``/``site_level_delta``: the budget of the *site-level* guarantee of
        the released aggregates when distributed DP is on (:mod:`dp.distributed`); recorded and
        enforced separately from the record-level DP-SGD budgets - the two are never added.
        """
        run_dir = Path(run_dir)
        delta = validate_delta(delta)
        for site, budget in budgets.items():
            if not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
                raise InvalidPrivacyParameterError(f"budget of site {site!r} must be a positive epsilon; got {budget!r}")
        path = run_dir / LEDGER_FILE
        if path.exists():
            raise LedgerError(f"{path} already exists; open it with PrivacyLedger.open or choose a new run directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "schema": _SCHEMA_VERSION,
            "run_id": run_id,
            "delta": delta,
            "budgets": {str(k): float(v) for k, v in budgets.items()},
            "accountants": list(accountants),
            "libraries": {a: accountant_version(a) for a in accountants},
        }
        if site_level_budget is not None:
            meta["site_level"] = {"budget": float(site_level_budget),
                                  "delta": validate_delta(site_level_delta if site_level_delta is not None else delta),
                                  "accountant": "distributed RDP (dp.distributed)"}
        conn = _connect(path)
        try:
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            conn.execute("INSERT INTO meta VALUES ('run_id', ?)", (run_id,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"cannot create the ledger at {path}: {exc}") from None
        ledger = cls(run_dir, conn, meta)
        ledger._append([("genesis", meta)])
        return ledger

    @classmethod
    def open(cls, run_dir) -> "PrivacyLedger":
        """Open an existing ledger; a missing or foreign file raises :class:`LedgerError`."""
        path = Path(run_dir) / LEDGER_FILE
        if not path.is_file():
            raise LedgerError(f"no privacy ledger at {path} (is {run_dir} a run directory?)")
        conn = None
        try:
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=30)
            schema = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            row = conn.execute("SELECT body FROM entries WHERE seq=1 AND kind='genesis'").fetchone()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise LedgerError(f"{path} is not a secagg privacy ledger: {exc}") from None
        if schema is None or schema[0] != _SCHEMA_VERSION or row is None:
            conn.close()
            raise LedgerError(f"{path} is not a {_SCHEMA_VERSION} ledger")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return cls(Path(run_dir), conn, json.loads(row[0]))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "PrivacyLedger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------

    def entries(self) -> list[LedgerEntry]:
        rows = self._conn.execute("SELECT seq, kind, body, prev_hash, hash FROM entries ORDER BY seq").fetchall()
        return [LedgerEntry(s, k, json.loads(b), p, h) for s, k, b, p, h in rows]

    def head(self) -> tuple[int, str]:
        row = self._conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, _genesis_hash(self.run_id)) if row is None else (row[0], row[1])

    def events(self, site: str) -> list[PrivacyEvent]:
        return list(self._events.get(site, []))

    def site_level_spent(self, site: str) -> float | None:
        """Site-level epsilon of the aggregates ``site`` contributed to (distributed DP), or None."""
        events = self._site_level_events.get(site)
        if not events or self.site_level is None:
            return None
        from .distributed import compute_distributed_epsilon

        return compute_distributed_epsilon(events, self.site_level["delta"])

    def check_site_level_budget(self, site: str, planned) -> tuple[bool, float]:
        """Would one more site-level event keep ``site`` within the site-level budget?"""
        from .distributed import compute_distributed_epsilon

        if self.site_level is None:
            raise LedgerError("this run's ledger has no site-level budget (distributed DP is off)")
        epsilon = compute_distributed_epsilon(self._site_level_events.get(site, []) + [planned],
                                              self.site_level["delta"])
        return epsilon <= self.site_level["budget"] * (1 + _RELATIVE_TOLERANCE), epsilon

    def committed_rounds(self) -> set[int]:
        rows = self._conn.execute("SELECT body FROM entries WHERE kind='round'").fetchall()
        return {json.loads(b)["round"] for (b,) in rows}

    def spent(self, site: str) -> EpsilonReport | None:
        events = self._events.get(site)
        if not events:
            return None
        return compute_epsilon(events, self.delta, accountants=self.accountants)

    # -- budgets and commits -------------------------------------------------------

    def check_budget(self, site: str, planned: Iterable[PrivacyEvent]) -> BudgetDecision:
        """Would ``planned`` keep ``site`` within its budget (by the tightest valid bound)?"""
        if site not in self.budgets:
            raise LedgerError(f"site {site!r} has no budget in this run (known: {sorted(self.budgets)})")
        planned = list(planned)
        history = self._events.get(site, [])
        projected = compute_epsilon(history + planned, self.delta, accountants=self.accountants)
        spent = self.spent(site)
        allowed = projected.bound is not None and projected.bound <= self.budgets[site]
        return BudgetDecision(site, allowed, self.budgets[site], spent.bound if spent else None, projected)

    def require_budget(self, site: str, planned: Iterable[PrivacyEvent]) -> BudgetDecision:
        decision = self.check_budget(site, planned)
        if not decision.allowed:
            raise BudgetExceededError(
                f"site {site!r}: this round would raise epsilon to "
                f"{decision.projected.bound if decision.projected.bound is not None else 'unbounded'} "
                f"(delta={self.delta}) past its budget {decision.budget}; the site must sit out"
            )
        return decision

    def commit_round(
        self,
        round_index: int,
        events: Sequence[PrivacyEvent],
        *,
        skipped: Mapping[str, str] | None = None,
        extra: Mapping | None = None,
        site_level: Mapping[str, object] | None = None,
    ) -> None:
        """Record one round's spend (one transaction), then rewrite the head record.

        Each event gets a ``spend`` entry holding the event and the site's
        cumulative epsilon after it (every accountant and the bound); then a
        ``round`` entry closes the round. Refuses a round already committed,
        events of another round, and spends past a budget.
        """
        if round_index in self.committed_rounds():
            raise LedgerError(f"round {round_index} is already committed; refusing to count its spend twice")
        rows: list[tuple[str, dict]] = []
        pending: dict[str, list[PrivacyEvent]] = {s: list(v) for s, v in self._events.items()}
        for event in events:
            if event.round != round_index:
                raise LedgerError(f"event of round {event.round} committed with round {round_index}")
            if event.delta != self.delta:
                raise LedgerError(f"event delta {event.delta} differs from the run's delta {self.delta}")
            if event.site not in self.budgets:
                raise LedgerError(f"site {event.site!r} has no budget in this run")
            pending.setdefault(event.site, []).append(event)
            report = compute_epsilon(pending[event.site], self.delta, accountants=self.accountants)
            if report.bound is None or report.bound > self.budgets[event.site]:
                raise BudgetExceededError(
                    f"site {event.site!r} would reach epsilon {report.bound} past its budget "
                    f"{self.budgets[event.site]}; check_budget must run before training"
                )
            rows.append(("spend", {"event": event.to_dict(), "cumulative": report.to_dict()}))
        pending_site_level = {s: list(v) for s, v in self._site_level_events.items()}
        for site, event in sorted((site_level or {}).items()):
            if self.site_level is None:
                raise LedgerError("site-level events given but the ledger has no site-level budget")
            if event.round != round_index:
                raise LedgerError(f"site-level event of round {event.round} committed with round {round_index}")
            from .distributed import compute_distributed_epsilon

            pending_site_level.setdefault(site, []).append(event)
            epsilon = compute_distributed_epsilon(pending_site_level[site], self.site_level["delta"])
            if epsilon > self.site_level["budget"] * (1 + _RELATIVE_TOLERANCE):
                raise BudgetExceededError(f"site {site!r} would reach site-level epsilon {epsilon:.4f} past "
                                          f"its budget {self.site_level['budget']}")
            rows.append(("site_level_spend", {"site": site, "event": event.to_dict(), "cumulative_epsilon": epsilon,
                                              "delta": self.site_level["delta"]}))
        rows.append(("round", {
            "round": round_index,
            "sites": sorted({e.site for e in events}),
            "skipped": dict(skipped or {}),
            **({"extra": dict(extra)} if extra else {}),
        }))
        self._append(rows)
        self._events = pending
        self._site_level_events = pending_site_level

    def _append(self, rows: list[tuple[str, dict]]) -> None:
        count, prev = self.head()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for kind, body in rows:
                text = canonical_json(body)
                count += 1
                digest = _chain_hash(prev, text)
                self._conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", (count, kind, text, prev, digest))
                prev = digest
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise LedgerError(f"could not write the privacy ledger: {exc}") from None
        _atomic_write_json(self.run_dir / HEAD_FILE, {"run_id": self.run_id, "entries": count, "head": prev})


def _site_level_event(data: dict):
    from .distributed import DistributedDpEvent

    return DistributedDpEvent.from_dict(data)


def _fail(report: VerificationReport, seq: int | None, reason: str) -> VerificationReport:
    report.ok = False
    report.first_broken = seq
    report.reason = reason
    return report


def verify_ledger(run_dir, *, recompute_epsilon: bool = True) -> VerificationReport:
    """Recompute the chain, compare with the head record, and re-derive every epsilon."""
    run_dir = Path(run_dir)
    ledger = PrivacyLedger.open(run_dir)  # raises LedgerError when missing or foreign
    try:
        rows = ledger._conn.execute("SELECT seq, kind, body, prev_hash, hash FROM entries ORDER BY seq").fetchall()
    finally:
        ledger.close()
    report = VerificationReport(ok=True, entries=len(rows), run_id=ledger.run_id)
    prev = _genesis_hash(ledger.run_id)
    events: dict[str, list[PrivacyEvent]] = {}
    site_events: dict[str, list] = {}
    for expected_seq, (seq, kind, body, prev_hash, digest) in enumerate(rows, start=1):
        if seq != expected_seq:
            return _fail(report, expected_seq, f"entry {expected_seq} is missing (found {seq} next)")
        if prev_hash != prev:
            return _fail(report, seq, f"entry {seq} does not link to entry {seq - 1} (reordered or altered)")
        if _chain_hash(prev_hash, body) != digest:
            return _fail(report, seq, f"entry {seq} was altered: its hash does not match its content")
        try:
            parsed = json.loads(body)
        except ValueError:
            return _fail(report, seq, f"entry {seq} is not valid JSON")
        if canonical_json(parsed) != body:
            return _fail(report, seq, f"entry {seq} is not in canonical form")
        if seq == 1 and kind != "genesis":
            return _fail(report, 1, "the first entry is not the genesis entry")
        if kind == "spend" and recompute_epsilon:
            event = PrivacyEvent.from_dict(parsed["event"])
            events.setdefault(event.site, []).append(event)
            recomputed = compute_epsilon(events[event.site], ledger.delta, accountants=ledger.accountants)
            stored = parsed["cumulative"]
            for name, value in recomputed.to_dict()["epsilon"].items():
                old = stored["epsilon"].get(name)
                if (value is None) != (old is None) or (
                    value is not None and not math.isclose(value, old, rel_tol=_RELATIVE_TOLERANCE)
                ):
                    return _fail(
                        report, seq,
                        f"entry {seq}: stored {name} epsilon {old} differs from the recomputed {value}",
                    )
            budget = ledger.budgets.get(event.site)
            if recomputed.bound is None or budget is None or recomputed.bound > budget * (1 + _RELATIVE_TOLERANCE):
                return _fail(report, seq, f"entry {seq}: site {event.site!r} is past its budget {budget}")
            report.epsilon[event.site] = recomputed.to_dict()
        if kind == "site_level_spend" and recompute_epsilon:
            from .distributed import compute_distributed_epsilon

            site = parsed["site"]
            site_events.setdefault(site, []).append(_site_level_event(parsed["event"]))
            if ledger.site_level is None:
                return _fail(report, seq, f"entry {seq}: a site-level spend in a ledger without a site-level budget")
            value = compute_distributed_epsilon(site_events[site], ledger.site_level["delta"])
            if not math.isclose(value, parsed["cumulative_epsilon"], rel_tol=_RELATIVE_TOLERANCE):
                return _fail(report, seq, f"entry {seq}: stored site-level epsilon {parsed['cumulative_epsilon']} "
                             f"differs from the recomputed {value}")
            if value > ledger.site_level["budget"] * (1 + _RELATIVE_TOLERANCE):
                return _fail(report, seq, f"entry {seq}: site {site!r} is past its site-level budget")
            report.site_level_epsilon[site] = value
        prev = digest
    head_path = run_dir / HEAD_FILE
    if not head_path.is_file():
        return _fail(report, None, f"{head_path} is missing: truncation cannot be ruled out")
    try:
        head = json.loads(head_path.read_text())
        head_count, head_hash = int(head["entries"]), str(head["head"])
    except (ValueError, KeyError, TypeError):
        return _fail(report, None, f"{head_path} is unreadable")
    if head.get("run_id") != ledger.run_id:
        return _fail(report, None, f"{head_path} belongs to run {head.get('run_id')!r}, not {ledger.run_id!r}")
    if head_count > len(rows):
        return _fail(report, len(rows) + 1, f"the ledger was truncated: the head record lists {head_count} entries, "
                     f"{len(rows)} remain")
    if head_count == 0 or rows[head_count - 1][4] != head_hash:
        return _fail(report, head_count, f"entry {head_count} does not match the head record's hash")
    if head_count < len(rows):
        report.notes.append(
            f"{len(rows) - head_count} entries after the head record (a crash between the ledger commit and "
            "the head update); they chain correctly"
        )
    return report
