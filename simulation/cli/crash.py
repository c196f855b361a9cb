"""The crash report of an unexpected error: its traceback, never its locals, in a 0600 file."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["write_crash_report"]


def _crash_directory(args) -> Path | None:
    """The run directory of the command, if it has one that exists."""
    for name in ("run_dir", "resume", "out"):
        value = getattr(args, name, None) if args is not None else None
        if value and Path(value).is_dir() and getattr(args, "command", None) != "data":
            return Path(value)
    return None


def write_crash_report(args, argv, exc: BaseException) -> str:
    """Write the traceback of an unexpected error (mode 0600) into the run directory, else a new
    private temporary directory; returns its path. Locals are never written, only the traceback."""
    import os
    import platform
    import tempfile
    import time
    import traceback

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    directory = _crash_directory(args)
    text = "".join([
        f"secagg crash report {stamp}\n",
        f"command: secagg {' '.join(argv if argv is not None else sys.argv[1:])}\n",
        f"python {platform.python_version()} on {platform.platform()}\n\n",
        *traceback.format_exception(type(exc), exc, exc.__traceback__),
    ])
    for target in ([directory] if directory is not None else []) + [None]:
        try:
            folder = target if target is not None else Path(tempfile.mkdtemp(prefix="secagg-crash-"))
            path = folder / f"crash-{stamp}-{os.getpid()}.txt"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            return str(path)
        except OSError:
            continue
    return "(could not be written)"
