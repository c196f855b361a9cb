"""The server (coordinator) side of the protocol as a sans-IO state machine.

The transport feeds client messages to :meth:`ServerSession.receive` and
decides when a round is over (everyone answered, or a timeout); then it calls
:meth:`ServerSession.advance`, which returns the messages to send, one per
recipient, or raises :class:`~secagg.errors.ThresholdNotMetError` if fewer
than t clients answered (the session aborts and produces no output).

What the server learns. It sees public keys, ciphertexts it cannot open,
masked vectors (uniform in Z_{2^b}^m whatever the input), t shares of b_u for
each u in U3 and t shares of s_sk_v for each v in U2 \\ U3. From these it
removes every mask and obtains sum_{u in U3} x_u, and nothing else about the
individual x_u (Bonawitz et al. 2017, Thm. 6.2/6.3; Bell et al. 2020 for the
sparse graph).

Masked vectors are summed as they arrive (one accumulator, never a list of
individual vectors: the commit of a validated masked input adds it), and
every message is validated completely before any state changes; unmasking
subtracts the masks from that same accumulator in chunks
(:func:`secagg.prg.apply_masks`) once every key is reconstructed and checked
(``tests/test_streaming.py`` counts the server's allocations: one sum and
chunks, nothing per survivor).
Measured 2026-11-29 (benchmarks/test_bench_stream.py, m = 5e7, n = 10, one
dropout, 32-bit, one machine, not a guarantee): the server's peak RSS over
receiving 9 inputs and unmasking was 381 MiB = 2.0 vectors above its
baseline (the running sum and the one message being received); before
streaming 572 MiB = 3.0 vectors. Unmasking (18 keystreams of m words) took
0.9-1.4 s over three runs, before streaming 1.0-1.2 s: its time is the AES. The stages are the rows of :data:`secagg.transitions.SERVER_PASSIVE`
/ ``SERVER_ACTIVE``; the skeleton shared with the HE path
(:class:`secagg.session.StagedServer`) receives, advances, aborts and commits.
"""

from __future__ import annotations

import numpy as np

from . import messages as msg
from . import shamir, wire
from .config import SessionConfig
from .crypto import AEAD_OVERHEAD, constant_time_equal, verify_signature, x25519_public_key
from .encoding import ring_dtype
from .errors import InvalidInputError, ReconstructionError, ThresholdNotMetError, VerificationError
from .keyschedule import (SHARE_BUNDLE, advertise_payload, consistency_payload, masked_input_payload, pairwise_mask_key,
                          self_mask_key, unmask_response_payload)
from .prg import apply_masks
from .session import AggregateResult, Commit, StagedServer
from .tables import Transitions
from .transitions import SERVER_ACTIVE, SERVER_PASSIVE, ServerStage

__all__ = ["ServerSession", "ServerStage", "AggregateResult", "SHARE_CIPHERTEXT_BYTES"]

SHARE_CIPHERTEXT_BYTES = SHARE_BUNDLE.size + AEAD_OVERHEAD


