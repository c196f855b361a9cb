"""Every round and transition of the HE (CKKS) path, in one file.

Rows read ``(state, message received) -> (next state, message sent)``, as in
:mod:`secagg.transitions`. The site side has two roles: the **key holder**
(``config.key_holder``) creates the CKKS key, receives its own context back,
uploads, and decrypts the sum once; every **other site** only receives the
sealed context and uploads. Active mode changes what the messages carry
(Ed25519 signatures; the key holder gets the individual signed uploads
instead of a ready-made sum), not the rounds, so one table per role serves
both modes. Any (state, message) pair not in a table is refused with
:class:`~secagg.errors.UnexpectedMessageError` and leaves the session as it
was - except that a refused *decryption* also aborts the key holder (one
attempt per session, see :mod:`secagg.he.client`).

:data:`HE_STAGES` and :data:`HE_ANSWER_STAGE` are derived from the
coordinator's table.
"""

from __future__ import annotations

import enum

from ..tables import START, Transitions, answer_stages
from . import messages as msg

__all__ = [
    "HEClientState", "HEServerStage", "KEY_HOLDER", "SITE", "COORDINATOR", "HE_STAGES", "HE_ANSWER_STAGE",
]


class HEClientState(enum.Enum):
    INIT = "init"
    ADVERTISED = "advertised"  # key holder: waiting for HEKeyDirectory; others: for HEContextDelivery
    CONTEXT_SENT = "context-sent"  # key holder: waiting for its own HEContextDelivery
    UPLOADED = "uploaded"  # key holder: waiting for HEDecryptRequest
    DONE = "done"
    ABORTED = "aborted"


class HEServerStage(enum.Enum):
    """The round whose messages the coordinator is collecting."""

    ADVERTISE = "advertise"
    CONTEXT = "context"
    UPLOAD = "upload"
    DECRYPT = "decrypt"
    DONE = "done"
    ABORTED = "aborted"


C, S = HEClientState, HEServerStage

# fmt: off
#: The key holder: (state, coordinator message) -> (next state, reply).
KEY_HOLDER = Transitions({
    (C.INIT,         START):                 (C.ADVERTISED,   msg.HEAdvertise),       # advertise()
    (C.ADVERTISED,   msg.HEKeyDirectory):    (C.CONTEXT_SENT, msg.HEContextBundle),
    (C.CONTEXT_SENT, msg.HEContextDelivery): (C.UPLOADED,     msg.HEEncryptedInput),
    (C.UPLOADED,     msg.HEDecryptRequest):  (C.DONE,         msg.HEDecryptedSum),
}, aborted=C.ABORTED, carries_input=msg.HEEncryptedInput)

#: Every other site: it forgets the secret key once it has uploaded.
SITE = Transitions({
    (C.INIT,         START):                 (C.ADVERTISED,   msg.HEAdvertise),       # advertise()
    (C.ADVERTISED,   msg.HEContextDelivery): (C.DONE,         msg.HEEncryptedInput),
}, aborted=C.ABORTED, carries_input=msg.HEEncryptedInput)

#: The coordinator: (stage, site message collected) -> (stage after advance(), message sent).
COORDINATOR = Transitions({
    (S.ADVERTISE,    msg.HEAdvertise):       (S.CONTEXT,      msg.HEKeyDirectory),    # to the key holder
    (S.CONTEXT,      msg.HEContextBundle):   (S.UPLOAD,       msg.HEContextDelivery), # to every site of U1
    (S.UPLOAD,       msg.HEEncryptedInput):  (S.DECRYPT,      msg.HEDecryptRequest),  # to the key holder
    (S.DECRYPT,      msg.HEDecryptedSum):    (S.DONE,         None),
}, aborted=S.ABORTED, carries_input=msg.HEEncryptedInput)
# fmt: on

del C, S

#: HE protocol stages, in order; a site listed under a stage sends nothing from that stage on.
HE_STAGES = tuple(stage.value for stage in COORDINATOR.states)

#: The stage in which a site answers each coordinator message (for transports and dropout models).
HE_ANSWER_STAGE = answer_stages(COORDINATOR)
