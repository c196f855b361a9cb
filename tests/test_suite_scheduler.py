"""The placement of test files on xdist workers under ``make test`` (tests/conftest.py).

Driven with stand-in workers (they record what they are sent), the way xdist's controller drives a
scheduler: collections in, ``schedule()``, then one ``mark_test_complete`` per finished test. Checked:
the longest file goes to an idle worker, a short one to a worker still busy with a long file, and every
collected test is sent to exactly one worker once (nothing dropped, nothing run twice).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("xdist")

from tests import conftest  # noqa: E402


class _Worker:
    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices) -> None:
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


# In an order that xdist's own loadfile scheduler would hand out as it stands (short files first).
COLLECTION = (["tests/test_short_b.py::test_a", "tests/test_short_b.py::test_b"]
              + [f"tests/test_many.py::test_{i}" for i in range(5)]
              + ["tests/test_short_a.py::test_a"]
              + [f"tests/test_mid.py::test_{i}" for i in range(3)]
              + ["tests/test_long.py::test_a"])


def _scheduler(monkeypatch, workers: int):
    monkeypatch.setattr(conftest, "FILE_SECONDS", {"test_long.py": 600.0, "test_mid.py": 100.0})
    config = SimpleNamespace(getvalue=lambda name: {"tx": [f"{workers}*popen"], "dist": "loadfile"}[name],
                             option=SimpleNamespace(loadscopereorder=False))
    sched = conftest.longest_file_first(config)
    nodes = [_Worker(f"gw{i}") for i in range(workers)]
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        sched.add_node_collection(node, COLLECTION)
    sched.schedule()
    return sched, nodes


def _files(node) -> list[str]:
    files = []
    for index in node.sent:
        name = COLLECTION[index].split("::")[0].removeprefix("tests/")
        if not files or files[-1] != name:
            files.append(name)
    return files


def test_the_longest_file_goes_to_an_idle_worker_and_a_short_one_queues_behind_a_long_one(monkeypatch):
    _, (gw0, gw1, gw2) = _scheduler(monkeypatch, 3)
    # Idle workers take the longest files; unlisted files rank by their number of tests.
    # gw0's one-test file leaves it one test to run, so xdist queues another file on it at once:
    # the shortest left (one test), not the five-test file.
    assert _files(gw0) == ["test_long.py", "test_short_a.py"]
    assert _files(gw1) == ["test_mid.py"]
    assert _files(gw2) == ["test_many.py"]


def test_every_collected_test_is_sent_once(monkeypatch):
    sched, nodes = _scheduler(monkeypatch, 2)
    while True:  # finish the first test each worker holds until nothing is left to hand out
        progressed = False
        for node in nodes:
            done = [COLLECTION.index(n) for units in sched.assigned_work[node].values() for n, ok in units.items()
                    if ok]
            todo = [i for i in node.sent if i not in done]
            if todo:
                sched.mark_test_complete(node, todo[0])
                progressed = True
        if not progressed:
            break
    sent = sorted(i for node in nodes for i in node.sent)
    assert sent == list(range(len(COLLECTION)))
    assert not sched.workqueue and not sched.has_pending
    # The long file's worker got its filler first; the rest went to whichever worker ran dry.
    assert _files(nodes[0])[:2] == ["test_long.py", "test_short_a.py"]


def test_at_most_two_flower_process_files_run_at_once_while_other_files_are_left(monkeypatch):
    monkeypatch.setattr(conftest, "FILE_SECONDS", {"test_flower_crash.py": 600.0, "test_flower.py": 500.0,
                                                   "test_flower_deploy.py": 400.0, "test_mid.py": 100.0})
    collection = ["tests/test_mid.py::test_a", "tests/test_mid.py::test_b", "tests/test_mid.py::test_c",
                  "tests/test_flower_deploy.py::test_a", "tests/test_flower_deploy.py::test_b",
                  "tests/test_flower_deploy.py::test_c", "tests/test_flower.py::test_a", "tests/test_flower.py::test_b",
                  "tests/test_flower.py::test_c", "tests/test_flower_crash.py::test_a"]
    config = SimpleNamespace(getvalue=lambda name: {"tx": ["3*popen"], "dist": "loadfile"}[name],
                             option=SimpleNamespace(loadscopereorder=False))
    sched = conftest.longest_file_first(config)
    nodes = [_Worker(f"gw{i}") for i in range(3)]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    first = [collection[node.sent[0]].split("::")[0] for node in nodes]
    # The third-longest file is a Flower process file too: the third worker takes test_mid.py instead.
    assert first == ["tests/test_flower_crash.py", "tests/test_flower.py", "tests/test_mid.py"]
    # Only Flower files are left for the busy crash worker's queue: it takes one, to run after its own.
    assert [collection[i].split("::")[0] for i in nodes[0].sent][-1] == "tests/test_flower_deploy.py"


def test_every_flower_process_file_has_a_measured_time_and_exists():
    """A Flower process file without a figure counts as a short file (``SHORT_FILE_SECONDS``, 2 s) and is
    ranked by its test count instead of its federation's time. Each named file exists."""
    from pathlib import Path

    here = Path(conftest.__file__).parent
    missing = sorted(name for name in conftest.FEDERATION_FILES if name not in conftest.FILE_SECONDS)
    assert not missing, missing
    assert all((here / name).is_file() for name in [*conftest.FEDERATION_FILES, *conftest.FILE_SECONDS])
