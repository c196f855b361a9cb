"""What the session configurations of both paths share: who takes part, and the fingerprint.

:class:`~secagg.config.SessionConfig` (masking) and
:class:`~secagg.he.config.HESessionConfig` (CKKS) both start with
``session_id``, ``participants``, ``threshold`` and ``vector_length``, and
both carry ``active`` and ``verify_keys``. This base checks those the same
way for both (a fresh 32-byte nonce; distinct int ids in [0, 2^32 - 1), at
least two, stored sorted; in active mode a 32-byte Ed25519 verify key for
every participant, stored as a :class:`~secagg.messagebase.FrozenMap`), and
derives the ``fingerprint``: SHA-256 over the configuration's canonical
bytes, which each path lays out as

    label | session_id | the path's fixed-size fields | participant ids (u32 each)
    | (u32 id, 32-byte verify key) per verify key, in id order | the path's tail

so that changing any field changes the fingerprint, and with it every
message and key of the session.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from .errors import InvalidInputError
from .messagebase import FrozenMap

__all__ = ["ConfigBase"]

_MAX_ID = 2**32 - 1


@dataclass(frozen=True)
class ConfigBase:
    """The fields and checks both session configurations share (subclassed by each path).

    A subclass sets ``_PARTY`` ("client" or "site", for messages), declares
    ``active`` and ``verify_keys``, calls :meth:`_check_participants` first and
    :meth:`_check_verify_keys` last in its ``__post_init__``, and defines
    ``canonical_bytes`` with :meth:`_canonical`.
    """

    _PARTY: ClassVar[str]

    session_id: bytes
    participants: tuple
    threshold: int
    vector_length: int

    def _check_participants(self) -> int:
        """Check the session nonce and the ids, store the ids sorted; return n."""
        party = self._PARTY
        if not isinstance(self.session_id, bytes) or len(self.session_id) != 32:
            raise InvalidInputError(f"session_id must be 32 bytes; got {self.session_id!r:.40}")
        ids = list(self.participants)
        if any(not isinstance(i, int) or isinstance(i, bool) for i in ids):
            raise InvalidInputError(f"{party} ids must be ints; got {ids[:10]}")
        if len(set(ids)) != len(ids):
            raise InvalidInputError(f"duplicate {party} ids: {sorted({i for i in ids if ids.count(i) > 1})}")
        if any(not 0 <= i < _MAX_ID for i in ids):
            raise InvalidInputError(
                f"{party} ids must be in [0, 2^32 - 1); got {sorted(ids)[:3]}...{sorted(ids)[-3:]}"
            )
        if len(ids) < 2:
            raise InvalidInputError(f"aggregation needs at least 2 {party}s; got {len(ids)}")
        object.__setattr__(self, "participants", tuple(sorted(ids)))
        return len(ids)

    def _check_verify_keys(self) -> None:
        """Store ``verify_keys`` frozen; 32-byte keys, one per participant in active mode."""
        keys = FrozenMap(self.verify_keys)
        object.__setattr__(self, "verify_keys", keys)
        if self.active:
            missing = [i for i in self.participants if i not in keys]
            if missing:
                raise InvalidInputError(
                    f"active mode needs an Ed25519 verify key for every participant; missing for {missing[:10]}"
                )
        if any(not isinstance(v, bytes) or len(v) != 32 for v in keys.values()):
            raise InvalidInputError("verify keys must be 32-byte Ed25519 public keys")

    @property
    def n(self) -> int:
        return len(self.participants)

    def _canonical(self, label: bytes, fixed: bytes, tail: bytes = b"") -> bytes:
        """The canonical bytes laid out as in the module docstring."""
        parts = [
            label,
            self.session_id,
            fixed,
            b"".join(struct.pack(">I", i) for i in self.participants),
            b"".join(struct.pack(">I", i) + self.verify_keys[i] for i in self.verify_keys),
            tail,
        ]
        return b"".join(parts)

    @cached_property
    def fingerprint(self) -> bytes:
        """SHA-256 of ``canonical_bytes``: the ``session`` field of every message of the session."""
        return hashlib.sha256(self.canonical_bytes).digest()
