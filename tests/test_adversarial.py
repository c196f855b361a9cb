"""A malicious server or network: every attack is refused with a typed error, losing nothing."""

from dataclasses import replace

import numpy as np
import pytest

import secagg
from secagg import run_local, wire
from secagg.errors import (InvalidInputError, MalformedMessageError, ProtocolError, SessionMismatchError,
                           ThresholdNotMetError, UnexpectedMessageError, UnsafeRequestError, VerificationError)
from secagg.messages import (
    AdvertisedKeys,
    ConsistencyRequest,
    KeyDirectory,
    MaskedInput,
    MaskedInputRequest,
    UnmaskRequest,
)

from .harness import Deployment


def _updates(n=6, length=8):
    rng = np.random.default_rng(1)
    return {i: rng.uniform(-1, 1, length) for i in range(n)}


# --- the overlap attack: both shares of one client ---------------------------------


@pytest.mark.parametrize("active", [False, True])
def test_overlap_attack_refused_by_every_client(active):
    victim = 2

    def attack(recipient, message):
        if isinstance(message, UnmaskRequest):
            return replace(message, dropped=message.dropped | {victim})
        return message

    with pytest.raises(UnsafeRequestError, match="both surviving and dropped"):
        run_local(_updates(), threshold=4, tamper=attack, active=active)


def test_overlap_attack_against_one_client_is_refused_and_the_round_still_completes():
    victim = 2

    def attack(recipient, message):
        if isinstance(message, UnmaskRequest) and recipient == 4:
            return replace(message, dropped=message.dropped | {victim})
        return message

    updates = _updates()
    result = run_local(updates, threshold=4, tamper=attack, refusals="drop")
    assert isinstance(result.refusals[4], UnsafeRequestError)
    assert 4 in result.survivors  # its input is in the sum; it only refused to reveal more
    exact = sum(np.clip(updates[i], -1, 1) for i in result.survivors)
    assert np.all(np.abs(result.aggregate - exact) <= len(result.survivors) * result.resolution)


def _split_unmask_requests(liars, victim=2, n=7, threshold=4):
    """Shares routed honestly; the unmasking request says ``victim`` dropped to ``liars`` only.

    Returns (b-shares, key shares) of the victim that reached the server.
    """

    def split(recipient, message):
        if isinstance(message, UnmaskRequest) and recipient in liars:
            return replace(message, survivors=message.survivors - {victim}, dropped=message.dropped | {victim})
        return message

    d = Deployment(n=n, threshold=threshold, ids=range(n))
    d.advertise()
    d.answer()
    unmask = d.answer()
    self_mask_shares = key_shares = 0
    for i, message in unmask.items():
        try:
            reply = d.clients[i].handle(wire.encode(split(i, message)))
        except UnsafeRequestError:
            continue  # a client noticing the lie refuses and reveals nothing
        key_shares += victim in reply.key_shares
        self_mask_shares += victim in reply.self_mask_shares
    return self_mask_shares, key_shares


def test_split_unmask_requests_over_honest_share_routing_leave_one_secret_below_threshold():
    """Passive mode, complete graph, n = 7, t = 4, every share routed to every client.

    The server tells a set L of clients that client 2 dropped and the others that
    it survived. Each honest client answers consistently with its own request:
    L reveal key shares of client 2, the others its self-mask shares. With
    t > n/2 the two groups cannot both reach t, so for every L (here: each size
    1..6) one of client 2's secrets stays below t shares.

    This only shows that lying in the unmasking round alone is not enough. A
    server that *also* routes shares unevenly does unmask a client in passive
    mode (``tests/test_split_view_attack.py``,
    ``test_passive_mode_routing_trick_unmasks_a_client_outside_the_semi_honest_model``):
    that server is outside the semi-honest model, and active mode is the defence.
    """
    threshold = 4
    b_shares, key_shares = _split_unmask_requests({0, 1, 3}, threshold=threshold)
    assert key_shares < threshold
    others = [0, 1, 3, 4, 5, 6]
    for size in range(1, len(others) + 1):
        b_shares, key_shares = _split_unmask_requests(set(others[:size]), threshold=threshold)
        assert b_shares + key_shares == 7  # nobody refused: every lie was consistent with its recipient's view
        assert min(b_shares, key_shares) < threshold


