"""Server optimisers: pure functions of the decoded aggregate (and public hyper-parameters)."""

import numpy as np
import pytest
import torch

from simulation.federation.coordinator import Coordinator, RoundAggregate
from simulation.federation.server_optimizer import ServerRule, ServerState, server_step


def test_fedavg_adds_the_mean():
    step, state = server_step(ServerRule(), np.array([0.5, -1.0]), ServerState())
    assert step.tolist() == [0.5, -1.0] and state.t == 1 and state.first is None


def test_momentum_by_hand():
    rule = ServerRule("momentum", learning_rate=0.5, momentum=0.9)
    s1, state = server_step(rule, np.array([1.0, 2.0]), ServerState())
    assert s1.tolist() == [0.5, 1.0]  # v1 = d1
    s2, state = server_step(rule, np.array([0.0, -1.0]), state)
    assert s2 == pytest.approx([0.45, 0.4])  # v2 = 0.9 v1 + d2 = [0.9, 0.8]; step = 0.5 v2


def test_fedadam_by_hand():
    rule = ServerRule("adam", learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    step, state = server_step(rule, np.array([2.0]), ServerState())
    m, v = 0.1 * 2.0, 0.01 * 4.0
    assert step == pytest.approx([0.1 * m / (np.sqrt(v) + 1e-3)])
    step2, _ = server_step(rule, np.array([-1.0]), state)
    m2, v2 = 0.9 * m + 0.1 * -1.0, 0.99 * v + 0.01 * 1.0
    assert step2 == pytest.approx([0.1 * m2 / (np.sqrt(v2) + 1e-3)])


@pytest.mark.parametrize("name", ["fedavg", "momentum", "adam"])
def test_a_pure_function_of_the_aggregate(name):
    """Same rule, aggregate and state: the same step, and the inputs are not modified."""
    rule = ServerRule(name)
    rng = np.random.default_rng(0)
    _, state = server_step(rule, rng.normal(size=5), ServerState())
    update = rng.normal(size=5)
    update_copy = update.copy()
    first_copy = None if state.first is None else state.first.copy()
    a = server_step(rule, update, state)
    b = server_step(rule, update.copy(), state)
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(update, update_copy)
    if first_copy is not None:
        assert np.array_equal(state.first, first_copy)


@pytest.mark.parametrize("name", ["fedavg", "momentum", "adam"])
def test_the_coordinator_applies_the_rule_to_the_decoded_mean(name):
    """The global model moves by exactly server_step(decoded mean): nothing else enters the update."""
    shared = {"w": torch.zeros(3), "b": torch.ones(1)}
    rule = ServerRule(name)
    coordinator = Coordinator(shared, ["w", "b"], rule)
    state = ServerState()
    expected = np.array([0.0, 0.0, 0.0, 1.0])
    for update in (np.array([0.1, -0.2, 0.3, 0.05]), np.array([0.2, 0.0, -0.1, 0.0])):
        coordinator.apply(RoundAggregate(mean_update=update, weight_sum=2.0, included=frozenset({1, 2})))
        step, state = server_step(rule, update, state)
        expected = expected + step
        got = np.concatenate([coordinator.global_shared["w"].numpy(), coordinator.global_shared["b"].numpy()])
        assert got == pytest.approx(expected.astype(np.float32))


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="one of"):
        ServerRule("sgd")
    with pytest.raises(ValueError, match="learning rate"):
        ServerRule("adam", learning_rate=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        ServerRule("momentum", momentum=1.0)
    with pytest.raises(ValueError, match="finite"):
        server_step(ServerRule(), np.array([np.nan]), ServerState())


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_the_server_state_round_trips_through_a_checkpoint(name):
    """--resume continues the moments (RUN_DIR/checkpoints/server_optimizer.pt); FedAvg saves nothing."""
    assert Coordinator({"w": torch.zeros(2)}, ["w"]).server_state_dict() is None
    rule = ServerRule(name)
    first = Coordinator({"w": torch.zeros(2)}, ["w"], rule)
    for update in (np.array([0.3, -0.1]), np.array([0.1, 0.2])):
        first.apply(RoundAggregate(mean_update=update, weight_sum=1.0, included=frozenset({1})))
    resumed = Coordinator({"w": torch.zeros(2)}, ["w"], rule)
    resumed.load_state_dict(first.state_dict())
    resumed.load_server_state_dict(first.server_state_dict())
    last = RoundAggregate(mean_update=np.array([-0.2, 0.05]), weight_sum=1.0, included=frozenset({1}))
    first.apply(last)
    resumed.apply(last)
    assert torch.equal(first.global_shared["w"], resumed.global_shared["w"])
