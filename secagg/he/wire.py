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

from ..codec import Reader, Writer
from ..errors import MalformedMessageError
from ..wireformat import Field, IdMap, Record, WireFormat, blob, blobs, fixed, ids, signature
from . import messages as msg

__all__ = ["HE_WIRE_VERSION", "MAX_CIPHERTEXT_BYTES", "MAX_CONTEXT_BYTES", "encode", "decode", "header_bytes"]

HE_WIRE_VERSION = 1
KEY_BYTES = 32
DIGEST_BYTES = 32
#: Largest serialised ciphertext on the wire (N = 32768, one 60-bit prime, plus framing).
MAX_CIPHERTEXT_BYTES = 1 << 20
#: Largest public or sealed context on the wire.
MAX_CONTEXT_BYTES = 8 << 20


def _write_sum(w: Writer, data: bytes) -> None:
    if not isinstance(data, (bytes, bytearray)) or len(data) % 8:
        raise MalformedMessageError("decrypted sum must be whole int64 words")
    w.u32(len(data) // 8, "vector length")
    w.parts.append(bytes(data))


def _read_sum(r: Reader) -> bytes:
    return r.take(8 * r.count(8, "decrypted sum"), "decrypted sum")


SIG = ("signature", signature())
#: HEAdvertise, and every entry of an HEKeyDirectory.
KEY = (("public_key", fixed(KEY_BYTES, "public_key")), SIG)
#: The key holder's key inside an HEContextDelivery.
HOLDER_KEY = (("public_key", fixed(KEY_BYTES, "holder public_key")), ("signature", signature("holder signature")))
CONTEXT_ID = ("context_id", fixed(DIGEST_BYTES, "context_id"))
CIPHERTEXTS = blobs(MAX_CIPHERTEXT_BYTES, "ciphertext")
#: HEEncryptedInput after its context id, and every contribution relayed in an HEDecryptRequest.
UPLOAD = (("chunks", CIPHERTEXTS), SIG)

FORMAT = WireFormat(b"HE", HE_WIRE_VERSION, {
    msg.HEAdvertise: (1, KEY),
    msg.HEKeyDirectory: (2, [("keys", IdMap(Record(msg.HEAdvertisedKey, KEY), 4 + KEY_BYTES + 1, "key directory"))]),
    msg.HEContextBundle: (3, [("public_context", blob(MAX_CONTEXT_BYTES, "public context")),
                              ("sealed", IdMap(blob(MAX_CONTEXT_BYTES, "sealed context"), 8, "sealed contexts")), SIG]),
    msg.HEContextDelivery: (4, [("holder_key", Record(msg.HEAdvertisedKey, HOLDER_KEY)),
                                ("public_context", blob(MAX_CONTEXT_BYTES, "public context")),
                                ("sealed", blob(MAX_CONTEXT_BYTES, "sealed context"))]),
    msg.HEEncryptedInput: (5, [CONTEXT_ID, *UPLOAD]),
    msg.HEDecryptRequest: (6, [CONTEXT_ID, ("survivors", ids("survivors")), ("summed", CIPHERTEXTS), (
        "contributions", IdMap(Record(msg.HEContribution, UPLOAD), 4 + 4 + 1, "contributions"))]),
    msg.HEDecryptedSum: (7, [("survivors", ids("survivors")), ("data", Field(_write_sum, _read_sum)), SIG]),
}, noun="an HE message", label="HE ")

#: Canonical wire bytes of an HE message; an HE message from wire bytes (or MalformedMessageError); the header size.
encode, decode, header_bytes = FORMAT.encode, FORMAT.decode, FORMAT.header_bytes
