"""Versioned, canonical, length-checked binary encoding of HE messages.

Layout (integers big-endian, unsigned), mirroring :mod:`secagg.wire` with its
own magic so the two protocols can never be confused::

    magic "HE" | version u8 | type u8 | session 32B | party u32 | body

``party`` is the sender of site messages and the recipient of coordinator
messages. Body fields:

* ``key32`` / ``id32``: 32 raw bytes; ``sig``: u8 flag (0 or 1), then 64 bytes if 1;
* ``blob``: u32 length, then that many bytes (ciphertexts <= 1 MiB, contexts <= 8 MiB);
* ``blobs``: u32 count, then count ``blob``;
* ``ids``: u32 count, then strictly increasing u32 ids;
* ``map``: u32 count, then entries keyed by strictly increasing u32 ids;
* ``int64 vector``: u32 count, then count little-endian int64 words.

Types: 1 HEAdvertise (key32, sig); 2 HEKeyDirectory (map of key32, sig);
3 HEContextBundle (blob public context, map of blob sealed, sig);
4 HEContextDelivery (key32, sig, blob public context, blob sealed);
5 HEEncryptedInput (id32 context, blobs, sig);
6 HEDecryptRequest (id32 context, ids survivors, blobs summed, map of (blobs, sig));
7 HEDecryptedSum (ids survivors, int64 vector, sig).

Canonical: ``encode(decode(b)) == b`` whenever ``decode`` accepts ``b``.
Decoding never uses pickle or eval (ciphertexts stay opaque bytes here; the
sessions parse them with TenSEAL behind typed errors); it returns a message
or raises :class:`~secagg.errors.MalformedMessageError`. Declared counts and
lengths are checked against the bytes that remain before anything is
allocated.
"""

from __future__ import annotations

import struct

from ..codec import Reader, Writer
from ..errors import MalformedMessageError
from ..messages import FrozenMap
from .messages import (
    HEAdvertise,
    HEAdvertisedKey,
    HEContextBundle,
    HEContextDelivery,
    HEContribution,
    HEDecryptedSum,
    HEDecryptRequest,
    HEEncryptedInput,
    HEKeyDirectory,
    HEMessage,
)

__all__ = ["HE_WIRE_VERSION", "MAX_CIPHERTEXT_BYTES", "MAX_CONTEXT_BYTES", "encode", "decode", "header_bytes"]

MAGIC = b"HE"
HE_WIRE_VERSION = 1
SESSION_BYTES = 32
KEY_BYTES = 32
DIGEST_BYTES = 32
SIGNATURE_BYTES = 64
#: Largest serialised ciphertext on the wire (N = 32768, one 60-bit prime, plus framing).
MAX_CIPHERTEXT_BYTES = 1 << 20
#: Largest public or sealed context on the wire.
MAX_CONTEXT_BYTES = 8 << 20
_HEADER = struct.Struct(">2sBB32sI")

_TYPES: dict[type, int] = {
    HEAdvertise: 1,
    HEKeyDirectory: 2,
    HEContextBundle: 3,
    HEContextDelivery: 4,
    HEEncryptedInput: 5,
    HEDecryptRequest: 6,
    HEDecryptedSum: 7,
}
_PARTY_FIELD = {
    HEAdvertise: "sender",
    HEContextBundle: "sender",
    HEEncryptedInput: "sender",
    HEDecryptedSum: "sender",
    HEKeyDirectory: "recipient",
    HEContextDelivery: "recipient",
    HEDecryptRequest: "recipient",
}


def header_bytes() -> int:
    return _HEADER.size


