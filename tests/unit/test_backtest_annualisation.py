"""Bars per year of a short intraday series, shown and overridable on the command line.

Under a week a series cannot show bars on all seven weekdays; whether its intraday bars are a
round-the-clock market (365 days) or a five-day one (252: FX, futures, an exchange's sessions) is
read from its weekend — a bar on a Saturday afternoon (UTC), or a step over one — and, with no
weekend in the series, from whether the bars cover the whole day, noted as an assumption; not
from the weekday they start on. ``evaluate agents`` reports the figure in a ``run`` block and
its header; ``--bars-per-year`` fixes it in both commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.backtest.engine import prepare
from ensemble_trader.backtest.ensemble import evaluate, run_meta, run_pipeline, until
from ensemble_trader.backtest.metrics import (
    NO_WEEKEND_24_7,
    NO_WHOLE_DAY_SESSIONS,
    BarsPerYear,
    infer_periods_per_year,
    periods_per_year,
)
from ensemble_trader.bench import committed_models
from ensemble_trader.cli import main
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.meta_agent import MetaAgentConfig
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv

MINUTE = np.timedelta64(1, "m")


def minutes(start: str, n: int) -> np.ndarray:
    return (np.datetime64(start, "ns") + np.arange(n) * MINUTE).astype("datetime64[ns]")


def sessions(days: list[str], open_: str = "14:30", length: int = 390) -> np.ndarray:
    """An exchange's minute bars: ``length`` minutes from ``open_`` (UTC) on each day."""
    return np.concatenate([minutes(f"{d}T{open_}", length) for d in days])


def test_a_round_the_clock_minute_series_is_annualised_alike_whatever_weekday_it_starts_on():
    tuesday, saturday = minutes("2024-01-02T00:00", 2 * 1440), minutes("2024-01-06T00:00", 2 * 1440)
    assert periods_per_year(tuesday) == periods_per_year(saturday) == 365 * 1440  # was 252 x 1440 on Tuesday
    hours = np.timedelta64(1, "h")
    wednesday = (np.datetime64("2024-01-03", "ns") + np.arange(60) * hours).astype("datetime64[ns]")
    assert periods_per_year(wednesday) == pytest.approx(24 * 365)
    gappy = np.delete(tuesday, np.arange(100, 2800, 97))  # a missing minute here and there
    assert periods_per_year(gappy) == 365 * 1440


def test_an_exchanges_sessions_stay_trading_days_whatever_weekday_they_fall_on():
    assert periods_per_year(sessions(["2024-01-02", "2024-01-03", "2024-01-04"])) == 252 * 390
    assert periods_per_year(sessions(["2024-01-05", "2024-01-08"])) == 252 * 390  # over a weekend
    assert periods_per_year(sessions(["2024-01-02"])) == 252 * 390  # one session cannot show a whole day
    extended = sessions(["2024-01-02", "2024-01-03", "2024-01-04"], open_="08:00", length=16 * 60)
    assert periods_per_year(extended) == 252 * 16 * 60  # 16 hours of 24 is not round the clock


FIVE_MINUTES = np.timedelta64(5, "m")


def every(start: str, end: str, step: np.timedelta64 = MINUTE) -> np.ndarray:
    return np.arange(np.datetime64(start, "ns"), np.datetime64(end, "ns"), step)


