"""The Flower ServerApp and ClientApp code in one process (tests/flower_harness.py): fast checks
of the paths the process-level tests (tests/test_flower.py) do not repeat - a coordinator crash
and resume, a node's own budget, and a coordinator that forges an identity in active mode.
"""

from __future__ import annotations

import json

import pytest

import secagg

pytest.importorskip("flwr")

from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402

from dp import PrivacyLedger  # noqa: E402
from simulation.engines.flower import client_app  # noqa: E402
from simulation.engines.flower.server_app import DEFAULTS, run_federation  # noqa: E402

from .flower_harness import InMemoryGrid, as_node  # noqa: E402

SITES = ("site-1", "site-2", "site-3")
RUN = {"num-sites": 3, "rounds": 3, "image-size": 16, "epsilon": 8.0, "local-steps": 2, "sample-rate": 0.25,
       "update": "synthetic", "synthetic-seed": 5, "node-wait": 5.0}


def _nodes(tmp_path, **per_site) -> dict[int, dict]:
    return {100 + i: {"partition-id": i, "site": site, "state-dir": str(tmp_path / f"node-{site}"),
                      "epsilon-budget": 8.0, "drop-sleep": 0.0} | per_site.get(site, {})
            for i, site in enumerate(SITES)}


def _federate(grid, run_dir, **config) -> dict:
    with as_node(SUPERLINK_NODE_ID):
        return run_federation(grid, DEFAULTS | RUN | {"out": str(run_dir)} | config)


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _committed(directory) -> set[int]:
    ledger = PrivacyLedger.open(directory)
    try:
        return ledger.committed_rounds()
    finally:
        ledger.close()


def _rounds_spent(directory, site) -> list[int]:
    ledger = PrivacyLedger.open(directory)
    try:
        return [e.round for e in ledger.events(site)]
    finally:
        ledger.close()


class _CrashingGrid(InMemoryGrid):
    """The coordinator's machine dies instead of sending the ``nth`` protocol exchange of a round."""

    def __init__(self, *args, round_index: int, nth: int, run_dir, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.group, self.nth, self.seen, self.run_dir = str(round_index), nth, 0, run_dir
        self.committed_at_crash = None

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        first = messages[0].metadata
        if (first.group_id, first.message_type) == (self.group, "query.secagg"):
            self.seen += 1
            if self.seen == self.nth:
                self.committed_at_crash = _committed(self.run_dir)
                raise SystemExit("the coordinator's machine died")
        return super().send_and_receive(messages, timeout=timeout)


def test_a_coordinator_crash_after_the_spend_resumes_without_counting_anything_twice(tmp_path):
    nodes = _nodes(tmp_path)
    run_dir = tmp_path / "run"
    # Round 1 dies at Unmasking: its masked updates were in, so its spend was committed by the
    # coordinator and by every node, and its aggregate is lost.
    # The exchanges of a passive round: ShareKeys, MaskedInputCollection, Unmasking.
    crashing = _CrashingGrid(client_app.app, nodes, DEFAULTS | RUN, round_index=1, nth=3, run_dir=run_dir)
    with pytest.raises(SystemExit):
        _federate(crashing, run_dir)
    # The coordinator had committed round 1's spend before any unmasking request could leave.
    assert crashing.committed_at_crash == {0, 1}
    assert [m["round"] for m in _metrics(run_dir)] == [0]
    grid = InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN)
    grid.contexts = crashing.contexts  # the same SuperNodes (their state survives the coordinator)
    summary = _federate(grid, run_dir, resume=True)
    metrics = _metrics(run_dir)
    assert [(m["round"], m["status"]) for m in metrics] == [(0, "completed"), (2, "completed")]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["rounds"]["1"].startswith("interrupted")
    assert summary["rounds_completed"] == 2 and summary["privacy"]["ledger_verified"]
    for site in SITES:
        assert _rounds_spent(run_dir, site) == [0, 1, 2]  # round 1's release counted once
        assert _rounds_spent(tmp_path / f"node-{site}" / "ledger", site) == [0, 1, 2]


