"""Issue 9, without processes: the round setup a node receives, and the ServerApp's run configuration.

A node must refuse a malformed setup with a typed error, and the coordinator must refuse a run
configuration it cannot honour (an unknown key, a mode not carried over Flower, no run directory)
before anything starts.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import pytest

pytest.importorskip("flwr")

import secagg  # noqa: E402
from simulation.config import ConfigError  # noqa: E402
from simulation.engines.flower.server_app import DEFAULTS, flower_config  # noqa: E402
from simulation.engines.flower.transport import RoundSetup  # noqa: E402

from .flower_setups import round_setup  # noqa: E402


def test_round_setup_survives_the_config_record():
    setup = round_setup()
    assert RoundSetup.from_record(setup.to_record()) == setup
    sparse = round_setup(session=secagg.SessionConfig(session_id=secagg.new_session_id(), participants=tuple(range(1, 8)),
                                                      threshold=3, vector_length=11, bit_width=64, degree=4))
    assert RoundSetup.from_record(sparse.to_record()).session.degree == 4


@pytest.mark.parametrize("key", ["session-id", "noise-multiplier", "client-id", "degree"])
def test_a_setup_missing_a_field_is_refused_with_a_typed_error(key):
    record = round_setup().to_record()
    del record[key]
    with pytest.raises(secagg.MalformedMessageError, match="malformed round setup"):
        RoundSetup.from_record(record)


def test_a_setup_with_an_impossible_session_is_refused():
    record = round_setup().to_record()
    record["threshold"] = 9  # more than the 4 participants
    with pytest.raises(secagg.MalformedMessageError):
        RoundSetup.from_record(record)


def _active_setup(tmp_path, forge: bool = False, max_corrupt: int = 0):
    from simulation.federation.identity import add_to_registry, write_identity

    registry = tmp_path / "registry.json"
    identities = {cid: write_identity(tmp_path / "keys", f"site-{cid}") for cid in (1, 2, 3)}
    for identity in identities.values():
        add_to_registry(registry, identity)
    keys = {cid: identity.verify_key for cid, identity in identities.items()}
    if forge:  # the coordinator puts its own key in place of site-2's
        keys[2] = secagg.crypto.SigningKeyPair.generate().verify_key
    active = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=(1, 2, 3), threshold=2,
                                  vector_length=5, bit_width=32, active=True, verify_keys=keys,
                                  max_corrupt=max_corrupt)
    setup = round_setup(session=active, client_id=3, site="site-3", max_summands=3)
    context = SimpleNamespace(node_config={"signing-key": str(identities[3].signing_key_path),
                                           "registry": str(registry)}, run_config={})
    return setup, context, identities


def test_an_active_setup_carries_the_verify_keys(tmp_path):
    setup, _, identities = _active_setup(tmp_path)
    parsed = RoundSetup.from_record(setup.to_record())
    assert parsed == setup and parsed.session.verify_keys[2] == identities[2].verify_key


def test_a_node_signs_only_for_sessions_whose_keys_match_its_own_registry(tmp_path):
    from simulation.engines.flower.client_app import node_signing_key

    setup, context, identities = _active_setup(tmp_path)
    seed = node_signing_key(context, setup)
    secagg.crypto.verify_signature(identities[3].verify_key, b"m", secagg.crypto.sign(seed, b"m"))
    forged, context, _ = _active_setup(tmp_path / "forged", forge=True)
    with pytest.raises(secagg.VerificationError, match="site-2"):
        node_signing_key(context, forged)
    with pytest.raises(secagg.InvalidInputError, match="signing-key"):
        node_signing_key(SimpleNamespace(node_config={}, run_config={}), setup)


def test_a_node_refuses_a_session_whose_quorum_tolerates_fewer_colluders_than_it_requires(tmp_path):
    """A coordinator cannot shrink the consistency quorum below what the node's operator set."""
    from simulation.engines.flower.client_app import node_signing_key

    setup, context, _ = _active_setup(tmp_path, max_corrupt=0)
    context.node_config["max-corrupt"] = 1
    with pytest.raises(secagg.VerificationError, match="max_corrupt"):
        node_signing_key(context, setup)
    parsed = RoundSetup.from_record(setup.to_record())
    assert parsed.session.max_corrupt == 0 and parsed.session.consistency_quorum == 2


