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
individual vectors), and every message is validated completely before any
state changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from . import shamir, wire
from .config import SessionConfig
from .crypto import AEAD_OVERHEAD, constant_time_equal, verify_signature, x25519_public_key
from .encoding import ring_dtype
from .envelope import check_envelope
from .errors import (
    InvalidInputError,
    LocalProtocolError,
    ReconstructionError,
    ThresholdNotMetError,
    UnexpectedMessageError,
    VerificationError,
)
from .keyschedule import (
    SHARE_BUNDLE,
    advertise_payload,
    consistency_payload,
    masked_input_payload,
    pairwise_mask_key,
    self_mask_key,
    unmask_response_payload,
)
from .messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    MaskedInputRequest,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from .prg import add_keystream

__all__ = ["ServerSession", "ServerStage", "AggregateResult", "SHARE_CIPHERTEXT_BYTES"]

SHARE_CIPHERTEXT_BYTES = SHARE_BUNDLE.size + AEAD_OVERHEAD


class ServerStage(enum.Enum):
    """The round whose messages the server is collecting."""

    ADVERTISE = "advertise"
    SHARE = "share"
    MASK = "mask"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


_EXPECTED = {
    ServerStage.ADVERTISE: AdvertiseKeys,
    ServerStage.SHARE: ShareKeys,
    ServerStage.MASK: MaskedInput,
    ServerStage.CONSISTENCY: ConsistencySignature,
    ServerStage.UNMASK: UnmaskResponse,
}


@dataclass(frozen=True)
class AggregateResult:
    """The only output of a session: the ring sum of the survivors' inputs."""

    ring_sum: np.ndarray
    survivors: frozenset
    bit_width: int


