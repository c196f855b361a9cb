"""Long-term site identities and the consortium's registry of them (active mode across machines).

Active mode (Bonawitz et al. 2017, Sec. 4: signed AdvertiseKeys and the
ConsistencyCheck round) defends against a coordinator that lies about who
said what. That only works if every site checks the other sites' signatures
against verify keys that **did not come from the coordinator**: a coordinator
that hands out the keys can hand out its own. So each hospital generates an
Ed25519 identity on its own machine (:func:`write_identity`; the signing key
never leaves it), and the consortium assembles the sites' verify keys into a
registry file that every site receives out of band (its governance process:
signed minutes, a PKI, a secure channel). A site refuses a round whose session
carries any verify key that differs from its own copy of the registry
(:func:`check_session_keys`).

In the in-process simulation every party is on one machine, so each site's identity is made
per run by :func:`run_site_identities`: ``RUN_DIR/sites/SITE/`` (mode 0700) holds the site's
signing key and its ledger anchor (:mod:`dp.ledger_signatures`), and ``RUN_DIR/registry.json``
the verify keys (public), also returned so that the caller can keep a copy outside the run
directory - a registry inside the run directory is only as trustworthy as the directory.

Files: a signing key is 64 hex characters (the 32-byte Ed25519 seed), or that seed encrypted under a
passphrase (:mod:`simulation.federation.passphrase`), in a file only its owner may read (mode 0600; anything
wider is refused, as ssh does);
the registry is JSON ``{"site name": "64 hex characters of the verify key"}``. A site that also
runs a Flower SuperNode has its node-authentication key (:mod:`simulation.federation.node_keys`) recorded
next to its verify key: ``{"site name": {"verify_key": "HEX", "node_key": "ecdsa-sha2-nistp384
AAAA..."}}``. That binds the site's Flower identity to its site identity: the SuperLink admits
exactly the registry's node keys (``secagg keys register-nodes``), and the coordinator registers a
node as a site only if the SuperLink authenticated it under that site's node key. Both forms may
be mixed in one file; :func:`load_registry` returns the verify keys, :func:`load_node_keys` the
node keys.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import secagg
from secagg.crypto import KEY_BYTES, SigningKeyPair

from ..errors import SimulationInputError
from .node_keys import NodeKey, NodeKeyError, parse_node_public_key, write_node_key
from .runstore import private_dir

__all__ = ["SiteIdentity", "write_identity", "load_signing_key", "load_registry", "add_to_registry",
           "check_session_keys", "IdentityError", "RunIdentities", "run_site_identities", "SITES_DIR",
           "REGISTRY_FILE", "write_site_node_key", "load_node_keys", "add_node_key"]

SITES_DIR = "sites"
REGISTRY_FILE = "registry.json"


class IdentityError(secagg.InvalidInputError, SimulationInputError):
    """A key file or registry that cannot be used (bad format, too open permissions, unknown site)."""


@dataclass(frozen=True)
class SiteIdentity:
    """Where a site's signing key was written, and the verify key the consortium registers."""

    site: str
    signing_key_path: Path
    verify_key: bytes

    def to_dict(self) -> dict:
        return {"site": self.site, "signing_key": str(self.signing_key_path), "verify_key": self.verify_key.hex()}


def _check_site_name(site: str) -> str:
    if not site or not all(c.isalnum() or c in "-_." for c in site):
        raise IdentityError(f"site name {site!r} must be non-empty letters, digits, '-', '_' or '.'")
    return site


def write_identity(directory, site: str, *, passphrase: bytes | None = None) -> SiteIdentity:
    """Generate a site's Ed25519 identity into ``DIRECTORY/SITE.ed25519`` (mode 0600; never overwritten).

    With a ``passphrase`` the file holds the seed encrypted under it (:mod:`simulation.federation.passphrase`:
    Argon2id, then XSalsa20-Poly1305); :func:`load_signing_key` then needs the passphrase.
    """
    site = _check_site_name(site)
    directory = Path(directory)
    if not directory.exists():
        private_dir(directory)  # a new key directory is owner-only (0700) whatever the umask
    path = directory / f"{site}.ed25519"
    pair = SigningKeyPair.generate()  # secrets-backed (secagg.crypto.random_bytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(f"{path} already exists; a site keeps one identity (remove it deliberately to "
                            "replace it, then update the registry)") from None
    if passphrase is not None:
        from .passphrase import seal_seed

        try:
            text = seal_seed(pair.seed, passphrase)
        except BaseException:
            os.close(fd)
            path.unlink()
            raise
    else:
        text = pair.seed.hex() + "\n"
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return SiteIdentity(site, path, pair.verify_key)


