"""What DynamoDB can hold, and how it reads back: shared by the DynamoDB adapter and its in-memory
fake, so that the fake refuses what DynamoDB refuses and returns what the adapter returns.

Numbers: DynamoDB carries up to 38 significant digits with magnitudes from 1e-130 to just under
1e126. A float below 1e-130 in size (an EWMA volatility after ten thousand unchanged closes) makes
DynamoDB answer ``Number underflow`` — and a whole batch with it fail, again on every retry — so
it is stored as 0, the nearest number DynamoDB holds; a number of 1e126 or more, an integer of
more than 38 digits, NaN or infinity cannot be stored at all and is a :class:`DataError` naming it.
numpy scalars are stored as the Python number (or bool) they hold.

Other values: ``str``, ``bytes`` (also ``bytearray``), ``bool``, ``None``, lists (also tuples)
and maps of them, and non-empty sets of numbers, of strings or of bytes. Anything else — an
empty set, a set mixing kinds, a datetime, an object — is a :class:`DataError` naming the
attribute, raised before anything is sent (DynamoDB, or boto3's serializer, would refuse it on
every retry).

Reading back (:func:`from_dynamo`): DynamoDB keeps no trace of whether a number was an ``int`` or
a ``float`` (``2.0`` is stored as ``2``), so a number reads back as ``int`` when it is a whole
number of at most 38 digits — versions and counters stay ints — and as ``float`` otherwise
(``1e40`` reads back as the float it was, which can be written again); tuples read back as
lists, map keys as strings. :func:`storable` is a value as it will read back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ensemble_trader.domain.errors import DataError

SMALLEST = 1e-130
"""Nonzero magnitudes below this are stored as 0."""
LARGEST = 1e126
"""Magnitudes from this up cannot be stored."""
MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's item size limit: attribute names and values, as :func:`item_size` counts them."""
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


def _decimal(value: Decimal, path: str) -> Decimal:
    if not value.is_finite():
        raise DataError(f"DynamoDB cannot store the non-finite number {path}={value!r}")
    if value == 0 or abs(value) < Decimal(SMALLEST):
        return Decimal(0)
    if abs(value) >= Decimal(LARGEST):
        raise DataError(f"DynamoDB cannot store {path}={value}: numbers must be below 1e126 in size")
    if len(value.normalize().as_tuple().digits) > 38:
        raise DataError(f"DynamoDB cannot store {path}={value}: more than 38 significant digits")
    return value


def _number(value: Any, path: str) -> Decimal | None:
    """``value`` as the Decimal DynamoDB will hold, or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(storable_number(int(value), path))
    if isinstance(value, float):
        return Decimal(repr(storable_number(float(value), path)))
    if isinstance(value, Decimal):
        return _decimal(value, path)
    return None


def _numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "shape", None) == ()


def to_dynamo(value: Any, path: str) -> Any:
    """``value`` as boto3's ``TypeSerializer`` takes it (numbers as ``Decimal``, ``bytes``, lists,
    maps with string keys, sets of one kind); :class:`DataError` naming ``path`` for a value
    DynamoDB cannot hold."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    number = _number(value, path)
    if number is not None:
        return number
    if _numpy_scalar(value):  # np.float64, np.int64, np.bool_ ...: the Python value they hold
        return to_dynamo(value.item(), path)
    if isinstance(value, Mapping):
        return {str(k): to_dynamo(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_dynamo(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return _to_set(value, path)
    raise DataError(f"DynamoDB cannot store {path}: a value of type {type(value).__name__} ({value!r:.80})")


def _to_set(value: set | frozenset, path: str) -> set:
    if not value:
        raise DataError(f"DynamoDB cannot store {path}: an empty set (leave the attribute out, or store a list)")
    members = [to_dynamo(v, path) if _numpy_scalar(v) or isinstance(v, (bytearray, memoryview)) else v for v in value]
    if all(isinstance(v, str) for v in members):
        return {str(v) for v in members}
    if all(isinstance(v, bytes) for v in members):
        return {bytes(v) for v in members}
    numbers = [_number(v, path) for v in members]
    if all(n is not None for n in numbers):
        return set(numbers)
    kinds = sorted({type(v).__name__ for v in members})
    raise DataError(f"DynamoDB cannot store the set {path} of {', '.join(kinds)}: a set holds numbers only, "
                    f"strings only or bytes only")


def from_dynamo(value: Any) -> Any:
    """A value as the DynamoDB adapter returns it (see the module docstring)."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and abs(value) < _LARGEST_INT:
            return int(value)
        return float(value)
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    if isinstance(value, set):
        return {from_dynamo(v) for v in value}
    if isinstance(value, bytes) or hasattr(value, "__bytes__"):  # bytes; boto3's Binary
        return bytes(value)
    return value


def storable(value: Any, path: str) -> Any:
    """``value`` (an attribute) as it will read back from DynamoDB; raises :class:`DataError` for
    a value DynamoDB cannot hold."""
    return from_dynamo(to_dynamo(value, path))


def _size(value: Any) -> int:
    """Bytes of a :func:`to_dynamo` value as DynamoDB counts them (numbers approximately)."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, Decimal):
        digits = len(value.normalize().as_tuple().digits)
        return (digits + 1) // 2 + 1 + (value < 0)
    if isinstance(value, dict):
        return 3 + sum(len(k.encode()) + _size(v) + 1 for k, v in value.items())
    if isinstance(value, list):
        return 3 + sum(_size(v) + 1 for v in value)
    if isinstance(value, set):
        return sum(_size(v) for v in value)
    raise TypeError(f"not a DynamoDB value: {value!r:.80}")


def item_size(item: Mapping[str, Any]) -> int:
    """The size of an item of :func:`to_dynamo` values as DynamoDB counts it against its 400 KB
    limit: the UTF-8 bytes of every attribute name plus its value's."""
    return sum(len(name.encode()) + _size(value) for name, value in item.items())
