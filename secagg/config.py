"""Public parameters of one aggregation session, shared by every party.

A :class:`SessionConfig` is agreed before round 0 (the coordinator publishes
it; every client checks it before taking part). Its ``fingerprint`` -
SHA-256 over a canonical encoding of all fields - is carried by every message
and mixed into every key derivation, so messages and masks of one session can
never be confused with or reused in another. ``session_id`` is a fresh random
nonce per session (per federated round): it makes the fingerprint unique even
when every other parameter repeats, and it seeds the SecAgg+ graph.

Threshold rule. Each client secret-shares its secrets t-out-of-(k+1) over its
closed neighbourhood N[u] (its k neighbours and itself). We require
(k+1)/2 < t <= k+1: then no server, however it lies about who dropped, can
collect t self-mask shares *and* t key shares of the same client from honest
neighbours, because the two groups of answering neighbours would need more
than k+1 members (Bonawitz et al. 2017, Sec. 4; Bell et al. 2020).

Consistency quorum (active mode). ``max_corrupt`` = c is the number of
clients that may collude with the coordinator. An honest client releases its
unmasking shares only for a survivor set U3 signed by at least
Q = max(t, floor((n + c) / 2) + 1) distinct participants, counted over the
whole session (not only the client's neighbourhood). Two different sets each
signed by Q participants share at least 2Q - n > c signers, so one of them is
honest and signed twice, which an honest client never does: every honest
client that answers sees the same U3. The full argument, and why that single
U3 stops uneven share forwarding, is in ``docs/security.md``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property

from .configbase import ConfigBase
from .crypto import random_bytes
from .encoding import SUPPORTED_BIT_WIDTHS
from .errors import InvalidInputError
from .graph import complete_graph, harary_graph
from .messagebase import FrozenMap

__all__ = ["SessionConfig", "new_session_id"]

_MAX_VECTOR = 2**31  # words per masked vector (a u32 on the wire, with headroom)


def new_session_id() -> bytes:
    """A fresh, unpredictable 32-byte session nonce."""
    return random_bytes(32)


@dataclass(frozen=True)
class SessionConfig(ConfigBase):
    """Everything the parties of one session must agree on.

    Attributes:
        session_id: 32-byte fresh random nonce (public).
        participants: the client ids invited to the session (sorted, distinct).
        threshold: t, the Shamir threshold and the minimum number of parties
            each round needs; see the module docstring for its allowed range.
        vector_length: m, the number of ring elements each client uploads.
        bit_width: b in {32, 64}: the ring is Z_{2^b}.
        degree: k for a SecAgg+ Harary graph (even); ``None`` for the complete graph.
        active: run the ConsistencyCheck round and sign round-0 keys
            (defends against an actively malicious server); needs ``verify_keys``.
        verify_keys: long-term Ed25519 verify keys of every participant (active mode).
        max_corrupt: c, how many clients may collude with the server; sets the
            consistency quorum (see :attr:`consistency_quorum`). On the complete
            graph active mode also needs 2t - n > c.
    """

    _PARTY = "client"

    bit_width: int = 32
    degree: int | None = None
    active: bool = False
    verify_keys: FrozenMap = FrozenMap()
    max_corrupt: int = 0

    def __post_init__(self) -> None:
        n = self._check_participants()
        if self.bit_width not in SUPPORTED_BIT_WIDTHS:
            raise InvalidInputError(f"bit_width must be one of {SUPPORTED_BIT_WIDTHS}; got {self.bit_width}")
        if not isinstance(self.vector_length, int) or not 1 <= self.vector_length <= _MAX_VECTOR:
            raise InvalidInputError(f"vector_length must be an int in [1, 2^31]; got {self.vector_length!r}")
        if self.degree is not None:
            if not isinstance(self.degree, int) or self.degree < 2 or self.degree % 2:
                raise InvalidInputError(f"SecAgg+ degree must be an even int >= 2; got {self.degree!r}")
            if self.degree >= n - 1:
                object.__setattr__(self, "degree", None)  # that is the complete graph
        k = self.effective_degree
        if not isinstance(self.threshold, int) or not (k + 1) / 2 < self.threshold <= k + 1:
            raise InvalidInputError(
                f"threshold must satisfy (k+1)/2 < t <= k+1 = {k + 1} (k = {k} neighbours per client), "
                f"i.e. t in [{(k + 1) // 2 + 1}, {k + 1}]; got {self.threshold!r}. A smaller t would let a "
                "malicious server collect both kinds of shares of one client from different neighbours."
            )
        c = self.max_corrupt
        if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < n:
            raise InvalidInputError(f"max_corrupt must be an int in [0, n) = [0, {n}); got {c!r}")
        if self.active and self.consistency_quorum > n:
            raise InvalidInputError(
                f"active mode with n = {n} and max_corrupt = {c} needs a consistency quorum of "
                f"{self.consistency_quorum} > n signers; lower max_corrupt or add clients"
            )
        if self.active and self.degree is None and 2 * self.threshold - n <= c:
            raise InvalidInputError(
                f"active mode on the complete graph needs 2t - n > max_corrupt: t = {self.threshold}, n = {n}, "
                f"max_corrupt = {c}; use t >= {(n + c) // 2 + 1}"
            )
        self._check_verify_keys()

    @property
    def consistency_quorum(self) -> int:
        """Q = max(t, floor((n + c)/2) + 1): distinct signers an honest client needs on U3 (active mode).

        Any two sets of Q signers among n participants overlap in 2Q - n > c
        clients, so at least one honest client is in both (module docstring).
        """
        return max(self.threshold, (self.n + self.max_corrupt) // 2 + 1)

    @property
    def effective_degree(self) -> int:
        """k: neighbours per client (n - 1 for the complete graph)."""
        return self.n - 1 if self.degree is None else self.degree

    @cached_property
    def canonical_bytes(self) -> bytes:
        """Canonical encoding of the configuration (input to the fingerprint; layout in :mod:`secagg.configbase`)."""
        fixed = struct.pack(">IIQBIBI", self.n, self.threshold, self.vector_length, self.bit_width,
                            self.degree or 0, int(self.active), self.max_corrupt)
        return self._canonical(b"secagg/v2/config", fixed)

    @cached_property
    def neighbors(self) -> dict:
        """Open neighbourhoods N(u): the complete graph or a SecAgg+ Harary graph."""
        if self.degree is None:
            return complete_graph(self.participants)
        seed = hashlib.sha256(b"secagg/v1/graph-seed" + self.fingerprint).digest()
        return harary_graph(self.participants, self.degree, seed)

    def closed_neighborhood(self, client_id: int) -> frozenset:
        """N[u] = N(u) ∪ {u}: the holders of u's shares."""
        return self.neighbors[client_id] | {client_id}
