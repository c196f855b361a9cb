"""The shared in-process message loop (secagg.exchange.run_exchange).

Invariant: a client whose message the server rejects (here: one replaying another client's
AdvertiseKeys) is recorded as refused and silenced; the session goes on without it, and the
sum is exactly the other survivors' inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import secagg
from secagg.exchange import ExchangeRecord, run_exchange
from secagg import ANSWER_STAGE


class _Replayer:
    """A client that advertises another client's keys (as a malicious node might)."""

    def __init__(self, stolen) -> None:
        self.stolen = stolen

    def advertise(self):
        return self.stolen

    def handle(self, data):  # pragma: no cover - it never gets this far
        raise AssertionError("a rejected client must be silenced")


class _Advertised:
    """An honest client whose AdvertiseKeys was produced already (so it can also be replayed)."""

    def __init__(self, client) -> None:
        self.client, self.message = client, client.advertise()

    def advertise(self):
        return self.message

    def handle(self, data):
        return self.client.handle(data)


def _session(n=4, threshold=3, length=16):
    encoder = secagg.FixedPointEncoder.create(clip=1.0, max_summands=n)
    config = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=tuple(range(1, n + 1)),
                                  threshold=threshold, vector_length=length, bit_width=encoder.bit_width)
    rings = {i: encoder.encode(np.full(length, i / 10)).ring for i in config.participants}
    clients = {i: secagg.ClientSession(config, i, masked_input=rings[i]) for i in config.participants}
    return config, encoder, rings, clients


def test_a_client_whose_message_the_server_rejects_is_out_and_the_sum_stays_exact():
    config, encoder, rings, clients = _session()
    clients[1] = _Advertised(clients[1])
    clients[4] = _Replayer(clients[1].message)
    server = secagg.ServerSession(config)
    record = run_exchange(server.receive, server.advance, clients, stages=secagg.STAGES,
                          answer_stage=ANSWER_STAGE, encode=secagg.wire.encode)
    assert isinstance(record.refused[4], secagg.RemoteProtocolError)
    assert record.uploaded["advertise"] == [1, 2, 3]
    assert server.result.survivors == frozenset({1, 2, 3})
    expected = sum(rings[i].astype(np.uint64) for i in (1, 2, 3)) % 2**config.bit_width
    np.testing.assert_array_equal(server.result.ring_sum, expected)


def test_with_refusals_raise_the_rejection_propagates():
    config, _, _, clients = _session()
    clients[1] = _Advertised(clients[1])
    clients[4] = _Replayer(clients[1].message)
    server = secagg.ServerSession(config)
    record = ExchangeRecord.empty(secagg.STAGES)
    with pytest.raises(secagg.RemoteProtocolError):
        run_exchange(server.receive, server.advance, clients, stages=secagg.STAGES, answer_stage=ANSWER_STAGE,
                     encode=secagg.wire.encode, refusals="raise", record=record)
    assert record.uploaded["advertise"] == [1, 2, 3]  # the caller keeps what moved before the error
