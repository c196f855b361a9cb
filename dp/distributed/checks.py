"""Argument checks shared by the distributed-DP modules: one typed error, one line, per bad value."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidPrivacyParameterError

__all__ = ["finite", "positive", "int_at_least"]


def finite(name: str, value) -> float:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not numeric or not math.isfinite(value):
        raise InvalidPrivacyParameterError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def positive(name: str, value) -> float:
    value = finite(name, value)
    if value <= 0:
        raise InvalidPrivacyParameterError(f"{name} must be > 0; got {value}")
    return value


def int_at_least(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidPrivacyParameterError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)
