"""Wire format: canonical round trips, and arbitrary bytes never crash the decoder."""

import struct

import pytest
from hypothesis import HealthCheck, settings

from secagg import messages as m
from secagg import wire
from secagg.errors import MalformedMessageError
from secagg.shamir import PRIME

from .strategies import messages
from .wire_properties import wire_property_tests

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


(test_roundtrip_is_exact_and_canonical, test_arbitrary_bytes_decode_or_raise_protocol_error,
 test_mutated_messages_decode_canonically_or_raise) = wire_property_tests(wire, messages, FUZZ)


SESSION = bytes(range(32))


def test_header_and_version_are_checked():
    data = bytearray(wire.encode(m.ConsistencySignature(SESSION, 7, bytes(64))))
    assert data[:2] == b"SA" and data[2] == wire.WIRE_VERSION
    for index, value, match in ((0, ord("X"), "magic"), (2, 99, "version"), (3, 200, "unknown message type")):
        bad = bytearray(data)
        bad[index] = value
        with pytest.raises(MalformedMessageError, match=match):
            wire.decode(bytes(bad))


def test_non_canonical_id_order_refused():
    good = wire.encode(m.ConsistencyRequest(SESSION, 1, frozenset({3, 9})))
    swapped = good[:-8] + struct.pack(">II", 9, 3)
    with pytest.raises(MalformedMessageError, match="strictly increasing"):
        wire.decode(swapped)
    duplicated = good[:-8] + struct.pack(">II", 3, 3)
    with pytest.raises(MalformedMessageError, match="strictly increasing"):
        wire.decode(duplicated)


def test_huge_declared_counts_do_not_allocate():
    header = wire.encode(m.ConsistencyRequest(SESSION, 1, frozenset()))[:-4]
    with pytest.raises(MalformedMessageError, match="count"):
        wire.decode(header + struct.pack(">I", 2**32 - 1))
    vector_header = wire.encode(m.MaskedInput(SESSION, 1, 32, b""))[:-5]  # drop count u32 and signature flag
    with pytest.raises(MalformedMessageError, match="truncated"):
        wire.decode(vector_header + struct.pack(">I", 2**31))


def test_share_values_must_be_field_elements():
    good = wire.encode(m.UnmaskResponse(SESSION, 1, {2: PRIME - 1}, {}))
    bad = good.replace((PRIME - 1).to_bytes(33, "big"), PRIME.to_bytes(33, "big"))
    with pytest.raises(MalformedMessageError, match="field element"):
        wire.decode(bad)


def test_upload_costs_m_times_b_over_8_plus_small_header():
    for bits in (32, 64):
        m_values = 1000
        data = wire.encode(m.MaskedInput(SESSION, 1, bits, bytes(m_values * bits // 8)))
        overhead = len(data) - m_values * bits // 8
        assert overhead == wire.header_bytes() + 5 + 1  # width u8, count u32, signature flag (none)
        assert overhead < 50


def test_decode_refuses_non_bytes():
    with pytest.raises(MalformedMessageError):
        wire.decode("not bytes")
    with pytest.raises(MalformedMessageError):
        wire.encode(object())