class ServerSession:
    """The coordinator's run of one aggregation session."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._fp = config.fingerprint
        self._t = config.threshold
        self.stage = ServerStage.ADVERTISE
        self._dtype = ring_dtype(config.bit_width)
        self._received: dict[int, ClientMessage] = {}
        self._keys: dict[int, AdvertiseKeys] = {}  # U1
        self._share_senders: frozenset = frozenset()  # U2
        self._share_ciphertexts: dict[int, dict[int, bytes]] = {}
        self._delivered: dict[int, frozenset] = {}  # u -> peers whose shares u received (and masked with)
        self._sum: np.ndarray | None = None
        self._survivors: frozenset = frozenset()  # U3
        self._signatures: dict[int, bytes] = {}  # U4
        self._unmask_recipients: frozenset = frozenset()
        self._released_on_abort: frozenset = frozenset()
        self._result: AggregateResult | None = None

    # -- inspection --------------------------------------------------------------

    @property
    def expected_senders(self) -> frozenset:
        """Who may still send a message in the current stage."""
        if self.stage is ServerStage.ADVERTISE:
            eligible = frozenset(self.config.participants)
        elif self.stage is ServerStage.SHARE:
            eligible = frozenset(self._keys)
        elif self.stage is ServerStage.MASK:
            eligible = self._share_senders
        elif self.stage is ServerStage.CONSISTENCY:
            eligible = self._survivors
        elif self.stage is ServerStage.UNMASK:
            eligible = self._unmask_recipients
        else:
            return frozenset()
        return eligible - set(self._received)

    @property
    def released(self) -> frozenset:
        """Clients whose masked input has reached the server (U3, or its part so far).

        This is the set whose privacy was spent in this session, whether or
        not the session later completes: record it even when it aborts.
        """
        if self.stage is ServerStage.MASK:
            return frozenset(self._received)
        return self._survivors if self._survivors else self._released_on_abort

    @property
    def result(self) -> AggregateResult:
        if self._result is None:
            raise LocalProtocolError(f"no result: the session is in stage {self.stage.value}")
        return self._result

    # -- receiving -------------------------------------------------------------------

    def receive(self, message: ClientMessage | bytes) -> None:
        """Validate and record one client message of the current stage."""
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = wire.decode(message)
        sender = check_envelope(message, self.stage, _EXPECTED.get(self.stage), self._fp, self._received)
        eligible = self.expected_senders | set(self._received)
        if sender not in eligible:
            raise UnexpectedMessageError(
                f"client {sender} may not send {type(message).__name__} in stage {self.stage.value} "
                "(unknown id, or it dropped out of an earlier round)"
            )
        validate = getattr(self, f"_validate_{self.stage.value}")
        validate(message)
        if isinstance(message, MaskedInput):
            # Fold the vector into the running sum; do not keep it.
            vector = message.vector.astype(self._dtype, copy=False)
            if self._sum is None:
                self._sum = vector.copy()
            else:
                np.add(self._sum, vector, out=self._sum)
            message = MaskedInput(message.session, sender, message.bit_width, b"", message.signature)
        self._received[sender] = message

    def _validate_advertise(self, message: AdvertiseKeys) -> None:
        for other in self._keys.values():
            if {other.encryption_key, other.masking_key} & {message.encryption_key, message.masking_key}:
                raise VerificationError(f"client {message.sender} advertises a public key already in use")
        if message.encryption_key == message.masking_key:
            raise VerificationError(f"client {message.sender} uses one key for both purposes")
        if self.config.active:
            payload = advertise_payload(self._fp, message.sender, message.encryption_key, message.masking_key)
            verify_signature(self.config.verify_keys[message.sender], payload, message.signature)
        elif message.signature:
            raise VerificationError("round-0 signature present but the session is not in active mode")

    def _validate_share(self, message: ShareKeys) -> None:
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

    def _validate_mask(self, message: MaskedInput) -> None:
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

    def _check_signature(self, message, payload: bytes) -> None:
        """Active mode: the message is signed by its sender for this session; otherwise it carries no signature."""
        if self.config.active:
            if not message.signature:
                raise VerificationError(f"client {message.sender} sent an unsigned {type(message).__name__} in active mode")
            verify_signature(self.config.verify_keys[message.sender], payload, message.signature)
        elif message.signature:
            raise VerificationError(f"{type(message).__name__} carries a signature but the session is not in active mode")

    def _validate_consistency(self, message: ConsistencySignature) -> None:
        payload = consistency_payload(self._fp, self._survivors)
        verify_signature(self.config.verify_keys[message.sender], payload, message.signature)

    def _validate_unmask(self, message: UnmaskResponse) -> None:
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

    # -- advancing -------------------------------------------------------------------

    def advance(self) -> dict:
        """Close the current stage; return ``{recipient: message}`` for the next one.

        Raises :class:`ThresholdNotMetError` (and moves to ABORTED, with no
        output) when fewer than t clients answered.
        """
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            raise LocalProtocolError(f"advance() called in terminal stage {self.stage.value}")
        answered = dict(self._received)
        if len(answered) < self._t:
            stage = self.stage
            if stage is ServerStage.MASK:
                self._released_on_abort = frozenset(answered)
            self._abort()
            raise ThresholdNotMetError(
                f"only {len(answered)} clients answered in stage {stage.value}; threshold is {self._t}. "
                "The session is aborted and produces no output."
            )
        try:
            outgoing = getattr(self, f"_close_{self.stage.value}")(answered)
        except ThresholdNotMetError:
            self._abort()
            raise
        self._received = {}
        return outgoing

    def _abort(self) -> None:
        self.stage = ServerStage.ABORTED
        self._sum = None
        self._share_ciphertexts = {}

    def _close_advertise(self, answered: dict) -> dict:
        self._keys = answered
        out = {}
        for u in answered:
            closed = self.config.closed_neighborhood(u) & set(answered)
            out[u] = KeyDirectory(self._fp, u, {v: answered[v].keys for v in closed})
        self.stage = ServerStage.SHARE
        return out

    def _close_share(self, answered: dict) -> dict:
        self._share_senders = frozenset(answered)
        out = {}
        for u in answered:
            senders = self.config.neighbors[u] & self._share_senders
            self._delivered[u] = frozenset(senders)
            out[u] = MaskedInputRequest(self._fp, u, {v: answered[v].ciphertexts[u] for v in senders})
        self._share_ciphertexts = {}
        self.stage = ServerStage.MASK
        return out

    def _close_mask(self, answered: dict) -> dict:
        self._survivors = frozenset(answered)
        dropped = self._share_senders - self._survivors
        if self.config.active:
            self.stage = ServerStage.CONSISTENCY
            return {u: ConsistencyRequest(self._fp, u, self._survivors) for u in self._survivors}
        self._unmask_recipients = self._survivors
        self.stage = ServerStage.UNMASK
        return {u: UnmaskRequest(self._fp, u, self._survivors, dropped) for u in self._survivors}

    def _close_consistency(self, answered: dict) -> dict:
        quorum = self.config.consistency_quorum
        if len(answered) < quorum:
            raise ThresholdNotMetError(
                f"only {len(answered)} clients signed the survivor set; honest clients need the consistency "
                f"quorum of {quorum}. The session is aborted and produces no output."
            )
        self._signatures = {u: m.signature for u, m in answered.items()}
        self._unmask_recipients = frozenset(answered)
        dropped = self._share_senders - self._survivors
        self.stage = ServerStage.UNMASK
        return {
            u: UnmaskRequest(self._fp, u, self._survivors, dropped, self._signatures)
            for u in self._unmask_recipients
        }

    def _close_unmask(self, answered: dict) -> dict:
        dropped = self._share_senders - self._survivors
        b_shares: dict[int, dict[int, int]] = {u: {} for u in self._survivors}
        sk_shares: dict[int, dict[int, int]] = {v: {} for v in dropped}
        for responder, response in answered.items():
            x = shamir.x_coordinate(responder)
            for u, share in response.self_mask_shares.items():
                b_shares[u][x] = share
            for v, share in response.key_shares.items():
                sk_shares[v][x] = share
        total = self._sum.copy()
        scratch = np.empty_like(total)
        for u in sorted(self._survivors):
            seed = self._reconstruct(b_shares[u], f"self-mask seed of client {u}")
            add_keystream(total, self_mask_key(self._fp, seed, u), scratch, subtract=True)
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
                    key = pairwise_mask_key(self._fp, secret, self._keys[u].masking_key, v, u)
                    add_keystream(total, key, scratch, subtract=u < v)
        self._result = AggregateResult(total, self._survivors, self.config.bit_width)
        self._sum = None
        self.stage = ServerStage.DONE
        return {}

    def _reconstruct(self, shares: dict, what: str) -> bytes:
        if len(shares) < self._t:
            raise ReconstructionError(
                f"only {len(shares)} shares of the {what} arrived; threshold is {self._t}"
            )
        return shamir.reconstruct(shares, self._t)
