"""``BarSeries.timestamp`` is datetime64[ns] whatever unit it was built with (review): the int64
view of a series (the feed's merge by time, the stores' keys) counts nanoseconds."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError


def _series(timestamp: object) -> BarSeries:
    n = len(timestamp)  # type: ignore[arg-type]
    one = np.ones(n)
    return BarSeries("A", timestamp, one, one * 2, one * 0.5, one, one)  # type: ignore[arg-type]


@pytest.mark.parametrize("unit", ["D", "h", "s", "ms", "us"])
def test_another_datetime64_unit_is_converted_to_nanoseconds(unit: str) -> None:
    times = np.array(["2020-01-01", "2020-01-03"], dtype=f"datetime64[{unit}]")
    s = _series(times)
    assert s.timestamp.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(s.timestamp.astype(np.int64), [1_577_836_800 * 10**9, 1_578_009_600 * 10**9])
    assert s[0:1].timestamp.dtype == np.dtype("datetime64[ns]")


def test_a_nanosecond_array_is_kept_as_it_is() -> None:
    times = np.array(["2020-01-01", "2020-01-03"], dtype="datetime64[ns]")
    assert _series(times).timestamp is times  # no copy on the hot paths


@pytest.mark.parametrize(("times", "why"), [
    (np.array(["1500-01-01", "2000-01-01"], dtype="datetime64[D]"), "lies outside the times kept"),
    (np.array(["2000-01-01", "2300-01-01"], dtype="datetime64[D]"), "lies outside the times kept"),
    (np.array([1, 2], dtype="datetime64[ps]") + np.timedelta64(1500, "ps"), "has digits past the nanosecond"),
])
def test_a_time_nanoseconds_cannot_hold_is_refused_not_wrapped(times: np.ndarray, why: str) -> None:
    """numpy's conversion made year 1500 of datetime64[D] a day of 2084."""
    with pytest.raises(DataError, match=f"^A: timestamp row [01] .* {why}"):
        _series(times)


@pytest.mark.parametrize("times", [np.array([1, 2], dtype=np.int64), np.array(["2020-01-01", "2020-01-02"])])
def test_timestamps_that_are_not_datetime64_are_refused(times: np.ndarray) -> None:
    with pytest.raises(DataError, match="^A: timestamp must be datetime64 \\(UTC\\), got an array of"):
        _series(times)


@pytest.mark.parametrize("times", [
    ["NaT"],  # one bar: no order check to catch it (it was taken, and compute_features gave it a row)
    ["2020-01-01", "NaT", "2020-01-03"],
    ["NaT", "2020-01-01"],
])
def test_a_nat_time_is_refused_and_named(times: list[str]) -> None:
    row = times.index("NaT")
    with pytest.raises(DataError, match=rf"A: timestamp row {row} is NaT \(not a time\)"):
        _series(np.array(times, dtype="datetime64[ns]"))


def test_the_feature_engine_refuses_the_nat_integer_as_a_time() -> None:
    from ensemble_trader.domain.features import FeatureEngine

    engine = FeatureEngine("A")
    with pytest.raises(DataError, match="outside signed 64-bit nanoseconds"):
        engine.update_raw(-(2**63), 1.0, 1.0, 1.0, 1.0, 1.0)
    engine.update_raw(-(2**63) + 1, 1.0, 1.0, 1.0, 1.0, 1.0)  # the earliest time a bar can have
