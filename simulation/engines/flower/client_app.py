"""The Flower ``ClientApp``: one hospital's side (its data, local DP-SGD, its own ledger, its ClientSession).

Everything private stays on the node. The node's state of a run (its
:class:`secagg.ClientSession`, with its private keys and masked input, the
round's setup and DP parameters, its release and signature flags, its budget
check's report) lives in ``context.state``, which the SuperNode keeps between
the messages of a run: all of it sealed as one record (XChaCha20-Poly1305,
:mod:`.sealed_state`, :func:`load_state`) under a key that never leaves the
node's ``state-dir``, and unpickled only once it authenticated - so whoever
writes Flower's state store can neither read nor change it, nor make the node
load a pickle of theirs, and a node without a state-dir takes part in no session.
Only the session's answers (wire bytes) are sent back; training losses and clip counts are not (they are not covered by the DP
guarantee). The update is weighted by the site's public FedAvg weight from
the setup, never by its record count, and trained at the run's privacy unit
(patient by default).

**The node does not trust the coordinator's privacy accounting.** With a
``state-dir`` it keeps its own :class:`dp.PrivacyLedger` - one for all the runs
it takes part in, with its own ``epsilon-budget`` and ``delta`` - so its budget
composes across runs: before training it checks that the round's DP-SGD
parameters (sent in the setup) keep it within budget, and it commits the
spend *before* its masked update leaves (on answering MaskedInputCollection);
a round that would pass its budget is refused. The epsilon report of the setup's
check is sealed in ``context.state`` with the session, and the commit reuses
it when the ledger's history is still the one it was computed for
(:class:`dp.ProjectedSpend`); otherwise it computes its own. It also rebuilds the encoder
from the setup and refuses one whose bound differs from the coordinator's.

**Nor does it trust the coordinator's ledger.** The node signs its own ledger's
spends with the site's Ed25519 key (:func:`node_ledger_key`), as the in-process
simulation's sites sign theirs, so ``secagg ledger verify STATE_DIR/ledger
--registry REG`` checks it; and it signs the spend entries the coordinator
records for its site (``query.ledger``, :func:`sign_ledger_entry`); before it
reveals any unmask share it checks that the round's committed spends charge
every survivor and anchors the last of them in ``STATE_DIR/anchors/RUN_ID/``
(:func:`gate_unmask`, :func:`take_anchor`, :mod:`.ledger_link`). Its ledger accounts at the run's privacy unit (patient by
default) and refuses a run of another unit.

Node configuration (``flower-supernode --node-config``):

* ``partition-id`` (int): the node's index; ``site`` (str): the site's name
  (default ``site-<partition-id + 1>``), which the coordinator's ledger uses.
* ``data`` (str): the site's directory of NIfTI volumes (``healthy/`` and
  optionally ``pathology/``, :func:`models.load_site`); needed for ``dp-sgd``.
* ``state-dir`` (str), ``epsilon-budget`` (float) and ``delta`` (float, default
  1e-5): the node's journal of every session it joined (a session offered twice
  is refused, :mod:`.session_journal`), the key ``state.key`` that seals its session in
  ``context.state`` (:mod:`.sealed_state`; a node without a state-dir is refused every
  session), its own ledger (``STATE_DIR/ledger/``, every run composed; a
  round is never released twice) and budget, and the preprocessing cache;
  ``site-level-budget`` (float): its site-level budget when the run uses
  distributed DP (the node recalibrates the mechanism itself and adds its
  share of the noise before masking). The state-dir also holds the site's
  ledger key ``SITE.ed25519`` when no ``signing-key`` is set (created 0600 on
  first use, its verify key printed for the registry; or made beforehand by
  ``secagg keys new --site SITE --out STATE_DIR --registry REG``) and its
  anchors of the coordinators' ledgers (``anchors/RUN_ID/``).
* ``signing-key`` and ``registry`` (str, active mode): the site's Ed25519 key
  file (which then also signs its ledger spends) and its own copy of the
  consortium's registry of verify keys (:mod:`simulation.federation.identity`); a session
  whose verify keys differ from the registry is refused. ``max-corrupt`` (int,
  default 0): the fewest colluding sites the session's consistency quorum must
  tolerate; a coordinator offering a smaller ``max_corrupt`` (a smaller quorum)
  is refused, and so is a graph degree and threshold whose malicious-server failure bound with that many
  colluders exceeds 2^-``security-bits`` (default 40), recomputed by the node.
* ``passphrase-env`` (str): the environment variable holding the passphrase of a passphrase-protected
  signing key (default ``SECAGG_KEY_PASSPHRASE``; :mod:`simulation.federation.passphrase`). The SuperNode's
  environment passes on to its ClientApp processes; the passphrase itself never goes in a config.
* The ``state-dir`` must be its owner's alone: one that group or others can access, or that another
  user owns, is refused (:func:`node_state_dir`), as are key files with a wider mode than 0600.
* ``allow-insecure-rng`` (bool, default false): accept a run whose DP noise
  comes from a non-cryptographic generator (reproducible experiments only).
* ``drop`` (str, tests and demos): ``"ROUND:STAGE"`` (stages ``advertise share
  mask consistency unmask``): there the node stops answering - it sleeps past
  the stage timeout and replies with nothing - so Flower's timeout decides it
  dropped. On Flower's simulation engine (no node config) the run config's
  ``simulate-drop = "SITE:ROUND:STAGE,..."`` does the same, and
  ``node-data-root``/``node-state-root`` give each simulated node
  ``ROOT/<site>`` and ``node-epsilon-budget``/``node-site-level-budget`` its
  budgets. A deployed SuperNode never reads these from the run config (which
  comes from the coordinator's side): only its operator's ``--node-config``.
"""

