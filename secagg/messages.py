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

from dataclasses import dataclass, field
from typing import Iterator, Mapping, TypeVar, Union

import numpy as np

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

V = TypeVar("V")


class FrozenMap(Mapping[int, V]):
    """An immutable, hashable mapping from client ids to values, iterated in id order."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[int, V] | None = None) -> None:
        data = dict(items or {})
        self._data = {k: data[k] for k in sorted(data)}
        self._hash = None

    def __getitem__(self, key: int) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


def _frozen_map(value) -> FrozenMap:
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


def _frozen_ids(value) -> frozenset:
    return value if isinstance(value, frozenset) else frozenset(value)


@dataclass(frozen=True)
class AdvertisedKeys:
    """One client's round-0 public keys as the server relays them."""

    encryption_key: bytes
    masking_key: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class AdvertiseKeys:
    """Round 0, client -> server."""

    session: bytes
    sender: int
    encryption_key: bytes
    masking_key: bytes
    signature: bytes = b""

    @property
    def keys(self) -> AdvertisedKeys:
        return AdvertisedKeys(self.encryption_key, self.masking_key, self.signature)


@dataclass(frozen=True)
class KeyDirectory:
    """After round 0, server -> client: keys of the client's closed neighbourhood in U1."""

    session: bytes
    recipient: int
    keys: FrozenMap = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _frozen_map(self.keys))


@dataclass(frozen=True)
class ShareKeys:
    """Round 1, client -> server: recipient id -> encrypted shares."""

    session: bytes
    sender: int
    ciphertexts: FrozenMap = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ciphertexts", _frozen_map(self.ciphertexts))


@dataclass(frozen=True)
class MaskedInputRequest:
    """After round 1, server -> client: sender id -> encrypted shares addressed to the recipient."""

    session: bytes
    recipient: int
    ciphertexts: FrozenMap = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ciphertexts", _frozen_map(self.ciphertexts))


@dataclass(frozen=True)
class MaskedInput:
    """Round 2, client -> server: the masked vector, little-endian b-bit words.

    ``data`` is bytes-like: a ``bytearray`` when a client makes the message
    (the masks are written straight into it), a read-only ``memoryview`` into
    the wire bytes when :func:`secagg.wire.decode` parses one, so that neither
    side holds a second copy of m words; all compare equal by content.
    """

    session: bytes
    sender: int
    bit_width: int
    data: bytes
    signature: bytes = b""  # active mode: Ed25519 over masked_input_payload (session, sender, SHA-256 of data)

    @property
    def vector(self) -> np.ndarray:
        """A read-only view of the masked vector as uint32/uint64."""
        dtype = np.dtype("<u4") if self.bit_width == 32 else np.dtype("<u8")
        return np.frombuffer(self.data, dtype=dtype)


@dataclass(frozen=True)
class ConsistencyRequest:
    """Active mode, server -> client: U3, the clients whose masked input arrived."""

    session: bytes
    recipient: int
    survivors: frozenset = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "survivors", _frozen_ids(self.survivors))


@dataclass(frozen=True)
class ConsistencySignature:
    """Active mode, client -> server: Ed25519 signature over (session, U3)."""

    session: bytes
    sender: int
    signature: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Server -> client, unmasking round.

    ``survivors`` = U3 (masked input arrived: reveal self-mask shares),
    ``dropped`` = U2 \\ U3 (shared keys, no masked input: reveal key shares).
    ``signatures`` (active mode) are the consistency signatures of U4 over U3.
    """

    session: bytes
    recipient: int
    survivors: frozenset = frozenset()
    dropped: frozenset = frozenset()
    signatures: FrozenMap = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "survivors", _frozen_ids(self.survivors))
        object.__setattr__(self, "dropped", _frozen_ids(self.dropped))
        object.__setattr__(self, "signatures", _frozen_map(self.signatures))


@dataclass(frozen=True)
class UnmaskResponse:
    """Round 4, client -> server: peer id -> Shamir share (a field element)."""

    session: bytes
    sender: int
    self_mask_shares: FrozenMap = field(default_factory=FrozenMap)
    key_shares: FrozenMap = field(default_factory=FrozenMap)
    signature: bytes = b""  # active mode: Ed25519 over unmask_response_payload

    def __post_init__(self) -> None:
        object.__setattr__(self, "self_mask_shares", _frozen_map(self.self_mask_shares))
        object.__setattr__(self, "key_shares", _frozen_map(self.key_shares))


ClientMessage = Union[AdvertiseKeys, ShareKeys, MaskedInput, ConsistencySignature, UnmaskResponse]
ServerMessage = Union[KeyDirectory, MaskedInputRequest, ConsistencyRequest, UnmaskRequest]
Message = Union[ClientMessage, ServerMessage]
