"""Malformed numbers and dates in arguments are usage errors naming the argument and the value (exit 2)."""

from __future__ import annotations

import pytest
from ensemble_trader.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--limit", "-3"], "argument --limit: '-3' must be an integer >= 1"),
        (["demo", "--trade-bars", "x"], "argument --trade-bars: 'x' is not an integer"),
        (["feed", "replay", "--bars", "arch:sp500", "--rate", "-1"], "argument --rate: '-1' must be a finite number >= 0"),
        (["feed", "replay", "--bars", "arch:sp500", "--rate", "inf"], "argument --rate: 'inf' must be a finite number"),
        (["feed", "replay", "--bars", "arch:sp500", "--limit", "0"], "argument --limit: '0' must be an integer >= 1"),
        (["local", "up", "--shards", "0"], "argument --shards: '0' must be an integer >= 1"),
        (["backtest", "--bars", "arch:sp500", "--end", "notadate"], "argument --end: 'notadate' is not an ISO-8601"),
        (["evaluate", "agents", "--bars", "arch:sp500", "--start", "2015-13-01"], "argument --start: '2015-13-01'"),
        (["backtest", "--bars", "arch:sp500", "--start", "0224-01-01"], "argument --start: '0224-01-01' lies outside"),
        (["backtest", "--bars", "arch:sp500", "--start", "2014-12-31T00:00:00.0000001Z"],
         "argument --start: '2014-12-31T00:00:00.0000001Z' has digits past the microsecond"),
        (["backtest", "--bars", "arch:sp500", "--start", "2018-01-01", "--end", "2015-01-01"],
         "--start 2018-01-01 is not before --end 2015-01-01"),
        (["evaluate", "agents", "--bars", "arch:sp500", "--end", "2015-01-01", "--start", "20150101"],
         "--start 20150101 is not before --end 2015-01-01"),
        (["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--start", "2007", "--end", "2006-12-31"],
         "--start 2007 is not before --end 2006-12-31"),
        (["backtest", "--bars", "arch:sp500", "--end", "2020", "--start", "2018-01-01", "--end", "2015-01-01"],
         "--start 2018-01-01 is not before --end 2015-01-01"),  # the last --end counts, as for any option
        (["feed", "replay", "--bars", "synth:easy:1:5", "--stream", "features"],
         "argument --stream: 'features' is a stream of the pipeline that carries no bars: bars go on market-data"),
        (["feed", "replay", "--bars", "synth:easy:1:5", "--stream", "et-local-market-state"],
         "argument --stream: 'et-local-market-state' is a stream of the pipeline that carries no bars"),
        (["feed", "replay", "--bars", "synth:easy:1:5", "--stream", "order-intents"],
         "argument --stream: 'order-intents' is not a stream"),
        (["feed", "replay", "--bars", "synth:easy:1:5", "--bars", "arch:sp500", "--bars", "synth:easy:1:5"],
         "argument --bars: 'synth:easy:1:5' is named twice"),
        (["train", "agents", "--seed", "-1"], "argument --seed: '-1' must be an integer >= 0"),
        (["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--seed", "4294967296"],
         "argument --seed: '4294967296' must be an integer below 2**32"),
        (["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--states", "2"], "state counts >= 4"),
        (["orders", "plot", "--out", "o.txt"], "argument --out: 'o.txt': an image file ends in .png"),
        (["evaluate", "agents", "--bars", "arch:sp500", "--plot", "e.txt"], "argument --plot: 'e.txt'"),
        (["regime", "evaluate", "--plot", "r.txt"], "argument --plot: 'r.txt'"),
        (["local", "up", "--stage", "Bad Stage!"], "argument --stage: 'Bad Stage!': a stage is 1-20 lower-case"),
        (["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--states", "4,x"], "argument --states: '4,x'"),
        (["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--states", "1"], "state counts >= 4"),
        (["regime", "evaluate", "--bars", "0"], "argument --bars: '0' must be an integer >= 175"),
        (["regime", "evaluate", "--methods", "ours", "bogus"], "argument --methods: invalid choice: 'bogus'"),
    ],
)
def test_bad_numbers_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_compact_iso_dates_are_read_as_dates_in_every_window():
    """``20150101`` is 2015-01-01 (as for ``data synth --start``), not a year numpy refuses."""
    from ensemble_trader.cli import build_parser

    args = build_parser().parse_args(["backtest", "--bars", "arch:sp500", "--start", "20150101", "--end", "2016"])
    assert (args.start, args.end) == ("20150101", "2016")
    args = build_parser().parse_args(["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--end", "20070101"])
    assert args.end == "20070101"


