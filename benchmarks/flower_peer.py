"""In-process driver of Flower's SecAgg+ (flwr 1.42), the peer of issue 10.

What runs is Flower's code as shipped, nothing re-implemented:

* server: the four stage methods of ``flwr.server.workflow.SecAggPlusWorkflow``
  (``setup_stage``, ``share_keys_stage``, ``collect_masked_vectors_stage``,
  ``unmask_stage``), called in the order its ``__call__`` calls them, on a
  ``flwr.server.compat.LegacyContext`` whose strategy is a ``FedAvg`` and whose
  client manager holds one ``GridClientProxy`` per node;
* client: ``flwr.client.mod.secaggplus_mod`` on each node's own ``flwr.app.Context``,
  with a ``call_next`` that plays the local training and returns a fixed update;
* transport: :class:`InProcessGrid`, a ``flwr.serverapp.grid.Grid`` written here.
  Every message is serialised to protobuf bytes (``flwr.common.serde``) on one
  side and parsed on the other, which gives the bytes on the wire and gives each
  side its own copy (the workflow reuses one ``RecordDict`` for all nodes and the
  mod mutates what it receives, so a real copy is needed, as on any transport).
  A dropped node is one that stops answering from a given stage on.

Timing, per stage:

* client time: a node's handling of one message, bytes in to bytes out (parse,
  ``secaggplus_mod``, serialise), minus its ``call_next`` (the "training", which
  only wraps a precomputed update);
* server time: the wall time of the workflow's stage minus the client time spent
  inside it, so it holds the workflow's own work plus the server side of the
  transport (serialising requests, parsing replies), like our server's
  ``wire.encode`` / ``receive``.

Two deviations from a plain ``SecAggPlusWorkflow.__call__``, both to measure it
and neither changing what it computes:

* the strategy is :class:`KeepAggregate`, a ``FedAvg`` whose ``aggregate_fit``
  returns the aggregate the workflow already put into every ``FitRes``; plain
  ``FedAvg`` would deserialise those n identical copies and average them, a
  backward-compatibility cost that is not secure aggregation;
* :meth:`FlowerSecAggPlus.intercept` stops a stage at its ``send_and_receive``
  (after the requests were built and, if asked, answered), so that a benchmark
  can time one node's handling of one request, or re-run the stage with the
  recorded replies (:meth:`FlowerSecAggPlus.run_stage` with ``replay``) and
  time the server alone.

Settings, as Flower has them (see :class:`PeerSettings`): inputs are clipped to
``[-clipping_range, clipping_range]`` and stochastically quantized to
``[0, quantization_range)`` (default 2^22), the weight ``num_examples /
max_weight`` travels quantized in a leading extra element, masks are drawn from
``[0, modulus_range - 1)`` (default 2^32) with ``numpy.random.RandomState``
seeded by a 32-bit fold of the 32-byte seed, and the masked vector travels as
int64. ``num_shares`` counts the node itself (``1.0`` = complete graph, an odd
``k + 1`` = ring of ``k`` neighbours); the reconstruction threshold is the
number of Shamir shares (pycryptodome, 16-byte chunks) needed, while the server
combines all the shares it collected. The inputs here lie on the quantization
grid, so the stochastic rounding is exact and the aggregate can be checked
against the plain integer sum (:meth:`FlowerSecAggPlus.check`).

Dropouts: a node may go silent from ``collect_masked_vectors`` or ``unmask``
on. A node that answers ``setup`` but not ``share_keys`` makes flwr 1.42's
``unmask`` stage fail on the clients (``KeyError`` in ``secaggplus_mod._unmask``:
the server lists it as dead, but nobody holds shares of its key), so that case
is not benchmarked; ours drop after sharing keys as well.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.server.strategy import FedAvg
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

STAGES: tuple[str, ...] = Stage.all()
FIRST_NODE_ID = 1000  # Flower reserves small ids (the SuperLink is node 1)


class PeerAborted(RuntimeError):
    """Flower's workflow halted (a stage returned False: too few nodes or shares)."""


class _Intercepted(Exception):
    """Raised by the grid to stop a stage at its ``send_and_receive``."""


