"""The Flower ``ClientApp``: one hospital's side (local DP-SGD, encoding, its ClientSession).

The node's protocol state (its :class:`secagg.ClientSession`, with its
private keys and masked input) lives in ``context.state``, which the
SuperNode keeps on the node between the messages of a run; it never leaves
the node. Only the session's answers (wire bytes) are sent back.

Node configuration (``flower-supernode --node-config`` or the simulation's
per-node config):

* ``partition-id`` (int): the site index; its protocol client id is ``partition-id + 1``.
* ``data-seed`` (int, optional): seed of the node's synthetic training slices
  (``update = "dp-sgd"``); real data loading is not wired yet.
* ``drop`` (str, optional, tests and demos): ``"ROUND:STAGE"`` (stage one of
  ``advertise share mask consistency unmask``): at that point the node stops
  answering - it sleeps ``drop-sleep`` seconds and replies with nothing - so the
  server's Flower timeout decides it dropped (default: the run's stage timeout + 5 s).
  The run config's ``simulate-drop`` (``"CID:ROUND:STAGE,..."``) does the same where
  nodes have no individual config (Flower's simulation engine); demos and tests only.
"""

from __future__ import annotations

import pickle
import time

import numpy as np

import secagg
from secagg import wire

from . import require_flwr
from .transport import _STAGE_OF, session_from_record

require_flwr()

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

__all__ = ["app", "synthetic_ring"]

app = ClientApp()

_STATE = "secagg-client"


def synthetic_ring(seed: int, client_id: int, round_index: int, length: int, bit_width: int) -> np.ndarray:
    """A deterministic ring vector (tests: the exact aggregate is then known in advance)."""
    rng = np.random.default_rng([seed, client_id, round_index])  # test inputs only: never keys or masks
    return rng.integers(0, 2**20, size=length, dtype=np.uint64).astype(secagg.encoding.ring_dtype(bit_width))


def _client_id(context: Context) -> int:
    return int(context.node_config["partition-id"]) + 1


def _drop_point(context: Context, run_spec: str = ""):
    """(round, stage) at which this node vanishes: its ``drop`` node config, or the run's ``simulate-drop``."""
    spec = str(context.node_config.get("drop", "") or "")
    if spec:
        round_text, stage = spec.split(":")
        return int(round_text), stage
    for item in filter(None, str(run_spec or "").split(",")):
        cid_text, round_text, stage = item.strip().split(":")
        if int(cid_text) == _client_id(context):
            return int(round_text), stage
    return None


def _vanish(context: Context, message: Message, stage_timeout: float) -> Message:
    time.sleep(float(context.node_config.get("drop-sleep", stage_timeout + 5.0)))
    return Message(RecordDict(), reply_to=message)


def _reply(message: Message, **fields) -> Message:
    return Message(RecordDict({"secagg": ConfigRecord(fields)}), reply_to=message)


@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    return Message(RecordDict({"site": ConfigRecord({"client-id": _client_id(context)})}), reply_to=message)


def _local_update(record, context: Context, global_arrays, client_id: int) -> np.ndarray:
    """Local DP-SGD from the global weights, then weight + clip + encode (at the site)."""
    import torch

    import models
    from dp import DpSgdConfig

    from ..site import Site

    image_size = int(record["image-size"])
    torch.manual_seed(int(record["model-seed"]))
    model = models.create_model(str(record["model"]), image_size=image_size)
    names = models.shared_parameter_names(model)
    shared = {name: torch.from_numpy(np.array(array)) for name, array in zip(names, global_arrays)}
    generator = torch.Generator().manual_seed(int(context.node_config.get("data-seed", client_id)))
    data = torch.rand((int(record["records"]), 1, image_size, image_size), generator=generator)
    site = Site(f"site-{client_id}", client_id, data, model, names)
    dp_config = DpSgdConfig(noise_multiplier=float(record["noise-multiplier"]),
                            max_grad_norm=float(record["max-grad-norm"]), sample_rate=float(record["sample-rate"]),
                            steps=int(record["local-steps"]), learning_rate=float(record["learning-rate"]),
                            delta=float(record["delta"]))
    update = site.train(shared, dp_config, int(record["round"]))
    encoder = secagg.FixedPointEncoder.create(clip=float(record["clip"]), max_summands=int(record["max-summands"]),
                                              bit_width=int(record["bit-width"]))
    ring, _ = site.encode(update, encoder, float(record["weight-bound"]))
    return ring


@app.train()
def setup(message: Message, context: Context) -> Message:
    """Round setup: train locally, encode, open the ClientSession, answer with AdvertiseKeys."""
    record = message.content.config_records["session"]
    config = session_from_record(record)
    client_id = _client_id(context)
    round_index = int(record["round"])
    if _drop_point(context, record["simulate-drop"]) == (round_index, "advertise"):
        return _vanish(context, message, float(record["stage-timeout"]))
    if str(record["update"]) == "synthetic":
        ring = synthetic_ring(int(record["seed"]), client_id, round_index, config.vector_length, config.bit_width)
    else:
        ring = _local_update(record, context, message.content.array_records["global"].to_numpy_ndarrays(), client_id)
    session = secagg.ClientSession(config, client_id, masked_input=ring)
    advertise = session.advertise()
    context.state[_STATE] = ConfigRecord({"session": pickle.dumps(session), "round": round_index, "dropped": False,
                                          "stage-timeout": float(record["stage-timeout"]),
                                          "simulate-drop": str(record["simulate-drop"])})
    return _reply(message, wire=wire.encode(advertise))


@app.query("secagg")
def step(message: Message, context: Context) -> Message:
    """One protocol message in, the session's answer (or a refusal) out."""
    state = context.state.config_records.get(_STATE)
    if state is None or state["dropped"]:
        return Message(RecordDict(), reply_to=message)
    data = bytes(message.content.config_records["secagg"]["wire"])
    stage = _STAGE_OF.get(type(wire.decode(data)))
    if _drop_point(context, state["simulate-drop"]) == (int(state["round"]), stage):
        state["dropped"] = True
        context.state[_STATE] = state
        return _vanish(context, message, float(state["stage-timeout"]))
    session = pickle.loads(bytes(state["session"]))  # written by this node itself, never received
    try:
        reply = session.handle(data)
    except (secagg.RemoteProtocolError, secagg.ThresholdNotMetError) as exc:
        return _reply(message, refusal=f"{type(exc).__name__}: {exc}")
    state["session"] = pickle.dumps(session)
    context.state[_STATE] = state
    if reply is None:
        return Message(RecordDict(), reply_to=message)
    return _reply(message, wire=wire.encode(reply))