def test_request_listing_unknown_ids_refused():
    def attack(recipient, message):
        if isinstance(message, UnmaskRequest):
            return replace(message, dropped=message.dropped | {999})
        return message

    with pytest.raises(UnsafeRequestError, match="unknown"):
        run_local(_updates(), threshold=4, tamper=attack)


def test_client_listed_as_dropped_refuses():
    def attack(recipient, message):
        if isinstance(message, UnmaskRequest):
            return replace(message, survivors=message.survivors - {recipient}, dropped=message.dropped | {recipient})
        return message

    with pytest.raises(UnsafeRequestError):
        run_local(_updates(), threshold=4, tamper=attack)


def test_fewer_than_t_survivors_refused_by_client():
    def attack(recipient, message):
        if isinstance(message, UnmaskRequest):
            keep = frozenset(sorted(message.survivors)[:2]) | {recipient}
            return replace(message, survivors=keep, dropped=message.dropped | (message.survivors - keep))
        return message

    with pytest.raises(ThresholdNotMetError):
        run_local(_updates(), threshold=4, tamper=attack)


def test_request_disagreeing_with_key_exchange_refused():
    """A neighbour that shared keys is left out of both lists: refuse."""

    def attack(recipient, message):
        if isinstance(message, UnmaskRequest):
            return replace(message, survivors=message.survivors - {5 if recipient != 5 else 4})
        return message

    with pytest.raises(UnsafeRequestError, match="disagrees"):
        run_local(_updates(), threshold=4, tamper=attack)


def test_client_answers_only_one_unmask_request():
    d = Deployment(n=5, threshold=3)
    d.advertise()
    d.answer()
    unmask = d.answer()
    client = d.clients[1]
    client.handle(wire.encode(unmask[1]))
    other_view = replace(unmask[1], survivors=unmask[1].survivors - {2}, dropped=frozenset({2}))
    with pytest.raises(UnexpectedMessageError):
        client.handle(wire.encode(other_view))


# --- tampered, replayed, reordered, misrouted, cross-session -------------------------


def test_tampered_share_ciphertext_refused():
    def attack(recipient, message):
        if isinstance(message, MaskedInputRequest) and message.ciphertexts:
            sender = next(iter(message.ciphertexts))
            ct = bytearray(message.ciphertexts[sender])
            ct[-1] ^= 1
            return replace(message, ciphertexts={**message.ciphertexts, sender: bytes(ct)})
        return message

    with pytest.raises(VerificationError, match="authentication"):
        run_local(_updates(), threshold=4, tamper=attack)


def test_ciphertext_swapped_between_senders_refused():
    def attack(recipient, message):
        if isinstance(message, MaskedInputRequest) and len(message.ciphertexts) >= 2:
            a, b = list(message.ciphertexts)[:2]
            cts = dict(message.ciphertexts)
            cts[a], cts[b] = cts[b], cts[a]
            return replace(message, ciphertexts=cts)
        return message

    with pytest.raises(VerificationError):
        run_local(_updates(), threshold=4, tamper=attack)


def test_misrouted_message_refused():
    def attack(recipient, message):
        if isinstance(message, MaskedInputRequest):
            return replace(message, recipient=(recipient + 1) % 6)
        return message

    with pytest.raises(SessionMismatchError, match="addressed to client"):
        run_local(_updates(), threshold=4, tamper=attack)


def test_ciphertexts_for_another_recipient_refused():
    d = Deployment(n=5, threshold=3)
    d.advertise()
    requests = d.answer()
    stolen = replace(requests[2], recipient=1)  # ciphertexts addressed to 2, delivered to 1
    with pytest.raises((VerificationError, UnsafeRequestError)):
        d.clients[1].handle(wire.encode(stolen))


def test_replayed_and_reordered_messages_refused_by_client():
    d = Deployment(n=5, threshold=3)
    directory = d.advertise()
    d.clients[1].handle(wire.encode(directory[1]))
    with pytest.raises(UnexpectedMessageError):  # replay
        d.clients[1].handle(wire.encode(directory[1]))
    early_unmask = UnmaskRequest(d.config.fingerprint, 2, frozenset(d.ids), frozenset())
    with pytest.raises(UnexpectedMessageError):  # reordered: unmasking before shares
        d.clients[2].handle(wire.encode(early_unmask))


