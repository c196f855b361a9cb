"""The session contract, shared by both client/server pairs (masking and HE) and pinned to the tables.

For {masking, HE} x {client, server} x {passive, active}, one real session is
run to completion; before every delivery, each targeted session is first sent

* a message of the wrong **type** (one its role never accepts: a message of the
  opposite direction),
* a message of the wrong **round** (every other message type its role's table
  accepts, addressed and fingerprinted correctly),
* the real message with another **session** fingerprint,
* the real message for another **party** (client: another recipient; server:
  a sender that may not send in this stage),

and each must raise the typed error the contract names (a subclass of
:class:`secagg.ProtocolError`) and leave the public state exactly as it was.
The session then still completes and releases the exact sum, and every
transition it made is a row of its role's table, with the reply the row names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pytest

import secagg
from secagg import he
from secagg import transitions as masking_table
from secagg.errors import (
    LocalProtocolError,
    ProtocolError,
    SessionMismatchError,
    UnexpectedMessageError,
)
from secagg.he import transitions as he_table
from secagg.he.messages import HEAdvertisedKey
from secagg.tables import START, Transitions, answer_stages

from .harness import Deployment
from .test_he_harness import HEDeployment

OTHER_SESSION = b"\xee" * 32
STRANGER = 10**6  # an id that is no participant of any deployment here


@dataclass
class Path:
    """One protocol path as the contract sees it."""

    name: str
    parties: dict  # id -> client session
    server: object
    encode: Callable
    client_table: Callable  # client session -> its Transitions
    server_table: Transitions
    check_result: Callable  # AggregateResult -> None (raises unless it is the exact sum)


def masking_path(active: bool) -> Path:
    d = Deployment(n=5, threshold=3, active=active, length=8)
    table = masking_table.SERVER_ACTIVE if active else masking_table.SERVER_PASSIVE

    def check(result) -> None:
        assert result.survivors == frozenset(d.ids)
        np.testing.assert_array_equal(result.ring_sum, d.exact_ring_sum(d.ids))

    return Path("masking", d.clients, d.server, secagg.wire.encode,
                lambda c: masking_table.CLIENT_ACTIVE if active else masking_table.CLIENT_PASSIVE, table, check)


def he_path(active: bool) -> Path:
    pytest.importorskip("tenseal")
    d = HEDeployment(n=3, threshold=2, active=active, length=8)

    def check(result) -> None:
        assert result.survivors == frozenset(d.ids)
        np.testing.assert_array_equal(result.ring_sum.view(np.int64), d.integer_sum(d.ids))

    return Path("he", d.sites, d.server, he.wire.encode,
                lambda s: he_table.KEY_HOLDER if s.is_key_holder else he_table.SITE, he_table.COORDINATOR, check)


def public_state(session) -> dict:
    """Every public, non-callable attribute (a property that raises is recorded by its error type)."""
    snapshot = {}
    for name in dir(session):
        if name.startswith("_"):
            continue
        try:
            value = getattr(session, name)
        except ProtocolError as exc:
            value = ("raises", type(exc))
        if not callable(value):
            snapshot[name] = value
    return snapshot


_FILL = {"bytes": b"\x01" * 32, "frozenset": frozenset(), "HEAdvertisedKey": HEAdvertisedKey(b"\x02" * 32)}


def forge(kind: type, session: bytes, party: int):
    """A message of ``kind`` with the right session and party; every other required field a placeholder."""
    values = {}
    for f in dataclasses.fields(kind):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        if f.name == "session":
            values[f.name] = session
        elif f.name in ("sender", "recipient") or f.type == "int":
            values[f.name] = party
        else:
            values[f.name] = _FILL[f.type]
    return kind(**values)


def received_types(table: Transitions) -> set:
    return {incoming for (_, incoming) in table.rows if incoming is not START}


def refuse(session, deliver: Callable, message, error: type) -> None:
    """``deliver(message)`` raises exactly ``error`` (a ProtocolError) and changes no public state."""
    before = public_state(session)
    with pytest.raises(ProtocolError) as caught:
        deliver(message)
    assert type(caught.value) is error, f"{type(message).__name__}: {caught.value!r}"
    assert public_state(session) == before


def probe_client(path: Path, cid: int, message) -> None:
    """The four refusals of the contract, against client ``cid`` about to receive ``message``."""
    client = path.parties[cid]
    table = path.client_table(client)
    fingerprint = message.session
    # wrong type: a client -> server message, which no client accepts
    for kind in received_types(path.server_table):
        refuse(client, client.handle, forge(kind, fingerprint, cid), UnexpectedMessageError)
    # wrong round: every other server message this role accepts
    for kind in received_types(table) - {type(message)}:
        refuse(client, client.handle, forge(kind, fingerprint, cid), UnexpectedMessageError)
    # wrong session, in wire form as a transport delivers it
    refuse(client, client.handle, path.encode(replace(message, session=OTHER_SESSION)), SessionMismatchError)
    # wrong recipient: another participant's copy
    other = next(i for i in path.parties if i != cid)
    refuse(client, client.handle, path.encode(replace(message, recipient=other)), SessionMismatchError)


def probe_server(path: Path, message) -> None:
    """The four refusals of the contract, against the server about to receive ``message``."""
    server = path.server
    fingerprint, sender = message.session, message.sender
    client_table = path.client_table(path.parties[sender])
    # wrong type: a server -> client message, which the server never accepts
    for kind in received_types(client_table):
        refuse(server, server.receive, forge(kind, fingerprint, sender), UnexpectedMessageError)
    # wrong round: every other client message the server collects
    for kind in received_types(path.server_table) - {type(message)}:
        refuse(server, server.receive, forge(kind, fingerprint, sender), UnexpectedMessageError)
    # wrong session
    refuse(server, server.receive, path.encode(replace(message, session=OTHER_SESSION)), SessionMismatchError)
    # wrong party: a sender that may not send in this stage
    refuse(server, server.receive, path.encode(replace(message, sender=STRANGER)), UnexpectedMessageError)


def run_contract(path: Path, *, clients: bool, server: bool) -> set:
    """Run the session to completion, probing before every delivery; return the transitions taken."""
    taken = set()
    any_server_message = next(iter(received_types(path.client_table(next(iter(path.parties.values()))))))
    if clients:  # before advertise(): INIT accepts no message at all
        for cid, client in path.parties.items():
            refuse(client, client.handle, forge(any_server_message, path.server.config.fingerprint, cid),
                   UnexpectedMessageError)
    replies = {}
    for cid, client in sorted(path.parties.items()):
        before = client.state
        replies[cid] = client.advertise()
        taken.add((path.client_table(client), before, START, client.state, type(replies[cid])))
    while True:
        if server:
            probe_server(path, replies[min(replies)])
        stage = path.server.stage
        for reply in replies.values():
            path.server.receive(path.encode(reply))
        outgoing = path.server.advance()
        sent = {type(m) for m in outgoing.values()}
        taken.add((path.server_table, stage, path.server_table.receives(stage), path.server.stage,
                   sent.pop() if sent else None))
        assert not sent, "one stage sends one message type"
        if not outgoing:
            break
        replies = {}
        for cid, message in sorted(outgoing.items()):
            client = path.parties[cid]
            if clients:
                probe_client(path, cid, message)
            before = client.state
            replies[cid] = client.handle(path.encode(message))
            taken.add((path.client_table(client), before, type(message), client.state, type(replies[cid])))
    path.check_result(path.server.result)
    # terminal: nothing more is accepted, and nothing changes
    if server:
        for kind in received_types(path.server_table):
            refuse(path.server, path.server.receive, forge(kind, path.server.config.fingerprint, min(path.parties)),
                   UnexpectedMessageError)
        with pytest.raises(LocalProtocolError):
            path.server.advance()
    if clients:
        for cid, client in path.parties.items():
            refuse(client, client.handle, forge(any_server_message, path.server.config.fingerprint, cid),
                   UnexpectedMessageError)
    return taken


PATHS = {"masking": masking_path, "he": he_path}


@pytest.mark.parametrize("active", [False, True], ids=["passive", "active"])
@pytest.mark.parametrize("role", ["client", "server"])
@pytest.mark.parametrize("name", sorted(PATHS))
def test_refused_messages_leave_the_session_unchanged_and_it_still_completes(name, role, active):
    path = PATHS[name](active)
    taken = run_contract(path, clients=role == "client", server=role == "server")
    for table, state, incoming, after, reply in taken:
        assert table.step(state, incoming) == (after, reply), (state, incoming)


@pytest.mark.parametrize("active", [False, True], ids=["passive", "active"])
@pytest.mark.parametrize("name", sorted(PATHS))
def test_a_full_run_takes_every_row_of_the_server_table(name, active):
    path = PATHS[name](active)
    taken = run_contract(path, clients=False, server=False)
    server_rows = {(state, incoming) for table, state, incoming, _, _ in taken if table is path.server_table}
    assert server_rows == set(path.server_table.rows)


def test_masking_tables_pin_the_stage_names_every_engine_uses():
    assert secagg.STAGES == ("advertise", "share", "mask", "consistency", "unmask")
    assert secagg.ANSWER_STAGE == {
        secagg.KeyDirectory: "share",
        secagg.MaskedInputRequest: "mask",
        secagg.ConsistencyRequest: "consistency",
        secagg.UnmaskRequest: "unmask",
    }
    assert he.HE_STAGES == ("advertise", "context", "upload", "decrypt")
    assert he.HE_ANSWER_STAGE == {he.HEKeyDirectory: "context", he.HEContextDelivery: "upload",
                                  he.HEDecryptRequest: "decrypt"}


PAIRS = [
    (masking_table.CLIENT_PASSIVE, masking_table.SERVER_PASSIVE),
    (masking_table.CLIENT_ACTIVE, masking_table.SERVER_ACTIVE),
    (he_table.KEY_HOLDER, he_table.COORDINATOR),
    (he_table.SITE, he_table.COORDINATOR),
]


@pytest.mark.parametrize("client_table, server_table", PAIRS)
def test_client_and_server_tables_agree(client_table, server_table):
    """Every client row answers a message the server sends, with what the next server stage collects."""
    sends = {sent: after for (_, _), (after, sent) in server_table.rows.items() if sent is not None}
    for (_, incoming), (_, reply) in client_table.rows.items():
        if incoming is START:
            assert server_table.receives(server_table.initial) is reply
        else:
            assert server_table.receives(sends[incoming]) is reply


def test_active_mode_adds_exactly_the_consistency_round():
    extra_client = set(masking_table.CLIENT_ACTIVE.rows) - set(masking_table.CLIENT_PASSIVE.rows)
    extra_server = set(masking_table.SERVER_ACTIVE.rows) - set(masking_table.SERVER_PASSIVE.rows)
    assert {incoming for _, incoming in extra_client} == {secagg.ConsistencyRequest, secagg.UnmaskRequest}
    assert {incoming for _, incoming in extra_server} == {secagg.ConsistencySignature}


def test_a_table_must_be_deterministic():
    state = masking_table.ClientState
    with pytest.raises(ValueError, match="two message types"):
        Transitions({(state.INIT, START): (state.ADVERTISED, secagg.AdvertiseKeys),
                     (state.ADVERTISED, secagg.KeyDirectory): (state.SHARED, secagg.ShareKeys),
                     (state.ADVERTISED, secagg.UnmaskRequest): (state.DONE, secagg.UnmaskResponse)},
                    aborted=state.ABORTED, carries_input=secagg.ShareKeys)


def test_a_table_names_exactly_one_transition_that_carries_the_input():
    stage = masking_table.ServerStage
    with pytest.raises(ValueError, match="exactly one transition must carry"):
        Transitions({(stage.ADVERTISE, secagg.AdvertiseKeys): (stage.SHARE, secagg.KeyDirectory)},
                    aborted=stage.ABORTED, carries_input=secagg.MaskedInput)


def test_modes_that_disagree_on_the_answering_stage_are_refused():
    stage = masking_table.ServerStage
    early = Transitions({(stage.ADVERTISE, secagg.AdvertiseKeys): (stage.SHARE, secagg.KeyDirectory)},
                        aborted=stage.ABORTED, carries_input=secagg.AdvertiseKeys)
    late = Transitions({(stage.ADVERTISE, secagg.AdvertiseKeys): (stage.MASK, secagg.KeyDirectory)},
                       aborted=stage.ABORTED, carries_input=secagg.AdvertiseKeys)
    with pytest.raises(ValueError, match="answered in two stages"):
        answer_stages(early, late)
