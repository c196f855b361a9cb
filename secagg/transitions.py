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

from . import messages as msg
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
#: Client, rounds 0-2, the same in both modes: (state, server message) -> (next state, reply).
_CLIENT_OPENING = {
    (C.INIT,       START):                  (C.ADVERTISED, msg.AdvertiseKeys),   # advertise()
    (C.ADVERTISED, msg.KeyDirectory):       (C.SHARED,     msg.ShareKeys),
    (C.SHARED,     msg.MaskedInputRequest): (C.MASKED,     msg.MaskedInput),
}

#: Client, passive (semi-honest) mode: it unmasks as soon as it has masked.
CLIENT_PASSIVE = Transitions({**_CLIENT_OPENING,
    (C.MASKED,     msg.UnmaskRequest):      (C.DONE,       msg.UnmaskResponse),
}, aborted=C.ABORTED, carries_input=msg.MaskedInput)

#: Client, active mode: the consistency round sits between masking and unmasking.
CLIENT_ACTIVE = Transitions({**_CLIENT_OPENING,
    (C.MASKED,     msg.ConsistencyRequest): (C.SIGNED,     msg.ConsistencySignature),
    (C.SIGNED,     msg.UnmaskRequest):      (C.DONE,       msg.UnmaskResponse),
}, aborted=C.ABORTED, carries_input=msg.MaskedInput)

#: Server, rounds 0-1, the same in both modes: (stage, client message collected) -> (stage after advance(), sent).
_SERVER_OPENING = {
    (S.ADVERTISE,   msg.AdvertiseKeys):        (S.SHARE,       msg.KeyDirectory),
    (S.SHARE,       msg.ShareKeys):            (S.MASK,        msg.MaskedInputRequest),
}

#: Server, passive mode: the unmasking request follows the masked inputs.
SERVER_PASSIVE = Transitions({**_SERVER_OPENING,
    (S.MASK,        msg.MaskedInput):          (S.UNMASK,      msg.UnmaskRequest),
    (S.UNMASK,      msg.UnmaskResponse):       (S.DONE,        None),
}, aborted=S.ABORTED, carries_input=msg.MaskedInput)

#: Server, active mode: U3 goes out for signing before the unmasking request.
SERVER_ACTIVE = Transitions({**_SERVER_OPENING,
    (S.MASK,        msg.MaskedInput):          (S.CONSISTENCY, msg.ConsistencyRequest),
    (S.CONSISTENCY, msg.ConsistencySignature): (S.UNMASK,      msg.UnmaskRequest),
    (S.UNMASK,      msg.UnmaskResponse):       (S.DONE,        None),
}, aborted=S.ABORTED, carries_input=msg.MaskedInput)
# fmt: on

del C, S

#: Protocol stages, in order; a client listed under a stage sends nothing from that stage on.
STAGES = tuple(stage.value for stage in SERVER_ACTIVE.states)

#: The stage in which a client answers each server message (every engine uses this one map).
ANSWER_STAGE = answer_stages(SERVER_ACTIVE, SERVER_PASSIVE)
