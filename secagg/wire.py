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

from . import messages as msg
from .codec import SIGNATURE_BYTES, Reader, Writer
from .errors import MalformedMessageError
from .wireformat import Field, IdMap, Record, WireFormat, blob_map, fixed, ids, share_map, signature

__all__ = ["WIRE_VERSION", "MAX_BLOB_BYTES", "encode", "decode", "header_bytes"]

WIRE_VERSION = 2  # v2: MaskedInput and UnmaskResponse carry a signature field (active mode)
KEY_BYTES = 32
MAX_BLOB_BYTES = 4096  # ciphertexts of share bundles are ~114 bytes


def _write_vector(w: Writer, value: tuple) -> None:
    bit_width, data = value
    if bit_width not in (32, 64):
        raise MalformedMessageError(f"bit width must be 32 or 64; got {bit_width}")
    word = bit_width // 8
    if len(data) % word:
        raise MalformedMessageError("masked vector bytes are not a whole number of words")
    w.u8(bit_width)
    w.u32(len(data) // word)
    w.words(data)  # one copy, into the joined message


def _read_vector(r: Reader) -> tuple:
    bit_width = r.u8("bit width")
    if bit_width not in (32, 64):
        raise MalformedMessageError(f"bit width must be 32 or 64; got {bit_width}")
    count = r.u32("vector length")
    return bit_width, r.view(count * (bit_width // 8), "masked vector")  # a view: no second copy of m words


SIG = ("signature", signature())
#: AdvertiseKeys, and every entry of a KeyDirectory.
KEYS = (("encryption_key", fixed(KEY_BYTES, "encryption_key")), ("masking_key", fixed(KEY_BYTES, "masking_key")), SIG)
CIPHERTEXTS = (("ciphertexts", blob_map(MAX_BLOB_BYTES, "ciphertexts")),)

FORMAT = WireFormat(b"SA", WIRE_VERSION, {
    msg.AdvertiseKeys: (1, KEYS),
    msg.KeyDirectory: (2, [("keys", IdMap(Record(msg.AdvertisedKeys, KEYS), 4 + 2 * KEY_BYTES + 1, "key directory"))]),
    msg.ShareKeys: (3, CIPHERTEXTS),
    msg.MaskedInputRequest: (4, CIPHERTEXTS),
    msg.MaskedInput: (5, [(("bit_width", "data"), Field(_write_vector, _read_vector)), SIG]),
    msg.ConsistencyRequest: (6, [("survivors", ids("survivors"))]),
    msg.ConsistencySignature: (7, [("signature", fixed(SIGNATURE_BYTES, "signature"))]),
    msg.UnmaskRequest: (8, [("survivors", ids("survivors")), ("dropped", ids("dropped")),
                            ("signatures", blob_map(MAX_BLOB_BYTES, "signatures"))]),
    msg.UnmaskResponse: (9, [("self_mask_shares", share_map("self_mask_shares")),
                             ("key_shares", share_map("key_shares")), SIG]),
}, noun="a secagg message", label="")

#: Canonical wire bytes of a message; a message from wire bytes (or MalformedMessageError); the header size.
encode, decode, header_bytes = FORMAT.encode, FORMAT.decode, FORMAT.header_bytes
