"""A step-by-step driver of real HE sessions, shared by the HE tests (no tests in this module).

Each round can be intercepted, so tests can play a malicious coordinator
(rewrite what sites receive) or a malicious site (rewrite what the
coordinator receives).
"""

from __future__ import annotations

import numpy as np

from secagg import new_session_id
from secagg.crypto import SigningKeyPair

from secagg.he import HEClientSession, HEServerSession, HESessionConfig, find_he_parameters, wire


class HEDeployment:
    """n sites and one coordinator of one HE session, advanced one round at a time."""

    def __init__(self, n=4, threshold=3, *, active=False, length=40, holder=None, ids=None, params=None,
                 session_id=None, seed=0, identities=None):
        self.ids = list(ids) if ids is not None else list(range(1, n + 1))
        if identities is None:
            identities = {i: SigningKeyPair.generate() for i in self.ids} if active else {}
        self.identities = identities
        self.params = params or find_he_parameters(vector_length=length, max_summands=len(self.ids))
        self.config = HESessionConfig(
            session_id=session_id or new_session_id(),
            participants=tuple(self.ids),
            threshold=threshold,
            vector_length=length,
            key_holder=self.ids[0] if holder is None else holder,
            params=self.params,
            active=active,
            verify_keys={i: k.verify_key for i, k in self.identities.items()},
        )
        rng = np.random.default_rng(seed)
        self.inputs = {i: rng.uniform(-1, 1, length) for i in self.ids}
        encoder = self.params.encoder
        self.encoded = {i: encoder.encode(self.inputs[i]).ring for i in self.ids}
        self.sites = {
            i: HEClientSession(self.config, i, masked_input=self.encoded[i],
                               signing_key=self.identities[i].seed if active else None)
            for i in self.ids
        }
        self.server = HEServerSession(self.config)
        self.holder = self.config.key_holder

    def integer_sum(self, ids) -> np.ndarray:
        """The exact integer sum of the encodings of ``ids`` (what the aggregate must equal)."""
        return np.sum([self.encoded[i].view(np.int64) for i in sorted(ids)], axis=0)

    def advertise(self, silent=()):
        for i in self.ids:
            if i not in silent:
                self.server.receive(wire.encode(self.sites[i].advertise()))
        return self.server.advance()

    def exchange(self, outgoing, silent=(), to_site=None, to_server=None):
        """Deliver ``outgoing`` (rewritten by ``to_site``), feed replies (rewritten by ``to_server``), advance."""
        for i, message in sorted(outgoing.items()):
            if i in silent:
                continue
            if to_site is not None:
                message = to_site(i, message)
            reply = self.sites[i].handle(wire.encode(message))
            if to_server is not None:
                reply = to_server(i, reply)
                if reply is None:
                    continue
            self.server.receive(wire.encode(reply))
        return self.server.advance()

    def to_upload_round(self, silent=()):
        """Run rounds 0 and 1; return the coordinator's context deliveries."""
        directory = self.advertise(silent)
        return self.exchange(directory)

    def to_decrypt_round(self, silent_upload=()):
        """Run up to the uploads; return the coordinator's decryption request."""
        deliveries = self.to_upload_round()
        return self.exchange(deliveries, silent=silent_upload)

    def run(self, silent_upload=()):
        request = self.to_decrypt_round(silent_upload)
        self.exchange(request)
        return self.server.result
