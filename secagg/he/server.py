"""The coordinator side of the HE path as a sans-IO state machine.

The transport feeds site messages to :meth:`HEServerSession.receive` and
decides when a round is over; :meth:`HEServerSession.advance` then returns the
messages to send (``{recipient: message}``), or raises
:class:`~secagg.errors.ThresholdNotMetError` (fewer than t advertisers or
uploads) or :class:`~secagg.he.errors.KeyHolderUnavailableError` (the key
holder did not answer), after which the session is aborted and produces no
output. Its result, :attr:`result`, is a :class:`secagg.AggregateResult` with
the integer sum as 64-bit ring words, exactly like the masking server's, so
``params.encoder.decode(result.ring_sum)`` gives the float aggregate.

What the coordinator holds and learns. It only ever receives the **public
context** (CKKS parameters, no key of any kind: it can parse and add
ciphertexts but neither decrypt nor encrypt), X25519 public keys, sealed
secret contexts it cannot open, ciphertexts and finally the integer sum over
U2, the sites whose upload arrived (|U2| >= t). In semi-honest mode it sums
the ciphertexts as they arrive and keeps only the running sum; in active mode
it must keep every signed upload until the decryption round, because the key
holder verifies and re-sums them itself (so the coordinator cannot ask it to
decrypt anything but a sum of >= t signed contributions).

Threat model (see :data:`secagg.he.THREAT_MODEL`): one shared secret key means
the coordinator plus any one site can decrypt every upload; the key holder is
a single point of trust and of failure. Masking has neither weakness.
"""

from __future__ import annotations

import enum

import numpy as np

from ..crypto import AEAD_OVERHEAD, constant_time_equal, verify_signature
from ..envelope import check_envelope
from ..errors import (
    LocalProtocolError,
    MalformedMessageError,
    SessionMismatchError,
    ThresholdNotMetError,
    UnexpectedMessageError,
    VerificationError,
)
from ..server import AggregateResult
from . import wire
from .ckks import CKKSContext
from .config import HESessionConfig
from .errors import KeyHolderUnavailableError
from .keyschedule import advertise_payload, bundle_payload, ciphertext_digest, context_id, input_payload, sum_payload
from .messages import (
    HEAdvertise,
    HEContextBundle,
    HEContextDelivery,
    HEContribution,
    HEDecryptedSum,
    HEDecryptRequest,
    HEEncryptedInput,
    HEKeyDirectory,
)

__all__ = ["HEServerSession", "HEServerStage"]


class HEServerStage(enum.Enum):
    """The round whose messages the coordinator is collecting."""

    ADVERTISE = "advertise"
    CONTEXT = "context"
    UPLOAD = "upload"
    DECRYPT = "decrypt"
    DONE = "done"
    ABORTED = "aborted"


_EXPECTED = {
    HEServerStage.ADVERTISE: HEAdvertise,
    HEServerStage.CONTEXT: HEContextBundle,
    HEServerStage.UPLOAD: HEEncryptedInput,
    HEServerStage.DECRYPT: HEDecryptedSum,
}


