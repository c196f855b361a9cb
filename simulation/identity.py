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

Files: a signing key is 64 hex characters (the 32-byte Ed25519 seed) in a file
only its owner may read (mode 0600; anything wider is refused, as ssh does);
the registry is JSON ``{"site name": "64 hex characters of the verify key"}``.
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

from .runstore import private_dir

__all__ = ["SiteIdentity", "write_identity", "load_signing_key", "load_registry", "add_to_registry",
           "check_session_keys", "IdentityError", "RunIdentities", "run_site_identities", "SITES_DIR",
           "REGISTRY_FILE"]

SITES_DIR = "sites"
REGISTRY_FILE = "registry.json"


class IdentityError(secagg.InvalidInputError):
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


def write_identity(directory, site: str) -> SiteIdentity:
    """Generate a site's Ed25519 identity into ``DIRECTORY/SITE.ed25519`` (mode 0600; never overwritten)."""
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
    with os.fdopen(fd, "w") as f:
        f.write(pair.seed.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return SiteIdentity(site, path, pair.verify_key)


def load_signing_key(path) -> SigningKeyPair:
    """Read a signing key written by :func:`write_identity`; refuses files others may read."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise IdentityError(f"signing key {path} does not exist (create it with `secagg keys new`)") from None
    if mode & 0o077:
        raise IdentityError(f"signing key {path} has mode {mode:04o}; only its owner may read it: chmod 600 {path}")
    text = path.read_text().strip()
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
    registry: dict[str, bytes] = {}
    for site, key in raw.items():
        _check_site_name(site)
        try:
            value = bytes.fromhex(key) if isinstance(key, str) else b""
        except ValueError:
            value = b""
        if len(value) != KEY_BYTES:
            raise IdentityError(f"registry {path}: the key of {site!r} must be {2 * KEY_BYTES} hex characters")
        registry[site] = value
    if len(set(registry.values())) != len(registry):
        raise IdentityError(f"registry {path}: two sites share one verify key")
    return registry


def add_to_registry(path, identity: SiteIdentity) -> dict[str, bytes]:
    """Add (or confirm) a site's verify key in a registry file, written atomically."""
    from .runstore import atomic_write_bytes

    path = Path(path)
    registry = load_registry(path) if path.exists() else {}
    known = registry.get(identity.site)
    if known is not None and known != identity.verify_key:
        raise IdentityError(f"registry {path} already holds another key for {identity.site!r}")
    registry[identity.site] = identity.verify_key
    text = json.dumps({site: key.hex() for site, key in sorted(registry.items())}, indent=2) + "\n"
    atomic_write_bytes(path, text.encode())
    return registry


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
