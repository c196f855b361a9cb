"""A site's Flower node-authentication key: the key its SuperNode proves to the SuperLink.

Flower (checked against flwr 1.42) authenticates SuperNodes with an elliptic-curve key pair on a
NIST curve. The SuperLink runs with ``--enable-supernode-auth`` and knows only the public keys
registered through its Control API (``flwr supernode register KEY.pub``); a SuperNode started with
``--auth-supernode-private-key KEY`` signs a timestamp with every Fleet request, and the SuperLink
refuses a request whose signature does not verify or whose key is not registered (so a stranger
cannot even activate a node). The private key is an OpenSSH-format private key (flwr reads it with
``cryptography``'s ``load_ssh_private_key``, unencrypted), the public key one OpenSSH line
(``ecdsa-sha2-nistp384 AAAA...``).

:func:`write_node_key` makes such a pair on the site's own machine with ``cryptography``
(P-384, the curve flwr's own key generator uses; ``cryptography`` draws on ``os.urandom``): the
private key ``DIR/SITE.flower-auth`` (mode 0600 from creation; never overwritten) and the public
key ``DIR/SITE.flower-auth.pub``. The consortium records the public line in its registry next to
the site's Ed25519 verify key (:mod:`simulation.federation.identity`), which binds the Flower identity to
the site: the coordinator registers a node as site S only if the SuperLink authenticated that
node under S's registered node key (:func:`same_node_key`, used by the Flower ServerApp).

**Threat model.** The node key proves "this SuperNode holds S's node key" to the SuperLink and,
through the SuperLink's node list, to the coordinator. It is only as private as its file (mode
0600, unencrypted: flwr cannot read an encrypted one); it does not protect against the site's own
machine being taken over. Without ``--enable-supernode-auth`` the SuperLink also admits any
SuperNode that registers a key of its own (flwr 1.42's Fleet API checks, as read in its source,
only that a node holds the key it presents), so strangers become nodes; the coordinator's binding
still refuses them a registered site's name, but only the SuperLink flag keeps them out.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import secagg

from ..errors import SimulationInputError

__all__ = ["NodeKey", "NodeKeyError", "write_node_key", "parse_node_public_key", "same_node_key",
           "NODE_KEY_SUFFIX"]

NODE_KEY_SUFFIX = ".flower-auth"

# flwr's Control API accepts any of these (flwr.supercore.primitives.asymmetric.uses_nist_ec_curve).
_NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class NodeKeyError(secagg.InvalidInputError, SimulationInputError):
    """A node key that cannot be used: not an OpenSSH NIST-curve EC key, or a file that exists."""


@dataclass(frozen=True)
class NodeKey:
    """Where a site's Flower node key was written, and the public line the registry records."""

    site: str
    private_key_path: Path
    public_key_path: Path
    public_key: str  # one OpenSSH line: "ecdsa-sha2-nistp384 AAAA..."

    def to_dict(self) -> dict:
        return {"node_private_key": str(self.private_key_path), "node_public_key_file": str(self.public_key_path),
                "node_key": self.public_key}


def write_node_key(directory, site: str) -> NodeKey:
    """Generate ``DIR/SITE.flower-auth`` (0600, OpenSSH private key) and ``DIR/SITE.flower-auth.pub``.

    Refuses (:class:`NodeKeyError`) when either file exists: a site keeps one node key, and replacing
    it is a deliberate act that also changes the registry and the SuperLink's registration.
    ``site`` must already be a checked site name (:mod:`simulation.federation.identity` checks it).
    """
    directory = Path(directory)
    private_path = directory / f"{site}{NODE_KEY_SUFFIX}"
    public_path = directory / f"{site}{NODE_KEY_SUFFIX}.pub"
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise NodeKeyError(f"{path} already exists; a site keeps one node key (remove both files deliberately "
                               "to replace it, then update the registry and the SuperLink)")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write_new(private_path, private, 0o600)
    _write_new(public_path, public + b"\n", 0o644)
    return NodeKey(site, private_path, public_path, public.decode("ascii"))


def parse_node_public_key(line: str) -> ec.EllipticCurvePublicKey:
    """One OpenSSH public-key line of a NIST-curve EC key (what ``flwr supernode register`` accepts)."""
    try:
        key = serialization.load_ssh_public_key(line.strip().encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeError) as exc:
        raise NodeKeyError(f"not an OpenSSH public key line: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _NIST_CURVES):
        raise NodeKeyError("a Flower node key must be an EC key on a NIST curve (P-256, P-384 or P-521)")
    return key


def same_node_key(registered_line: str, flower_public_key: bytes) -> bool:
    """Whether the public key the SuperLink holds for a node (flwr: PEM SubjectPublicKeyInfo bytes) is
    the registry's key ``registered_line``; an empty or unreadable key is not."""
    if not flower_public_key:
        return False
    try:
        theirs = serialization.load_pem_public_key(bytes(flower_public_key))
    except (ValueError, UnsupportedAlgorithm, TypeError):
        return False
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hmac.compare_digest(parse_node_public_key(registered_line).public_bytes(*spki),
                               theirs.public_bytes(*spki))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (O_EXCL: never follows or replaces an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