from __future__ import annotations

import pickle
from fractions import Fraction
import sys
import time
from pathlib import Path

import numpy as np

import secagg
from secagg import wire
from secagg.messages import MaskedInputRequest, UnmaskRequest

from . import require_flwr
from ...errors import SimulationInputError
from ...federation.runstore import private_dir, require_private_dir
from .sealed_state import seal, unseal
from .session_journal import claim_session
from .ledger_link import (ANCHOR_RECORD, ROUND_CHAIN_RECORD, STATEMENT_RECORD, node_ledger_signer, note_release,
                          remember_signed, round_chain_from_record, statement_from_record)
from .transport import FACTS_RECORD, STAGE_OF, RoundSetup, hello_payload

require_flwr()

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

__all__ = ["app", "synthetic_update", "site_name", "node_setting", "node_path", "node_state_dir", "node_ledger_key", "check_budget",
           "budget_check", "commit_release", "sign_ledger_entry", "take_anchor", "node_signing_key", "node_facts",
           "load_state", "store_state", "NodeStateError"]

app = ClientApp()

_STATE = "secagg-client"


def synthetic_update(seed: int, site: str, round_index: int, length: int, clip: float) -> tuple[np.ndarray, int]:
    """A fixed float update in [-clip, clip] and a record count (tests: the FedAvg is known in advance).

    Public test inputs only; ``numpy.random`` never makes keys, masks or noise here.
    """
    rng = np.random.default_rng([seed, round_index, *site.encode()])
    return rng.uniform(-clip, clip, size=length), int(rng.integers(8, 64))


def site_name(context: Context) -> str:
    return str(context.node_config.get("site") or f"site-{int(context.node_config['partition-id']) + 1}")


def _simulated(context: Context) -> bool:
    """A node of Flower's simulation engine: its node config is exactly what that engine sets.

    Only simulated nodes (one machine, the researcher is every party) read their data, state and
    budgets from the run config, which the coordinator's side supplies. A SuperNode whose operator
    set anything of ours (``site``, ``state-dir``, ...) never does, and neither does a process whose bundle
    the node's app verifier approved (a real SuperNode, whatever its node config looks like: Flower's own
    guides start SuperNodes with exactly ``partition-id`` and ``num-partitions``).
    """
    from .app_trust import verified_app

    return ("num-partitions" in context.node_config and set(context.node_config) <= {"partition-id", "num-partitions"}
            and verified_app() is None)


def node_setting(context: Context, key: str, run_key: str):
    """The node's setting ``key`` from its operator's ``--node-config``; a simulated node (only) falls back
    to the run config's ``run_key``. A deployed SuperNode never takes a budget from the coordinator's side."""
    value = context.node_config.get(key)
    if value not in (None, ""):
        return value
    return (context.run_config.get(run_key) or None) if _simulated(context) else None


def node_path(context: Context, key: str, run_key: str) -> Path | None:
    """The node's path ``key`` (``state-dir``, ``data``); a simulated node (only) uses ``ROOT/<site>``, where
    ROOT is the run config's ``run_key`` (``node-state-root``, ``node-data-root``)."""
    if context.node_config.get(key):
        return Path(str(context.node_config[key]))
    root = context.run_config.get(run_key) if _simulated(context) else None
    return Path(str(root)) / site_name(context) if root else None


def node_state_dir(context: Context) -> Path | None:
    """The node's ``state-dir`` (simulated: ``node-state-root/<site>``), or None without one.

    Least privilege (issue 21): it is created 0700 when missing, and an existing one that group or others
    can access, or that another user owns, is refused
    (:class:`~simulation.federation.runstore.InsecurePermissionsError`, naming the path and its mode): it holds the
    node's sealing key, its ledger and usually its signing key.
    """
    state_dir = node_path(context, "state-dir", "node-state-root")
    return None if state_dir is None else require_private_dir(state_dir, "the node's state-dir")


def _drop_point(context: Context):
    """(round, stage) at which this node vanishes: its ``drop`` node config, or the run's ``simulate-drop``."""
    spec = str(context.node_config.get("drop", "") or "")
    if spec:
        round_text, stage = spec.split(":")
        return int(round_text), stage
    spec = str(context.run_config.get("simulate-drop", "") or "") if _simulated(context) else ""
    for item in filter(None, spec.split(",")):
        site, round_text, stage = item.strip().rsplit(":", 2)
        if site == site_name(context):
            return int(round_text), stage
    return None


def _vanish(context: Context, message: Message, stage_timeout: float) -> Message:
    time.sleep(float(context.node_config.get("drop-sleep", stage_timeout + 5.0)))
    return Message(RecordDict(), reply_to=message)


def _reply(message: Message, anchored: ConfigRecord | None = None, **fields) -> Message:
    records = {"secagg": ConfigRecord(fields)}
    if anchored is not None:
        records[ANCHOR_RECORD] = anchored
    return Message(RecordDict(records), reply_to=message)


def _refuse(message: Message, reason: str, anchored: ConfigRecord | None = None) -> Message:
    print(f"[secagg-node] refused: {reason}", file=sys.stderr, flush=True)
    return _reply(message, anchored, refusal=reason)


