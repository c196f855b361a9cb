"""Run a numerical computation in a forked child with a memory cap and a time limit.

Why: numerical accountants (PLD, PRV) size their grids from the privacy
parameters; at edge settings (tiny noise, many steps) they try to allocate
tens of GiB and the kernel kills the whole process. An accountant failing
must never take the run (or the ledger) down with it, so each such call runs
in a child process with ``RLIMIT_AS`` set to the child's address space plus a
budget. Allocation failures then surface as ``MemoryError`` inside the child,
and the parent gets a failure reason instead of dying.

The children come from a ``forkserver``: a single-threaded server process,
started once and preloaded with the accountants' libraries, forks them.
Forking the caller itself would copy its threads' locks (pytest-xdist's I/O
threads, BLAS and OpenMP pools, Flower's and Ray's threads) in whatever state
they were; a child that then needed one of those locks hung until the time
limit (seen in ``make test``: a PLD call on a trivial setting timed out).

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


_CONTEXT = None


def _context():
    """The forkserver context, preloaded once with what the accountants import."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["dp.accounting"])
        _CONTEXT = ctx
    return _CONTEXT


def run_isolated(
    fn: Callable[..., Any],
    *args,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """``fn(*args)`` in a guarded child; raises :class:`IsolatedFailure` with the reason."""
    if not sys.platform.startswith("linux"):
        return fn(*args)
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, fn, args, memory_budget))
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise IsolatedFailure(f"did not finish within {timeout:.0f} s")
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
