"""Key schedule of the HE path: the sealing key, associated data, and every signed payload.

All derivations go through :mod:`secagg.crypto` (X25519, HKDF-SHA256 with a
domain-separation label, XChaCha20-Poly1305, Ed25519); nothing is hand-rolled.

=====================  =========================================  ======================================
label                  input key material                         context
=====================  =========================================  ======================================
``he-context-seal``    X25519(sk_holder, pk_v) = X25519(sk_v,     fp || holder || v
                       pk_holder)
=====================  =========================================  ======================================

The sealed secret context additionally carries associated data
``"secagg/v1/he/context-seal" || fp || holder || v || context_id``: a sealed
context moved to another session, recipient or sender, or delivered next to
another public context, fails authentication.

Signed payloads (active mode, Ed25519 under the long-term keys of
``HESessionConfig.verify_keys``) each start with their own label and the
session fingerprint ``fp``: round-0 keys, the key holder's context bundle,
each site's ciphertexts (hashed, bound to sender and context) and the
decrypted sum.
"""

from __future__ import annotations

import hashlib
import struct

from ..crypto import derive_key, x25519_shared_secret

__all__ = [
    "context_id",
    "seal_key",
    "seal_associated_data",
    "advertise_payload",
    "bundle_payload",
    "ciphertext_digest",
    "input_payload",
    "sum_payload",
]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _ids(ids) -> bytes:
    ordered = sorted(ids)
    return _U32.pack(len(ordered)) + b"".join(_U32.pack(i) for i in ordered)


def context_id(fingerprint: bytes, public_context: bytes) -> bytes:
    """Identifier of the session's CKKS context: SHA-256 over the fingerprint and the public context.

    The public context holds parameters only (no key material), so the id is made
    unique per session by the fingerprint; which *key* is in use is bound by the
    authenticated sealing of the secret context, not by this id.
    """
    return hashlib.sha256(b"secagg/v1/he/context-id" + fingerprint + bytes(public_context)).digest()


def seal_key(fingerprint: bytes, own_secret_key: bytes, peer_public_key: bytes, holder: int, recipient: int) -> bytes:
    """AEAD key for the secret context sent from ``holder`` to ``recipient`` (both sides derive it)."""
    shared = x25519_shared_secret(own_secret_key, peer_public_key)
    return derive_key(shared, "he-context-seal", fingerprint + _U32.pack(holder) + _U32.pack(recipient))


def seal_associated_data(fingerprint: bytes, holder: int, recipient: int, context_id: bytes) -> bytes:
    return b"secagg/v1/he/context-seal" + fingerprint + _U32.pack(holder) + _U32.pack(recipient) + context_id


def advertise_payload(fingerprint: bytes, site: int, public_key: bytes) -> bytes:
    """What a site signs in round 0: its X25519 key for this session."""
    return b"secagg/v1/he/advertise" + fingerprint + _U32.pack(site) + public_key


def bundle_payload(fingerprint: bytes, holder: int, context_id: bytes, recipients) -> bytes:
    """What the key holder signs with its context bundle."""
    return b"secagg/v1/he/bundle" + fingerprint + _U32.pack(holder) + context_id + _ids(recipients)


def ciphertext_digest(chunks) -> bytes:
    """SHA-256 over the length-prefixed serialised ciphertexts of one contribution."""
    h = hashlib.sha256(b"secagg/v1/he/ciphertexts")
    h.update(_U32.pack(len(chunks)))
    for chunk in chunks:
        h.update(_U64.pack(len(chunk)))
        h.update(chunk)
    return h.digest()


def input_payload(fingerprint: bytes, sender: int, context_id: bytes, digest: bytes) -> bytes:
    """What a site signs with its upload: its ciphertexts, bound to session, sender and context."""
    return b"secagg/v1/he/input" + fingerprint + _U32.pack(sender) + context_id + digest


def sum_payload(fingerprint: bytes, holder: int, context_id: bytes, survivors, values: bytes) -> bytes:
    """What the key holder signs with the decrypted sum."""
    return (
        b"secagg/v1/he/sum" + fingerprint + _U32.pack(holder) + context_id + _ids(survivors)
        + hashlib.sha256(values).digest()
    )
