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

from dataclasses import dataclass
from typing import Union

import numpy as np

from ..messagebase import Frozen, FromParty, FrozenMap, ToParty

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


@dataclass(frozen=True)
class HEAdvertisedKey(Frozen):
    """One site's round-0 X25519 key as the coordinator relays it."""

    public_key: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class HEAdvertise(FromParty):
    """Round 0, site -> coordinator."""

    public_key: bytes
    signature: bytes = b""

    @property
    def key(self) -> HEAdvertisedKey:
        return HEAdvertisedKey(self.public_key, self.signature)


@dataclass(frozen=True)
class HEKeyDirectory(ToParty):
    """After round 0, coordinator -> key holder: site id -> advertised key (U1)."""

    keys: FrozenMap = FrozenMap()


@dataclass(frozen=True)
class HEContextBundle(FromParty):
    """Round 1, key holder -> coordinator: public context and sealed secret contexts (site id -> AEAD blob)."""

    public_context: bytes
    sealed: FrozenMap = FrozenMap()
    signature: bytes = b""


@dataclass(frozen=True)
class HEContextDelivery(ToParty):
    """After round 1, coordinator -> site: the key holder's key, the public context, the sealed secret context."""

    holder_key: HEAdvertisedKey
    public_context: bytes
    sealed: bytes = b""


@dataclass(frozen=True)
class HEEncryptedInput(FromParty):
    """Round 2, site -> coordinator: serialised CKKS ciphertexts of the encoded update."""

    context_id: bytes
    chunks: tuple = ()
    signature: bytes = b""

    @property
    def contribution(self) -> "HEContribution":
        return HEContribution(self.chunks, self.signature)


@dataclass(frozen=True)
class HEContribution(Frozen):
    """One site's ciphertexts and its signature, as relayed to the key holder (active mode)."""

    chunks: tuple = ()
    signature: bytes = b""


@dataclass(frozen=True)
class HEDecryptRequest(ToParty):
    """After round 2, coordinator -> key holder.

    ``survivors`` = U2, the sites whose upload arrived. Semi-honest mode:
    ``summed`` holds the coordinator's homomorphic sum, ``contributions`` is
    empty. Active mode: ``contributions`` holds every signed upload of U2,
    ``summed`` is empty; the key holder verifies and sums them itself.
    """

    context_id: bytes
    survivors: frozenset = frozenset()
    summed: tuple = ()
    contributions: FrozenMap = FrozenMap()


@dataclass(frozen=True)
class HEDecryptedSum(FromParty):
    """Round 3, key holder -> coordinator: sum_{u in U2} k_u as little-endian int64 words."""

    survivors: frozenset
    data: bytes
    signature: bytes = b""

    @property
    def values(self) -> np.ndarray:
        """A read-only int64 view of the integer sum."""
        return np.frombuffer(self.data, dtype="<i8")


HESiteMessage = Union[HEAdvertise, HEContextBundle, HEEncryptedInput, HEDecryptedSum]
HECoordinatorMessage = Union[HEKeyDirectory, HEContextDelivery, HEDecryptRequest]
HEMessage = Union[HESiteMessage, HECoordinatorMessage]
