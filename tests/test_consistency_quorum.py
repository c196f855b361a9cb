"""Active mode: the global consistency quorum, and masked inputs / unmask responses bound to their session.

The split-view attack itself (hand-played coordinator, gathered shares checked) is in
tests/test_split_view_attack.py and the strategy search in tests/test_adversary_search.py;
these are the unit-level contracts they rely on (docs/security.md, steps 3 and 4).
"""

from dataclasses import replace

import numpy as np
import pytest

from secagg import SessionConfig, find_parameters, new_session_id, wire
from secagg.errors import InvalidInputError, ThresholdNotMetError, VerificationError
from secagg.messages import MaskedInput, UnmaskResponse

from .harness import Deployment


def test_quorum_is_a_majority_plus_the_tolerated_colluders():
    base = dict(session_id=new_session_id(), vector_length=4, active=False)
    assert SessionConfig(participants=tuple(range(20)), threshold=3, degree=4, **base).consistency_quorum == 11
    assert SessionConfig(participants=tuple(range(20)), threshold=3, degree=4, max_corrupt=3,
                         **base).consistency_quorum == 12
    # the complete graph: t itself when t is already above (n + c)/2
    assert SessionConfig(participants=tuple(range(7)), threshold=6, **base).consistency_quorum == 6


@pytest.mark.parametrize("n, c", [(10, 3), (20, 5), (51, 10)])
def test_two_quorums_always_share_more_than_c_signers(n, c):
    q = SessionConfig(new_session_id(), tuple(range(n)), n, 4, max_corrupt=c).consistency_quorum
    assert 2 * q - n > c


def test_impossible_corruption_settings_are_refused():
    with pytest.raises(InvalidInputError, match="max_corrupt"):
        SessionConfig(new_session_id(), tuple(range(5)), 3, 4, max_corrupt=5)
    with pytest.raises(InvalidInputError, match="2t - n > max_corrupt"):
        SessionConfig(new_session_id(), tuple(range(5)), 3, 4, active=True, max_corrupt=1,
                      verify_keys={i: bytes(32) for i in range(5)})


def _to_unmask(d: Deployment):
    d.advertise()
    d.answer()  # KeyDirectory -> ShareKeys
    d.answer()  # MaskedInputRequest -> MaskedInput
    return d.answer()  # ConsistencyRequest -> ConsistencySignature; returns the UnmaskRequests


def test_neighbourhood_signatures_alone_no_longer_suffice_on_a_secagg_plus_graph():
    """Before the fix t signatures of N[u] were enough; now Q of the whole session are needed."""
    d = Deployment(n=12, threshold=3, degree=4, active=True, ids=range(12))
    unmask = _to_unmask(d)
    u = 0
    closed = d.config.closed_neighborhood(u)
    request = unmask[u]
    local = {v: s for v, s in request.signatures.items() if v in closed}
    assert len(local) >= d.config.threshold and len(local) < d.config.consistency_quorum
    with pytest.raises(ThresholdNotMetError, match="quorum"):
        d.clients[u].handle(wire.encode(replace(request, signatures=local)))
    # the honest request (every survivor's signature) is accepted by the same client state
    reply = d.clients[u].handle(wire.encode(request))
    assert isinstance(reply, UnmaskResponse) and reply.signature


def test_server_aborts_below_the_quorum():
    d = Deployment(n=12, threshold=3, degree=4, active=True, ids=range(12))
    d.advertise()
    d.answer()
    d.answer()
    silent = set(range(6))  # 6 of 12 sign: below the quorum 7, though every neighbourhood may hold t
    with pytest.raises(ThresholdNotMetError, match="quorum"):
        d.answer(silent=silent)


def test_full_round_with_quorum_is_exact():
    d = Deployment(n=12, threshold=3, degree=4, active=True, ids=range(12))
    unmask = _to_unmask(d)
    for i, message in unmask.items():
        d.server.receive(wire.encode(d.clients[i].handle(wire.encode(message))))
    d.server.advance()
    assert np.array_equal(d.server.result.ring_sum, d.exact_ring_sum(range(12)))


def _masked_inputs(d: Deployment):
    d.advertise()
    d.answer()
    replies = {}
    for i, message in sorted(d.outgoing.items()):
        replies[i] = d.clients[i].handle(wire.encode(message))
    return replies


def test_masked_input_relabelled_from_another_session_is_refused_in_active_mode():
    a = Deployment(n=5, threshold=3, active=True)
    b = Deployment(n=5, threshold=3, active=True, identities=a.identities)  # same sites and keys, new session
    from_a = _masked_inputs(a)
    _masked_inputs(b)
    moved = replace(from_a[1], session=b.config.fingerprint)
    with pytest.raises(VerificationError):
        b.server.receive(wire.encode(moved))


def test_masked_input_must_be_signed_by_its_sender_in_active_mode():
    d = Deployment(n=5, threshold=3, active=True)
    replies = _masked_inputs(d)
    with pytest.raises(VerificationError, match="unsigned"):
        d.server.receive(wire.encode(replace(replies[1], signature=b"")))
    with pytest.raises(VerificationError):  # client 2's signature under client 1's name
        d.server.receive(wire.encode(replace(replies[2], sender=1)))
    tampered = bytearray(replies[1].data)
    tampered[0] ^= 1
    with pytest.raises(VerificationError):
        d.server.receive(wire.encode(replace(replies[1], data=bytes(tampered))))
    d.server.receive(wire.encode(replies[1]))  # the genuine message still goes through: nothing was lost


def test_passive_mode_refuses_a_signature_it_cannot_check():
    d = Deployment(n=5, threshold=3)
    replies = _masked_inputs(d)
    with pytest.raises(VerificationError, match="not in active mode"):
        d.server.receive(wire.encode(replace(replies[1], signature=bytes(64))))


def test_unmask_response_is_signed_and_checked():
    d = Deployment(n=5, threshold=3, active=True)
    unmask = _to_unmask(d)
    replies = {i: d.clients[i].handle(wire.encode(m)) for i, m in unmask.items()}
    forged = replace(replies[1], self_mask_shares=dict(replies[1].self_mask_shares) | {1: 12345})
    with pytest.raises(VerificationError):
        d.server.receive(wire.encode(forged))
    assert all(isinstance(r, UnmaskResponse) and len(r.signature) == 64 for r in replies.values())


def test_find_parameters_reports_the_quorum_and_refuses_unreachable_ones():
    p = find_parameters(20, corrupt_fraction=0, dropout_fraction=0.05, malicious=True)
    assert p.consistency_quorum == 11 <= 20 - p.dropout_count
    from secagg.errors import InfeasibleParametersError

    with pytest.raises(InfeasibleParametersError, match="consistency quorum"):
        find_parameters(100, corrupt_fraction=0.2, dropout_fraction=0.45, malicious=True)


def test_masked_input_message_carries_the_signature_on_the_wire():
    d = Deployment(n=5, threshold=3, active=True)
    replies = _masked_inputs(d)
    decoded = wire.decode(wire.encode(replies[1]))
    assert isinstance(decoded, MaskedInput) and decoded == replies[1]
