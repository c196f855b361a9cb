"""Issue 9: the federated round over Flower, through Flower's own tooling (``flwr run``).

* deployment engine over **TLS**, in **active mode**: a SuperLink and 3 SuperNodes on
  loopback, with certificates made at run time (:mod:`simulation.engines.flower.tls`) and each
  site's Ed25519 identity checked against the nodes' own registry (:mod:`simulation.federation.identity`);
* simulation engine: a SuperLink in ``--simulation`` mode with 3 simulated nodes (Ray).

Each run: three sites, two rounds; in round 1 site-3 stops answering at
MaskedInputCollection and Flower's timeout (``send_and_receive(timeout=...)``) decides it
dropped. Checked: the coordinator's run directory (metrics, ledger, checkpoint, summary),
each node's own ledger, and the global model against the in-process engine run on the
same inputs with the same dropout (and against the FedAvg computed in numpy), up to the
fixed-point rounding. A third run trains with DP-SGD on real NIfTI data at the nodes,
with one node whose own budget is too small: it refuses the round and spends nothing.
The simulation-engine run and the DP-SGD run are in ``tests/test_flower_engine_dp.py`` (on the
same harness), so that under ``make test`` they run beside this file's on another worker. A
fourth (one round, two sites) runs a SuperLink with Flower's SuperNode authentication and the
registry's node keys: a stranger's node is refused by the SuperLink, and a node admitted under
another site's key cannot register as site-2.

Skipped when flwr (``pip install 'secagg[flower]'``) or its command-line tools are absent.
Every wait is bounded; ports are picked free at run time, from a block of its own for each
pytest-xdist worker (so that a run with other files' processes on other workers never collides); every process started here is
stopped (with its children) at the end.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("flwr")

from tests.flower_federation import SITES, check_run  # noqa: E402

# `make test` hands out whole files (--dist loadfile): one worker runs this file's federations one after
# another, while the other Flower process files (tests/test_flower_engine_dp.py, test_flower_crash.py,
# test_flower_deploy.py) run theirs on other workers, each worker on its own block of ports. Each is a
# SuperLink, SuperNodes and a process per message; the 45 s stage timeouts leave honest nodes headroom
# for that on a loaded 2-core machine.
pytestmark = pytest.mark.slow


def test_deployment_engine_over_tls_active_mode_two_rounds_with_a_dropout(federation, tmp_path):
    from simulation.federation.identity import add_to_registry, write_identity

    # Each hospital's own identity; the registry reaches every node (and the coordinator) out of band.
    registry = tmp_path / "registry.json"
    keys = {site: write_identity(tmp_path / f"keys-{site}", site) for site in SITES}
    for identity in keys.values():
        add_to_registry(registry, identity)
    federation.superlink()
    states = {site: tmp_path / f"node-{site}" for site in SITES}
    for i, site in enumerate(SITES):
        drop = ' drop="1:mask"' if site == "site-3" else ""
        federation.supernode(i, f'site="{site}" state-dir="{states[site]}" epsilon-budget=8.0 '
                                f'signing-key="{keys[site].signing_key_path}" registry="{registry}"{drop}')
    run_dir = tmp_path / "run"
    summary = federation.run(run_dir, update="synthetic", active=True, registry=str(registry))
    check_run(run_dir, summary, states)
    assert summary["active"] is True
    # Both ledgers carry the sites' signatures, and each node's anchor matches the coordinator's ledger.
    from dp import load_anchors, verify_ledger
    from simulation.federation.identity import load_registry

    keys_of = load_registry(registry)
    anchors = load_anchors([states[site] / "anchors" for site in SITES])  # STATE_DIR/anchors/RUN_ID/
    report = verify_ledger(run_dir, registry=keys_of, anchors=anchors)
    assert report.ok and report.signatures_checked == 5 and sorted(report.anchors_checked) == list(SITES), report
    for site in SITES:
        own = verify_ledger(states[site] / "ledger", registry=keys_of)
        assert own.ok and own.signatures_checked == (1 if site == "site-3" else 2), own
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # The ConsistencyCheck round ran: the survivors signed the list of who uploaded.
    assert metrics[1]["survivors_per_stage"]["consistency"] == ["site-1", "site-2"]
    assert "Uvicorn running on https://" in (tmp_path / "superlink.log").read_text()
    # The compliance journey works on a deployment's run directory too.
    from simulation.reports.dpia import write_dpia

    path, _ = write_dpia(run_dir, fmt="md", out=tmp_path / "dpia.md")
    text = path.read_text()
    assert "Flower deployment" in text and "held at the site (not released)" in text
    assert "checked against every node's own registry" in text


def test_node_authentication_admits_only_the_registry_nodes_each_as_its_own_site(federation, tmp_path, monkeypatch,
                                                                                   capsys):
    """Issues 18 and 21: a SuperLink with ``--enable-supernode-auth`` admits exactly the registry's node keys
    (``secagg keys register-nodes``). A stranger - a Flower key of its own, site-2's name and even site-2's
    signing key - is refused by the SuperLink and never becomes a node; a node that the SuperLink does admit
    (site-3's registered key) but that claims site-2 with site-2's signing key is left out by the coordinator,
    because its Flower key is not site-2's. The registered sites' run completes."""
    from dp import verify_ledger
    from simulation.cli import main as secagg
    from simulation.federation.identity import load_registry
    from simulation.federation.node_keys import write_node_key

    registry, keys = tmp_path / "registry.json", tmp_path / "keys"
    for site in SITES:  # each site's Ed25519 identity and Flower node key, both in the registry
        assert secagg(["keys", "new", "--site", site, "--out", str(keys / site), "--registry", str(registry)]) == 0
    stranger_key = write_node_key(tmp_path, "stranger").private_key_path  # never registered
    federation.superlink("--enable-supernode-auth")
    monkeypatch.setenv("FLWR_HOME", str(federation.home))
    assert secagg(["keys", "register-nodes", "--registry", str(registry), "--superlink", "loop"]) == 0

    def node(index, state, site, key_of, signing_of):
        return federation.supernode(index, f'site="{site}" state-dir="{tmp_path / state}" epsilon-budget=8.0 '
                                           f'signing-key="{keys / signing_of / (signing_of + ".ed25519")}"',
                                    "--auth-supernode-private-key", str(key_of))

    for i, site in enumerate(("site-1", "site-2")):
        node(i, f"node-{site}", site, keys / site / f"{site}.flower-auth", site)
    impostor = node(2, "impostor", "site-2", keys / "site-3" / "site-3.flower-auth", "site-2")
    stranger = node(3, "stranger", "site-2", stranger_key, "site-2")
    run_dir = tmp_path / "run"
    summary = federation.run(run_dir, update="synthetic", rounds=1, **{"num-sites": 2, "node-auth": True},
                             registry=str(registry))
    assert summary["rounds_completed"] == 1, federation.output[-3000:]
    assert summary["deployment"]["node_authentication"] == {"required": True, "sites_checked": ["site-1", "site-2"],
                                                           "sites_unchecked": []}
    assert "but its Flower node key is not the one the registry holds for that site" in federation.output
    # The spends are the real sites' own: each signed one in its own ledger; the impostor joined no session.
    for site in ("site-1", "site-2"):
        own = verify_ledger(tmp_path / f"node-{site}" / "ledger", registry=load_registry(registry))
        assert own.ok and own.signatures_checked == 1, own
    assert not (tmp_path / "impostor" / "ledger").exists() and impostor.poll() is None
    # The SuperLink refused the stranger's node outright: its SuperNode could not activate and exited.
    assert stranger.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in (tmp_path / "supernode-3.log").read_text()
    # register-nodes can run again; against a registry that no longer names site-3 it fails (exit 1) and
    # names the node the SuperLink still admits, removing nothing.
    assert secagg(["keys", "register-nodes", "--registry", str(registry), "--superlink", "loop"]) == 0
    smaller = json.loads(registry.read_text())
    del smaller["site-3"]
    (tmp_path / "smaller.json").write_text(json.dumps(smaller))
    capsys.readouterr()
    assert secagg(["keys", "register-nodes", "--registry", str(tmp_path / "smaller.json"), "--superlink", "loop"]) == 1
    assert "the SuperLink admits 1 node(s) whose key the registry does not name" in capsys.readouterr().err
    assert secagg(["keys", "register-nodes", "--registry", str(registry), "--superlink", "loop"]) == 0
