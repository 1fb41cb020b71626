"""``backtest`` and ``evaluate agents`` windows: errors name the whole series, a truth file need
cover only the evaluated bars (the committed model sets, a few hundred synthetic bars)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ensemble_trader.backtest import ensemble
from ensemble_trader.cli import main
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv, write_truth_csv


def test_a_window_without_warm_bars_names_the_series_span_not_the_cut_one(capsys: pytest.CaptureFixture[str]) -> None:
    """The span was that of the bars before --end (to 2000-02-29 here), and None an open bound."""
    assert main(["backtest", "--bars", "synth:hard:1:300", "--start", "2000-02-01", "--end", "2000-03-01"]) == 1
    err = capsys.readouterr().err
    assert ("fewer than two warm bars in [2000-02-01, 2000-03-01): "
            "its bars run from 2000-01-03T00:00:00 to 2000-10-28T00:00:00") in err
    assert main(["evaluate", "agents", "--bars", "synth:hard:1:300", "--start", "2001-01-01"]) == 1
    assert "fewer than two warm bars in [2001-01-01, …): its bars run from 2000-01-03" in capsys.readouterr().err


def test_a_truth_file_of_the_evaluated_window_is_enough(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = generate("easy", 400, 1)
    bars, whole, window = tmp_path / "bars.csv", tmp_path / "whole", tmp_path / "window"
    write_bars_csv(bars, [data.series])
    write_truth_csv(whole / "truth.csv", data)
    lines = (whole / "truth.csv").read_text().splitlines()
    window.mkdir()
    (window / "truth.csv").write_text("\n".join([lines[0], *lines[1 + 200 : 1 + 299]]) + "\n")  # bars 200..298
    argv = ["evaluate", "agents", "--bars", str(bars), "--start", str(data.series.timestamp[200])[:10],
            "--end", str(data.series.timestamp[300])[:10], "--json", "--truth"]
    assert main([*argv, str(whole / "truth.csv")]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main([*argv, str(window / "truth.csv")]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    (window / "truth.csv").write_text("\n".join([lines[0], *lines[1 + 201 : 1 + 299]]) + "\n")
    assert main([*argv, str(window / "truth.csv")]) == 1
    assert ("1 evaluated bar(s) have no regime in the truth file; first at 2000-07-21"
            in capsys.readouterr().err)


@pytest.mark.parametrize("window", [["--start", "2030-01-01"], ["--end", "2000-02-01"],
                                    ["--start", "2000-03-01", "--end", "2000-03-02"]])
def test_the_backtest_checks_every_window_before_running_any_pipeline(
        window: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty window (or one inside the features' warm-up) fails before the pipeline runs, for
    each series of a file — not after minutes of running the whole series (or the ones before)."""
    calls: list[str] = []
    real = ensemble.run_pipeline
    monkeypatch.setattr(ensemble, "run_pipeline", lambda series, *a, **k: calls.append(series.symbol) or real(series, *a, **k))
    assert main(["backtest", "--bars", "synth:hard:1:300", *window]) == 1
    assert calls == []
    assert "fewer than two warm bars in" in capsys.readouterr().err
    # two symbols: the first covers the window, the second ends before it starts — neither runs
    long, short = generate("hard", 400, 1, symbol="AAA").series, generate("hard", 200, 2, symbol="BBB").series
    bars = tmp_path / "two.csv"
    write_bars_csv(bars, [long, short])
    assert main(["backtest", "--bars", str(bars), "--start", str(long.timestamp[300])[:10]]) == 1
    assert calls == []
    assert "BBB: fewer than two warm bars in" in capsys.readouterr().err
    assert main(["backtest", "--bars", "synth:hard:1:300", "--start", "2000-08-01", "--json"]) == 0
    assert calls == ["SYN"]  # a window with bars still runs
