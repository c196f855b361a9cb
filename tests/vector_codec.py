"""JSON form of protocol messages for the known-answer vectors in ``tests/vectors/``.

A message is written as ``{"type": NAME, "fields": {...}}``; values are tagged so
the reverse mapping is exact: ``{"hex": ...}`` for bytes, ``{"set": [...]}`` for a
frozenset of ids, ``{"map": [[id, value], ...]}`` for a FrozenMap, ``{"tuple":
[...]}`` for a tuple of blobs, and nested messages (AdvertisedKeys,
HEAdvertisedKey, HEContribution) as messages. Integers stay integers.
"""

from __future__ import annotations

import dataclasses

import secagg.he.messages as he_messages
import secagg.messages as messages

_CLASSES = {name: getattr(module, name) for module in (messages, he_messages) for name in module.__all__
            if dataclasses.is_dataclass(getattr(module, name, None))}


def to_json(value):
    if dataclasses.is_dataclass(value):
        return {"type": type(value).__name__,
                "fields": {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, frozenset):
        return {"set": sorted(value)}
    if isinstance(value, messages.FrozenMap):
        return {"map": [[k, to_json(value[k])] for k in sorted(value)]}
    if isinstance(value, tuple):
        return {"tuple": [to_json(v) for v in value]}
    if isinstance(value, int):
        return value
    raise TypeError(f"no vector form for {type(value).__name__}")


def from_json(value):
    if isinstance(value, int):
        return value
    if "type" in value:
        cls = _CLASSES[value["type"]]
        return cls(**{name: from_json(v) for name, v in value["fields"].items()})
    if "hex" in value:
        return bytes.fromhex(value["hex"])
    if "set" in value:
        return frozenset(value["set"])
    if "map" in value:
        return messages.FrozenMap({k: from_json(v) for k, v in value["map"]})
    if "tuple" in value:
        return tuple(from_json(v) for v in value["tuple"])
    raise ValueError(f"not a vector value: {value!r}")
