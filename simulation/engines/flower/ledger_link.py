"""The sites' signatures on the coordinator's ledger, and their anchors of it, over Flower (issue 15).

Threat model: as :mod:`dp.ledger_signatures` - the coordinator writes its ledger in its own run
directory and can rewrite every byte there, but it cannot sign for a site (the site's Ed25519 key
never leaves the node) and it cannot rewrite what a node keeps in its own state directory. The
statements, signatures and anchor files are exactly the in-process simulation's (ledger schema
``secagg-ledger-v3``), so ``secagg ledger verify RUN_DIR --registry R --anchors ...`` checks a
Flower coordinator's ledger with the same code.

How a spend gets its site's signature. A site's spend entry is signed over its place in the chain
(the entry's sequence number and the previous entry's hash, which includes the previous site's
signature), so the coordinator can only ask for it once the entries before it exist: when the
masked updates are in (:class:`~simulation.federation.rounds.ReleaseCommitter`), it builds each released
site's entry in turn and sends the :class:`~dp.ledger_signatures.EntryStatement` to that site's
node in a Flower ``query.ledger`` message (ConfigRecord ``"ledger"``; never inside secagg's wire
format). The node signs only a spend of its own site, for the run and round it is in, of the
exact privacy event it trained with, after it released its masked update
(:func:`simulation.engines.flower.client_app.sign_ledger_entry`), and answers ``{"signature": bytes}``.
The coordinator checks the signature against the consortium's registry (when the run has one)
before it commits; a missing, refused or invalid signature raises :class:`dp.SiteSignatureError`
and nothing of the round is committed (the run stops before any unmasking; ``resume`` continues).
One Flower round trip per released site and round, one after the other.

How a node checks that every update it helps decode is charged, and anchors the ledger. A
site's update is decoded once t sites reveal its self-mask shares; the site itself need not take
part. So checking only its own spend is not enough: a coordinator could skip a site's signature,
record no spend for it, and decode its update from the other sites' shares. The coordinator
commits every released site's signed spend before it sends any unmask request
(:class:`~simulation.federation.rounds.ReleaseCommitter` runs when the masked updates are in), and each
unmask request carries the round's committed spend entries in chain order (ConfigRecord
``"ledger-round"``: run id, round, and per entry its seq, prev-hash, kind and JSON body with the
site's signature; :func:`round_chain_record`; beside secagg's wire bytes, never inside them).
Before it reveals any share, a node whose update is among the survivors checks
(:func:`simulation.engines.flower.client_app.gate_unmask`, :func:`dp.check_round_chain`) that the
entries are one chain of this run and round, that its own signed entries are in it with the
hashes it computed when signing, that every survivor's site has its spend (and its site-level
spend under distributed DP), and - with a registry at the node - every signature. Then it
anchors the chain's *last* entry in ``STATE_DIR/anchors/RUN_ID/ledger.anchor.json``
(:class:`~dp.ledger_signatures.SiteAnchor`, signed by the site; at the hash it computed itself,
:meth:`dp.LedgerSigner.record_chain_anchor`), so deleting or altering *any* survivor's spend
breaks *this* node's anchor. A failed check is a typed refusal and the node reveals nothing.
The anchor does not wait for the coordinator: when it did, a coordinator could withhold the last
round's anchors and then delete that round unseen (found by the issue-15 attack review;
tests/test_flower_withheld_anchor.py). The coordinator still sends ``{"run-id", "seq", "hash"}``
(ConfigRecord ``"ledger-anchor"``) with its next message to the node; the node takes it only for
an entry it signed (a node gone before unmasking gets its anchor so), and it is a no-op when the
node has anchored that entry, or a later one, already.

What is left, and what exposes it. The security argument, and its residual, are in
:mod:`dp.round_chain`. In short: with the registry at every node (active mode) a coordinator can
no longer decode a site it did not charge in its ledger without ``secagg ledger verify RUN_DIR
--registry R --anchors ...`` failing. In passive mode without a registry at the nodes, the nodes
take the client-id -> site map from the coordinator and check no signature: a forged signature
they anchor still fails the audit with the registry, but the coordinator can name a decoded
client as another released site (whose update it leaves out) so that the decoded site goes
uncharged. Its victim's node is then the witness: it signed nothing that round and refuses to
reveal; its own ledger (``STATE_DIR/ledger``) charged the spend before the update left, and its
release record (``released.json`` beside its anchor, :class:`dp.ReleaseRecord`: ``released``
when its update leaves, ``survivor`` once it passed the checks above) makes ``secagg ledger
verify --anchors`` name every released round that the ledger does not charge to the site - a
warning, not a failure, since an update that reached the coordinator after its deadline is
legitimately uncharged and the site cannot tell the two apart. A Flower node no longer marks a
round ``dropped`` when an unmask request calls it a dropout (secagg refuses such a request from
a client whose masked update left it), so a coordinator cannot erase that record so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import secagg

from . import require_flwr

require_flwr()

from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402

from dp.errors import LedgerError, SiteSignatureError  # noqa: E402
from dp.ledger_format import write_private_atomic  # noqa: E402
from dp.ledger_signatures import (RELEASE_FILE, SIGNED_KINDS, EntryStatement, LedgerSigner, ReleaseRecord,  # noqa: E402
                                  check_entry_signature)

__all__ = ["LEDGER", "STATEMENT_RECORD", "ANCHOR_RECORD", "ROUND_CHAIN_RECORD", "ANCHORS_DIR", "statement_record",
           "statement_from_record", "anchor_record", "anchor_from_record", "round_chain_record",
           "round_chain_from_record", "RemoteLedgerSigner", "anchor_dir", "node_ledger_signer", "remember_signed",
           "note_release"]

LEDGER = "query.ledger"
STATEMENT_RECORD = "ledger"
ANCHOR_RECORD = "ledger-anchor"
ROUND_CHAIN_RECORD = "ledger-round"  # beside an UnmaskRequest: the round's committed spends (dp.round_chain)
ANCHORS_DIR = "anchors"  # STATE_DIR/anchors/RUN_ID/ledger.anchor.json: a node's anchors of a coordinator's ledger
_SIGNED_FILE = "signed.json"


def statement_record(statement: EntryStatement) -> ConfigRecord:
    return ConfigRecord({"run-id": statement.run_id, "seq": int(statement.seq), "prev-hash": statement.prev_hash,
                         "kind": statement.kind, "body": json.dumps(dict(statement.body), sort_keys=True)})


def statement_from_record(record) -> EntryStatement:
    """Parse a received statement (:class:`secagg.MalformedMessageError` when it does not parse)."""
    try:
        statement = EntryStatement(str(record["run-id"]), int(record["seq"]), str(record["prev-hash"]),
                                   str(record["kind"]), json.loads(str(record["body"])))
        if statement.kind not in SIGNED_KINDS or not isinstance(statement.body, dict):
            raise ValueError(f"kind {statement.kind!r} is not a spend")
        statement.site, statement.round  # noqa: B018 - both must parse
        bytes.fromhex(statement.prev_hash)
    except (KeyError, TypeError, ValueError) as exc:
        raise secagg.MalformedMessageError(f"malformed ledger statement: {type(exc).__name__}: {exc}") from None
    return statement


def anchor_record(run_id: str, seq: int, digest: str) -> ConfigRecord:
    return ConfigRecord({"run-id": run_id, "seq": int(seq), "hash": digest})


def anchor_from_record(record) -> tuple[str, int, str]:
    try:
        return str(record["run-id"]), int(record["seq"]), str(record["hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise secagg.MalformedMessageError(f"malformed ledger anchor: {type(exc).__name__}: {exc}") from None


def round_chain_record(run_id: str, round_index: int, chain) -> ConfigRecord:
    """The round's committed spends (:class:`dp.ChainEntry`, in chain order) as a Flower ConfigRecord."""
    return ConfigRecord({"run-id": run_id, "round": int(round_index), "seqs": [int(e.seq) for e in chain],
                         "prev-hashes": [str(e.prev_hash) for e in chain], "kinds": [str(e.kind) for e in chain],
                         "bodies": [json.dumps(dict(e.body), sort_keys=True) for e in chain]})


