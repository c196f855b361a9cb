"""Public parameters of one HE aggregation session, shared by every party.

Like :class:`secagg.config.SessionConfig`, an :class:`HESessionConfig` is agreed
before round 0; its ``fingerprint`` (SHA-256 over a canonical encoding of every
field, CKKS parameters included, with a fresh 32-byte ``session_id``) is the
``session`` field of every HE message and enters every key derivation and
signature, so nothing of one session can be replayed into another. A fresh
session (and therefore a fresh CKKS key) is used for every federated round.

Threshold. The coordinator needs at least ``t`` uploads, and the key holder
decrypts only sums of at least ``t`` distinct contributions (in active mode:
``t`` distinct valid signatures). ``t >= 2``; choose it larger than the
number of sites that might collude with the coordinator plus one, since a
sum over ``t`` sites of which ``t - 1`` collude reveals the last one.

Memory at large m, and the refusal above ``HE_MAX_VECTOR_LENGTH`` = 2^24 (16,777,216).
Measured 2026-11-29 on one machine (benchmarks/test_bench_stream.py, each
party in a fresh process, peak RSS above its baseline, n = 10, default
parameters, N = 8192, 48-bit prime) at m = 1,000,000: a site's encoding and
encryption 62 MB (27.5 MB of it the upload), the coordinator's parse-and-add
of 10 uploads 112 MB (besides the upload it is handed), the key holder's
decryption 32 MB. At m = 250,000 the same runs gave 21 / 28 / 8 MB, so the
cost grows about linearly. Extrapolated linearly, NOT measured, to
m = 50,000,000: a site ~3.1 GB, the coordinator ~5.6 GB plus 1.4 GB per upload
it buffers, the key holder ~1.6 GB; the masking path needs about 0.4 GB on
each side at that m (:mod:`secagg.client`, :mod:`secagg.server`).

Hence the limit: a session with ``vector_length`` above 2^24 is refused at
configuration (:class:`~secagg.errors.InvalidInputError` naming the limit and
the masking path), before any key or ciphertext exists. At 2^24 the same linear
extrapolation gives about 1.0 GB for a site, 1.9 GB for the coordinator plus
0.46 GB per buffered upload, and 0.5 GB for the key holder: what a hospital
server holds; above it, use the masking path, which streams in 1 MiB chunks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

from ..configbase import ConfigBase
from ..errors import InvalidInputError
from ..messagebase import FrozenMap
from .params import HEParameters

__all__ = ["HESessionConfig", "HE_MAX_VECTOR_LENGTH"]

HE_MAX_VECTOR_LENGTH = 2**24  # see the module docstring: memory grows ~linearly in m (ciphertexts are not streamed)


@dataclass(frozen=True)
class HESessionConfig(ConfigBase):
    """Everything the parties of one HE session must agree on.

    Attributes:
        session_id: 32-byte fresh random nonce (public); see :func:`secagg.new_session_id`.
        participants: the site ids invited to the session (sorted, distinct).
        threshold: t, the minimum number of contributions in the decrypted sum (2 <= t <= n).
        vector_length: m, values per (encoded, pre-weighted) update.
        key_holder: the site that creates the CKKS key, seals it to the others and decrypts
            the sum (a single point of trust and of failure).
        params: the CKKS and encoding parameters (:func:`secagg.he.find_he_parameters`).
        active: sign round-0 keys, contexts, ciphertexts and the sum with Ed25519 (defends
            against an actively malicious coordinator); needs ``verify_keys``.
        verify_keys: long-term Ed25519 verify keys of every participant (active mode).
    """

    _PARTY = "site"

    key_holder: int
    params: HEParameters
    active: bool = False
    verify_keys: FrozenMap = FrozenMap()

    def __post_init__(self) -> None:
        n = self._check_participants()
        if not isinstance(self.threshold, int) or isinstance(self.threshold, bool) or not 2 <= self.threshold <= n:
            raise InvalidInputError(
                f"threshold must be an int in [2, {n}]; got {self.threshold!r} (t = 1 would let the key "
                "holder decrypt a single site's update)"
            )
        if not isinstance(self.vector_length, int) or isinstance(self.vector_length, bool) or self.vector_length < 1:
            raise InvalidInputError(f"vector_length must be a positive int; got {self.vector_length!r}")
        if self.vector_length > HE_MAX_VECTOR_LENGTH:
            raise InvalidInputError(
                f"the HE path takes at most {HE_MAX_VECTOR_LENGTH:,} values per update (2^24; its ciphertexts are "
                f"held whole, about 1.9 GB at the coordinator at that size); got {self.vector_length:,}: use the "
                "masking path (mode secagg), which streams large updates in 1 MiB chunks")
        if self.key_holder not in self.participants:
            raise InvalidInputError(f"key holder {self.key_holder!r} is not a participant")
        if not isinstance(self.params, HEParameters):
            raise InvalidInputError(f"params must be HEParameters; got {type(self.params).__name__}")
        if self.params.max_summands < n:
            raise InvalidInputError(
                f"params allow sums of {self.params.max_summands} encodings; the session has {n} sites"
            )
        if not isinstance(self.active, bool):
            raise InvalidInputError(f"active must be a bool; got {self.active!r}")
        self._check_verify_keys()

    @cached_property
    def canonical_bytes(self) -> bytes:
        """Canonical encoding of the configuration, CKKS parameters last (layout in :mod:`secagg.configbase`)."""
        fixed = struct.pack(">IIQIB", self.n, self.threshold, self.vector_length, self.key_holder, int(self.active))
        return self._canonical(b"secagg/v1/he-config", fixed, self.params.canonical_bytes)

    @property
    def chunk_count(self) -> int:
        """Ciphertexts per contribution."""
        return len(self.params.chunk_lengths(self.vector_length))
