"""Lazy imports of optional dependencies with an error that names the extra.

nilearn (MNI152 templates) and matplotlib (figures) are heavy and needed by one
module each, so they are imported inside the functions that use them. When one
is missing the caller gets :class:`~models.errors.MissingDependencyError` saying
``pip install secagg[mri]`` rather than a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["require"]

_EXTRA = "mri"


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra.

    ``purpose`` completes the sentence "needed for ...", e.g. ``"synthetic cohorts"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"{top} is needed for {purpose} but is not installed; "
            f"install it with `pip install secagg[{_EXTRA}]` ({exc})"
        ) from exc
