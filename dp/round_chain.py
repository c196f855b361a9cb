"""A round's committed spends as a site checks them before it helps unmask anyone (issue 15).

The gap this closes. Under secure aggregation a site's update is decoded once t *other* sites
reveal their Shamir shares of its self mask; the site itself need not take part. A coordinator
that controls its ledger could therefore skip a site's signature, record no spend for it, and
still decode its update from the other sites' shares. So before a site reveals any share it is
shown the round's committed spends and checks that every update it helps decode is charged.

What the coordinator sends (with each unmask request, beside the protocol message): the round's
spend entries in chain order, each as :class:`ChainEntry` - sequence number, previous entry's
chain hash, kind, and body including the charged site's signature - i.e. exactly the ledger rows
(``dp.ledger`` stores ``canonical_json(body)`` and ``hash = chain_hash(prev_hash, kind, that text)``).

What the site checks (:func:`check_round_chain`), each failure a :class:`dp.LedgerError`:

1. *One chain of this run and round*: entry k's ``prev_hash`` is the chain hash the site itself
   computes for entry k-1, sequence numbers are consecutive, every kind is ``spend`` or
   ``site_level_spend``, every entry charges this round.
2. *Its own entries*: every entry it signed this round is in the chain at its sequence number
   with exactly the chain hash it computed when it signed (:meth:`LedgerSigner.sign_entry`).
3. *Every survivor charged*: for each client id the unmask request lists as a survivor, the
   chain holds a ``spend`` (and, under distributed DP, a ``site_level_spend``) of that client's
   site, per the session's client-id -> site map; no site is charged twice in one kind, and no
   two clients map to one site.
4. *Signatures* (when the site holds the consortium's registry): every entry carries its site's
   valid signature over its place in the chain (:func:`check_entry_signature`; the statement
   binds run id, sequence number, previous hash, kind and body).

Then it anchors the *last* entry of that chain (:meth:`LedgerSigner.record_chain_anchor`:
sequence number and the hash it computed itself), not only its own entry.

Why the attacks fail. The auditor runs ``secagg ledger verify RUN_DIR --registry R --anchors``
with every site's anchor: it recomputes the whole chain from the genesis entry and requires each
anchored entry to carry the anchored hash. Since ``hash_L`` is a SHA-256 chain over every entry
up to L, an anchor at L fixes the content of entries 1..L (up to a SHA-256 collision). Hence:

* *Omission*: a survivor's missing spend fails check 3 at every honest site asked to reveal,
  so none reveals; the coordinator gets the survivor's self mask only from t share holders, and
  fewer than t colluders (secagg's threshold assumption) do not suffice.
* *Showing a spend, then deleting or altering it*: the entry lies at or before the anchored
  entry of every site that revealed, so the rewritten ledger fails that anchor (a shortened
  one: "truncated"). One honest anchor suffices, whichever site's spend was touched.
* *Forking*: an internally inconsistent chain fails check 1 (or 2). Consistent but different
  chains shown to different sites cannot all be the ledger: the anchors of all but one fail.
* *Forged or replayed signature*: with a registry at the site, check 4 refuses it (a genuine
  signature from another round, run or place in the chain signs another statement). Without
  one, the site anchors it, and at audit either the ledger holds the forged entry (its
  signature fails against the registry) or it does not (the anchor fails).
* *Lying about which site a client id is*: with a registry at the site, the session's
  client-id -> site map was checked against it (``simulation.federation.identity.check_session_keys``:
  each client's session verify key is its site's registered key, one site per client; active
  mode authenticates every protocol message under that key), so a survivor's update cannot be
  passed off as another site's.

The residual: passive mode without a registry at the sites. Then the client-id -> site map and
the survivor set come from the coordinator unauthenticated (passive secagg has no consistency
check, so it may show different sites different survivor sets and maps), and the sites check no
signature. The coordinator *can* have a site accept a forged signature (caught at audit, as
above). It *can* also label a decoded client as another released site whose genuine signed spend
is in the chain while that site's own update is left out of the sum, so that the decoded site goes
uncharged in its copy of the ledger while every check and anchor holds. Its victim is then the
witness: it signed no spend for that round, so it refuses to reveal, and its release record keeps
the round ``released``, which ``ledger verify --anchors`` reports as an uncharged release (a
warning: a late update is uncharged legitimately too); its own ledger charged the spend before the
update left. It *cannot*, even then, delete or alter any entry a site anchored without the audit
failing, nor have an honest site reveal shares for more survivors than the chain shown to that
site holds spends of distinct sites - each of which must carry its registered site's signature at
audit, and a site signs only its own release of that round. Active mode with the registry at
every site leaves it none of this.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .errors import LedgerError
from .ledger_format import canonical_json, chain_hash
from .ledger_signatures import SIGNED_KINDS, EntryStatement, check_entry_signature, entry_site_and_round

__all__ = ["ChainEntry", "round_chain", "check_round_chain"]


@dataclass(frozen=True)
class ChainEntry:
    """One committed spend entry as it travels: its place in the chain and its body (with the signature)."""

    seq: int
    prev_hash: str
    kind: str
    body: Mapping

    def digest(self) -> str:
        """The entry's chain hash, computed by whoever holds it (dp's public chain formula)."""
        return chain_hash(self.prev_hash, self.kind, canonical_json(dict(self.body)))

    def statement(self, run_id: str) -> EntryStatement:
        """What the charged site signed: the entry without its signature."""
        return EntryStatement(run_id, self.seq, self.prev_hash, self.kind,
                              {k: v for k, v in self.body.items() if k != "signature"})

    @property
    def site_and_round(self) -> tuple[str, int]:
        return entry_site_and_round(self.kind, self.body)


def round_chain(entries: Sequence, round_index: int) -> list[ChainEntry]:
    """The coordinator's side: the spend entries committed with round ``round_index``, in chain order.

    ``entries`` are the ledger's (:meth:`dp.PrivacyLedger.entries`); a round's spends are the
    entries right before its ``round`` entry (one commit). Empty when the round committed none.
    """
    ends = [i for i, e in enumerate(entries) if e.kind == "round" and e.body.get("round") == round_index]
    if not ends:
        raise LedgerError(f"round {round_index} is not committed in the ledger")
    start = ends[-1]
    while start > 0 and entries[start - 1].kind in SIGNED_KINDS:
        start -= 1
    return [ChainEntry(e.seq, e.prev_hash, e.kind, dict(e.body)) for e in entries[start:ends[-1]]]


def check_round_chain(chain: Sequence[ChainEntry], *, run_id: str, round_index: int, own: Mapping[int, str],
                      survivor_sites: Iterable[str], site_level: bool,
                      registry: Mapping[str, bytes] | None = None) -> tuple[int, str]:
    """Checks 1-4 of the module docstring; the last entry's (seq, chain hash), computed here.

    ``own``: seq -> chain hash of every entry the checking site signed this round. ``survivor_sites``:
    the site of each survivor (a repeated site is refused). ``site_level``: distributed DP is on.
    ``registry`` (site -> verify key) or None. Raises :class:`LedgerError` naming the first failure.
    """
    if not chain:
        raise LedgerError(f"the coordinator shows no committed spend for round {round_index}")
    prev_seq, prev_digest = 0, None
    charged: dict[str, list[str]] = {kind: [] for kind in SIGNED_KINDS}
    for entry in chain:
        where = f"entry {entry.seq}"
        if entry.kind not in SIGNED_KINDS:
            raise LedgerError(f"{where} is a {entry.kind!r} entry, not a spend")
        if prev_digest is not None and (entry.seq != prev_seq + 1 or entry.prev_hash != prev_digest):
            raise LedgerError(f"{where} does not link to entry {prev_seq} (the chain shown is altered or forked)")
        try:
            site, entry_round = entry.site_and_round
            digest = entry.digest()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LedgerError(f"{where} does not parse ({type(exc).__name__}: {exc})") from None
        if entry_round != round_index:
            raise LedgerError(f"{where} charges round {entry_round}, not round {round_index}")
        if registry is not None:
            why = check_entry_signature(registry, entry.statement(run_id), entry.body.get("signature"))
            if why is not None:
                raise LedgerError(f"{where} ({entry.kind}, site {site!r}): {why}")
        charged[entry.kind].append(site)
        prev_seq, prev_digest = entry.seq, digest
        if entry.seq in own and own[entry.seq] != digest:
            raise LedgerError(f"{where} is not the entry this site signed (its chain hash differs)")
    seqs = {e.seq for e in chain}
    missing = sorted(s for s in own if s not in seqs)
    if missing:
        raise LedgerError(f"the chain shown omits entry {missing[0]}, which this site signed")
    for kind, sites in charged.items():
        twice = sorted(s for s, n in Counter(sites).items() if n > 1)
        if twice:
            raise LedgerError(f"the chain charges site {twice[0]!r} two {kind} entries in round {round_index}")
    survivors = list(survivor_sites)
    if len(set(survivors)) != len(survivors):
        raise LedgerError("two survivors are named as one site")
    required = ("spend", "site_level_spend") if site_level else ("spend",)
    for kind in required:
        uncharged = sorted(set(survivors) - set(charged[kind]))
        if uncharged:
            raise LedgerError(f"the chain holds no {kind} of survivor site {uncharged[0]!r} in round "
                              f"{round_index}: its update would be decoded uncharged")
    return chain[-1].seq, prev_digest
