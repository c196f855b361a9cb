"""HE wire format: canonical round trips; arbitrary or mutated bytes decode canonically or raise a typed error.

Pure Python: runs without TenSEAL (ciphertexts are opaque bytes on the wire).
"""

import struct

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from secagg import wire as masking_wire
from secagg.errors import MalformedMessageError
from secagg.he import messages as m
from secagg.he import wire

from .wire_properties import wire_property_tests

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.integers(0, 2**32 - 1)
key32 = st.binary(min_size=32, max_size=32)
signature = st.one_of(st.just(b""), st.binary(min_size=64, max_size=64))
blob = st.binary(max_size=120)
blobs = st.lists(blob, max_size=4).map(tuple)
id_sets = st.frozensets(ids, max_size=10)


def id_map(values):
    return st.dictionaries(ids, values, max_size=5)


messages = st.one_of(
    st.builds(m.HEAdvertise, key32, ids, key32, signature),
    st.builds(m.HEKeyDirectory, key32, ids, id_map(st.builds(m.HEAdvertisedKey, key32, signature))),
    st.builds(m.HEContextBundle, key32, ids, blob, id_map(blob), signature),
    st.builds(m.HEContextDelivery, key32, ids, st.builds(m.HEAdvertisedKey, key32, signature), blob, blob),
    st.builds(m.HEEncryptedInput, key32, ids, key32, blobs, signature),
    st.builds(m.HEDecryptRequest, key32, ids, key32, id_sets, blobs,
              id_map(st.builds(m.HEContribution, blobs, signature))),
    st.builds(m.HEDecryptedSum, key32, ids, id_sets, st.binary(max_size=64).map(lambda b: b[: len(b) // 8 * 8]),
              signature),
)


(test_roundtrip_is_exact_and_canonical, test_arbitrary_bytes_decode_or_raise_malformed,
 test_mutated_messages_decode_canonically_or_raise) = wire_property_tests(wire, messages, FUZZ)


def _header(kind: int, version: int = wire.HE_WIRE_VERSION) -> bytes:
    return b"HE" + bytes((version, kind)) + b"\x00" * 32 + struct.pack(">I", 1)


@pytest.mark.parametrize(
    "data",
    [
        _header(99),  # unknown type
        _header(1, version=2) + b"\x00" * 33,  # unknown version
        b"SA" + _header(1)[2:] + b"\x00" * 33,  # a masking message is not an HE message
        _header(1) + b"\x00" * 32 + b"\x02",  # signature flag 2
        _header(5) + b"\x00" * 32 + struct.pack(">I", 2**31),  # count far beyond the bytes
        _header(5) + b"\x00" * 32 + struct.pack(">II", 1, wire.MAX_CIPHERTEXT_BYTES + 1),  # oversized blob
        _header(7) + struct.pack(">III", 2, 5, 3) + struct.pack(">I", 0) + b"\x00",  # unsorted ids
        _header(7) + struct.pack(">III", 2, 5, 5) + struct.pack(">I", 0) + b"\x00",  # duplicate ids
        _header(1) + b"\x00" * 33 + b"\x00",  # trailing byte
    ],
)
def test_specific_malformations_are_refused(data):
    with pytest.raises(MalformedMessageError):
        wire.decode(data)


def test_he_and_masking_wires_never_confuse_each_other():
    message = m.HEAdvertise(b"\x01" * 32, 7, b"\x02" * 32)
    with pytest.raises(MalformedMessageError):
        masking_wire.decode(wire.encode(message))


def test_encoder_refuses_fields_of_the_wrong_size():
    with pytest.raises(MalformedMessageError):
        wire.encode(m.HEAdvertise(b"\x01" * 31, 7, b"\x02" * 32))
    with pytest.raises(MalformedMessageError):
        wire.encode(m.HEEncryptedInput(b"\x01" * 32, 7, b"\x02" * 31))
    with pytest.raises(MalformedMessageError):
        wire.encode(m.HEDecryptedSum(b"\x01" * 32, 7, frozenset(), b"\x00" * 7))
    with pytest.raises(MalformedMessageError):
        wire.encode(m.HEAdvertise(b"\x01" * 32, 2**32, b"\x02" * 32))
    with pytest.raises(MalformedMessageError):
        wire.encode("not a message")
