"""A wire format as data: one header, and per message type the list of its body fields.

Both wire formats (:mod:`secagg.wire` for masking, :mod:`secagg.he.wire` for
CKKS) are a :class:`WireFormat`: every message is

    magic 2B | version u8 | type u8 | session 32B | party u32 | body

where ``party`` is the sender of a :class:`~secagg.messagebase.FromParty`
message and the recipient of a :class:`~secagg.messagebase.ToParty` one, and
the body is the message's fields in the order its layout lists them, each
written by a :class:`Field` (a :class:`~secagg.codec.Writer` method and the
:class:`~secagg.codec.Reader` method that reads it back). Each format has its
own magic, so the two can never be confused.

Decoding checks, in this order: bytes given, magic, version, a known type,
then every field (each refuses a hostile length before allocating), and no
trailing bytes, so exactly one encoding decodes to each message (canonical:
``encode(decode(b)) == b`` whenever ``decode`` accepts ``b``). Every refusal
is a :class:`~secagg.errors.MalformedMessageError`.
"""

from __future__ import annotations

import struct
from typing import Callable, Mapping, Sequence

from .codec import Reader, Writer
from .errors import MalformedMessageError
from .messagebase import FromParty

__all__ = [
    "WireFormat", "Field", "IdMap", "Record", "Layout",
    "fixed", "signature", "blob", "blobs", "ids", "blob_map", "share_map",
]

SESSION_BYTES = 32
_HEADER = struct.Struct(">2sBB32sI")


class Field:
    """One body field: ``write(w, value, *args)`` puts it, ``read(r, *args)`` gets it back."""

    def __init__(self, write: Callable, read: Callable, *args) -> None:
        self._write, self._read, self.args = write, read, args

    def put(self, w: Writer, value) -> None:
        self._write(w, value, *self.args)

    def get(self, r: Reader):
        return self._read(r, *self.args)


def _pair(write: Callable, read: Callable) -> Callable[..., Field]:
    """The field kind of one Writer/Reader method pair: ``kind(*args)`` is a Field with those arguments."""
    return lambda *args: Field(write, read, *args)


fixed = _pair(Writer.fixed, Reader.fixed)  # size, what: raw bytes of a fixed size
signature = _pair(Writer.signature, Reader.signature)  # [what]: flag 0, or flag 1 and 64 bytes
blob = _pair(Writer.blob, Reader.blob)  # limit, what: u32 length, then the bytes
blobs = _pair(Writer.blobs, Reader.blobs)  # limit, what: u32 count, then blobs
ids = _pair(Writer.ids, Reader.ids)  # what: u32 count, then strictly increasing u32 ids
blob_map = _pair(Writer.blob_map, Reader.blob_map)  # limit, what: id -> blob
share_map = _pair(Writer.share_map, Reader.share_map)  # what: id -> 33-byte field element < p


class IdMap(Field):
    """u32 count, then (u32 id, ``value`` field) per entry, ids strictly increasing.

    ``min_entry_bytes`` (id included) bounds the declared count by the bytes that remain.
    """

    def __init__(self, value: Field, min_entry_bytes: int, what: str) -> None:
        super().__init__(
            lambda w, mapping: w.map(mapping, lambda _, entry: value.put(w, entry)),
            lambda r: r.map(min_entry_bytes, what, lambda _: value.get(r)),
        )


#: A message's (or record's) body: attribute name -> field, in wire order. A tuple of names
#: is one field that carries several attributes (its value is the tuple of them).
Layout = Sequence[tuple]


class Record(Field):
    """A nested frozen dataclass (one entry of a map, or a key): its ``layout`` fields in order."""

    def __init__(self, cls: type, layout: Layout) -> None:
        super().__init__(lambda w, value: _put(w, value, layout), lambda r: cls(**_get(r, layout)))


def _put(w: Writer, value, layout: Layout) -> None:
    for name, field in layout:
        field.put(w, tuple(getattr(value, n) for n in name) if isinstance(name, tuple) else getattr(value, name))


def _get(r: Reader, layout: Layout) -> dict:
    values = {}
    for name, field in layout:
        value = field.get(r)
        values.update(zip(name, value) if isinstance(name, tuple) else ((name, value),))
    return values


class WireFormat:
    """One wire format: magic, version, and per message class its type byte and body layout.

    Args:
        magic: the 2 bytes every message of the format starts with.
        version: the one version this library speaks.
        layouts: message class -> ``(type byte, layout)``.
        noun / label: how errors name the format ("a secagg message", "";
            "an HE message", "HE ").
    """

    def __init__(self, magic: bytes, version: int, layouts: Mapping[type, tuple[int, Layout]], *,
                 noun: str, label: str) -> None:
        self.magic, self.version, self.noun, self.label = magic, version, noun, label
        self._layouts = dict(layouts)
        self._classes = {kind: cls for cls, (kind, _) in self._layouts.items()}

    @staticmethod
    def header_bytes() -> int:
        """Size of the fixed message header in bytes."""
        return _HEADER.size

    def encode(self, message) -> bytes:
        """Canonical wire bytes of ``message``, or :class:`MalformedMessageError`."""
        entry = self._layouts.get(type(message))
        if entry is None:
            raise MalformedMessageError(f"cannot encode {type(message).__name__}: not {self.noun}")
        kind, layout = entry
        w = Writer()
        w.parts.append(self.magic + bytes((self.version, kind)))
        w.fixed(message.session, SESSION_BYTES, "session")
        w.u32(message.sender if isinstance(message, FromParty) else message.recipient, "party id")
        _put(w, message, layout)
        return w.getvalue()

    def decode(self, data: bytes):
        """Parse wire bytes into a message, or raise :class:`MalformedMessageError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedMessageError(f"expected bytes; got {type(data).__name__}")
        r = Reader(bytes(data))
        magic, version, kind, session, party = _HEADER.unpack(r.take(_HEADER.size, "header"))
        if magic != self.magic:
            raise MalformedMessageError(f"not {self.noun}: magic {magic!r}, expected {self.magic!r}")
        if version != self.version:
            raise MalformedMessageError(
                f"unsupported {self.label}wire version {version}; this library speaks {self.version}"
            )
        cls = self._classes.get(kind)
        if cls is None:
            raise MalformedMessageError(f"unknown {self.label}message type {kind}")
        message = cls(session, party, **_get(r, self._layouts[cls][1]))
        if r.remaining():
            raise MalformedMessageError(f"{r.remaining()} trailing bytes after a {type(message).__name__}")
        return message
