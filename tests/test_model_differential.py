"""The attack model's "honest client accepts" predicates are the real client's decisions.

:mod:`tests.attack_model` searches coordinator strategies against plain
predicates (:func:`accepts_masking`, :func:`accepts_view`,
:func:`accepts_unmask`, :func:`revealed`); the search's "no attack" verdicts
in :mod:`tests.test_adversary_search` mean something for the real code only
if those predicates are exactly what :class:`secagg.ClientSession` does.

This property test drives one real client through random small sessions
(complete graph or Harary k in {2, 4}, every valid t, max_corrupt c in 0..2,
active and passive mode) with random share forwarding, random survivor views,
random dropped lists and random sets of valid, wrong-view and garbage
consistency signatures, all as wire bytes, and checks at each step that the
client accepts exactly when the model (with the new global-quorum rule) says
so, refuses otherwise with a typed remote error, and, when it answers,
reveals exactly the shares the model predicts.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from secagg import (
    ClientSession,
    InvalidInputError,
    LocalProtocolError,
    ProtocolError,
    SessionConfig,
    wire,
)
from secagg.crypto import SigningKeyPair, random_bytes, sign
from secagg.keyschedule import consistency_payload
from secagg.messages import ConsistencyRequest, KeyDirectory, MaskedInputRequest, UnmaskRequest

from .attack_model import Instance, accepts_masking, accepts_unmask, accepts_view, revealed

LENGTH = 4
# One identity per possible client id, fixed for the test run: the fingerprint (which seeds
# the Harary graph) covers the verify keys, and the drawn data must not depend on chance.
IDENTITIES = [SigningKeyPair.generate() for _ in range(8)]


def _subset(draw, items) -> frozenset:
    items = sorted(items)
    if not items:
        return frozenset()
    return frozenset(draw(st.sets(st.sampled_from(items), max_size=len(items))))


def _mostly(draw, items) -> frozenset:
    """All of ``items``, or all but one (near the accept boundary), or any subset."""
    items = sorted(items)
    mode = draw(st.integers(0, 7))
    if not items or mode < 2:
        return _subset(draw, items)
    if mode < 5:
        return frozenset(items)
    return frozenset(items) - {draw(st.sampled_from(items))}


def _outcome(client: ClientSession, message):
    """(accepted, reply or error): the client's reply to the wire bytes of ``message``."""
    try:
        return True, wire.decode(wire.encode(client.handle(wire.encode(message))))
    except ProtocolError as error:
        assert not isinstance(error, LocalProtocolError), error
        return False, error


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_client_accepts_exactly_what_the_model_accepts(data):
    draw = data.draw
    n = draw(st.integers(4, 8), label="n")
    degree = draw(st.sampled_from([None] + [k for k in (2, 4) if k < n - 1]), label="degree")
    k = n - 1 if degree is None else degree
    threshold = draw(st.integers(k // 2 + 1, k + 1), label="t")
    max_corrupt = draw(st.integers(0, 2), label="c")
    active = draw(st.integers(0, 3), label="mode") > 0  # active 3 times in 4
    ids = list(range(n))
    # The session id fixes the Harary graph, so it is drawn too (generation must not depend on chance).
    session_id = draw(st.binary(min_size=32, max_size=32), label="session_id")
    identities = {i: IDENTITIES[i] for i in ids}
    try:
        config = SessionConfig(
            session_id=session_id, participants=tuple(ids), threshold=threshold, vector_length=LENGTH,
            degree=degree, active=active, verify_keys={i: identities[i].verify_key for i in ids},
            max_corrupt=max_corrupt,
        )
    except InvalidInputError:
        assume(False)  # e.g. 2t - n <= c on the complete graph in active mode
    inst = Instance(config.neighbors, threshold, frozenset(), 0, rule="new", max_corrupt=max_corrupt)
    assert inst.quorum == config.consistency_quorum
    rng = np.random.default_rng(0)  # the inputs are public test data
    clients = {
        i: ClientSession(config, i, signing_key=identities[i].seed,
                         masked_input=rng.integers(0, 2**32, LENGTH, dtype=np.uint32))
        for i in ids
    }
    fp = config.fingerprint
    adverts = {i: c.advertise() for i, c in clients.items()}
    shares = {
        i: clients[i].handle(wire.encode(KeyDirectory(fp, i, {v: adverts[v].keys for v in config.closed_neighborhood(i)})))
        for i in ids
    }
    w = draw(st.sampled_from(ids), label="w")
    neighbours = config.neighbors[w]
    everyone = frozenset(ids)

    # Round 2: whose shares reach w.
    masking = _mostly(draw, neighbours)
    accepted, reply = _outcome(clients[w], MaskedInputRequest(fp, w, {v: shares[v].ciphertexts[w] for v in masking}))
    assert accepted == accepts_masking(inst, w, masking), (masking, reply)
    event(f"masked input accepted: {accepted}")
    if not accepted:
        return

    # Active: the survivor view w is asked to sign.
    near = _mostly(draw, masking if draw(st.integers(0, 3)) else neighbours)
    view = near | _mostly(draw, everyone - neighbours - {w}) | ({w} if draw(st.integers(0, 7)) else set())
    signed = None
    if active:
        accepted, reply = _outcome(clients[w], ConsistencyRequest(fp, w, view))
        assert accepted == accepts_view(inst, w, masking, view), (masking, view, reply)
        event(f"view signed: {accepted}")
        if not accepted:
            return
        signed = view

    # Unmasking: survivors, dropped, signatures.
    survivors = view if draw(st.integers(0, 5)) else view ^ {draw(st.sampled_from(ids))}
    dropped = (masking - survivors) | _subset(draw, everyone - neighbours - survivors - {w})
    if draw(st.integers(0, 5)) == 0:
        dropped = dropped ^ {draw(st.sampled_from(ids))}
    signatures, valid = {}, {}
    if active:
        ranked = draw(st.permutations(sorted(survivors)))
        # Everyone (but one), or a count between t - 1 and Q (where the two rules differ), or any count.
        low, high = [(len(ranked) - 1, len(ranked)), (threshold - 1, inst.quorum), (0, len(ranked))][
            draw(st.integers(0, 2))]
        signers = frozenset(ranked[: draw(st.integers(max(low, 0), max(min(high, len(ranked)), 0)))])
        if draw(st.integers(0, 3)) == 0:
            signers |= _subset(draw, everyone)  # signers outside the survivor set
        bad = _subset(draw, signers) if draw(st.integers(0, 3)) == 0 else frozenset()
        for z in sorted(signers):
            if z in bad and draw(st.booleans()):
                other = survivors ^ {draw(st.sampled_from(ids))}
                signatures[z] = sign(identities[z].seed, consistency_payload(fp, other))
            elif z in bad:
                signatures[z] = random_bytes(64)
            else:
                signatures[z] = sign(identities[z].seed, consistency_payload(fp, survivors))
            valid[z] = z not in bad
    request = UnmaskRequest(fp, w, survivors, dropped, signatures)
    accepted, reply = _outcome(clients[w], request)
    expected = accepts_unmask(inst, w, masking, signed, survivors, dropped, valid, active=active)
    assert accepted == expected, (masking, view, survivors, dropped, sorted(valid.items()), reply)
    event(f"{'active' if active else 'passive'} unmasking answered: {accepted}")
    if accepted:
        b_owners, sk_owners = revealed(w, masking, survivors)
        assert set(reply.self_mask_shares) == b_owners
        assert set(reply.key_shares) == sk_owners