def _cfg(**overrides):
    return DEFAULTS | {"out": "/tmp/run"} | overrides


def test_flower_config_maps_onto_the_simulation_config():
    config = flower_config(_cfg(**{"mode": "secagg+", "num-sites": 5, "epsilon": 3.0, "local-steps": 4}))
    assert (config.mode, config.sites, config.epsilon, config.local_steps) == ("secagg+", 5, 3.0, 4)
    assert config.threshold is None and config.baselines == ()


@pytest.mark.parametrize("overrides, message", [
    ({"mode": "he"}, "not carried over Flower"),
    ({"mode": "plain"}, "not carried over Flower"),
    ({"active": True}, "registry"),
    ({"out": ""}, "run directory"),
    ({"update": "random"}, "dp-sgd"),
    ({"epsilon": -1.0}, "epsilon"),
    ({"max-records": 4096}, "unknown run-config keys"),  # FedAvg weights are public now: no record bound
    ({"privacy-unit": "hospital"}, "privacy_unit"),
    ({"public-size": -3}, "public_size"),
    ({"num-site": 3}, "unknown run-config keys"),
])
def test_flower_config_refuses_what_it_cannot_honour(overrides, message):
    with pytest.raises(ConfigError, match=message):
        flower_config(_cfg(**overrides))


def test_loopback_certificates_chain_to_their_ca_and_keep_the_key_private(tmp_path):
    import ipaddress
    import stat

    from cryptography import x509

    from simulation.engines.flower.tls import write_loopback_certificates

    certs = write_loopback_certificates(tmp_path / "tls")
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(certs.server_key.stat().st_mode) == 0o600
    again = write_loopback_certificates(tmp_path / "other")  # fresh keys every time
    assert again.server_key.read_bytes() != certs.server_key.read_bytes()


def test_a_node_recalibrates_distributed_dp_and_refuses_a_different_mechanism(tmp_path):
    from dp import DistributedDpConfig, calibrate_distributed

    ddp = calibrate_distributed(DistributedDpConfig("skellam", l2_clip=1.0, target_epsilon=10.0, delta=1e-5,
                                                    rounds=4, min_contributors=3, max_contributors=4), 100)
    session = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=(1, 2, 3, 4), threshold=3,
                                   vector_length=ddp.vector_length, bit_width=ddp.bits)
    fields = dict(ddp_mechanism="skellam", ddp_l2_clip=1.0, ddp_epsilon=10.0, ddp_rounds=4, ddp_min_contributors=3,
                  ddp_max_contributors=4, ddp_colluding=0, ddp_bits=ddp.bits, ddp_scale=ddp.scale)
    honest = RoundSetup.from_record(round_setup(session=session, **fields).to_record())
    assert honest.distributed_dp(100).scale == ddp.scale
    # A coordinator that sends a foreign ring, length or scale is refused ...
    with pytest.raises(secagg.InvalidInputError, match="distributed DP"):
        round_setup(session=session, **(fields | {"ddp_scale": ddp.scale * 2})).distributed_dp(100)
    assert round_setup().distributed_dp(100) is None
    # ... and one that shrinks the noise by claiming a larger epsilon meets the node's own budget.
    from dp import PrivacyLedger

    from simulation.engines.flower.client_app import check_budget

    greedy = round_setup(session=session, **(fields | {"ddp_epsilon": 1000.0}))
    ledger = PrivacyLedger.create(tmp_path, run_id="abc-123", delta=1e-5, budgets={"site-3": 8.0},
                                  site_level_budget=10.0)
    try:
        assert check_budget(ledger, honest, honest.distributed_dp(100)) is None
        refusal = check_budget(ledger, greedy, greedy.distributed_dp(100))
        assert refusal is not None and refusal.startswith("site-level budget")
    finally:
        ledger.close()


