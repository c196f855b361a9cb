"""The coordinator side of the HE path as a sans-IO state machine.

The stages are the rows of :data:`secagg.he.transitions.COORDINATOR`, run by
the skeleton shared with the masking path (:class:`secagg.session.StagedServer`).
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

import numpy as np

from ..crypto import AEAD_OVERHEAD, constant_time_equal, verify_signature
from ..errors import MalformedMessageError, SessionMismatchError, VerificationError
from ..session import AggregateResult, Commit, StagedServer
from ..tables import Transitions
from . import messages as msg
from . import wire
from .ckks import CKKSContext
from .config import HESessionConfig
from .errors import KeyHolderUnavailableError
from .keyschedule import advertise_payload, bundle_payload, ciphertext_digest, context_id, input_payload, sum_payload
from .transitions import COORDINATOR, HEServerStage

__all__ = ["HEServerSession", "HEServerStage"]


class HEServerSession(StagedServer, party="site", decode=wire.decode):
    """The coordinator's run of one HE aggregation session.

    Its stages are :data:`secagg.he.transitions.COORDINATOR`;
    :class:`secagg.session.StagedServer` checks envelopes and eligibility,
    enforces the threshold, aborts and commits the transitions; the
    validators and closers below only compute.
    """

    _NOT_ELIGIBLE = "unknown id, not the key holder, or dropped out of an earlier round"
    #: Stages that close only with t answers; the others wait for the key holder alone.
    _THRESHOLD_STAGES = frozenset({HEServerStage.ADVERTISE, HEServerStage.UPLOAD})

    def __init__(self, config: HESessionConfig) -> None:
        super().__init__(config)
        self._holder = config.key_holder
        self._keys: dict[int, msg.HEAdvertise] = {}  # U1
        self._context: CKKSContext | None = None
        self._context_id: bytes | None = None
        self._sum: list | None = None  # semi-honest: running homomorphic sum
        self._contributions: dict[int, msg.HEContribution] = {}  # active: signed uploads

    def _transitions(self) -> Transitions:
        return COORDINATOR

    def _forget(self) -> None:
        self._sum = None
        self._contributions = {}

    @property
    def context(self) -> CKKSContext | None:
        """The coordinator's CKKS context: public, parameters only (``None`` before round 1)."""
        return self._context

    # -- validators: check one site message; the commit only assigns -----------------

    def _verify(self, signer: int, payload: bytes, signature: bytes, what: str) -> None:
        if not self.config.active:
            if signature:
                raise VerificationError(f"{what} of site {signer} is signed but the session is not in active mode")
            return
        try:
            verify_signature(self.config.verify_keys[signer], payload, signature)
        except VerificationError:
            raise VerificationError(f"{what} of site {signer} carries an invalid signature") from None

    def _validate_advertise(self, message: msg.HEAdvertise) -> tuple[msg.HEAdvertise, None]:
        for other in self._received.values():
            if constant_time_equal(other.public_key, message.public_key):
                raise VerificationError(f"site {message.sender} advertises a public key already in use")
        self._verify(message.sender, advertise_payload(self._fp, message.sender, message.public_key),
                     message.signature, "round-0 key")
        return message, None

    def _validate_context(self, message: msg.HEContextBundle) -> tuple[msg.HEContextBundle, Commit]:
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

        return message, commit

    def _validate_upload(self, message: msg.HEEncryptedInput) -> tuple[msg.HEEncryptedInput, Commit]:
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
        return message, commit

    def _validate_decrypt(self, message: msg.HEDecryptedSum) -> tuple[msg.HEDecryptedSum, None]:
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
        return message, None

    # -- closers: the messages of the next round; the commit only assigns ------------

    def _close_advertise(self, answered: dict) -> tuple[dict, Commit]:
        if self._holder not in answered:
            raise KeyHolderUnavailableError(
                f"the key holder (site {self._holder}) did not advertise a key; no CKKS key can be created"
            )

        def commit() -> None:
            self._keys, self._eligible = answered, frozenset({self._holder})

        keys = {u: advertised.key for u, advertised in answered.items()}
        return {self._holder: msg.HEKeyDirectory(self._fp, self._holder, keys)}, commit

    def _close_context(self, answered: dict) -> tuple[dict, Commit]:
        bundle = answered.get(self._holder)
        if bundle is None:
            raise KeyHolderUnavailableError(f"the key holder (site {self._holder}) sent no CKKS context")
        holder_key = self._keys[self._holder].key
        out = {
            u: msg.HEContextDelivery(self._fp, u, holder_key, bundle.public_context, bundle.sealed.get(u, b""))
            for u in self._keys
        }

        def commit() -> None:
            self._eligible = frozenset(self._keys)

        return out, commit

    def _close_upload(self, answered: dict) -> tuple[dict, Commit]:
        survivors = frozenset(answered)
        cid = self._context_id
        if self.config.active:
            request = msg.HEDecryptRequest(self._fp, self._holder, cid, survivors, contributions=self._contributions)
        else:
            request = msg.HEDecryptRequest(self._fp, self._holder, cid, survivors,
                                       summed=self._context.serialize(self._sum))

        def commit() -> None:
            self._survivors, self._eligible = survivors, frozenset({self._holder})
            self._sum, self._contributions = None, {}

        return {self._holder: request}, commit

    def _close_decrypt(self, answered: dict) -> tuple[dict, Commit]:
        response = answered.get(self._holder)
        if response is None:
            raise KeyHolderUnavailableError(
                f"the key holder (site {self._holder}) did not answer the decryption request"
            )
        ring = np.array(response.values, dtype=np.int64).view(np.uint64)
        result = AggregateResult(ring_sum=ring, survivors=self._survivors, bit_width=64)

        def commit() -> None:
            self._result = result

        return {}, commit

    _VALIDATORS = {
        msg.HEAdvertise: _validate_advertise,
        msg.HEContextBundle: _validate_context,
        msg.HEEncryptedInput: _validate_upload,
        msg.HEDecryptedSum: _validate_decrypt,
    }
    _CLOSERS = {
        HEServerStage.ADVERTISE: _close_advertise,
        HEServerStage.CONTEXT: _close_context,
        HEServerStage.UPLOAD: _close_upload,
        HEServerStage.DECRYPT: _close_decrypt,
    }
