"""The thin "hazmat" layer: every cryptographic primitive the protocol uses.

Nothing here is hand-rolled; each function is a narrow, typed wrapper over
PyNaCl (libsodium) or ``cryptography`` (OpenSSL):

* X25519 key agreement (RFC 7748) - PyNaCl ``crypto_scalarmult``.
* Ed25519 signatures (RFC 8032) - PyNaCl ``nacl.signing``.
* XChaCha20-Poly1305 AEAD - PyNaCl ``crypto_aead_xchacha20poly1305_ietf``;
  a fresh random 24-byte nonce per message (the extended nonce makes random
  nonces safe), associated data supplied by the caller.
* HKDF-SHA256 (RFC 5869) - ``cryptography``; every derived key carries an
  explicit domain-separation label and a context that includes the session
  fingerprint, so no key, seed or mask is ever reused across purposes, rounds
  or sessions.

Randomness. Secret keys and seeds come only from :func:`secrets.token_bytes`
(the OS CSPRNG); libsodium's internal generator is never asked for keys, so
the project has one auditable source of secret randomness.

Comparisons of secret values use :func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, fields
from typing import Callable, ClassVar

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import InvalidInputError, VerificationError

__all__ = [
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "AEAD_OVERHEAD",
    "random_bytes",
    "X25519KeyPair",
    "x25519_public_key",
    "x25519_shared_secret",
    "derive_key",
    "aead_encrypt",
    "aead_decrypt",
    "SigningKeyPair",
    "sign",
    "verify_signature",
    "constant_time_equal",
]

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_NONCE_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
_TAG_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
AEAD_OVERHEAD = _NONCE_BYTES + _TAG_BYTES
_HKDF_SALT = b"secagg/v1/hkdf-salt"


def random_bytes(n: int = KEY_BYTES) -> bytes:
    """Fresh secret bytes from the OS CSPRNG (the project's only source of secrets)."""
    return secrets.token_bytes(n)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of where they differ."""
    return hmac.compare_digest(bytes(a), bytes(b))


def _check_len(name: str, value: bytes, expected: int) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != expected:
        got = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise InvalidInputError(f"{name} must be {expected} bytes; got {got}")
    return bytes(value)


class _KeyPair:
    """A fresh 32-byte secret and the public key derived from it; ``repr`` shows only the public key.

    A subclass is a frozen dataclass of two fields, the secret then the public
    key, and names the derivation in its bases: ``class X25519KeyPair(_KeyPair, derive=x25519_public_key)``.
    """

    _derive: ClassVar[Callable[[bytes], bytes]]

    def __init_subclass__(cls, derive: Callable[[bytes], bytes], **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._derive = staticmethod(derive)

    @classmethod
    def generate(cls):
        secret = random_bytes(KEY_BYTES)
        return cls(secret, cls._derive(secret))

    def __repr__(self) -> str:
        public = fields(self)[1].name
        return f"{type(self).__name__}({public}={getattr(self, public).hex()[:16]}...)"


# --- X25519 -----------------------------------------------------------------


def x25519_public_key(secret_key: bytes) -> bytes:
    """The X25519 public key ``X25519(sk, 9)`` of a 32-byte secret key."""
    return nacl.bindings.crypto_scalarmult_base(_check_len("X25519 secret key", secret_key, KEY_BYTES))


@dataclass(frozen=True, repr=False)
class X25519KeyPair(_KeyPair, derive=x25519_public_key):
    """An X25519 key pair; ``repr`` never shows the secret key."""

    secret_key: bytes
    public_key: bytes


def x25519_shared_secret(secret_key: bytes, peer_public_key: bytes) -> bytes:
    """Raw X25519 output ``X25519(sk, pk_peer)``.

    Raises :class:`VerificationError` when the peer key is a low-order point
    (libsodium rejects an all-zero shared secret): such a key is never honest.
    Always pass the result through :func:`derive_key` before use.
    """
    sk = _check_len("X25519 secret key", secret_key, KEY_BYTES)
    pk = _check_len("X25519 public key", peer_public_key, KEY_BYTES)
    try:
        return nacl.bindings.crypto_scalarmult(sk, pk)
    except nacl.exceptions.RuntimeError as exc:  # low-order point
        raise VerificationError(f"X25519 with a low-order public key {pk.hex()[:16]}...: {exc}") from None


# --- HKDF ---------------------------------------------------------------------


def derive_key(input_key: bytes, label: str, context: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256(ikm=input_key, info=label || 0x00 || context).

    ``label`` names the purpose (e.g. ``"pairwise-mask"``); ``context`` must
    include the session fingerprint and the identities of the parties, so that
    the same input key never yields the same output for two purposes, rounds or
    sessions.
    """
    if not label or "\x00" in label:
        raise InvalidInputError(f"derive_key needs a non-empty label without NUL; got {label!r}")
    info = b"secagg/v1/" + label.encode("ascii") + b"\x00" + bytes(context)
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT, info=info).derive(bytes(input_key))


# --- AEAD -----------------------------------------------------------------------


def aead_encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """XChaCha20-Poly1305: returns ``nonce || ciphertext || tag`` with a random nonce."""
    key = _check_len("AEAD key", key, KEY_BYTES)
    nonce = random_bytes(_NONCE_BYTES)
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(plaintext), bytes(associated_data), nonce, key
    )


def aead_decrypt(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Inverse of :func:`aead_encrypt`; raises :class:`VerificationError` on any tampering."""
    key = _check_len("AEAD key", key, KEY_BYTES)
    if len(ciphertext) < AEAD_OVERHEAD:
        raise VerificationError(
            f"ciphertext too short: expected at least {AEAD_OVERHEAD} bytes, got {len(ciphertext)}"
        )
    nonce, body = bytes(ciphertext[:_NONCE_BYTES]), bytes(ciphertext[_NONCE_BYTES:])
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(body, bytes(associated_data), nonce, key)
    except nacl.exceptions.CryptoError:
        raise VerificationError(
            "ciphertext failed authentication (wrong key, tampered bytes, or bound to "
            "another session/round/sender/recipient)"
        ) from None


# --- Ed25519 --------------------------------------------------------------------


def _ed25519_verify_key(seed: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(_check_len("Ed25519 seed", seed, KEY_BYTES)).verify_key)


@dataclass(frozen=True, repr=False)
class SigningKeyPair(_KeyPair, derive=_ed25519_verify_key):
    """A long-term Ed25519 identity of a site (used in active-adversary mode); ``repr`` never shows the seed."""

    seed: bytes
    verify_key: bytes


def sign(seed: bytes, message: bytes) -> bytes:
    """Ed25519 signature (64 bytes) of ``message`` under the key with this seed."""
    key = nacl.signing.SigningKey(_check_len("Ed25519 seed", seed, KEY_BYTES))
    return bytes(key.sign(bytes(message)).signature)


def verify_signature(verify_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`VerificationError` unless ``signature`` is valid for ``message``."""
    vk = _check_len("Ed25519 verify key", verify_key, KEY_BYTES)
    if len(signature) != SIGNATURE_BYTES:
        raise VerificationError(f"signature must be {SIGNATURE_BYTES} bytes; got {len(signature)}")
    try:
        nacl.signing.VerifyKey(vk).verify(bytes(message), bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise VerificationError("Ed25519 signature does not verify") from None
