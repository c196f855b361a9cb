"""A site's signing key at rest under a passphrase (issue 21): Argon2id + XSalsa20-Poly1305, from PyNaCl.

Why. A site's Ed25519 signing key (:mod:`simulation.federation.identity`) signs its ledger spends and, in
active mode, its protocol messages. The key file is 0600, which stops other local users; it does
not stop whoever gets a copy of the disk or of a backup. Stored under a passphrase, such a copy is
useless without the passphrase.

Math. ``key = Argon2id(passphrase, salt; opslimit, memlimit)`` (``nacl.pwhash.argon2id.kdf``, 32
bytes, a fresh 16-byte salt from ``os.urandom`` per file), then ``box = SecretBox(key).encrypt(seed)``
(XSalsa20-Poly1305 with a fresh random 24-byte nonce, ``nacl.secret``). The file is JSON naming the
format, the KDF parameters, the salt and the box (hex). A wrong passphrase, or any altered byte, fails
Poly1305 authentication: the key is never used half-decrypted. Nothing here is hand-rolled.

Cost. The default parameters are libsodium's ``OPSLIMIT_INTERACTIVE`` / ``MEMLIMIT_INTERACTIVE`` (2
passes over 64 MiB, about 0.1-0.3 s): a Flower node opens its key in a fresh process for every message,
so a slower setting multiplies into every round. Loading accepts the parameters a file states only
within libsodium's range (MIN .. SENSITIVE), so a crafted file cannot make the node spend gigabytes.

Threat model. It protects the key at rest against a reader of the file who lacks the passphrase (an
offline guesser pays Argon2id per guess: choose a long passphrase). It does not protect against the
node's own user while the node runs: that user supplies the passphrase, through an environment
variable (never a command-line argument, which other users can read in the process table).
"""

from __future__ import annotations

import json
import os

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret

import secagg

from ..errors import SimulationInputError

__all__ = ["FORMAT", "seal_seed", "open_seed", "is_sealed", "PassphraseError", "passphrase_from_env",
           "DEFAULT_PASSPHRASE_ENV"]

FORMAT = "secagg-signing-key/argon2id-xsalsa20poly1305/v1"
#: The environment variable a node (and ``secagg keys new --passphrase-env``) reads by default.
DEFAULT_PASSPHRASE_ENV = "SECAGG_KEY_PASSPHRASE"


class PassphraseError(secagg.InvalidInputError, SimulationInputError):
    """A passphrase-protected key cannot be opened: no passphrase, a wrong one, or a damaged file."""


def passphrase_from_env(variable: str) -> bytes:
    """The passphrase held by environment variable ``variable`` (UTF-8); refuses an unset or empty one."""
    value = os.environ.get(variable, "")
    if not value:
        raise PassphraseError(f"the environment variable {variable} holds no passphrase")
    return value.encode("utf-8")


def seal_seed(seed: bytes, passphrase: bytes, *, opslimit: int = argon2id.OPSLIMIT_INTERACTIVE,
              memlimit: int = argon2id.MEMLIMIT_INTERACTIVE) -> str:
    """The JSON text of ``seed`` encrypted under ``passphrase`` (fresh salt and nonce)."""
    if not passphrase:
        raise PassphraseError("an empty passphrase protects nothing")
    salt = os.urandom(argon2id.SALTBYTES)
    key = argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    box = nacl.secret.SecretBox(key).encrypt(bytes(seed))
    return json.dumps({"format": FORMAT, "kdf": "argon2id", "opslimit": opslimit, "memlimit": memlimit,
                       "salt": salt.hex(), "box": bytes(box).hex()}, indent=2) + "\n"


def is_sealed(text: str) -> bool:
    """Does this key file's text hold a passphrase-protected key (rather than a plain hex seed)?"""
    return text.lstrip().startswith("{")


def open_seed(text: str, passphrase: bytes, where: str) -> bytes:
    """The seed inside a :func:`seal_seed` text; ``where`` names the file in errors.

    Raises:
        PassphraseError: not this format, parameters outside libsodium's range, a wrong passphrase or
            altered bytes (one line, never the passphrase).
    """
    try:
        stored = json.loads(text)
        if stored.get("format") != FORMAT or stored.get("kdf") != "argon2id":
            raise ValueError
        opslimit, memlimit = int(stored["opslimit"]), int(stored["memlimit"])
        salt, box = bytes.fromhex(stored["salt"]), bytes.fromhex(stored["box"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PassphraseError(f"{where} is not a passphrase-protected signing key of format {FORMAT}") from None
    if not (argon2id.OPSLIMIT_MIN <= opslimit <= argon2id.OPSLIMIT_SENSITIVE
            and argon2id.MEMLIMIT_MIN <= memlimit <= argon2id.MEMLIMIT_SENSITIVE) or len(salt) != argon2id.SALTBYTES:
        raise PassphraseError(f"{where} states key-derivation parameters outside libsodium's range")
    key = argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(box))
    except nacl.exceptions.CryptoError:
        raise PassphraseError(f"wrong passphrase for {where} (or the file was altered)") from None
