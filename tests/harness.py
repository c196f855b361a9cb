"""A step-by-step driver of real sessions, for tests that play a malicious party."""

from __future__ import annotations

import numpy as np

from secagg import ClientSession, FixedPointEncoder, ServerSession, SessionConfig, new_session_id, wire
from secagg.crypto import SigningKeyPair


class Deployment:
    """n clients and one server of one session, advanced one round at a time."""

    def __init__(self, n=5, threshold=3, *, degree=None, active=False, length=16, ids=None, session_id=None,
                 identities=None, max_corrupt=0):
        self.ids = list(ids) if ids is not None else list(range(1, n + 1))
        if identities is None:
            identities = {i: SigningKeyPair.generate() for i in self.ids} if active else {}
        self.identities = identities
        self.encoder = FixedPointEncoder.create(clip=1.0, max_summands=len(self.ids))
        self.config = SessionConfig(
            session_id=session_id or new_session_id(),
            participants=tuple(self.ids),
            threshold=threshold,
            vector_length=length,
            bit_width=self.encoder.bit_width,
            degree=degree,
            active=active,
            verify_keys={i: k.verify_key for i, k in self.identities.items()},
            max_corrupt=max_corrupt,
        )
        rng = np.random.default_rng(0)
        self.inputs = {i: rng.uniform(-1, 1, length) for i in self.ids}
        self.encoded = {i: self.encoder.encode(self.inputs[i]).ring for i in self.ids}
        self.clients = {
            i: ClientSession(
                self.config, i, signing_key=self.identities[i].seed if active else None,
                masked_input=self.encoded[i],
            )
            for i in self.ids
        }
        self.server = ServerSession(self.config)
        self.outgoing = None

    def advertise(self, silent=()):
        for i in self.ids:
            if i not in silent:
                self.server.receive(wire.encode(self.clients[i].advertise()))
        self.outgoing = self.server.advance()
        return self.outgoing

    def answer(self, silent=(), outgoing=None):
        """Deliver the pending server messages; feed the replies back; advance the server."""
        outgoing = self.outgoing if outgoing is None else outgoing
        for i, message in sorted(outgoing.items()):
            if i in silent:
                continue
            reply = self.clients[i].handle(wire.encode(message))
            self.server.receive(wire.encode(reply))
        self.outgoing = self.server.advance()
        return self.outgoing

    def exact_ring_sum(self, survivors):
        total = np.zeros(self.config.vector_length, dtype=self.encoder.dtype)
        for i in survivors:
            total += self.encoded[i]
        return total
