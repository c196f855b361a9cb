"""Run a numerical computation in a forked child with a memory cap and a time limit.

Why: numerical accountants (PLD, PRV) size their grids from the privacy
parameters; at edge settings (tiny noise, many steps) they try to allocate
tens of GiB and the kernel kills the whole process. An accountant failing
must never take the run (or the ledger) down with it, so each such call runs
in a child process with ``RLIMIT_AS`` set to the child's address space plus a
budget. Allocation failures then surface as ``MemoryError`` inside the child,
and the parent gets a failure reason instead of dying.

The child is forked from the caller (libraries already imported, memory
shared copy-on-write). Forking a multi-threaded caller copies its threads'
locks in whatever state they were, and once in ``make test`` (pytest-xdist's
I/O threads beside torch's) a PLD call on a trivial setting hung in every
fork. So the forked child gets at most ``FIRST_TRY_S`` seconds; after that it is
killed and the computation runs once more in a *spawned* child (a fresh
interpreter: no inherited locks, a few seconds to import), with the full time
limit. Only a time-out there is a failure. (Always spawning, or a
``forkserver``, would cost every CLI process seconds of start-up.)

On platforms other than Linux the computation runs in-process, unguarded.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any, Callable

__all__ = ["run_isolated", "IsolatedFailure", "DEFAULT_MEMORY_BUDGET", "DEFAULT_TIMEOUT"]

DEFAULT_MEMORY_BUDGET = int(os.environ.get("SECAGG_ACCOUNTANT_MEMORY_BYTES", 2 << 30))
DEFAULT_TIMEOUT = float(os.environ.get("SECAGG_ACCOUNTANT_TIMEOUT_S", 300))
#: How long a forked child may take before the computation moves to a spawned one (module docstring).
FIRST_TRY_S = 30.0


class IsolatedFailure(Exception):
    """The isolated computation raised, ran out of memory, timed out or died."""


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child(conn, fn, args, budget) -> None:
    try:
        import resource

        limit = _address_space_bytes() + budget
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        conn.send((True, fn(*args)))
    except BaseException as exc:  # report everything, including MemoryError
        try:
            conn.send((False, f"{type(exc).__name__}: {exc}"[:500]))
        except Exception:
            pass
    finally:
        conn.close()
        os._exit(0)  # skip atexit handlers inherited from the parent


def run_isolated(
    fn: Callable[..., Any],
    *args,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """``fn(*args)`` in a guarded child; raises :class:`IsolatedFailure` with the reason.

    A child that times out is retried once in a fresh child (module docstring).
    """
    if not sys.platform.startswith("linux"):
        return fn(*args)
    try:
        return _run_in_child("fork", fn, args, memory_budget, min(timeout, FIRST_TRY_S))
    except _TimedOut:
        try:
            return _run_in_child("spawn", fn, args, memory_budget, timeout)
        except _TimedOut:
            raise IsolatedFailure(f"did not finish within {timeout:.0f} s") from None


class _TimedOut(Exception):
    pass


def _run_in_child(method: str, fn, args, memory_budget: int, timeout: float):
    ctx = multiprocessing.get_context(method)
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, fn, args, memory_budget))
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise _TimedOut()
        try:
            ok, value = receiver.recv()
        except EOFError:
            raise IsolatedFailure(f"died without an answer (exit code {process.exitcode})") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receiver.close()
    if not ok:
        raise IsolatedFailure(value)
    return value
