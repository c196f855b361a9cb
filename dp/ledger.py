"""The privacy ledger: append-only, hash-chained, site-signed, in SQLite inside the run directory.

What it records. Every private release of every site is a ``spend`` entry
(and, with distributed DP, a ``site_level_spend`` entry); a ``round`` entry
closes each round; entry 1 (``genesis``) holds the run's parameters: delta,
budgets, accountants, the privacy ``unit`` and the ``adjacency`` of every
epsilon (``"patient"`` and ``"add/remove one patient"`` unless the DP code sets
another unit at :meth:`PrivacyLedger.create`). Entry i stores
``hash_i = SHA-256(hash_{i-1} || canonical_json(body_i))`` (:mod:`dp.ledger_format`).

Who checks what, and why each tamper fails (:func:`verify_ledger`):

* **Every spend is signed by its site** (:mod:`dp.ledger_signatures`): the site's
  Ed25519 signature covers the run id, the entry's sequence number, the previous
  chain hash, the site, the round, the event and the cumulative epsilon. With the
  consortium's registry of verify keys (``registry=``), verification fails at the
  first spend whose signature does not verify. So editing a spend (lower steps,
  higher sigma, even with every epsilon recomputed, the chain rehashed and the
  head rewritten), pasting one site's signature onto another's entry, reordering
  entries, deleting an entry in the middle or editing the genesis entry (raising
  a budget) and rehashing are all caught - the last three at the first signed
  entry after the change, whose signed previous hash no longer matches.
* **The hash chain** catches any edit that is not rehashed (a flipped byte):
  the first entry whose hash or link fails is named.
* **Epsilons are re-derived** from the recorded events with the same accountants;
  a stored cumulative epsilon that differs, or a spend past its budget, is named.
* **Truncation of the tail** (deleting the last round): entries before it keep
  valid signatures, so signatures cannot see it. Each site keeps, in its *own*
  state, a signed anchor of the latest entry it countersigned; given those anchors
  (``anchors=``), a ledger shorter than, or different at, any anchor fails. Without
  anchors the tail is protected only by the head record ``ledger.head.json``
  (entry count and head hash), which sits next to the ledger: whoever controls
  the run directory can delete the last round, rewrite the head and pass. Without
  a registry, nothing stops an edit whose chain and head were recomputed: the
  chain then only catches accidents. :func:`verify_ledger` says which of these
  checks ran.
* **Damage** (invalid JSON in an entry, a missing key, an unreadable SQLite page,
  a missing file, another schema version, a head record that does not parse) is a
  typed :class:`~dp.errors.LedgerError` or a failed report naming the entry -
  never a crash.

When spend happens. A site spends privacy when it *releases* an update (its
masked vector reaches the coordinator, whether or not the round later
completes): the coordinator commits the round's spend with
:meth:`PrivacyLedger.commit_round` - one SQLite transaction, each spend signed by
its site through its :class:`~dp.ledger_signatures.LedgerSigner` - before the
round's aggregate is applied to the global model. Budgets are enforced
*before* a site trains: :meth:`PrivacyLedger.check_budget` refuses a round
that would take the site past its budget, and the site sits out.

Durability. WAL journal, ``synchronous=FULL``: a commit that returned
survives a crash or SIGKILL; an interrupted commit leaves no partial round.
Triggers refuse UPDATE and DELETE on entries (a guard against mistakes; a
deliberate edit with another tool is caught by verification instead).

Schema. ``secagg-ledger-v3`` (signed spends, unit and adjacency, each entry's
kind inside its hash). A ledger of another schema version (v1: unsigned; v2:
kind outside the hash) is refused with a message naming it. Opening a ledger
(:meth:`PrivacyLedger.open`, so also every resume) checks the whole hash chain
first: a ledger whose chain does not hold is never used to decide a budget.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .accounting import (ACCOUNTANTS, DEFAULT_ACCOUNTANTS, EpsilonReport, accountant_version, compute_epsilon,
                         numerical_stack)
from .errors import BudgetExceededError, InvalidPrivacyParameterError, LedgerError, LedgerIntegrityError
from .events import LEGACY_UNIT, PrivacyEvent, validate_delta
from .ledger_format import KINDS, SCHEMA_VERSION, canonical_json, chain_hash, genesis_hash, write_private_atomic
from .ledger_signatures import (SIGNED_KINDS, EntryStatement, SiteAnchor, check_entry_signature,
                                entry_site_and_round)

__all__ = [
    "LEDGER_FILE",
    "HEAD_FILE",
    "LedgerEntry",
    "BudgetDecision",
    "ProjectedSpend",
    "PrivacyLedger",
    "VerificationReport",
    "verify_ledger",
    "canonical_json",
    "adjacency_of",
]

LEDGER_FILE = "ledger.sqlite"
HEAD_FILE = "ledger.head.json"
_SCHEMA_VERSION = SCHEMA_VERSION
_RELATIVE_TOLERANCE = 1e-6
DEFAULT_UNIT = "patient"  # as dp.events.PrivacyEvent; entries written before units existed read as slice

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

# Kept under their historical names: tests and tools that rebuild a chain use them.


def adjacency_of(neighbouring: str, unit: str) -> str:
    """The adjacency in words: ``add_remove_one`` -> ``"add/remove one <unit>"``."""
    return f"{'replace' if neighbouring == 'replace_one' else 'add/remove'} one {unit}"


def _scan_rows(conn: sqlite3.Connection) -> tuple[list[tuple], LedgerIntegrityError | None]:
    """Every readable entry row in order, and the damage that stopped the scan (naming the entry)."""
    rows: list[tuple] = []
    try:
        cursor = conn.execute("SELECT seq, kind, body, prev_hash, hash FROM entries ORDER BY seq")
        while True:
            row = cursor.fetchone()
            if row is None:
                return rows, None
            rows.append(row)
    except sqlite3.Error as exc:
        seq = rows[-1][0] + 1 if rows else 1
        return rows, LedgerIntegrityError(f"entry {seq} cannot be read: the ledger file is damaged ({exc})", seq=seq)


_ROUND_KEYS = {"round", "sites", "skipped", "extra"}


def _round_record_mismatch(body: dict, spends: list[tuple[int, str, int]]) -> str | None:
    """Why a round record does not close ``spends`` (the spends since the previous record), or None.

    :meth:`PrivacyLedger.commit_round` writes a round's spends and then its record, listing the
    sites that spent, in one transaction. So a record whose shape is not a round record's (a
    relabelled spend), whose round differs from its spends', or whose site list differs from the
    sites of the spends just before it, was edited, or spends were removed or added around it.
    """
    if not set(body) <= _ROUND_KEYS or "round" not in body or "sites" not in body:
        return f"its keys {sorted(body)[:6]} are not a round record's ({', '.join(sorted(_ROUND_KEYS))})"
    round_index, sites = body["round"], body["sites"]
    if not isinstance(round_index, int) or isinstance(round_index, bool) or not isinstance(sites, list):
        return "its round or site list is malformed"
    if any(r != round_index for _, _, r in spends):
        return f"it closes round {round_index} but the spends before it are of rounds {sorted({r for *_, r in spends})}"
    spent = sorted({site for _, site, _ in spends})
    if sorted(sites) != spent:
        return f"it lists the sites {sorted(sites)} but the spends of round {round_index} before it charge {spent}"
    return None


def _check_chain(conn: sqlite3.Connection, run_id: str) -> None:
    """Every entry's number, link, kind and hash (cheap: one SHA-256 per entry); raises naming the first bad one."""
    rows, damage = _scan_rows(conn)
    if damage is not None:
        raise damage
    prev = genesis_hash(run_id)
    for expected, (seq, kind, body, prev_hash, digest) in enumerate(rows, start=1):
        if (seq != expected or prev_hash != prev or kind not in KINDS or (seq == 1) != (kind == "genesis")
                or not isinstance(body, str) or not isinstance(prev_hash, str)
                or chain_hash(prev_hash, kind, body) != digest):
            raise LedgerIntegrityError(f"entry {expected} breaks the ledger's hash chain (altered, relabelled or "
                                       "reordered): run `secagg ledger verify` on it", seq=expected)
        _decode(seq, kind, body)  # an entry whose own hash was recomputed is named for what is wrong with it
        prev = digest


