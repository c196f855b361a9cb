"""Public names of a package, imported from their submodules on first use (PEP 562).

Why: every Flower message a node answers, and every ``secagg`` command, is a fresh Python process.
Eager package ``__init__`` files made each of them import the whole composition root (both engines,
the reports, the experiment: about 0.45 CPU-seconds) before doing its one job. With
:func:`lazy_exports` a package's ``__init__`` only names where each public name lives;
``from simulation.federation import open_run`` imports ``simulation.federation.setup`` and nothing
else. ``__all__``, ``dir()`` and ``from package import name`` behave as before.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: name -> relative submodule (``".setup"``).

    A name is imported once, then stored in the package's namespace (later lookups are plain attributes).
    """

    def __getattr__(name: str) -> object:
        try:
            submodule = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(submodule, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
