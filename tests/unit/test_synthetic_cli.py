"""``ensemble-trader data ...`` end to end in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.cli import main
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import read_bars_csv, read_truth_csv

BTC_SLICE = Path(__file__).resolve().parents[1] / "fixtures" / "btcusd_1h_slice.csv"


def test_synth_writes_bars_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["data", "synth", "--scenario", "realistic", "--seed", "3", "--bars", "400", "--out", str(out)]
    assert main([*argv, "--symbol", "ABC"]) == 0
    line = capsys.readouterr().out.strip()
    assert "400 bars" in line and "regime switches" in line and "BULL=" in line
    [bars] = read_bars_csv(out / "bars.csv")
    stamps, regimes = read_truth_csv(out / "truth.csv")
    expected = generate("realistic", 400, 3, symbol="ABC")
    assert bars.symbol == "ABC"
    np.testing.assert_array_equal(bars.close, expected.series.close)
    np.testing.assert_array_equal(stamps, bars.timestamp)
    np.testing.assert_array_equal(regimes, expected.regimes)
    first = (out / "bars.csv").read_bytes()
    assert main([*argv, "--symbol", "ABC"]) == 0
    assert (out / "bars.csv").read_bytes() == first  # same seed, same bytes


def test_synth_plot(tmp_path: Path) -> None:
    args = ["data", "synth", "--scenario", "easy", "--bars", "300", "--out", str(tmp_path), "--plot"]
    assert main(args) == 0
    assert (tmp_path / "synth.png").stat().st_size > 10_000


def test_show_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "show", str(BTC_SLICE)]) == 0
    shown = capsys.readouterr().out
    assert "BTC-USD: 2,000 rows" in shown and "2017-11-15T00:00:00Z" in shown
    target = tmp_path / "spx.csv"
    assert main(["data", "export", "arch:sp500", "--out", str(target)]) == 0
    [spx] = read_bars_csv(target)
    assert spx.symbol == "SPX" and len(spx) == 5031


def test_show_prints_sub_second_spacing_and_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """250 ms bars: the spacing is not "0 seconds" and the span keeps the last bar's fraction."""
    from ensemble_trader.domain.bars import BarSeries
    from ensemble_trader.marketdata import write_bars_csv

    s = generate("realistic", 200, 3, symbol="TICK").series
    ticks = BarSeries(s.symbol, s.timestamp[0] + np.arange(len(s)) * np.timedelta64(250, "ms"),
                      s.open, s.high, s.low, s.close, s.volume)
    write_bars_csv(tmp_path / "ticks.csv", [ticks])
    assert main(["data", "show", str(tmp_path / "ticks.csv")]) == 0
    shown = capsys.readouterr().out
    assert "median spacing 250 milliseconds" in shown
    assert "2000-01-03T00:00:00.000000Z … 2000-01-03T00:00:49.750000Z" in shown
    assert main(["data", "show", str(BTC_SLICE)]) == 0
    assert "median spacing 3600 seconds" in capsys.readouterr().out  # whole seconds as before


def test_scenarios_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "scenarios"]) == 0
    text = capsys.readouterr().out
    for name in ("easy", "realistic", "hard", "mean_reverting"):
        assert name in text


def test_malformed_input_exits_non_zero_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00,1,2,0.5,1,1\n")
    assert main(["data", "show", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "column timestamp" in err
    assert main(["data", "synth", "--scenario", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown scenario 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("freq", ["99999999999999999999D", "213504D"])
def test_synth_past_the_time_limit_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], freq: str
) -> None:
    """An OverflowError traceback (or 25-minute bars for 213504D) before."""
    assert main(["data", "synth", "--bars", "10", "--freq", freq, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "would end after 2262-04-11" in err and "at most" in err
    assert not (tmp_path / "o").exists()
