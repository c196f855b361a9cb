"""Versioned, canonical, length-checked binary encoding of protocol messages.

Layout (all integers big-endian, unsigned)::

    magic "SA" | version u8 | type u8 | session 32B | party u32 | body

``party`` is the sender of client messages and the recipient of server
messages. Body fields use:

* ``key32``: 32 raw bytes; ``sig``: u8 flag (0 or 1) then 64 bytes if 1
  (AdvertiseKeys, KeyDirectory entries, and since v2 MaskedInput and
  UnmaskResponse end with one: Ed25519 in active mode, absent otherwise);
* ``ids``: u32 count, then strictly increasing u32 ids;
* ``map<bytes>``: u32 count, then (u32 id, u32 length, bytes), ids strictly
  increasing; ``map<share>``: u32 count, then (u32 id, 33-byte field element
  < p), ids strictly increasing;
* ``vector``: u8 bit width (32 or 64), u32 count, then count little-endian
  words (the only little-endian field: it is numpy's native layout, so the
  m*b/8 payload is copied, never converted; decoding returns a read-only
  view into the message bytes and encoding copies it once, into the joined
  message).

Canonical: for every message there is exactly one encoding, and
``encode(decode(b)) == b`` whenever ``decode`` accepts ``b``. Decoding never
uses pickle or eval; it either returns a message or raises
:class:`~secagg.errors.MalformedMessageError` (trailing bytes, truncation,
unsorted or duplicate ids, out-of-range values, unknown versions or types).
Declared counts are checked against the bytes that remain before anything is
allocated, so a hostile length field cannot exhaust memory.
"""

from __future__ import annotations

import struct

from .codec import Reader, Writer
from .errors import MalformedMessageError
from .messages import (
    AdvertisedKeys,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    FrozenMap,
    KeyDirectory,
    MaskedInput,
    MaskedInputRequest,
    Message,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)

__all__ = ["WIRE_VERSION", "MAX_BLOB_BYTES", "encode", "decode", "header_bytes"]

MAGIC = b"SA"
WIRE_VERSION = 2  # v2: MaskedInput and UnmaskResponse carry a signature field (active mode)
SESSION_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_BLOB_BYTES = 4096  # ciphertexts of share bundles are ~114 bytes
_HEADER = struct.Struct(">2sBB32sI")
_MAX_U32 = 2**32 - 1

_TYPES: dict[type, int] = {
    AdvertiseKeys: 1,
    KeyDirectory: 2,
    ShareKeys: 3,
    MaskedInputRequest: 4,
    MaskedInput: 5,
    ConsistencyRequest: 6,
    ConsistencySignature: 7,
    UnmaskRequest: 8,
    UnmaskResponse: 9,
}
_PARTY_FIELD = {
    AdvertiseKeys: "sender",
    ShareKeys: "sender",
    MaskedInput: "sender",
    ConsistencySignature: "sender",
    UnmaskResponse: "sender",
    KeyDirectory: "recipient",
    MaskedInputRequest: "recipient",
    ConsistencyRequest: "recipient",
    UnmaskRequest: "recipient",
}


def header_bytes() -> int:
    """Size of the fixed message header in bytes."""
    return _HEADER.size


