"""The protocol's key schedule: every derived key and every signed payload.

Client and server must derive exactly the same values, so the derivations
live in one place. Each uses :func:`secagg.crypto.derive_key` with its own
label and a context that starts with the session fingerprint:

=====================  ==========================================  ====================
label                  input key material                          context
=====================  ==========================================  ====================
``pairwise-mask``      X25519(s_sk_u, s_pk_v)                      fp || min(u,v) || max(u,v)
``self-mask``          b_u (32 random bytes)                       fp || u
``share-encryption``   X25519(c_sk_u, c_pk_v)                      fp || min(u,v) || max(u,v)
=====================  ==========================================  ====================

Share ciphertexts additionally carry associated data ``fp || round || sender
|| recipient``, so a ciphertext moved to another session, round or pair of
parties fails authentication.

Signed payloads (active mode, Ed25519 with the client's long-term key), each
starting with its own label so a signature of one round can never be
presented as a signature of another:

=========================  =====================================================
label                      signed content
=========================  =====================================================
``advertise``              fp || u || c_pk_u || s_pk_u
``masked-input``           fp || u || bit width || SHA-256(masked vector bytes)
``consistency``            fp || |U3| || sorted U3
``unmask-response``        fp || u || sorted (id, share) of b-shares || sorted (id, share) of key shares
=========================  =====================================================
"""

from __future__ import annotations

import hashlib
import struct

from .crypto import derive_key, x25519_shared_secret
from .shamir import SHARE_BYTES

__all__ = [
    "pairwise_mask_key",
    "self_mask_key",
    "share_encryption_key",
    "share_associated_data",
    "advertise_payload",
    "consistency_payload",
    "masked_input_payload",
    "unmask_response_payload",
    "SHARE_ROUND",
    "SHARE_BUNDLE",
]

SHARE_ROUND = 1
#: Plaintext of one share bundle: sender u32 | recipient u32 | share of b_u | share of s_sk_u.
SHARE_BUNDLE = struct.Struct(">II33s33s")
_U32 = struct.Struct(">I")


def _pair(u: int, v: int) -> bytes:
    lo, hi = (u, v) if u < v else (v, u)
    return _U32.pack(lo) + _U32.pack(hi)


def pairwise_mask_key(fingerprint: bytes, masking_sk: bytes, peer_masking_pk: bytes, u: int, v: int) -> bytes:
    """AES key of the pairwise mask between u and v (symmetric in u, v)."""
    shared = x25519_shared_secret(masking_sk, peer_masking_pk)
    return derive_key(shared, "pairwise-mask", fingerprint + _pair(u, v))


def self_mask_key(fingerprint: bytes, seed: bytes, u: int) -> bytes:
    """AES key of u's self mask PRG(b_u)."""
    return derive_key(seed, "self-mask", fingerprint + _U32.pack(u))


def share_encryption_key(fingerprint: bytes, encryption_sk: bytes, peer_encryption_pk: bytes, u: int, v: int) -> bytes:
    """AEAD key protecting the shares exchanged between u and v."""
    shared = x25519_shared_secret(encryption_sk, peer_encryption_pk)
    return derive_key(shared, "share-encryption", fingerprint + _pair(u, v))


def share_associated_data(fingerprint: bytes, sender: int, recipient: int) -> bytes:
    return b"secagg/v1/shares" + fingerprint + bytes((SHARE_ROUND,)) + _U32.pack(sender) + _U32.pack(recipient)


def advertise_payload(fingerprint: bytes, client_id: int, encryption_pk: bytes, masking_pk: bytes) -> bytes:
    """What a client signs in round 0 (active mode)."""
    return b"secagg/v1/advertise" + fingerprint + _U32.pack(client_id) + encryption_pk + masking_pk


def consistency_payload(fingerprint: bytes, survivors) -> bytes:
    """What a client signs in the ConsistencyCheck round: the set U3."""
    ids = sorted(survivors)
    return b"secagg/v1/consistency" + fingerprint + _U32.pack(len(ids)) + b"".join(_U32.pack(i) for i in ids)


def masked_input_payload(fingerprint: bytes, client_id: int, bit_width: int, data: bytes) -> bytes:
    """What a client signs with its masked input (active mode).

    Binds the vector to its session, round and sender, so a masked vector of
    another session (or another client) relabelled into this one is refused
    instead of silently corrupting the sum. SHA-256 (hardware-accelerated in
    OpenSSL builds, ~2 GB/s) keeps the signature's cost independent of m.
    """
    digest = hashlib.sha256(data).digest()
    return b"secagg/v1/masked-input" + fingerprint + _U32.pack(client_id) + bytes((bit_width,)) + digest


def unmask_response_payload(fingerprint: bytes, client_id: int, self_mask_shares, key_shares) -> bytes:
    """What a client signs with its unmasking response (active mode)."""
    def encode(shares) -> bytes:
        items = sorted(shares.items())
        return _U32.pack(len(items)) + b"".join(_U32.pack(i) + int(v).to_bytes(SHARE_BYTES, "big") for i, v in items)

    return (b"secagg/v1/unmask-response" + fingerprint + _U32.pack(client_id)
            + encode(self_mask_shares) + encode(key_shares))
