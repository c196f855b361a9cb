"""A site's Flower node-authentication key and its place in the registry (issues 18 and 21).

The invariants: ``secagg keys new`` writes a node key that flwr 1.42's own loaders accept (the
SuperNode's private key, the SuperLink's registered public key), private to its owner and never
overwritten; the registry binds each site's node key to its verify key, one key per site and one
site per key; :func:`same_node_key` matches the key the SuperLink holds for a node against the
registry's line, and nothing else. The real-process check (a SuperLink with
``--enable-supernode-auth`` refusing a stranger) is in tests/test_flower.py.
"""

from __future__ import annotations

import json

import pytest

from simulation.cli import main
from simulation.federation.identity import (IdentityError, add_to_registry, load_node_keys, load_registry, write_identity,
                                 write_site_node_key)
from simulation.federation.node_keys import NodeKeyError, parse_node_public_key, same_node_key


def test_keys_new_writes_a_private_node_key_beside_the_identity_and_registers_both(tmp_path, capsys):
    registry, out = tmp_path / "registry.json", tmp_path / "keys"
    assert main(["keys", "new", "--site", "site-1", "--out", str(out), "--registry", str(registry), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    private, public = out / "site-1.flower-auth", out / "site-1.flower-auth.pub"
    assert answer["node_private_key"] == str(private) and answer["node_public_key_file"] == str(public)
    assert private.stat().st_mode & 0o777 == 0o600
    assert public.read_text().strip() == answer["node_key"]
    assert load_node_keys(registry) == {"site-1": answer["node_key"]}
    assert load_registry(registry)["site-1"].hex() == answer["verify_key"]  # the verify key is unchanged
    raw = json.loads(registry.read_text())["site-1"]
    assert raw == {"verify_key": answer["verify_key"], "node_key": answer["node_key"]}


def test_the_node_key_is_what_flwr_loads(tmp_path):
    pytest.importorskip("flwr")
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key

    key = write_site_node_key(tmp_path, "site-1")
    # flower-supernode --auth-supernode-private-key reads it like this (flwr 1.42).
    private = load_ssh_private_key(key.private_key_path.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    # flwr supernode register reads the .pub file into the bytes the SuperLink keeps for the node.
    registered = try_load_public_key(key.public_key_path)
    assert same_node_key(key.public_key, registered)
    assert not same_node_key(write_site_node_key(tmp_path, "site-2").public_key, registered)


def test_same_node_key_refuses_a_missing_or_unreadable_key(tmp_path):
    line = write_site_node_key(tmp_path, "site-1").public_key
    assert not same_node_key(line, b"")
    assert not same_node_key(line, b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")


def test_a_node_key_is_never_overwritten(tmp_path):
    first = write_site_node_key(tmp_path, "site-1")
    with pytest.raises(IdentityError, match="already exists"):
        write_site_node_key(tmp_path, "site-1")
    assert first.public_key_path.read_text().strip() == first.public_key


ED25519_SSH = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize("line", ["", "not a key", ED25519_SSH])
def test_only_a_nist_curve_ec_key_is_a_node_key(line):
    with pytest.raises(NodeKeyError):
        parse_node_public_key(line)


def test_the_registry_binds_one_node_key_to_one_site(tmp_path):
    registry = tmp_path / "registry.json"
    one, two = write_identity(tmp_path, "site-1"), write_identity(tmp_path, "site-2")
    key_one, key_two = write_site_node_key(tmp_path, "site-1"), write_site_node_key(tmp_path, "site-2")
    add_to_registry(registry, one, key_one.public_key)
    add_to_registry(registry, two)  # a site without a node key keeps the plain form
    assert json.loads(registry.read_text())["site-2"] == two.verify_key.hex()
    assert load_node_keys(registry) == {"site-1": key_one.public_key}
    with pytest.raises(IdentityError, match="already has this node key"):
        add_to_registry(registry, two, key_one.public_key)
    with pytest.raises(IdentityError, match="another node key"):
        add_to_registry(registry, one, key_two.public_key)
    add_to_registry(registry, one)  # confirming the verify key keeps the node key
    add_to_registry(registry, two, key_two.public_key)
    assert load_node_keys(registry) == {"site-1": key_one.public_key, "site-2": key_two.public_key}


@pytest.mark.parametrize("entry, message", [
    ({"verify_key": "ab" * 32, "node_key": "not a key"}, "node key"),
    ({"verify_key": "ab" * 32, "node_key": 7}, "node key"),
    ({"verify_key": "ab" * 32, "extra": 1}, "unknown fields"),
    ({"node_key": None}, "hex characters"),
])
def test_a_malformed_registry_entry_is_refused(tmp_path, entry, message):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"site-1": entry}))
    with pytest.raises(IdentityError, match=message):
        load_registry(path)


def test_two_sites_with_one_node_key_are_refused(tmp_path):
    line = write_site_node_key(tmp_path, "site-1").public_key
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"site-1": {"verify_key": "ab" * 32, "node_key": line},
                                "site-2": {"verify_key": "cd" * 32, "node_key": line}}))
    with pytest.raises(IdentityError, match="share one node key"):
        load_node_keys(path)


def test_keys_node_auth_adds_a_node_key_to_an_existing_site(tmp_path, capsys):
    registry, out = tmp_path / "registry.json", tmp_path / "keys"
    identity = write_identity(out, "site-1")
    add_to_registry(registry, identity)  # a site registered before node keys existed
    assert main(["keys", "node-auth", "--site", "site-1", "--out", str(out), "--registry", str(registry),
                 "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert load_node_keys(registry) == {"site-1": answer["node_key"]}
    assert load_registry(registry) == {"site-1": identity.verify_key}
    # A site with no identity here, or whose identity the registry does not hold, gets no node key.
    assert main(["keys", "node-auth", "--site", "site-2", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    other = write_identity(tmp_path / "other", "site-1")
    assert main(["keys", "node-auth", "--site", "site-1", "--out", str(other.signing_key_path.parent),
                 "--registry", str(registry)]) == 2
    assert "does not hold" in capsys.readouterr().err
    assert not (other.signing_key_path.parent / "site-1.flower-auth").exists()


def test_register_nodes_needs_node_keys_in_the_registry(tmp_path, capsys):
    pytest.importorskip("flwr")
    registry = tmp_path / "registry.json"
    add_to_registry(registry, write_identity(tmp_path, "site-1"))
    assert main(["keys", "register-nodes", "--registry", str(registry)]) == 2
    assert "names no node keys" in capsys.readouterr().err


def test_register_nodes_names_an_unknown_connection_and_an_unreachable_superlink(tmp_path, capsys, monkeypatch):
    pytest.importorskip("flwr")
    import socket

    registry, out = tmp_path / "registry.json", tmp_path / "keys"
    assert main(["keys", "new", "--site", "site-1", "--out", str(out), "--registry", str(registry)]) == 0
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "loop"\n\n[superlink.loop]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    monkeypatch.setenv("FLWR_HOME", str(home))
    capsys.readouterr()
    assert main(["keys", "register-nodes", "--registry", str(registry), "--superlink", "nope"]) == 2
    assert "'nope' not found" in capsys.readouterr().err
    assert main(["keys", "register-nodes", "--registry", str(registry)]) == 1
    err = capsys.readouterr().err.strip()
    assert "FAILED" in err and "unavailable" in err and len(err.splitlines()) == 1
