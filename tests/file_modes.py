"""The owner-only check of what a run writes (issue 21): every directory 0700, every file 0600.

Shared by the in-process (tests/test_file_modes.py), in-memory Flower (tests/test_flower_file_modes.py)
and deployed Flower (tests/test_flower_deploy.py) tests."""

from __future__ import annotations

import stat
from pathlib import Path

__all__ = ["modes", "not_owner_only"]


def modes(root: Path) -> dict[Path, int]:
    """Path -> permission bits of everything under ``root``, ``root`` included; symlinks are not followed."""
    found = {root: stat.S_IMODE(root.lstat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[path] = stat.S_IMODE(path.lstat().st_mode)
    return found


def not_owner_only(root: Path) -> dict[str, str]:
    """What under ``root`` is not owner-only (a directory not 0700, a file not 0600), as {path relative to
    ``root``'s parent: octal mode}; empty when everything is."""
    return {str(path.relative_to(root.parent)): oct(mode) for path, mode in modes(root).items()
            if mode != (0o700 if path.is_dir() else 0o600)}