def test_a_node_over_its_own_budget_refuses_and_spends_nothing(tmp_path):
    nodes = _nodes(tmp_path, **{"site-3": {"epsilon-budget": 0.5}})
    run_dir = tmp_path / "run"
    summary = _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, rounds=1)
    record = _metrics(run_dir)[0]
    assert record["survivors_per_stage"]["advertise"] == ["site-1", "site-2"]
    assert record["included"] == ["site-1", "site-2"]
    assert summary["privacy"]["epsilon_spent"]["site-3"] is None
    assert _rounds_spent(run_dir, "site-3") == []


def test_honest_nodes_refuse_a_coordinator_that_forges_an_identity(tmp_path):
    from simulation.federation.identity import add_to_registry, write_identity

    registry, forged = tmp_path / "registry.json", tmp_path / "forged.json"
    keys = {site: write_identity(tmp_path / "keys", site) for site in SITES}
    for site, identity in keys.items():
        add_to_registry(registry, identity)
        # The coordinator's copy has its own key in place of site-2's.
        add_to_registry(forged, identity if site != "site-2" else write_identity(tmp_path / "evil", site))
    nodes = _nodes(tmp_path, **{site: {"signing-key": str(keys[site].signing_key_path), "registry": str(registry)}
                                for site in SITES})
    run_dir = tmp_path / "run"
    # A forging coordinator does not check the nodes' registration against its forged registry.
    summary = _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, rounds=1, active=True,
                        registry=str(forged), registration="names")
    record = _metrics(run_dir)[0]
    assert record["status"] == "aborted" and record["survivors_per_stage"]["advertise"] == []
    assert summary["privacy"]["epsilon_spent"] == {site: None for site in SITES}
    # With the true registry, the same nodes take part.
    summary = _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), tmp_path / "run2", rounds=1,
                        active=True, registry=str(registry))
    assert summary["rounds_completed"] == 1


def test_distributed_dp_over_flower_noises_at_the_nodes_and_both_sides_account_for_it(tmp_path):
    import numpy as np
    import torch

    import models
    from simulation.engines.flower.client_app import synthetic_update
    from simulation.federation.site import flatten

    nodes = _nodes(tmp_path, **{site: {"site-level-budget": 1000.0} for site in SITES})
    run_dir = tmp_path / "run"
    summary = _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, rounds=1,
                        **{"distributed-dp": "skellam", "ddp-epsilon": 1000.0, "ddp-clip": 1.0})
    assert summary["rounds_completed"] == 1 and summary["privacy"]["ledger_verified"]
    site_level = summary["privacy"]["site_level"]
    assert site_level["mechanism"] == "skellam" and all(0 < e <= 1000.0 for e in site_level["epsilon_spent"].values())
    for site in SITES:  # each node committed its own site-level spend before its noisy update left
        own = PrivacyLedger.open(tmp_path / f"node-{site}" / "ledger")
        try:
            assert own.site_level_spent(site) == pytest.approx(site_level["epsilon_spent"][site])
        finally:
            own.close()
    # The global model moved by the unweighted mean of the L2-clipped updates, plus noise.
    torch.manual_seed(0)
    model = models.create_model("compact-ae", image_size=16)
    names = models.shared_parameter_names(model)
    before = flatten(dict(model.named_parameters()), names)
    after = flatten(torch.load(run_dir / "checkpoints" / "global.pt", weights_only=True), names)
    updates = [synthetic_update(RUN["synthetic-seed"], s, 0, before.size, 1.0)[0] for s in SITES]
    clipped = [u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates]
    signal = np.mean(clipped, axis=0)
    error = (after - before) - signal
    from dp import DistributedDpConfig, calibrate_distributed

    ddp = calibrate_distributed(DistributedDpConfig("skellam", l2_clip=1.0, target_epsilon=1000.0, delta=1e-5,
                                                    rounds=1, min_contributors=2, max_contributors=3), before.size)
    expected = ddp.noise_std(3) / 3  # the noise of the sum, divided by the three contributors
    assert np.std(error) == pytest.approx(expected, rel=0.1)
    assert abs(np.mean(error)) < 5 * expected / np.sqrt(error.size)
    # Even at site level with three sites the noise is large; the signal is still clearly there.
    assert np.corrcoef(after - before, signal)[0, 1] > 0.15