def load_signing_key(path, *, passphrase_env: str | None = None) -> SigningKeyPair:
    """Read a signing key written by :func:`write_identity`; refuses files others may read.

    A passphrase-protected key is opened with the passphrase in the environment variable
    ``passphrase_env`` (default ``SECAGG_KEY_PASSPHRASE``); without it, or with a wrong one, a
    :class:`~simulation.federation.passphrase.PassphraseError` (one line naming the file and the variable).
    """
    from .passphrase import DEFAULT_PASSPHRASE_ENV, PassphraseError, is_sealed, open_seed, passphrase_from_env

    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise IdentityError(f"signing key {path} does not exist (create it with `secagg keys new`)") from None
    if mode & 0o077:
        raise IdentityError(f"signing key {path} has mode {mode:04o}; only its owner may read it: chmod 600 {path}")
    text = path.read_text().strip()
    if is_sealed(text):
        variable = passphrase_env or DEFAULT_PASSPHRASE_ENV
        try:
            passphrase = passphrase_from_env(variable)
        except PassphraseError:
            raise PassphraseError(f"signing key {path} is protected by a passphrase: put it in the environment "
                                  f"variable {variable}") from None
        seed = open_seed(text, passphrase, f"signing key {path}")
    else:
        try:
            seed = bytes.fromhex(text)
        except ValueError:
            seed = b""
    if len(seed) != KEY_BYTES:
        raise IdentityError(f"signing key {path} must hold {2 * KEY_BYTES} hex characters; it does not")
    import nacl.signing

    return SigningKeyPair(seed, bytes(nacl.signing.SigningKey(seed).verify_key))


def load_registry(path) -> dict[str, bytes]:
    """The consortium's registry: site name -> 32-byte Ed25519 verify key."""
    return {site: verify for site, (verify, _) in _read_registry(path).items()}


def load_node_keys(path) -> dict[str, str]:
    """The Flower node keys the registry records: site name -> OpenSSH public-key line (sites without
    one are absent)."""
    return {site: node for site, (_, node) in _read_registry(path).items() if node is not None}


def _read_registry(path) -> dict[str, tuple[bytes, str | None]]:
    """site -> (verify key, node key line or None), every entry checked."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO or device would block or never end
        raise IdentityError(f"registry {path} is not a regular file")
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise IdentityError(f"registry {path} does not exist") from None
    except ValueError as exc:
        raise IdentityError(f"registry {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise IdentityError(f"registry {path} must map site names to hex verify keys")
    registry: dict[str, tuple[bytes, str | None]] = {}
    for site, entry in raw.items():
        _check_site_name(site)
        key, node = entry, None
        if isinstance(entry, dict):
            extra = sorted(set(entry) - {"verify_key", "node_key"})
            if extra:
                raise IdentityError(f"registry {path}: the entry of {site!r} has unknown fields {extra}")
            key, node = entry.get("verify_key"), entry.get("node_key")
        try:
            value = bytes.fromhex(key) if isinstance(key, str) else b""
        except ValueError:
            value = b""
        if len(value) != KEY_BYTES:
            raise IdentityError(f"registry {path}: the key of {site!r} must be {2 * KEY_BYTES} hex characters")
        if node is not None:
            if not isinstance(node, str):
                raise IdentityError(f"registry {path}: the node key of {site!r} must be one OpenSSH public-key line")
            try:
                parse_node_public_key(node)
            except NodeKeyError as exc:
                raise IdentityError(f"registry {path}: the node key of {site!r}: {exc}") from None
            node = node.strip()
        registry[site] = (value, node)
    if len({verify for verify, _ in registry.values()}) != len(registry):
        raise IdentityError(f"registry {path}: two sites share one verify key")
    nodes = [_node_key_identity(node) for _, node in registry.values() if node is not None]
    if len(set(nodes)) != len(nodes):
        raise IdentityError(f"registry {path}: two sites share one node key")
    return registry


def _node_key_identity(line: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return parse_node_public_key(line).public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)


def add_to_registry(path, identity: SiteIdentity, node_key: str | None = None) -> dict[str, bytes]:
    """Add (or confirm) a site's verify key - and, with ``node_key``, its Flower node key - in a registry
    file, written atomically. A site's recorded keys are never replaced by other ones."""
    from .runstore import atomic_write_bytes

    path = Path(path)
    registry = _read_registry(path) if path.exists() else {}
    known_verify, known_node = registry.get(identity.site, (None, None))
    if known_verify is not None and known_verify != identity.verify_key:
        raise IdentityError(f"registry {path} already holds another key for {identity.site!r}")
    if node_key is not None:
        node_key = node_key.strip()
        try:
            parse_node_public_key(node_key)
        except NodeKeyError as exc:
            raise IdentityError(f"node key of {identity.site!r}: {exc}") from None
        if known_node is not None and _node_key_identity(known_node) != _node_key_identity(node_key):
            raise IdentityError(f"registry {path} already holds another node key for {identity.site!r}")
        mine = _node_key_identity(node_key)
        for site, (_, other) in registry.items():
            if site != identity.site and other is not None and _node_key_identity(other) == mine:
                raise IdentityError(f"registry {path}: site {site!r} already has this node key")
    registry[identity.site] = (identity.verify_key, node_key if node_key is not None else known_node)
    entries = {site: key.hex() if node is None else {"verify_key": key.hex(), "node_key": node}
               for site, (key, node) in sorted(registry.items())}
    atomic_write_bytes(path, (json.dumps(entries, indent=2) + "\n").encode())
    return {site: key for site, (key, _) in registry.items()}