@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    """The node's site name; signed with the site's key over the coordinator's challenge when one is sent.

    With a registry the coordinator registers only a node that proves it holds the key registered for
    the site it names (:func:`.transport.hello_payload`), so a node cannot take another site's name.
    """
    site = site_name(context)
    answer = {"site": site}
    challenge = message.content.config_records.get("challenge")
    if challenge is not None:
        try:
            key = node_ledger_key(context, site)
        except (secagg.ProtocolError, ValueError, OSError) as exc:
            print(f"[secagg-node] cannot sign the registration: {exc}", file=sys.stderr, flush=True)
            key = None
        if key is not None:
            from secagg.crypto import sign

            answer["signature"] = sign(key.seed, hello_payload(bytes(challenge["nonce"]), site))
    return Message(RecordDict({"site": ConfigRecord(answer), FACTS_RECORD: ConfigRecord(node_facts(context, site))}),
                   reply_to=message)


def node_facts(context: Context, site: str) -> dict:
    """Where this node keeps its ledger and its signing key, and whether the key is passphrase-protected,
    as its operator configured it, and whether this process's app bundle was checked against the
    consortium's app signatures before it ran (:func:`~simulation.engines.flower.app_trust.verified_app`: set only
    by the verifier of ``secagg flower supernode``, in this process): the coordinator records them in the
    run's summary and the DPIA states them as reported by the node. Paths and public hashes only, never a
    key or a passphrase."""
    from ...federation.passphrase import is_sealed
    from .app_trust import verified_app

    state = node_path(context, "state-dir", "node-state-root")
    key_path = context.node_config.get("signing-key") or (state / f"{site}.ed25519" if state is not None else "")
    try:
        protected = bool(key_path) and is_sealed(Path(str(key_path)).read_text()[:64])
    except (OSError, UnicodeDecodeError):
        protected = False
    approval = verified_app()
    return {"ledger": str(state / "ledger") if state is not None else "", "signing-key": str(key_path),
            "key-protected": protected, "registry": str(context.node_config.get("registry") or ""),
            "app-sha256": approval.fab_sha256 if approval else "", "app-key": approval.verify_key if approval else ""}


# -- the node's own privacy ledger ------------------------------------------------------


def _event(setup: RoundSetup, round_index: int | None = None):
    """The spend of one round; in the node's own ledger ``round_index`` is its own sequence number."""
    from dp.events import PrivacyEvent

    return PrivacyEvent(site=setup.site, round=setup.round_index if round_index is None else round_index, noise_multiplier=setup.noise_multiplier,
                        sample_rate=setup.sample_rate, steps=setup.local_steps, delta=setup.delta,
                        clipping_norm=setup.max_grad_norm, secure_rng=setup.secure_rng, unit=setup.privacy_unit)


def node_ledger_key(context: Context, site: str):
    """This site's Ed25519 identity for ledger signatures (:class:`secagg.crypto.SigningKeyPair`), or None.

    The ``signing-key`` of the node config when set (active mode's identity); otherwise
    ``STATE_DIR/SITE.ed25519``, created (mode 0600, :func:`simulation.federation.identity.write_identity`) on first
    use when missing - ``secagg keys new --site SITE --out STATE_DIR --registry REG`` makes the same file
    and adds its verify key to a registry beforehand; a created key's verify key is printed on stderr
    for the consortium to register. None without either (such a node cannot sign: it takes no part).
    """
    from ...federation.identity import load_signing_key, write_identity

    key_path = context.node_config.get("signing-key")
    if key_path:
        return load_signing_key(str(key_path), passphrase_env=_passphrase_env(context))
    state_dir = node_state_dir(context)
    if state_dir is None:
        return None
    path = state_dir / f"{site}.ed25519"
    if not path.exists():
        private_dir(state_dir)
        identity = write_identity(state_dir, site)
        print(f"[secagg-node] created this site's ledger identity {path} (mode 0600); its verify key "
              f"{identity.verify_key.hex()} must be in the consortium's registry under {site!r}",
              file=sys.stderr, flush=True)
    return load_signing_key(path, passphrase_env=_passphrase_env(context))


def _passphrase_env(context: Context) -> str | None:
    """The environment variable holding the passphrase of a protected signing key (node config
    ``passphrase-env``; default ``SECAGG_KEY_PASSPHRASE``). Only a name travels in the config, never a
    passphrase: the SuperNode's environment passes on to the ClientApp processes it starts."""
    return str(context.node_config.get("passphrase-env") or "") or None


def _ledger(context: Context, setup: RoundSetup):
    """The node's own ledger (``STATE_DIR/ledger``), or None without a ``state-dir``.

    One ledger per node for every run it takes part in, so its budget composes across runs and
    a coordinator cannot hand it a fresh one. Its delta is the node's (``delta``, default 1e-5)
    and its privacy unit the first run's (a run of another unit is refused: epsilons of different
    units do not compose); with distributed DP the node also needs its own ``site-level-budget``.
    """
    from dp import PrivacyLedger

    state_dir = node_state_dir(context)
    if state_dir is None:
        return None
    budget = node_setting(context, "epsilon-budget", "node-epsilon-budget")
    if not budget:
        raise secagg.InvalidInputError("the node has a state-dir but no epsilon-budget: set the budget this "
                                       "hospital allows for its data (--node-config 'epsilon-budget=8.0')")
    delta = float(context.node_config.get("delta", 1e-5))
    if setup.delta != delta:
        raise secagg.InvalidInputError(f"the run's delta {setup.delta} is not this node's delta {delta}")
    site_level = node_setting(context, "site-level-budget", "node-site-level-budget")
    directory = state_dir / "ledger"
    if (directory / "ledger.sqlite").exists():
        ledger = PrivacyLedger.open(directory)
    else:
        private_dir(directory)  # the node's state: owner-only whatever the umask (issue 21)
        ledger = PrivacyLedger.create(directory, run_id=f"node-{setup.site}", delta=delta,
                                      budgets={setup.site: float(budget)},
                                      site_level_budget=float(site_level) if site_level else None,
                                      unit=setup.privacy_unit)
    if setup.site not in ledger.budgets or ledger.delta != delta:
        ledger.close()
        raise secagg.InvalidInputError(f"{directory} is another site's ledger or has another delta")
    if ledger.unit != setup.privacy_unit:
        ledger.close()
        raise secagg.InvalidInputError(f"the run's privacy unit is one {setup.privacy_unit}; this node's ledger "
                                       f"{directory} accounts per {ledger.unit} (epsilons of different units do "
                                       "not compose)")
    if setup.ddp_mechanism and ledger.site_level is None:
        ledger.close()
        raise secagg.InvalidInputError("distributed DP: this node keeps no site-level budget: start it with "
                                       "--node-config 'site-level-budget=10.0' (on a new state-dir)")
    return ledger