def test_a_node_with_a_registry_refuses_a_passive_session(tmp_path):
    from simulation.engines.flower.client_app import node_signing_key

    _, context, _ = _active_setup(tmp_path)
    passive = round_setup(client_id=3, site="site-3")  # a coordinator downgrading to unauthenticated keys
    with pytest.raises(secagg.VerificationError, match="active-mode sessions only"):
        node_signing_key(context, passive)


def test_a_deployed_node_never_takes_its_budget_or_paths_from_the_run_config():
    from simulation.engines.flower.client_app import node_path, node_setting

    run_config = {"node-epsilon-budget": 1e9, "node-state-root": "/tmp/fresh", "node-data-root": "/"}
    deployed = SimpleNamespace(node_config={"partition-id": 0, "site": "site-1"}, run_config=run_config)
    assert node_setting(deployed, "epsilon-budget", "node-epsilon-budget") is None
    assert node_path(deployed, "state-dir", "node-state-root") is None
    assert node_path(deployed, "data", "node-data-root") is None
    # Flower's simulation engine (one machine, the researcher is every party) sets exactly these two keys.
    simulated = SimpleNamespace(node_config={"partition-id": 0, "num-partitions": 3}, run_config=run_config)
    assert node_setting(simulated, "epsilon-budget", "node-epsilon-budget") == 1e9
    assert str(node_path(simulated, "state-dir", "node-state-root")) == "/tmp/fresh/site-1"


def test_a_node_releases_a_round_of_a_run_once_and_composes_its_runs(tmp_path):
    from dp import PrivacyLedger

    from simulation.engines.flower.client_app import check_budget, commit_release

    ledger = PrivacyLedger.create(tmp_path, run_id="node-site-3", delta=1e-5, budgets={"site-3": 8.0})
    try:
        first = round_setup(client_id=3, site="site-3", run_id="run-a", round_index=0)
        commit_release(ledger, first, None)
        assert check_budget(ledger, first, None).startswith("round 0 of run run-a was already released")
        with pytest.raises(secagg.InvalidInputError, match="already released"):
            commit_release(ledger, first, None)
        # Another run's round 0 is a new release, composed with the first in the same ledger.
        commit_release(ledger, round_setup(client_id=3, site="site-3", run_id="run-b", round_index=0), None)
        assert [e.round for e in ledger.events("site-3")] == [0, 1]
        assert ledger.spent("site-3").bound > 0
    finally:
        ledger.close()


def test_distributed_dp_noise_must_be_shared_among_no_more_sites_than_a_sum_holds():
    from dp import DistributedDpConfig, calibrate_distributed

    # The coordinator claims every one of 4 sites adds 1/4 of the noise, but outputs sums of 2.
    ddp = calibrate_distributed(DistributedDpConfig("skellam", l2_clip=1.0, target_epsilon=10.0, delta=1e-5,
                                                    rounds=4, min_contributors=4, max_contributors=4), 100)
    session = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=(1, 2, 3, 4), threshold=3,
                                   vector_length=ddp.vector_length, bit_width=ddp.bits)
    setup = round_setup(session=session, ddp_mechanism="skellam", ddp_l2_clip=1.0, ddp_epsilon=10.0, ddp_rounds=4,
                        ddp_min_contributors=4, ddp_max_contributors=4, ddp_colluding=0, ddp_bits=ddp.bits,
                        ddp_scale=ddp.scale)
    with pytest.raises(secagg.InvalidInputError, match="noise shared among 4 contributors"):
        setup.distributed_dp(100)


def test_the_transport_refuses_a_node_that_speaks_for_another_client():
    from simulation.engines.flower.transport import FlowerTransport

    session = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=(1, 2, 3), threshold=2,
                                   vector_length=4, bit_width=32)
    advertise = secagg.ClientSession(session, 2, masked_input=np.zeros(4, dtype=np.uint32)).advertise()
    transport = FlowerTransport(grid=None, node_of={1: 11, 2: 12, 3: 13}, stage_timeout=1.0, group_id="0")
    transport.answers = {1: secagg.wire.encode(advertise), 2: secagg.wire.encode(advertise)}
    assert transport.answer(2).sender == 2
    with pytest.raises(secagg.RemoteProtocolError, match="as client 2"):
        transport.answer(1)
