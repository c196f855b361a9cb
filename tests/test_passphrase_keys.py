"""Signing keys stored under a passphrase (issue 21): Argon2id + SecretBox, passphrase from the environment."""

from __future__ import annotations

import json
import os

import pytest

from simulation.cli import build_parser, main
from simulation.federation.identity import load_registry, load_signing_key, write_identity
from simulation.federation.passphrase import FORMAT, PassphraseError, is_sealed, open_seed, seal_seed

SEED = bytes(range(32))


def test_a_sealed_seed_opens_with_its_passphrase_only():
    text = seal_seed(SEED, b"correct horse")
    assert is_sealed(text) and SEED.hex() not in text
    stored = json.loads(text)
    assert stored["format"] == FORMAT and stored["kdf"] == "argon2id"
    assert open_seed(text, b"correct horse", "k") == SEED
    with pytest.raises(PassphraseError, match="^wrong passphrase for k"):
        open_seed(text, b"correct horsf", "k")


def test_every_seal_draws_a_fresh_salt_and_nonce():
    first, second = json.loads(seal_seed(SEED, b"pw")), json.loads(seal_seed(SEED, b"pw"))
    assert first["salt"] != second["salt"] and first["box"][:48] != second["box"][:48]


def test_an_altered_file_is_refused():
    stored = json.loads(seal_seed(SEED, b"pw"))
    box = bytearray.fromhex(stored["box"])
    box[-1] ^= 1
    with pytest.raises(PassphraseError, match=r"wrong passphrase for k \(or the file was altered\)"):
        open_seed(json.dumps(stored | {"box": box.hex()}), b"pw", "k")
    for bad in ({"memlimit": 2 ** 40}, {"opslimit": 0}, {"salt": "00"}, {"format": "other"}, {"box": "zz"}):
        with pytest.raises(PassphraseError, match="k (states|is not)"):
            open_seed(json.dumps(stored | bad), b"pw", "k")


def test_an_empty_passphrase_is_refused():
    with pytest.raises(PassphraseError):
        seal_seed(SEED, b"")


def test_a_protected_identity_loads_with_the_passphrase_from_the_environment(tmp_path, monkeypatch):
    identity = write_identity(tmp_path, "site-1", passphrase=b"s3cret passphrase")
    text = identity.signing_key_path.read_text()
    assert is_sealed(text) and oct(identity.signing_key_path.stat().st_mode & 0o777) == "0o600"
    monkeypatch.delenv("SECAGG_KEY_PASSPHRASE", raising=False)
    with pytest.raises(PassphraseError, match="protected by a passphrase: put it in the environment variable "
                                              "SECAGG_KEY_PASSPHRASE"):
        load_signing_key(identity.signing_key_path)
    monkeypatch.setenv("SECAGG_KEY_PASSPHRASE", "wrong")
    with pytest.raises(PassphraseError, match="wrong passphrase for signing key"):
        load_signing_key(identity.signing_key_path)
    monkeypatch.setenv("SITE1_PW", "s3cret passphrase")
    assert load_signing_key(identity.signing_key_path, passphrase_env="SITE1_PW").verify_key == identity.verify_key


def test_a_protected_key_with_a_wider_mode_is_still_refused(tmp_path, monkeypatch):
    identity = write_identity(tmp_path, "site-1", passphrase=b"pw")
    os.chmod(identity.signing_key_path, 0o640)
    monkeypatch.setenv("SECAGG_KEY_PASSPHRASE", "pw")
    with pytest.raises(Exception, match="mode 0640"):
        load_signing_key(identity.signing_key_path)


def test_keys_new_encrypts_under_the_passphrase_of_an_environment_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MY_PW", "a long hospital passphrase")
    registry = tmp_path / "registry.json"
    assert main(["keys", "new", "--site", "site-1", "--out", str(tmp_path / "k"), "--registry", str(registry),
                 "--passphrase-env", "MY_PW"]) == 0
    assert "$MY_PW" in capsys.readouterr().out
    path = tmp_path / "k" / "site-1.ed25519"
    assert is_sealed(path.read_text())
    assert load_signing_key(path, passphrase_env="MY_PW").verify_key == load_registry(registry)["site-1"]
    # Unset or empty variable: one line, exit 2, no key written.
    monkeypatch.setenv("EMPTY_PW", "")
    assert main(["keys", "new", "--site", "site-2", "--out", str(tmp_path / "k"), "--passphrase-env", "EMPTY_PW"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "EMPTY_PW holds no passphrase" in err
    assert not (tmp_path / "k" / "site-2.ed25519").exists()


def test_no_option_takes_a_passphrase_on_the_command_line():
    keys = build_parser()._subparsers._group_actions[0].choices["keys"]
    new = keys._subparsers._group_actions[0].choices["new"]
    options = {o for action in new._actions for o in action.option_strings}
    assert "--passphrase-env" in options
    assert not [o for o in options if "passphrase" in o and o != "--passphrase-env"]


def test_a_node_signs_with_its_protected_key_and_a_wrong_passphrase_leaves_it_out(tmp_path, monkeypatch, capfd):
    pytest.importorskip("flwr")
    from flwr.common.constant import SUPERLINK_NODE_ID

    from simulation.engines.flower import client_app
    from simulation.engines.flower.server_app import DEFAULTS, run_federation
    from simulation.federation.identity import add_to_registry

    from .flower_harness import InMemoryGrid, as_node

    registry = tmp_path / "registry.json"
    nodes = {}
    for i, site in enumerate(("site-1", "site-2", "site-3")):
        state = tmp_path / f"node-{site}"
        identity = write_identity(state, site, passphrase=f"pw of {site}".encode())
        add_to_registry(registry, identity)
        variable = f"PW_{i}"
        monkeypatch.setenv(variable, f"pw of {site}" if site != "site-3" else "not site-3's passphrase")
        nodes[100 + i] = {"partition-id": i, "site": site, "state-dir": str(state), "epsilon-budget": 8.0,
                          "signing-key": str(identity.signing_key_path), "registry": str(registry),
                          "passphrase-env": variable}
    run = DEFAULTS | {"num-sites": 2, "rounds": 1, "image-size": 16, "local-steps": 2, "sample-rate": 0.25,
                      "update": "synthetic", "node-wait": 5.0, "active": True, "registry": str(registry),
                      "out": str(tmp_path / "run")}
    with as_node(SUPERLINK_NODE_ID):
        summary = run_federation(InMemoryGrid(client_app.app, nodes, run), run)
    assert summary["rounds_completed"] == 1 and sorted(summary["sites"]) == ["site-1", "site-2"]
    assert "wrong passphrase for signing key" in capfd.readouterr().err
