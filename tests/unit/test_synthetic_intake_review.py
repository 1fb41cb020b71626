"""Review of the generator's intake: the bar count is capped before anything is allocated, and
``1B`` bars start at ``start`` on the start's own (local) business days."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.cli import main
from ensemble_trader.domain import synthetic
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import MAX_BARS, bar_times, generate


@pytest.fixture
def no_drawing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any random draw fails the test at once: a refused count must be refused before the
    generator allocates (on the old code it would have gone on to ~14 GB)."""

    def drawn(*args: object) -> None:
        raise AssertionError("the generator started drawing")

    monkeypatch.setattr(synthetic, "_simulate_chain", drawn)


def test_generate_refuses_more_than_max_bars_naming_the_limit_and_why(no_drawing: None) -> None:
    with pytest.raises(DataError) as info:
        generate("easy", MAX_BARS + 1, 0, freq="1s")
    text = str(info.value)
    assert text.startswith(f"n_bars={MAX_BARS + 1:,}: at most {MAX_BARS:,} bars in one run")
    assert "bytes a bar" in text and "distinct seeds" in text


def test_bar_times_refuses_more_than_max_bars() -> None:
    """One-second bars from 2000 fit 2262 until 8.3e9 of them: only the cap refuses them (2e9
    asked numpy for 16 GB of times; the test asks for one bar more than the cap)."""
    with pytest.raises(DataError, match=f"n={MAX_BARS + 1:,}: at most {MAX_BARS:,} bars"):
        bar_times("2000-01-03", "1s", MAX_BARS + 1)


def test_the_time_limit_is_still_named_first_when_the_bars_would_pass_2262() -> None:
    with pytest.raises(DataError, match="would end after 2262-04-11.*at most 95,792 bars of 1D"):
        generate("easy", 10**9, 0)


def test_max_bars_themselves_are_accepted_by_bar_times() -> None:
    stamps = bar_times("2000-01-03", "1s", MAX_BARS)
    assert len(stamps) == MAX_BARS and stamps[-1] == np.datetime64("2000-01-03", "ns") + np.timedelta64(MAX_BARS - 1, "s")


def test_data_synth_refuses_too_many_bars_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_drawing: None
) -> None:
    """``--bars 100000000 --freq 1min`` died in a MemoryError asking for ~14 GB; one bar over the
    cap is enough to show the refusal."""
    out = tmp_path / "big"
    assert main(["data", "synth", "--bars", str(MAX_BARS + 1), "--freq", "1min", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"n_bars={MAX_BARS + 1:,}: at most {MAX_BARS:,} bars in one run" in err
    assert not out.exists()


def test_the_help_of_data_synth_bars_names_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    """The help text holds the number itself (the CLI does not import numpy to print it)."""
    with pytest.raises(SystemExit):
        main(["data", "synth", "--help"])
    assert f"at most {MAX_BARS:,}" in " ".join(capsys.readouterr().out.split())


def test_long_easy_paths_reach_extreme_prices_that_nothing_downstream_minds(tmp_path: Path) -> None:
    """docs/data.md said 100k bars "neither explode nor collapse"; ``easy`` seed 106 goes from
    100 to 6.6e-9 in 95,792 bars. The generator is not bounded because the features do not see
    the level (the same values with every price × 1e12 or × 1e-12) and the bars CSV reads such
    prices back bit for bit; this test holds both facts the decision rests on."""
    from ensemble_trader.domain.bars import BarSeries
    from ensemble_trader.domain.features import compute_features
    from ensemble_trader.marketdata import read_bars_csv, write_bars_csv

    s = generate("easy", 95_792, 106).series
    assert 6e-9 < s.close.min() < 7e-9 and 1.8e4 < s.close.max() < 1.9e4
    base = compute_features(s).values
    for k in (1e12, 1e-12):
        scaled = BarSeries(s.symbol, s.timestamp, s.open * k, s.high * k, s.low * k, s.close * k, s.volume)
        np.testing.assert_allclose(compute_features(scaled).values, base, rtol=0, atol=1e-9)
    write_bars_csv(tmp_path / "easy.csv", [s])
    [back] = read_bars_csv(tmp_path / "easy.csv")
    for column in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(getattr(back, column), getattr(s, column))


@pytest.mark.parametrize(
    ("start", "first", "second"),
    [
        # Monday 00:00 at +05:00 is Sunday 19:00 UTC: its first bar was Tuesday 00:00 local
        ("2000-01-03T00:00:00+05:00", "2000-01-02T19:00", "2000-01-03T19:00"),
        # Friday 22:00 at -05:00 is Saturday 03:00 UTC: its first bar was Monday 22:00 local
        ("2000-01-07T22:00:00-05:00", "2000-01-08T03:00", "2000-01-11T03:00"),
        ("2000-01-03", "2000-01-03T00:00", "2000-01-04T00:00"),
    ],
)
def test_business_days_are_the_starts_own_and_the_first_bar_is_start(start: str, first: str, second: str) -> None:
    stamps = generate("easy", 2, 0, start=start, freq="1B").series.timestamp
    np.testing.assert_array_equal(stamps, np.array([first, second], dtype="datetime64[ns]"))


@pytest.mark.parametrize(("start", "weekday", "following"), [
    ("2000-01-01", "Saturday", "2000-01-03"),  # moved to Monday without a word before
    ("2000-01-03T02:00:00+05:00", "Monday", None),  # Sunday 21:00 UTC: a business day locally
    ("2000-01-09T23:00:00-02:00", "Sunday", "2000-01-10"),  # Monday 01:00 UTC, Sunday locally
])
def test_a_start_that_is_not_a_business_day_is_refused(start: str, weekday: str, following: str | None) -> None:
    if following is None:
        assert len(bar_times(start, "1B", 3)) == 3
        return
    with pytest.raises(DataError) as info:
        bar_times(start, "1B", 3)
    assert str(info.value).startswith(f"start={start!r} falls on a {weekday}")
    assert f"(the next is {following})" in str(info.value)


def test_business_days_at_an_offset_still_end_before_the_time_limit() -> None:
    """At -05:00 a local Friday 20:00 is 01:00 UTC the next day: the count said to fit is the
    count that ends before 2262-04-11 in UTC."""
    with pytest.raises(DataError, match="at most 1 bar of 1B fit"):
        bar_times("2262-04-09T20:00-05:00", "1B", 2)
    [only] = bar_times("2262-04-09T20:00-05:00", "1B", 1)
    assert only == np.datetime64("2262-04-10T01:00", "ns")
    with pytest.raises(DataError) as info:
        bar_times("2000-01-03T20:00-05:00", "1B", 10**6)
    fit = int(str(info.value).split("at most ")[1].split(" bars")[0].replace(",", ""))
    stamps = bar_times("2000-01-03T20:00-05:00", "1B", fit)
    assert stamps[-1] < np.datetime64("2262-04-11", "ns")