def test_cross_session_messages_refused():
    a = Deployment(n=5, threshold=3)
    b = Deployment(n=5, threshold=3)
    a_dir = a.advertise()
    b.advertise()
    with pytest.raises(SessionMismatchError, match="session"):
        b.clients[1].handle(wire.encode(a_dir[1]))
    # ... and at the server: a's client message into b's server
    reply = a.clients[1].handle(wire.encode(a_dir[1]))
    with pytest.raises(SessionMismatchError):
        b.server.receive(wire.encode(reply))


def test_same_parameters_new_session_id_changes_fingerprint():
    a = Deployment(n=5, threshold=3, session_id=bytes(32))
    b = Deployment(n=5, threshold=3, session_id=bytes(31) + b"\x01")
    assert a.config.fingerprint != b.config.fingerprint


def test_server_rejects_duplicates_stale_unknown_and_malformed_without_losing_state():
    d = Deployment(n=5, threshold=3)
    advert = d.clients[1].advertise()
    d.server.receive(wire.encode(advert))
    with pytest.raises(UnexpectedMessageError, match="duplicate"):
        d.server.receive(wire.encode(advert))
    with pytest.raises(UnexpectedMessageError):
        d.server.receive(wire.encode(replace(advert, sender=77)))  # unknown id
    with pytest.raises(MalformedMessageError):
        d.server.receive(wire.encode(advert)[:-3])
    for i in d.ids[1:]:
        d.server.receive(wire.encode(d.clients[i].advertise()))
    directory = d.server.advance()
    with pytest.raises(UnexpectedMessageError):  # stale: round-0 message in round 1
        d.server.receive(wire.encode(advert))
    d.outgoing = directory
    d.answer()
    d.answer()
    d.answer()
    assert d.server.stage is secagg.ServerStage.DONE
    assert np.array_equal(d.server.result.ring_sum, d.exact_ring_sum(d.ids))


def test_server_refuses_a_round_0_key_another_client_already_advertised():
    """A client that copies another's advertised key (to be handed that client's shares) is refused by
    the server in round 0 itself, not only later by the clients checking the directory."""
    d = Deployment(n=5, threshold=3)
    first = d.clients[d.ids[0]].advertise()
    d.server.receive(wire.encode(first))
    second = d.clients[d.ids[1]].advertise()
    for copied in (replace(second, masking_key=first.masking_key), replace(second, encryption_key=first.masking_key)):
        with pytest.raises(VerificationError, match="already in use"):
            d.server.receive(wire.encode(copied))
    d.server.receive(wire.encode(second))  # the honest message still goes through: state unchanged
    assert d.server.released == frozenset() and d.ids[1] not in d.server.expected_senders


def test_server_rejects_wrong_vector_length_and_width():
    d = Deployment(n=4, threshold=3, length=16)
    d.advertise()
    requests = d.answer()
    reply = d.clients[1].handle(wire.encode(requests[1]))
    with pytest.raises(InvalidInputError, match="elements"):
        d.server.receive(wire.encode(replace(reply, data=reply.data[:-4])))
    with pytest.raises(InvalidInputError, match="bit"):
        d.server.receive(wire.encode(MaskedInput(reply.session, 1, 64, reply.data + reply.data)))
    d.server.receive(wire.encode(reply))  # the genuine message is still accepted


def test_server_rejects_share_messages_with_wrong_recipients():
    d = Deployment(n=5, threshold=3)
    directory = d.advertise()
    reply = d.clients[1].handle(wire.encode(directory[1]))
    fewer = replace(reply, ciphertexts={k: v for k, v in reply.ciphertexts.items() if k != 2})
    with pytest.raises(VerificationError, match="neighbours"):
        d.server.receive(wire.encode(fewer))


def test_key_directory_substituting_own_keys_refused():
    d = Deployment(n=5, threshold=3)
    directory = d.advertise()
    mine = directory[1].keys[1]
    forged = AdvertisedKeys(mine.masking_key, mine.encryption_key)
    with pytest.raises(VerificationError, match="own keys"):
        d.clients[1].handle(wire.encode(replace(directory[1], keys={**directory[1].keys, 1: forged})))


