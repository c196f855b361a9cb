"""Module-level units for tests/test_experiment_parallel.py (a spawned worker imports them by name)."""

import os


def unit_report(i: int, *, log) -> dict:
    import torch

    log(f"unit {i} done")
    return {"value": i * i, "pid": os.getpid(), "threads": torch.get_num_threads()}


def fail_on(i: int, bad: int, *, log) -> int:
    if i == bad:
        raise ValueError(f"unit {i} refused")
    return i


def wait_for_parent(i: int, flag: str, *, log) -> bool:
    """Unit 0 logs at once; unit 1 waits (at most 60 s) until the parent has printed unit 0's line."""
    import time
    from pathlib import Path

    if i == 0:
        log("unit 0 finished")
        return True
    for _ in range(1200):  # 1200 x 50 ms: a bound on the wait, not a measurement
        if Path(flag).exists():
            return True
        time.sleep(0.05)
    return Path(flag).exists()
