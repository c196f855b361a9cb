"""The checks every server applies to a client message before reading it (masking and HE paths).

A message must be of the type the current stage expects (anything else is a
replay, a reordering or stale), carry this session's fingerprint (compared in
constant time), and be the first of its kind from its sender. The expected
type comes from the role's transition table; who may send in a stage
(eligibility) is set by each server when it closes the previous stage, and
checked by :class:`secagg.session.StagedServer`.
"""

from __future__ import annotations

from typing import Mapping

from .crypto import constant_time_equal
from .errors import SessionMismatchError, UnexpectedMessageError

__all__ = ["check_envelope"]


def check_envelope(message, stage, expected: type | None, fingerprint: bytes, received: Mapping,
                   party: str = "client") -> int:
    """Raise a typed :class:`RemoteProtocolError` unless ``message`` fits the stage; return its sender."""
    if expected is None:
        raise UnexpectedMessageError(f"session is {stage.value}; no more messages are accepted")
    if not isinstance(message, expected):
        raise UnexpectedMessageError(
            f"stage {stage.value} expects {expected.__name__}; got {type(message).__name__} "
            "(replayed, reordered or stale)"
        )
    if not constant_time_equal(message.session, fingerprint):
        raise SessionMismatchError(f"message from {party} {message.sender} belongs to another session")
    sender = message.sender
    if sender in received:
        raise UnexpectedMessageError(f"duplicate {type(message).__name__} from {party} {sender}")
    return sender
