"""Every round and transition of the masking protocol (Bonawitz et al. 2017, Fig. 4), in one file.

Each role has one table per mode; a row reads ``(state, message received) ->
(next state, message sent)``. A client answers the server message of its
state and moves on; a server collects one client message type per stage and
moves on when :meth:`~secagg.ServerSession.advance` closes the stage. Active
mode (malicious-server defence) adds the consistency round: the client signs
the survivor set U3 before it unmasks, and the server collects those
signatures before it asks for shares. Any (state, message) pair not in the
table is refused with :class:`~secagg.errors.UnexpectedMessageError` and
leaves the session as it was.

:data:`STAGES` (the server's stages, in order) and :data:`ANSWER_STAGE` (in
which stage a client answers each server message) are derived from the
tables; every engine uses them.
"""

from __future__ import annotations

import enum

from .messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    MaskedInputRequest,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from .tables import START, Transitions, answer_stages

__all__ = [
    "ClientState", "ServerStage",
    "CLIENT_PASSIVE", "CLIENT_ACTIVE", "SERVER_PASSIVE", "SERVER_ACTIVE",
    "STAGES", "ANSWER_STAGE",
]


class ClientState(enum.Enum):
    INIT = "init"
    ADVERTISED = "advertised"  # waiting for KeyDirectory
    SHARED = "shared"  # waiting for MaskedInputRequest
    MASKED = "masked"  # waiting for ConsistencyRequest (active) or UnmaskRequest
    SIGNED = "signed"  # active: waiting for UnmaskRequest
    DONE = "done"
    ABORTED = "aborted"


class ServerStage(enum.Enum):
    """The round whose messages the server is collecting."""

    ADVERTISE = "advertise"
    SHARE = "share"
    MASK = "mask"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


C, S = ClientState, ServerStage

# fmt: off
#: Client, passive (semi-honest) mode: (state, server message) -> (next state, reply).
CLIENT_PASSIVE = Transitions({
    (C.INIT,       START):              (C.ADVERTISED, AdvertiseKeys),   # advertise()
    (C.ADVERTISED, KeyDirectory):       (C.SHARED,     ShareKeys),
    (C.SHARED,     MaskedInputRequest): (C.MASKED,     MaskedInput),
    (C.MASKED,     UnmaskRequest):      (C.DONE,       UnmaskResponse),
}, aborted=C.ABORTED, carries_input=MaskedInput)

#: Client, active mode: the consistency round sits between masking and unmasking.
CLIENT_ACTIVE = Transitions({
    (C.INIT,       START):              (C.ADVERTISED, AdvertiseKeys),   # advertise()
    (C.ADVERTISED, KeyDirectory):       (C.SHARED,     ShareKeys),
    (C.SHARED,     MaskedInputRequest): (C.MASKED,     MaskedInput),
    (C.MASKED,     ConsistencyRequest): (C.SIGNED,     ConsistencySignature),
    (C.SIGNED,     UnmaskRequest):      (C.DONE,       UnmaskResponse),
}, aborted=C.ABORTED, carries_input=MaskedInput)

#: Server, passive mode: (stage, client message collected) -> (stage after advance(), message sent).
SERVER_PASSIVE = Transitions({
    (S.ADVERTISE,   AdvertiseKeys):        (S.SHARE,       KeyDirectory),
    (S.SHARE,       ShareKeys):            (S.MASK,        MaskedInputRequest),
    (S.MASK,        MaskedInput):          (S.UNMASK,      UnmaskRequest),
    (S.UNMASK,      UnmaskResponse):       (S.DONE,        None),
}, aborted=S.ABORTED, carries_input=MaskedInput)

#: Server, active mode: U3 goes out for signing before the unmasking request.
SERVER_ACTIVE = Transitions({
    (S.ADVERTISE,   AdvertiseKeys):        (S.SHARE,       KeyDirectory),
    (S.SHARE,       ShareKeys):            (S.MASK,        MaskedInputRequest),
    (S.MASK,        MaskedInput):          (S.CONSISTENCY, ConsistencyRequest),
    (S.CONSISTENCY, ConsistencySignature): (S.UNMASK,      UnmaskRequest),
    (S.UNMASK,      UnmaskResponse):       (S.DONE,        None),
}, aborted=S.ABORTED, carries_input=MaskedInput)
# fmt: on

del C, S

#: Protocol stages, in order; a client listed under a stage sends nothing from that stage on.
STAGES = tuple(stage.value for stage in SERVER_ACTIVE.states)

#: The stage in which a client answers each server message (every engine uses this one map).
ANSWER_STAGE = answer_stages(SERVER_ACTIVE, SERVER_PASSIVE)