@pytest.mark.parametrize(
    "argv",
    [
        ["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--end", "2003-01-01", "--start", "2005-01-01",
         "--end", "2010-01-01"],
        ["backtest", "--bars", "arch:sp500", "--end", "2003-01-01", "--start", "2005-01-01", "--end", "2010-01-01"],
        ["evaluate", "agents", "--bars", "arch:sp500", "--start", "2011-01-01", "--end", "2010-01-01",
         "--start", "2005-01-01"],
    ],
)
def test_a_repeated_window_bound_is_checked_with_its_last_value(argv):
    """argparse keeps the last of a repeated option: the window is checked once every argument is
    read, so an earlier value that the later one replaced neither refuses a valid window nor is
    named in the error."""
    from ensemble_trader.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.start, args.end) == ("2005-01-01", "2010-01-01")


def test_feed_replay_takes_the_bars_stream_by_logical_or_physical_name():
    from ensemble_trader.cli import build_parser

    for stream in ("market-data", "et-dev-market-data", "my-own-bars"):
        args = build_parser().parse_args(["feed", "replay", "--bars", "synth:easy:1:5", "--stream", stream])
        assert args.stream == stream
    assert build_parser().parse_args(["feed", "replay", "--bars", "synth:easy:1:5"]).stream == "market-data"


def test_a_source_named_twice_by_another_path_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """Every bar of a source named twice would go on the stream twice."""
    (tmp_path / "spx.csv").write_text("timestamp,open,high,low,close,volume\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["feed", "replay", "--bars", "spx.csv", "--bars", str(tmp_path / "spx.csv")])
    assert exit_info.value.code == 2
    assert f"argument --bars: '{tmp_path / 'spx.csv'}' is named twice (as spx.csv)" in capsys.readouterr().err


def test_regime_evaluate_offers_the_methods_of_the_evaluation_module(capsys):
    from training.regime.evaluate import METHODS

    with pytest.raises(SystemExit):
        main(["regime", "evaluate", "--methods", "bogus"])
    err = capsys.readouterr().err
    assert all(repr(method) in err for method in METHODS)


def test_backtest_out_that_is_a_file_is_a_usage_error_before_the_run(tmp_path, capsys, monkeypatch):
    existing = tmp_path / "report.csv"
    existing.write_text("x\n")
    monkeypatch.setattr("ensemble_trader.cli.backtest._run", lambda args: pytest.fail("the backtest ran"))
    with pytest.raises(SystemExit) as exit_info:
        main(["backtest", "--bars", "synth:hard:1:300", "--out", str(existing)])
    assert exit_info.value.code == 2
    assert f"argument --out: '{existing}' is an existing file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [FileExistsError(17, "File exists", "out.csv"), IsADirectoryError(21, "Is a directory", "out"),
     PermissionError(13, "Permission denied", "out.csv")],
)
def test_os_errors_are_one_line_errors(error, capsys, monkeypatch):
    def fails(args):
        raise error

    monkeypatch.setattr("ensemble_trader.cli.local._status", fails)
    assert main(["local", "status"]) == 1
    err = capsys.readouterr().err
    assert err == f"ensemble-trader: error: {error}\n" and "Traceback" not in err


def test_regime_shading_spans_each_period_from_its_bar_to_the_next():
    """Period k runs from bar k to bar k + 1: a run of periods is shaded from its first bar to the
    bar after its last period (it was drawn one period short, a one-period run with no width)."""
    from ensemble_trader.cli.evaluate import regime_spans

    bars = [0, 1, 2, 3, 4, 5]
    labels = ["BULL", "BULL", "BEAR", "SIDEWAYS", "SIDEWAYS"]
    assert regime_spans(bars, labels) == [(0, 2, "BULL"), (2, 3, "BEAR"), (3, 5, "SIDEWAYS")]


def test_a_named_regime_model_that_does_not_exist_is_an_error(tmp_path, capsys):
    """Named by --regime-model, a missing folder is not silently 'no regimes'."""
    from ensemble_trader.domain.synthetic import generate
    from ensemble_trader.marketdata import write_bars_csv

    bars = tmp_path / "bars.csv"  # a bars file carries no true regimes: the model would label them
    write_bars_csv(bars, generate("easy", 300, 1).series)
    with pytest.raises(SystemExit) as exc:  # a usage error, before the bars are read
        main(["evaluate", "agents", "--bars", str(bars), "--regime-model", str(tmp_path / "none")])
    assert exc.value.code == 2 and "argument --regime-model" in capsys.readouterr().err


def test_train_names_a_bad_parameter_without_pydantic_noise(tmp_path, capsys):
    """A check of the whole configuration printed 'bad training parameters: : Value error, ...'."""
    from ensemble_trader.cli import main

    code = main(["train", "agents", "--quick", "--no-progress", "--out", str(tmp_path / "m"),
                 "--hp", 'rewards={"contrarian": {"eta": 0.1}}'])
    err = capsys.readouterr().err
    assert code == 1 and "rewards[contrarian]" in err
    assert ": :" not in err and "Value error" not in err
