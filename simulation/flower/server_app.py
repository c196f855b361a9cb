"""The Flower ``ServerApp``: the coordinator, running the engine's round over Flower messages.

Run configuration (``[tool.flwr.app.config]`` of ``app/pyproject.toml``, or
``flwr run --run-config``): ``num-sites``, ``rounds``, ``threshold`` (0: n//2+1),
``stage-timeout`` (seconds a stage waits for answers; who has not answered
dropped), ``node-wait`` (seconds to wait for the nodes to connect),
``update`` (``dp-sgd``: local DP-SGD at each node; ``synthetic``: fixed integer
inputs, for tests), ``vector-length`` (synthetic only), the DP-SGD and model
parameters, ``out`` (a JSON file for the per-round results; "" for none) and
``simulate-drop`` (``"CID:ROUND:STAGE,..."``: those clients stop answering there;
demos and tests on the simulation engine, where nodes have no config of their own).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import secagg

from . import require_flwr
from .transport import HELLO, FlowerTransport, ring_digest, run_flower_round, session_record

require_flwr()

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

__all__ = ["app", "run_rounds"]

app = ServerApp()


def _log(line: str) -> None:
    print(f"[secagg-flower] {line}", flush=True)


def _wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {count} nodes connected within {timeout:g} s")
        time.sleep(0.5)


def _register(grid: Grid, nodes: list[int], timeout: float) -> dict[int, int]:
    """Ask each node for its site's client id: client id -> node id."""
    messages = [Message(RecordDict(), dst_node_id=node, message_type=HELLO, group_id="hello", ttl=timeout + 60)
                for node in nodes]
    node_of = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if not reply.has_error():
            cid = int(reply.content.config_records["site"]["client-id"])
            if cid in node_of:
                raise ValueError(f"two nodes claim client id {cid}")
            node_of[cid] = reply.metadata.src_node_id
    return node_of


def run_rounds(grid: Grid, cfg: dict) -> list[dict]:
    """All rounds of a run; returns one record per round (also written to ``cfg['out']``)."""
    import numpy as np

    from ..coordinator import Coordinator

    n = int(cfg["num-sites"])
    nodes = _wait_for_nodes(grid, n, float(cfg["node-wait"]))
    node_of = _register(grid, nodes, float(cfg["node-wait"]))
    _log(f"{len(node_of)} sites registered: client id -> node id {node_of}")
    ids = sorted(node_of)
    threshold = int(cfg["threshold"]) or len(ids) // 2 + 1
    synthetic = str(cfg["update"]) == "synthetic"
    extra = {k: cfg[k] for k in ("update", "seed", "model", "image-size", "model-seed", "records", "noise-multiplier",
                                 "max-grad-norm", "sample-rate", "local-steps", "learning-rate", "delta", "clip",
                                 "stage-timeout", "simulate-drop")}
    if synthetic:
        coordinator, encoder = Coordinator({}, []), None
        vector_length, bit_width = int(cfg["vector-length"]), 32
    else:
        import torch

        import models

        torch.manual_seed(int(cfg["model-seed"]))
        reference = models.create_model(str(cfg["model"]), image_size=int(cfg["image-size"]))
        names = models.shared_parameter_names(reference)
        params = dict(reference.named_parameters())
        coordinator = Coordinator({k: params[k] for k in names}, names)
        encoder = secagg.FixedPointEncoder.create(clip=float(cfg["clip"]), max_summands=len(ids))
        vector_length = sum(params[k].numel() for k in names) + 1  # + the FedAvg weight
        bit_width = encoder.bit_width
        extra |= {"max-summands": len(ids),
                  "weight-bound": float(2 ** math.ceil(math.log2(max(1, int(cfg["records"])))))}
    records = []
    for round_index in range(int(cfg["rounds"])):
        session = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=tuple(ids),
                                       threshold=threshold, vector_length=vector_length, bit_width=bit_width)
        content = {"session": session_record(session, extra | {"round": round_index})}
        if not synthetic:
            content["global"] = ArrayRecord(numpy_ndarrays=[coordinator.global_shared[k].detach().numpy()
                                                            for k in coordinator.shared_names])
        setup = {cid: RecordDict(dict(content)) for cid in ids}
        transport = FlowerTransport(grid, node_of, float(cfg["stage-timeout"]), group_id=str(round_index), log=_log)
        released = []
        outcome = run_flower_round(coordinator, session, transport, setup, lambda r: released.extend(sorted(r)))
        record = {"round": round_index, "completed": outcome.completed, "abort_reason": outcome.abort_reason,
                  "alive": outcome.alive, "released": released, "refusals": outcome.refusals,
                  "bytes_up": outcome.bytes_up, "bytes_down": outcome.bytes_down,
                  "seconds": round(outcome.seconds, 3), "session_id": session.session_id.hex()}
        if outcome.completed:
            result = coordinator.server.result
            record |= {"survivors": sorted(result.survivors), "ring_sum_sha256": ring_digest(result.ring_sum)}
            if synthetic:
                record["ring_sum"] = [int(v) for v in np.asarray(result.ring_sum)]
                coordinator.server = None
            else:
                aggregate = coordinator.finish_round(encoder)
                coordinator.apply(aggregate)
                record["weight_sum"] = aggregate.weight_sum
        else:
            coordinator.server = None
        _log(f"round {round_index}: {'completed' if outcome.completed else 'ABORTED'}; alive per stage "
             f"{outcome.alive}; survivors {record.get('survivors')}")
        records.append(record)
    if cfg.get("out"):
        Path(str(cfg["out"])).write_text(json.dumps(records, indent=1))
    return records


DEFAULTS = {
    "num-sites": 3, "rounds": 2, "threshold": 0, "stage-timeout": 30.0, "node-wait": 120.0, "update": "dp-sgd",
    "vector-length": 64, "seed": 0, "model": "compact-ae", "image-size": 16, "model-seed": 0, "records": 16,
    "noise-multiplier": 1.0, "max-grad-norm": 1.0, "sample-rate": 0.25, "local-steps": 2, "learning-rate": 1e-3,
    "delta": 1e-5, "clip": 0.5, "out": "", "simulate-drop": "",
}


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = DEFAULTS | dict(context.run_config)
    run_rounds(grid, cfg)
