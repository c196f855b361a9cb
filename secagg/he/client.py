"""The site side of the HE path as a sans-IO state machine (key holder included).

An :class:`HEClientSession` consumes coordinator messages (objects or wire
bytes) and returns the site's answer; it never does I/O. Its rounds are the
rows of :data:`secagg.he.transitions.KEY_HOLDER` / ``SITE``, run by the
skeleton it shares with the masking path (:class:`secagg.session.StagedClient`).
Every message is validated completely before any state changes (the h11
rule), so a refused message leaves the session as it was and the site sends
nothing.

Roles. Every site advertises an X25519 key, receives the CKKS context and
uploads its encrypted, encoded update. The **key holder** (``config.key_holder``)
additionally creates the CKKS key, seals the secret context to every other
site, and decrypts the sum: it answers exactly one decryption request per
session, and only for a sum of at least ``t`` distinct contributions.

Threat model (see :data:`secagg.he.THREAT_MODEL`). All sites share one CKKS
secret key, so any one site colluding with the coordinator can decrypt every
individual upload, and the key holder is a single point of trust and of
failure. Masking (:class:`secagg.ClientSession`) has neither weakness. Within
that model an honest site refuses (with a
:class:`~secagg.errors.RemoteProtocolError` subclass) when

* a message belongs to another session, is addressed to another site, or
  arrives in the wrong round;
* the sealed secret context fails authentication (tampered, re-routed to
  another recipient, moved from another session, or delivered next to
  another public context), or does not match the public context;
* (active mode) a round-0 key, the key holder's key, a contribution or the
  sum carries an invalid Ed25519 signature under the registry of long-term
  keys (``config.verify_keys``).

The key holder additionally refuses a decryption request that names fewer
than ``t`` distinct participants, unknown ids, or (active mode) any
contribution whose signature over (session, sender, context, ciphertext
hash) does not verify, or two identical contributions: it then sums the
contributions itself and decrypts at most once per session (a decryption
whose result is not a valid sum is refused *and* ends the session, so the
accept/refuse outcome cannot be probed repeatedly), so a malicious coordinator cannot make it decrypt an
individual upload or any chosen ciphertext; it learns only the sum, over a
set of at least t signers that it chose once. In semi-honest mode (no
signatures) the key holder decrypts the coordinator's sum after checking only
the claimed survivor set: that protects against an honest-but-curious
coordinator, not against one that substitutes keys or ciphertexts.
"""

from __future__ import annotations

import numpy as np

from ..crypto import X25519KeyPair, aead_decrypt, aead_encrypt, constant_time_equal, sign, verify_signature
from ..errors import (InvalidInputError, LocalProtocolError, SessionMismatchError, ThresholdNotMetError,
                      UnsafeRequestError, VerificationError)
from ..session import Commit, EndsSession, StagedClient
from ..tables import Transitions
from . import messages as msg
from . import wire
from .ckks import CKKSContext
from .config import HESessionConfig
from .keyschedule import (advertise_payload, bundle_payload, ciphertext_digest, context_id, input_payload,
                          seal_associated_data, seal_key, sum_payload)
from .transitions import KEY_HOLDER, SITE, HEClientState

__all__ = ["HEClientSession", "HEClientState"]


