"""The run directory: one folder holding everything a run produced, written crash-safely.

Layout::

    RUN_DIR/
      config.json          resolved configuration (+ its fingerprint)
      state.json           last completed round (rewritten atomically after each round)
      metrics.jsonl        one JSON line per round (appended and fsynced)
      ledger.sqlite        privacy ledger (dp.ledger) + ledger.head.json
      checkpoints/         global.pt (atomic: temp file, fsync, rename); each site's own model is in
                           site-local/checkpoints/SITE.pt, never here
      plots/               PNG figures
      summary.json         final summary (written last)

Every file that a later step depends on is written to a temporary name,
fsynced and renamed over the old one (then the directory is fsynced), so a
crash or SIGKILL leaves either the old or the new version, never half of one.

Least privilege on disk (issue 21): the run directory and its sub-directories
are created 0700 and every file this module writes 0600, set explicitly
(``fchmod``/``chmod``), so the caller's umask cannot widen them; the ledger
does the same for ``ledger.sqlite`` (and SQLite gives its journal the
database's mode). :func:`private_umask` narrows what third-party writers
(matplotlib, nibabel, torch) create while a simulation runs, and
:meth:`RunDirectory.restrict` narrows anything left at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from models.owner_only import owner_only_dirs

from ..errors import SimulationInputError

__all__ = ["RunDirectory", "atomic_write_bytes", "atomic_write_json", "RunDirectoryError", "private_dir",
           "private_umask", "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "InsecurePermissionsError",
           "require_private_dir"]

#: Modes of everything a run writes: only the owner may read, write or list.
PRIVATE_DIR_MODE, PRIVATE_FILE_MODE = 0o700, 0o600


class RunDirectoryError(SimulationInputError):
    """The run directory cannot be used (belongs to another configuration, missing state, ...)."""


class InsecurePermissionsError(RunDirectoryError):
    """A directory that must be its owner's alone is open to group or others, or owned by another user."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path) -> Path:
    """Create ``path`` and its missing parents as 0700 whatever the umask; an existing ``path`` is narrowed to 0700."""
    path = Path(path)
    for directory in owner_only_dirs(path):  # those another process made meanwhile are narrowed too
        os.chmod(directory, PRIVATE_DIR_MODE)
    if not path.is_dir():
        raise RunDirectoryError(f"{path} is not a directory")
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def require_private_dir(path, what: str) -> Path:
    """``path`` as a directory only its owner (this process's user) can access; created 0700 when missing.

    Unlike :func:`private_dir`, an existing directory is never narrowed: one that group or others can
    access (or that another user owns) is refused, as ssh refuses a readable key. Whatever it held may
    already have been read or replaced, so the operator decides (``chmod 700``, or a fresh directory).
    A symbolic link is followed: the directory it names is what counts.

    Raises:
        InsecurePermissionsError: naming ``what``, the path and its mode.
    """
    import stat

    path = Path(path)
    if not path.exists():
        return private_dir(path)
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise RunDirectoryError(f"{what} {path} is not a directory")
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid():
        raise InsecurePermissionsError(f"{what} {path} belongs to user id {info.st_uid}, not to this user "
                                       f"({os.getuid()}); use a directory of your own")
    if mode & 0o077:
        raise InsecurePermissionsError(f"{what} {path} has mode {mode:04o}; only its owner may access it: "
                                       f"chmod 700 {path}")
    return path


@contextlib.contextmanager
def private_umask():
    """Run the body with umask 077 (files at most 0600, directories 0700), then restore the caller's.

    The umask is process-wide: this is for a command's whole run (``secagg simulate``), not a library call
    running beside other threads that create files.
    """
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _open_private(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask only narrows; an older file may have been wider
    return fd


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(_open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, value) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode())