def weekday(ts: np.ndarray) -> np.ndarray:
    return (ts.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 0 = Monday


def hour(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[h]").astype(np.int64) % 24


def fx(start: str, end: str) -> np.ndarray:
    """FX 5-minute bars, 24 hours a day from Sunday 22:00 to Friday 22:00 UTC."""
    t = every(start, end, FIVE_MINUTES)
    closed = (weekday(t) == 5) | ((weekday(t) == 4) & (hour(t) >= 22)) | ((weekday(t) == 6) & (hour(t) < 22))
    return t[~closed]


def test_a_24_hour_five_day_market_over_a_weekend_is_252_days_as_over_a_longer_span():
    five_day = BarsPerYear(252 * 288)
    assert infer_periods_per_year(fx("2024-03-06", "2024-03-12")) == five_day  # Wed .. Mon: the weekend
    assert infer_periods_per_year(fx("2024-03-04", "2024-03-12")) == five_day  # 8 days: the weekday rule
    cme = every("2024-03-06", "2024-03-12")  # E-mini minutes: 23 hours a day, Sunday 23:00 to Friday 22:00
    cme = cme[(hour(cme) != 22) & ~((weekday(cme) == 5) | ((weekday(cme) == 4) & (hour(cme) >= 22))
                                     | ((weekday(cme) == 6) & (hour(cme) < 23)))]
    assert infer_periods_per_year(cme) == BarsPerYear(252 * 23 * 60)


def test_with_no_weekend_in_the_series_round_the_clock_is_assumed_and_noted():
    assert infer_periods_per_year(fx("2024-03-04", "2024-03-08T22:00")) == BarsPerYear(365 * 288, NO_WEEKEND_24_7)
    cme = every("2024-03-05", "2024-03-08")  # Tuesday .. Thursday, 23 hours a day
    assert infer_periods_per_year(cme[hour(cme) != 22]) == BarsPerYear(365 * 1440, NO_WEEKEND_24_7)
    assert infer_periods_per_year(minutes("2024-01-02T00:00", 2 * 1440)).note == NO_WEEKEND_24_7  # crypto alike
    assert infer_periods_per_year(sessions(["2024-01-02", "2024-01-03"])) == BarsPerYear(252 * 390)  # sessions: no doubt
    assert infer_periods_per_year(sessions(["2024-01-02"])) == BarsPerYear(252 * 390, NO_WHOLE_DAY_SESSIONS)


def test_crypto_over_a_weekend_is_round_the_clock_thin_or_not():
    complete = every("2024-03-09", "2024-03-12")  # Saturday .. Monday
    assert infer_periods_per_year(complete) == BarsPerYear(365 * 1440)
    thin = complete[np.random.default_rng(0).random(complete.size) < 0.45]  # only the minutes that trade
    assert np.median(np.diff(thin)) == 2 * MINUTE
    assert infer_periods_per_year(thin) == BarsPerYear(365 * 720)  # was 252 x bars a day: sessions
    tuesday_to_saturday = every("2024-03-05", "2024-03-09T18:00", np.timedelta64(1, "h"))
    assert infer_periods_per_year(tuesday_to_saturday) == BarsPerYear(24 * 365)
    thin_weekdays = every("2024-03-05", "2024-03-08")
    thin_weekdays = thin_weekdays[np.random.default_rng(1).random(thin_weekdays.size) < 0.45]
    assert infer_periods_per_year(thin_weekdays) == BarsPerYear(365 * 720, NO_WEEKEND_24_7)  # was sessions


def test_friday_extended_hours_past_midnight_utc_are_no_weekend_market():
    """US extended hours, 04:00-20:00 New York time, run to 01:00 UTC on Saturday in winter."""
    days = ["2024-01-04", "2024-01-05", "2024-01-08"]  # Thursday, Friday, Monday
    bars = np.concatenate([every(f"{d}T09:00", str(np.datetime64(d) + 1) + "T01:00") for d in days])
    assert (weekday(bars) == 5).any()
    annual = infer_periods_per_year(bars)
    assert annual.value == periods_per_year(bars) and annual.value % 252 == 0 and annual.note is None


def test_the_backtest_run_block_carries_the_note(tmp_path: Path) -> None:
    pool, regime = committed_models()
    data = generate("realistic", 1416, 5, start="2024-03-04", freq="5min", symbol="EURUSD")  # Mon .. Fri 21:55
    assert infer_periods_per_year(data.series.timestamp).note == NO_WEEKEND_24_7
    run = run_meta(run_pipeline(data.series, pool, regime), MetaAgentConfig())
    info = evaluate(run)["run"]
    assert info["periods_per_year"] == 365 * 288 and info["periods_per_year_source"] == "inferred"
    assert info["periods_per_year_note"] == NO_WEEKEND_24_7
    assert prepare(data.series).bars_per_year_note == NO_WEEKEND_24_7
    assert prepare(data.series, bars_per_year=252 * 288).bars_per_year_note is None
    given = evaluate(run_meta(run_pipeline(data.series, pool, regime, bars_per_year=252 * 288), MetaAgentConfig()))
    assert given["run"]["periods_per_year_note"] is None and given["run"]["periods_per_year"] == 252 * 288


def test_a_given_figure_is_checked_and_carried_by_the_run():
    data = generate("easy", 300, 1)
    assert prepare(data.series, bars_per_year=100).periods_per_year == 100
    pool, regime = committed_models()
    short = BarSeries.from_bars(list(data.series.bars())[:WARMUP_BARS + 20])
    run = run_pipeline(short, pool, regime, bars_per_year=100)
    end = str(short.timestamp[WARMUP_BARS + 10])[:10]  # a date inside the series: the run is cut there
    cut = until(run_meta(run, MetaAgentConfig()), end)
    assert len(cut.pipeline.timestamp) < len(short) and cut.pipeline.bars_per_year == 100
    result = evaluate(run_meta(run, MetaAgentConfig()), end=end)
    assert result["run"]["periods_per_year"] == 100 and result["run"]["periods_per_year_source"] == "given"
    assert result["run"]["periods_per_year_note"] is None
    inferred = run_pipeline(short, pool, regime)
    assert inferred.bars_per_year is None  # inferred from the bar times
    assert evaluate(run_meta(inferred, MetaAgentConfig()), end=end)["run"]["periods_per_year"] == 365
    for bad in (0, -1, float("nan"), float("inf"), "x"):
        with pytest.raises(DataError, match="bars per year must be a finite number > 0"):
            prepare(data.series, bars_per_year=bad)
        with pytest.raises(DataError, match="bars per year must be a finite number > 0"):
            run_pipeline(short, pool, regime, bars_per_year=bad)


@pytest.fixture(scope="module")
def minute_bars(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same prices as minute bars over two days from a Tuesday and from a Saturday."""
    out = {}
    for day, start in (("tue", "2024-01-02"), ("sat", "2024-01-06")):
        data = generate("realistic", 2 * 1440, 5, start=start, freq="1min")
        out[day] = tmp_path_factory.mktemp(day) / "bars.csv"
        write_bars_csv(out[day], [data.series])
    return out


def test_evaluate_agents_reports_the_same_figure_in_its_run_block(minute_bars: dict[str, Path],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    reports, warnings = {}, {}
    for day, path in minute_bars.items():
        assert main(["evaluate", "agents", "--bars", str(path), "--json"]) == 0
        out = capsys.readouterr()
        reports[day], warnings[day] = json.loads(out.out), out.err
    tue, sat = reports["tue"], reports["sat"]
    # two days from a Tuesday show no weekend: 24/7 is assumed, and said (run block and stderr)
    assert "no weekend" in tue["run"]["periods_per_year_note"] and sat["run"]["periods_per_year_note"] is None
    # (a bars file also gets the in-sample check's note that its provenance is unknown)
    assert "warning: BARS: 525600 bars/year: 24/7 assumed" in warnings["tue"] and "bars/year" not in warnings["sat"]
    assert set(tue) == {"agents", "baselines", "run"}
    assert tue["run"]["periods_per_year"] == sat["run"]["periods_per_year"] == 365 * 1440
    assert tue["run"]["periods_per_year_source"] == "inferred"
    assert tue["run"]["regimes"] in ("detected", "none") and tue["run"]["symbol"] == "BARS"
    assert tue["run"]["periods"] == tue["run"]["evaluated_bars"] - 1
    assert tue["agents"] == sat["agents"]  # same prices, same annualisation: the same figures
    assert main(["evaluate", "agents", "--bars", str(minute_bars["tue"])]) == 0
    assert "525600 bars/year, inferred" in capsys.readouterr().out.splitlines()[0]


def test_bars_per_year_is_used_by_evaluate_agents(minute_bars: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "agents", "--bars", str(minute_bars["tue"]), "--json"]
    assert main(argv) == 0
    inferred = json.loads(capsys.readouterr().out)
    assert main([*argv, "--bars-per-year", str(365 * 1440 // 4)]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["run"]["periods_per_year"] == 365 * 1440 // 4 and given["run"]["periods_per_year_source"] == "given"
    for name, block in given["agents"].items():
        m, m0 = block["overall"], inferred["agents"][name]["overall"]
        assert m["total_return"] == m0["total_return"]
        assert m["sharpe"] == pytest.approx(m0["sharpe"] / 2)  # sqrt(1/4)
        assert m["turnover"] == pytest.approx(m0["turnover"] / 4)


def test_bars_per_year_is_used_by_the_backtest(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["backtest", "--bars", "synth:realistic:3:400", "--json"]
    assert main(argv) == 0
    inferred = json.loads(capsys.readouterr().out)
    assert main([*argv, "--bars-per-year", "91.25"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert inferred["run"]["periods_per_year"] == 365 and inferred["run"]["periods_per_year_source"] == "inferred"
    assert given["run"]["periods_per_year"] == 91.25 and given["run"]["periods_per_year_source"] == "given"
    assert given["ensemble"]["sharpe"] == pytest.approx(inferred["ensemble"]["sharpe"] / 2)
    assert given["buy_and_hold"]["sharpe"] == pytest.approx(inferred["buy_and_hold"]["sharpe"] / 2)
    assert main(["backtest", "--bars", "synth:realistic:3:400", "--bars-per-year", "252"]) == 0
    assert "252 bars/year given" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["backtest"], ["evaluate", "agents"]])
@pytest.mark.parametrize("value", ["0", "-252", "nan", "inf", "daily"])
def test_a_bad_bars_per_year_is_a_usage_error_naming_it(command: list[str], value: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--bars", "synth:realistic:3:400", "--bars-per-year", value])
    assert exit_.value.code == 2
    assert f"argument --bars-per-year: {value!r} is not a finite number > 0" in capsys.readouterr().err


def test_the_backtest_warns_when_its_bars_per_year_are_assumed(minute_bars: dict[str, Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--bars", str(minute_bars["tue"]), "--json"]) == 0
    out = capsys.readouterr()
    assert "no weekend" in json.loads(out.out)["run"]["periods_per_year_note"]
    assert "warning: BARS: 525600 bars/year: 24/7 assumed" in out.err


def test_a_five_day_markets_bars_per_day_are_those_of_a_whole_day():
    """Hourly FX from Friday 02:00 to Monday 24:00 holds 22, 2 and 24 bars on its three UTC days:
    the median took the Friday's 22 (5,544 bars a year, Sharpe 4 % low)."""
    hours = np.timedelta64(1, "h")
    friday = np.datetime64("2024-01-05T02:00", "ns") + np.arange(22) * hours
    sunday = np.datetime64("2024-01-07T22:00", "ns") + np.arange(26) * hours  # to Monday 24:00
    fx = np.concatenate([friday, sunday]).astype("datetime64[ns]")
    assert periods_per_year(fx) == 252 * 24