def _decode(seq: int, kind: str, text) -> dict:
    try:
        body = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise LedgerIntegrityError(f"entry {seq} ({kind}) is not valid JSON", seq=seq) from None
    if not isinstance(body, dict):
        raise LedgerIntegrityError(f"entry {seq} ({kind}) is not a JSON object", seq=seq)
    return body


def _spend_event(seq: int, kind: str, body: dict):
    """(site, event) of a spend entry; a typed error naming the entry when a key is missing or invalid."""
    try:
        site, round_index = entry_site_and_round(kind, body)
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerIntegrityError(f"entry {seq} ({kind}) lacks its event's site or round ({exc!r})",
                                   seq=seq) from None
    try:
        event = PrivacyEvent.from_dict(body["event"]) if kind == "spend" else _site_level_event(body["event"])
    except KeyError as exc:
        raise LedgerIntegrityError(f"entry {seq} ({kind}, site {site!r}, round {round_index}) is missing the key "
                                   f"{exc}", seq=seq, site=site, round=round_index) from None
    except (TypeError, ValueError) as exc:
        raise LedgerIntegrityError(f"entry {seq} ({kind}, site {site!r}, round {round_index}) holds an invalid "
                                   f"event: {exc}", seq=seq, site=site, round=round_index) from None
    return site, event


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    kind: str
    body: dict
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ProjectedSpend:
    """The epsilon report a ledger computed for ``site`` over exactly ``events`` (its history, then the
    planned events), at its delta with ``accountants``: what :meth:`PrivacyLedger.check_budget` computed.

    Handed back to :meth:`PrivacyLedger.commit_round` (``projections``), it saves computing the same report
    again when the round's spend is committed - in another process, for a Flower node, whose setup and
    masked-input messages each run in a process of their own. Sound because an epsilon report is a
    deterministic function of (events, delta, accountants, the accountants' library versions, the numerical
    stack they compute with: numpy, scipy and this project, :func:`dp.accounting.numerical_stack`), and the
    ledger reuses one only when all five equal what it would compute with now and the report's bound is the
    minimum of its valid results (:meth:`PrivacyLedger.reusable_report`); otherwise it computes. It does not
    make a report trustworthy: whoever keeps it between the two must keep it from being altered (a Flower
    node seals it with the rest of its state under its state key,
    :func:`simulation.engines.flower.client_app.load_state`), and :func:`verify_ledger` re-derives each
    accountant's recorded epsilon from the events whatever was reused.
    """

    site: str
    events: tuple[PrivacyEvent, ...]
    report: EpsilonReport
    accountants: tuple[str, ...]
    stack: tuple[tuple[str, str], ...] = ()  # numerical_stack() when the report was computed


