"""The test federations' shorter polls (``tests/flower_poll.py``, ``tests/flower_fast_poll/sitecustomize.py``).

They change only how long flwr's pollers wait before asking again, only in processes started with
:func:`fast_poll_env`, and never anything that production code reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from tests.flower_poll import FAST_POLL_DIR, POLL_SECONDS, fast_poll_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("flwr.supernode.start_client_internal", "flwr.superlink.grid.http_grid")

# Records every real time.sleep call, then asks each module's `time` to sleep 3 s and 0.1 s.
_PROBE = f"""
import json, time
calls = []
time.sleep = calls.append
import importlib
modules = [importlib.import_module(name) for name in {MODULES!r}]
for module in modules:
    module.time.sleep(3)
    module.time.sleep(0.1)
print(json.dumps({{"calls": calls, "real_time": [module.time is time for module in modules],
                  "clock_is_real": [module.time.time is time.time for module in modules]}}))
"""


def _probe(env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _plain_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SECAGG_TEST_FLOWER_MAX_SLEEP",
                                                             "FLWR_SUPEREXEC_TASK_POLL_INTERVAL")}
    return env | {"PYTHONPATH": str(ROOT)}


def test_the_harness_caps_the_two_fixed_poll_sleeps_and_nothing_else_of_time():
    seen = _probe(fast_poll_env(_plain_env()))
    assert seen["calls"] == [POLL_SECONDS, 0.1, POLL_SECONDS, 0.1]
    assert seen["real_time"] == [False, False] and seen["clock_is_real"] == [True, True]


def test_without_the_variable_the_flwr_modules_keep_their_own_sleeps():
    plain = _probe(_plain_env())
    assert plain["calls"] == [3, 0.1, 3, 0.1] and plain["real_time"] == [True, True]
    # The folder on PYTHONPATH alone changes nothing either.
    env = _plain_env()
    env["PYTHONPATH"] = os.pathsep.join([str(FAST_POLL_DIR), env["PYTHONPATH"]])
    assert _probe(env) == plain


def test_fast_poll_env_keeps_the_path_and_sets_a_task_poll_interval_that_flwr_accepts(monkeypatch):
    from flwr.supercore.superexec import run_superexec

    env = fast_poll_env({"PYTHONPATH": f"/a{os.pathsep}/b", "OTHER": "kept"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(FAST_POLL_DIR), "/a", "/b"] and env["OTHER"] == "kept"
    monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"])
    assert run_superexec._get_task_poll_interval() == POLL_SECONDS


def test_the_capped_modules_still_poll_with_time_sleep():
    """If flwr stops sleeping through ``time.sleep`` in these modules, the cap no longer applies: say so."""
    import importlib
    import inspect

    for name in MODULES:
        assert "time.sleep(" in inspect.getsource(importlib.import_module(name)), name


def test_no_production_code_reads_the_test_variables():
    for package in ("secagg", "dp", "models", "simulation"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sh", ".toml"):
                text = path.read_text(errors="replace")
                assert "SECAGG_TEST_FLOWER_MAX_SLEEP" not in text and "FLWR_SUPEREXEC_TASK_POLL_INTERVAL" not in text, path