def test_a_node_refuses_distributed_dp_without_a_site_level_budget_of_its_own(tmp_path):
    run_dir = tmp_path / "run"
    summary = _federate(InMemoryGrid(client_app.app, _nodes(tmp_path), DEFAULTS | RUN), run_dir, rounds=1,
                        **{"distributed-dp": "skellam", "ddp-epsilon": 100.0})
    record = _metrics(run_dir)[0]
    assert record["status"] == "aborted" and record["survivors_per_stage"]["advertise"] == []
    assert summary["privacy"]["site_level"]["epsilon_spent"] == {site: None for site in SITES}


def test_nodes_refuse_noise_from_a_non_cryptographic_generator_unless_their_operator_allows_it(tmp_path):
    run_dir = tmp_path / "run"
    summary = _federate(InMemoryGrid(client_app.app, _nodes(tmp_path), DEFAULTS | RUN), run_dir, rounds=1,
                        **{"secure-rng": False})
    assert _metrics(run_dir)[0]["status"] == "aborted" and summary["privacy"]["epsilon_spent"]["site-1"] is None
    allowed = _nodes(tmp_path / "allowed", **{site: {"allow-insecure-rng": True} for site in SITES})
    summary = _federate(InMemoryGrid(client_app.app, allowed, DEFAULTS | RUN), tmp_path / "run2", rounds=1,
                        **{"secure-rng": False})
    assert summary["rounds_completed"] == 1


def test_a_nodes_session_is_sealed_in_flowers_state_and_no_private_key_is_stored_in_the_clear(tmp_path, monkeypatch):
    """After an active-mode round, neither Flower's ``context.state`` nor the node's journal holds a byte
    string of the session's X25519 secret keys or the site's Ed25519 seed (issue 18)."""
    import pickle

    from secagg.crypto import X25519KeyPair
    from simulation.engines.flower.sealed_state import STATE_KEY_FILE, unseal
    from simulation.engines.flower.session_journal import JOURNAL_FILE
    from simulation.federation.identity import add_to_registry, load_signing_key, write_identity

    secrets_made: list[bytes] = []
    generate = X25519KeyPair.generate.__func__

    def recording(cls):
        pair = generate(cls)
        secrets_made.append(pair.secret_key)
        return pair

    monkeypatch.setattr(X25519KeyPair, "generate", classmethod(recording))
    registry = tmp_path / "registry.json"
    keys = {site: write_identity(tmp_path / "keys", site) for site in SITES}
    for identity in keys.values():
        add_to_registry(registry, identity)
    nodes = _nodes(tmp_path, **{site: {"signing-key": str(keys[site].signing_key_path), "registry": str(registry)}
                                for site in SITES})
    grid = InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN)
    summary = _federate(grid, tmp_path / "run", rounds=1, active=True, registry=str(registry))
    assert summary["rounds_completed"] == 1
    seeds = [load_signing_key(keys[site].signing_key_path).seed for site in SITES]
    assert len(secrets_made) >= 2 * len(SITES) and all(len(s) == 32 for s in secrets_made + seeds)
    for node, context in grid.contexts.items():
        state_dir = tmp_path / f"node-{nodes[node]['site']}"
        stored = pickle.dumps(context.state)  # everything Flower keeps for the node, serialised
        stored += (state_dir / JOURNAL_FILE).read_bytes()
        for secret in secrets_made + seeds:
            assert secret not in stored
        assert (state_dir / STATE_KEY_FILE).stat().st_mode & 0o777 == 0o600
        # The sealed state (session, setup, flags) opens with the node's key, for its site and run only.
        sealed = bytes(context.state.config_records["secagg-client"]["sealed"])
        assert set(context.state.config_records["secagg-client"]) == {"sealed"}  # nothing of it in the clear
        session = pickle.loads(unseal(state_dir, nodes[node]["site"], context.run_id, sealed))["session"]
        assert session.client_id >= 0
        with pytest.raises(secagg.VerificationError):
            unseal(state_dir, "site-9", context.run_id, sealed)
        with pytest.raises(secagg.VerificationError):
            unseal(state_dir, nodes[node]["site"], context.run_id + 1, sealed)


