"""A node's protocol session sealed at rest in Flower's ``context.state`` (issue 18).

Why. Between the messages of a run the SuperNode keeps the node's state of the
run in ``context.state`` (:func:`simulation.engines.flower.client_app.load_state`):
its :class:`secagg.ClientSession` - X25519 secret keys, Ed25519 signing seed
(active mode), self-mask seed, masked input - and what decides what it commits,
signs and reveals (the round's setup and DP parameters, its release and signature
flags, its budget check's report). The
SuperNode persists that state wherever Flower keeps it (memory, a database), out
of this code's control. So the node never hands it the session in the clear: it
hands it ``seal(pickle(session))``, an XChaCha20-Poly1305 ciphertext
(:func:`secagg.crypto.aead_encrypt`, PyNaCl) under a 32-byte key that lives only
in the node's own state directory, ``STATE_DIR/state.key`` (fresh from
:func:`secrets.token_bytes`, created 0600 with ``O_EXCL``, never sent or logged).

Threat model. Whoever reads Flower's state store (a backup, another tenant of the
SuperNode's database) without the state directory learns nothing of the session
and cannot alter it undetected: the associated data binds the ciphertext to the
site and the run (a sealed state cannot be replayed into another run or site's
state), and a tampered one fails authentication, which the node treats as a
refusal; nothing is unpickled before it authenticated. An earlier sealed state of
the same run and site can be put back: the node's ledger and session journal, on
its disk and not in Flower's state, refuse a round released twice and a session
joined twice. Whoever reads the node's state directory holds the key as well as the
node's ledger and identity: that is the node's machine, which the deployment
trusts. A key file readable by group or others is refused, not used.

A node without a state directory has nowhere to keep the key, so it takes part in
no session (:func:`seal_key` is never called without one; the ClientApp refuses).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import secagg
from secagg.crypto import KEY_BYTES, aead_decrypt, aead_encrypt

from ...federation.runstore import private_dir

__all__ = ["STATE_KEY_FILE", "seal_key", "seal", "unseal"]

STATE_KEY_FILE = "state.key"
_LABEL = b"secagg/flower-node-state/v1\x00"


def seal_key(state_dir: Path) -> bytes:
    """The node's sealing key, ``STATE_DIR/state.key``; created (0600, fresh random) on first use.

    Raises:
        InvalidInputError: the key file is not a regular file of 32 bytes, or group/others can access it.
    """
    state_dir = Path(state_dir)
    path = state_dir / STATE_KEY_FILE
    if not path.exists():
        private_dir(state_dir)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another message of this node made it first: use that one
            return seal_key(state_dir)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise secagg.InvalidInputError(f"{path} is not a regular file")
    if info.st_mode & 0o077:
        raise secagg.InvalidInputError(f"{path} is accessible to group or others (mode "
                                       f"{stat.S_IMODE(info.st_mode):o}); the node's state key must be 0600")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise secagg.InvalidInputError(f"{path} holds {len(key)} bytes; a state key is {KEY_BYTES}")
    return key


def _associated(site: str, run_id: int) -> bytes:
    return _LABEL + site.encode("utf-8") + b"\x00" + str(int(run_id)).encode("ascii")


def seal(state_dir: Path, site: str, run_id: int, plaintext: bytes) -> bytes:
    """``nonce || ciphertext || tag`` of ``plaintext``, bound to this site and run."""
    return aead_encrypt(seal_key(state_dir), plaintext, _associated(site, run_id))


def unseal(state_dir: Path, site: str, run_id: int, sealed: bytes) -> bytes:
    """Inverse of :func:`seal`.

    Raises:
        VerificationError: another key, site or run, or altered bytes.
    """
    return aead_decrypt(seal_key(state_dir), sealed, _associated(site, run_id))