def _released(ledger, setup: RoundSetup) -> bool:
    """Has this node already released an update for this (run, round)?"""
    return any(e.kind == "round" and (e.body.get("extra") or {}).get("run") == setup.run_id
               and (e.body.get("extra") or {}).get("round") == setup.round_index for e in ledger.entries())


def commit_release(ledger, setup: RoundSetup, ddp, signer=None, projection=None) -> None:
    """Commit this node's spend for the round in its own ledger, before the update leaves.

    Under the node's own sequence number (its ledger composes every run it joined); the entry's
    ``extra`` names the coordinator's run and round, and a (run, round) is never committed twice
    (:class:`secagg.InvalidInputError`). ``signer`` (:class:`dp.LedgerSigner` of this site): the
    spend entries are signed by the site, as the simulation's are, so ``secagg ledger verify
    STATE_DIR/ledger --registry REG`` checks them. ``projection`` (:class:`dp.ProjectedSpend`): the epsilon
    report this node computed for the round at setup (:func:`budget_check`); the ledger reuses it only when
    its history and event are still exactly the ones it was computed for (:meth:`dp.PrivacyLedger.reusable_report`).
    """
    if _released(ledger, setup):
        raise secagg.InvalidInputError(f"round {setup.round_index} of run {setup.run_id} was already released by "
                                       "this node; it is not released twice")
    local = max(ledger.committed_rounds(), default=-1) + 1
    event = _event(setup, local)
    site_level = {setup.site: ddp.event(local)} if ddp is not None else None
    ledger.commit_round(local, [event], site_level=site_level,
                        extra={"run": setup.run_id, "round": setup.round_index, "released": [setup.site]},
                        signers=None if signer is None else {setup.site: signer},
                        projections=() if projection is None else (projection,))


def check_budget(ledger, setup: RoundSetup, ddp) -> str | None:
    """Why this node must sit the round out (None: it may take part): the round was already released,
    or its spend (and, with distributed DP, its site-level spend) would pass this node's own budget."""
    return budget_check(ledger, setup, ddp)[0]


def budget_check(ledger, setup: RoundSetup, ddp):
    """:func:`check_budget`'s answer, and the epsilon report it computed for the round
    (:class:`dp.ProjectedSpend`, None when it computed none), which :func:`commit_release` may reuse."""
    if _released(ledger, setup):
        return f"round {setup.round_index} of run {setup.run_id} was already released by this node", None
    local = max(ledger.committed_rounds(), default=-1) + 1
    decision = ledger.check_budget(setup.site, [_event(setup, local)])
    if not decision.allowed:
        return (f"budget: this round would reach epsilon {decision.projected.bound:.3f} > this node's budget "
                f"{decision.budget}"), None
    if ddp is not None:
        allowed, projected = ledger.check_site_level_budget(setup.site, ddp.event(local))
        if not allowed:
            return f"site-level budget: this round would reach epsilon {projected:.3f}", None
    return None, decision.projection


def sign_ledger_entry(context: Context, statement) -> bytes:
    """Sign this site's spend entry in the coordinator's ledger (:mod:`.ledger_link`), or refuse.

    The node signs only a ``spend`` / ``site_level_spend`` of its own site, for the run and round it
    is in, after its masked update left, of exactly the event it trained (or noised) with, and once
    per kind and round; it keeps the entry's chain hash (``STATE_DIR/anchors/RUN_ID``) to anchor it
    later. Raises :class:`dp.LedgerError` (refusal) or :class:`secagg.InvalidInputError` (no identity).
    """
    from dp.errors import LedgerError

    try:
        state = load_state(context)
    except NodeStateError as exc:
        raise LedgerError(str(exc)) from None
    if state is None:
        raise LedgerError("this node is in no round: it signs no spend")
    setup: RoundSetup = state["setup"]
    if (statement.run_id, statement.site, statement.round) != (setup.run_id, setup.site, setup.round_index):
        raise LedgerError(f"the entry charges site {statement.site!r} in round {statement.round} of run "
                          f"{statement.run_id}; this node is {setup.site!r} in round {setup.round_index} of run "
                          f"{setup.run_id}")
    if not state["released"]:
        raise LedgerError(f"this node released no update in round {setup.round_index}")
    signed_kinds = str(state["signed-kinds"]).split()
    if statement.kind in signed_kinds:
        raise LedgerError(f"this node already signed its {statement.kind} of round {setup.round_index}")
    if statement.kind == "spend":
        expected = _event(setup).to_dict()
    else:
        ddp = state["ddp"]
        expected = None if ddp is None else ddp.event(setup.round_index).to_dict()
    if statement.body.get("event") != expected:
        raise LedgerError(f"the entry's event is not the {statement.kind} this node trained with in round "
                          f"{setup.round_index}")
    key = node_ledger_key(context, setup.site)
    if key is None:
        raise secagg.InvalidInputError("this node has no identity to sign with (no signing-key, no state-dir)")
    state_dir = node_state_dir(context)
    if state_dir is None:
        from dp import LedgerSigner

        return LedgerSigner(setup.site, key.seed, ".").sign_entry(statement)  # nowhere to anchor
    signer = node_ledger_signer(setup.site, key.seed, state_dir, setup.run_id)
    signature = signer.sign_entry(statement)
    remember_signed(signer, state_dir, setup.run_id)
    state["signed-kinds"] = " ".join(signed_kinds + [statement.kind])
    state["signed-seq"] = max(int(state.get("signed-seq", 0)), int(statement.seq))
    state["signed-seqs"] = " ".join(str(state.get("signed-seqs", "")).split() + [str(int(statement.seq))])
    store_state(context, state)
    return signature


