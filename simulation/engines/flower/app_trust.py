"""Only consortium-signed app bundles run on a hospital's node (issue 21): signing and checking FABs.

Why. A Flower SuperNode executes whatever Flower App Bundle (FAB: a zip of the app's files) the
SuperLink hands it with a message: ``flwr-clientapp`` installs the bundle and imports its ClientApp.
Anyone who can submit a run to the SuperLink's Control API - and flwr 1.42 has no user authentication
on that API outside its enterprise edition - could therefore run code of their choice on every
hospital's node, next to its patient data and its signing key. flwr's own defence,
``flower-supernode --trusted-entities``, only accepts bundles whose ``verifications`` carry
``valid_license``, which the SuperLink sets only for apps from Flower Hub
(``flwr/superlink/servicer/control/control_handlers.py::_format_verification``); a bundle a
consortium builds itself and submits with ``flwr run`` is then always refused. So the consortium
signs its bundles itself, and each node checks that signature before any of the bundle runs.

What is signed. A FAB's identity is its SHA-256 (the ``fab.hash_str`` Flower computes; ``flwr build``
is reproducible: fixed file order and timestamps, so the same app folder always gives the same
hash). The consortium's app-signing key (Ed25519, PyNaCl; the same key files as a site's identity,
:mod:`simulation.federation.identity`, optionally under a passphrase, :mod:`simulation.federation.passphrase`) signs
``DOMAIN || sha256`` (``DOMAIN`` separates these signatures from every other use of an Ed25519 key).
The signature travels out of band, as a small JSON file (:func:`signature_document`), to every node,
which keeps them in one folder, the node's *trusted apps*; the consortium's verify key reaches each
node out of band too, like the registry.

What the node checks (:meth:`AppTrust.check`), in the ``flwr-clientapp`` process that the node starts
for each message, after it pulled the bundle and BEFORE it installs it or imports any of it
(:mod:`simulation.engines.flower.verified_clientapp`):

1. the SHA-256 of the bundle's bytes, computed by the node itself (nothing the SuperLink claims);
2. the hash the SuperLink claims for it (``fab.hash_str``, and the run's ``fab_hash``), and the run's
   ``fab_id`` and ``fab_version`` (from which flwr derives the folder it loads the app from), must
   all agree with those bytes and with the bundle's own ``pyproject.toml`` - otherwise flwr would
   load the app from another folder than the one the checked bytes went to;
3. some file in the trusted-apps folder carries a valid Ed25519 signature over that hash under the
   consortium's verify key configured at the node. Any other file there approves nothing and blocks nothing
   (a foreign signature, hostile JSON, a FIFO or a huge file is skipped).

The node runs ClientApps only: flwr's SuperExec would also start ``flwr-agentapp`` (for a run whose bundle
names an ``agentapp``: it installs and imports the bundle with no check) and the other task commands; the
node launcher puts a refusal under each of those names. It also refuses runtime dependency installation
(``uv sync`` of the app's *named* dependencies from an index: bytes nobody signed).

On any failure the bundle is refused: nothing of it is installed or imported, the round gets an error
reply that names why, and the node's log holds one line naming the hash and the reason.

What an attacker on the SuperLink or its Control API can then do, and cannot.
* Cannot run code of their own on a node: an unsigned bundle, one signed by any other key, a signed
  bundle with one byte changed, or a run that names another app's folder, is refused.
* Can still submit a run of a *signed* bundle with a run config of their choosing (``flwr run
  --run-config``): the consortium's app then runs with those values. The app's own checks hold
  whatever the config says - each node's own ledger and budget, its registry copy, its state
  directory - but the config can, e.g., start a run nobody asked for, which spends budget.
* Can start a run, of any bundle, in the *run series* of a running consortium run (``StartRun`` takes
  any series id of the federation): flwr keeps one node context per series, so the SuperNode process
  replaces the running run's context (run id, run config) before any check. The verifier gives the
  approved run's ClientApp back its own run id and run config
  (:func:`simulation.engines.flower.verified_clientapp.pin_context_to_run`), and the app seals its session under
  its run id, so the stranger's run config never reaches it (``tests/test_attack21_run_series.py``).
* Can list runs, stop them, or leave nodes idle; the SuperLink remains trusted for scheduling.

Residual risk. Control API user authentication is enterprise-only in flwr 1.42: whoever reaches the
API can still submit runs, which the nodes now refuse to execute unless signed. Revoking an app means
deleting its signature file at every node (there is no revocation list). A node started without the
verifier (plain ``flower-supernode``) checks nothing; the DPIA states, per node, whether its app was
verified (:func:`verified_app`, as the node reported at registration). Installed folders cannot be
planted: flwr reuses an installed folder of the same name, version and 8-hex-digit hash prefix without
reinstalling, so each verified ClientApp process installs into a fresh ``FLWR_HOME`` of its own
(:func:`simulation.engines.flower.verified_clientapp.private_flwr_home`), where nothing exists before the
install of the approved bytes (``tests/test_attack21_node_guards.py``). Nor does anything here protect a node that shares
the SuperLink's host and user: a submitted ServerApp runs there unchecked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import secagg
from secagg.crypto import KEY_BYTES

from ...errors import SimulationInputError

__all__ = ["AppTrust", "AppApproval", "AppNotTrustedError", "AppTrustError", "fab_sha256", "sign_fab",
           "signature_document", "write_signature", "load_verify_key", "verified_app", "record_verified",
           "SIGNATURE_FORMAT", "DOMAIN", "APP_KEY_NAME"]

SIGNATURE_FORMAT = "secagg-flower-app-signature/v1"
DOMAIN = b"secagg flower app bundle v1\x00"
#: ``secagg flower app-key`` writes DIR/APP_KEY_NAME.ed25519 (signing key) and DIR/APP_KEY_NAME.pub.
APP_KEY_NAME = "consortium-apps"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AppTrustError(secagg.InvalidInputError, SimulationInputError):
    """A verify key, signature file or trusted-apps folder that cannot be used."""


class AppNotTrustedError(Exception):
    """The node refuses an app bundle: not signed by the consortium, or not the bundle the run names.

    A failed check at the node, not bad input to a command (:mod:`simulation.errors`)."""


@dataclass(frozen=True)
class AppApproval:
    """A bundle the node verified: its SHA-256 and the verify key that signed it (both hex)."""

    fab_sha256: str
    verify_key: str
    signature_file: str


def fab_sha256(content: bytes) -> str:
    """The SHA-256 of a bundle's bytes, hex: what flwr calls the FAB hash."""
    return hashlib.sha256(content).hexdigest()


