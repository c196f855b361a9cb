"""Typed protocol messages: frozen dataclasses, one per arrow of Bonawitz et al. Fig. 4.

Client -> server messages carry ``sender``; server -> client messages carry
``recipient``. Every message carries ``session``, the 32-byte fingerprint of
the :class:`~secagg.config.SessionConfig` (which includes a fresh session
nonce), so a message can never be replayed into another session or be
confused between parties. The round is implied by the message type; sessions
accept each type only in its own round.

Rounds (``t`` = threshold, U1 ⊇ U2 ⊇ U3 ⊇ U4 ⊇ U5 the parties alive at each):

0. AdvertiseKeys: client -> server: X25519 public keys (c_pk for share
   encryption, s_pk for pairwise masks) [+ Ed25519 signature in active mode].
   Server -> client: :class:`KeyDirectory` of the client's closed
   neighbourhood within U1.
1. ShareKeys: client -> server: for each neighbour, an AEAD ciphertext of its
   Shamir shares of the self-mask seed b_u and of s_sk_u.
   Server -> client: :class:`MaskedInputRequest` routing the ciphertexts
   addressed to the client from U2.
2. MaskedInput: client -> server: y_u = x_u + PRG(b_u) + sum_v ±PRG(s_uv) in Z_{2^b}^m.
   Server -> client: :class:`ConsistencyRequest` (active) or :class:`UnmaskRequest`.
3. ConsistencySignature (active only): client -> server: signature over U3.
4. UnmaskResponse: client -> server: shares of b_v for surviving neighbours and
   of s_sk_v for dropped neighbours - never both for one peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .messagebase import Frozen, FromParty, FrozenMap, ToParty

__all__ = [
    "FrozenMap",
    "AdvertisedKeys",
    "AdvertiseKeys",
    "KeyDirectory",
    "ShareKeys",
    "MaskedInputRequest",
    "MaskedInput",
    "ConsistencyRequest",
    "ConsistencySignature",
    "UnmaskRequest",
    "UnmaskResponse",
    "ClientMessage",
    "ServerMessage",
    "Message",
]


@dataclass(frozen=True)
class AdvertisedKeys(Frozen):
    """One client's round-0 public keys as the server relays them."""

    encryption_key: bytes
    masking_key: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class AdvertiseKeys(FromParty):
    """Round 0, client -> server."""

    encryption_key: bytes
    masking_key: bytes
    signature: bytes = b""

    @property
    def keys(self) -> AdvertisedKeys:
        return AdvertisedKeys(self.encryption_key, self.masking_key, self.signature)


@dataclass(frozen=True)
class KeyDirectory(ToParty):
    """After round 0, server -> client: keys of the client's closed neighbourhood in U1."""

    keys: FrozenMap = FrozenMap()


@dataclass(frozen=True)
class ShareKeys(FromParty):
    """Round 1, client -> server: recipient id -> encrypted shares."""

    ciphertexts: FrozenMap = FrozenMap()


@dataclass(frozen=True)
class MaskedInputRequest(ToParty):
    """After round 1, server -> client: sender id -> encrypted shares addressed to the recipient."""

    ciphertexts: FrozenMap = FrozenMap()


@dataclass(frozen=True)
class MaskedInput(FromParty):
    """Round 2, client -> server: the masked vector, little-endian b-bit words.

    ``data`` is bytes-like: a ``bytearray`` when a client makes the message
    (the masks are written straight into it), a read-only ``memoryview`` into
    the wire bytes when :func:`secagg.wire.decode` parses one, so that neither
    side holds a second copy of m words; all compare equal by content.
    """

    bit_width: int
    data: bytes
    signature: bytes = b""  # active mode: Ed25519 over masked_input_payload (session, sender, SHA-256 of data)

    @property
    def vector(self) -> np.ndarray:
        """A read-only view of the masked vector as uint32/uint64."""
        dtype = np.dtype("<u4") if self.bit_width == 32 else np.dtype("<u8")
        return np.frombuffer(self.data, dtype=dtype)


@dataclass(frozen=True)
class ConsistencyRequest(ToParty):
    """Active mode, server -> client: U3, the clients whose masked input arrived."""

    survivors: frozenset = frozenset()


@dataclass(frozen=True)
class ConsistencySignature(FromParty):
    """Active mode, client -> server: Ed25519 signature over (session, U3)."""

    signature: bytes


@dataclass(frozen=True)
class UnmaskRequest(ToParty):
    """Server -> client, unmasking round.

    ``survivors`` = U3 (masked input arrived: reveal self-mask shares),
    ``dropped`` = U2 \\ U3 (shared keys, no masked input: reveal key shares).
    ``signatures`` (active mode) are the consistency signatures of U4 over U3.
    """

    survivors: frozenset = frozenset()
    dropped: frozenset = frozenset()
    signatures: FrozenMap = FrozenMap()


@dataclass(frozen=True)
class UnmaskResponse(FromParty):
    """Round 4, client -> server: peer id -> Shamir share (a field element)."""

    self_mask_shares: FrozenMap = FrozenMap()
    key_shares: FrozenMap = FrozenMap()
    signature: bytes = b""  # active mode: Ed25519 over unmask_response_payload


ClientMessage = Union[AdvertiseKeys, ShareKeys, MaskedInput, ConsistencySignature, UnmaskResponse]
ServerMessage = Union[KeyDirectory, MaskedInputRequest, ConsistencyRequest, UnmaskRequest]
Message = Union[ClientMessage, ServerMessage]