def test_a_node_refuses_a_tampered_sealed_session_a_loose_state_key_and_a_missing_state_dir(tmp_path):
    from simulation.engines.flower.sealed_state import STATE_KEY_FILE, seal_key
    from simulation.federation.identity import write_identity

    nodes = _nodes(tmp_path)
    loose = tmp_path / "node-site-2" / STATE_KEY_FILE
    seal_key(loose.parent)
    loose.chmod(0o644)  # group/others may read it: the node will not use it
    with pytest.raises(secagg.InvalidInputError, match="group or others"):
        seal_key(loose.parent)
    del nodes[102]["state-dir"]  # site-3 can sign (a signing-key) but has nowhere to keep its state key
    nodes[102]["signing-key"] = str(write_identity(tmp_path / "keys", "site-3").signing_key_path)
    _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), tmp_path / "run", rounds=1)
    record = _metrics(tmp_path / "run")[0]
    assert record["status"] == "aborted"
    assert "no state-dir" in record["refusals"]["site-3"] and "state.key" in record["refusals"]["site-3"]
    assert "group or others" in record["refusals"]["site-2"]

    class _Tampering(InMemoryGrid):
        """Flips one byte of site-1's sealed state before each protocol exchange."""

        def push_messages(self, messages):
            messages = list(messages)
            record = self.contexts[100].state.config_records.get("secagg-client")
            if record is not None and messages[0].metadata.message_type == "query.secagg":
                sealed = bytearray(bytes(record["sealed"]))
                sealed[-1] ^= 1
                record["sealed"] = bytes(sealed)
            return super().push_messages(messages)

    nodes = _nodes(tmp_path / "second")
    _federate(_Tampering(client_app.app, nodes, DEFAULTS | RUN), tmp_path / "run2", rounds=1)
    record = _metrics(tmp_path / "run2")[0]
    assert "sealed state does not open" in record["refusals"]["site-1"]
    assert "site-1" not in record["included"]


def test_with_a_registry_a_stranger_and_an_impostor_are_left_out_and_the_registered_sites_run(tmp_path, capsys):
    """Issue 21: one unexpected node no longer aborts the run ("4 of 3 sites registered"), and a node
    naming another site without that site's key cannot register as it."""
    from simulation.federation.identity import add_to_registry, write_identity

    registry = tmp_path / "registry.json"
    nodes = _nodes(tmp_path)
    for site in SITES:
        add_to_registry(registry, write_identity(tmp_path / f"node-{site}", site))  # STATE_DIR/SITE.ed25519
    extra = {"epsilon-budget": 8.0, "drop-sleep": 0.0}
    nodes[103] = {"partition-id": 3, "site": "site-2", "state-dir": str(tmp_path / "impostor")} | extra
    nodes[104] = {"partition-id": 4, "site": "site-9", "state-dir": str(tmp_path / "stranger")} | extra
    # The impostor holds a key of its own for "site-2" (not the registered one).
    write_identity(tmp_path / "impostor", "site-2")
    summary = _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), tmp_path / "run", rounds=1,
                        registry=str(registry))
    assert summary["rounds_completed"] == 1
    assert _metrics(tmp_path / "run")[0]["included"] == list(SITES)
    out = capsys.readouterr().out
    assert "node 103 left out: it claims site 'site-2' but cannot sign with that site's key" in out
    assert "node 104 left out: its site 'site-9' is not in the registry" in out
    for outsider in ("impostor", "stranger"):  # they joined no session
        assert not (tmp_path / outsider / "sessions.journal").exists()
    # No node keys in the registry and no node-auth: the summary and the DPIA say node authentication was off.
    assert summary["deployment"]["node_authentication"] == {"required": False, "sites_checked": [],
                                                           "sites_unchecked": list(SITES)}
    from simulation.reports.dpia import write_dpia

    path, _ = write_dpia(tmp_path / "run", fmt="md", out=tmp_path / "dpia.md")
    assert "Node authentication: OFF in the run configuration (node-auth = false" in path.read_text()
    # Without a registry names are taken as given: the same fleet cannot run.
    with pytest.raises(ValueError, match="two nodes claim site 'site-2'"):
        _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), tmp_path / "run2", rounds=1)