def _message(digest: str) -> bytes:
    return DOMAIN + bytes.fromhex(digest)


def sign_fab(content: bytes, seed: bytes) -> dict:
    """The signature document of a bundle under the Ed25519 signing key ``seed``."""
    from secagg.crypto import sign
    import nacl.signing

    digest = fab_sha256(content)
    verify_key = bytes(nacl.signing.SigningKey(seed).verify_key).hex()
    return signature_document(digest, sign(seed, _message(digest)).hex(), verify_key)


def signature_document(digest: str, signature: str, verify_key: str) -> dict:
    return {"format": SIGNATURE_FORMAT, "fab_sha256": digest, "verify_key": verify_key, "signature": signature}


def write_signature(document: dict, directory) -> Path:
    """Write ``DIRECTORY/<fab_sha256>.json`` (public; replaces an older signature of the same bundle)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{document['fab_sha256']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_verify_key(text_or_path) -> bytes:
    """The consortium's app verify key: 64 hex characters, given directly or in a file (``.pub``)."""
    text = str(text_or_path).strip()
    if not _HEX64.match(text.lower()):
        path = Path(text)
        try:
            text = path.read_bytes()[:4096].decode("ascii", errors="replace").strip()
        except OSError as exc:
            raise AppTrustError(f"app verify key {path}: {exc.strerror or exc}") from None
        if not _HEX64.match(text.lower()):
            raise AppTrustError(f"app verify key {path} must hold {2 * KEY_BYTES} hex characters; it does not")
    return bytes.fromhex(text)


