"""Test-only: shorter fixed waits in the Flower processes the tests start (never imported by secagg itself).

flwr 1.42 waits a fixed time between polls in two places that no option or environment variable reaches:
the SuperNode sleeps 3 s after each empty pull of the SuperLink (and 0.5 s while a reply is not ready),
``flwr/supernode/start_client_internal.py``, and the ServerApp's ``HttpGrid.send_and_receive`` sleeps 3 s
between pulls of the replies, ``flwr/superlink/grid/http_grid.py``. A protocol stage (one message to each
node and its reply) therefore costs up to 3 s + 3 s of waiting on an idle machine, beside the
``flwr-clientapp`` process itself. (SuperExec's task poll has its own variable,
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``, which the harness sets.)

``tests/flower_harness.py`` puts this folder first on ``PYTHONPATH`` of the processes it starts and sets
``SECAGG_TEST_FLOWER_MAX_SLEEP``; Python then imports this file at start-up (``site``). It changes nothing
unless that variable is set, and then only the ``time.sleep`` calls of those two flwr modules, each capped
at the variable's seconds. What the modules do between sleeps is flwr's own code: only how long a poller
waits before asking again changes, never a timeout (``send_and_receive``'s deadline is ``time.time()``,
untouched), a message, or which side decides a node dropped. Nothing is imported before those modules are.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import time
import types

#: The flwr modules whose fixed poll sleeps are capped (both do ``import time`` and call ``time.sleep``).
PATCHED_MODULES = frozenset({"flwr.supernode.start_client_internal", "flwr.superlink.grid.http_grid"})


def _cap() -> float | None:
    raw = os.environ.get("SECAGG_TEST_FLOWER_MAX_SLEEP", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 < value < 60 else None


class _CappedTime(types.ModuleType):
    """``time`` as those modules see it: every attribute is the real one, except ``sleep`` (capped)."""

    def __init__(self, cap: float) -> None:
        super().__init__("time")
        self.cap = cap

    def __getattr__(self, name):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))


class _CapFlowerPolls(importlib.abc.MetaPathFinder):
    def __init__(self, cap: float) -> None:
        self.capped_time = _CappedTime(cap)

    def find_spec(self, name, path, target=None):
        if name not in PATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module, capped_time = spec.loader.exec_module, self.capped_time

        def exec_and_cap(module) -> None:
            exec_module(module)
            if getattr(module, "time", None) is not time:  # flwr changed how it sleeps: fail loudly
                raise ImportError(f"{name} no longer does `import time`: tests/flower_fast_poll is out of date")
            module.time = capped_time

        spec.loader.exec_module = exec_and_cap
        return spec


if _cap() is not None:
    sys.meta_path.insert(0, _CapFlowerPolls(_cap()))
