"""Times in text are read in one form on every path (review).

Python 3.11's ``datetime.fromisoformat`` (bars CSV, ``parse_datetime64``, the CLI's ``--start`` /
``--end``) took any character between the date and the time, and pydantic (the ``Bar`` message)
took ``_``: with such a separator, digits past the microsecond were dropped, not refused.
``fromisoformat`` also read ``T12.5`` (ISO-8601: 12:30) as 12:00:00.5 and ``T09:30.5`` as
09:30:00.5. The CSV reader refused a lower-case ``z`` that the ``Bar`` took, and
``FeatureEngine.update_raw`` read ``True`` as 1 ns. Every text time is now checked against
``domain.models.time_text_problem`` before it is parsed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.cli import main
from ensemble_trader.domain.bars import parse_datetime64
from ensemble_trader.domain.errors import DataError, InvalidMessageError
from ensemble_trader.domain.features import FeatureEngine
from ensemble_trader.domain.models import Bar, time_text_problem
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import read_bars_csv

SEPARATOR = "separates the date and the time with"
HOUR_FRACTION = "has a fraction of an hour"
MINUTE_FRACTION = "has a fraction of a minute"
PAST_THE_MICROSECOND = "has digits past the microsecond"

REFUSED = [  # text, what the message says
    ("2024-01-02_00:00:00.1234567Z", f"{SEPARATOR} '_'"),
    ("2024-01-02_09:30:00Z", f"{SEPARATOR} '_'"),
    ("2024-01-02x09:30:00Z", f"{SEPARATOR} 'x'"),
    ("2024-01-02T12.5Z", f"{HOUR_FRACTION} (12.5)"),
    ("2024-01-02T12,5Z", f"{HOUR_FRACTION} (12,5)"),
    ("2024-01-02T09:30.5Z", f"{MINUTE_FRACTION} (09:30.5)"),
    ("20240102T0930.5Z", f"{MINUTE_FRACTION} (0930.5)"),
]
"""Forms each path refused or misread before; the CSV and the window bounds read all of them."""


def _bar(timestamp: str) -> Bar:
    return Bar.parse(dict(symbol="SPX", timestamp=timestamp, open=10, high=11, low=9, close=10, volume=1))


def _csv_time(tmp_path: Path, stamp: str) -> np.datetime64:
    path = tmp_path / "spx.csv"
    path.write_text(f'timestamp,open,high,low,close,volume\n"{stamp}",10,11,9,10,1\n')  # quoted: 12,5
    return read_bars_csv(path)[0].timestamp[0]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_the_bars_csv_refuses_other_separators_and_fractions_of_hours_and_minutes(tmp_path, text, reason):
    with pytest.raises(DataError) as info:
        _csv_time(tmp_path, text)
    assert f"line 2: column timestamp={text!r}: {reason}" in str(info.value)


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_window_bounds_refuse_other_separators_and_fractions_of_hours_and_minutes(text, reason):
    with pytest.raises(DataError) as info:
        parse_datetime64(text)
    assert f"{text!r} {reason}" in str(info.value)
    # without an offset too (a bound with none is UTC): '2024-01-02T12.5' was 12:00:00.5
    with pytest.raises(DataError, match=reason.split(" (")[0]):
        parse_datetime64(text.removesuffix("Z"))


@pytest.mark.parametrize("text", ["2024-01-02_00:00:00.1234567Z", "2024-01-02_09:30:00Z"])
def test_the_bar_message_refuses_an_underscore_between_date_and_time(text):
    """pydantic took '_' and dropped the 7 of .1234567."""
    with pytest.raises(InvalidMessageError) as info:
        _bar(text)
    assert f"{text!r} {SEPARATOR} '_'" in str(info.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backtest", "--bars", "arch:sp500", "--start", "2015-01-02T12.5Z"],
         f"argument --start: '2015-01-02T12.5Z' {HOUR_FRACTION}"),
        (["evaluate", "agents", "--bars", "arch:sp500", "--end", "2015-01-02_00:00:00.1234567Z"],
         f"argument --end: '2015-01-02_00:00:00.1234567Z' {SEPARATOR} '_'"),
        (["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--start", "2015-01-02T09:30.5"],
         f"argument --start: '2015-01-02T09:30.5' {MINUTE_FRACTION}"),
    ],
)
def test_cli_window_options_refuse_them_as_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_lower_case_z_is_utc_in_the_csv_and_the_window_bounds_as_in_the_bar(tmp_path):
    """The Bar took '...z', the CSV reader and the window bounds refused it: all take it now."""
    expected = np.datetime64("2024-01-02T09:30:00.250000", "ns")
    assert _csv_time(tmp_path, "2024-01-02T09:30:00.25z") == expected
    assert _csv_time(tmp_path, "2024-01-02t09:30:00.25z") == expected
    assert parse_datetime64("2024-01-02T09:30:00.25z") == expected
    assert _bar("2024-01-02t09:30:00.25z").timestamp == datetime(2024, 1, 2, 9, 30, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2024-01-02T09:30:00.1234567890Z", PAST_THE_MICROSECOND),  # 10 digits, not zeros past the 6th
        ("2024-01-02_09:30:00.1234567890Z", f"{SEPARATOR} '_'"),
        ("2024-01-02T09:30:00.0000000000Z", "has 10 fraction digits (at most 9)"),
        ("2024-01-02T09Z", "gives the hour alone (write at least HH:MM)"),
        ("2024-W01-2T09:30Z", "is a week date"),
        ("2024-01-02T09:30:00+05:30:15", "OTHER"),
        ("2024-01-02T09:30:00Z ", "OTHER"),  # each path strips its text first, or refuses it
        ("2024-01-02T٠٩:30:00Z", "OTHER"),  # digits of other scripts are no ISO-8601 digits
        ("17041536001234.5", "OTHER"),  # digits are no date and a time: a digit is no separator
    ],
)
def test_what_the_pattern_says_of_other_texts(text, problem):
    assert (time_text_problem(text, "OTHER") or "").startswith(problem)


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T09:30:00Z",
        "2024-01-02t09:30:00z",
        "2024-01-02 09:30Z",
        "20240102T093000,5+0530",
        "2024-01-02T09:30:00.123456000-05",
        "2024-01-02",
        "20240102",
    ],
)
def test_the_forms_taken_pass_the_pattern(text):
    assert time_text_problem(text, "OTHER") is None


CSV_FORMS = [  # the forms docs/data.md lists for a bars file, and the instant each names (UTC)
    ("2017-11-15T00:00:00Z", "2017-11-15T00:00:00"),
    ("2017-11-15T00:00:00+00:00", "2017-11-15T00:00:00"),
    ("2024-01-02T09:30:00-05:00", "2024-01-02T14:30:00"),
    ("2024-01-02t09:30:00Z", "2024-01-02T09:30:00"),
    ("2024-01-02 09:30:00Z", "2024-01-02T09:30:00"),
    ("20240102T093000Z", "2024-01-02T09:30:00"),
    ("2024-01-02T09:30Z", "2024-01-02T09:30:00"),
    ("2024-01-02T09:30:00.25Z", "2024-01-02T09:30:00.250"),
    ("2024-01-02T09:30:00,25Z", "2024-01-02T09:30:00.250"),
    ("2024-01-02T09:30:00.123456000Z", "2024-01-02T09:30:00.123456"),  # zeros past the microsecond
    ("2024-01-02T09:30:00+0530", "2024-01-02T04:00:00"),
]


@pytest.mark.parametrize(("text", "instant"), CSV_FORMS)
def test_every_documented_csv_form_still_reads_the_same_instant(tmp_path, text, instant):
    assert _csv_time(tmp_path, text) == np.datetime64(instant, "ns")
    assert parse_datetime64(text) == np.datetime64(instant, "ns")


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2015-01-02", "2015-01-02T00:00:00"),
        ("20150102", "2015-01-02T00:00:00"),
        ("2015-01-02T14:30:00.25Z", "2015-01-02T14:30:00.250"),
        ("2015-01-02T14:30:00", "2015-01-02T14:30:00"),  # no offset: UTC
        ("2015", "2015-01-01T00:00:00"),
        ("2015-01", "2015-01-01T00:00:00"),
        ("2014-12-31T00:00:00.000000000", "2014-12-31T00:00:00"),  # str() of a datetime64[ns]
    ],
)
def test_every_documented_window_bound_still_reads_the_same_instant(text, instant):
    assert parse_datetime64(text) == np.datetime64(instant, "ns")


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2024-01-02T00:00:00Z", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02T09:30:00-05:00", datetime(2024, 1, 2, 14, 30, tzinfo=UTC)),
        ("2024-01-02t09:30:00Z", datetime(2024, 1, 2, 9, 30, tzinfo=UTC)),
        ("2024-01-02 09:30:00Z", datetime(2024, 1, 2, 9, 30, tzinfo=UTC)),
        ("2024-01-02T09:30:00.123456000+00:00", datetime(2024, 1, 2, 9, 30, 0, 123456, tzinfo=UTC)),
    ],
)
def test_every_documented_bar_form_still_reads_the_same_instant(text, instant):
    assert _bar(text).timestamp == instant


def test_the_bar_still_says_a_number_is_no_unix_time():
    """Text of digits is left to the check that names the forms a time field takes."""
    with pytest.raises(InvalidMessageError, match="numbers are not taken as Unix times"):
        _bar("20240102")


@pytest.mark.parametrize("flag", [True, False, np.True_])
def test_update_raw_refuses_a_bool_as_the_time(flag):
    """True is an int to Python: it was read as 1 ns."""
    engine = FeatureEngine("SPX")
    with pytest.raises(DataError, match=rf"SPX: timestamp {flag!r} must be integer nanoseconds"):
        engine.update_raw(flag, 100.0, 101.0, 99.0, 100.0, 1000.0)
    assert engine.update_raw(2, 100.0, 101.0, 99.0, 100.0, 1000.0).shape  # the state is untouched


@pytest.mark.parametrize(("start", "reason"), [
    ("2000-01-03T12.5", "fraction of an hour"),
    ("2000-01-03T09:30.5Z", "fraction of a minute"),
    ("2000-01-03_00:00:00.1234567", "separates the date and the time with '_'"),
    ("2000-01-03T00:00:00.1234567", "past the microsecond"),
])
def test_the_generator_refuses_a_start_fromisoformat_would_misread(start, reason):
    """``data synth --start`` read ``T12.5`` as 12:00:00.5 (ISO-8601: 12:30)."""
    with pytest.raises(DataError, match=re.escape(reason)):
        generate("realistic", n_bars=2, seed=1, start=start)


def test_the_generator_takes_the_documented_start_forms():
    for start, first in (("2000-01-03", "2000-01-03T00:00"), ("2000-01-03T12:30Z", "2000-01-03T12:30"),
                         ("2000-01-03 09:30:00+01:00", "2000-01-03T08:30"), ("2000-01-03t12:30z", "2000-01-03T12:30")):
        assert generate("realistic", n_bars=2, seed=1, start=start, freq="1h").series.timestamp[0] == np.datetime64(first), start