class HEClientSession(StagedClient, party="site", decode=wire.decode):
    """One site's run of one HE aggregation session.

    Its rounds are :data:`secagg.he.transitions.KEY_HOLDER` or
    :data:`~secagg.he.transitions.SITE`; :class:`secagg.session.StagedClient`
    checks each message's envelope and commits the transition, and the
    handlers below only validate and compute.

    Args:
        config: the agreed :class:`HESessionConfig`.
        site_id: this site's id (one of ``config.participants``); the site is the key
            holder iff ``site_id == config.key_holder``.
        signing_key / masked_input: as in :class:`secagg.session.StagedClient`.
    """

    def __init__(self, config: HESessionConfig, site_id: int, *, signing_key: bytes | None = None,
                 masked_input: np.ndarray | None = None) -> None:
        super().__init__(config, site_id, signing_key=signing_key, masked_input=masked_input)

    site_id = StagedClient.party_id

    @property
    def is_key_holder(self) -> bool:
        return self.site_id == self.config.key_holder

    @property
    def context(self) -> CKKSContext | None:
        """The CKKS context this site currently holds (``None`` before delivery and after its last round)."""
        return self._context

    def _transitions(self) -> Transitions:
        return KEY_HOLDER if self.is_key_holder else SITE

    def _open(self) -> None:
        self._keys = X25519KeyPair.generate()
        self._context: CKKSContext | None = None
        self._context_id: bytes | None = None
        self._recipients: frozenset = frozenset()  # key holder: the sites it sealed the key to, and itself

    def _forget(self) -> None:
        self._input = None
        self._context = None
        self._context_id = None

    # -- local API -------------------------------------------------------------

    def provide_input(self, encoded: np.ndarray) -> None:
        """Set the encoded input: ``config.params.encoder.encode(x).ring`` (uint64) or the same as int64.

        Each value must encode an integer of magnitude at most S; any time before round 2.
        """
        super().provide_input(encoded)

    def _check_input(self, array: np.ndarray) -> np.ndarray:
        m = self.config.vector_length
        if array.shape != (m,) or array.dtype not in (np.dtype(np.uint64), np.dtype(np.int64)):
            raise InvalidInputError(
                f"encoded input must be uint64 (or int64) of shape ({m},); got {array.dtype}{array.shape}"
            )
        signed = array.view(np.int64) if array.dtype == np.uint64 else array
        bound = self.config.params.bound
        if int(signed.min()) < -bound or int(signed.max()) > bound:
            raise InvalidInputError(
                f"encoded input exceeds the bound S = {bound}; encode it with "
                "config.params.encoder"
            )
        return np.array(signed, dtype=np.int64)

    def advertise(self) -> msg.HEAdvertise:
        """Round 0: this session's X25519 public key (signed in active mode)."""
        return super().advertise()

    def _advertisement(self) -> msg.HEAdvertise:
        signature = b""
        if self.config.active:
            signature = sign(self._signing_key, advertise_payload(self._fp, self.site_id, self._keys.public_key))
        return msg.HEAdvertise(self._fp, self.site_id, self._keys.public_key, signature)

    # -- message handlers: validate and compute; the returned commit only assigns ------

    def _verify(self, signer: int, payload: bytes, signature: bytes, what: str) -> None:
        try:
            verify_signature(self.config.verify_keys[signer], payload, signature)
        except VerificationError:
            raise VerificationError(f"{what} of site {signer} carries an invalid signature") from None

    # -- round 0 -> 1 (key holder) ------------------------------------------------------

    def _on_key_directory(self, message: msg.HEKeyDirectory) -> tuple[msg.HEContextBundle, Commit]:
        keys = message.keys
        unknown = set(keys) - set(self.config.participants)
        if unknown:
            raise UnsafeRequestError(f"key directory names unknown site ids {sorted(unknown)[:10]}")
        mine = keys.get(self.site_id)
        if mine is None or not constant_time_equal(mine.public_key, self._keys.public_key):
            raise VerificationError("key directory does not carry the key holder's own key unchanged")
        if len(keys) < self.config.threshold:
            raise ThresholdNotMetError(
                f"only {len(keys)} sites advertised keys; threshold is {self.config.threshold}"
            )
        if len({k.public_key for k in keys.values()}) != len(keys):
            raise VerificationError("key directory repeats a public key")
        if self.config.active:
            for site, entry in keys.items():
                self._verify(site, advertise_payload(self._fp, site, entry.public_key), entry.signature, "round-0 key")
        # Validate first, then generate and commit.
        context = CKKSContext.generate(self.config.params)
        cid = context_id(self._fp, context.public_bytes)
        secret = context.secret_bytes()
        sealed = {}
        for site, entry in keys.items():
            if site == self.site_id:
                continue
            key = seal_key(self._fp, self._keys.secret_key, entry.public_key, self.site_id, site)
            sealed[site] = aead_encrypt(key, secret, seal_associated_data(self._fp, self.site_id, site, cid))
        del secret
        signature = b""
        if self.config.active:
            signature = sign(self._signing_key, bundle_payload(self._fp, self.site_id, cid, sealed))

        def commit() -> None:
            self._context, self._context_id = context, cid
            self._recipients = frozenset(keys)

        return msg.HEContextBundle(self._fp, self.site_id, context.public_bytes, sealed, signature), commit

    # -- round 1 -> 2 (every site) -------------------------------------------------------

    def _on_context_delivery(self, message: msg.HEContextDelivery) -> tuple[msg.HEEncryptedInput, Commit]:
        if self._input is None:
            raise LocalProtocolError("provide_input() must be called before the upload round")
        holder = self.config.key_holder
        if self.is_key_holder:
            if message.sealed:
                raise UnsafeRequestError("the key holder was sent a sealed context")
            if not constant_time_equal(message.holder_key.public_key, self._keys.public_key):
                raise VerificationError("context delivery replaces the key holder's own key")
            if message.public_context != self._context.public_bytes:
                raise VerificationError("context delivery carries a public context the key holder did not create")
            context, cid = self._context, self._context_id
        else:
            holder_pk = message.holder_key.public_key
            if self.config.active:
                self._verify(holder, advertise_payload(self._fp, holder, holder_pk), message.holder_key.signature,
                             "round-0 key")
            if constant_time_equal(holder_pk, self._keys.public_key):
                raise VerificationError("the key holder's key equals this site's own key")
            cid = context_id(self._fp, message.public_context)
            key = seal_key(self._fp, self._keys.secret_key, holder_pk, holder, self.site_id)
            secret = aead_decrypt(key, message.sealed, seal_associated_data(self._fp, holder, self.site_id, cid))
            context = CKKSContext.from_secret_bytes(secret, self.config.params, public_bytes=message.public_context)
            del secret
        chunks = context.encrypt(self._input)
        signature = b""
        if self.config.active:
            digest = ciphertext_digest(chunks)
            signature = sign(self._signing_key, input_payload(self._fp, self.site_id, cid, digest))

        def commit() -> None:
            self._input = None
            if not self.is_key_holder:
                self._forget()  # a non-holder site has no further use for the secret key

        return msg.HEEncryptedInput(self._fp, self.site_id, cid, chunks, signature), commit

    # -- round 2 -> 3 (key holder) ----------------------------------------------------------

    def _on_decrypt_request(self, message: msg.HEDecryptRequest) -> tuple[msg.HEDecryptedSum, Commit]:
        context, cid, config = self._context, self._context_id, self.config
        if not constant_time_equal(message.context_id, cid):
            raise SessionMismatchError("decryption request names another CKKS context")
        survivors = message.survivors
        unknown = survivors - set(config.participants)
        if unknown:
            raise UnsafeRequestError(f"decryption request names unknown site ids {sorted(unknown)[:10]}")
        never_keyed = survivors - self._recipients
        if never_keyed:
            raise UnsafeRequestError(
                f"decryption request names sites that never received the key: {sorted(never_keyed)[:10]}"
            )
        if len(survivors) < config.threshold:
            raise UnsafeRequestError(
                f"decryption request covers {len(survivors)} sites; the key holder decrypts only sums of at "
                f"least t = {config.threshold} distinct contributions"
            )
        m = config.vector_length
        if config.active:
            if message.summed:
                raise UnsafeRequestError(
                    "active mode: the key holder sums the signed contributions itself and refuses a ready-made sum"
                )
            if set(message.contributions) != survivors:
                raise UnsafeRequestError("decryption request's contributions do not match its survivor set")
            digests = set()
            total = None
            for sender, contribution in message.contributions.items():
                digest = ciphertext_digest(contribution.chunks)
                self._verify(sender, input_payload(self._fp, sender, cid, digest),
                             contribution.signature, "contribution")
                if digest in digests:
                    raise VerificationError(f"contribution of site {sender} duplicates another contribution")
                digests.add(digest)
                vectors = context.load(contribution.chunks, m, who=f"contribution of site {sender}")
                total = context.add(total, vectors)
        else:
            if message.contributions:
                raise UnsafeRequestError(
                    "semi-honest mode: the key holder must not receive individual contributions"
                )
            total = context.load(message.summed, m, who="summed ciphertext")
        try:
            values = context.decrypt_sum(total, summands=len(survivors), vector_length=m)
        except VerificationError as refused:
            # One decryption attempt per session: whether the result is released or refused
            # must not become a repeatable oracle, so a refused decryption ends the session.
            raise EndsSession(refused) from None
        data = values.astype("<i8", copy=False).tobytes()
        signature = b""
        if config.active:
            signature = sign(self._signing_key, sum_payload(self._fp, self.site_id, cid, survivors, data))
        # One decryption per session, ever: forget the key.
        return msg.HEDecryptedSum(self._fp, self.site_id, survivors, data, signature), self._forget

    _HANDLERS = {
        msg.HEKeyDirectory: _on_key_directory,
        msg.HEContextDelivery: _on_context_delivery,
        msg.HEDecryptRequest: _on_decrypt_request,
    }
