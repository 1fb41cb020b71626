"""FeatureEngine.update_raw with prices and volumes of other types than float (review).

A Decimal (as broker SDKs give prices) or a 1-element numpy array passed the bar checks, then
raised a bare TypeError part-way through the update, after the state had changed (a volume as
Decimal left the exponential averages and windows updated and the state unloadable). Numbers of
any real type are now taken as floats; anything else is a DataError naming the field, with the
state untouched."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import FeatureEngine

DAY_NS = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9
BAR = (100.5, 101.0, 99.0, 100.5, 1000.0)
FIELDS = ("open", "high", "low", "close", "volume")


def _engine() -> FeatureEngine:
    engine = FeatureEngine("SPX")
    engine.update_raw(T0, 100.0, 101.0, 99.0, 100.0, 1000.0)
    return engine


@pytest.mark.parametrize(
    "convert",
    [
        Decimal,
        lambda x: Decimal(str(x)),
        Fraction,
        np.float64,
        np.float32,
        lambda x: np.int64(round(x)) if x == round(x) else np.float64(x),
        lambda x: int(x) if x == int(x) else x,
    ],
    ids=["decimal-exact", "decimal-text", "fraction", "float64", "float32", "numpy-int", "int"],
)
@pytest.mark.parametrize("field", [*range(5), "all"])
def test_real_numbers_of_any_type_are_taken_as_floats(convert, field):
    args = tuple(convert(x) if field in ("all", k) else x for k, x in enumerate(BAR))
    engine, reference = _engine(), _engine()
    row = engine.update_raw(T0 + DAY_NS, *args)
    expected = reference.update_raw(T0 + DAY_NS, *(float(x) for x in args))
    assert row.tolist() == expected.tolist()
    assert engine.to_bytes() == reference.to_bytes()  # plain floats in the state: it round-trips
    FeatureEngine.from_bytes(engine.to_bytes())
    nxt = (T0 + 2 * DAY_NS, 101.0, 102.0, 100.0, 101.0, 1000.0)
    assert engine.update_raw(*nxt).tolist() == reference.update_raw(*nxt).tolist()


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (np.array([100.5]), "ndarray"),
        (np.array(100.5), "ndarray"),  # 0-d: still an array
        ([100.5], "list"),
        ((100.5,), "tuple"),
        ("100.5", "str"),
        (b"100.5", "bytes"),
        (None, "NoneType"),
        (True, "bool"),
        (np.True_, "bool"),
        (complex(100.5, 0), "complex"),
    ],
)
@pytest.mark.parametrize("field", range(5))
def test_other_values_are_a_data_error_naming_the_field_and_change_nothing(value, kind, field):
    engine = _engine()
    before = engine.to_bytes()
    args = tuple(value if k == field else x for k, x in enumerate(BAR))
    with pytest.raises(DataError, match=rf"invalid bar at \d\d\d\d-\d\d-\d\dT[\d:.]+Z: {FIELDS[field]}=.*must be a real number.*{kind}"):
        engine.update_raw(T0 + DAY_NS, *args)
    assert engine.to_bytes() == before
    assert engine.bars_seen == 1


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (Decimal("sNaN"), "volume=Decimal\\('sNaN'\\) is not a float"),
        (10**400, "volume=.* is not a float"),  # beyond a float
        (10**5000, "volume=<an integer of 16610 bits> is not a float"),  # beyond int repr's digit limit
        (Decimal("NaN"), "invalid bar"),  # a float NaN: the bar rule refuses it
        (Decimal("-1"), "invalid bar"),
    ],
    ids=["decimal-snan", "int-beyond-float", "int-beyond-repr", "decimal-nan", "decimal-negative"],
)
def test_numbers_that_are_no_valid_float_are_a_data_error(value, match):
    engine = _engine()
    before = engine.to_bytes()
    with pytest.raises(DataError, match=match):
        engine.update_raw(T0 + DAY_NS, 100.5, 101.0, 99.0, 100.5, value)
    assert engine.to_bytes() == before


def test_a_decimal_volume_no_longer_corrupts_the_state():
    """The probe's case: the volume alone as Decimal changed the averages and windows, then
    failed; the state then refused to load (``ewma`` before its first term)."""
    engine, reference = _engine(), _engine()
    engine.update_raw(T0 + DAY_NS, 100.5, 101.0, 99.0, 100.5, Decimal("1000"))
    reference.update_raw(T0 + DAY_NS, 100.5, 101.0, 99.0, 100.5, 1000.0)
    assert engine.to_dict() == reference.to_dict()


def test_a_stale_bar_is_still_stale_whatever_its_prices():
    """The time is checked first, as before: a redelivery with odd values stays a no-op."""
    from ensemble_trader.domain.features import StaleBarError

    engine = _engine()
    with pytest.raises(StaleBarError):
        engine.update_raw(T0, "x", None, [1], Decimal(1), np.array([1.0]))
