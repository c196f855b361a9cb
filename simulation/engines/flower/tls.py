"""Throwaway TLS certificates for running the Flower deployment engine on loopback.

:func:`write_loopback_certificates` creates, at run time and with nothing but the
``cryptography`` library (no ``openssl`` command, nothing downloaded), a fresh private
certificate authority and a server certificate it signs for ``127.0.0.1``, ``::1`` and
``localhost``. Every call makes new keys (``cryptography``'s generators draw on
``os.urandom``); the CA's private key is never written - it signs once and is dropped -
so no further certificate can be issued under that CA.

**Threat model.** These certificates are for tests and demos where SuperLink,
SuperNodes and the ``flwr`` CLI all run on one machine. They give the loopback traffic
the same code path as production (TLS on, server certificate verified against a pinned
root, no ``--insecure``) and keep other local users from reading it, but they
authenticate nothing beyond "the process that holds ``server.key`` on this host": the key
file is protected only by its 0600 mode. They are *not* a deployment PKI. Between the
coordinator and the hospitals, the SuperLink's certificate comes from the hospitals'
PKI (with the SuperLink's real DNS name and an operated CA, revocation and rotation).
TLS authenticates only the SuperLink: the SuperNodes authenticate with their own keys
(``flower-superlink --enable-supernode-auth``, which flwr allows only over TLS, and
``flower-supernode --auth-supernode-private-key``), made beside each site's identity by
``secagg keys new`` and registered from the consortium's registry by ``secagg keys
register-nodes`` (:mod:`simulation.federation.node_keys`; the app README's "Node authentication" section
and ``tests/test_flower.py`` run it over these loopback certificates). Never ship these
files or copy this CA into a trust store.

**What Flower (checked against flwr 1.42) does with each file.** In flwr 1.42 the
SuperLink serves its Fleet, Control and Runtime (ServerAppIo) APIs over HTTPS on one
``--host``/``--port`` (uvicorn, Python ``ssl``); the ``flwr`` CLI and the SuperNode are
``httpx`` clients that verify the server certificate's name against the address they
dial, so dial ``127.0.0.1:PORT`` (or ``[::1]:PORT`` / ``localhost:PORT``; all three are in
the certificate).

* ``server_cert`` (PEM, the leaf only) - ``flower-superlink --ssl-certfile``; optionally
  also ``flower-supernode --ssl-certfile`` to put the SuperNode's own Runtime API (the
  ClientApp's ``--port``) under TLS too.
* ``server_key`` (PEM, unencrypted PKCS#8, EC P-256) - ``--ssl-keyfile`` beside it.
* ``ca_cert`` (PEM) - ``flower-superlink --ssl-ca-certfile`` (and ``flower-supernode
  --ssl-ca-certfile`` with the pair above): the SuperLink (SuperNode) passes it as
  ``--root-certificates`` to the ``flower-superexec`` it starts, which hands it to the
  ServerApp (ClientApp) processes; ``flower-supernode --root-certificates`` to verify the
  SuperLink's Fleet API; and ``root-certificates = "<absolute path>"`` in the ``flwr``
  CLI's connection (``[superlink.<name>]`` in ``$FLWR_HOME/config.toml``, without
  ``insecure``) for the Control API.

This module does not import ``flwr``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LoopbackCertificates", "write_loopback_certificates", "LOOPBACK_NAMES"]

#: What the server certificate is valid for (SubjectAlternativeName).
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")

_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class LoopbackCertificates:
    """Paths of the PEM files :func:`write_loopback_certificates` wrote."""

    ca_cert: Path
    """The throwaway CA's certificate: ``--ssl-ca-certfile`` / ``--root-certificates``."""
    server_cert: Path
    """The server certificate: ``--ssl-certfile``."""
    server_key: Path
    """The server's private key (mode 0600): ``--ssl-keyfile``."""


def write_loopback_certificates(directory: str | os.PathLike[str], *, days: int = 30) -> LoopbackCertificates:
    """Create a fresh CA and a loopback server certificate under ``directory``.

    Writes ``ca.pem``, ``server.pem`` and ``server.key`` (0600) into ``directory``
    (created if missing, mode 0700 when new); existing files of those names are replaced.
    Both certificates are valid from five minutes ago for ``days`` days.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - _CLOCK_SKEW, now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secagg loopback test CA (throwaway)")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
            x509.DNSName("localhost"),
        ]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    paths = LoopbackCertificates(ca_cert=directory / "ca.pem", server_cert=directory / "server.pem",
                                 server_key=directory / "server.key")
    _write(paths.server_key, server_key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), 0o600)
    _write(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """CA: keyCertSign + cRLSign; server (ECDSA): digitalSignature."""
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the start (no window with wider permissions)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have narrowed it (never widened)
