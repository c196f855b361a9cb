"""Attack: a real SuperNode that looks like a node of Flower's simulation engine takes its budget and its
state directory from the run config, which a Control-API stranger chooses (``flwr run --run-config``).

``client_app._simulated`` calls a node "simulated" when its node config is exactly ``partition-id`` and
``num-partitions`` - which is also how Flower's own deployment guides start a SuperNode
(``--node-config "partition-id=0 num-partitions=2"``). Such a node, even one started through
``secagg flower supernode`` (the verifier approved the bundle in this very process, so it is certainly not
Flower's simulation engine), then reads ``node-epsilon-budget`` and ``node-state-root`` (its ledger) from
the run config: whoever submits the run sets the node's budget and gives it a fresh, empty ledger. The
app_trust docstring says the app's own checks - each node's own ledger and budget, its state directory -
hold whatever the run config says.
"""

from __future__ import annotations

import pytest

from simulation.engines.flower.app_trust import AppApproval, record_verified

pytest.importorskip("flwr")

from flwr.app import Context, RecordDict  # noqa: E402

from simulation.engines.flower.client_app import node_path, node_setting  # noqa: E402


@pytest.fixture
def verified_process():
    record_verified(AppApproval("ab" * 32, "cd" * 32, "/sigs/x.json"))
    try:
        yield
    finally:
        record_verified(None)


def test_a_node_under_the_verifier_never_takes_its_budget_or_ledger_from_the_run_config(verified_process):
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 2}, state=RecordDict(),
                      run_config={"node-epsilon-budget": 1e9, "node-state-root": "/tmp/stranger-chosen"})
    assert node_setting(context, "epsilon-budget", "node-epsilon-budget") is None, \
        "the run config set this node's privacy budget"
    assert node_path(context, "state-dir", "node-state-root") is None, \
        "the run config chose this node's state directory (its ledger)"