def take_anchor(message: Message, context: Context) -> ConfigRecord | None:
    """Anchor the coordinator's ledger entry that ``message`` says this site signed (None: it says none).

    The reply's acknowledgement: ``{"anchored": seq}``, or ``{"refusal": why}`` when the node did
    not sign that entry with that chain hash (it anchors only what it computed itself) or keeps no
    state; either way the coordinator stops resending it.
    """
    from dp.errors import LedgerError

    from .ledger_link import anchor_from_record

    record = message.content.config_records.get(ANCHOR_RECORD)
    if record is None:
        return None
    try:
        run_id, seq, digest = anchor_from_record(record)
        state_dir = node_state_dir(context)
        key = node_ledger_key(context, site_name(context))
        if state_dir is None or key is None:
            raise LedgerError("this node keeps no state-dir: it anchors nothing")
        node_ledger_signer(site_name(context), key.seed, state_dir, run_id).record_anchor(run_id, seq, digest)
    except (LedgerError, secagg.ProtocolError, ValueError) as exc:
        print(f"[secagg-node] ledger anchor not taken: {exc}", file=sys.stderr, flush=True)
        return ConfigRecord({"refusal": str(exc)})
    return ConfigRecord({"anchored": seq})


@app.query("ledger")
def ledger_query(message: Message, context: Context) -> Message:
    """Sign a spend entry of the coordinator's ledger (ConfigRecord "ledger"), and/or take an anchor."""
    from dp.errors import PrivacyError

    anchored = take_anchor(message, context)
    records = {} if anchored is None else {ANCHOR_RECORD: anchored}
    request = message.content.config_records.get(STATEMENT_RECORD)
    if request is not None:
        try:
            signature = sign_ledger_entry(context, statement_from_record(request))
            records[STATEMENT_RECORD] = ConfigRecord({"signature": signature})
        except (PrivacyError, secagg.ProtocolError, ValueError) as exc:
            print(f"[secagg-node] refused to sign: {exc}", file=sys.stderr, flush=True)
            records[STATEMENT_RECORD] = ConfigRecord({"refusal": f"{type(exc).__name__}: {exc}"})
    return Message(RecordDict(records), reply_to=message)


def _required_kinds(state) -> list[str]:
    """The spend kinds this node must have signed before its update may be unmasked."""
    return ["spend"] + (["site_level_spend"] if state["ddp"] is not None else [])


