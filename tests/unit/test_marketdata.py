"""Bars CSV reader/writer, arch and shared-data loaders, load_bars, truth CSV."""

from __future__ import annotations

import errno
import math
import os
import tempfile
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError, InvalidMessageError
from ensemble_trader.domain.models import Bar
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import (
    _row_problem,
    iter_bars_csv,
    load_arch,
    load_bars,
    load_shared,
    read_bars_csv,
    read_truth_csv,
    shared_data_dir,
    write_bars_csv,
    write_truth_csv,
)
from hypothesis import given, settings
from hypothesis import strategies as st

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BTC_SLICE = FIXTURES / "btcusd_1h_slice.csv"

GOOD = """timestamp,open,high,low,close,volume
2024-01-02T00:00:00Z,10,11,9.5,10.5,100
2024-01-03T00:00:00+00:00,10.5,10.75,10,10.25,0
2024-01-04T01:00:00+01:00,10.25,10.5,10,10.5,12.5
"""


def _write(tmp_path: Path, text: str, name: str = "abc.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_a_good_file_and_takes_the_symbol_from_the_stem(tmp_path: Path) -> None:
    [s] = read_bars_csv(_write(tmp_path, GOOD))
    assert s.symbol == "ABC"
    assert len(s) == 3
    assert s.timestamp.dtype == np.dtype("datetime64[ns]")
    # +01:00 is converted to UTC
    assert s.timestamp[2] == np.datetime64("2024-01-04T00:00:00", "ns")
    np.testing.assert_array_equal(s.close, [10.5, 10.25, 10.5])
    np.testing.assert_array_equal(s.volume, [100.0, 0.0, 12.5])


def test_symbol_argument_names_a_file_without_symbol_column(tmp_path: Path) -> None:
    [s] = read_bars_csv(_write(tmp_path, GOOD), symbol="BRK.B")
    assert s.symbol == "BRK.B"


def test_invalid_stem_symbol_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a valid symbol"):
        read_bars_csv(_write(tmp_path, GOOD, name="my bars.csv"))


def test_symbol_column_gives_one_series_per_symbol_in_order(tmp_path: Path) -> None:
    text = """timestamp,symbol,open,high,low,close,volume
2024-01-02T00:00:00Z,ZZZ,10,11,9,10,1
2024-01-02T00:00:00Z,AAA,20,21,19,20,2
2024-01-03T00:00:00Z,ZZZ,10,11,9,10.5,3
"""
    out = read_bars_csv(_write(tmp_path, text))
    assert [s.symbol for s in out] == ["ZZZ", "AAA"]
    assert [len(s) for s in out] == [2, 1]
    [only] = read_bars_csv(tmp_path / "abc.csv", symbol="AAA")
    assert only.symbol == "AAA" and len(only) == 1
    with pytest.raises(DataError, match="no rows for symbol 'QQQ'"):
        read_bars_csv(tmp_path / "abc.csv", symbol="QQQ")
    assert [b.symbol for b in iter_bars_csv(tmp_path / "abc.csv", symbol="AAA")] == ["AAA"]
    with pytest.raises(DataError, match=r"no rows for symbol 'QQQ'; it holds \['AAA', 'ZZZ'\]"):
        list(iter_bars_csv(tmp_path / "abc.csv", symbol="QQQ"))


def _bad_row(row: str) -> str:
    return "timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,10,11,9,10,1\n" + row + "\n"


@pytest.mark.parametrize(
    ("row", "column", "value"),
    [
        ("2024-01-02T00:00:00Z,abc,11,9,10,1", "open", "'abc'"),
        ("2024-01-02T00:00:00Z,10,11,9,10,", "volume", "''"),
        ("2024-01-02T00:00:00Z,-10,11,9,10,1", "open", "'-10'"),
        ("2024-01-02T00:00:00Z,0,11,9,10,1", "open", "'0'"),
        ("2024-01-02T00:00:00Z,10,inf,9,10,1", "high", "'inf'"),
        ("2024-01-02T00:00:00Z,10,11,9,nan,1", "close", "'nan'"),
        ("2024-01-02T00:00:00Z,10,11,9,1_0,1", "close", "'1_0'"),
        ("2024-01-02T00:00:00Z,10,11,9,\u0661\u0660,1", "close", "'\u0661\u0660'"),  # Arabic-Indic 10
        ("2024-01-02T00:00:00Z,10,11,9,10,-1", "volume", "'-1'"),  # the file's text, not -1.0
        ("2024-01-02T00:00:00Z,10,11,10.5,10,1", "low", "'10.5'"),
        ("2024-01-02T00:00:00Z,10,10.2,9,10.5,1", "high", "'10.2'"),
        ("2024-01-02T00:00:00,10,11,9,10,1", "timestamp", "'2024-01-02T00:00:00'"),
        ("2024-01-02,10,11,9,10,1", "timestamp", "'2024-01-02'"),
        ("yesterday,10,11,9,10,1", "timestamp", "'yesterday'"),
        ("2024-01-01T00:00:00Z,10,11,9,10,1", "timestamp", "'2024-01-01T00:00:00Z'"),
        ("2023-12-31T23:00:00Z,10,11,9,10,1", "timestamp", "'2023-12-31T23:00:00Z'"),
    ],
)
def test_every_bad_row_names_file_line_column_and_value(
    tmp_path: Path, row: str, column: str, value: str
) -> None:
    path = _write(tmp_path, _bad_row(row))
    for read in (read_bars_csv, lambda p: list(iter_bars_csv(p))):
        with pytest.raises(DataError) as info:
            read(path)
        message = str(info.value)
        assert str(path) in message
        assert "line 3" in message
        assert f"column {column}={value}" in message


def test_naive_timestamp_message_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no timezone"):
        read_bars_csv(_write(tmp_path, _bad_row("2024-01-02T00:00:00,10,11,9,10,1")))


def test_a_time_finer_than_a_microsecond_is_refused_not_truncated(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="line 3: column timestamp=.*sub-microsecond"):
        read_bars_csv(_write(tmp_path, _bad_row("2024-01-02T00:00:00.000000500Z,10,11,9,10,1")))


@pytest.mark.parametrize("stamp", ["0224-01-02T00:00:00Z", "2300-01-02T00:00:00Z"])
def test_a_time_beyond_64_bit_nanoseconds_is_refused_not_wrapped(tmp_path: Path, stamp: str) -> None:
    """numpy's conversion to nanoseconds wraps such a year round to another date without a word."""
    path = _write(tmp_path, "timestamp,open,high,low,close,volume\n" + stamp + ",10,11,9,10,1\n"
                  "2262-01-02T00:00:00Z,10,11,9,10,1\n")
    with pytest.raises(DataError, match="line 2: column timestamp=.*outside the times kept"):
        read_bars_csv(path)
    with pytest.raises(DataError, match="line 2: column timestamp=.*outside the times kept"):
        list(iter_bars_csv(path))


def test_window_bounds_beyond_64_bit_nanoseconds_are_refused() -> None:
    series = load_arch("sp500")
    with pytest.raises(DataError, match="'2999-12-31' lies outside the times kept"):
        series.between("2010-01-01", "2999-12-31")
    assert len(series.between("2010-01-01", "2011-01-01")) == 252


def test_a_synth_spec_takes_ascii_digits_only() -> None:
    with pytest.raises(DataError, match="integer seed and bars"):
        load_bars("synth:hard:\u00b2")


def test_non_increasing_time_names_the_previous_line(tmp_path: Path) -> None:
    path = _write(tmp_path, _bad_row("2024-01-01T00:00:00Z,10,11,9,10,1"))
    with pytest.raises(DataError, match=r"line 3: column timestamp=.*previous ABC bar \(line 2\)"):
        read_bars_csv(path)
    with pytest.raises(DataError, match=r"line 3: column timestamp=.*previous ABC bar \(line 2\)"):
        list(iter_bars_csv(path))


def test_time_order_is_checked_per_symbol(tmp_path: Path) -> None:
    text = """timestamp,symbol,open,high,low,close,volume
2024-01-02T00:00:00Z,AAA,10,11,9,10,1
2024-01-01T00:00:00Z,BBB,10,11,9,10,1
2024-01-01T00:00:00Z,AAA,10,11,9,10,1
"""
    with pytest.raises(DataError, match="line 4: column timestamp"):
        read_bars_csv(_write(tmp_path, text))


def test_bad_symbol_value(tmp_path: Path) -> None:
    text = "timestamp,symbol,open,high,low,close,volume\n2024-01-02T00:00:00Z,btc usd,10,11,9,10,1\n"
    with pytest.raises(DataError, match="line 2: column symbol='btc usd'"):
        read_bars_csv(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty file"),
        ("timestamp,open,high,low,close,volume\n", "no data rows"),
        (
            "timestamp,open,high,low,close\n2024-01-02T00:00:00Z,1,1,1,1\n",
            r"missing column\(s\) \['volume'\]",
        ),
        ("timestamp,open,high,low,close,volume,adj\n", r"unknown column\(s\) \['adj'\]"),
        ("timestamp,open,open,high,low,close,volume\n", "duplicated"),
        (
            "timestamp,open,high,low,close,volume\n2024-01-02T00:00:00Z,1,1,1,1\n",
            "line 2: expected 6 columns",
        ),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_bars_csv(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_bars_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="a folder, not a file"):
        read_bars_csv(tmp_path)


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    [s] = read_bars_csv(_write(tmp_path, GOOD + "\n\n"))
    assert len(s) == 3


def test_windows_line_endings_and_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "abc.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    [s] = read_bars_csv(path)
    assert len(s) == 3 and s.close[-1] == 10.5


def test_non_utf8_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "abc.csv"
    path.write_bytes(GOOD.encode() + b"2024-01-05T00:00:00Z,10,11,9,10,\xff\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_bars_csv(path)


def test_row_rules_agree_with_the_bar_model() -> None:
    """The reader's fast check accepts exactly the rows the Bar model accepts."""
    rng = np.random.default_rng(5)
    candidates = [0.0, -1.0, 1.0, 2.0, 3.0, math.inf, math.nan, 2.5]
    when = datetime(2024, 1, 1, tzinfo=UTC)
    for _ in range(400):
        o, h, lo, c = (float(x) for x in rng.choice(candidates, 4))
        v = float(rng.choice([0.0, 1.0, -1.0, math.nan, math.inf]))
        try:
            Bar(symbol="X", timestamp=when, open=o, high=h, low=lo, close=c, volume=v)
            bar_ok = True
        except (InvalidMessageError, ValueError):
            bar_ok = False
        assert (_row_problem(o, h, lo, c, v) is None) == bar_ok, (o, h, lo, c, v)


def test_iter_yields_validated_bars(tmp_path: Path) -> None:
    bars = list(iter_bars_csv(_write(tmp_path, GOOD)))
    assert [b.symbol for b in bars] == ["ABC"] * 3
    assert bars[2].timestamp == datetime(2024, 1, 4, tzinfo=UTC)
    assert all(isinstance(b, Bar) for b in bars)


def test_iter_streams_rows_before_a_bad_one(tmp_path: Path) -> None:
    path = _write(tmp_path, _bad_row("2024-01-02T00:00:00Z,10,11,9,10,-5"))
    seen = []
    with pytest.raises(DataError, match="line 3"):
        for bar in iter_bars_csv(path):
            seen.append(bar)
    assert len(seen) == 1


def _same(a: BarSeries, b: BarSeries) -> None:
    assert a.symbol == b.symbol
    for col in ("timestamp", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col))


def test_write_read_round_trip_is_exact(tmp_path: Path) -> None:
    data = generate("realistic", 500, 3, symbol="SYN", freq="1h")
    path = tmp_path / "out" / "syn.csv"
    write_bars_csv(path, [data.series])
    assert path.read_text().splitlines()[0] == "timestamp,open,high,low,close,volume"
    _same(read_bars_csv(path)[0], data.series)


def test_write_several_series_adds_symbol_column_in_time_order(tmp_path: Path) -> None:
    a = generate("easy", 5, 1, symbol="AAA").series
    b = generate("easy", 3, 2, symbol="BBB", start="2000-01-04").series
    path = tmp_path / "two.csv"
    write_bars_csv(path, [a, b])
    lines = path.read_text().splitlines()
    assert lines[0] == "timestamp,symbol,open,high,low,close,volume"
    assert [ln.split(",")[1] for ln in lines[1:5]] == ["AAA", "AAA", "BBB", "AAA"]
    back = read_bars_csv(path)
    _same(back[0], a)
    _same(back[1], b)


def test_symbol_column_keeps_a_single_series_symbol(tmp_path: Path) -> None:
    s = generate("easy", 5, 1, symbol="SYN").series
    write_bars_csv(tmp_path / "bars.csv", [s], symbol_column=True)
    assert read_bars_csv(tmp_path / "bars.csv")[0].symbol == "SYN"


def test_writer_refuses_invalid_bars(tmp_path: Path) -> None:
    s = generate("easy", 5, 1).series
    broken = BarSeries(s.symbol, s.timestamp, s.open, s.high, s.high * 1.01, s.close, s.volume)
    with pytest.raises(DataError, match="row 0: column low="):
        write_bars_csv(tmp_path / "x.csv", [broken])
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(DataError, match="nothing to write"):
        write_bars_csv(tmp_path / "x.csv", [])


def test_truth_round_trip_and_errors(tmp_path: Path) -> None:
    data = generate("hard", 300, 9)
    path = tmp_path / "truth.csv"
    write_truth_csv(path, data)
    stamps, regimes = read_truth_csv(path)
    np.testing.assert_array_equal(stamps, data.series.timestamp)
    np.testing.assert_array_equal(regimes, data.regimes)
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,regime\n2024-01-01T00:00:00Z,BULL\n2024-01-02T00:00:00Z,CRASH\n")
    with pytest.raises(DataError, match="line 3: column regime='CRASH'"):
        read_truth_csv(bad)
    bad.write_text("timestamp,label\n")
    with pytest.raises(DataError, match="expected the header timestamp,regime"):
        read_truth_csv(bad)


def test_btc_fixture_slice() -> None:
    [s] = read_bars_csv(BTC_SLICE)
    assert s.symbol == "BTC-USD"
    assert len(s) == 2000
    assert np.all(np.diff(s.timestamp) == np.timedelta64(1, "h"))


@pytest.mark.parametrize(("name", "symbol"), [("sp500", "SPX"), ("nasdaq", "IXIC")])
def test_arch_loaders(name: str, symbol: str) -> None:
    s = load_arch(name)
    assert s.symbol == symbol
    assert len(s) == 5031
    assert s.timestamp[0] == np.datetime64("1999-01-04T00:00:00", "ns")
    assert s.timestamp[-1] == np.datetime64("2018-12-31T00:00:00", "ns")
    assert np.all(s.low <= np.minimum(s.open, s.close))
    assert np.all(s.high >= np.maximum(s.open, s.close))
    assert s.bar(0).timestamp.tzinfo is not None


def test_unknown_arch_name() -> None:
    with pytest.raises(DataError, match="unknown arch data set 'vix'"):
        load_arch("vix")


def test_shared_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ET_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    with pytest.raises(DataError, match=r"'btcusd_1h' not found .* available: \[\]"):
        load_shared()
    (tmp_path / "btcusd_1h.csv").write_bytes(BTC_SLICE.read_bytes())
    assert len(load_shared()) == 2000
    monkeypatch.setenv("ET_SHARED_DATA", str(tmp_path / "absent"))
    assert shared_data_dir() is None
    with pytest.raises(DataError, match="shared data folder not found"):
        load_shared()


def test_load_shared_real_data() -> None:
    if shared_data_dir() is None:
        pytest.skip("../shared/data is absent (fresh clone)")
    s = load_shared("btcusd_1h")
    assert s.symbol == "BTC-USD"
    assert len(s) == 20_111
    [fixture] = read_bars_csv(BTC_SLICE)
    start = int(np.searchsorted(s.timestamp, fixture.timestamp[0]))
    _same(s[start : start + len(fixture)], fixture)


def test_load_bars_specs(tmp_path: Path) -> None:
    assert load_bars("arch:sp500")[0].symbol == "SPX"
    [syn] = load_bars("synth:hard:4:300")
    assert len(syn) == 300
    _same(syn, generate("hard", 300, 4).series)
    [other] = load_bars("synth:hard:4:300:ALT")
    assert other.symbol == "ALT"
    np.testing.assert_array_equal(other.close, syn.close)
    with pytest.raises(DataError, match="symbol='bad sym'"):
        load_bars("synth:hard:4:300:bad sym")
    [btc] = load_bars(str(BTC_SLICE))
    assert btc.symbol == "BTC-USD"
    with pytest.raises(DataError, match="no such file; a data spec is"):
        load_bars(str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="a folder, not a file; a data spec is"):
        load_bars(str(tmp_path))
    with pytest.raises(DataError, match="synth:<scenario>"):
        load_bars("synth:easy:x")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False),
            st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False),
            st.floats(min_value=1.0, max_value=1.5),
            st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False),
            st.integers(min_value=1, max_value=10**6),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_valid_bars_round_trip_exactly(rows: list[tuple[float, float, float, float, int]]) -> None:
    """Whatever valid floats go in come back bit for bit (shortest repr, timestamps to the µs)."""
    o = np.array([r[0] for r in rows])
    c = np.array([r[1] for r in rows])
    h = np.maximum(o, c) * np.array([r[2] for r in rows])
    lo = np.minimum(o, c) / np.array([r[2] for r in rows])
    steps = np.cumsum([r[4] for r in rows]).astype("timedelta64[us]")
    ts = (np.datetime64("2020-01-01T00:00:00", "us") + steps).astype("datetime64[ns]")
    series = BarSeries("PROP", ts, o, h, lo, c, np.array([r[3] for r in rows]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prop.csv"
        write_bars_csv(path, [series])
        _same(read_bars_csv(path)[0], series)


# --------------------------------------------------------------------------------------------
# Review findings: quotes, encodings, blank lines before the header, non-regular files, messages
# --------------------------------------------------------------------------------------------

HEADER = "timestamp,open,high,low,close,volume\n"


def _rows(n: int) -> list[str]:
    return [f"2024-01-{1 + i // 1440:02d}T{(i // 60) % 24:02d}:{i % 60:02d}:00Z,10,11,9,10.5,100\n" for i in range(n)]


def test_a_stray_quote_inside_a_field_is_an_error_not_repaired(tmp_path: Path) -> None:
    rows = _rows(20)
    rows[10] = rows[10].replace(",100\n", ',"10"0\n')  # file line 12; lenient csv read it as 100
    path = _write(tmp_path, HEADER + "".join(rows))
    for read in (read_bars_csv, lambda p: list(iter_bars_csv(p))):
        with pytest.raises(DataError, match=r"abc\.csv, line 12: ',' expected after '\"'"):
            read(path)
    path.write_text('timestamp,regime\n2024-01-01T00:00:00Z,"BU"LL\n')
    with pytest.raises(DataError, match="line 2: ',' expected after"):
        read_truth_csv(path)


@pytest.mark.parametrize("n_rows", [1_000, 10_000])  # 10,000 rows: past csv's 128 KiB field limit
@pytest.mark.parametrize(("old", "new"), [(",10.5,", ',"10.5,'), (",100\n", ',"100\n')])
def test_an_unclosed_quote_names_the_line_it_opened_on(tmp_path: Path, n_rows: int, old: str, new: str) -> None:
    rows = _rows(n_rows)
    rows[9] = rows[9].replace(old, new)  # file line 11
    path = _write(tmp_path, HEADER + "".join(rows))
    for read in (read_bars_csv, lambda p: list(iter_bars_csv(p))):
        with pytest.raises(DataError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"{path}, line 11: the quote opened on line 11 is not closed"), message
        assert len(message) < 400 + len(str(path)), len(message)
    path.write_text(HEADER + "".join(_rows(3)) + '2024-02-01T00:00:00Z,10,11,9,10.5,"100')  # ends in the quote
    with pytest.raises(DataError, match="line 5: the quote opened on line 5 is not closed"):
        read_bars_csv(path)


def test_a_long_row_or_value_is_cut_short_in_the_message(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "2024-01-01T00:00:00Z,10,11,9,10.5,100," + "9," * 5_000 + "9\n")
    with pytest.raises(DataError, match=r"line 2: expected 6 columns .*, got 5007: '2024.*'… \(10,039 characters\)$") as info:
        read_bars_csv(path)
    assert len(str(info.value)) < 400 + len(str(path))
    path = _write(tmp_path, HEADER + "2024-01-01T00:00:00Z,10,11,9,10.5," + "1" * 50_000 + "x\n")
    with pytest.raises(DataError, match=r"line 2: column volume='1111.*'… \(50,001 characters\): not a number$") as info:
        read_bars_csv(path)
    assert len(str(info.value)) < 400 + len(str(path))


@pytest.mark.parametrize("bad_line", [4, 501])  # was reported "after line 0" / "after line 431"
def test_a_byte_that_is_not_utf8_is_reported_on_its_line_and_column(tmp_path: Path, bad_line: int) -> None:
    rows = _rows(1_000)
    rows[bad_line - 2] = rows[bad_line - 2].replace("100\n", "100\xa0\n")
    path = tmp_path / "abc.csv"
    path.write_text(HEADER + "".join(rows), encoding="latin-1")
    expected = rf"abc\.csv, line {bad_line}: column volume: not UTF-8 text: byte\(s\) b'\\xa0' in b'100\\xa0'"
    for read in (read_bars_csv, lambda p: list(iter_bars_csv(p))):
        with pytest.raises(DataError, match=expected):
            read(path)
    path.write_bytes(b"timestamp,\xe9\n")
    with pytest.raises(DataError, match=r"line 1: the header: not UTF-8 text: byte\(s\) b'\\xe9' in b'\\xe9'"):
        read_bars_csv(path)
    path.write_bytes(b"timestamp,regime\n2024-01-01T00:00:00Z,BULL\n2024-01-02T00:00:00Z,BE\xc3AR\n")
    with pytest.raises(DataError, match=r"line 3: column regime: not UTF-8 text: byte\(s\) b'\\xc3' in b'BE\\xc3AR'"):
        read_truth_csv(path)


def test_blank_lines_before_the_header_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n \r\n" + GOOD)
    [s] = read_bars_csv(path)
    assert len(s) == 3 and s.close[-1] == 10.5
    assert len(list(iter_bars_csv(path))) == 3
    _write(tmp_path, "\n\ntimestamp,open,high,low,close\n2024-01-02T00:00:00Z,1,1,1,1\n")
    with pytest.raises(DataError, match=r"line 3: missing column\(s\) \['volume'\]"):  # the header's line
        read_bars_csv(path)
    _write(tmp_path, "\n\n" + GOOD.replace("10.25,0", "10.25,-1"))
    with pytest.raises(DataError, match="line 5: column volume='-1'"):
        read_bars_csv(path)
    _write(tmp_path, "\n \n")
    with pytest.raises(DataError, match="empty file"):
        read_bars_csv(path)
    path.write_text("\ntimestamp,regime\n2024-01-01T00:00:00Z,BULL\n")
    assert len(read_truth_csv(path)[0]) == 1
    path.write_text("\ntimestamp,label\n")
    with pytest.raises(DataError, match="line 2: expected the header timestamp,regime"):
        read_truth_csv(path)


def _feed_fifo(path: Path, text: str, timeout: float = 10.0) -> threading.Thread:
    """Write ``text`` into the FIFO ``path`` once a reader opens it (give up after ``timeout``
    seconds, so a reader that never opens it does not hang the test)."""

    def write() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_read_not_reported_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pipe (``<(cat bars.csv)``, ``/dev/stdin``) exists but is not a regular file: it was
    reported as 'no such file'. One reading is all read_bars_csv and load_bars need."""
    fifo = tmp_path / "abc.csv"
    os.mkfifo(fifo)
    for read in (read_bars_csv, lambda p: list(iter_bars_csv(p)), lambda p: load_bars(str(p))):
        writer = _feed_fifo(fifo, GOOD)
        got = read(fifo)
        writer.join()
        assert len(got) == 3 or len(got[0]) == 3
    writer = _feed_fifo(fifo, GOOD)
    from ensemble_trader.cli import main

    assert main(["data", "show", str(fifo)]) == 0
    writer.join()
    assert capsys.readouterr().out.startswith("ABC: 3 rows")


def test_a_symbol_from_the_file_name_says_so_and_how_to_fix_it(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD, name="SPX (1).csv")
    with pytest.raises(DataError) as info:
        read_bars_csv(path)
    assert str(info.value) == (
        f"{path}: symbol 'SPX (1)', taken from the file name, is not a valid symbol (pattern "
        r"^[A-Z0-9^][A-Z0-9.\-/=_]{0,23}$): rename the file or add a symbol column"
    )
    with pytest.raises(DataError, match=r"symbol 'spx': not a valid symbol"):  # given: not the file name
        read_bars_csv(path, symbol="spx")
    assert read_bars_csv(path, symbol="SPX")[0].symbol == "SPX"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synth:realistic:1:0", "'synth:realistic:1:0': n_bars=0: must be an integer >= 1"),
        ("synth:realistic:1:100:spx", "'synth:realistic:1:100:spx': symbol='spx': not a valid symbol"),
        ("synth:bad", "'synth:bad': unknown scenario 'bad'"),
        ("synth:easy:1:99999999", "'synth:easy:1:99999999': 99,999,999 bars of 1D from 2000-01-03 would end"),
    ],
)
def test_a_synth_spec_the_generator_refuses_is_quoted(spec: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        load_bars(spec)
    assert str(info.value).startswith(message), str(info.value)


def _peak_mb_writing(path: Path, series: list[BarSeries]) -> float:
    tracemalloc.start()
    try:
        write_bars_csv(path, series)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_the_writer_streams_rows_instead_of_building_them_all(tmp_path: Path) -> None:
    """Every row was built as a list of strings (and sorted) before the first was written: 1.07 GB
    to export 52 MB. Now one series is written row by row and several are merged lazily."""
    n = 200_000
    ts = np.datetime64("2020-01-01", "ns") + np.arange(n) * np.timedelta64(60, "s")
    close = 100 + np.arange(n) % 97 / 100
    one = BarSeries("ONE", ts, close, close + 1, close - 1, close, np.full(n, 5.0))
    half = slice(0, n, 2)
    two = BarSeries("TWO", ts[half], close[half], close[half] + 1, close[half] - 1, close[half], np.ones(n // 2))
    assert _peak_mb_writing(tmp_path / "one.csv", [one]) < 20  # was ~100 MB
    assert _peak_mb_writing(tmp_path / "two.csv", [one, two]) < 25  # was ~150 MB
    lines = (tmp_path / "two.csv").read_text().splitlines()
    assert len(lines) == 1 + n + n // 2
    assert lines[1:4] == [
        "2020-01-01T00:00:00Z,ONE,100,101,99,100,5",
        "2020-01-01T00:00:00Z,TWO,100,101,99,100,1",  # a tie keeps the order of the series given
        "2020-01-01T00:01:00Z,ONE,100.01,101.01,99.01,100.01,5",
    ]
