"""The DPIA states a Flower run's deployment as it was (issue 21): TLS on or off, active mode, the
registry, where the ledgers and keys live and whether the keys are passphrase-protected - each read
from what the run recorded (the ServerApp's command line, the run config, the nodes' reports), so
each setting changes the text. In-memory grid (tests/flower_harness.py): the real ServerApp and
ClientApp code; the ServerApp's command line is set as Flower's SuperExec starts it.
"""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("flwr")

from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402

from simulation.reports.dpia import write_dpia  # noqa: E402
from simulation.engines.flower import client_app  # noqa: E402
from simulation.engines.flower.deploy import transport_security  # noqa: E402
from simulation.engines.flower.server_app import DEFAULTS, run_federation  # noqa: E402
from simulation.federation.identity import add_to_registry, write_identity  # noqa: E402

from .flower_harness import InMemoryGrid, as_node  # noqa: E402

SITES = ("site-1", "site-2", "site-3")
RUN = {"num-sites": 3, "rounds": 1, "image-size": 16, "epsilon": 8.0, "local-steps": 2, "sample-rate": 0.25,
       "update": "synthetic", "node-wait": 5.0}
SERVERAPP = "/opt/venv/bin/flwr-serverapp"


def _run(tmp_path, monkeypatch, argv, *, active: bool, passphrase: bool) -> tuple[dict, str]:
    registry = tmp_path / "registry.json"
    nodes = {}
    for i, site in enumerate(SITES):
        state = tmp_path / f"node-{site}"
        identity = write_identity(state, site, passphrase=b"pw" if passphrase else None)
        add_to_registry(registry, identity)
        nodes[100 + i] = {"partition-id": i, "site": site, "state-dir": str(state), "epsilon-budget": 8.0}
        if active:
            nodes[100 + i] |= {"signing-key": str(identity.signing_key_path), "registry": str(registry)}
    monkeypatch.setenv("SECAGG_KEY_PASSPHRASE", "pw")
    monkeypatch.setattr(sys, "argv", argv)
    run = DEFAULTS | RUN | {"out": str(tmp_path / "run"), "registry": str(registry), "active": active}
    with as_node(SUPERLINK_NODE_ID):
        run_federation(InMemoryGrid(client_app.app, nodes, run), run)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    path, _ = write_dpia(tmp_path / "run", fmt="md")
    return summary["deployment"], " ".join(path.read_text().split())


def test_a_passive_run_without_tls_and_with_plain_keys(tmp_path, monkeypatch):
    deployment, text = _run(tmp_path, monkeypatch, [SERVERAPP, "--serverappio-api-address", "127.0.0.1:9091",
                                                    "--token", "t", "--insecure"], active=False, passphrase=False)
    assert deployment["tls"] is False and deployment["active_mode"] is False
    assert "Transport: TLS OFF" in text and "TLS ON" not in text
    assert "Active mode (signed keys and the ConsistencyCheck round against a malicious coordinator): OFF" in text
    for site in SITES:
        node = deployment["nodes"][site]
        assert node["ledger"] == str(tmp_path / f"node-{site}" / "ledger")
        assert node["signing_key"] == str(tmp_path / f"node-{site}" / f"{site}.ed25519")
        assert node["key_protected"] is False and node["registry"] is None
        assert f"{site} (as its node reported at registration): own ledger {node['ledger']}" in text
    assert "(not passphrase-protected: a copy of the disk holds the key)" in text
    # In-process, no verifier checked the app bundle: the DPIA says so.
    assert all(deployment["nodes"][site]["app_verified"] is False for site in SITES)
    assert ("App verification at the nodes (a verifying node runs only consortium-signed app bundles; as the nodes "
            "reported at registration; it does not protect a node that shares the SuperLink's host and user, where a "
            "submitted ServerApp runs unchecked): OFF: no node reported checking") in text
    assert f"The coordinator's privacy ledger: {tmp_path / 'run' / 'ledger.sqlite'}" in text
    assert "each on its own machine" not in text and "where the consortium configures it" not in text


def test_an_active_run_over_tls_with_protected_keys(tmp_path, monkeypatch):
    deployment, text = _run(tmp_path, monkeypatch, [SERVERAPP, "--token", "t", "--root-certificates", "/c/ca.pem"],
                            active=True, passphrase=True)
    assert deployment["tls"] is True and deployment["active_mode"] is True
    assert "Transport: TLS ON" in text and "with --root-certificates" in text and "TLS OFF" not in text
    assert "against a malicious coordinator): ON" in text
    assert all(deployment["nodes"][site]["key_protected"] for site in SITES)
    assert text.count("(passphrase-protected)") == 3 and "not passphrase-protected" not in text
    assert f"its own registry copy {tmp_path / 'registry.json'}" in text


def test_app_verification_is_stated_as_the_nodes_report_it(tmp_path, monkeypatch):
    """The nodes' ClientApp processes report the approval the verifier recorded in them (in-process here: one
    recorded approval for every node)."""
    from simulation.engines.flower import app_trust

    app_trust.record_verified(app_trust.AppApproval("ab" * 32, "cd" * 32, "/n/trusted-apps/x.json"))
    try:
        deployment, text = _run(tmp_path, monkeypatch, [SERVERAPP, "--token", "t"], active=False, passphrase=False)
    finally:
        app_trust.record_verified(None)
    assert all(deployment["nodes"][site]["app_sha256"] == "ab" * 32 for site in SITES)
    assert deployment["app_verification"].startswith("ON: ")
    assert (f"submitted ServerApp runs unchecked): ON: the node ran the app bundle sha256 {'ab' * 32} only after verifying its signature "
            f"under the consortium's app key {'cd' * 8}.") in text


def test_tls_is_not_claimed_when_the_serverapp_did_not_run_under_flower():
    assert transport_security(["/usr/bin/python", "-m", "pytest"])["tls"] is None
    assert transport_security([])["tls"] is None
    assert transport_security([SERVERAPP, "--insecure"])["tls"] is False
    assert transport_security([SERVERAPP])["tls"] is True


def test_a_run_outside_flwr_serverapp_says_tls_was_not_observed(tmp_path, monkeypatch):
    _, text = _run(tmp_path, monkeypatch, ["pytest"], active=False, passphrase=False)
    assert "Transport: TLS not observed by this run" in text
