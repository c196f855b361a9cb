"""The one way a command prints its result: one JSON object with ``--json``, else lines for a person."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable

__all__ = ["emit"]


def emit(args: argparse.Namespace, payload, lines=(), *, default: Callable | None = None) -> None:
    """Print ``payload`` as indented JSON (``json.dumps(payload, indent=2, default=default)``) when
    ``args.json`` is set, else ``lines`` - one string or an iterable of strings - one per line.

    Either may be given lazily: ``payload`` as a zero-argument callable, called only with ``--json``;
    ``lines`` as a zero-argument callable or a generator, used only without it. What one form needs is
    then never computed for the other, so a value that only the other form shows cannot make it fail."""
    if getattr(args, "json", False):
        print(json.dumps(payload() if callable(payload) else payload, indent=2, default=default))
        return
    text: str | Iterable[str] = lines() if callable(lines) else lines
    for line in [text] if isinstance(text, str) else text:
        print(line)