class RunDirectory:
    """Paths and crash-safe writers of one run directory."""

    def __init__(self, root) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.plots = self.root / "plots"

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    def check_new(self) -> None:
        """What :meth:`create` refuses, checked before a run does any work (it writes nothing): a directory
        that holds a run or anything else, a path that is a file, or one under a file. :meth:`create` checks
        again when it creates the directory."""
        if self.config_path.exists():
            raise RunDirectoryError(
                f"{self.root} already holds a run; use --resume {self.root} to continue it or choose another --out"
            )
        ancestor = self.root
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            where = "is" if ancestor == self.root else f"is under {ancestor}, which is"
            raise RunDirectoryError(f"{self.root} {where} not a directory; choose an empty or new --out directory")
        if self.root.is_dir() and any(self.root.iterdir()):
            raise RunDirectoryError(f"{self.root} exists and is not empty; choose an empty or new --out directory")

    def create(self, config_dict: dict, fingerprint: str) -> None:
        """Initialise a new run; refuses a directory that already holds a run (:meth:`check_new`)."""
        self.check_new()
        private_dir(self.root)
        private_dir(self.checkpoints)
        private_dir(self.plots)
        atomic_write_json(self.config_path, {"fingerprint": fingerprint, "config": config_dict})

    def restrict(self) -> None:
        """Narrow everything under the run directory to 0700 (directories) / 0600 (files)."""
        for base, dirs, files in os.walk(self.root):
            os.chmod(base, PRIVATE_DIR_MODE)
            for name in files:
                path = os.path.join(base, name)
                if not os.path.islink(path):
                    os.chmod(path, PRIVATE_FILE_MODE)

    def load_config(self) -> tuple[dict, str]:
        if self.config_path.exists() and not self.config_path.is_file():
            raise RunDirectoryError(f"{self.config_path} is not a regular file")
        try:
            stored = json.loads(self.config_path.read_text())
            config, fingerprint = stored["config"], stored["fingerprint"]
        except FileNotFoundError:
            raise RunDirectoryError(f"{self.root} is not a run directory (no config.json)") from None
        except NotADirectoryError:
            raise RunDirectoryError(f"{self.root} is not a run directory (not a directory)") from None
        except (ValueError, KeyError, TypeError):
            raise RunDirectoryError(f"{self.config_path} is corrupt") from None
        if not isinstance(config, dict) or not isinstance(fingerprint, str):
            raise RunDirectoryError(f"{self.config_path} is corrupt")
        return config, fingerprint

    def read_state(self) -> dict:
        if not self.state_path.exists():
            return {"last_round": -1, "rounds": {}}
        try:
            return json.loads(self.state_path.read_text())
        except ValueError:
            raise RunDirectoryError(f"{self.state_path} is corrupt") from None

    def write_state(self, state: dict) -> None:
        atomic_write_json(self.state_path, state)

    def append_metrics(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with os.fdopen(_open_private(self.metrics_path, os.O_WRONLY | os.O_APPEND), "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a torn last line from a crash: ignore it (the round is redone)
        return records

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Drop lines of rounds that did not complete (after a crash), atomically."""
        atomic_write_bytes(
            self.metrics_path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records).encode()
        )

    def save_torch(self, name: str, state: dict) -> None:
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoints / name, buffer.getvalue())

    # A site's own model (global + its individual DP update; FedDis' local parts) is what secure aggregation
    # hides from the coordinator: it is kept in the sites' folder, never in checkpoints/ (issue-15 review).
    SITE_MODELS = ("site-local", "checkpoints")

    def save_site_model(self, site: str, state: dict) -> None:
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(private_dir(self.root.joinpath(*self.SITE_MODELS)) / f"{site}.pt", buffer.getvalue())

    def load_site_model(self, site: str) -> dict:
        import torch

        path = self.root.joinpath(*self.SITE_MODELS) / f"{site}.pt"
        if not path.is_file():  # a run directory written before the site models moved out of checkpoints/
            return self.load_torch(f"site-{site}.pt")
        return torch.load(path, map_location="cpu", weights_only=True)

    def load_torch(self, name: str) -> dict:
        import torch

        path = self.checkpoints / name
        if not path.exists():
            raise RunDirectoryError(f"checkpoint {path} is missing; the run cannot be resumed")
        return torch.load(path, map_location="cpu", weights_only=True)
