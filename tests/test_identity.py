"""Site identities and the consortium's registry (active mode across machines).

The invariant: an honest site accepts a session only if every participant's verify key is the
one in *its own* registry, so a coordinator cannot substitute identities; key files are
readable by their owner only.
"""

from __future__ import annotations

import json
import os

import pytest

import secagg
from simulation.cli import main
from simulation.federation.identity import (IdentityError, add_to_registry, check_session_keys, load_registry, load_signing_key,
                                 write_identity)


def _registry(tmp_path, sites=("site-1", "site-2", "site-3")):
    path = tmp_path / "registry.json"
    identities = {site: write_identity(tmp_path / "keys", site) for site in sites}
    for identity in identities.values():
        add_to_registry(path, identity)
    return path, identities


def test_an_identity_round_trips_and_is_private(tmp_path):
    identity = write_identity(tmp_path, "site-1")
    assert oct(identity.signing_key_path.stat().st_mode & 0o777) == oct(0o600)
    loaded = load_signing_key(identity.signing_key_path)
    assert loaded.verify_key == identity.verify_key
    signature = secagg.crypto.sign(loaded.seed, b"advertise")
    secagg.crypto.verify_signature(identity.verify_key, b"advertise", signature)


def test_an_identity_is_never_overwritten(tmp_path):
    first = write_identity(tmp_path, "site-1")
    with pytest.raises(IdentityError, match="already exists"):
        write_identity(tmp_path, "site-1")
    assert load_signing_key(first.signing_key_path).verify_key == first.verify_key


def test_a_key_file_others_can_read_is_refused(tmp_path):
    identity = write_identity(tmp_path, "site-1")
    os.chmod(identity.signing_key_path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_signing_key(identity.signing_key_path)


@pytest.mark.parametrize("content", ["", "zz" * 32, "ab" * 31, "ab" * 33])
def test_a_malformed_key_file_is_refused(tmp_path, content):
    path = tmp_path / "k.ed25519"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="hex characters"):
        load_signing_key(path)


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ("[]", "must map"),
    ('{"site-1": "abcd"}', "hex characters"),
    ('{"site 1": "' + "ab" * 32 + '"}', "site name"),
    ('{"a": "' + "ab" * 32 + '", "b": "' + "ab" * 32 + '"}', "share one verify key"),
])
def test_a_malformed_registry_is_refused(tmp_path, content, message):
    path = tmp_path / "registry.json"
    path.write_text(content)
    with pytest.raises(IdentityError, match=message):
        load_registry(path)


def test_a_registry_does_not_take_a_second_key_for_a_site(tmp_path):
    path, identities = _registry(tmp_path, ("site-1",))
    impostor = write_identity(tmp_path / "elsewhere", "site-1")
    with pytest.raises(IdentityError, match="another key"):
        add_to_registry(path, impostor)
    assert load_registry(path)["site-1"] == identities["site-1"].verify_key


def test_the_session_keys_must_be_the_registry_keys(tmp_path):
    path, identities = _registry(tmp_path)
    registry = load_registry(path)
    sites = {1: "site-1", 2: "site-2", 3: "site-3"}
    honest = {cid: identities[site].verify_key for cid, site in sites.items()}
    check_session_keys(honest, sites, registry)
    # A coordinator substitutes its own key for site-2 ...
    forged = honest | {2: secagg.crypto.SigningKeyPair.generate().verify_key}
    with pytest.raises(secagg.VerificationError, match="site-2"):
        check_session_keys(forged, sites, registry)
    # ... or swaps two sites' keys, or invents a site, or names one site twice.
    with pytest.raises(secagg.VerificationError):
        check_session_keys(honest | {1: honest[2], 2: honest[1]}, sites, registry)
    with pytest.raises(secagg.VerificationError, match="not in this site's registry"):
        check_session_keys(honest | {4: honest[3]}, sites | {4: "site-4"}, registry)
    with pytest.raises(secagg.VerificationError, match="two clients"):
        check_session_keys(honest, sites | {3: "site-1"}, registry)
    with pytest.raises(secagg.VerificationError, match="different clients"):
        check_session_keys({1: honest[1]}, sites, registry)


def test_cli_keys_new_writes_the_key_and_registers_it(tmp_path, capsys):
    registry = tmp_path / "registry.json"
    assert main(["keys", "new", "--site", "site-1", "--out", str(tmp_path / "keys"), "--registry", str(registry),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["registered_sites"] == ["site-1"]
    assert load_registry(registry)["site-1"].hex() == out["verify_key"]
    assert main(["keys", "new", "--site", "site-1", "--out", str(tmp_path / "keys")]) == 2
    assert "already exists" in capsys.readouterr().err
