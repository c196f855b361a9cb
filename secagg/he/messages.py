"""Typed messages of the HE path: frozen dataclasses, one per arrow.

Site -> coordinator messages carry ``sender``; coordinator -> site messages
carry ``recipient``; every message carries ``session``, the fingerprint of the
:class:`~secagg.he.config.HESessionConfig`. Rounds (t = threshold, h = key holder):

0. :class:`HEAdvertise`: site -> coordinator: a fresh X25519 public key
   [+ Ed25519 signature in active mode].
   Coordinator -> h: :class:`HEKeyDirectory` of the advertised keys (U1).
1. :class:`HEContextBundle`: h -> coordinator: the public (key-free) CKKS context
   and, per site of U1, the secret context sealed to that site.
   Coordinator -> each site of U1: :class:`HEContextDelivery` (h's key, the
   public context, the site's sealed context; h itself gets an empty one).
2. :class:`HEEncryptedInput`: site -> coordinator: the encrypted encoded update,
   N/2 values per ciphertext [+ signature over its hash, session and sender].
   Coordinator -> h: :class:`HEDecryptRequest` for the uploads that arrived (U2,
   |U2| >= t): semi-honest mode sends the homomorphic sum; active mode sends
   every individual signed contribution, so that h can check them and sum
   them itself.
3. :class:`HEDecryptedSum`: h -> coordinator: the exact integer sum over U2
   [+ signature]. h answers once per session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

from ..messages import FrozenMap

__all__ = [
    "HEAdvertisedKey",
    "HEAdvertise",
    "HEKeyDirectory",
    "HEContextBundle",
    "HEContextDelivery",
    "HEEncryptedInput",
    "HEContribution",
    "HEDecryptRequest",
    "HEDecryptedSum",
    "HESiteMessage",
    "HECoordinatorMessage",
    "HEMessage",
]


def _frozen_map(value) -> FrozenMap:
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


def _blobs(value) -> tuple:
    return tuple(bytes(v) if isinstance(v, (bytearray, memoryview)) else v for v in value)


@dataclass(frozen=True)
class HEAdvertisedKey:
    """One site's round-0 X25519 key as the coordinator relays it."""

    public_key: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class HEAdvertise:
    """Round 0, site -> coordinator."""

    session: bytes
    sender: int
    public_key: bytes
    signature: bytes = b""

    @property
    def key(self) -> HEAdvertisedKey:
        return HEAdvertisedKey(self.public_key, self.signature)


@dataclass(frozen=True)
class HEKeyDirectory:
    """After round 0, coordinator -> key holder: site id -> advertised key (U1)."""

    session: bytes
    recipient: int
    keys: FrozenMap = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _frozen_map(self.keys))


@dataclass(frozen=True)
class HEContextBundle:
    """Round 1, key holder -> coordinator: public context and sealed secret contexts (site id -> AEAD blob)."""

    session: bytes
    sender: int
    public_context: bytes
    sealed: FrozenMap = field(default_factory=FrozenMap)
    signature: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sealed", _frozen_map(self.sealed))


@dataclass(frozen=True)
class HEContextDelivery:
    """After round 1, coordinator -> site: the key holder's key, the public context, the sealed secret context."""

    session: bytes
    recipient: int
    holder_key: HEAdvertisedKey
    public_context: bytes
    sealed: bytes = b""


@dataclass(frozen=True)
class HEEncryptedInput:
    """Round 2, site -> coordinator: serialised CKKS ciphertexts of the encoded update."""

    session: bytes
    sender: int
    context_id: bytes
    chunks: tuple = ()
    signature: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", _blobs(self.chunks))

    @property
    def contribution(self) -> "HEContribution":
        return HEContribution(self.chunks, self.signature)


@dataclass(frozen=True)
class HEContribution:
    """One site's ciphertexts and its signature, as relayed to the key holder (active mode)."""

    chunks: tuple = ()
    signature: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", _blobs(self.chunks))


@dataclass(frozen=True)
class HEDecryptRequest:
    """After round 2, coordinator -> key holder.

    ``survivors`` = U2, the sites whose upload arrived. Semi-honest mode:
    ``summed`` holds the coordinator's homomorphic sum, ``contributions`` is
    empty. Active mode: ``contributions`` holds every signed upload of U2,
    ``summed`` is empty; the key holder verifies and sums them itself.
    """

    session: bytes
    recipient: int
    context_id: bytes
    survivors: frozenset = frozenset()
    summed: tuple = ()
    contributions: FrozenMap = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "survivors", frozenset(self.survivors))
        object.__setattr__(self, "summed", _blobs(self.summed))
        object.__setattr__(self, "contributions", _frozen_map(self.contributions))


@dataclass(frozen=True)
class HEDecryptedSum:
    """Round 3, key holder -> coordinator: sum_{u in U2} k_u as little-endian int64 words."""

    session: bytes
    sender: int
    survivors: frozenset
    data: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "survivors", frozenset(self.survivors))

    @property
    def values(self) -> np.ndarray:
        """A read-only int64 view of the integer sum."""
        return np.frombuffer(self.data, dtype="<i8")


HESiteMessage = Union[HEAdvertise, HEContextBundle, HEEncryptedInput, HEDecryptedSum]
HECoordinatorMessage = Union[HEKeyDirectory, HEContextDelivery, HEDecryptRequest]
HEMessage = Union[HESiteMessage, HECoordinatorMessage]
