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
from .codec import SIGNATURE_BYTES, Framing, Reader, Writer
from .errors import MalformedMessageError

__all__ = ["WIRE_VERSION", "MAX_BLOB_BYTES", "encode", "decode", "header_bytes"]

WIRE_VERSION = 2  # v2: MaskedInput and UnmaskResponse carry a signature field (active mode)
KEY_BYTES = 32
MAX_BLOB_BYTES = 4096  # ciphertexts of share bundles are ~114 bytes

FRAMING = Framing(b"SA", WIRE_VERSION, {
    msg.AdvertiseKeys: 1,
    msg.KeyDirectory: 2,
    msg.ShareKeys: 3,
    msg.MaskedInputRequest: 4,
    msg.MaskedInput: 5,
    msg.ConsistencyRequest: 6,
    msg.ConsistencySignature: 7,
    msg.UnmaskRequest: 8,
    msg.UnmaskResponse: 9,
}, noun="a secagg message", label="")


header_bytes = FRAMING.header_bytes


# --- writing ------------------------------------------------------------------


def encode(message: msg.Message) -> bytes:
    """Canonical wire bytes of ``message``."""
    w = FRAMING.writer(message)
    if isinstance(message, msg.AdvertiseKeys):
        _write_keys(w, message.keys)
    elif isinstance(message, msg.KeyDirectory):
        w.map(message.keys, lambda _, keys: _write_keys(w, keys))
    elif isinstance(message, (msg.ShareKeys, msg.MaskedInputRequest)):
        w.blob_map(message.ciphertexts, MAX_BLOB_BYTES, "ciphertexts")
    elif isinstance(message, msg.MaskedInput):
        if message.bit_width not in (32, 64):
            raise MalformedMessageError(f"bit width must be 32 or 64; got {message.bit_width}")
        word = message.bit_width // 8
        if len(message.data) % word:
            raise MalformedMessageError("masked vector bytes are not a whole number of words")
        w.u8(message.bit_width)
        w.u32(len(message.data) // word)
        w.words(message.data)  # one copy, into the joined message
        w.signature(message.signature)
    elif isinstance(message, msg.ConsistencyRequest):
        w.ids(message.survivors)
    elif isinstance(message, msg.ConsistencySignature):
        w.fixed(message.signature, SIGNATURE_BYTES, "signature")
    elif isinstance(message, msg.UnmaskRequest):
        w.ids(message.survivors)
        w.ids(message.dropped)
        w.blob_map(message.signatures, MAX_BLOB_BYTES, "signatures")
    elif isinstance(message, msg.UnmaskResponse):
        w.share_map(message.self_mask_shares)
        w.share_map(message.key_shares)
        w.signature(message.signature)
    return w.getvalue()


def _write_keys(w: Writer, keys: msg.AdvertisedKeys) -> None:
    """key32 encryption key, key32 masking key, sig: AdvertiseKeys and every KeyDirectory entry."""
    w.fixed(keys.encryption_key, KEY_BYTES, "encryption_key")
    w.fixed(keys.masking_key, KEY_BYTES, "masking_key")
    w.signature(keys.signature)


# --- reading ------------------------------------------------------------------


def decode(data: bytes) -> msg.Message:
    """Parse wire bytes into a message, or raise :class:`MalformedMessageError`."""
    r, kind, session, party = FRAMING.reader(data)
    if kind == 1:
        keys = _read_keys(r)
        message: msg.Message = msg.AdvertiseKeys(session, party, keys.encryption_key, keys.masking_key, keys.signature)
    elif kind == 2:
        directory = r.map(4 + 2 * KEY_BYTES + 1, "key directory", lambda _: _read_keys(r))
        message = msg.KeyDirectory(session, party, directory)
    elif kind == 3:
        message = msg.ShareKeys(session, party, r.blob_map(MAX_BLOB_BYTES, "ciphertexts"))
    elif kind == 4:
        message = msg.MaskedInputRequest(session, party, r.blob_map(MAX_BLOB_BYTES, "ciphertexts"))
    elif kind == 5:
        bit_width = r.u8("bit width")
        if bit_width not in (32, 64):
            raise MalformedMessageError(f"bit width must be 32 or 64; got {bit_width}")
        count = r.u32("vector length")
        data = r.view(count * (bit_width // 8), "masked vector")  # a view: no second copy of m words
        message = msg.MaskedInput(session, party, bit_width, data, r.signature("signature"))
    elif kind == 6:
        message = msg.ConsistencyRequest(session, party, r.ids("survivors"))
    elif kind == 7:
        message = msg.ConsistencySignature(session, party, r.take(SIGNATURE_BYTES, "signature"))
    elif kind == 8:
        survivors = r.ids("survivors")
        dropped = r.ids("dropped")
        message = msg.UnmaskRequest(session, party, survivors, dropped, r.blob_map(MAX_BLOB_BYTES, "signatures"))
    elif kind == 9:
        message = msg.UnmaskResponse(
            session, party, r.share_map("self_mask_shares"), r.share_map("key_shares"), r.signature("signature")
        )
    else:
        raise FRAMING.unknown(kind)
    return FRAMING.finish(r, message)


def _read_keys(r: Reader) -> msg.AdvertisedKeys:
    return msg.AdvertisedKeys(r.take(KEY_BYTES, "encryption_key"), r.take(KEY_BYTES, "masking_key"), r.signature())
