"""The privacy ledger's on-disk format: schema version, canonical JSON and the hash chain.

One job: the bytes every party (the coordinator that writes, the sites that
sign, the auditor that verifies) must compute identically.

* ``canonical_json``: sorted keys, no whitespace, ASCII, no NaN/inf.
* ``hash_0 = SHA-256("secagg/ledger/v3" || 0x00 || run_id)``;
  ``hash_i = SHA-256(hash_{i-1} || kind_i || 0x00 || canonical_json(body_i))``.

The entry's kind is inside the hash (schema v3). In v2 it was a bare SQLite
column outside it, so relabelling a ``spend`` row as ``round`` or ``genesis``
hid it from signature checks, epsilon re-derivation and the budget without
touching a single hash (found by the issue-15 attack review). A kind is one of
:data:`KINDS`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "KINDS", "canonical_json", "genesis_hash", "chain_hash", "write_private_atomic"]

SCHEMA_VERSION = "secagg-ledger-v3"
KINDS = ("genesis", "spend", "site_level_spend", "round")


def canonical_json(value) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats in repr form."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def genesis_hash(run_id: str) -> str:
    return hashlib.sha256(f"secagg/ledger/v3\x00{run_id}".encode()).hexdigest()


def chain_hash(prev_hash: str, kind: str, body: str) -> str:
    """The entry's hash: its predecessor's hash, its kind and its canonical body (``ValueError`` for a bad kind)."""
    if kind not in KINDS:
        raise ValueError(f"{kind!r} is not a ledger entry kind ({', '.join(KINDS)})")
    return hashlib.sha256(bytes.fromhex(prev_hash) + kind.encode() + b"\x00" + body.encode()).hexdigest()


def write_private_atomic(path: Path, data: bytes) -> None:
    """Atomic, durable write of a file only its owner may read (0600, whatever the umask)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
