"""The client side of the protocol as a sans-IO state machine.

A :class:`ClientSession` consumes server messages (objects or wire bytes)
and returns the client's answer; it never does I/O. Its rounds are the rows
of :data:`secagg.transitions.CLIENT_PASSIVE` / ``CLIENT_ACTIVE``; the
skeleton it shares with the HE path (:class:`secagg.session.StagedClient`)
checks each message's envelope, and the handlers here validate the message
completely and compute the answer before anything is committed, so a refused
message leaves the session exactly as it was (and the client sends nothing).

Threat model. The client trusts nobody: the server may be actively malicious
and may collude with other clients. The checks below hold in both modes, but
only in active mode (signed keys and the consistency quorum) do they add up
to a defence against a deviating server: in passive (semi-honest) mode a
server that forwards shares unevenly and shows different clients different
survivor sets can unmask one input (``docs/security.md``; the test
``tests/test_split_view_attack.py`` shows it), so passive mode assumes a
server that follows the protocol. An honest client therefore refuses
(raising a :class:`~secagg.errors.RemoteProtocolError` subclass) when

* a message belongs to another session, is addressed to another client, or
  arrives in the wrong round (replay, reordering, duplication);
* a signature (active mode) or a share ciphertext does not verify;
* the key directory replaces its own keys, repeats a key, or names clients
  outside its neighbourhood;
* fewer than t members of its closed neighbourhood remain at any round
  (:class:`~secagg.errors.ThresholdNotMetError`);
* the unmasking request lists a peer as both surviving and dropped, lists
  itself as dropped, names unknown ids, or disagrees with what the client saw
  (which peers shared keys with it) - revealing both the self-mask share and
  the key share of one peer would unmask that peer's individual input;
* in active mode, the unmasking request's survivor set differs from the one
  the client signed, or fewer than Q = ``config.consistency_quorum`` distinct
  participants of the whole session signed it. Counting only the
  neighbourhood's signatures (as this code did before) let a coordinator show
  different survivor sets to different neighbourhoods on a SecAgg+ graph and
  unmask one client; the global quorum makes every answering honest client
  see the same set (``docs/security.md`` has the argument).

In active mode the client also signs its masked input and its unmasking
response (session, round, sender), so neither can be replayed from another
session or attributed to another client.

The client answers at most one unmasking request per session.
"""

from __future__ import annotations

import numpy as np

from . import messages as msg
from . import shamir, wire
from .config import SessionConfig
from .crypto import X25519KeyPair, aead_decrypt, aead_encrypt, constant_time_equal, random_bytes, sign, verify_signature
from .encoding import ring_dtype
from .errors import InvalidInputError, LocalProtocolError, ThresholdNotMetError, UnsafeRequestError, VerificationError
from .keyschedule import (SHARE_BUNDLE, advertise_payload, consistency_payload, masked_input_payload, pairwise_mask_key,
                          self_mask_key, share_associated_data, share_encryption_key, unmask_response_payload)
from .prg import apply_masks
from .session import Commit, StagedClient
from .tables import Transitions
from .transitions import CLIENT_ACTIVE, CLIENT_PASSIVE, ClientState

__all__ = ["ClientSession", "ClientState"]


