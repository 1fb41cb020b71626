"""The one check of "a real number, not a bool" behind the numeric parameters checked one value
at a time: the metrics' parameters and the cost model (``backtest.metrics.checked_number``), the
synthetic generator's parameters and exit weights, the agents' no-trade bands and the elements of
a list the agents' ``real_array`` reads.

Python counts ``True`` as 1 and ``False`` as 0, and ``float("0.3")`` reads text: a bool or a
string passed where a number belongs would otherwise be taken as a number. Each caller words its
own error (its field names and ranges); this module decides only what counts as a real number.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

from ensemble_trader.domain.errors import DataError


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number: a Python or numpy int or float (any
    :class:`numbers.Real`) that is not a bool (``True``, ``False``, ``numpy.bool_``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def real_number(value: object, refusal: Callable[[], str]) -> float:
    """``value`` as a float when it is a real number (:func:`is_real`). Anything else — ``True``
    / ``False`` and numpy's bools, text, None, a complex number, an array — raises
    :class:`DataError` with the message ``refusal()`` returns (built only then, so a caller's repr
    of the value costs nothing on the way that passes). NaN and infinities are returned as they
    are: whether they are allowed is the caller's range check. So is an int too large for a float
    (beyond ~1.8e308): it comes back as an infinity of its sign, which every caller's finiteness
    check refuses by value (``float`` alone would raise a bare OverflowError).
    """
    if not is_real(value):
        raise DataError(refusal())
    try:
        return float(value)
    except OverflowError:  # an int beyond float64
        return math.inf if value > 0 else -math.inf
