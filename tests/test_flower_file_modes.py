"""Least privilege on disk over Flower (issue 21): what a run writes is owner-only, and a node refuses
state or keys that others can read.

The runs here use the in-memory grid (tests/flower_harness.py: the real ServerApp and ClientApp code,
Flower's serialisation, no processes) under umask 000, the most permissive, so the modes do not depend on
the caller's umask. tests/test_flower_deploy.py checks the same on a real SuperLink and SuperNodes.
"""

from __future__ import annotations

import os
import stat

import pytest

pytest.importorskip("flwr")

from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402

from simulation.engines.flower import client_app  # noqa: E402
from simulation.engines.flower.server_app import DEFAULTS, run_federation  # noqa: E402
from simulation.federation.identity import add_to_registry, write_identity  # noqa: E402

from .file_modes import not_owner_only  # noqa: E402
from .flower_harness import InMemoryGrid, as_node  # noqa: E402

SITES = ("site-1", "site-2", "site-3")
RUN = {"num-sites": 3, "rounds": 2, "image-size": 16, "epsilon": 8.0, "local-steps": 2, "sample-rate": 0.25,
       "update": "synthetic", "synthetic-seed": 5, "node-wait": 5.0}


def _federation(tmp_path, *, active: bool) -> tuple[dict, dict]:
    registry = tmp_path / "registry.json"
    states = {site: tmp_path / f"node-{site}" for site in SITES}
    nodes = {}
    for i, site in enumerate(SITES):
        identity = write_identity(states[site], site)  # the guide's layout: the key in the node's state-dir
        add_to_registry(registry, identity)
        nodes[100 + i] = {"partition-id": i, "site": site, "state-dir": str(states[site]), "epsilon-budget": 8.0}
        if active:
            nodes[100 + i] |= {"signing-key": str(identity.signing_key_path), "registry": str(registry)}
    run = DEFAULTS | RUN | {"out": str(tmp_path / "run"), "registry": str(registry), "active": active}
    return nodes, run


@pytest.mark.parametrize("active", [False, True], ids=["passive", "active"])
def test_everything_a_flower_run_writes_is_owner_only(tmp_path, active):
    previous = os.umask(0)
    try:
        nodes, run = _federation(tmp_path, active=active)
        with as_node(SUPERLINK_NODE_ID):
            summary = run_federation(InMemoryGrid(client_app.app, nodes, run), run)
    finally:
        os.umask(previous)
    assert summary["rounds_completed"] == 2
    run_dir = tmp_path / "run"
    names = {p.name for p in run_dir.rglob("*")}
    assert {"config.json", "state.json", "metrics.jsonl", "ledger.sqlite", "ledger.head.json", "summary.json",
            "global.pt"} <= names
    assert not not_owner_only(run_dir)
    for site in SITES:
        state = tmp_path / f"node-{site}"
        written = {p.relative_to(state).as_posix() for p in state.rglob("*")}
        # Its ledger, its anchors of the coordinator's ledger, its sealing key, its journal, its identity.
        assert {"ledger/ledger.sqlite", "state.key", f"{site}.ed25519"} <= written
        assert any(p.endswith("ledger.anchor.json") for p in written)
        assert not not_owner_only(state), not_owner_only(state)


def test_a_node_refuses_a_state_dir_others_can_read(tmp_path, capfd):
    nodes, run = _federation(tmp_path, active=False)
    wide = tmp_path / "node-site-3"
    os.chmod(wide, 0o755)
    with as_node(SUPERLINK_NODE_ID):
        summary = run_federation(InMemoryGrid(client_app.app, nodes, run | {"num-sites": 2}), run | {"num-sites": 2,
                                                                                                    "rounds": 1})
    err = capfd.readouterr().err
    # site-3 cannot even sign the registration challenge: it is left out, and the others run.
    assert f"{wide} has mode 0755" in err
    assert sorted(summary["sites"]) == ["site-1", "site-2"]
    assert stat.S_IMODE(wide.stat().st_mode) == 0o755  # refused, not silently changed
    assert not (wide / "ledger").exists() and not (wide / "state.key").exists()


def test_the_node_state_dir_check_names_path_and_mode(tmp_path):
    from simulation.federation.runstore import InsecurePermissionsError, require_private_dir

    folder = tmp_path / "state"
    folder.mkdir()
    os.chmod(folder, 0o750)
    with pytest.raises(InsecurePermissionsError, match=r"state .* has mode 0750.*chmod 700"):
        require_private_dir(folder, "state")
    os.chmod(folder, 0o700)
    assert require_private_dir(folder, "state") == folder
    assert require_private_dir(tmp_path / "new", "state") == tmp_path / "new"  # created 0700
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(folder)
    os.chmod(folder, 0o700)
    assert require_private_dir(link, "state") == link  # the target's mode counts


def test_a_node_refuses_a_signing_key_others_can_read(tmp_path, capfd):
    nodes, run = _federation(tmp_path, active=True)
    key = tmp_path / "node-site-2" / "site-2.ed25519"
    os.chmod(key, 0o644)
    with as_node(SUPERLINK_NODE_ID):
        with pytest.raises(RuntimeError, match="2 of 3 sites registered"):
            run_federation(InMemoryGrid(client_app.app, nodes, run), run | {"node-wait": 1.0})
    assert f"signing key {key} has mode 0644" in capfd.readouterr().err