def gate_unmask(context: Context, state, setup: RoundSetup, incoming, chain_record) -> None:
    """Before this node reveals any share of a round: every survivor's spend is in the coordinator's ledger.

    A survivor's update is decoded from the self-mask shares of t *other* sites, so checking only
    its own spend would let a coordinator decode a site it never charged (issue 15). The unmask
    request carries the round's committed spends in chain order (``chain_record``, ConfigRecord
    "ledger-round", :mod:`.ledger_link`). Before it answers, a node whose update is among the
    survivors checks (:func:`dp.check_round_chain`; the argument is in :mod:`dp.round_chain`):

    1. the entries form one chain (each ``prev_hash`` is the hash the node computes for the entry
       before it) of this run and round, spends only;
    2. every entry it signed this round is in it, with the chain hash it computed when signing
       (and it signed its ``spend``, and its ``site_level_spend`` under distributed DP);
    3. every survivor's site - per the setup's client-id -> site map, which in active mode the
       node checked against its registry (:func:`simulation.federation.identity.check_session_keys`) - has
       a ``spend`` (and a ``site_level_spend`` under distributed DP), no site twice;
    4. with a registry (node config ``registry``), every entry carries its site's valid signature.

    Then it anchors the *last* entry of that chain in ``STATE_DIR/anchors/RUN_ID`` at the hash it
    computed (:meth:`dp.LedgerSigner.record_chain_anchor`), so deleting or altering any survivor's
    spend breaks this node's anchor; and it notes the round ``survivor`` in its release record.
    Any failure raises :class:`dp.LedgerError`: the node reveals nothing and the release record
    keeps ``released``. A request that lists this node as dropped although its masked update left
    it is refused by its session (secagg never asks that), so it changes nothing in the record
    either: a coordinator cannot erase the record of a release by calling it a dropout.
    """
    from dp import check_round_chain
    from dp.errors import LedgerError

    if not state["released"] or setup.client_id not in incoming.survivors:
        return  # nothing of this node's was released, or the session refuses the request itself
    state_dir = node_state_dir(context)
    missing = [k for k in _required_kinds(state) if k not in str(state["signed-kinds"]).split()]
    if missing:
        raise LedgerError(f"this node unmasks round {setup.round_index} only after it signed its "
                          f"{' and '.join(missing)} in the coordinator's ledger, and the coordinator asked for "
                          "no such signature")
    key = node_ledger_key(context, setup.site)
    if state_dir is None or key is None:
        raise LedgerError("this node keeps no state-dir or identity: it cannot anchor, so it does not unmask")
    if chain_record is None:
        raise LedgerError(f"the unmask request of round {setup.round_index} carries no committed spends "
                          "(ConfigRecord 'ledger-round'): this node reveals no share without seeing every "
                          "survivor charged")
    run_id, round_index, chain = round_chain_from_record(chain_record)
    if (run_id, round_index) != (setup.run_id, setup.round_index):
        raise LedgerError(f"the spends shown are of round {round_index} of run {run_id}; this is round "
                          f"{setup.round_index} of run {setup.run_id}")
    sites = setup.sites_by_client
    unknown = sorted(set(incoming.survivors) - set(sites))
    if unknown:
        raise LedgerError(f"survivor client {unknown[0]} is not a participant of the round's setup")
    signer = node_ledger_signer(setup.site, key.seed, state_dir, setup.run_id)
    signed = signer.signed_hashes()
    own = {int(q): signed.get((setup.run_id, int(q)), "") for q in str(state.get("signed-seqs", "")).split()}
    registry_path = context.node_config.get("registry")
    registry = None
    if registry_path:
        from ...federation.identity import load_registry

        registry = load_registry(str(registry_path))
    check_round_chain(chain, run_id=setup.run_id, round_index=setup.round_index, own=own,
                      survivor_sites=[sites[c] for c in sorted(incoming.survivors)],
                      site_level=state["ddp"] is not None, registry=registry)
    signer.record_chain_anchor(setup.run_id, chain)
    note_release(state_dir, setup.run_id, setup.site, setup.round_index, "survivor")


# -- local work ----------------------------------------------------------------------


def _local_update(setup: RoundSetup, context: Context, global_arrays) -> np.ndarray:
    """Local DP-SGD on the node's own data from the global weights (at the run's privacy unit): the
    flattened delta. Losses and counts stay on the node."""
    import torch

    import models
    from dp import DpSgdConfig
    from models.errors import ModelsError

    from ...federation.site import Site

    data_dir = node_path(context, "data", "node-data-root")
    if data_dir is None:
        raise secagg.InvalidInputError("this node has no data: start it with --node-config 'data=/path/to/site'")
    state_dir = node_state_dir(context)
    try:
        site_data = models.load_site(data_dir, image_size=setup.image_size,
                                     cache_dir=None if state_dir is None else state_dir / "preprocessed")
        split = models.split_healthy(site_data, val_fraction=setup.val_fraction, seed=setup.split_seed)
        train = torch.from_numpy(models.training_array(split.train))
        patients = models.training_patients(split.train)
    except ModelsError as exc:
        raise secagg.InvalidInputError(f"cannot load the site's data from {data_dir}: {exc}") from None
    torch.manual_seed(setup.model_seed)
    model = models.create_model(setup.model, image_size=setup.image_size)
    names = models.shared_parameter_names(model)
    if len(global_arrays) != len(names):
        raise secagg.MalformedMessageError(f"{len(global_arrays)} global arrays; the model shares {len(names)}")
    shared = {name: torch.from_numpy(np.array(array)) for name, array in zip(names, global_arrays)}
    site = Site(setup.site, setup.client_id, train, model, names, patients=patients,
                public_weight=setup.public_weight)
    dp_config = DpSgdConfig(noise_multiplier=setup.noise_multiplier, max_grad_norm=setup.max_grad_norm,
                            sample_rate=setup.sample_rate, steps=setup.local_steps,
                            learning_rate=setup.learning_rate, delta=setup.delta, secure_mode=setup.secure_rng,
                            privacy_unit=setup.privacy_unit, public_size=setup.public_size or None,
                            max_slices_per_patient=setup.max_slices_per_patient or None)
    update = site.train(shared, dp_config, setup.round_index)
    if update.event != _event(setup):
        raise RuntimeError(f"training spent {update.event}, not the round's planned event")
    return update.vector