class ServerSession(StagedServer, party="client", decode=wire.decode):
    """The coordinator's run of one aggregation session.

    Its stages are :data:`secagg.transitions.SERVER_PASSIVE` or
    :data:`~secagg.transitions.SERVER_ACTIVE`; :class:`secagg.session.StagedServer`
    checks envelopes and eligibility, enforces the threshold, aborts and
    commits the transitions; the validators and closers below only compute.
    """

    _NOT_ELIGIBLE = "unknown id, or it dropped out of an earlier round"
    _THRESHOLD_STAGES = frozenset(SERVER_ACTIVE.states)  # every stage needs t answers

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self._dtype = ring_dtype(config.bit_width)
        self._keys: dict[int, msg.AdvertiseKeys] = {}  # U1
        self._share_senders: frozenset = frozenset()  # U2
        self._delivered: dict[int, frozenset] = {}  # u -> peers whose shares u received (and masked with)
        self._sum: np.ndarray | None = None
        self._signatures: dict[int, bytes] = {}  # U4

    def _transitions(self) -> Transitions:
        return SERVER_ACTIVE if self.config.active else SERVER_PASSIVE

    def _forget(self) -> None:
        self._sum = None

    # -- validators: check one client message; the commit only assigns --------------

    def _validate_advertise(self, message: msg.AdvertiseKeys) -> tuple[msg.AdvertiseKeys, None]:
        # Round 0 collects into _received; _keys is only filled when the round closes, so both are checked.
        for other in (*self._keys.values(), *self._received.values()):
            if {other.encryption_key, other.masking_key} & {message.encryption_key, message.masking_key}:
                raise VerificationError(f"client {message.sender} advertises a public key already in use")
        if message.encryption_key == message.masking_key:
            raise VerificationError(f"client {message.sender} uses one key for both purposes")
        if self.config.active:
            payload = advertise_payload(self._fp, message.sender, message.encryption_key, message.masking_key)
            verify_signature(self.config.verify_keys[message.sender], payload, message.signature)
        elif message.signature:
            raise VerificationError("round-0 signature present but the session is not in active mode")
        return message, None

    def _validate_share(self, message: msg.ShareKeys) -> tuple[msg.ShareKeys, None]:
        expected = (self.config.neighbors[message.sender] & set(self._keys))
        got = set(message.ciphertexts)
        if got != expected:
            raise VerificationError(
                f"client {message.sender} must send shares to exactly its neighbours in U1 "
                f"({len(expected)} of them); missing {sorted(expected - got)[:10]}, extra {sorted(got - expected)[:10]}"
            )
        bad = [v for v, ct in message.ciphertexts.items() if len(ct) != SHARE_CIPHERTEXT_BYTES]
        if bad:
            raise VerificationError(
                f"share ciphertexts from client {message.sender} must be {SHARE_CIPHERTEXT_BYTES} bytes; "
                f"wrong for recipients {bad[:10]}"
            )
        return message, None

    def _validate_mask(self, message: msg.MaskedInput) -> tuple[msg.MaskedInput, Commit]:
        if message.bit_width != self.config.bit_width:
            raise InvalidInputError(
                f"client {message.sender} sent a {message.bit_width}-bit vector; the session uses "
                f"{self.config.bit_width} bits"
            )
        if len(message.vector) != self.config.vector_length:
            raise InvalidInputError(
                f"client {message.sender} sent {len(message.vector)} elements; expected {self.config.vector_length}"
            )
        self._check_signature(message, masked_input_payload(self._fp, message.sender, message.bit_width, message.data))

        def commit() -> None:
            # Fold the vector into the running sum; do not keep it.
            vector = message.vector.astype(self._dtype, copy=False)
            if self._sum is None:
                self._sum = vector.copy()
            else:
                np.add(self._sum, vector, out=self._sum)

        return msg.MaskedInput(message.session, message.sender, message.bit_width, b"", message.signature), commit

    def _check_signature(self, message, payload: bytes) -> None:
        """Active mode: the message is signed by its sender for this session; otherwise it carries no signature."""
        if self.config.active:
            if not message.signature:
                raise VerificationError(f"client {message.sender} sent an unsigned {type(message).__name__} in active mode")
            verify_signature(self.config.verify_keys[message.sender], payload, message.signature)
        elif message.signature:
            raise VerificationError(f"{type(message).__name__} carries a signature but the session is not in active mode")

    def _validate_consistency(self, message: msg.ConsistencySignature) -> tuple[msg.ConsistencySignature, None]:
        payload = consistency_payload(self._fp, self._survivors)
        verify_signature(self.config.verify_keys[message.sender], payload, message.signature)
        return message, None

    def _validate_unmask(self, message: msg.UnmaskResponse) -> tuple[msg.UnmaskResponse, None]:
        u = message.sender
        holds = self._delivered[u] | {u}
        dropped = self._share_senders - self._survivors
        want_b = holds & self._survivors
        want_sk = self._delivered[u] & dropped
        if set(message.self_mask_shares) != want_b or set(message.key_shares) != want_sk:
            raise VerificationError(
                f"client {u} answered with shares for the wrong peers: self-mask shares for "
                f"{sorted(message.self_mask_shares)[:10]} (expected {sorted(want_b)[:10]}), key shares for "
                f"{sorted(message.key_shares)[:10]} (expected {sorted(want_sk)[:10]})"
            )
        self._check_signature(
            message, unmask_response_payload(self._fp, u, message.self_mask_shares, message.key_shares))
        return message, None

    # -- closers: the messages of the next round; the commit only assigns ------------

    def _close_advertise(self, answered: dict) -> tuple[dict, Commit]:
        out = {}
        for u in answered:
            closed = self.config.closed_neighborhood(u) & set(answered)
            out[u] = msg.KeyDirectory(self._fp, u, {v: answered[v].keys for v in closed})

        def commit() -> None:
            self._keys, self._eligible = answered, frozenset(answered)

        return out, commit

    def _close_share(self, answered: dict) -> tuple[dict, Commit]:
        share_senders = frozenset(answered)
        out, delivered = {}, {}
        for u in answered:
            senders = self.config.neighbors[u] & share_senders
            delivered[u] = frozenset(senders)
            out[u] = msg.MaskedInputRequest(self._fp, u, {v: answered[v].ciphertexts[u] for v in senders})

        def commit() -> None:
            self._share_senders, self._delivered, self._eligible = share_senders, delivered, share_senders

        return out, commit

    def _close_mask(self, answered: dict) -> tuple[dict, Commit]:
        survivors = frozenset(answered)
        dropped = self._share_senders - survivors
        if self.config.active:
            out = {u: msg.ConsistencyRequest(self._fp, u, survivors) for u in survivors}
        else:
            out = {u: msg.UnmaskRequest(self._fp, u, survivors, dropped) for u in survivors}

        def commit() -> None:
            self._survivors = self._eligible = survivors

        return out, commit

    def _close_consistency(self, answered: dict) -> tuple[dict, Commit]:
        quorum = self.config.consistency_quorum
        if len(answered) < quorum:
            raise ThresholdNotMetError(
                f"only {len(answered)} clients signed the survivor set; honest clients need the consistency "
                f"quorum of {quorum}. The session is aborted and produces no output."
            )
        signatures = {u: m.signature for u, m in answered.items()}
        recipients = frozenset(answered)
        dropped = self._share_senders - self._survivors
        out = {u: msg.UnmaskRequest(self._fp, u, self._survivors, dropped, signatures) for u in recipients}

        def commit() -> None:
            self._signatures, self._eligible = signatures, recipients

        return out, commit

    def _close_unmask(self, answered: dict) -> tuple[dict, Commit]:
        dropped = self._share_senders - self._survivors
        b_shares: dict[int, dict[int, int]] = {u: {} for u in self._survivors}
        sk_shares: dict[int, dict[int, int]] = {v: {} for v in dropped}
        for responder, response in answered.items():
            x = shamir.x_coordinate(responder)
            for u, share in response.self_mask_shares.items():
                b_shares[u][x] = share
            for v, share in response.key_shares.items():
                sk_shares[v][x] = share
        # Reconstruct and check every key first (this can fail, and a refused close leaves the
        # session as it was); only then remove the masks, in place and in chunks (the commit).
        masks = []
        for u in sorted(self._survivors):
            seed = self._reconstruct(b_shares[u], f"self-mask seed of client {u}")
            masks.append((self_mask_key(self._fp, seed, u), True))
        for v in sorted(dropped):
            secret = self._reconstruct(sk_shares[v], f"masking key of dropped client {v}")
            if not constant_time_equal(x25519_public_key(secret), self._keys[v].masking_key):
                raise ReconstructionError(
                    f"reconstructed masking key of client {v} does not match its advertised public key "
                    "(corrupted shares)"
                )
            # Survivors u that masked with v added +PRG if u < v, -PRG if u > v: undo it.
            for u in sorted(self._survivors):
                if v in self._delivered[u]:
                    masks.append((pairwise_mask_key(self._fp, secret, self._keys[u].masking_key, v, u), u < v))
        survivors = self._survivors

        def commit() -> None:
            # Streaming unmasking: the running sum becomes the result, no second full-length
            # buffer (apply_masks works one chunk of keystream at a time). Nothing here can
            # refuse: every key was reconstructed and checked above.
            total = apply_masks(self._sum, masks)
            self._result, self._sum = AggregateResult(total, survivors, self.config.bit_width), None

        return {}, commit

    def _reconstruct(self, shares: dict, what: str) -> bytes:
        if len(shares) < self._t:
            raise ReconstructionError(
                f"only {len(shares)} shares of the {what} arrived; threshold is {self._t}"
            )
        return shamir.reconstruct(shares, self._t)

    _VALIDATORS = {
        msg.AdvertiseKeys: _validate_advertise,
        msg.ShareKeys: _validate_share,
        msg.MaskedInput: _validate_mask,
        msg.ConsistencySignature: _validate_consistency,
        msg.UnmaskResponse: _validate_unmask,
    }
    _CLOSERS = {
        ServerStage.ADVERTISE: _close_advertise,
        ServerStage.SHARE: _close_share,
        ServerStage.MASK: _close_mask,
        ServerStage.CONSISTENCY: _close_consistency,
        ServerStage.UNMASK: _close_unmask,
    }
