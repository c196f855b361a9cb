"""Carry the protocol's wire bytes in Flower messages; let Flower's timeouts decide who dropped.

The round is *not* reimplemented here: :class:`~simulation.engines.flower.fleet.FlowerFleet`
hands the shared protocol loop (:func:`simulation.federation.protocol_round.run_masked_round`)
a coordinator whose :meth:`~BatchingCoordinator.advance` sends every message
of a stage to its Flower node at once (``Grid.send_and_receive`` with a
timeout), and client proxies whose ``advertise``/``handle`` return what the
node answered - or ``None`` when it did not answer in time (it dropped), or
raise when it refused. The engine's loop then does exactly what it does
in-process: feed replies to the coordinator, close stages, report the
release, abort below threshold.

Message types (Flower requires ``train``/``evaluate``/``query`` categories):

* ``query.hello``  -> reply ``{"site": {"site": str}}`` (the node's site name)
* ``train``        round setup: global weights (``ArrayRecord`` "global") and
  the round's public parameters (``ConfigRecord`` "session", :class:`RoundSetup`);
  the node checks them, trains, encodes, opens its :class:`secagg.ClientSession`
  and replies with its AdvertiseKeys.
* ``query.secagg`` one server message (``ConfigRecord`` "secagg", key "wire");
  reply: the client's message under the same key, or ``"refusal"`` (str).
* ``query.ledger`` a spend entry for the node's site to sign (``ConfigRecord`` "ledger"); reply
  ``{"signature": bytes}`` or ``{"refusal": str}`` (:mod:`.ledger_link`). Any message to a node
  may also carry ``ConfigRecord`` "ledger-anchor": the chain hash of the node's last signed entry.
  An unmask request also carries ``ConfigRecord`` "ledger-round": the round's committed spend
  entries in chain order, which the node checks before it reveals a share (:mod:`dp.round_chain`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import secagg
from secagg import wire
from secagg.messages import UnmaskRequest

__all__ = ["FlowerTransport", "BatchingCoordinator", "ClientProxy", "RoundSetup", "STAGE_OF", "HELLO", "SETUP",
           "STEP", "hello_payload", "FACTS_RECORD"]

HELLO = "query.hello"
SETUP = "train"
STEP = "query.secagg"
#: The record of a hello reply holding the node's deployment facts (``client_app.node_facts``).
FACTS_RECORD = "deployment"

def hello_payload(challenge: bytes, site: str) -> bytes:
    """What a node signs to register as ``site``: the coordinator's fresh ``challenge`` and the site's name.

    The challenge is fresh per registration (32 random bytes), so an answer recorded from another
    registration proves nothing; the label keeps it apart from every other signature of the site's key.
    """
    return b"secagg/flower-hello/v1\x00" + bytes(challenge) + site.encode("utf-8")


STAGE_OF = secagg.ANSWER_STAGE  # the stage in which a node answers each server message


@dataclass(frozen=True)
class RoundSetup:
    """The public parameters of one round, as a node receives them (ConfigRecord "session").

    Everything here is public: the session (nonce, participants and their sites,
    threshold, sizes, graph degree; in active mode the verify keys, which a node checks
    against its own copy of the consortium's registry), the DP-SGD parameters every site uses (a node checks their spend
    against its own ledger before training), the encoding (a node rebuilds the encoder
    and refuses one whose bound differs), the model and the node's own client id.
    """

    session: secagg.SessionConfig
    site_names: tuple  # the site of each participant, in the order of session.participants
    round_index: int
    client_id: int
    site: str
    run_id: str  # the coordinator ledger's run id: with round_index, what a node never releases twice
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    local_steps: int
    learning_rate: float
    delta: float
    secure_rng: bool
    clip: float
    max_summands: int
    encoder_bound: int
    weight_bound: float
    model: str
    image_size: int
    model_seed: int
    val_fraction: float
    split_seed: int
    update: str  # "dp-sgd", or "synthetic" (fixed float updates: tests)
    update_length: int  # the number of shared model parameters (the update before encoding)
    synthetic_seed: int
    stage_timeout: float
    simulate_drop: str
    # Distributed DP (dp.distributed); ddp_mechanism "" is off. The node recalibrates from these
    # and refuses a session whose ring, length or scale differ from its own calibration.
    ddp_mechanism: str = ""
    ddp_l2_clip: float = 0.0
    ddp_epsilon: float = 0.0
    ddp_rounds: int = 0
    ddp_min_contributors: int = 0
    ddp_max_contributors: int = 0
    ddp_colluding: int = 0
    ddp_bits: int = 0
    ddp_scale: float = 0.0
    # Privacy unit and public quantities (dp.training): public_size and max_slices_per_patient 0 = none.
    privacy_unit: str = "patient"
    public_size: int = 0
    max_slices_per_patient: int = 0
    public_weight: float = 1.0  # the site's declared public FedAvg weight, never its record count

    _SCALARS = ("round_index", "client_id", "site", "run_id", "noise_multiplier", "max_grad_norm",
                "sample_rate", "local_steps", "learning_rate", "delta", "secure_rng", "clip", "max_summands",
                "encoder_bound", "weight_bound", "model", "image_size", "model_seed", "val_fraction", "split_seed",
                "update", "update_length", "synthetic_seed", "stage_timeout", "simulate_drop", "ddp_mechanism", "ddp_l2_clip",
                "ddp_epsilon", "ddp_rounds", "ddp_min_contributors", "ddp_max_contributors", "ddp_colluding",
                "ddp_bits", "ddp_scale", "privacy_unit", "public_size", "max_slices_per_patient", "public_weight")

    def to_record(self):
        from flwr.app import ConfigRecord

        config = self.session
        if len(self.site_names) != len(config.participants):
            raise secagg.InvalidInputError("one site name per participant is needed")
        values = {
            "session-id": bytes(config.session_id),
            "participants": [int(p) for p in config.participants],
            "threshold": int(config.threshold),
            "vector-length": int(config.vector_length),
            "bit-width": int(config.bit_width),
            "degree": -1 if config.degree is None else int(config.degree),
            "site-names": [str(n) for n in self.site_names],
            "active": bool(config.active),
            "max-corrupt": int(config.max_corrupt),
            "verify-keys": [bytes(config.verify_keys[p]) for p in config.participants] if config.active else [],
        }
        for name in self._SCALARS:
            value = getattr(self, name)
            values[name.replace("_", "-")] = value
        return ConfigRecord(values)

    @classmethod
    def from_record(cls, record) -> "RoundSetup":
        """Parse and type-check a received setup (a malformed one raises :class:`secagg.MalformedMessageError`)."""
        import dataclasses

        try:
            degree = int(record["degree"])
            participants = tuple(int(p) for p in record["participants"])
            active = bool(record["active"])
            keys = [bytes(k) for k in record["verify-keys"]]
            if active and len(keys) != len(participants):
                raise ValueError(f"{len(keys)} verify keys for {len(participants)} participants")
            site_names = tuple(str(n) for n in record["site-names"])
            if len(site_names) != len(participants):
                raise ValueError(f"{len(site_names)} site names for {len(participants)} participants")
            session = secagg.SessionConfig(
                session_id=bytes(record["session-id"]),
                participants=participants,
                threshold=int(record["threshold"]),
                vector_length=int(record["vector-length"]),
                bit_width=int(record["bit-width"]),
                degree=None if degree < 0 else degree,
                active=active,
                verify_keys=dict(zip(participants, keys)) if active else {},
                max_corrupt=int(record["max-corrupt"]),
            )
            types = {f.name: f.type for f in dataclasses.fields(cls)}
            cast = {"int": int, "float": float, "str": str, "bool": bool}
            values = {name: cast[types[name]](record[name.replace("_", "-")]) for name in cls._SCALARS}
        except (KeyError, TypeError, ValueError, secagg.ProtocolError) as exc:
            raise secagg.MalformedMessageError(f"malformed round setup: {type(exc).__name__}: {exc}") from None
        return cls(session=session, site_names=site_names, **values)

    def distributed_dp(self, dimension: int):
        """The node's own calibration of the round's distributed DP (None when off)."""
        if not self.ddp_mechanism:
            return None
        from dp import DistributedDpConfig, calibrate_distributed

        calibrated = calibrate_distributed(DistributedDpConfig(
            self.ddp_mechanism, l2_clip=self.ddp_l2_clip, target_epsilon=self.ddp_epsilon, delta=self.delta,
            rounds=self.ddp_rounds, min_contributors=self.ddp_min_contributors,
            max_contributors=self.ddp_max_contributors, colluding_sites=self.ddp_colluding, bits=self.ddp_bits,
        ), dimension)
        if self.ddp_min_contributors > self.session.threshold or \
                len(self.session.participants) > self.ddp_max_contributors:
            # Each site adds 1/min_contributors of the noise: a sum of fewer sites would carry less.
            raise secagg.InvalidInputError(
                f"distributed DP: noise shared among {self.ddp_min_contributors} contributors, but the session "
                f"outputs sums of {self.session.threshold} or more of {len(self.session.participants)} sites "
                f"(at most {self.ddp_max_contributors} allowed)")
        if (calibrated.vector_length, calibrated.bits) != (self.session.vector_length, self.session.bit_width) or \
                not math.isclose(calibrated.scale, self.ddp_scale, rel_tol=1e-12):
            raise secagg.InvalidInputError(
                f"distributed DP: this node calibrates length {calibrated.vector_length}, {calibrated.bits}-bit ring, "
                f"scale {calibrated.scale:.6g}; the coordinator sent {self.session.vector_length}, "
                f"{self.session.bit_width}-bit, {self.ddp_scale:.6g}")
        return calibrated

    @property
    def sites_by_client(self) -> dict:
        return dict(zip(self.session.participants, self.site_names))


class FlowerTransport:
    """Sends one stage's messages to their nodes and collects the answers within ``stage_timeout``."""

    def __init__(self, grid, node_of: Mapping[int, int], stage_timeout: float, group_id: str,
                 log: Callable[[str], None] = lambda line: None, owed: dict | None = None,
                 site_of: Mapping[int, str] | None = None,
                 round_chain: Callable[[], tuple] | None = None) -> None:
        self.grid = grid
        # () -> (run id, round, [dp.ChainEntry]): the round's committed spends, read when the unmask
        # requests leave (after the spend is committed); they ride beside each request.
        self.round_chain = round_chain
        self.node_of = dict(node_of)  # client id -> Flower node id
        # site -> the ledger anchor the coordinator owes that node (simulation.engines.flower.ledger_link): it
        # rides on the next message to the node and is forgotten once the node has answered.
        self.owed = owed if owed is not None else {}
        self.site_of = dict(site_of or {})
        self.stage_timeout = float(stage_timeout)
        self.group_id = group_id
        self.log = log
        self.answers: dict[int, object] = {}  # client id -> wire bytes | Exception (refusal)
        self.pending: tuple | None = None  # (stage, contents) held by stage() until flush()
        self.timings: dict[str, float] = {}

    def exchange(self, stage: str, message_type: str, contents: Mapping[int, object]) -> None:
        """Send ``contents[cid]`` (a RecordDict) to each client's node; keep the answers that arrive in time."""
        from flwr.app import Message

        from .ledger_link import ANCHOR_RECORD

        start = time.perf_counter()
        by_node = {self.node_of[cid]: cid for cid in contents}
        sent_anchors = {}
        for cid in contents:
            anchor = self.owed.get(self.site_of.get(cid))
            if anchor is not None:
                contents[cid][ANCHOR_RECORD] = sent_anchors[cid] = anchor
        messages = [Message(content=contents[cid], dst_node_id=self.node_of[cid], message_type=message_type,
                            group_id=self.group_id, ttl=self.stage_timeout + 60.0)
                    for cid in sorted(contents)]
        replies = self.grid.send_and_receive(messages, timeout=self.stage_timeout)
        self.answers = {}
        replied = set()
        for reply in replies:
            cid = by_node.get(reply.metadata.src_node_id)
            if cid is None:
                continue
            if reply.has_error():
                self.answers[cid] = secagg.RemoteProtocolError(f"node error: {reply.error.reason}")
                continue
            if ANCHOR_RECORD in reply.content.config_records:
                replied.add(cid)  # the node took the anchor (or said why not): it is not sent again
            record = reply.content.config_records.get("secagg")
            if record is None:
                continue
            if "refusal" in record:
                self.answers[cid] = secagg.RemoteProtocolError(str(record["refusal"]))
            elif "wire" in record:
                self.answers[cid] = bytes(record["wire"])
        for cid, anchor in sent_anchors.items():
            if cid in replied and self.owed.get(self.site_of[cid]) is anchor:
                del self.owed[self.site_of[cid]]
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start
        missing = sorted(set(contents) - set(self.answers))
        if missing:
            self.log(f"{stage}: no answer within {self.stage_timeout:g} s from clients {missing} (dropped)")

    def answer(self, client_id: int):
        got = self.answers.pop(client_id, None)
        if isinstance(got, Exception):
            raise got
        if got is None:
            return None
        message = wire.decode(got)
        if getattr(message, "sender", client_id) != client_id:
            raise secagg.RemoteProtocolError(f"the node of client {client_id} sent a message as client "
                                             f"{message.sender}")
        return message

    def stage(self, stage: str, contents: Mapping[int, object]) -> None:
        """Hold one stage's messages; :meth:`flush` sends them (after the coordinator's own bookkeeping)."""
        self.pending = (stage, dict(contents))

    def flush(self) -> None:
        if self.pending is not None:
            stage, contents = self.pending
            self.pending = None
            if stage == STAGE_OF[UnmaskRequest] and self.round_chain is not None:
                from .ledger_link import ROUND_CHAIN_RECORD, round_chain_record

                run_id, round_index, chain = self.round_chain()
                for content in contents.values():
                    content[ROUND_CHAIN_RECORD] = round_chain_record(run_id, round_index, chain)
            self.exchange(stage, STEP, contents)