class HEServerSession:
    """The coordinator's run of one HE aggregation session."""

    def __init__(self, config: HESessionConfig) -> None:
        self.config = config
        self._fp = config.fingerprint
        self._t = config.threshold
        self._holder = config.key_holder
        self.stage = HEServerStage.ADVERTISE
        self._received: dict = {}
        self._keys: dict[int, HEAdvertise] = {}  # U1
        self._context: CKKSContext | None = None
        self._context_id: bytes | None = None
        self._bundle: HEContextBundle | None = None
        self._delivered: frozenset = frozenset()
        self._sum: list | None = None  # semi-honest: running homomorphic sum
        self._contributions: dict[int, HEContribution] = {}  # active: signed uploads
        self._survivors: frozenset = frozenset()  # U2
        self._released_on_abort: frozenset = frozenset()
        self._result: AggregateResult | None = None

    # -- inspection --------------------------------------------------------------

    @property
    def context(self) -> CKKSContext | None:
        """The coordinator's CKKS context: public, parameters only (``None`` before round 1)."""
        return self._context

    @property
    def expected_senders(self) -> frozenset:
        """Who may still send a message in the current stage."""
        if self.stage is HEServerStage.ADVERTISE:
            eligible = frozenset(self.config.participants)
        elif self.stage in (HEServerStage.CONTEXT, HEServerStage.DECRYPT):
            eligible = frozenset({self._holder})
        elif self.stage is HEServerStage.UPLOAD:
            eligible = self._delivered
        else:
            return frozenset()
        return eligible - set(self._received)

    @property
    def released(self) -> frozenset:
        """Sites whose ciphertexts reached the coordinator (U2, or its part so far).

        Their privacy is spent in this session whether or not it completes
        (any site colluding with the coordinator could decrypt them): record
        it even when the session aborts.
        """
        if self.stage is HEServerStage.UPLOAD:
            return frozenset(self._received)
        return self._survivors if self._survivors else self._released_on_abort

    @property
    def result(self) -> AggregateResult:
        if self._result is None:
            raise LocalProtocolError(f"no result: the session is in stage {self.stage.value}")
        return self._result

    # -- receiving -------------------------------------------------------------------

    def receive(self, message) -> None:
        """Validate and record one site message of the current stage."""
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = wire.decode(message)
        sender = check_envelope(message, self.stage, _EXPECTED.get(self.stage), self._fp, self._received,
                                party="site")
        if sender not in self.expected_senders:
            raise UnexpectedMessageError(
                f"site {sender} may not send {type(message).__name__} in stage {self.stage.value} "
                "(unknown id, not the key holder, or dropped out of an earlier round)"
            )
        commit = getattr(self, f"_validate_{self.stage.value}")(message)
        if commit is not None:
            commit()
        self._received[sender] = message

    def _verify(self, signer: int, payload: bytes, signature: bytes, what: str) -> None:
        if not self.config.active:
            if signature:
                raise VerificationError(f"{what} of site {signer} is signed but the session is not in active mode")
            return
        try:
            verify_signature(self.config.verify_keys[signer], payload, signature)
        except VerificationError:
            raise VerificationError(f"{what} of site {signer} carries an invalid signature") from None

    def _validate_advertise(self, message: HEAdvertise):
        for other in self._received.values():
            if constant_time_equal(other.public_key, message.public_key):
                raise VerificationError(f"site {message.sender} advertises a public key already in use")
        self._verify(message.sender, advertise_payload(self._fp, message.sender, message.public_key),
                     message.signature, "round-0 key")

    def _validate_context(self, message: HEContextBundle):
        expected = set(self._keys) - {self._holder}
        got = set(message.sealed)
        if got != expected:
            raise VerificationError(
                f"the key holder must seal the context to exactly the other sites of U1; missing "
                f"{sorted(expected - got)[:10]}, extra {sorted(got - expected)[:10]}"
            )
        bad = [v for v, blob in message.sealed.items() if len(blob) <= AEAD_OVERHEAD]
        if bad:
            raise MalformedMessageError(f"sealed contexts for sites {bad[:10]} are too short to be AEAD ciphertexts")
        context = CKKSContext.from_public_bytes(message.public_context, self.config.params)
        cid = context_id(self._fp, context.public_bytes)
        self._verify(self._holder, bundle_payload(self._fp, self._holder, cid, message.sealed),
                     message.signature, "context bundle")

        def commit() -> None:
            self._context, self._context_id = context, cid

        return commit

    def _validate_upload(self, message: HEEncryptedInput):
        context, cid = self._context, self._context_id
        if not constant_time_equal(message.context_id, cid):
            raise SessionMismatchError(f"site {message.sender} encrypted under another CKKS context")
        vectors = context.load(message.chunks, self.config.vector_length, who=f"upload of site {message.sender}")
        digest = ciphertext_digest(message.chunks)
        self._verify(message.sender, input_payload(self._fp, message.sender, cid, digest),
                     message.signature, "upload")
        if self.config.active:
            def commit() -> None:
                self._contributions[message.sender] = message.contribution
        else:
            new_sum = context.add(self._sum, vectors)

            def commit() -> None:
                self._sum = new_sum
        return commit

    def _validate_decrypt(self, message: HEDecryptedSum):
        if message.survivors != self._survivors:
            raise VerificationError("the decrypted sum covers another set of sites than the one requested")
        values = message.values
        if values.size != self.config.vector_length:
            raise MalformedMessageError(
                f"decrypted sum has {values.size} values; expected {self.config.vector_length}"
            )
        limit = len(self._survivors) * self.config.params.bound
        if values.size and int(np.max(np.abs(values.astype(np.float64)))) > limit:
            raise VerificationError(f"decrypted sum exceeds |U2|·S = {limit}: not a sum of encoded inputs")
        self._verify(self._holder, sum_payload(self._fp, self._holder, self._context_id,
                                               message.survivors, message.data), message.signature, "decrypted sum")

    # -- advancing -------------------------------------------------------------------

    def advance(self) -> dict:
        """Close the current stage; return ``{recipient: message}`` for the next one.

        Raises :class:`ThresholdNotMetError` or :class:`KeyHolderUnavailableError` (the
        session moves to ABORTED, with no output).
        """
        if self.stage in (HEServerStage.DONE, HEServerStage.ABORTED):
            raise LocalProtocolError(f"advance() called in terminal stage {self.stage.value}")
        answered = dict(self._received)
        stage = self.stage
        try:
            outgoing = getattr(self, f"_close_{stage.value}")(answered)
        except ThresholdNotMetError:
            if stage is HEServerStage.UPLOAD:
                self._released_on_abort = frozenset(answered)
            self._abort()
            raise
        self._received = {}
        return outgoing

    def _abort(self) -> None:
        self.stage = HEServerStage.ABORTED
        self._sum = None
        self._contributions = {}
        self._bundle = None

    def _require(self, answered: dict, stage: str) -> None:
        if len(answered) < self._t:
            raise ThresholdNotMetError(
                f"only {len(answered)} sites answered in stage {stage}; threshold is {self._t}. "
                "The session is aborted and produces no output."
            )

    def _close_advertise(self, answered: dict) -> dict:
        self._require(answered, "advertise")
        if self._holder not in answered:
            raise KeyHolderUnavailableError(
                f"the key holder (site {self._holder}) did not advertise a key; no CKKS key can be created"
            )
        self._keys = answered
        self.stage = HEServerStage.CONTEXT
        return {self._holder: HEKeyDirectory(self._fp, self._holder, {u: m.key for u, m in answered.items()})}

    def _close_context(self, answered: dict) -> dict:
        bundle = answered.get(self._holder)
        if bundle is None:
            raise KeyHolderUnavailableError(f"the key holder (site {self._holder}) sent no CKKS context")
        holder_key = self._keys[self._holder].key
        out = {
            u: HEContextDelivery(self._fp, u, holder_key, bundle.public_context, bundle.sealed.get(u, b""))
            for u in self._keys
        }
        self._delivered = frozenset(self._keys)
        self.stage = HEServerStage.UPLOAD
        return out

    def _close_upload(self, answered: dict) -> dict:
        self._require(answered, "upload")
        self._survivors = frozenset(answered)
        cid = self._context_id
        if self.config.active:
            request = HEDecryptRequest(self._fp, self._holder, cid, self._survivors,
                                       contributions=self._contributions)
        else:
            request = HEDecryptRequest(self._fp, self._holder, cid, self._survivors,
                                       summed=self._context.serialize(self._sum))
        self._sum = None
        self._contributions = {}
        self.stage = HEServerStage.DECRYPT
        return {self._holder: request}

    def _close_decrypt(self, answered: dict) -> dict:
        response = answered.get(self._holder)
        if response is None:
            raise KeyHolderUnavailableError(
                f"the key holder (site {self._holder}) did not answer the decryption request"
            )
        ring = np.array(response.values, dtype=np.int64).view(np.uint64)
        self._result = AggregateResult(ring_sum=ring, survivors=self._survivors, bit_width=64)
        self.stage = HEServerStage.DONE
        return {}
