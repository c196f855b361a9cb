"""Owner-only folders: create a path's missing directories as 0700 whatever the umask.

What the preprocessing cache (:mod:`models.cache`) and the simulation's run directory write is
patient data or derived from it, so the folders made for it are private to their owner (issue 21).
An explicit ``chmod`` follows each ``mkdir``: the umask can narrow ``mkdir``'s mode but never widen
it, and a umask such as 0o077 is not something a caller can rely on.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["owner_only_dirs"]


def owner_only_dirs(path) -> list[Path]:
    """Create ``path`` and its missing parents as 0700; return the directories that were missing, parents first.

    A directory that another process made between the check and the ``mkdir`` keeps its mode here (it is
    in the returned list, so a caller that wants it narrowed too can ``chmod`` it)."""
    missing = []
    probe = Path(path)
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile: leave its mode alone
            continue
        os.chmod(directory, 0o700)
    return list(reversed(missing))
