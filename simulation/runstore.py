"""The run directory: one folder holding everything a run produced, written crash-safely.

Layout::

    RUN_DIR/
      config.json          resolved configuration (+ its fingerprint)
      state.json           last completed round (rewritten atomically after each round)
      metrics.jsonl        one JSON line per round (appended and fsynced)
      ledger.sqlite        privacy ledger (dp.ledger) + ledger.head.json
      checkpoints/         global.pt and site-NAME.pt (atomic: temp file, fsync, rename)
      plots/               PNG figures
      summary.json         final summary (written last)

Every file that a later step depends on is written to a temporary name,
fsynced and renamed over the old one (then the directory is fsynced), so a
crash or SIGKILL leaves either the old or the new version, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["RunDirectory", "atomic_write_bytes", "atomic_write_json", "RunDirectoryError"]


class RunDirectoryError(ValueError):
    """The run directory cannot be used (belongs to another configuration, missing state, ...)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
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

    def create(self, config_dict: dict, fingerprint: str) -> None:
        """Initialise a new run; refuses a directory that already holds a run."""
        if self.config_path.exists():
            raise RunDirectoryError(
                f"{self.root} already holds a run; use --resume {self.root} to continue it or choose another --out"
            )
        if self.root.exists() and any(self.root.iterdir()):
            raise RunDirectoryError(f"{self.root} exists and is not empty; choose an empty or new --out directory")
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.plots.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, {"fingerprint": fingerprint, "config": config_dict})

    def load_config(self) -> tuple[dict, str]:
        try:
            stored = json.loads(self.config_path.read_text())
            return stored["config"], stored["fingerprint"]
        except FileNotFoundError:
            raise RunDirectoryError(f"{self.root} is not a run directory (no config.json)") from None
        except (ValueError, KeyError):
            raise RunDirectoryError(f"{self.config_path} is corrupt") from None

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
        with open(self.metrics_path, "a") as f:
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

    def load_torch(self, name: str) -> dict:
        import torch

        path = self.checkpoints / name
        if not path.exists():
            raise RunDirectoryError(f"checkpoint {path} is missing; the run cannot be resumed")
        return torch.load(path, map_location="cpu", weights_only=True)
