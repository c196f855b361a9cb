"""An in-memory Flower ``Grid`` for fast tests of the ServerApp and ClientApp code (no processes).

Every message goes through Flower's protobuf serialisation both ways (as it does on
the wire), and is handled by the real ``ClientApp`` (``simulation.engines.flower.client_app.app``)
with a per-node ``Context`` that persists between messages, as a SuperNode keeps it.
A node whose reply carries nothing (it vanished: run it with ``drop-sleep=0``) is left
out of the replies, which is what Flower's ``send_and_receive`` timeout does. The
process-level tests (``tests/test_flower.py``) check the same apps under Flower's real
runtime; this harness lets the slower paths (resume, budgets, refusals) run in seconds.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Iterable, Iterator

from flwr.app import Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.supercore.run import Run
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["InMemoryGrid", "as_node"]


@contextlib.contextmanager
def as_node(node_id: int, run_id: int = 1) -> Iterator[None]:
    """Flower's task identity, as its runtime sets it around a ServerApp or ClientApp call."""
    saved = {name: getattr(TaskIdentity, f"_{name}") for name in ("task_id", "run_id", "node_id")}
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, node_id
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(TaskIdentity, f"_{name}", value)


def _wire(message: Message) -> Message:
    return message_from_proto(message_to_proto(message))


class InMemoryGrid(Grid):
    """Routes each message to the addressed node's ClientApp in this process."""

    def __init__(self, client_app, node_configs: dict[int, dict], run_config: dict) -> None:
        self.client_app = client_app
        self.contexts = {node: Context(run_id=1, node_id=node, node_config=dict(config), state=RecordDict(),
                                       run_config=dict(run_config))
                         for node, config in node_configs.items()}
        self.offline: set[int] = set()  # nodes that are gone (a crash): never answer
        self._run = Run.create_empty(1)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # the SuperLink's job
            ids.append(message.metadata.message_id)
            node = message.metadata.dst_node_id
            if node in self.offline:
                continue
            with as_node(node):
                reply = self.client_app(_wire(message), self.contexts[node])
            if reply.content.config_records or reply.has_error():
                self._replies[message.metadata.message_id] = _wire(reply)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        with as_node(SUPERLINK_NODE_ID):
            return self.pull_messages(self.push_messages(list(messages)))