@dataclass(frozen=True)
class BudgetDecision:
    """Whether a site may spend ``planned`` events without passing its budget; ``projection`` is the
    report of its history plus ``planned``, for :meth:`PrivacyLedger.commit_round` to reuse.

    ``spent`` (the bound of the history alone, None without one) is computed when first read: a budget
    check needs only ``projected``, and a fresh process (a Flower node's setup message) would otherwise
    run every accountant a second time for a number nobody reads.
    """

    site: str
    allowed: bool
    budget: float
    projected: EpsilonReport
    projection: ProjectedSpend | None = None
    spent_bound: Callable[[], float | None] = field(default=lambda: None, repr=False, compare=False)

    @cached_property
    def spent(self) -> float | None:
        return self.spent_bound()


@dataclass
class VerificationReport:
    """Outcome of :func:`verify_ledger`: the first failing entry (``first_broken``, its ``site`` and
    ``round`` when it is a spend) and which checks ran (``signatures_checked``, ``anchors_checked``)."""

    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None
    run_id: str | None = None
    notes: list = field(default_factory=list)
    epsilon: dict = field(default_factory=dict)  # site -> report dict of its final spend
    site_level_epsilon: dict = field(default_factory=dict)  # site -> site-level epsilon (distributed DP)
    site: str | None = None
    round: int | None = None
    signatures_checked: int = 0
    anchors_checked: list = field(default_factory=list)  # sites whose anchor the ledger matches
    warnings: list = field(default_factory=list)
    unit: str | None = None
    adjacency: str | None = None
    place: str | None = None  # the failing place when it is not an entry (an anchor, the head record)

    def where(self) -> str:
        """The failing place in words: ``entry 7 (site 'a', round 2)`` or ``the head record``."""
        if self.first_broken is None:
            return self.place or "the head record"
        spend = f" (site {self.site!r}, round {self.round})" if self.site is not None else ""
        return f"entry {self.first_broken}{spend}"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "first_broken": self.first_broken, "site": self.site,
                "round": self.round, "reason": self.reason, "run_id": self.run_id, "notes": self.notes,
                "warnings": self.warnings, "epsilon": self.epsilon, "site_level_epsilon": self.site_level_epsilon,
                "signatures_checked": self.signatures_checked, "anchors_checked": self.anchors_checked,
                "unit": self.unit, "adjacency": self.adjacency}


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _open_checked(run_dir) -> tuple[sqlite3.Connection, dict]:
    """A connection to an existing ledger of this schema and its genesis meta (typed errors otherwise)."""
    path = Path(run_dir) / LEDGER_FILE
    if not path.is_file():
        raise LedgerError(f"no privacy ledger at {path} (is {run_dir} a run directory?)")
    conn = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=30)
        schema = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        row = conn.execute("SELECT body FROM entries WHERE seq=1").fetchone() if schema is not None else None
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        if "not a database" not in str(exc) and "no such table" not in str(exc):
            raise LedgerIntegrityError(f"{path}: entry 1 or the meta table cannot be read: the ledger file is "
                                       f"damaged ({exc})", seq=1) from None
        raise LedgerError(f"{path} is not a secagg privacy ledger: {exc}") from None
    if schema is None:
        conn.close()
        raise LedgerError(f"{path} is not a secagg privacy ledger (no schema version)")
    if schema[0] != _SCHEMA_VERSION:
        conn.close()
        raise LedgerError(f"{path} is a ledger of schema {schema[0]!r}; this secagg reads {_SCHEMA_VERSION!r} only "
                          "(v1 ledgers hold unsigned spends, v2 ledgers keep each entry's kind outside its hash: read them with "
                          "the secagg release that wrote them)")
    if row is None:
        conn.close()
        raise LedgerIntegrityError(f"{path}: entry 1 (the genesis entry) is missing", seq=1)
    try:
        meta = _decode(1, "genesis", row[0])
        for key in ("run_id", "delta", "budgets", "accountants"):
            if key not in meta:
                raise LedgerIntegrityError(f"entry 1 (genesis) is missing the key {key!r}", seq=1)
    except LedgerIntegrityError:
        conn.close()
        raise
    return conn, meta


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
        self.unit: str = meta.get("unit", LEGACY_UNIT)
        self.adjacency: str = meta.get("adjacency", adjacency_of("add_remove_one", self.unit))
        self._events: dict[str, list[PrivacyEvent]] = {}
        self._site_level_events: dict[str, list] = {}
        for entry in self.entries():
            if entry.kind == "spend":
                site, event = _spend_event(entry.seq, entry.kind, entry.body)
                self._events.setdefault(site, []).append(event)
            elif entry.kind == "site_level_spend":
                site, event = _spend_event(entry.seq, entry.kind, entry.body)
                self._site_level_events.setdefault(site, []).append(event)

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
        unit: str = DEFAULT_UNIT,
        adjacency: str | None = None,
    ) -> "PrivacyLedger":
        """Create the ledger of a new run; refuses to overwrite an existing one.

        ``site_level_budget``/``site_level_delta``: the budget of the *site-level* guarantee of
        the released aggregates when distributed DP is on (:mod:`dp.distributed`); recorded and
        enforced separately from the record-level DP-SGD budgets - the two are never added.
        ``unit`` is the privacy unit every record-level epsilon of the run is about (``"patient"``
        by default, as the events; ``"slice"`` for the labelled slice-level option) and ``adjacency`` the neighbouring relation in words
        (default ``"add/remove one <unit>"``); both go into the genesis entry.
        """
        run_dir = Path(run_dir)
        delta = validate_delta(delta)
        if not isinstance(unit, str) or not unit.strip():
            raise InvalidPrivacyParameterError(f"the privacy unit must be a non-empty word; got {unit!r}")
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
            "unit": unit,
            "adjacency": adjacency or adjacency_of("add_remove_one", unit),
        }
        if site_level_budget is not None:
            meta["site_level"] = {"budget": float(site_level_budget),
                                  "delta": validate_delta(site_level_delta if site_level_delta is not None else delta),
                                  "accountant": "distributed RDP (dp.distributed)"}
        # Owner-only whatever the umask (issue 21); SQLite gives its WAL and journal the same mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.chmod(path, 0o600)
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
        """Open an existing ledger; a missing, foreign or damaged file raises :class:`LedgerError`
        (:class:`LedgerIntegrityError` naming the entry when an entry cannot be read, or when the
        hash chain does not hold: a relabelled, edited or reordered entry is never used to decide a
        budget; signatures and epsilons are checked by :func:`verify_ledger`)."""
        conn, meta = _open_checked(run_dir)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            _check_chain(conn, str(meta["run_id"]))
            return cls(Path(run_dir), conn, meta)
        except (LedgerError, sqlite3.Error) as exc:
            conn.close()
            if isinstance(exc, LedgerError):
                raise
            raise LedgerIntegrityError(f"{Path(run_dir) / LEDGER_FILE} cannot be read: {exc}") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "PrivacyLedger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------

    def entries(self) -> list[LedgerEntry]:
        """Every entry in order; :class:`LedgerIntegrityError` naming the first that cannot be read."""
        rows, damage = _scan_rows(self._conn)
        if damage is not None:
            raise damage
        return [LedgerEntry(s, k, _decode(s, k, b), p, h) for s, k, b, p, h in rows]

    def head(self) -> tuple[int, str]:
        row = self._conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, genesis_hash(self.run_id)) if row is None else (row[0], row[1])

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
        return {e.body["round"] for e in self.entries() if e.kind == "round"}

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
        allowed = projected.bound is not None and projected.bound <= self.budgets[site]
        projection = ProjectedSpend(site, tuple(history + planned), projected, self.accountants, numerical_stack())
        spent = list(history)  # this history, even if the ledger commits more before ``spent`` is read
        return BudgetDecision(site, allowed, self.budgets[site], projected, projection,
                              lambda: compute_epsilon(spent, self.delta, accountants=self.accountants).bound
                              if spent else None)

    def reusable_report(self, projection: ProjectedSpend, site: str,
                        events: Sequence[PrivacyEvent]) -> EpsilonReport | None:
        """``projection``'s report when it is the one :func:`compute_epsilon` gives for ``site``'s ``events``
        with this ledger's delta and accountants at the installed library versions and numerical stack; else
        None."""
        if not isinstance(projection, ProjectedSpend):
            return None
        report = projection.report
        if (projection.site != site or projection.events != tuple(events) or report.delta != self.delta
                or projection.accountants != self.accountants
                or tuple(r.accountant for r in report.results) != self.accountants):
            return None
        if any(r.library != accountant_version(r.accountant) for r in report.results):
            return None
        if projection.stack != numerical_stack():
            return None
        valid = [r.epsilon for r in report.results if r.ok]
        if report.bound != (min(valid) if valid else None):  # not the report compute_epsilon gives
            return None
        return report

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
        signers: Mapping[str, object] | None = None,
        projections: Sequence[ProjectedSpend] = (),
    ) -> None:
        """Record one round's spend (one transaction), then rewrite the head record.

        Each event gets a ``spend`` entry holding the event and the site's
        cumulative epsilon after it (every accountant and the bound); then a
        ``round`` entry closes the round. Refuses a round already committed,
        events of another round, and spends past a budget.

        ``signers`` (site -> :class:`~dp.ledger_signatures.LedgerSigner`): when given, every
        spend entry is signed by its site's signer (a site without one is refused) and each
        signer anchors its last entry after the commit (a signer may be remote: a Flower node
        signs through :class:`simulation.engines.flower.ledger_link.RemoteLedgerSigner`). Without it
        the spends are unsigned and a verifier holding a registry refuses them.

        ``projections``: reports :meth:`check_budget` computed earlier (:class:`ProjectedSpend`); a spend
        whose site's cumulative events, delta, accountants, library versions and numerical stack are exactly a
        projection's takes its report instead of computing it again (:meth:`reusable_report`), any other is
        computed.
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
            report = next(filter(None, (self.reusable_report(p, event.site, pending[event.site])
                                        for p in projections)), None)
            if report is None:
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
        self._append(rows, signers)
        self._events = pending
        self._site_level_events = pending_site_level

    def _append(self, rows: list[tuple[str, dict]], signers: Mapping[str, object] | None = None) -> None:
        count, prev = self.head()
        records, last_signed = [], {}
        for kind, body in rows:  # built and signed before the transaction: a site that refuses writes nothing
            count += 1
            if signers is not None and kind in SIGNED_KINDS:
                statement = EntryStatement(self.run_id, count, prev, kind, body)
                signer = signers.get(statement.site)
                if signer is None:
                    raise LedgerError(f"site {statement.site!r} has no signer: its spend cannot be committed unsigned")
                body = statement.signed_body(signer.sign_entry(statement))
                last_signed[statement.site] = count
            text = canonical_json(body)
            digest = chain_hash(prev, kind, text)
            records.append((count, kind, text, prev, digest))
            prev = digest
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for record in records:
                self._conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", record)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise LedgerError(f"could not write the privacy ledger: {exc}") from None
        write_private_atomic(self.run_dir / HEAD_FILE,
                             json.dumps({"run_id": self.run_id, "entries": count, "head": prev},
                                        indent=2, sort_keys=True).encode())
        by_seq = {r[0]: r[4] for r in records}
        for site, seq in sorted(last_signed.items()):
            signers[site].record_anchor(self.run_id, seq, by_seq[seq])


def _site_level_event(data: dict):
    from .distributed import DistributedDpEvent

    return DistributedDpEvent.from_dict(data)


def _claimed_site_round(kind: str, body) -> tuple[str | None, int | None]:
    """The site and round an entry claims (to name a broken entry); (None, None) when it says none."""
    try:
        site, round_index = entry_site_and_round(kind, json.loads(body))
        return site, round_index
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, None


def _fail(report: VerificationReport, seq: int | None, reason: str, site: str | None = None,
          round_index: int | None = None, place: str | None = None) -> VerificationReport:
    report.ok = False
    report.place = place
    report.first_broken = seq
    report.reason = reason
    report.site = site
    report.round = round_index
    return report


def verify_ledger(run_dir, *, registry: Mapping[str, bytes] | None = None, anchors: Sequence[SiteAnchor] = (),
                  releases: Sequence = (), recompute_epsilon: bool = True) -> VerificationReport:
    """Check a run's ledger; the report names the first entry whose chain link, signature or epsilon fails.

    Checks, per entry in order: the sequence number, the link to the previous hash, the hash of the
    content, valid canonical JSON, then for a spend its site's signature (with ``registry``: site ->
    Ed25519 verify key, from the consortium, not from the run directory's owner) and the re-derived
    cumulative epsilon within budget. Then every site anchor (:class:`SiteAnchor`, from each site's
    own state; needs ``registry``): the ledger must reach and match the entry each site last
    countersigned. Last the head record. What is caught without a registry or anchors: see the
    module docstring; ``report.warnings`` repeats it for the checks that did not run. ``releases``
    (:class:`~dp.ledger_signatures.ReleaseRecord`, from each site's own state): every round a site
    released an update in and was not told it was dropped must hold a spend of that site, else a
    warning (see :mod:`dp.ledger_signatures`, item 3).

    Raises :class:`LedgerError` when there is no ledger to check (missing file, not a ledger, another
    schema version, an unreadable genesis entry); every other fault is a failed report.
    """
    run_dir = Path(run_dir)
    if anchors and registry is None:
        raise LedgerError("site anchors are signed: checking them needs the registry of site verify keys")
    conn, meta = _open_checked(run_dir)
    try:
        rows, damage = _scan_rows(conn)
    finally:
        conn.close()
    run_id = meta["run_id"]
    unit = meta.get("unit", LEGACY_UNIT)
    report = VerificationReport(ok=True, entries=len(rows), run_id=run_id, unit=unit,
                                adjacency=meta.get("adjacency", adjacency_of("add_remove_one", unit)))
    try:
        delta = float(meta["delta"])
        budgets = {str(k): float(v) for k, v in dict(meta["budgets"]).items()}
        accountants = tuple(meta["accountants"])
        site_level = meta.get("site_level")
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta {delta} is outside (0, 1)")
        unknown = [a for a in accountants if a not in ACCOUNTANTS]
        if not accountants or unknown:
            raise ValueError(f"unknown accountant(s) {unknown} (known: {', '.join(ACCOUNTANTS)})")
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        return _fail(report, 1, f"entry 1 (genesis) holds invalid parameters: {exc}")
    prev = genesis_hash(run_id)
    events: dict[str, list[PrivacyEvent]] = {}
    site_events: dict[str, list] = {}
    charged: set[tuple[str, int]] = set()  # (site, round) of every spend
    round_spends: list[tuple[int, str, int]] = []  # (seq, site, round) of the spends since the last round record
    unsigned = 0
    for expected_seq, (seq, kind, body, prev_hash, digest) in enumerate(rows, start=1):
        if seq != expected_seq:
            return _fail(report, expected_seq, f"entry {expected_seq} is missing (found {seq} next)")
        if prev_hash != prev:
            return _fail(report, seq, f"entry {seq} does not link to entry {seq - 1} (reordered or altered)",
                         *_claimed_site_round(kind, body))
        if kind not in KINDS:
            return _fail(report, seq, f"entry {seq} has the unknown kind {str(kind)[:40]!r} (relabelled?)")
        if (seq == 1) != (kind == "genesis"):
            return _fail(report, seq, f"entry {seq} is a {kind} entry where " +
                         ("the genesis entry must be" if seq == 1 else "only entry 1 may be the genesis"))
        if not isinstance(body, str) or not isinstance(prev_hash, str) or chain_hash(prev_hash, kind, body) != digest:
            return _fail(report, seq, f"entry {seq} was altered: its hash does not match its kind and content",
                         *_claimed_site_round(kind, body))
        try:
            parsed = _decode(seq, kind, body)
            canonical = canonical_json(parsed)
        except LedgerIntegrityError as exc:
            return _fail(report, seq, str(exc))
        except (ValueError, RecursionError):
            return _fail(report, seq, f"entry {seq} holds a value canonical JSON cannot hold (NaN, infinity or "
                         "nesting too deep)")
        if canonical != body:
            return _fail(report, seq, f"entry {seq} is not in canonical form")
        if seq == 1 and kind != "genesis":
            return _fail(report, 1, "the first entry is not the genesis entry")
        if kind == "round":
            # A round record closes the spends committed with it (one transaction): same round, same sites.
            why = _round_record_mismatch(parsed, round_spends)
            if why is not None:
                return _fail(report, seq, f"entry {seq} (round record): {why}")
            round_spends = []
        if kind in SIGNED_KINDS:
            try:
                site, event = _spend_event(seq, kind, parsed)
            except LedgerIntegrityError as exc:
                return _fail(report, seq, str(exc), exc.site, exc.round)
            where = f"entry {seq} ({kind}, site {site!r}, round {event.round})"
            if kind == "spend":
                charged.add((site, event.round))
                round_spends.append((seq, site, event.round))
            try:
                if kind == "spend":
                    stored = dict(parsed["cumulative"]["epsilon"])
                else:
                    stored = parsed["cumulative_epsilon"]
            except (KeyError, TypeError, ValueError) as exc:
                return _fail(report, seq, f"{where} is missing the key {exc}" if isinstance(exc, KeyError)
                             else f"{where} holds a malformed cumulative epsilon", site, event.round)
            signature = parsed.pop("signature", None)
            if registry is not None:
                why = check_entry_signature(registry, EntryStatement(run_id, seq, prev_hash, kind, parsed), signature)
                if why is not None:
                    return _fail(report, seq, f"{where}: {why}", site, event.round)
                report.signatures_checked += 1
            elif signature is None:
                unsigned += 1
            if kind == "spend" and site not in budgets:
                return _fail(report, seq, f"{where}: site {site!r} has no budget in this run", site, event.round)
            if kind == "spend" and recompute_epsilon:
                events.setdefault(site, []).append(event)
                recomputed = compute_epsilon(events[site], delta, accountants=accountants)
                for name, value in recomputed.to_dict()["epsilon"].items():
                    old = stored.get(name)
                    if (value is None) != (old is None) or (value is not None and (
                            not isinstance(old, (int, float))
                            or not math.isclose(value, old, rel_tol=_RELATIVE_TOLERANCE))):
                        return _fail(report, seq, f"{where}: stored {name} epsilon {old} differs from the "
                                     f"recomputed {value}", site, event.round)
                budget = budgets[site]
                if recomputed.bound is None or recomputed.bound > budget * (1 + _RELATIVE_TOLERANCE):
                    return _fail(report, seq, f"{where}: site {site!r} is past its budget {budget}",
                                 site, event.round)
                report.epsilon[site] = recomputed.to_dict()
            if kind == "site_level_spend" and recompute_epsilon:
                from .distributed import compute_distributed_epsilon

                site_events.setdefault(site, []).append(event)
                if site_level is None:
                    return _fail(report, seq, f"{where}: a site-level spend in a ledger without a site-level "
                                 "budget", site, event.round)
                value = compute_distributed_epsilon(site_events[site], site_level["delta"])
                if not isinstance(stored, (int, float)) or not math.isclose(value, stored,
                                                                            rel_tol=_RELATIVE_TOLERANCE):
                    return _fail(report, seq, f"{where}: stored site-level epsilon {stored} differs from the "
                                 f"recomputed {value}", site, event.round)
                if value > site_level["budget"] * (1 + _RELATIVE_TOLERANCE):
                    return _fail(report, seq, f"{where}: site {site!r} is past its site-level budget",
                                 site, event.round)
                report.site_level_epsilon[site] = value
        prev = digest
    if damage is not None:
        return _fail(report, damage.seq, str(damage))
    if round_spends:
        return _fail(report, round_spends[0][0], f"entries {round_spends[0][0]}-{round_spends[-1][0]} are spends that "
                     "no round record closes (a round is committed in one transaction: its record was removed)",
                     round_spends[0][1], round_spends[0][2])
    for anchor in anchors:
        place = f"the anchor of site {anchor.site!r} ({anchor.source})"
        if anchor.run_id != run_id:
            return _fail(report, None, f"the anchor {anchor.source} of site {anchor.site!r} belongs to run "
                         f"{anchor.run_id!r}, not {run_id!r}", anchor.site, place=place)
        why = anchor.check(registry)
        if why is not None:
            return _fail(report, None, why, anchor.site, place=place)
        if anchor.seq > len(rows):
            return _fail(report, anchor.seq, f"the ledger was truncated: site {anchor.site!r} countersigned entry "
                         f"{anchor.seq} but the ledger ends at entry {len(rows)}", anchor.site)
        if rows[anchor.seq - 1][4] != anchor.hash:
            return _fail(report, anchor.seq, f"entry {anchor.seq} is not the entry site {anchor.site!r} "
                         "countersigned (the ledger was rewritten from there on)", anchor.site)
        report.anchors_checked.append(anchor.site)
    for record in releases:
        if record.run_id != run_id:
            return _fail(report, None, f"the release record {record.source} of site {record.site!r} belongs to "
                         f"run {record.run_id!r}, not {run_id!r}", record.site,
                         place=f"the release record of site {record.site!r}")
        for round_index in record.charged_rounds():
            if (record.site, round_index) not in charged and record.rounds[round_index] == "survivor":
                # The site passed the unmask gate: it signed its spend and saw it in the committed chain.
                return _fail(report, None, f"site {record.site!r} unmasked round {round_index} as a survivor "
                             f"({record.source}) but this ledger charges it no spend for that round",
                             record.site, round_index, place=f"the release record of site {record.site!r}")
            if (record.site, round_index) not in charged:
                report.warnings.append(
                    f"site {record.site!r} released a masked update in round {round_index} ({record.source}: "
                    f"{record.rounds[round_index]}) and this ledger charges it no spend for that round: the update "
                    "reached the coordinator too late, or the coordinator stopped before it committed the round (a crash: "
                    "a resumed run plans the round anew and the site refuses to release it twice), or the "
                    "coordinator decoded it without recording the spend (the site's own ledger charges it either way)")
    head_path = run_dir / HEAD_FILE
    if not head_path.is_file():
        return _fail(report, None, f"{head_path} is missing: truncation cannot be ruled out")
    try:
        head = json.loads(head_path.read_text())
        head_count, head_hash = int(head["entries"]), str(head["head"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        return _fail(report, None, f"{head_path} does not parse ({type(exc).__name__})")
    if head.get("run_id") != run_id:
        return _fail(report, None, f"{head_path} belongs to run {head.get('run_id')!r}, not {run_id!r}")
    if head_count > len(rows):
        return _fail(report, len(rows) + 1, f"the ledger was truncated: the head record lists {head_count} entries, "
                     f"{len(rows)} remain")
    if head_count <= 0 or rows[head_count - 1][4] != head_hash:
        return _fail(report, head_count, f"entry {head_count} does not match the head record's hash")
    if head_count < len(rows):
        report.notes.append(
            f"{len(rows) - head_count} entries after the head record (a crash between the ledger commit and "
            "the head update); they chain correctly"
        )
    if registry is None:
        report.warnings.append("no registry of site verify keys: signatures were not checked, so an edit with the "
                               "chain rehashed and the head rewritten would pass")
    if unsigned:
        report.notes.append(f"{unsigned} spend entries carry no site signature")
    if not anchors:
        report.warnings.append("no site anchors: deleting the last round(s) is caught only by the head record, "
                               "which whoever controls the run directory can rewrite")
    else:
        unanchored = sorted({site for site, _ in charged} - {anchor.site for anchor in anchors})
        if unanchored:
            report.warnings.append(
                f"no anchor given for the site(s) {', '.join(unanchored)}: spends after the last entry that the "
                "given anchors cover are protected only by the head record")
    return report
