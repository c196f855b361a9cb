"""Canonical binary building blocks shared by the wire formats (masking and HE).

:class:`Framing` is the header both formats put before a message body::

    magic 2B | version u8 | type u8 | session 32B | party u32

(``party`` is the sender of a :class:`~secagg.messagebase.FromParty` message
and the recipient of a :class:`~secagg.messagebase.ToParty` one); each format
has its own magic, so the two can never be confused.

Body fields: big-endian u8/u32 integers, fixed-size fields, optional signatures (flag byte
then 64 bytes), length-prefixed blobs with a size limit, strictly increasing
id sets and id-keyed maps. Every reader method checks lengths against the
bytes that remain *before* allocating anything and raises
:class:`~secagg.errors.MalformedMessageError` on any deviation, so a decoder
built from them accepts exactly one encoding per message (canonical) and
never crashes on hostile input.
"""

from __future__ import annotations

import struct
from typing import Callable, Mapping

from .errors import MalformedMessageError
from .messagebase import FromParty, FrozenMap
from .shamir import PRIME, SHARE_BYTES

__all__ = ["Framing", "Writer", "Reader", "SESSION_BYTES", "SIGNATURE_BYTES", "MAX_U32"]

SESSION_BYTES = 32
SIGNATURE_BYTES = 64
MAX_U32 = 2**32 - 1
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">2sBB32sI")


class Framing:
    """One wire format's header: its magic, its version and its message-type numbers.

    Args:
        magic: the 2 bytes every message of the format starts with.
        version: the one version this library speaks.
        types: message class -> type byte.
        noun / label: how errors name the format ("a secagg message", "";
            "an HE message", "HE ").
    """

    def __init__(self, magic: bytes, version: int, types: Mapping[type, int], *, noun: str, label: str) -> None:
        self.magic, self.version, self.types = magic, version, dict(types)
        self.noun, self.label = noun, label

    @staticmethod
    def header_bytes() -> int:
        """Size of the fixed message header in bytes."""
        return _HEADER.size

    def writer(self, message) -> "Writer":
        """A :class:`Writer` holding the header of ``message``, or :class:`MalformedMessageError`."""
        kind = self.types.get(type(message))
        if kind is None:
            raise MalformedMessageError(f"cannot encode {type(message).__name__}: not {self.noun}")
        w = Writer()
        w.parts.append(self.magic + bytes((self.version, kind)))
        w.fixed(message.session, SESSION_BYTES, "session")
        w.u32(message.sender if isinstance(message, FromParty) else message.recipient, "party id")
        return w

    def reader(self, data: bytes) -> tuple["Reader", int, bytes, int]:
        """``(reader at the body, type byte, session, party)``; wrong magic or version raise."""
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
        return r, kind, session, party

    def unknown(self, kind: int) -> MalformedMessageError:
        return MalformedMessageError(f"unknown {self.label}message type {kind}")

    @staticmethod
    def finish(r: "Reader", message):
        """``message``, if the reader consumed every byte (a canonical encoding has none left)."""
        if r.remaining():
            raise MalformedMessageError(f"{r.remaining()} trailing bytes after a {type(message).__name__}")
        return message


