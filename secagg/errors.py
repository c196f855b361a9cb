"""Typed errors of the protocol.

Every error the protocol raises derives from :class:`ProtocolError`, so a
transport can catch one class and know that no state was corrupted: sessions
validate a message completely before they change any state (the h11 rule), so
after an error the session is exactly as it was before the offending call.

Three families, split by *who* is at fault (after h11's Local/Remote split):

* :class:`LocalProtocolError` - the local caller misused the API (wrong state,
  impossible parameters, NaN in an input vector). Fix the calling code.
* :class:`RemoteProtocolError` - a peer sent something it should not have
  (undecodable bytes, another session's message, a forged signature, a request
  that would make an honest client reveal too much). The peer is misbehaving or
  the network is corrupting data; the local party refuses and sends nothing.
* :class:`ThresholdNotMetError` - too few parties remain for the protocol to
  continue safely; the round aborts with no output.

Several errors also derive from :class:`ValueError` so that generic callers
(``except ValueError``) still catch bad arguments.
"""

from __future__ import annotations

__all__ = [
    "ProtocolError",
    "LocalProtocolError",
    "InvalidInputError",
    "InfeasibleParametersError",
    "RemoteProtocolError",
    "MalformedMessageError",
    "SessionMismatchError",
    "UnexpectedMessageError",
    "VerificationError",
    "UnsafeRequestError",
    "ThresholdNotMetError",
    "ReconstructionError",
]


class ProtocolError(Exception):
    """Base of every error raised by the secure-aggregation protocol."""


class LocalProtocolError(ProtocolError):
    """The local caller used the API wrongly (wrong state, bad parameters)."""


class InvalidInputError(LocalProtocolError, ValueError):
    """An input vector or argument is unusable (wrong length, NaN/Inf, bad ids)."""


class InfeasibleParametersError(LocalProtocolError, ValueError):
    """The requested protocol parameters cannot meet their guarantees."""


class RemoteProtocolError(ProtocolError):
    """A peer sent a message that an honest party must refuse."""


class MalformedMessageError(RemoteProtocolError):
    """Bytes that are not a valid, canonical wire encoding of any message."""


class SessionMismatchError(RemoteProtocolError):
    """A well-formed message that belongs to another session, sender or recipient."""


class UnexpectedMessageError(RemoteProtocolError):
    """A message arriving in the wrong round: replayed, reordered, stale or duplicated."""


class VerificationError(RemoteProtocolError):
    """A signature, authenticated ciphertext or reconstructed secret did not verify."""


class UnsafeRequestError(RemoteProtocolError):
    """A server request that would make an honest client leak an individual input.

    Raised, for example, when the unmasking request lists the same peer as both
    dropped and surviving (which would reveal both its self-mask share and its
    key share), names unknown clients, or leaves fewer than ``t`` clients.
    """


class ThresholdNotMetError(ProtocolError):
    """Fewer than the threshold ``t`` of parties remain; the round aborts with no output."""


class ReconstructionError(ThresholdNotMetError):
    """Not enough consistent Shamir shares arrived to reconstruct a secret."""
