"""What a deployed Flower node refuses to let a malicious coordinator choose (issue 14 review).

1. A session it already joined: every rerun of one SessionConfig would give the coordinator
   one more consistency signature per honest node under the same fingerprint
   (tests/test_session_replay.py). The node journals every fingerprint before it advertises.
2. The colluders the quorum tolerates, and a graph and threshold that fall to them: a
   coordinator colluding with one registered site would send ``max-corrupt = 0`` (the quorum
   then tolerates zero colluders and the SAT model finds an attack, n = 9, k = 4, t = 3). The
   node's operator sets ``max-corrupt`` and the node recomputes the malicious-server bound.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("flwr")

import secagg  # noqa: E402
from simulation.engines.flower.transport import RoundSetup  # noqa: E402

from .attack_model import Instance, search_attack  # noqa: E402
from .flower_setups import round_setup  # noqa: E402


def _active(tmp_path, n, *, degree=None, threshold, max_corrupt, client_id=3):
    from simulation.federation.identity import add_to_registry, write_identity

    registry = tmp_path / "registry.json"
    identities = {cid: write_identity(tmp_path / "keys", f"site-{cid}") for cid in range(1, n + 1)}
    for identity in identities.values():
        add_to_registry(registry, identity)
    config = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=tuple(range(1, n + 1)),
                                  threshold=threshold, vector_length=5, bit_width=32, degree=degree, active=True,
                                  verify_keys={c: i.verify_key for c, i in identities.items()},
                                  max_corrupt=max_corrupt)
    context = SimpleNamespace(node_config={"signing-key": str(identities[client_id].signing_key_path),
                                           "registry": str(registry)}, run_config={})
    return config, context


def test_a_node_joins_one_session_fingerprint_once(tmp_path):
    from simulation.engines.flower.session_journal import JOURNAL_FILE, ReplayedSessionError, claim_session

    config, _ = _active(tmp_path, 3, threshold=2, max_corrupt=0)
    first = round_setup(session=config, client_id=3, site="site-3", max_summands=3, run_id="run-a", round_index=0)
    # The coordinator re-sends the *same* SessionConfig as "round 1" of the run.
    rerun = RoundSetup.from_record(round_setup(session=config, client_id=3, site="site-3", max_summands=3,
                                               run_id="run-a", round_index=1).to_record())
    assert rerun.session.fingerprint == first.session.fingerprint
    state = tmp_path / "state"
    claim_session(state, first.session.fingerprint)
    with pytest.raises(ReplayedSessionError, match="already joined"):
        claim_session(state, rerun.session.fingerprint)
    with pytest.raises(secagg.VerificationError):  # a typed refusal the node answers with
        claim_session(state, first.session.fingerprint)
    claim_session(state, secagg.new_session_id())  # another session is fine
    assert (state / JOURNAL_FILE).stat().st_mode & 0o777 == 0o600
    assert len((state / JOURNAL_FILE).read_text().split()) == 2


def test_a_node_refuses_a_quorum_and_graph_weaker_than_its_operator_assumes(tmp_path):
    from simulation.engines.flower.client_app import node_signing_key

    n, degree, threshold = 9, 4, 3
    config, context = _active(tmp_path, n, degree=degree, threshold=threshold, max_corrupt=0)
    setup = RoundSetup.from_record(round_setup(session=config, client_id=3, site="site-3", max_summands=n).to_record())
    # With max-corrupt = 0 the quorum is 5 of 9, and one registered site colluding far from the victim
    # unmasks it in the SAT model: so a node whose operator assumes one colluder must refuse.
    graph, victim = config.neighbors, 3
    far = sorted(set(graph) - graph[victim] - {victim})
    witnesses = [c for c in far if search_attack(Instance(graph, threshold, frozenset({c}), victim, rule="new",
                                                          max_corrupt=setup.session.max_corrupt)) is not None]
    assert witnesses
    context.node_config["max-corrupt"] = 1
    with pytest.raises(secagg.VerificationError, match="max_corrupt"):
        node_signing_key(context, setup)
    # Declaring the colluder is not enough either: k = 4, t = 3 falls to one corrupt neighbour.
    declared, context2 = _active(tmp_path / "declared", n, degree=degree, threshold=threshold, max_corrupt=1)
    context2.node_config["max-corrupt"] = 1
    setup2 = RoundSetup.from_record(round_setup(session=declared, client_id=3, site="site-3", max_summands=n).to_record())
    with pytest.raises(secagg.VerificationError, match="failure bound"):
        node_signing_key(context2, setup2)
    # The complete graph with 2t - n > 1 is what such a node accepts.
    safe, context3 = _active(tmp_path / "safe", n, threshold=6, max_corrupt=1)
    context3.node_config["max-corrupt"] = 1
    setup3 = RoundSetup.from_record(round_setup(session=safe, client_id=3, site="site-3", max_summands=n).to_record())
    assert len(node_signing_key(context3, setup3)) == 32
