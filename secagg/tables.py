"""The transition-table type with which each role of each path declares its rounds.

A :class:`Transitions` table is data, read by :mod:`secagg.session` (the
skeleton both paths share): the tables themselves are in
:mod:`secagg.transitions` (masking) and :mod:`secagg.he.transitions` (CKKS).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = ["START", "Transitions", "answer_stages"]


class START:
    """Table marker for the local ``advertise()`` call: no message received, the session opens."""


class Transitions:
    """One role's rounds as data: ``(state, message type) -> (next state, message type sent)``.

    For a client the message type in the key is the server message it
    receives in that state and the second is its answer; for a server the
    key names the client message the stage collects and the value the stage
    that :meth:`StagedServer.advance` moves to and the message it sends
    (``None`` when it sends nothing). Every state accepts exactly one
    message type, so the table is deterministic; states that appear in no
    key (``DONE``, ``ABORTED``, and ``INIT`` for the client) refuse every
    message.

    Args:
        rows: the transitions, in protocol order.
        aborted: the state a session enters when it aborts.
        carries_input: the message that carries the (masked or encrypted)
            input; for a client the states up to the one that sends it are
            those in which the input may still change, for a server the
            stage that collects it is the one whose messages spend privacy.
    """

    def __init__(self, rows: Mapping[tuple, tuple], *, aborted, carries_input: type) -> None:
        self.rows = MappingProxyType(dict(rows))
        self.aborted = aborted
        receives: dict = {}
        for state, incoming in self.rows:
            if state in receives:
                raise ValueError(f"state {state} accepts two message types: the table must be deterministic")
            receives[state] = incoming
        self._receives = receives
        self.states = tuple(receives)
        self.initial = self.states[0]
        carriers = [(state, incoming) for (state, incoming), (_, sent) in self.rows.items()
                    if carries_input in (incoming, sent)]
        if len(carriers) != 1:
            raise ValueError(f"exactly one transition must carry {carries_input.__name__}")
        self.input_stage = carriers[0][0]
        self.input_open = frozenset(self.states[: self.states.index(self.input_stage) + 1])

    def receives(self, state) -> type | None:
        """The one message type ``state`` accepts (``None``: it accepts none)."""
        incoming = self._receives.get(state)
        return None if incoming is START else incoming

    def step(self, state, incoming: type) -> tuple:
        """``(next state, message type sent)`` for the row ``(state, incoming)``."""
        return self.rows[(state, incoming)]


def answer_stages(*tables: Transitions) -> dict:
    """Server message type -> the stage (its ``value``) in which clients answer it.

    A server closing a stage sends its message, and the stage it moves to
    collects the answers; the tables of every mode must agree.
    """
    answers: dict = {}
    for table in tables:
        for _, (next_stage, sent) in table.rows.items():
            if sent is None:
                continue
            if answers.setdefault(sent, next_stage.value) != next_stage.value:
                raise ValueError(f"{sent.__name__} is answered in two stages")
    return answers