class _AuthenticatedGrid(InMemoryGrid):
    """Reports, like flwr 1.42's SuperLink through ``Grid.get_nodes()``, the public key each node was
    authenticated under (``NodeInfo.public_key``, the PEM bytes the SuperLink keeps)."""

    def __init__(self, *args, flower_keys: dict[int, bytes]) -> None:
        super().__init__(*args)
        self.flower_keys = flower_keys

    def get_nodes(self):
        from flwr.proto.node_pb2 import NodeInfo

        return [NodeInfo(node_id=node, public_key=self.flower_keys.get(node, b"")) for node in self.get_node_ids()]


def test_a_node_registers_only_as_the_site_whose_flower_node_key_it_was_authenticated_under(tmp_path, capsys):
    """Issue 21 "a site's name can be taken over": a node that holds site-2's signing key (stolen) but was
    authenticated by the SuperLink under another node key is left out; the registered sites run, and the
    summary and the DPIA state node authentication as the run configured it."""
    from flwr.cli.supernode.register import try_load_public_key

    from simulation.reports.dpia import write_dpia
    from simulation.federation.identity import add_to_registry, write_identity, write_site_node_key

    registry, partial = tmp_path / "registry.json", tmp_path / "partial.json"
    nodes, flower_keys = _nodes(tmp_path), {}
    for node, site in zip(sorted(nodes), SITES):
        identity = write_identity(tmp_path / "keys", site)
        nodes[node]["signing-key"] = str(identity.signing_key_path)
        key = write_site_node_key(tmp_path / "keys", site)
        add_to_registry(registry, identity, key.public_key)
        add_to_registry(partial, identity, key.public_key if site != "site-3" else None)
        flower_keys[node] = try_load_public_key(key.public_key_path)  # what the SuperLink keeps for the node
    nodes[103] = {"partition-id": 3, "site": "site-2", "signing-key": str(tmp_path / "keys" / "site-2.ed25519"),
                  "epsilon-budget": 8.0, "drop-sleep": 0.0}
    flower_keys[103] = try_load_public_key(write_site_node_key(tmp_path / "impostor-key", "site-2").public_key_path)

    def federate(run, registry_file, **config):  # each run on fresh node state: a node's ledger spans runs
        fresh = {node: dict(c, **{"state-dir": str(tmp_path / run / "nodes" / str(node))}) for node, c in nodes.items()}
        grid = _AuthenticatedGrid(client_app.app, fresh, DEFAULTS | RUN, flower_keys=flower_keys)
        return _federate(grid, tmp_path / run / "coordinator", rounds=1, registry=str(registry_file), **config)

    summary = federate("run", registry, **{"node-auth": True})
    assert summary["rounds_completed"] == 1 and _metrics(tmp_path / "run" / "coordinator")[0]["included"] == list(SITES)
    out = capsys.readouterr().out
    assert ("node 103 left out: it claims site 'site-2' but its Flower node key is not the one the registry holds "
            "for that site") in out
    assert not (tmp_path / "run" / "nodes" / "103" / "ledger").exists()  # it joined no session
    assert summary["deployment"]["node_authentication"] == {"required": True, "sites_checked": list(SITES),
                                                           "sites_unchecked": []}
    path, _ = write_dpia(tmp_path / "run" / "coordinator", fmt="md", out=tmp_path / "dpia.md")
    assert "Node authentication: ON, required by the run configuration (node-auth = true)" in path.read_text()

    # node-auth = true and a site without a node key in the registry: that site's node cannot register.
    with pytest.raises(RuntimeError, match=r"2 of 3 sites registered"):
        federate("run-required", partial, **{"node-auth": True, "node-wait": 1.0})
    assert "it claims site 'site-3' but the registry holds no Flower node key for it" in capsys.readouterr().out
    # Without node-auth the registry's node keys are still checked, and the DPIA says which were not.
    summary = federate("run-partial", partial)
    assert summary["rounds_completed"] == 1
    assert summary["deployment"]["node_authentication"] == {"required": False, "sites_checked": ["site-1", "site-2"],
                                                           "sites_unchecked": ["site-3"]}
    path, _ = write_dpia(tmp_path / "run-partial" / "coordinator", fmt="md", out=tmp_path / "dpia-partial.md")
    assert "Node authentication: partial, not required by the run configuration" in path.read_text()