def test_key_directory_repeating_keys_refused():
    d = Deployment(n=5, threshold=3)
    directory = d.advertise()
    keys = dict(directory[1].keys)
    keys[3] = keys[2]
    with pytest.raises(VerificationError, match="repeats"):
        d.clients[1].handle(wire.encode(replace(directory[1], keys=keys)))


def test_key_directory_too_small_refused():
    d = Deployment(n=5, threshold=3)
    directory = d.advertise()
    keys = {k: v for k, v in directory[1].keys.items() if k in (1, 2)}
    with pytest.raises(ThresholdNotMetError):
        d.clients[1].handle(wire.encode(replace(directory[1], keys=keys)))


def test_refused_message_leaves_client_state_unchanged():
    d = Deployment(n=5, threshold=3)
    directory = d.advertise()
    bad = replace(directory[1], keys={k: v for k, v in directory[1].keys.items() if k in (1, 2)})
    with pytest.raises(ThresholdNotMetError):
        d.clients[1].handle(wire.encode(bad))
    assert d.clients[1].state is secagg.ClientState.ADVERTISED
    d.clients[1].handle(wire.encode(directory[1]))  # the genuine message still works
    assert d.clients[1].state is secagg.ClientState.SHARED


# --- active mode: signatures and the consistency check ------------------------------


def test_active_mode_detects_key_substitution():
    """A man-in-the-middle server replaces client 3's keys with its own."""
    attacker = secagg.crypto.X25519KeyPair.generate()

    def attack(recipient, message):
        if isinstance(message, KeyDirectory) and recipient != 3 and 3 in message.keys:
            entry = message.keys[3]
            forged = AdvertisedKeys(attacker.public_key, entry.masking_key, entry.signature)
            return replace(message, keys={**message.keys, 3: forged})
        return message

    with pytest.raises(VerificationError, match="client 3"):
        run_local(_updates(), threshold=4, tamper=attack, active=True)


def test_active_mode_server_refuses_unsigned_keys():
    d = Deployment(n=4, threshold=3, active=True)
    advert = d.clients[1].advertise()
    with pytest.raises(VerificationError):
        d.server.receive(wire.encode(replace(advert, signature=bytes(64))))


def test_active_mode_unmask_survivors_must_match_signed_set():
    def attack(recipient, message):
        if isinstance(message, UnmaskRequest):
            moved = max(message.survivors - {recipient})
            return replace(message, survivors=message.survivors - {moved}, dropped=message.dropped | {moved})
        return message

    with pytest.raises(UnsafeRequestError, match="signed"):
        run_local(_updates(), threshold=4, tamper=attack, active=True)


def test_active_mode_requires_t_valid_consistency_signatures():
    def strip(recipient, message):
        if isinstance(message, UnmaskRequest):
            return replace(message, signatures={k: v for k, v in list(message.signatures.items())[:2]})
        return message

    with pytest.raises(ThresholdNotMetError):  # every client aborts itself; then the server
        run_local(_updates(), threshold=4, tamper=strip, active=True)

    def forge(recipient, message):
        if isinstance(message, UnmaskRequest):
            victim = next(iter(message.signatures))
            return replace(message, signatures={**message.signatures, victim: bytes(64)})
        return message

    with pytest.raises(VerificationError, match="consistency signature"):
        run_local(_updates(), threshold=4, tamper=forge, active=True)


def test_active_mode_consistency_request_with_unknown_ids_refused():
    def attack(recipient, message):
        if isinstance(message, ConsistencyRequest):
            return replace(message, survivors=message.survivors | {4242})
        return message

    with pytest.raises(UnsafeRequestError):
        run_local(_updates(), threshold=4, tamper=attack, active=True)


def test_withheld_messages_count_as_dropouts():
    def withhold(recipient, message):
        return None if isinstance(message, MaskedInputRequest) and recipient == 0 else message

    result = run_local(_updates(), threshold=4, tamper=withhold)
    assert 0 not in result.survivors


def test_every_refusal_is_a_protocol_error():
    for error in (UnsafeRequestError, VerificationError, SessionMismatchError, UnexpectedMessageError,
                  MalformedMessageError, ThresholdNotMetError):
        assert issubclass(error, ProtocolError)