@dataclass(frozen=True)
class PeerSettings:
    """One Flower SecAgg+ round: n nodes, m parameters, who drops and when.

    ``num_shares`` and ``threshold`` are passed to ``SecAggPlusWorkflow`` as
    ``num_shares`` and ``reconstruction_threshold``; ``dropped`` are node
    indices (0..n-1) silent from ``drop_stage`` on.
    """

    n: int
    m: int
    num_shares: int | float = 1.0
    threshold: int = 2
    dropped: frozenset[int] = frozenset()
    drop_stage: str = Stage.COLLECT_MASKED_VECTORS
    clipping_range: float = 8.0
    quantization_range: int = 1 << 22
    modulus_range: int = 1 << 32
    max_weight: float = 1000.0
    seed: int = 0  # benchmark input data only

    @classmethod
    def complete(cls, n: int, m: int, threshold: int, drop: float = 0.0, **kw: Any) -> PeerSettings:
        """Complete graph (every node shares with all n - 1 others)."""
        return cls(n, m, 1.0, threshold, frozenset(range(round(drop * n))), **kw)

    @classmethod
    def ring(cls, n: int, m: int, degree: int, threshold: int, drop: float = 0.0, **kw: Any) -> PeerSettings:
        """Flower's SecAgg+ ring: ``degree`` neighbours (even) plus the node itself."""
        if degree % 2:
            raise ValueError(f"Flower's ring needs an even degree, got {degree}")
        return cls(n, m, degree + 1, threshold, frozenset(range(round(drop * n))), **kw)

    def node_id(self, index: int) -> int:
        return FIRST_NODE_ID + index


@dataclass
class PeerStats:
    """Seconds and bytes of one session, by stage (client figures summed over nodes)."""

    client_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    server_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    bytes_up: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    bytes_down: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))

    def summary(self, n: int) -> dict[str, Any]:
        """Totals in the keys our scaling suite reports (per-client figures divide by n)."""
        return {
            "client_s_per_client": sum(self.client_s.values()) / n,
            "server_s": sum(self.server_s.values()),
            "bytes_up_per_client": sum(self.bytes_up.values()) / n,
            "bytes_down_per_client": sum(self.bytes_down.values()) / n,
            "server_s_by_stage": dict(self.server_s),
            "client_s_by_stage": dict(self.client_s),
        }


def to_wire(message: Message) -> bytes:
    """Serialise a Flower message to protobuf bytes."""
    return message_to_proto(message).SerializeToString()


def from_wire(data: bytes) -> Message:
    """Parse protobuf bytes back into a Flower message."""
    return message_from_proto(ProtoMessage.FromString(data))


def stage_of(message: Message) -> str:
    """The SecAgg+ stage a workflow request is for."""
    return str(message.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])


class PeerClient:
    """One Flower node: its ``Context`` and ``secaggplus_mod``, with a fixed local update."""

    def __init__(self, node_id: int, update: Parameters, num_examples: int) -> None:
        self.node_id = node_id
        self.update = update  # serialised once: the "training" below costs ~nothing
        self.num_examples = num_examples
        self.context = Context(run_id=0, node_id=node_id, node_config={}, state=RecordDict(), run_config={})
        self.fit_s = 0.0

    def _fit(self, msg: Message, _ctxt: Context) -> Message:
        """``call_next`` of the mod: the local training, here returning the fixed update."""
        t0 = time.perf_counter()
        res = FitRes(Status(Code.OK, ""), self.update, self.num_examples, {})
        reply = Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)
        self.fit_s += time.perf_counter() - t0
        return reply

    def handle(self, data: bytes) -> tuple[bytes, float]:
        """Answer one request: bytes in, bytes out; returns the reply and the seconds spent.

        The seconds cover parsing, ``secaggplus_mod`` and serialising, and exclude
        ``call_next`` (the training).
        """
        fit_before = self.fit_s
        t0 = time.perf_counter()
        reply = to_wire(secaggplus_mod(from_wire(data), self.context, self._fit))
        return reply, time.perf_counter() - t0 - (self.fit_s - fit_before)

    def fork(self) -> PeerClient:
        """An independent copy (same keys and state), to answer the same request more than once."""
        twin = PeerClient(self.node_id, self.update, self.num_examples)
        twin.context = copy.deepcopy(self.context)
        return twin


