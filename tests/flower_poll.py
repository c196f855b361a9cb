"""The environment of the Flower processes the tests start: shorter poll waits (test-only, see below).

Every protocol stage over real Flower processes is one message to each node and its reply, and flwr 1.42
waits between polls on both sides: the SuperNode 3 s after an empty pull, its SuperExec 1 s between task
polls, the ServerApp 3 s between pulls of the replies. On an idle machine most of a stage is that waiting.
:func:`fast_poll_env` shortens all three for the processes of a test federation:

* ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` - flwr's own variable (``flwr/supercore/superexec/run_superexec.py``);
* the two fixed 3 s sleeps, which no option reaches, through ``tests/flower_fast_poll/sitecustomize.py``
  (put first on ``PYTHONPATH``; it caps ``time.sleep`` in those two flwr modules only).

Only how soon a poller asks again changes. Timeouts (the ServerApp's stage timeout, which decides that a
node dropped), messages, the app verifier and the processes started are all as in a deployment, where
none of this is set: production code never reads these variables.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FAST_POLL_DIR", "POLL_SECONDS", "fast_poll_env"]

FAST_POLL_DIR = Path(__file__).resolve().parent / "flower_fast_poll"
POLL_SECONDS = 0.25


def fast_poll_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the shorter polls for every Flower process started with it (and their children)."""
    path = [str(FAST_POLL_DIR), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return env | {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(POLL_SECONDS),
                  "SECAGG_TEST_FLOWER_MAX_SLEEP": str(POLL_SECONDS), "PYTHONPATH": os.pathsep.join(path)}