def add_node_key(directory, site: str, registry=None) -> NodeKey:
    """Give an existing site identity (``DIRECTORY/SITE.ed25519``) its Flower node key, and with ``registry``
    record it there next to the site's verify key, which must be that identity's."""
    site = _check_site_name(site)
    signing_key = Path(directory) / f"{site}.ed25519"
    pair = load_signing_key(signing_key)  # the node key is bound to this identity: it must exist
    if registry is not None and load_registry(registry).get(site) != pair.verify_key:
        raise IdentityError(f"registry {registry} does not hold {signing_key}'s verify key for {site!r}: add the "
                            "site with `secagg keys new` first")
    node_key = write_site_node_key(directory, site)
    if registry is not None:
        add_to_registry(registry, SiteIdentity(site, signing_key, pair.verify_key), node_key.public_key)
    return node_key


def write_site_node_key(directory, site: str) -> NodeKey:
    """Generate a site's Flower node key into ``DIRECTORY/SITE.flower-auth`` (0600) and ``.pub`` beside its
    identity (:func:`simulation.federation.node_keys.write_node_key`); never overwritten."""
    site = _check_site_name(site)
    directory = Path(directory)
    if not directory.exists():
        private_dir(directory)  # a new key directory is owner-only (0700) whatever the umask
    try:
        return write_node_key(directory, site)
    except NodeKeyError as exc:
        raise IdentityError(str(exc)) from None


def check_session_keys(verify_keys: Mapping[int, bytes], sites: Mapping[int, str],
                       registry: Mapping[str, bytes]) -> None:
    """Every participant's verify key in a session must be its site's key in *our* registry.

    ``sites`` maps the session's client ids to site names (as the coordinator numbered them);
    raises :class:`secagg.VerificationError` on any difference, so an honest site never
    accepts a coordinator-chosen identity.
    """
    if set(verify_keys) != set(sites):
        raise secagg.VerificationError("the session's verify keys and its list of sites cover different clients")
    if len(set(sites.values())) != len(sites):
        raise secagg.VerificationError("the session names one site for two clients")
    for client_id, site in sorted(sites.items()):
        expected = registry.get(site)
        if expected is None:
            raise secagg.VerificationError(f"site {site!r} (client {client_id}) is not in this site's registry")
        if verify_keys[client_id] != expected:
            raise secagg.VerificationError(f"the verify key of site {site!r} (client {client_id}) differs from the "
                                           "registry's: refusing a coordinator-chosen identity")


@dataclass(frozen=True)
class RunIdentities:
    """The simulated sites' identities of one run: keys and own folders (site side), registry (public)."""

    keys: dict  # site -> secagg.crypto.SigningKeyPair (stays with the site)
    folders: dict  # site -> Path of the site's own state (signing key, ledger anchor)
    registry: dict  # site -> 32-byte verify key
    registry_path: Path


def run_site_identities(run_dir, sites: Iterable[str], *, create: bool) -> RunIdentities:
    """Each simulated site's Ed25519 identity in ``RUN_DIR/sites/SITE/`` and the registry of them.

    ``create=True`` (a new run) generates them (Ed25519 seeds from ``secrets``, i.e. ``os.urandom``, through
    :func:`write_identity`; key files 0600, folders 0700) and writes ``RUN_DIR/registry.json``;
    ``create=False`` (resume) loads them and refuses a key that is not the registry's.
    """
    run_dir = Path(run_dir)
    names = sorted(sites)
    registry_path = run_dir / REGISTRY_FILE
    keys, folders = {}, {}
    for site in names:
        folder = run_dir / SITES_DIR / _check_site_name(site)
        if create:
            folder.mkdir(mode=0o700, parents=True, exist_ok=False)
            os.chmod(folder, 0o700)
            identity = write_identity(folder, site)
            add_to_registry(registry_path, identity)
        keys[site] = load_signing_key(folder / f"{site}.ed25519")
        folders[site] = folder
    registry = load_registry(registry_path)
    for site in names:
        if registry.get(site) != keys[site].verify_key:
            raise IdentityError(f"the signing key in {folders[site]} is not site {site!r}'s key in {registry_path}")
    return RunIdentities(keys, folders, {s: registry[s] for s in names}, registry_path)
