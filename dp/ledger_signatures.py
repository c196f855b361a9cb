"""Site signatures on privacy-ledger spends, and the sites' anchors of the chain head.

Threat model. The coordinator writes the ledger in its own run directory, so
it can rewrite every byte there: an unkeyed hash chain plus a head record in
the same folder stops mistakes, not the coordinator. Two things it cannot do
without a site's Ed25519 signing key (which never leaves the site):

1. **Sign a spend.** Each ``spend`` / ``site_level_spend`` entry carries the
   signature of the site it charges over :meth:`EntryStatement.message`:
   domain ``secagg/ledger/v2/entry``, the run id, the entry's sequence number,
   the previous entry's chain hash, its kind and its body (site, round, the
   privacy event, the cumulative epsilon). Editing any of those - or anything
   *before* the entry, since the previous hash chains back to the genesis
   entry with the budgets - invalidates the signature.
2. **Sign an anchor.** After each commit a site keeps, in its own state, the
   latest ``(sequence number, chain hash)`` it countersigned, signed under
   domain ``secagg/ledger/v2/anchor`` (:class:`SiteAnchor`). A ledger shorter
   than, or different at, any site's anchor was truncated or rewritten.

How a signature travels (in-process simulation; over Flower see
:mod:`simulation.engines.flower.ledger_link`: the same statements and anchors, one
Flower round trip per signature). When the masked inputs are in, the
coordinator's :class:`~simulation.federation.rounds.ReleaseCommitter` builds each entry (it alone knows the sequence number and the previous hash) and hands the
:class:`EntryStatement` to the site's :class:`LedgerSigner`; the site checks
that it names itself and the event it actually trained with (its ``approve``
hook), signs, and remembers the entry's chain hash. The coordinator appends the
signed entries in one transaction, then calls :meth:`LedgerSigner.record_anchor`,
and the site writes its anchor only for an entry whose hash it computed itself.
A crash between the commit and the anchor leaves the anchor one round behind
(never a false alarm). A Flower node anchors further: before it unmasks, it is
shown the round's committed spends, checks that they charge every survivor
(:mod:`dp.round_chain`) and anchors the chain's last entry
(:meth:`LedgerSigner.record_chain_anchor`), whose hash commits to its own entry
and to every spend after it.

3. **Keep a release record** (``released.json`` beside the anchor,
   :class:`ReleaseRecord`). A site notes every round in which its masked
   update left it, and marks a round ``dropped`` when the coordinator told it
   its update was not used. Given these records, ``verify_ledger`` warns about
   every released, not-dropped round that the ledger does not charge to the
   site: the coordinator lost that update (it arrived late, or the coordinator
   crashed before committing the round, which a resumed run plans anew and the
   site refuses to release twice) or decoded it without recording the spend (where the other sites cannot check the client-id -> site
   map; see :mod:`dp.round_chain` for what is left of that).
   A warning, not a failure: a masked update that reached the coordinator after
   its deadline is legitimately uncharged, and the site cannot tell the two
   apart. The site's own ledger charges every release either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from secagg.crypto import sign, verify_signature
from secagg.errors import InvalidInputError, VerificationError

from .errors import LedgerError, LedgerIntegrityError
from .ledger_format import canonical_json, chain_hash, write_private_atomic

__all__ = ["SIGNED_KINDS", "ANCHOR_FILE", "EntryStatement", "SiteAnchor", "LedgerSigner",
           "entry_site_and_round", "check_entry_signature", "load_anchors", "RELEASE_FILE", "ReleaseRecord",
           "load_releases"]

SIGNED_KINDS = ("spend", "site_level_spend")
ANCHOR_FILE = "ledger.anchor.json"
RELEASE_FILE = "released.json"
_ENTRY_DOMAIN = b"secagg/ledger/v2/entry\x00"
_ANCHOR_DOMAIN = b"secagg/ledger/v2/anchor\x00"


def entry_site_and_round(kind: str, body: Mapping) -> tuple[str, int]:
    """The site a spend entry charges and its round; KeyError/TypeError when the body lacks them."""
    event = body["event"]
    site = event["site"] if kind == "spend" else body["site"]
    return str(site), int(event["round"])


@dataclass(frozen=True)
class EntryStatement:
    """What a site signs: one spend entry at its place in the chain (body without the signature)."""

    run_id: str
    seq: int
    prev_hash: str
    kind: str
    body: Mapping

    @property
    def site(self) -> str:
        return entry_site_and_round(self.kind, self.body)[0]

    @property
    def round(self) -> int:
        return entry_site_and_round(self.kind, self.body)[1]

    def message(self) -> bytes:
        return _ENTRY_DOMAIN + canonical_json({"run_id": self.run_id, "seq": self.seq, "prev_hash": self.prev_hash,
                                               "kind": self.kind, "body": dict(self.body)}).encode()

    def signed_body(self, signature: bytes) -> dict:
        return {**self.body, "signature": signature.hex()}


def check_entry_signature(registry: Mapping[str, bytes], statement: EntryStatement, signature) -> str | None:
    """None when ``signature`` (hex) is the registry key of the entry's site over ``statement``; else why not."""
    site = statement.site
    key = registry.get(site)
    if key is None:
        return f"site {site!r} is not in the registry of verify keys"
    if not isinstance(signature, str):
        return f"it carries no signature of site {site!r}"
    try:
        verify_signature(key, statement.message(), bytes.fromhex(signature))
    except (ValueError, InvalidInputError, VerificationError):
        return (f"the signature of site {site!r} does not verify (this entry, or its link to the entries before "
                "it, was changed after the site signed)")
    return None