# --- writing ------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """Canonical wire bytes of ``message``."""
    kind = _TYPES.get(type(message))
    if kind is None:
        raise MalformedMessageError(f"cannot encode {type(message).__name__}: not a protocol message")
    w = Writer()
    party = getattr(message, _PARTY_FIELD[type(message)])
    if len(message.session) != SESSION_BYTES:
        raise MalformedMessageError(f"session must be {SESSION_BYTES} bytes; got {len(message.session)}")
    if not 0 <= party <= _MAX_U32:
        raise MalformedMessageError(f"party id {party} does not fit in u32")
    w.parts.append(_HEADER.pack(MAGIC, WIRE_VERSION, kind, bytes(message.session), party))
    if isinstance(message, AdvertiseKeys):
        w.fixed(message.encryption_key, KEY_BYTES, "encryption_key")
        w.fixed(message.masking_key, KEY_BYTES, "masking_key")
        w.signature(message.signature)
    elif isinstance(message, KeyDirectory):
        w.u32(len(message.keys))
        for key in sorted(message.keys):
            entry = message.keys[key]
            w.u32(key, "id")
            w.fixed(entry.encryption_key, KEY_BYTES, "encryption_key")
            w.fixed(entry.masking_key, KEY_BYTES, "masking_key")
            w.signature(entry.signature)
    elif isinstance(message, (ShareKeys, MaskedInputRequest)):
        w.blob_map(message.ciphertexts, MAX_BLOB_BYTES, "ciphertexts")
    elif isinstance(message, MaskedInput):
        if message.bit_width not in (32, 64):
            raise MalformedMessageError(f"bit width must be 32 or 64; got {message.bit_width}")
        word = message.bit_width // 8
        if len(message.data) % word:
            raise MalformedMessageError("masked vector bytes are not a whole number of words")
        w.u8(message.bit_width)
        w.u32(len(message.data) // word)
        w.words(message.data)  # one copy, into the joined message
        w.signature(message.signature)
    elif isinstance(message, ConsistencyRequest):
        w.ids(message.survivors)
    elif isinstance(message, ConsistencySignature):
        w.fixed(message.signature, SIGNATURE_BYTES, "signature")
    elif isinstance(message, UnmaskRequest):
        w.ids(message.survivors)
        w.ids(message.dropped)
        w.blob_map(message.signatures, MAX_BLOB_BYTES, "signatures")
    elif isinstance(message, UnmaskResponse):
        w.share_map(message.self_mask_shares)
        w.share_map(message.key_shares)
        w.signature(message.signature)
    return w.getvalue()


# --- reading ------------------------------------------------------------------


def decode(data: bytes) -> Message:
    """Parse wire bytes into a message, or raise :class:`MalformedMessageError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"expected bytes; got {type(data).__name__}")
    r = Reader(bytes(data))
    magic, version, kind, session, party = _HEADER.unpack(r.take(_HEADER.size, "header"))
    if magic != MAGIC:
        raise MalformedMessageError(f"not a secagg message: magic {magic!r}, expected {MAGIC!r}")
    if version != WIRE_VERSION:
        raise MalformedMessageError(f"unsupported wire version {version}; this library speaks {WIRE_VERSION}")
    if kind == 1:
        message: Message = AdvertiseKeys(
            session, party, r.take(KEY_BYTES, "encryption_key"), r.take(KEY_BYTES, "masking_key"),
            r.signature("signature"),
        )
    elif kind == 2:
        n = r.count(4 + 2 * KEY_BYTES + 1, "key directory")
        keys, previous = {}, None
        for _ in range(n):
            previous = r.key(previous, "key directory")
            keys[previous] = AdvertisedKeys(
                r.take(KEY_BYTES, "encryption_key"), r.take(KEY_BYTES, "masking_key"), r.signature("signature")
            )
        message = KeyDirectory(session, party, FrozenMap(keys))
    elif kind == 3:
        message = ShareKeys(session, party, r.blob_map(MAX_BLOB_BYTES, "ciphertexts"))
    elif kind == 4:
        message = MaskedInputRequest(session, party, r.blob_map(MAX_BLOB_BYTES, "ciphertexts"))
    elif kind == 5:
        bit_width = r.u8("bit width")
        if bit_width not in (32, 64):
            raise MalformedMessageError(f"bit width must be 32 or 64; got {bit_width}")
        count = r.u32("vector length")
        data = r.view(count * (bit_width // 8), "masked vector")  # a view: no second copy of m words
        message = MaskedInput(session, party, bit_width, data, r.signature("signature"))
    elif kind == 6:
        message = ConsistencyRequest(session, party, r.ids("survivors"))
    elif kind == 7:
        message = ConsistencySignature(session, party, r.take(SIGNATURE_BYTES, "signature"))
    elif kind == 8:
        survivors = r.ids("survivors")
        dropped = r.ids("dropped")
        message = UnmaskRequest(session, party, survivors, dropped, r.blob_map(MAX_BLOB_BYTES, "signatures"))
    elif kind == 9:
        message = UnmaskResponse(
            session, party, r.share_map("self_mask_shares"), r.share_map("key_shares"), r.signature("signature")
        )
    else:
        raise MalformedMessageError(f"unknown message type {kind}")
    if r.remaining():
        raise MalformedMessageError(f"{r.remaining()} trailing bytes after a {type(message).__name__}")
    return message