def node_signing_key(context: Context, setup: RoundSetup) -> bytes | None:
    """Active mode: this site's signing key, once the session's verify keys match our own registry."""
    from ...federation.identity import check_session_keys, load_registry, load_signing_key

    key_path, registry_path = context.node_config.get("signing-key"), context.node_config.get("registry")
    if not setup.session.active:
        if registry_path:
            # A passive session cannot prove who the other participants are: a coordinator could fill
            # it with clients it controls and unmask this node's update. A node with a registry refuses.
            raise secagg.VerificationError("this node takes part in active-mode sessions only (it has a registry)")
        return None
    if not key_path or not registry_path:
        raise secagg.InvalidInputError("active mode: start this node with --node-config "
                                       "'signing-key=\"FILE\" registry=\"FILE\"' (see `secagg keys new`)")
    identity = load_signing_key(str(key_path), passphrase_env=_passphrase_env(context))
    registry = load_registry(str(registry_path))
    if registry.get(setup.site) != identity.verify_key:
        raise secagg.InvalidInputError(f"this node's signing key is not site {setup.site!r}'s key in its registry")
    check_session_keys(setup.session.verify_keys, setup.sites_by_client, registry)
    # The consistency quorum grows with max_corrupt (docs/security.md): a coordinator that lowered it
    # could collect two quorums that meet only in colluders. The node's operator sets the floor.
    floor = int(context.node_config.get("max-corrupt", 0) or 0)
    session = setup.session
    if session.max_corrupt < floor:
        raise secagg.VerificationError(
            f"the session tolerates max_corrupt = {session.max_corrupt} colluding sites; this node requires "
            f"at least {floor} (its --node-config 'max-corrupt')")
    # Nor can it pick a graph and threshold that fall to the colluders the node assumes: the node
    # recomputes the malicious-server bound itself (secagg.params) and wants 2^-security-bits.
    bits = float(context.node_config.get("security-bits", secagg.DEFAULT_SECURITY_BITS))
    security, _ = secagg.failure_bounds(session.n, session.effective_degree, session.threshold,
                                        corrupt_fraction=Fraction(floor, session.n), dropout_fraction=0,
                                        malicious=True)
    if security > 2.0 ** -bits:
        raise secagg.VerificationError(
            f"the session's graph (k = {session.effective_degree}) and threshold t = {session.threshold} give a "
            f"malicious-server failure bound of {security:.3g} with {floor} colluding sites; this node requires "
            f"<= 2^-{bits:g} (its --node-config 'security-bits')")
    return identity.seed


def _encoder(setup: RoundSetup) -> secagg.FixedPointEncoder:
    encoder = secagg.FixedPointEncoder.create(clip=setup.clip, max_summands=setup.max_summands,
                                              bit_width=setup.session.bit_width)
    if encoder.bound != setup.encoder_bound:
        raise secagg.InvalidInputError(f"encoder bound {encoder.bound} differs from the coordinator's "
                                       f"{setup.encoder_bound}: different secagg versions?")
    return encoder


class NodeStateError(SimulationInputError):
    """The node's per-run state in Flower's ``context.state`` does not open under its state key, or does not
    hold what this node seals there: it was written by someone else, or altered."""


_STATE_TYPES = {"session": secagg.ClientSession, "setup": RoundSetup, "dropped": bool, "released": bool,
                "signed-kinds": str, "signed-seq": int, "signed-seqs": str}


def load_state(context: Context) -> dict | None:
    """The node's state of this run (None: it joined no round of it yet), opened from ``context.state``.

    **All** of it is sealed (:mod:`.sealed_state`: XChaCha20-Poly1305 under ``STATE_DIR/state.key``, bound
    to the site and the run), not only the session's secrets: the setup and DP parameters decide what the
    node commits and signs, and the ``released`` / ``signed-kinds`` flags gate its unmask shares, so whoever
    writes Flower's state store must not be able to change them - nor hand the node a pickle to load: the
    plaintext is unpickled only after it authenticated under the node's own key, i.e. only what this node
    sealed itself. What remains open to that writer is putting back an earlier sealed state of the same run
    and site; the node's ledger and session journal on disk (never in Flower's state) refuse a round
    released twice and a session joined twice, whatever the state says.

    Raises:
        NodeStateError: it does not open, or holds something else.
    """
    record = context.state.config_records.get(_STATE)
    if record is None:
        return None
    state_dir = node_state_dir(context)
    try:
        if state_dir is None:
            raise ValueError("this node has no state-dir to open it with")
        state = pickle.loads(unseal(state_dir, site_name(context), context.run_id, bytes(record["sealed"])))
        if not isinstance(state, dict) or any(not isinstance(state.get(k), t) for k, t in _STATE_TYPES.items()):
            raise TypeError("it does not hold this node's state of a round")
    except (KeyError, TypeError, ValueError, secagg.ProtocolError) as exc:
        raise NodeStateError(f"this node's sealed state does not open: {type(exc).__name__}: {exc}") from None
    return state


def store_state(context: Context, state: dict) -> None:
    """Seal ``state`` (:func:`load_state`) into ``context.state``."""
    sealed = seal(node_state_dir(context), site_name(context), context.run_id, pickle.dumps(state))
    context.state[_STATE] = ConfigRecord({"sealed": sealed})


def _with_anchor(message: Message, context: Context, reply: Message) -> Message:
    """Take the anchor ``message`` carries and acknowledge it - only on a reply that says something: a
    node that vanished (its reply is empty) takes nothing, and the coordinator sends it again later."""
    if reply.content.config_records:
        anchored = take_anchor(message, context)
        if anchored is not None:
            reply.content[ANCHOR_RECORD] = anchored
    return reply


@app.train()
def setup_round(message: Message, context: Context) -> Message:
    """Round setup: check the budget, train locally, encode, open the ClientSession, answer AdvertiseKeys."""
    # The anchor it may carry is of the previous round's entry, when the node missed it then.
    return _with_anchor(message, context, _setup_round(message, context))


