"""Typed errors of the brain-MRI package.

Every error that :mod:`models` raises on purpose derives from :class:`ModelsError`,
so a caller (the simulation, the CLI) can catch one class and print a message that
names the offending file or argument instead of a traceback from deep inside
numpy, nibabel or torch.

* :class:`NiftiError` - one file is unusable: not NIfTI, truncated, corrupt,
  4-D, wrongly shaped, empty brain. It carries ``path`` and ``reason``.
* :class:`DatasetError` - a site directory does not follow the documented
  layout (missing, empty, a pathological volume without its ground-truth mask,
  too few volumes to split).
* :class:`ConfigError` - an argument or configuration value out of range
  (image size, slice range, voxel size, scale name, ...).
* :class:`UnknownModelError` - a model name that the registry does not know.
* :class:`ScoringError` - unusable inputs to scoring or metrics (shape
  mismatch, no positive voxels where positives are required, bad FPR).
* :class:`MissingDependencyError` - an optional dependency of the ``mri``
  extra is not installed; the message says which ``pip install`` fixes it.

Warnings derive from :class:`ModelsWarning` (a :class:`UserWarning`):
:class:`SkippedFilesWarning` lists files that ``skip_invalid=True`` left out;
:class:`PreprocessWarning` flags a volume that was used but looks suspicious
(brain larger than the field of view, for instance).

Value-type errors also derive from :class:`ValueError` (and the missing
dependency from :class:`ImportError`), so generic callers still catch them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ModelsError",
    "NiftiError",
    "DatasetError",
    "ConfigError",
    "UnknownModelError",
    "ScoringError",
    "MissingDependencyError",
    "ModelsWarning",
    "SkippedFilesWarning",
    "PreprocessWarning",
]


class ModelsError(Exception):
    """Base of every error raised on purpose by :mod:`models`."""


class NiftiError(ModelsError, ValueError):
    """A NIfTI file (or the volume it holds) is unusable.

    ``path`` is the offending file and ``reason`` says what was wrong with it,
    e.g. ``"truncated or corrupt data (Compressed file ended ...)"`` or
    ``"is 4-D with shape (64, 64, 40, 3); expected one 3-D volume"``.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep the two-argument constructor picklable (worker processes)
        return (type(self), (self.path, self.reason))


class DatasetError(ModelsError, ValueError):
    """A site directory is missing, empty, or does not follow the documented layout."""


class ConfigError(ModelsError, ValueError):
    """An argument or configuration value is out of range or inconsistent."""


class UnknownModelError(ModelsError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class ScoringError(ModelsError, ValueError):
    """Inputs to anomaly scoring or metrics are unusable (shapes, labels, rates)."""


class MissingDependencyError(ModelsError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class ModelsWarning(UserWarning):
    """Base of the warnings issued by :mod:`models`."""


class SkippedFilesWarning(ModelsWarning):
    """Some files were skipped (``skip_invalid=True``); the message lists each with its reason."""


class PreprocessWarning(ModelsWarning):
    """A volume was preprocessed but something about it deserves a look."""