class Writer:
    """Accumulates the canonical encoding of one message."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, value: int) -> None:
        self.parts.append(bytes((value,)))

    def u32(self, value: int, what: str = "value") -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U32:
            raise MalformedMessageError(f"{what} {value!r} does not fit in u32")
        self.parts.append(_U32.pack(value))

    def fixed(self, value: bytes, size: int, what: str) -> None:
        if not isinstance(value, (bytes, bytearray)) or len(value) != size:
            got = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
            raise MalformedMessageError(f"{what} must be {size} bytes; got {got}")
        self.parts.append(bytes(value))

    def signature(self, value: bytes) -> None:
        """An optional Ed25519 signature: flag 0, or flag 1 and 64 bytes."""
        if value:
            self.u8(1)
            self.fixed(value, SIGNATURE_BYTES, "signature")
        else:
            self.u8(0)

    def blob(self, value: bytes, limit: int, what: str) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise MalformedMessageError(f"{what} must be bytes; got {type(value).__name__}")
        if len(value) > limit:
            raise MalformedMessageError(f"{what} of {len(value)} bytes exceeds {limit}")
        self.u32(len(value))
        self.parts.append(bytes(value))

    def words(self, value) -> None:
        """A large bytes-like payload, joined by :meth:`getvalue` without an intermediate copy."""
        self.parts.append(memoryview(value).cast("B"))

    def blobs(self, values, limit: int, what: str) -> None:
        self.u32(len(values))
        for value in values:
            self.blob(value, limit, what)

    def ids(self, values) -> None:
        ordered = sorted(values)
        self.u32(len(ordered))
        for value in ordered:
            self.u32(value, "id")

    def map(self, mapping, write_value: Callable[[int, object], None]) -> None:
        """u32 count, then per entry its u32 id and ``write_value(id, value)``, ids increasing."""
        self.u32(len(mapping))
        for key in sorted(mapping):
            self.u32(key, "id")
            write_value(key, mapping[key])

    def blob_map(self, mapping, limit: int, what: str) -> None:
        self.map(mapping, lambda key, value: self.blob(bytes(value), limit, f"{what} for id {key}"))

    def share_map(self, mapping) -> None:
        self.map(mapping, self._share)

    def _share(self, key: int, value: int) -> None:
        if not 0 <= value < PRIME:
            raise MalformedMessageError(f"share for id {key} is not a field element")
        self.parts.append(value.to_bytes(SHARE_BYTES, "big"))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    """Parses one message; every shortfall or deviation raises MalformedMessageError."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        return bytes(self._span(size, what))

    def view(self, size: int, what: str) -> memoryview:
        """Like :meth:`take`, but a read-only view into the message (no copy: for large vectors)."""
        return self._span(size, what).toreadonly()

    def _span(self, size: int, what: str) -> memoryview:
        if size < 0 or self.remaining() < size:
            raise MalformedMessageError(
                f"truncated message: expected {size} bytes of {what} at offset {self.pos}, "
                f"{self.remaining()} remain"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def count(self, min_entry_bytes: int, what: str) -> int:
        """A declared count, refused when the remaining bytes cannot possibly hold it."""
        n = self.u32(f"{what} count")
        if n * min_entry_bytes > self.remaining():
            raise MalformedMessageError(
                f"{what} count {n} needs at least {n * min_entry_bytes} bytes; {self.remaining()} remain"
            )
        return n

    def signature(self, what: str = "signature") -> bytes:
        flag = self.u8(f"{what} flag")
        if flag == 0:
            return b""
        if flag != 1:
            raise MalformedMessageError(f"{what} flag must be 0 or 1; got {flag}")
        return self.take(SIGNATURE_BYTES, what)

    def key(self, previous: int | None, what: str) -> int:
        """The next id of a strictly increasing sequence (canonical order, no duplicates)."""
        key = self.u32(f"{what} id")
        if previous is not None and key <= previous:
            raise MalformedMessageError(f"{what} ids must be strictly increasing; {key} follows {previous}")
        return key

    def ids(self, what: str) -> frozenset:
        out, previous = [], None
        for _ in range(self.count(4, what)):
            previous = self.key(previous, what)
            out.append(previous)
        return frozenset(out)

    def blob(self, limit: int, what: str) -> bytes:
        size = self.u32(f"{what} length")
        if size > limit:
            raise MalformedMessageError(f"{what} of {size} bytes exceeds {limit}")
        return self.take(size, what)

    def blobs(self, limit: int, what: str) -> tuple:
        return tuple(self.blob(limit, what) for _ in range(self.count(4, what)))

    def map(self, min_entry_bytes: int, what: str, read_value: Callable[[int], object]) -> FrozenMap:
        """The reverse of :meth:`Writer.map`; ``min_entry_bytes`` (id included) bounds the count."""
        out, previous = {}, None
        for _ in range(self.count(min_entry_bytes, what)):
            previous = self.key(previous, what)
            out[previous] = read_value(previous)
        return FrozenMap(out)

    def blob_map(self, limit: int, what: str) -> FrozenMap:
        return self.map(8, what, lambda _: self.blob(limit, what))

    def share_map(self, what: str) -> FrozenMap:
        return self.map(4 + SHARE_BYTES, what, lambda key: self._share(key, what))

    def _share(self, key: int, what: str) -> int:
        value = int.from_bytes(self.take(SHARE_BYTES, what), "big")
        if value >= PRIME:
            raise MalformedMessageError(f"{what} value for id {key} is not a field element")
        return value
