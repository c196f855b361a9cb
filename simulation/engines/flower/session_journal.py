"""A node's durable journal of the session fingerprints it has joined: one session, one run.

Why. An honest client signs one survivor set per session, and the consistency
quorum (docs/security.md, Claim 1) relies on that. But the coordinator picks the
session configuration, nonce included: if a node joined the *same* fingerprint
twice (a "rerun" of a session), it would sign a second survivor set under the
same fingerprint, and two views could each reach the quorum. So a node records
every fingerprint durably (appended and fsynced) *before* it advertises its
keys, and refuses any fingerprint already in its journal, whatever run id or
round index the coordinator attaches to it.

The journal is ``STATE_DIR/sessions.journal``: one hex fingerprint per line,
created 0600. It only grows (32 bytes of hex per session).
"""

from __future__ import annotations

import os
from pathlib import Path

import secagg

__all__ = ["JOURNAL_FILE", "ReplayedSessionError", "claim_session"]

JOURNAL_FILE = "sessions.journal"


class ReplayedSessionError(secagg.VerificationError):
    """The coordinator offered a session this node already joined."""


def claim_session(state_dir: Path, fingerprint: bytes) -> None:
    """Record ``fingerprint`` in the node's journal, or refuse it if it is already there.

    Raises:
        ReplayedSessionError: the node already joined this session (a replay).
    """
    if len(fingerprint) != 32:
        raise secagg.InvalidInputError(f"a session fingerprint is 32 bytes; got {len(fingerprint)}")
    path = Path(state_dir) / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = fingerprint.hex()
    if path.exists():
        with open(path, "r", encoding="ascii") as journal:
            if any(line.strip() == entry for line in journal):
                raise ReplayedSessionError(
                    f"session {entry[:16]}... was already joined by this node; a second run of one session would "
                    "let the coordinator collect two consistency signatures from it")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (entry + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