def _pyproject_identity(content: bytes) -> tuple[str, str]:
    """``(publisher/name, version)`` from the bundle's own ``pyproject.toml`` (read as data, never run)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            config = tomllib.loads(archive.read("pyproject.toml").decode("utf-8"))
        return f"{config['tool']['flwr']['app']['publisher']}/{config['project']['name']}", str(
            config["project"]["version"])
    except (zipfile.BadZipFile, KeyError, TypeError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "", ""


def _read_signature_file(path: Path, limit: int = 64 * 1024) -> str:
    """A small regular file's text; a FIFO, device or huge file raises OSError/ValueError instead of blocking
    or filling memory (opened non-blocking, checked with fstat: no window to swap the file in between)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} is larger than a signature file")
    return data.decode("utf-8")


@dataclass(frozen=True)
class AppTrust:
    """A node's trust in app bundles: the consortium's verify key and the folder of signature files."""

    verify_key: bytes
    signatures: Path

    @classmethod
    def load(cls, verify_key, signatures) -> "AppTrust":
        key = load_verify_key(verify_key)
        folder = Path(signatures)
        if not folder.is_dir():
            raise AppTrustError(f"trusted-apps folder {folder} does not exist (the consortium's signature files go "
                                "there)")
        return cls(key, folder.resolve())

    def fingerprint(self) -> str:
        return self.verify_key.hex()[:16]

    def check(self, content: bytes, *, claimed_hash: str | None, run_fab_hash: str | None = None,
              run_fab_id: str | None = None, run_fab_version: str | None = None) -> AppApproval:
        """Approve ``content`` or raise :class:`AppNotTrustedError` (one line: the hash and why).

        ``claimed_hash`` (``fab.hash_str``) and the run's ``fab_hash``/``fab_id``/``fab_version`` are what
        the SuperLink says about the bundle; each must match the bytes (``None``: not known, refused)."""
        from secagg.crypto import VerificationError, verify_signature

        digest = fab_sha256(content)
        where = f"app bundle sha256 {digest}"
        if claimed_hash != digest or (run_fab_hash is not None and run_fab_hash != digest):
            raise AppNotTrustedError(f"{where}: the SuperLink names it {claimed_hash or 'nothing'} (run: "
                                     f"{run_fab_hash or 'nothing'}): not the bundle it sent, refused")
        if run_fab_id is not None or run_fab_version is not None:
            fab_id, version = _pyproject_identity(content)
            if (run_fab_id, run_fab_version) != (fab_id, version):
                raise AppNotTrustedError(f"{where}: the run names app {run_fab_id} {run_fab_version}, the bundle is "
                                         f"{fab_id or '(no valid pyproject.toml)'} {version}: refused")
        foreign = []
        for path in sorted(self.signatures.glob("*.json")):
            try:
                document = json.loads(_read_signature_file(path))
                if document.get("format") != SIGNATURE_FORMAT or document.get("fab_sha256") != digest:
                    continue
                signature = bytes.fromhex(str(document["signature"]))
            except (OSError, ValueError, KeyError, AttributeError, RecursionError):
                continue  # not a signature file of ours (or unreadable): it approves nothing, blocks nothing
            try:
                verify_signature(self.verify_key, _message(digest), signature)
            except VerificationError:
                foreign.append(f"{path.name} (signed by {str(document.get('verify_key', '?'))[:16]})")
                continue
            return AppApproval(digest, self.verify_key.hex(), str(path))
        if foreign:
            raise AppNotTrustedError(f"{where}: its signature does not verify under the consortium's app key "
                                     f"{self.fingerprint()}: {', '.join(foreign)}: refused")
        raise AppNotTrustedError(f"{where}: not signed by the consortium's app key {self.fingerprint()} (no signature "
                                 f"for it in {self.signatures}): refused")


# The approval of the bundle running in this process, set by the verifier just before flwr installs it, so
# that the app can report it (``client_app.node_facts``). A module global, not an environment variable: an
# environment variable could be inherited from the operator's shell by a node that verified nothing.
_VERIFIED: AppApproval | None = None


def record_verified(approval: AppApproval | None) -> None:
    global _VERIFIED
    _VERIFIED = approval


def verified_app() -> AppApproval | None:
    """The approval of the bundle this process runs, or ``None`` when no verifier checked it."""
    return _VERIFIED