def test_node_auth_needs_a_registry_and_signed_registration(tmp_path):
    from simulation.config import ConfigError
    from simulation.engines.flower.server_app import flower_config

    base = DEFAULTS | RUN | {"out": str(tmp_path / "run"), "node-auth": True}
    with pytest.raises(ConfigError, match="node-auth"):
        flower_config(base)
    with pytest.raises(ConfigError, match="node-auth"):
        flower_config(base | {"registry": str(tmp_path / "registry.json"), "registration": "names"})


def test_a_node_commits_its_spend_with_the_report_its_setup_sealed_and_computes_it_when_it_has_none(
        tmp_path, reuse_log):
    """The masked-input message's commit reuses the epsilon report of the setup's budget check, which the
    setup sealed in ``context.state`` with the session (:class:`dp.ProjectedSpend`); without one the node
    computes the report itself and commits the same spend; another sealed object in the state's place is
    refused."""
    import pickle

    from dp import ProjectedSpend, verify_ledger
    from simulation.engines.flower.sealed_state import unseal

    reused = reuse_log  # (site, whether its projection was reused) for each commit offered one (conftest)
    nodes = _nodes(tmp_path)
    grid = InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN)
    assert _federate(grid, tmp_path / "run", rounds=2)["rounds_completed"] == 2
    assert sorted(reused) == sorted(2 * [(site, True) for site in SITES])  # every node's commit, both rounds
    for node, context in grid.contexts.items():
        site, state_dir = nodes[node]["site"], tmp_path / f"node-{nodes[node]['site']}"
        sealed = bytes(context.state.config_records["secagg-client"]["sealed"])
        projection = pickle.loads(unseal(state_dir, site, context.run_id, sealed))["projection"]
        assert isinstance(projection, ProjectedSpend) and projection.site == site
        assert [e.round for e in projection.events] == [0, 1]
        own = verify_ledger(state_dir / "ledger")  # the reused epsilons are the ones computed from the events
        assert own.ok and own.epsilon[site]["bound"] == projection.report.bound, own

    from simulation.engines.flower.sealed_state import seal

    class _Resealing(InMemoryGrid):
        """Once, before the first protocol exchange, opens site-1's sealed state with its key (as the node
        itself would: for its site and run) and seals ``change(state)`` in its place."""

        def __init__(self, *args, state_dir, change, **kwargs):
            super().__init__(*args, **kwargs)
            self.state_dir, self.change, self.done = state_dir, change, False

        def push_messages(self, messages):
            messages = list(messages)
            context = self.contexts[100]
            record = context.state.config_records.get("secagg-client")
            if record is not None and messages[0].metadata.message_type == "query.secagg" and not self.done:
                state = pickle.loads(unseal(self.state_dir, "site-1", context.run_id, bytes(record["sealed"])))
                record["sealed"] = seal(self.state_dir, "site-1", context.run_id, pickle.dumps(self.change(state)))
                self.done = True
            return super().push_messages(messages)

    reused.clear()
    nodes = _nodes(tmp_path / "second")
    forgetting = _Resealing(client_app.app, nodes, DEFAULTS | RUN, state_dir=tmp_path / "second" / "node-site-1",
                            change=lambda state: state | {"projection": None})  # the state without its report
    assert _federate(forgetting, tmp_path / "run2", rounds=1)["rounds_completed"] == 1
    assert sorted(reused) == [("site-2", True), ("site-3", True)]  # site-1 had none to offer: it computed its own
    assert verify_ledger(tmp_path / "second" / "node-site-1" / "ledger").ok
    assert _rounds_spent(tmp_path / "second" / "node-site-1" / "ledger", "site-1") == [0]

    nodes = _nodes(tmp_path / "third")
    swapping = _Resealing(client_app.app, nodes, DEFAULTS | RUN, state_dir=tmp_path / "third" / "node-site-1",
                          change=lambda state: state["projection"])  # another sealed object in the state's place
    _federate(swapping, tmp_path / "run3", rounds=1)
    record = _metrics(tmp_path / "run3")[0]
    assert "sealed state does not open" in record["refusals"]["site-1"], record["refusals"]
    assert "site-1" not in record["included"]
