"""models.owner_only_dirs (the one helper for 0700 folders) and the run store's private_dir built on it:
missing folders are made 0700 whatever the umask, parents first; a folder another process makes in
between keeps its mode in models' cache but is narrowed by the run store (as before the two shared it)."""

import os
import stat
from pathlib import Path

from models.owner_only import owner_only_dirs
from simulation.federation.runstore import private_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_missing_folders_are_made_owner_only_parents_first_whatever_the_umask(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    old = os.umask(0)
    try:
        made = owner_only_dirs(target)
    finally:
        os.umask(old)
    assert made == [tmp_path / "a", tmp_path / "a" / "b", target]
    assert [mode(p) for p in made] == [0o700] * 3
    assert owner_only_dirs(target) == []  # nothing missing: nothing made, nothing returned


def raced(monkeypatch, victim: Path):
    """``victim`` is made 0755 by 'another process' right before this process's mkdir of it."""
    original = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == victim:
            original(self, 0o755)
            os.chmod(self, 0o755)
            raise FileExistsError(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_a_folder_made_meanwhile_keeps_its_mode_and_is_returned(tmp_path, monkeypatch):
    raced(monkeypatch, tmp_path / "a")
    made = owner_only_dirs(tmp_path / "a" / "b")
    assert made == [tmp_path / "a", tmp_path / "a" / "b"]
    assert (mode(tmp_path / "a"), mode(tmp_path / "a" / "b")) == (0o755, 0o700)


def test_the_run_store_narrows_a_folder_made_meanwhile(tmp_path, monkeypatch):
    raced(monkeypatch, tmp_path / "run")
    assert private_dir(tmp_path / "run" / "site-local") == tmp_path / "run" / "site-local"
    assert (mode(tmp_path / "run"), mode(tmp_path / "run" / "site-local")) == (0o700, 0o700)
