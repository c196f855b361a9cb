"""The properties every wire codec must have (masking and HE), and the byte mutations the fuzz tests use.

:func:`wire_property_tests` returns the three property tests for one codec; a
test module binds them to its own names (``tests/test_wire.py``,
``tests/test_he_wire.py``), so each codec is held to exactly the same checks:

* every message round-trips exactly, to a message of the same type, and re-encodes to the same bytes;
* arbitrary bytes decode to a message that re-encodes to exactly those bytes, or raise
  :class:`~secagg.errors.MalformedMessageError`;
* a valid encoding with a byte flipped, truncated, extended or with bytes inserted does the same.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from secagg.errors import MalformedMessageError, ProtocolError

__all__ = ["wire_property_tests", "mutated"]


def mutated(encoded: bytes, data, action: str, *, insert_max: int = 4) -> bytes:
    """``encoded`` after one ``action`` (flip, truncate, extend, insert), its positions drawn from ``data``."""
    out = bytearray(encoded)
    if action == "flip":
        i = data.draw(st.integers(0, len(out) - 1))
        out[i] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        out = out[: data.draw(st.integers(0, len(out) - 1))]
    elif action == "extend":
        out += data.draw(st.binary(min_size=1, max_size=8))
    elif action == "insert":
        i = data.draw(st.integers(0, len(out)))
        out[i:i] = data.draw(st.binary(min_size=1, max_size=insert_max))
    else:
        raise ValueError(f"unknown mutation {action!r}")
    return bytes(out)


def _decodes_canonically_or_malformed(codec, data: bytes) -> None:
    try:
        decoded = codec.decode(data)
    except ProtocolError as exc:
        assert isinstance(exc, MalformedMessageError)
        return
    assert codec.encode(decoded) == data  # anything accepted is canonical


def wire_property_tests(codec, messages, fuzz) -> tuple:
    """``(round trip, arbitrary bytes, mutated messages)`` tests of ``codec`` over the strategy ``messages``."""

    @fuzz
    @given(messages)
    def roundtrip(message):
        data = codec.encode(message)
        decoded = codec.decode(data)
        assert decoded == message
        assert type(decoded) is type(message)
        assert codec.encode(decoded) == data

    @fuzz
    @given(st.binary(max_size=400))
    def arbitrary_bytes(data):
        _decodes_canonically_or_malformed(codec, data)

    @fuzz
    @given(messages, st.data())
    def mutated_messages(message, data):
        action = data.draw(st.sampled_from(["flip", "truncate", "extend", "insert"]))
        _decodes_canonically_or_malformed(codec, mutated(codec.encode(message), data, action))

    return roundtrip, arbitrary_bytes, mutated_messages
