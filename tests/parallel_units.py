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
