"""What a DPIA document is made of: its blocks, its risk scale, its placeholder and number formats.

A document is plain data (``{"title", "sections", "placeholders", "figures", "facts"}``); a section
is ``{"id", "title", "blocks"}`` and a block one of ``p``, ``table``, ``list``, ``pre``, ``warn``
or ``svg``. The templates in ``simulation/reports/templates`` render exactly these block types.
"""

from __future__ import annotations

import math

from ...errors import SimulationInputError

__all__ = ["DPIAError", "LEVELS", "PLACEHOLDER", "todo", "level", "num", "eps", "paragraph", "table", "bullets",
           "preformatted", "warning", "section"]

LEVELS = ("negligible", "limited", "significant", "maximum")  # CNIL PIA four-level scale
PLACEHOLDER = "[TO BE COMPLETED: {}]"


class DPIAError(SimulationInputError):
    """The DPIA cannot be produced (no ledger, bad organisation file, no renderer)."""


def todo(name: str) -> str:
    return PLACEHOLDER.format(name)


def level(i: int) -> str:
    return LEVELS[max(0, min(3, i))]


def num(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{value:.{digits}f}" else f"{value}"


def eps(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def paragraph(text):
    return {"type": "p", "text": text}


def table(header, rows):
    return {"type": "table", "header": list(header), "rows": [[str(c) for c in r] for r in rows]}


def bullets(items):
    return {"type": "list", "items": [str(i) for i in items]}


def preformatted(text):
    return {"type": "pre", "text": text}


def warning(text):
    return {"type": "warn", "text": text}


def section(sid, title, *blocks):
    return {"id": sid, "title": title, "blocks": [b for b in blocks if b is not None]}
