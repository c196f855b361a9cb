"""What every protocol message of both paths is made of: an envelope and frozen fields.

Each message of the masking path (:mod:`secagg.messages`) and of the HE path
(:mod:`secagg.he.messages`) is a frozen dataclass that derives from one of two
envelopes:

* :class:`FromParty` - a message a party (client or site) sends: ``session``
  then ``sender``;
* :class:`ToParty` - a message the server (coordinator) sends: ``session``
  then ``recipient``.

``session`` is the 32-byte fingerprint of the session's configuration, so a
message can never be replayed into another session; the wire codecs read the
party field (sender or recipient) from the envelope class.

A message is immutable all the way down: on construction, every field
annotated ``FrozenMap`` becomes a :class:`FrozenMap` (id -> value, iterated in
id order, hashable), every ``frozenset`` field a frozenset, and every
``tuple`` field (ciphertext blobs) a tuple of ``bytes`` (a ``bytearray`` or
``memoryview`` is copied, so a caller's buffer cannot change a sent message).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from typing import Callable, Iterator, Mapping, TypeVar

__all__ = ["FrozenMap", "Frozen", "FromParty", "ToParty"]

V = TypeVar("V")


class FrozenMap(Mapping[int, V]):
    """An immutable, hashable mapping from client ids to values, iterated in id order."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[int, V] | None = None) -> None:
        data = dict(items or {})
        self._data = {k: data[k] for k in sorted(data)}
        self._hash = None

    def __getitem__(self, key: int) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


def _frozen_map(value) -> FrozenMap:
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


def _frozen_ids(value) -> frozenset:
    return value if isinstance(value, frozenset) else frozenset(value)


def _frozen_blobs(value) -> tuple:
    return tuple(bytes(v) if isinstance(v, (bytearray, memoryview)) else v for v in value)


#: Field annotation -> how a constructed message freezes that field.
_FREEZE: dict[str, Callable] = {"FrozenMap": _frozen_map, "frozenset": _frozen_ids, "tuple": _frozen_blobs}


@cache
def _frozen_fields(cls: type) -> tuple:
    """``(name, freeze)`` for every field of ``cls`` whose annotation names a frozen container."""
    named = ((f.name, getattr(f.type, "__name__", f.type)) for f in fields(cls))
    return tuple((name, _FREEZE[kind]) for name, kind in named if kind in _FREEZE)


@dataclass(frozen=True)
class Frozen:
    """Base of every message and of the entries nested in one: freezes its container fields."""

    def __post_init__(self) -> None:
        for name, freeze in _frozen_fields(type(self)):
            object.__setattr__(self, name, freeze(getattr(self, name)))


@dataclass(frozen=True)
class FromParty(Frozen):
    """A message a client (site) sends to the server (coordinator)."""

    session: bytes
    sender: int


@dataclass(frozen=True)
class ToParty(Frozen):
    """A message the server (coordinator) sends to one client (site)."""

    session: bytes
    recipient: int