class InProcessGrid(Grid):
    """A Flower ``Grid`` that routes each message to the addressed node's mod, in-process.

    ``push_messages`` delivers at once (serialised, handled, reply serialised)
    and keeps the reply for ``pull_messages``; ``send_and_receive`` is the two,
    so all live nodes have answered when it returns (no timeout needed). A node
    in ``silent`` from a stage on never answers, as a dropout does.
    """

    def __init__(self, clients: dict[int, PeerClient], silent_from: dict[int, str], stats: PeerStats) -> None:
        self.clients = clients
        self.silent_from = silent_from
        self.stats = stats
        self._run = Run.create_empty(0)
        self._replies: dict[str, Message] = {}
        self.client_s_in_call = 0.0
        self.intercept_stage: str | None = None
        self.intercept_deliver = False
        self.held_requests: dict[int, bytes] = {}
        self.recorded_replies: dict[str, list[bytes]] = {}
        self.replay: dict[str, list[bytes]] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.clients)

    def _silent(self, node_id: int, stage: str) -> bool:
        start = self.silent_from.get(node_id)
        return start is not None and STAGES.index(stage) >= STAGES.index(start)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # the SuperLink's job
            stage, dst = stage_of(msg), msg.metadata.dst_node_id
            request = to_wire(msg)
            self.stats.bytes_down[stage] += len(request)
            ids.append(msg.metadata.message_id)
            if self.intercept_stage == stage:
                self.held_requests[dst] = request
                if not self.intercept_deliver:
                    continue
            if self._silent(dst, stage):
                continue
            reply, seconds = self.clients[dst].handle(request)
            self.client_s_in_call += seconds
            self.stats.client_s[stage] += seconds
            self.stats.bytes_up[stage] += len(reply)
            if self.intercept_stage == stage:
                self.recorded_replies.setdefault(stage, []).append(reply)
            self._replies[msg.metadata.message_id] = from_wire(reply)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        stage = stage_of(messages[0]) if messages else ""
        if stage in self.replay:
            for msg in messages:  # the server still builds and serialises its requests
                self.stats.bytes_down[stage] += len(to_wire(msg))
            replies = self.replay.pop(stage)
            self.stats.bytes_up[stage] += sum(len(r) for r in replies)
            return [from_wire(r) for r in replies]
        ids = self.push_messages(messages)
        if self.intercept_stage == stage:
            self.intercept_stage = None
            raise _Intercepted(stage)
        return self.pull_messages(ids)


class KeepAggregate(FedAvg):
    """``FedAvg`` that keeps the aggregate the SecAgg+ workflow computed (no re-averaging)."""

    def __init__(self, n: int) -> None:
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n)
        self.aggregate: list[np.ndarray] | None = None

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[Parameters | None, dict]:
        if not results:
            return None, {}
        parameters = results[0][1].parameters  # the workflow set every FitRes to the same aggregate
        self.aggregate = parameters_to_ndarrays(parameters)
        return parameters, {}


@contextlib.contextmanager
def _as_server_app() -> Iterator[None]:
    """Run as Flower's ServerApp runner would: its task identity set, INFO logs off."""
    saved = {name: getattr(TaskIdentity, f"_{name}") for name in ("task_id", "run_id", "node_id")}
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 0, SUPERLINK_NODE_ID
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        for name, value in saved.items():
            setattr(TaskIdentity, f"_{name}", value)


