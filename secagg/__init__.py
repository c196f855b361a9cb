"""Secure aggregation for federated learning (Bonawitz et al. 2017; SecAgg+, Bell et al. 2020).

The coordinator learns only the sum of the inputs of the clients that
survived the round, even when clients drop out at any stage and, in active
mode, even when the coordinator itself misbehaves. The protocol is a pair of
sans-IO state machines (:class:`ClientSession`, :class:`ServerSession`) that
consume and produce typed messages with a canonical wire encoding; transports
only move bytes. :func:`run_local` runs every party in-process.

Layering: :mod:`secagg.transitions` lists every round and transition of each
role as :class:`secagg.tables.Transitions` data (from it come :data:`STAGES`
and :data:`ANSWER_STAGE`); :mod:`secagg.session` is the staged session
skeleton (envelope checks, validate-then-commit, abort) shared with the HE
path (:mod:`secagg.he`, its own tables in :mod:`secagg.he.transitions`);
``client.py`` and ``server.py`` hold only what the masking protocol computes.
The other pieces both paths are built from are shared the same way:
:mod:`secagg.messagebase` (frozen message envelopes), :mod:`secagg.wireformat`
(a wire format as one layout table per path: ``wire.py``, ``he/wire.py``),
:mod:`secagg.configbase` (participants, verify keys, fingerprint) and
:mod:`secagg.inprocess` (the in-process runners' skeleton).

This package depends only on numpy, PyNaCl and cryptography, and does no I/O.
"""

from .client import ClientSession, ClientState
from .config import SessionConfig, new_session_id
from .encoding import EncodedVector, FixedPointEncoder, weighted_mean, weighted_vector
from .errors import (
    InfeasibleParametersError,
    InvalidInputError,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolError,
    ReconstructionError,
    RemoteProtocolError,
    SessionMismatchError,
    ThresholdNotMetError,
    UnexpectedMessageError,
    UnsafeRequestError,
    VerificationError,
)
from .graph import complete_graph, harary_graph
from .exchange import ExchangeRecord, run_exchange
from .local import LocalResult, run_local
from .messages import (
    AdvertisedKeys,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    FrozenMap,
    KeyDirectory,
    MaskedInput,
    MaskedInputRequest,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from .params import DEFAULT_SECURITY_BITS, Parameters, failure_bounds, find_parameters
from .server import AggregateResult, ServerSession, ServerStage
from .transitions import ANSWER_STAGE, STAGES
from .wire import decode, encode

__all__ = [
    # sessions
    "ClientSession", "ClientState", "ServerSession", "ServerStage", "AggregateResult",
    "SessionConfig", "new_session_id",
    # in-process runner
    "run_local", "LocalResult", "STAGES", "ANSWER_STAGE", "run_exchange", "ExchangeRecord",
    # parameters and graphs
    "find_parameters", "failure_bounds", "Parameters", "DEFAULT_SECURITY_BITS", "complete_graph", "harary_graph",
    # encoding
    "FixedPointEncoder", "EncodedVector", "weighted_vector", "weighted_mean",
    # messages and wire
    "AdvertiseKeys", "AdvertisedKeys", "KeyDirectory", "ShareKeys", "MaskedInputRequest",
    "MaskedInput", "ConsistencyRequest", "ConsistencySignature", "UnmaskRequest",
    "UnmaskResponse", "FrozenMap", "encode", "decode",
    # errors
    "ProtocolError", "LocalProtocolError", "InvalidInputError", "InfeasibleParametersError",
    "RemoteProtocolError", "MalformedMessageError", "SessionMismatchError",
    "UnexpectedMessageError", "VerificationError", "UnsafeRequestError",
    "ThresholdNotMetError", "ReconstructionError",
]