class BatchingCoordinator:
    """The project's Coordinator, with ``advance`` also preparing the stage's messages for Flower.

    They leave on the first delivery (:meth:`ClientProxy.handle`), i.e. after the engine has done
    what must precede them - committing the spend when the masked updates are in, before any
    unmasking request goes out.
    """

    def __init__(self, coordinator, transport: FlowerTransport) -> None:
        self._coordinator = coordinator
        self._transport = transport

    def __getattr__(self, name):
        return getattr(self._coordinator, name)

    def advance(self) -> dict:
        from flwr.app import ConfigRecord, RecordDict

        outgoing = self._coordinator.advance()
        if outgoing:
            stage = STAGE_OF[type(next(iter(outgoing.values())))]
            self._transport.stage(stage, {
                cid: RecordDict({"secagg": ConfigRecord({"wire": wire.encode(message)})})
                for cid, message in outgoing.items()
            })
        return outgoing


class ClientProxy:
    """Stands for a remote ClientSession inside the engine's loop: answers come from the transport."""

    def __init__(self, client_id: int, transport: FlowerTransport) -> None:
        self.client_id = client_id
        self.transport = transport

    def advertise(self):
        return self.transport.answer(self.client_id)

    def handle(self, data: bytes):
        self.transport.flush()  # the whole stage goes out at once, on its first delivery
        return self.transport.answer(self.client_id)
