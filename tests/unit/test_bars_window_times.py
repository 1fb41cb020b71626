"""Window bounds (``--start``/``--end``, ``BarSeries.between``) are read by the rules of a bar's
timestamp: the basic ISO form is a date, digits past the microsecond are refused."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.domain.bars import parse_datetime64
from ensemble_trader.domain.errors import DataError
from ensemble_trader.marketdata import load_arch


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20150101", "2015-01-01T00:00:00"),  # numpy read the year 20150101
        ("20141231T120000Z", "2014-12-31T12:00:00"),
        ("2015-01-01", "2015-01-01T00:00:00"),
        ("2015", "2015-01-01T00:00:00"),  # reduced precision, as numpy read it
        ("2015-03", "2015-03-01T00:00:00"),
        ("2015-01-01T02:00:00+02:00", "2015-01-01T00:00:00"),
        ("2015-01-01T00:00:00.250000Z", "2015-01-01T00:00:00.250"),
        ("2014-12-31T00:00:00.000000000", "2014-12-31T00:00:00"),  # str() of a datetime64[ns]
    ],
)
def test_iso_dates_and_times_as_bar_timestamps_read_them(text: str, expected: str) -> None:
    assert parse_datetime64(text) == np.datetime64(expected, "ns")


def test_digits_past_the_microsecond_are_refused_not_dropped() -> None:
    with pytest.raises(DataError, match=r"'2014-12-31T00:00:00.0000001Z' has digits past the microsecond"):
        parse_datetime64("2014-12-31T00:00:00.0000001Z")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0224-01-01", "'0224-01-01' lies outside the times kept"),
        ("2262-04-11", "'2262-04-11' lies outside the times kept"),
        ("2015-13-01", "'2015-13-01' is not an ISO-8601 date or time"),
        ("yesterday", "'yesterday' is not an ISO-8601 date or time"),
    ],
)
def test_bad_and_out_of_range_bounds_keep_their_messages(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_datetime64(text)


def test_a_datetime64_bound_is_range_checked_and_kept() -> None:
    when = np.datetime64("2015-01-01T00:00:00.000000001")
    assert parse_datetime64(when) == when
    with pytest.raises(DataError, match="lies outside the times kept"):
        parse_datetime64(np.datetime64("2300-01-01"))


def test_between_reads_compact_dates() -> None:
    series = load_arch("sp500")
    np.testing.assert_array_equal(series.between("20150101", "20160101").timestamp,
                                  series.between("2015-01-01", "2016-01-01").timestamp)