@dataclass(frozen=True)
class SiteAnchor:
    """A site's signed record of the latest ledger entry it countersigned."""

    run_id: str
    site: str
    seq: int
    hash: str
    signature: str  # hex
    source: str = ""  # the file it was read from (not signed)

    @staticmethod
    def message_for(run_id: str, site: str, seq: int, digest: str) -> bytes:
        return _ANCHOR_DOMAIN + canonical_json({"run_id": run_id, "site": site, "seq": seq, "hash": digest}).encode()

    def message(self) -> bytes:
        return self.message_for(self.run_id, self.site, self.seq, self.hash)

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "site": self.site, "seq": self.seq, "hash": self.hash,
                "signature": self.signature}

    @classmethod
    def read(cls, path) -> "SiteAnchor":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            return cls(str(raw["run_id"]), str(raw["site"]), int(raw["seq"]), str(raw["hash"]),
                       str(raw["signature"]), str(path))
        except FileNotFoundError:
            raise LedgerError(f"site anchor {path} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerIntegrityError(f"site anchor {path} does not parse ({type(exc).__name__}: {exc})") from None

    def check(self, registry: Mapping[str, bytes]) -> str | None:
        """None when the anchor carries its site's registry signature; else why not."""
        key = registry.get(self.site)
        if key is None:
            return f"the anchor {self.source} is of site {self.site!r}, which is not in the registry"
        try:
            verify_signature(key, self.message(), bytes.fromhex(self.signature))
        except (ValueError, InvalidInputError, VerificationError):
            return f"the anchor {self.source} does not carry site {self.site!r}'s signature"
        return None


def _evidence_folders(paths: Iterable) -> list[tuple[Path, Path | None]]:
    """(folder, anchor file or None) per site folder named by ``paths``: a file (its folder), a folder holding
    an anchor or a release record, or a folder of such folders. A path naming none raises :class:`LedgerError`."""
    found: list[tuple[Path, Path | None]] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append((path.parent, path))
            continue
        folders = [path] if any((path / f).is_file() for f in (ANCHOR_FILE, RELEASE_FILE)) else (
            sorted(p for p in path.iterdir() if p.is_dir() and any((p / f).is_file() for f in (ANCHOR_FILE, RELEASE_FILE)))
            if path.is_dir() else [])
        if not folders:
            raise LedgerError(f"no site anchor ({ANCHOR_FILE}) or release record ({RELEASE_FILE}) at {path}")
        found.extend((f, f / ANCHOR_FILE if (f / ANCHOR_FILE).is_file() else None) for f in folders)
    return found


def load_anchors(paths: Iterable) -> list[SiteAnchor]:
    """Anchors from files or folders: a file; ``DIR/ledger.anchor.json``; or every ``DIR/*/ledger.anchor.json``.

    A site folder that holds only a release record (the site was never asked to sign) gives no anchor.
    """
    return [SiteAnchor.read(anchor) for _, anchor in _evidence_folders(paths) if anchor is not None]


class LedgerSigner:
    """A site's side of the ledger: signs statements about its own spend and keeps its anchor.

    ``seed`` is the site's Ed25519 signing seed; ``state_dir`` is the site's own folder (its anchor
    goes to ``state_dir/ledger.anchor.json``); ``approve(statement)`` raises when the site does not
    agree with what it is asked to sign (the in-process site compares the event with the one it
    trained with).
    """

    def __init__(self, site: str, seed: bytes, state_dir, approve: Callable[[EntryStatement], None] | None = None,
                 signed: Mapping[tuple[str, int], str] | None = None):
        self.site = site
        self._seed = bytes(seed)
        self.anchor_path = Path(state_dir) / ANCHOR_FILE
        self._approve = approve
        # (run id, seq) -> the chain hash the site computed when it signed; ``signed`` restores what a
        # site that signs in one process and anchors in another (a Flower node) kept in its own state.
        self._signed: dict[tuple[str, int], str] = dict(signed or {})

    def signed_hashes(self) -> dict[tuple[str, int], str]:
        """(run id, seq) -> chain hash of every entry this signer signed (for its site's own state)."""
        return dict(self._signed)

    def __repr__(self) -> str:
        return f"LedgerSigner(site={self.site!r})"

    def sign_entry(self, statement: EntryStatement) -> bytes:
        if statement.kind not in SIGNED_KINDS or statement.site != self.site:
            raise LedgerError(f"site {self.site!r} refuses to sign a {statement.kind} entry of site "
                              f"{statement.site!r}")
        current = self.anchor()
        if current is not None and current.run_id == statement.run_id and statement.seq <= current.seq:
            # Entries at or below an anchored one are committed already: a statement there is a fork of the
            # chain (issue-15 review: a coordinator had every site sign a fork below their anchors, which
            # then stayed put, and decoded the round with nothing committed).
            raise LedgerError(f"site {self.site!r} refuses to sign entry {statement.seq}: it anchored entry "
                              f"{current.seq} of this run already (a fork of the committed chain)")
        if self._approve is not None:
            self._approve(statement)
        signature = sign(self._seed, statement.message())
        self._signed[(statement.run_id, statement.seq)] = chain_hash(
            statement.prev_hash, statement.kind, canonical_json(statement.signed_body(signature)))
        return signature

    def anchor(self) -> SiteAnchor | None:
        return SiteAnchor.read(self.anchor_path) if self.anchor_path.is_file() else None

    def record_anchor(self, run_id: str, seq: int, digest: str) -> SiteAnchor:
        """Anchor entry ``seq`` (only one this signer signed and whose hash it computed itself)."""
        if self._signed.get((run_id, seq)) != digest:
            raise LedgerError(f"site {self.site!r} did not sign entry {seq} with chain hash {digest[:16]}...; "
                              "it anchors only what it signed")
        return self._write_anchor(run_id, seq, digest)

    def record_chain_anchor(self, run_id: str, chain: Sequence) -> SiteAnchor:
        """Anchor the last entry of ``chain`` (:class:`dp.round_chain.ChainEntry`, in order), at a hash computed here.

        The rule of :meth:`record_anchor` carried along the chain: some entry of ``chain`` is one this
        signer signed, with the chain hash it computed then, and every later entry links to the one
        before it by a hash this signer recomputes from the entry's content. So the anchored hash
        commits to the signer's own entry and to every entry shown after it (a Flower node anchors
        the round's last spend this way before it unmasks: :mod:`dp.round_chain`).
        """
        if not chain:
            raise LedgerError(f"site {self.site!r} anchors no empty chain")
        start = next((i for i, e in enumerate(chain) if self._signed.get((run_id, e.seq)) == e.digest()), None)
        if start is None:
            raise LedgerError(f"site {self.site!r} signed no entry of the chain shown (with that chain hash); "
                              "it anchors only what links to an entry it signed")
        digest = chain[start].digest()
        for before, entry in zip(chain[start:], chain[start + 1:]):
            if entry.seq != before.seq + 1 or entry.prev_hash != digest:
                raise LedgerError(f"entry {entry.seq} does not link to entry {before.seq}: site {self.site!r} "
                                  "anchors no broken chain")
            digest = entry.digest()
        current = self.anchor()
        if current is not None and current.run_id == run_id and (
                chain[-1].seq < current.seq or (chain[-1].seq == current.seq and digest != current.hash)):
            raise LedgerError(f"site {self.site!r} anchored entry {current.seq} already; a chain ending at entry "
                              f"{chain[-1].seq} with another history is a fork: it anchors nothing older")
        return self._write_anchor(run_id, chain[-1].seq, digest)

    def _write_anchor(self, run_id: str, seq: int, digest: str) -> SiteAnchor:
        current = self.anchor()
        if current is not None and current.run_id == run_id and current.seq >= seq:
            return current
        anchor = SiteAnchor(run_id, self.site, seq, digest,
                            sign(self._seed, SiteAnchor.message_for(run_id, self.site, seq, digest)).hex())
        self.anchor_path.parent.mkdir(parents=True, exist_ok=True)
        write_private_atomic(self.anchor_path, (json.dumps(anchor.to_dict(), indent=2, sort_keys=True) + "\n").encode())
        return anchor


@dataclass(frozen=True)
class ReleaseRecord:
    """A site's own note of the rounds of one run in which its masked update left it.

    ``rounds`` maps a round to ``"released"`` (the update left; its fate is unknown to the site),
    ``"survivor"`` (the coordinator then asked the site to unmask with its update among the
    survivors) or ``"dropped"`` (the coordinator told the site its update was not used). Kept
    in the site's own state (unsigned: it is evidence for the site's own auditor, read from the
    site's machine, never from the coordinator).
    """

    run_id: str
    site: str
    rounds: Mapping[int, str]
    source: str = ""

    STATES = ("released", "survivor", "dropped")

    def charged_rounds(self) -> list[int]:
        """The rounds the coordinator's ledger should charge to this site (every round not dropped)."""
        return sorted(r for r, state in self.rounds.items() if state != "dropped")

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "site": self.site, "rounds": {str(r): s for r, s in sorted(self.rounds.items())}}

    @classmethod
    def read(cls, path) -> "ReleaseRecord":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            rounds = {int(r): str(s) for r, s in dict(raw["rounds"]).items()}
            if any(s not in cls.STATES for s in rounds.values()):
                raise ValueError(f"a round state is not one of {cls.STATES}")
            return cls(str(raw["run_id"]), str(raw["site"]), rounds, str(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerIntegrityError(f"release record {path} does not parse ({type(exc).__name__}: {exc})") from None

    def with_round(self, round_index: int, state: str) -> "ReleaseRecord":
        """This record with ``round_index`` moved to ``state`` (``dropped``/``survivor`` override ``released``)."""
        if state not in self.STATES:
            raise ValueError(f"{state!r} is not one of {self.STATES}")
        rounds = dict(self.rounds)
        if state != "released" or round_index not in rounds:
            rounds[int(round_index)] = state
        return ReleaseRecord(self.run_id, self.site, rounds, self.source)

    def write(self, path) -> None:
        write_private_atomic(Path(path), (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode())


def load_releases(paths: Iterable) -> list[ReleaseRecord]:
    """The release records (``released.json``) in the site folders named by ``paths`` (as :func:`load_anchors`)."""
    return [ReleaseRecord.read(folder / RELEASE_FILE) for folder, _ in _evidence_folders(paths)
            if (folder / RELEASE_FILE).is_file()]
