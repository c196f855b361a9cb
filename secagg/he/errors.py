"""Typed errors specific to the homomorphic-encryption (HE) path.

Everything else the HE path raises reuses :mod:`secagg.errors`
(:class:`~secagg.errors.MalformedMessageError`, :class:`~secagg.errors.VerificationError`,
:class:`~secagg.errors.SessionMismatchError`, :class:`~secagg.errors.UnexpectedMessageError`,
:class:`~secagg.errors.UnsafeRequestError`, :class:`~secagg.errors.InvalidInputError`,
:class:`~secagg.errors.InfeasibleParametersError`, :class:`~secagg.errors.ThresholdNotMetError`),
so a transport that catches :class:`~secagg.errors.ProtocolError` catches the HE
path too.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, ThresholdNotMetError

__all__ = ["HEUnavailableError", "SecretKeyUnavailableError", "KeyHolderUnavailableError"]

#: What to install for the HE path (named in every "TenSEAL missing" error).
INSTALL_HINT = "pip install 'secagg[he]'"


class HEUnavailableError(LocalProtocolError, ImportError):
    """TenSEAL (the CKKS library behind the HE path) is not installed."""


class SecretKeyUnavailableError(LocalProtocolError):
    """Decryption was asked of a CKKS context that holds no secret key.

    The coordinator only ever holds the public (key-free) context, so this is
    what it gets when it tries to decrypt anything.
    """


class KeyHolderUnavailableError(ThresholdNotMetError):
    """The key holder (the only site that creates the key and decrypts) did not answer.

    The key holder is a single point of failure of the HE path: without it
    there is no key or no decryption, so the round aborts with no output.
    """