class ClientSession(StagedClient, party="client", decode=wire.decode):
    """One client's run of one aggregation session.

    Its rounds are :data:`secagg.transitions.CLIENT_PASSIVE` or
    :data:`~secagg.transitions.CLIENT_ACTIVE`; :class:`secagg.session.StagedClient`
    checks each message's envelope and commits the transition, and the
    handlers below only validate and compute.

    Args:
        config: the agreed :class:`SessionConfig`.
        client_id: this client's id (one of ``config.participants``).
        signing_key / masked_input: as in :class:`secagg.session.StagedClient`.
    """

    def __init__(self, config: SessionConfig, client_id: int, *, signing_key: bytes | None = None,
                 masked_input: np.ndarray | None = None) -> None:
        super().__init__(config, client_id, signing_key=signing_key, masked_input=masked_input)

    client_id = StagedClient.party_id

    def _transitions(self) -> Transitions:
        return CLIENT_ACTIVE if self.config.active else CLIENT_PASSIVE

    def _open(self) -> None:
        self._neighbors = self.config.neighbors[self.client_id]
        self._closed = self._neighbors | {self.client_id}
        self._x = shamir.x_coordinate(self.client_id)
        self._encryption = X25519KeyPair.generate()
        self._masking = X25519KeyPair.generate()
        self._self_mask_seed = random_bytes(32)
        self._directory = None
        self._shares: dict[int, tuple[int, int]] = {}  # peer -> (b share, sk share) held by this client
        self._own_shares: tuple[int, int] | None = None
        self._signed_survivors: frozenset | None = None

    def _forget(self) -> None:
        self._shares.clear()
        self._input = None

    # -- local API -------------------------------------------------------------

    def provide_input(self, encoded: np.ndarray) -> None:
        """Set the client's encoded input (a vector in Z_{2^b}); any time before round 2."""
        super().provide_input(encoded)

    def _check_input(self, array: np.ndarray) -> np.ndarray:
        dtype = ring_dtype(self.config.bit_width)
        if array.dtype != dtype or array.shape != (self.config.vector_length,):
            raise InvalidInputError(
                f"encoded input must be {dtype} of shape ({self.config.vector_length},); "
                f"got {array.dtype}{array.shape}"
            )
        return array.copy()

    def advertise(self) -> msg.AdvertiseKeys:
        """Round 0: the client's public keys (signed in active mode)."""
        return super().advertise()

    def _advertisement(self) -> msg.AdvertiseKeys:
        signature = b""
        if self.config.active:
            payload = advertise_payload(self._fp, self.client_id, self._encryption.public_key, self._masking.public_key)
            signature = sign(self._signing_key, payload)
        return msg.AdvertiseKeys(self._fp, self.client_id, self._encryption.public_key, self._masking.public_key,
                                 signature)

    # -- message handlers: validate and compute; the returned commit only assigns ------

    def _require_threshold(self, count: int, what: str) -> None:
        if count < self.config.threshold:
            raise ThresholdNotMetError(
                f"client {self.client_id}: only {count} of its closed neighbourhood {what}; "
                f"threshold is {self.config.threshold}"
            )

    def _on_key_directory(self, message: msg.KeyDirectory) -> tuple[msg.ShareKeys, Commit]:
        keys = message.keys
        ids = set(keys)
        unknown = ids - self._closed
        if unknown:
            raise UnsafeRequestError(f"key directory names clients outside the neighbourhood: {sorted(unknown)[:10]}")
        mine = keys.get(self.client_id)
        if (
            mine is None
            or not constant_time_equal(mine.encryption_key, self._encryption.public_key)
            or not constant_time_equal(mine.masking_key, self._masking.public_key)
        ):
            raise VerificationError("key directory does not carry this client's own keys unchanged")
        self._require_threshold(len(ids), "advertised keys")
        all_keys = [k.encryption_key for k in keys.values()] + [k.masking_key for k in keys.values()]
        if len(set(all_keys)) != len(all_keys):
            raise VerificationError("key directory repeats a public key (Bonawitz et al. require distinct keys)")
        if self.config.active:
            for peer, entry in keys.items():
                payload = advertise_payload(self._fp, peer, entry.encryption_key, entry.masking_key)
                try:
                    verify_signature(self.config.verify_keys[peer], payload, entry.signature)
                except VerificationError:
                    raise VerificationError(f"round-0 keys of client {peer} carry an invalid signature") from None
        # Compute everything first, then commit state (validate before mutate).
        holders = sorted(ids)
        t = self.config.threshold
        xs = [shamir.x_coordinate(v) for v in holders]
        b_shares = shamir.split(self._self_mask_seed, t, xs)
        sk_shares = shamir.split(self._masking.secret_key, t, xs)
        ciphertexts = {}
        for v in holders:
            x = shamir.x_coordinate(v)
            if v == self.client_id:
                continue
            plaintext = SHARE_BUNDLE.pack(
                self.client_id, v,
                b_shares[x].to_bytes(shamir.SHARE_BYTES, "big"),
                sk_shares[x].to_bytes(shamir.SHARE_BYTES, "big"),
            )
            key = share_encryption_key(self._fp, self._encryption.secret_key, keys[v].encryption_key, self.client_id, v)
            ciphertexts[v] = aead_encrypt(key, plaintext, share_associated_data(self._fp, self.client_id, v))
        own_shares = (b_shares[self._x], sk_shares[self._x])

        def commit() -> None:
            self._directory, self._own_shares = keys, own_shares

        return msg.ShareKeys(self._fp, self.client_id, ciphertexts), commit

    def _on_masked_input_request(self, message: msg.MaskedInputRequest) -> tuple[msg.MaskedInput, Commit]:
        if self._input is None:
            raise LocalProtocolError("provide_input() must be called before the masked-input round")
        senders = set(message.ciphertexts)
        unknown = senders - (set(self._directory) - {self.client_id})
        if unknown:
            raise UnsafeRequestError(f"shares routed from clients not in the key directory: {sorted(unknown)[:10]}")
        self._require_threshold(len(senders) + 1, "shared keys")
        received: dict[int, tuple[int, int]] = {}
        for v, ciphertext in message.ciphertexts.items():
            key = share_encryption_key(
                self._fp, self._encryption.secret_key, self._directory[v].encryption_key, self.client_id, v
            )
            plaintext = aead_decrypt(key, ciphertext, share_associated_data(self._fp, v, self.client_id))
            if len(plaintext) != SHARE_BUNDLE.size:
                raise VerificationError(f"share bundle from client {v} has the wrong length")
            sender, recipient, b_share, sk_share = SHARE_BUNDLE.unpack(plaintext)
            if sender != v or recipient != self.client_id:
                raise VerificationError(f"share bundle from client {v} names sender {sender} / recipient {recipient}")
            b_value, sk_value = int.from_bytes(b_share, "big"), int.from_bytes(sk_share, "big")
            if b_value >= shamir.PRIME or sk_value >= shamir.PRIME:
                raise VerificationError(f"share bundle from client {v} holds values outside GF(p)")
            received[v] = (b_value, sk_value)
        data = self._mask(sorted(received))
        signature = b""
        if self.config.active:
            signature = sign(self._signing_key, masked_input_payload(self._fp, self.client_id, self.config.bit_width, data))

        def commit() -> None:
            # The input is spent: the unmasking round never needs it, so it is not kept.
            self._shares, self._input = received, None

        return msg.MaskedInput(self._fp, self.client_id, self.config.bit_width, data, signature), commit

    def _mask(self, peers: list[int]) -> bytearray:
        """y = x + PRG(b_u) + sum_{v in peers} sign(u, v) PRG(s_uv) (mod 2^b), sign = + if u < v.

        Returns y as little-endian wire words, built chunk by chunk
        (:func:`secagg.prg.apply_masks`) straight into the message's buffer: a
        ``bytearray``, so that the message is the only full-length buffer
        besides the input (a ``bytes`` would need one more copy of m words;
        ``tests/test_streaming.py`` counts the allocations).
        Measured 2026-11-29 (benchmarks/test_bench_stream.py, m = 5e7, n = 10,
        32-bit, one machine, not a guarantee): peak RSS 385 MiB = 2.0 vectors
        above the process's baseline, the client's copy of its update included
        (so one vector, the message, plus chunks beyond the update; encoding
        the message to wire bytes also peaks at 2, the input being dropped by
        then); masking took 1.6-1.7x the AES-CTR floor of its 10 masks
        (median of paired runs). Before streaming: 575 MiB = 3.0 vectors,
        3.0-3.8x the floor.
        """
        masks = [(self_mask_key(self._fp, self._self_mask_seed, self.client_id), False)]
        for v in peers:
            key = pairwise_mask_key(self._fp, self._masking.secret_key, self._directory[v].masking_key, self.client_id, v)
            masks.append((key, self.client_id > v))
        little_endian = np.dtype("<u4") if self.config.bit_width == 32 else np.dtype("<u8")
        data = bytearray(self._input.size * little_endian.itemsize)
        apply_masks(np.frombuffer(data, dtype=little_endian), masks, base=self._input.astype(little_endian, copy=False))
        return data

    def _check_survivor_view(self, survivors: frozenset) -> None:
        unknown = survivors - set(self.config.participants)
        if unknown:
            raise UnsafeRequestError(f"survivor list names unknown client ids: {sorted(unknown)[:10]}")
        if self.client_id not in survivors:
            raise UnsafeRequestError(
                f"client {self.client_id} sent its masked input but is not listed among the survivors"
            )
        neighbour_survivors = survivors & self._neighbors
        not_shared = neighbour_survivors - set(self._shares)
        if not_shared:
            raise UnsafeRequestError(
                f"survivor list names neighbours that never shared keys with this client: {sorted(not_shared)[:10]}"
            )
        self._require_threshold(len(neighbour_survivors) + 1, "survived to the unmasking round")

    def _on_consistency_request(self, message: msg.ConsistencyRequest) -> tuple[msg.ConsistencySignature, Commit]:
        self._check_survivor_view(message.survivors)
        if len(message.survivors) < self.config.consistency_quorum:
            raise ThresholdNotMetError(
                f"survivor set of {len(message.survivors)} clients can never reach the consistency quorum "
                f"{self.config.consistency_quorum}"
            )
        signature = sign(self._signing_key, consistency_payload(self._fp, message.survivors))

        def commit() -> None:
            self._signed_survivors = message.survivors

        return msg.ConsistencySignature(self._fp, self.client_id, signature), commit

    def _on_unmask_request(self, message: msg.UnmaskRequest) -> tuple[msg.UnmaskResponse, Commit]:
        survivors, dropped = message.survivors, message.dropped
        overlap = survivors & dropped
        if overlap:
            raise UnsafeRequestError(
                f"unmasking request lists {sorted(overlap)[:10]} as both surviving and dropped; revealing both "
                "shares would unmask their individual inputs"
            )
        unknown = dropped - set(self.config.participants)
        if unknown:
            raise UnsafeRequestError(f"dropped list names unknown client ids: {sorted(unknown)[:10]}")
        if self.client_id in dropped:
            raise UnsafeRequestError(f"client {self.client_id} is alive but listed as dropped")
        self._check_survivor_view(survivors)
        classified = (survivors | dropped) & self._neighbors
        shared = set(self._shares)
        if classified != shared:
            raise UnsafeRequestError(
                "unmasking request disagrees with the key exchange: neighbours that shared keys "
                f"{sorted(shared - classified)[:10]} are unlisted, and listed neighbours "
                f"{sorted(classified - shared)[:10]} never shared keys"
            )
        if self.config.active:
            self._verify_consistency(message)
        self_mask_shares = {v: self._shares[v][0] for v in survivors & shared}
        self_mask_shares[self.client_id] = self._own_shares[0]
        key_shares = {v: self._shares[v][1] for v in dropped & shared}
        signature = b""
        if self.config.active:
            signature = sign(self._signing_key,
                             unmask_response_payload(self._fp, self.client_id, self_mask_shares, key_shares))

        def commit() -> None:
            # Forget the shares: this client answers one unmasking request, ever.
            self._shares = {}
            self._input = None

        return msg.UnmaskResponse(self._fp, self.client_id, self_mask_shares, key_shares, signature), commit

    def _verify_consistency(self, message: msg.UnmaskRequest) -> None:
        """Active mode: U3 is the set this client signed, and Q participants signed it.

        Every signature is checked, whoever signed it: a quorum counted inside
        one neighbourhood cannot stop a coordinator from showing another
        neighbourhood another set (issue 14's split-view attack).
        """
        if message.survivors != self._signed_survivors:
            raise UnsafeRequestError(
                "unmasking request's survivor set differs from the set this client signed in the consistency check"
            )
        payload = consistency_payload(self._fp, message.survivors)
        for signer, signature in message.signatures.items():
            if signer not in message.survivors:
                raise UnsafeRequestError(f"consistency signature from client {signer}, who is not a survivor")
            try:
                verify_signature(self.config.verify_keys[signer], payload, signature)
            except VerificationError:
                raise VerificationError(f"consistency signature of client {signer} does not verify") from None
        quorum = self.config.consistency_quorum
        if len(message.signatures) < quorum:
            raise ThresholdNotMetError(
                f"only {len(message.signatures)} participants signed the survivor set; the consistency quorum is "
                f"{quorum} of n = {self.config.n} (max(t, floor((n + c)/2) + 1), c = {self.config.max_corrupt})"
            )

    _HANDLERS = {
        msg.KeyDirectory: _on_key_directory,
        msg.MaskedInputRequest: _on_masked_input_request,
        msg.ConsistencyRequest: _on_consistency_request,
        msg.UnmaskRequest: _on_unmask_request,
    }
