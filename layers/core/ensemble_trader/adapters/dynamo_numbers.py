"""What DynamoDB can hold as a number: shared by the DynamoDB adapter and its in-memory fake.

DynamoDB numbers carry up to 38 significant digits with magnitudes from 1e-130 to just under
1e126. A float below 1e-130 in size (an EWMA volatility after ten thousand unchanged closes) makes
DynamoDB answer ``Number underflow`` — and a whole batch with it fail, again on every retry — so
it is stored as 0, the nearest number DynamoDB holds; a number of 1e126 or more, an integer of
more than 38 digits, NaN or infinity cannot be stored at all and is a :class:`DataError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ensemble_trader.domain.errors import DataError

SMALLEST = 1e-130
"""Nonzero magnitudes below this are stored as 0."""
LARGEST = 1e126
"""Magnitudes from this up cannot be stored."""
_LARGEST_INT = 10**38  # 38 significant digits


def storable_number(value: float | int, path: str) -> float | int:
    """``value`` as DynamoDB will hold it (a float too small to hold becomes 0.0)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"DynamoDB cannot store the non-finite number {path}={value!r}")
        if abs(value) < SMALLEST:
            return 0.0
        if abs(value) >= LARGEST:
            raise DataError(f"DynamoDB cannot store {path}={value!r}: numbers must be below 1e126 in size")
        return value
    if abs(value) >= _LARGEST_INT:
        raise DataError(f"DynamoDB cannot store the integer {path} of {len(str(abs(value)))} digits (at most 38)")
    return value


def storable(value: Any, path: str) -> Any:
    """``value`` (an attribute: numbers, strings, bytes, lists and maps of them) with every number
    as DynamoDB will hold it; raises :class:`DataError` for one it cannot hold."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (float, int)):
        return storable_number(value, path)
    if isinstance(value, Mapping):
        return {k: storable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(storable(v, f"{path}[{i}]") for i, v in enumerate(value))
    return value
