"""A consortium of three in-memory Flower nodes with signing identities, federated through the real
ServerApp and ClientApp on :class:`tests.flower_harness.InMemoryGrid`, and ``secagg ledger verify`` on
what it wrote. Shared by ``tests/test_flower_ledger.py`` and ``tests/test_flower_withheld_anchor.py``.
Importing it skips the importing test module when flwr is absent."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402

from dp import PrivacyLedger  # noqa: E402
from simulation.cli import main  # noqa: E402
from simulation.engines.flower.server_app import DEFAULTS, run_federation  # noqa: E402
from simulation.federation.identity import add_to_registry, write_identity  # noqa: E402

from .flower_harness import as_node  # noqa: E402

__all__ = ["SITES", "RUN", "consortium", "federate", "cli_verify", "ledger_run_id"]

SITES = ("site-1", "site-2", "site-3")
RUN = {"num-sites": 3, "rounds": 2, "image-size": 16, "epsilon": 8.0, "local-steps": 2, "sample-rate": 0.25,
       "update": "synthetic", "synthetic-seed": 5, "node-wait": 5.0}


def consortium(base):
    """Each node's state dir with its identity made as the guide says (`secagg keys new --out STATE_DIR`)."""
    registry = base / "registry.json"
    states = {site: base / f"node-{site}" for site in SITES}
    for site in SITES:
        add_to_registry(registry, write_identity(states[site], site))
    nodes = {100 + i: {"partition-id": i, "site": site, "state-dir": str(states[site]), "epsilon-budget": 8.0,
                       "drop-sleep": 0.0} for i, site in enumerate(SITES)}
    return registry, states, nodes


def federate(grid, run_dir, **config) -> dict:
    """Run the ServerApp on ``grid`` (as the SuperLink) with RUN and ``config``; its summary."""
    with as_node(SUPERLINK_NODE_ID):
        return run_federation(grid, DEFAULTS | RUN | {"out": str(run_dir)} | config)


def cli_verify(capsys, directory, *args):
    """``secagg ledger verify DIRECTORY ARGS``: (exit code, stdout, stderr), never a traceback."""
    code = main(["ledger", "verify", str(directory), *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def ledger_run_id(run_dir) -> str:
    """The run id recorded in the ledger of ``run_dir`` (the folder of the nodes' anchors)."""
    ledger = PrivacyLedger.open(run_dir)
    try:
        return ledger.run_id
    finally:
        ledger.close()