def _setup_round(message: Message, context: Context) -> Message:
    from dp.errors import PrivacyError

    from ...federation.site import encode_update

    try:
        setup = RoundSetup.from_record(message.content.config_records["session"])
    except (KeyError, secagg.MalformedMessageError) as exc:
        return _refuse(message, f"malformed setup: {exc}")
    if setup.site != site_name(context) or setup.sites_by_client.get(setup.client_id) != setup.site:
        return _refuse(message, f"setup addressed to site {setup.site!r} as client {setup.client_id}; this node "
                                f"is {site_name(context)!r}")
    if not setup.secure_rng and not context.node_config.get("allow-insecure-rng"):
        return _refuse(message, "the coordinator asks for DP noise from a non-cryptographic generator; this node "
                                "refuses (set allow-insecure-rng=true on the node for reproducible experiments only)")
    if _drop_point(context) == (setup.round_index, "advertise"):
        return _vanish(context, message, setup.stage_timeout)
    try:
        signing_key = node_signing_key(context, setup)
        if node_ledger_key(context, setup.site) is None:
            return _refuse(message, "this node has no identity to sign its ledger spends with: start it with a "
                                    "state-dir (it creates STATE_DIR/SITE.ed25519) or a signing-key")
        if node_state_dir(context) is None:
            # Its session (private keys) is kept sealed under a key in the state-dir, never in the clear.
            return _refuse(message, "this node has no state-dir: it keeps its session sealed under "
                                    "STATE_DIR/state.key and its journal and ledger there (--node-config "
                                    "'state-dir=\"/path\"')")
        ddp = setup.distributed_dp(setup.update_length)
        ledger, projection = _ledger(context, setup), None
        if ledger is not None:
            try:
                refusal, projection = budget_check(ledger, setup, ddp)
            finally:
                ledger.close()
            if refusal:
                return _refuse(message, refusal)
        if setup.update == "synthetic":
            vector, _ = synthetic_update(setup.synthetic_seed, setup.site, setup.round_index,
                                         setup.update_length, setup.clip)
        else:
            vector = _local_update(setup, context, message.content.array_records["global"].to_numpy_ndarrays())
        if vector.size != setup.update_length:
            return _refuse(message, f"update of {vector.size} values; the session expects {setup.update_length}")
        if ddp is not None:
            from dp.distributed import privatize_detailed

            ring = privatize_detailed(vector, ddp, setup.session.session_id).ring
        else:
            ring, _ = encode_update(vector, setup.public_weight, _encoder(setup), setup.weight_bound)
    except (secagg.ProtocolError, PrivacyError, ValueError) as exc:
        return _refuse(message, f"{type(exc).__name__}: {exc}")
    state_dir = node_state_dir(context)
    try:
        claim_session(state_dir, setup.session.fingerprint)  # durable, before any key leaves
        session = secagg.ClientSession(setup.session, setup.client_id, masked_input=ring, signing_key=signing_key)
        advertise = session.advertise()
        # The epsilon report of the budget check is kept with the rest: the masked-input message commits
        # the spend with it instead of computing it again, if the ledger still has the history it was
        # computed for (dp.PrivacyLedger.reusable_report); sealed, so that what decides the commit's budget
        # check is what this node computed, not something written into Flower's state store.
        store_state(context, {"session": session, "setup": setup, "ddp": ddp, "dropped": False, "released": False,
                              "signed-kinds": "", "signed-seq": 0, "signed-seqs": "", "projection": projection})
    except secagg.ProtocolError as exc:
        return _refuse(message, f"{type(exc).__name__}: {exc}")
    return _reply(message, wire=wire.encode(advertise))


@app.query("secagg")
def step(message: Message, context: Context) -> Message:
    """One protocol message in, the session's answer (or a refusal) out."""
    return _with_anchor(message, context, _step(message, context))


def _step(message: Message, context: Context) -> Message:
    from dp.errors import PrivacyError

    # Written by this node itself, sealed under its state key (load_state): a state altered or written outside
    # the node is refused before anything of it is loaded.
    try:
        state = load_state(context)
    except NodeStateError as exc:
        return _refuse(message, str(exc))
    if state is None or state["dropped"]:
        return Message(RecordDict(), reply_to=message)
    setup: RoundSetup = state["setup"]
    session: secagg.ClientSession = state["session"]
    state_dir = node_state_dir(context)
    try:
        data = bytes(message.content.config_records["secagg"]["wire"])
        incoming = wire.decode(data)
    except (KeyError, TypeError) as exc:
        return _refuse(message, f"malformed protocol message: {type(exc).__name__}: {exc}")
    except secagg.ProtocolError as exc:
        return _refuse(message, f"{type(exc).__name__}: {exc}")
    if _drop_point(context) == (setup.round_index, STAGE_OF.get(type(incoming))):
        state["dropped"] = True
        store_state(context, state)
        return _vanish(context, message, setup.stage_timeout)
    try:
        if isinstance(incoming, UnmaskRequest):
            gate_unmask(context, state, setup, incoming, message.content.config_records.get(ROUND_CHAIN_RECORD))
        reply = session.handle(data)
        if isinstance(incoming, MaskedInputRequest) and reply is not None:
            # The masked update is about to leave this node: its spend is committed first.
            ledger = _ledger(context, setup)
            if ledger is not None:
                from dp import LedgerSigner

                key = node_ledger_key(context, setup.site)
                try:
                    commit_release(ledger, setup, state["ddp"], LedgerSigner(setup.site, key.seed, ledger.run_dir),
                                   state.get("projection"))
                finally:
                    ledger.close()
            if state_dir is not None:
                note_release(state_dir, setup.run_id, setup.site, setup.round_index, "released")
            state["released"] = True
    except (secagg.ProtocolError, PrivacyError, ValueError) as exc:
        return _refuse(message, f"{type(exc).__name__}: {exc}")
    state["session"] = session
    store_state(context, state)
    if reply is None:
        return Message(RecordDict(), reply_to=message)
    return _reply(message, wire=wire.encode(reply))