def round_chain_from_record(record) -> tuple[str, int, list]:
    """(run id, round, [:class:`dp.ChainEntry`]) of a received record (:class:`secagg.MalformedMessageError`)."""
    from dp import ChainEntry

    try:
        seqs, prevs, kinds, bodies = (list(record[k]) for k in ("seqs", "prev-hashes", "kinds", "bodies"))
        if not len(seqs) == len(prevs) == len(kinds) == len(bodies):
            raise ValueError("the entry fields differ in length")
        chain = [ChainEntry(int(q), str(p), str(k), json.loads(str(b))) for q, p, k, b in zip(seqs, prevs, kinds, bodies)]
        if not all(isinstance(e.body, dict) for e in chain):
            raise ValueError("an entry body is not a JSON object")
        for entry in chain:
            bytes.fromhex(entry.prev_hash)
        return str(record["run-id"]), int(record["round"]), chain
    except (KeyError, TypeError, ValueError) as exc:
        raise secagg.MalformedMessageError(f"malformed ledger chain: {type(exc).__name__}: {exc}") from None


class RemoteLedgerSigner:
    """The coordinator's handle on one site's signer: the :class:`dp.LedgerSigner` interface over Flower.

    ``registry`` (site -> verify key) or None: with it, a signature that does not verify against the
    site's registered key is refused before anything is committed. ``owed`` (site -> anchor record)
    is the fleet's list of anchors still to deliver.
    """

    def __init__(self, site: str, node_id: int, grid, timeout: float, registry: Mapping[str, bytes] | None,
                 owed: dict) -> None:
        self.site = site
        self.node_id = node_id
        self.grid = grid
        self.timeout = float(timeout)
        self.registry = None if registry is None else dict(registry)
        self.owed = owed

    def __repr__(self) -> str:
        return f"RemoteLedgerSigner(site={self.site!r}, node={self.node_id})"

    def sign_entry(self, statement: EntryStatement) -> bytes:
        where = f"site {self.site!r}'s spend (entry {statement.seq}, round {statement.round})"

        def refuse(why: str) -> SiteSignatureError:
            return SiteSignatureError(f"{where}: {why}; the round's spend is not committed", site=self.site,
                                      round=statement.round)

        message = Message(RecordDict({STATEMENT_RECORD: statement_record(statement)}), dst_node_id=self.node_id,
                          message_type=LEDGER, group_id=f"ledger-{statement.round}", ttl=self.timeout + 60.0)
        replies = [r for r in self.grid.send_and_receive([message], timeout=self.timeout)
                   if r.metadata.src_node_id == self.node_id]
        if not replies:
            raise refuse(f"the node did not answer within {self.timeout:g} s (no signature)")
        reply = replies[0]
        if reply.has_error():
            raise refuse(f"the node failed: {reply.error.reason}")
        record = reply.content.config_records.get(STATEMENT_RECORD)
        if record is None or "signature" not in record:
            reason = record.get("refusal") if record is not None else None
            raise refuse(f"the node refused to sign: {reason}" if reason else "the reply carries no signature")
        signature = bytes(record["signature"])
        if self.registry is not None:
            why = check_entry_signature(self.registry, statement, signature.hex())
            if why is not None:
                raise refuse(why)
        return signature

    def record_anchor(self, run_id: str, seq: int, digest: str) -> None:
        """Owe the node the anchor of its entry ``seq``: it rides on the next message to the node."""
        self.owed[self.site] = anchor_record(run_id, seq, digest)