def encode(message: HEMessage) -> bytes:
    """Canonical wire bytes of an HE message."""
    kind = _TYPES.get(type(message))
    if kind is None:
        raise MalformedMessageError(f"cannot encode {type(message).__name__}: not an HE message")
    session = message.session
    if not isinstance(session, (bytes, bytearray)) or len(session) != SESSION_BYTES:
        raise MalformedMessageError(f"session must be {SESSION_BYTES} bytes")
    party = getattr(message, _PARTY_FIELD[type(message)])
    w = Writer()
    w.parts.append(MAGIC + bytes((HE_WIRE_VERSION, kind)) + bytes(session))
    w.u32(party, "party id")
    if isinstance(message, HEAdvertise):
        w.fixed(message.public_key, KEY_BYTES, "public_key")
        w.signature(message.signature)
    elif isinstance(message, HEKeyDirectory):
        w.u32(len(message.keys))
        for site in message.keys:
            entry = message.keys[site]
            w.u32(site, "id")
            w.fixed(entry.public_key, KEY_BYTES, "public_key")
            w.signature(entry.signature)
    elif isinstance(message, HEContextBundle):
        w.blob(message.public_context, MAX_CONTEXT_BYTES, "public context")
        w.u32(len(message.sealed))
        for site in message.sealed:
            w.u32(site, "id")
            w.blob(message.sealed[site], MAX_CONTEXT_BYTES, "sealed context")
        w.signature(message.signature)
    elif isinstance(message, HEContextDelivery):
        w.fixed(message.holder_key.public_key, KEY_BYTES, "holder public_key")
        w.signature(message.holder_key.signature)
        w.blob(message.public_context, MAX_CONTEXT_BYTES, "public context")
        w.blob(message.sealed, MAX_CONTEXT_BYTES, "sealed context")
    elif isinstance(message, HEEncryptedInput):
        w.fixed(message.context_id, DIGEST_BYTES, "context_id")
        w.blobs(message.chunks, MAX_CIPHERTEXT_BYTES, "ciphertext")
        w.signature(message.signature)
    elif isinstance(message, HEDecryptRequest):
        w.fixed(message.context_id, DIGEST_BYTES, "context_id")
        w.ids(message.survivors)
        w.blobs(message.summed, MAX_CIPHERTEXT_BYTES, "ciphertext")
        w.u32(len(message.contributions))
        for site in message.contributions:
            entry = message.contributions[site]
            w.u32(site, "id")
            w.blobs(entry.chunks, MAX_CIPHERTEXT_BYTES, "ciphertext")
            w.signature(entry.signature)
    elif isinstance(message, HEDecryptedSum):
        w.ids(message.survivors)
        data = message.data
        if not isinstance(data, (bytes, bytearray)) or len(data) % 8:
            raise MalformedMessageError("decrypted sum must be whole int64 words")
        w.u32(len(data) // 8, "vector length")
        w.parts.append(bytes(data))
        w.signature(message.signature)
    return w.getvalue()


def decode(data: bytes) -> HEMessage:
    """Parse wire bytes into an HE message, or raise :class:`MalformedMessageError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"expected bytes; got {type(data).__name__}")
    r = Reader(bytes(data))
    magic, version, kind, session, party = _HEADER.unpack(r.take(_HEADER.size, "header"))
    if magic != MAGIC:
        raise MalformedMessageError(f"not an HE message: magic {magic!r}, expected {MAGIC!r}")
    if version != HE_WIRE_VERSION:
        raise MalformedMessageError(f"unsupported HE wire version {version}; this library speaks {HE_WIRE_VERSION}")
    message: HEMessage
    if kind == 1:
        message = HEAdvertise(session, party, r.take(KEY_BYTES, "public_key"), r.signature())
    elif kind == 2:
        keys, previous = {}, None
        for _ in range(r.count(4 + KEY_BYTES + 1, "key directory")):
            previous = r.key(previous, "key directory")
            keys[previous] = HEAdvertisedKey(r.take(KEY_BYTES, "public_key"), r.signature())
        message = HEKeyDirectory(session, party, FrozenMap(keys))
    elif kind == 3:
        public = r.blob(MAX_CONTEXT_BYTES, "public context")
        sealed, previous = {}, None
        for _ in range(r.count(8, "sealed contexts")):
            previous = r.key(previous, "sealed contexts")
            sealed[previous] = r.blob(MAX_CONTEXT_BYTES, "sealed context")
        message = HEContextBundle(session, party, public, FrozenMap(sealed), r.signature())
    elif kind == 4:
        holder = HEAdvertisedKey(r.take(KEY_BYTES, "holder public_key"), r.signature("holder signature"))
        public = r.blob(MAX_CONTEXT_BYTES, "public context")
        message = HEContextDelivery(session, party, holder, public, r.blob(MAX_CONTEXT_BYTES, "sealed context"))
    elif kind == 5:
        context = r.take(DIGEST_BYTES, "context_id")
        chunks = r.blobs(MAX_CIPHERTEXT_BYTES, "ciphertext")
        message = HEEncryptedInput(session, party, context, chunks, r.signature())
    elif kind == 6:
        context = r.take(DIGEST_BYTES, "context_id")
        survivors = r.ids("survivors")
        summed = r.blobs(MAX_CIPHERTEXT_BYTES, "ciphertext")
        contributions, previous = {}, None
        for _ in range(r.count(4 + 4 + 1, "contributions")):
            previous = r.key(previous, "contributions")
            chunks = r.blobs(MAX_CIPHERTEXT_BYTES, "ciphertext")
            contributions[previous] = HEContribution(chunks, r.signature())
        message = HEDecryptRequest(session, party, context, survivors, summed, FrozenMap(contributions))
    elif kind == 7:
        survivors = r.ids("survivors")
        count = r.count(8, "decrypted sum")
        values = r.take(8 * count, "decrypted sum")
        message = HEDecryptedSum(session, party, survivors, values, r.signature())
    else:
        raise MalformedMessageError(f"unknown HE message type {kind}")
    if r.remaining():
        raise MalformedMessageError(f"{r.remaining()} trailing bytes after a {type(message).__name__}")
    return message
