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

from ..codec import Framing, Reader, Writer
from ..errors import MalformedMessageError
from . import messages as msg

__all__ = ["HE_WIRE_VERSION", "MAX_CIPHERTEXT_BYTES", "MAX_CONTEXT_BYTES", "encode", "decode", "header_bytes"]

HE_WIRE_VERSION = 1
KEY_BYTES = 32
DIGEST_BYTES = 32
#: Largest serialised ciphertext on the wire (N = 32768, one 60-bit prime, plus framing).
MAX_CIPHERTEXT_BYTES = 1 << 20
#: Largest public or sealed context on the wire.
MAX_CONTEXT_BYTES = 8 << 20

FRAMING = Framing(b"HE", HE_WIRE_VERSION, {
    msg.HEAdvertise: 1,
    msg.HEKeyDirectory: 2,
    msg.HEContextBundle: 3,
    msg.HEContextDelivery: 4,
    msg.HEEncryptedInput: 5,
    msg.HEDecryptRequest: 6,
    msg.HEDecryptedSum: 7,
}, noun="an HE message", label="HE ")


header_bytes = FRAMING.header_bytes


def encode(message: msg.HEMessage) -> bytes:
    """Canonical wire bytes of an HE message."""
    w = FRAMING.writer(message)
    if isinstance(message, msg.HEAdvertise):
        _write_key(w, message.key)
    elif isinstance(message, msg.HEKeyDirectory):
        w.map(message.keys, lambda _, key: _write_key(w, key))
    elif isinstance(message, msg.HEContextBundle):
        w.blob(message.public_context, MAX_CONTEXT_BYTES, "public context")
        w.map(message.sealed, lambda _, sealed: w.blob(sealed, MAX_CONTEXT_BYTES, "sealed context"))
        w.signature(message.signature)
    elif isinstance(message, msg.HEContextDelivery):
        _write_key(w, message.holder_key, "holder public_key")
        w.blob(message.public_context, MAX_CONTEXT_BYTES, "public context")
        w.blob(message.sealed, MAX_CONTEXT_BYTES, "sealed context")
    elif isinstance(message, msg.HEEncryptedInput):
        w.fixed(message.context_id, DIGEST_BYTES, "context_id")
        _write_contribution(w, message.contribution)
    elif isinstance(message, msg.HEDecryptRequest):
        w.fixed(message.context_id, DIGEST_BYTES, "context_id")
        w.ids(message.survivors)
        w.blobs(message.summed, MAX_CIPHERTEXT_BYTES, "ciphertext")
        w.map(message.contributions, lambda _, contribution: _write_contribution(w, contribution))
    elif isinstance(message, msg.HEDecryptedSum):
        w.ids(message.survivors)
        data = message.data
        if not isinstance(data, (bytes, bytearray)) or len(data) % 8:
            raise MalformedMessageError("decrypted sum must be whole int64 words")
        w.u32(len(data) // 8, "vector length")
        w.parts.append(bytes(data))
        w.signature(message.signature)
    return w.getvalue()


def _write_key(w: Writer, key: msg.HEAdvertisedKey, what: str = "public_key") -> None:
    """key32, sig: HEAdvertise, every HEKeyDirectory entry, the key holder's key in HEContextDelivery."""
    w.fixed(key.public_key, KEY_BYTES, what)
    w.signature(key.signature)


def _write_contribution(w: Writer, contribution: msg.HEContribution) -> None:
    """blobs, sig: HEEncryptedInput's body after the context id, and every contribution relayed."""
    w.blobs(contribution.chunks, MAX_CIPHERTEXT_BYTES, "ciphertext")
    w.signature(contribution.signature)


def decode(data: bytes) -> msg.HEMessage:
    """Parse wire bytes into an HE message, or raise :class:`MalformedMessageError`."""
    r, kind, session, party = FRAMING.reader(data)
    message: msg.HEMessage
    if kind == 1:
        key = _read_key(r)
        message = msg.HEAdvertise(session, party, key.public_key, key.signature)
    elif kind == 2:
        message = msg.HEKeyDirectory(session, party, r.map(4 + KEY_BYTES + 1, "key directory", lambda _: _read_key(r)))
    elif kind == 3:
        public = r.blob(MAX_CONTEXT_BYTES, "public context")
        sealed = r.map(8, "sealed contexts", lambda _: r.blob(MAX_CONTEXT_BYTES, "sealed context"))
        message = msg.HEContextBundle(session, party, public, sealed, r.signature())
    elif kind == 4:
        holder = _read_key(r, "holder public_key", "holder signature")
        public = r.blob(MAX_CONTEXT_BYTES, "public context")
        message = msg.HEContextDelivery(session, party, holder, public, r.blob(MAX_CONTEXT_BYTES, "sealed context"))
    elif kind == 5:
        context = r.take(DIGEST_BYTES, "context_id")
        upload = _read_contribution(r)
        message = msg.HEEncryptedInput(session, party, context, upload.chunks, upload.signature)
    elif kind == 6:
        context = r.take(DIGEST_BYTES, "context_id")
        survivors = r.ids("survivors")
        summed = r.blobs(MAX_CIPHERTEXT_BYTES, "ciphertext")
        contributions = r.map(4 + 4 + 1, "contributions", lambda _: _read_contribution(r))
        message = msg.HEDecryptRequest(session, party, context, survivors, summed, contributions)
    elif kind == 7:
        survivors = r.ids("survivors")
        count = r.count(8, "decrypted sum")
        values = r.take(8 * count, "decrypted sum")
        message = msg.HEDecryptedSum(session, party, survivors, values, r.signature())
    else:
        raise FRAMING.unknown(kind)
    return FRAMING.finish(r, message)


def _read_key(r: Reader, what: str = "public_key", signature: str = "signature") -> msg.HEAdvertisedKey:
    return msg.HEAdvertisedKey(r.take(KEY_BYTES, what), r.signature(signature))


def _read_contribution(r: Reader) -> msg.HEContribution:
    return msg.HEContribution(r.blobs(MAX_CIPHERTEXT_BYTES, "ciphertext"), r.signature())