# -- the node's side --------------------------------------------------------------------


def anchor_dir(state_dir, run_id: str) -> Path:
    """``STATE_DIR/anchors/RUN_ID``: the node's anchor of one coordinator ledger (``--anchors`` takes it)."""
    if not run_id or not all(c.isalnum() or c in "-_." for c in run_id) or run_id.strip(".") == "":
        raise secagg.InvalidInputError(f"run id {run_id!r} is not a safe folder name")
    return Path(state_dir) / ANCHORS_DIR / run_id


def node_ledger_signer(site: str, seed: bytes, state_dir, run_id: str, approve=None) -> LedgerSigner:
    """The node's :class:`dp.LedgerSigner` for one coordinator ledger, with what it signed before restored."""
    folder = anchor_dir(state_dir, run_id)
    signed = {}
    path = folder / _SIGNED_FILE
    if path.is_file():
        try:
            signed = {(run_id, int(seq)): str(digest) for seq, digest in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise LedgerError(f"{path} does not parse ({type(exc).__name__}); the node cannot anchor") from None
    return LedgerSigner(site, seed, folder, approve=approve, signed=signed)


def remember_signed(signer: LedgerSigner, state_dir, run_id: str) -> None:
    """Persist (0600) the chain hashes ``signer`` computed for ``run_id``, so a later message can anchor them."""
    from ...federation.runstore import private_dir

    folder = private_dir(anchor_dir(state_dir, run_id))
    hashes = {str(seq): digest for (run, seq), digest in sorted(signer.signed_hashes().items()) if run == run_id}
    write_private_atomic(folder / _SIGNED_FILE, (json.dumps(hashes, indent=2, sort_keys=True) + "\n").encode())


def note_release(state_dir, run_id: str, site: str, round_index: int, state: str) -> None:
    """Record in the node's own state (0600) that its masked update of ``round_index`` left it (``released``),
    was then to be unmasked (``survivor``) or was declared unused (``dropped``): see
    :class:`dp.ReleaseRecord`. ``secagg ledger verify --anchors`` reads it beside the anchor."""
    from ...federation.runstore import private_dir

    folder = private_dir(anchor_dir(state_dir, run_id))
    path = folder / RELEASE_FILE
    record = ReleaseRecord.read(path) if path.is_file() else ReleaseRecord(run_id, site, {})
    record.with_round(round_index, state).write(path)