class FlowerSecAggPlus:
    """One round of Flower's SecAgg+ workflow against n in-process ``secaggplus_mod`` nodes."""

    def __init__(self, settings: PeerSettings) -> None:
        self.settings = s = settings
        rng = np.random.default_rng(s.seed)  # input data only
        step = 2 * s.clipping_range / s.quantization_range
        weight = int(s.max_weight)  # weight ratio 1: the quantized weight is exactly quantization_range
        self.levels: dict[int, np.ndarray] = {}
        self.clients: dict[int, PeerClient] = {}
        for i in range(s.n):
            nid = s.node_id(i)
            self.levels[nid] = rng.integers(0, s.quantization_range, s.m, dtype=np.int32)
            # On the quantization grid (exact in float32), so Flower's stochastic rounding returns these levels.
            update = (self.levels[nid] * step - s.clipping_range).astype(np.float32)
            self.clients[nid] = PeerClient(nid, ndarrays_to_parameters([update]), weight)
        self.stats = PeerStats()
        self.grid = InProcessGrid(self.clients, {s.node_id(i): s.drop_stage for i in s.dropped}, self.stats)
        self.strategy = KeepAggregate(s.n)
        manager = SimpleClientManager()
        for nid in self.clients:
            manager.register(GridClientProxy(node_id=nid, grid=self.grid, run_id=0))
        base = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
        self.context = LegacyContext(base, config=ServerConfig(num_rounds=1), strategy=self.strategy,
                                     client_manager=manager)
        self.context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
        self.context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord([np.zeros(s.m, dtype=np.float32)])
        self.workflow = SecAggPlusWorkflow(s.num_shares, s.threshold, max_weight=s.max_weight,
                                           clipping_range=s.clipping_range,
                                           quantization_range=s.quantization_range,
                                           modulus_range=s.modulus_range)
        self.state = WorkflowState()
        self._steps = {
            Stage.SETUP: self.workflow.setup_stage,
            Stage.SHARE_KEYS: self.workflow.share_keys_stage,
            Stage.COLLECT_MASKED_VECTORS: self.workflow.collect_masked_vectors_stage,
            Stage.UNMASK: self.workflow.unmask_stage,
        }
        self.done: list[str] = []

    def run_stage(self, stage: str) -> None:
        """Run one workflow stage; replayed replies (see :meth:`intercept`) are used if recorded."""
        self.grid.client_s_in_call = 0.0
        with _as_server_app():
            t0 = time.perf_counter()
            ok = self._steps[stage](self.grid, self.context, self.state)
            wall = time.perf_counter() - t0
        self.stats.server_s[stage] += wall - self.grid.client_s_in_call
        self.done.append(stage)
        if not ok:
            raise PeerAborted(f"Flower's SecAgg+ workflow halted in stage {stage!r}")

    def run_until(self, last: str) -> None:
        """Run the stages not yet run, up to and including ``last``."""
        for stage in STAGES[len(self.done):STAGES.index(last) + 1]:
            self.run_stage(stage)

    def run(self) -> list[np.ndarray]:
        """The whole round; returns the workflow's aggregate (Flower's dequantized weighted mean)."""
        self.run_until(STAGES[-1])
        assert self.strategy.aggregate is not None
        return self.strategy.aggregate

    def intercept(self, stage: str, *, deliver: bool) -> dict[int, bytes]:
        """Build (and with ``deliver``, answer) ``stage``'s requests, then stop before the server reads replies.

        Returns the serialised request per node. With ``deliver`` the replies are
        queued so the next :meth:`run_stage` of ``stage`` reads them instead of
        asking the nodes again: that run times the server alone. Statistics of
        the interrupted attempt are discarded.
        """
        saved = copy.deepcopy(self.stats)
        self.grid.intercept_stage, self.grid.intercept_deliver = stage, deliver
        self.grid.held_requests, self.grid.recorded_replies = {}, {}
        try:
            with _as_server_app():
                self._steps[stage](self.grid, self.context, self.state)
        except _Intercepted:
            pass
        else:
            raise RuntimeError(f"stage {stage!r} never called send_and_receive")
        self.stats.__dict__.update(saved.__dict__)
        if deliver:
            self.grid.replay[stage] = self.grid.recorded_replies.pop(stage, [])
        return dict(self.grid.held_requests)

    def summary(self) -> dict[str, Any]:
        """Seconds and bytes so far, under our scaling suite's keys, with the graph's degree and threshold."""
        s = self.settings
        degree = s.n - 1 if isinstance(s.num_shares, float) else int(s.num_shares) - 1
        return self.stats.summary(s.n) | {"degree": degree, "threshold": s.threshold}

    def survivors(self) -> list[int]:
        """Nodes whose masked vectors reached the server."""
        s = self.settings
        late = STAGES.index(s.drop_stage) > STAGES.index(Stage.COLLECT_MASKED_VECTORS)
        return [s.node_id(i) for i in range(s.n) if i not in s.dropped or late]

    def check(self) -> None:
        """Assert the workflow's output is exactly the plain sum of the survivors' quantized inputs.

        Flower returns the dequantized mean; the quantized integer sum is recovered
        from it (every step is exact in float64 at these sizes) and compared.
        """
        s = self.settings
        survivors = self.survivors()
        assert self.strategy.aggregate is not None, "the workflow produced no aggregate"
        (mean,) = self.strategy.aggregate
        count = len(survivors)
        recovered = np.rint((mean * count + count * s.clipping_range) * s.quantization_range
                            / (2 * s.clipping_range)).astype(np.int64)
        expected = np.zeros(s.m, dtype=np.int64)
        for nid in survivors:
            expected += self.levels[nid]
        if not np.array_equal(recovered, expected):
            bad = int(np.count_nonzero(recovered != expected))
            raise AssertionError(f"Flower's aggregate differs from the plain sum in {bad} of {s.m} entries")


def run_session(settings: PeerSettings, *, check: bool = True) -> dict[str, Any]:
    """Run one full round and return its :meth:`FlowerSecAggPlus.summary`, after checking the sum."""
    session = FlowerSecAggPlus(settings)
    session.run()
    if check:
        session.check()
    return session.summary()
