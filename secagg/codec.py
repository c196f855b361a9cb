"""Canonical binary building blocks shared by the wire formats (masking and HE).

A :class:`Writer` method and the :class:`Reader` method of the same name take
the same arguments after the value (a ``Reader`` returns the value), so a
field of a message body is one pair of them (:mod:`secagg.wireformat`).

Big-endian u8/u32 integers, fixed-size fields, optional signatures (flag byte
then 64 bytes), length-prefixed blobs with a size limit, strictly increasing
id sets and id-keyed maps. Every reader method checks lengths against the
bytes that remain *before* allocating anything and raises
:class:`~secagg.errors.MalformedMessageError` on any deviation, so a decoder
built from them accepts exactly one encoding per message (canonical) and
never crashes on hostile input.
"""

from __future__ import annotations

import struct
from typing import Callable

from .errors import MalformedMessageError
from .messagebase import FrozenMap
from .shamir import PRIME, SHARE_BYTES

__all__ = ["Writer", "Reader", "SIGNATURE_BYTES", "MAX_U32"]

SIGNATURE_BYTES = 64
MAX_U32 = 2**32 - 1
_U32 = struct.Struct(">I")


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

    def signature(self, value: bytes, what: str = "signature") -> None:
        """An optional Ed25519 signature: flag 0, or flag 1 and 64 bytes."""
        if value:
            self.u8(1)
            self.fixed(value, SIGNATURE_BYTES, what)
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

    def ids(self, values, what: str) -> None:
        ordered = sorted(values)
        self.u32(len(ordered))
        for value in ordered:
            self.u32(value, f"{what} id")

    def map(self, mapping, write_value: Callable[[int, object], None]) -> None:
        """u32 count, then per entry its u32 id and ``write_value(id, value)``, ids increasing."""
        self.u32(len(mapping))
        for key in sorted(mapping):
            self.u32(key, "id")
            write_value(key, mapping[key])

    def blob_map(self, mapping, limit: int, what: str) -> None:
        self.map(mapping, lambda key, value: self.blob(bytes(value), limit, f"{what} for id {key}"))

    def share_map(self, mapping, what: str) -> None:
        self.map(mapping, lambda key, value: self._share(key, value, what))

    def _share(self, key: int, value: int, what: str) -> None:
        if not 0 <= value < PRIME:
            raise MalformedMessageError(f"{what} value for id {key} is not a field element")
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

    fixed = take  # the reverse of Writer.fixed

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
