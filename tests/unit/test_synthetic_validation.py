"""The synthetic generator and the bar files refuse bad input with a DataError naming it.

Every case failed before: a symbol with a trailing line break passed ``re.match`` (the pattern's
``$`` matches before a final "\\n"), so ``data synth`` wrote a bars.csv no reader takes; a
non-string symbol, start or scenario raised a bare TypeError; NaN or infinite parameters, and
several fields nobody checked, gave NaN prices, a math domain error, a TypeError or a
LinAlgError; a start with digits past the microsecond was truncated silently.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.cli import main
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import SCENARIOS, RegimeParams, bar_times, generate
from ensemble_trader.marketdata import read_bars_csv, write_bars_csv

GOOD = {"drift": 0.0, "vol": 0.01, "dwell": 10.0}
EASY = SCENARIOS["easy"]


# --- symbol, start, scenario -------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["SYN\n", None, 5, b"SYN"])
def test_generate_refuses_a_symbol_that_is_not_one_whole_ticker(symbol):
    with pytest.raises(DataError, match=re.escape(f"symbol={symbol!r}: not a valid symbol")):
        generate("easy", 10, 1, symbol=symbol)


def test_data_synth_with_a_line_break_after_the_symbol_exits_1_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["data", "synth", "--scenario", "easy", "--bars", "10", "--symbol", "SYN\n", "--out", str(out)]) == 1
    assert "symbol='SYN\\n'" in capsys.readouterr().err
    assert not (out / "bars.csv").exists()


def _bars_file(path: Path) -> Path:
    path.write_text("timestamp,open,high,low,close,volume\n2024-01-02T00:00:00Z,10,11,9,10.5,100\n")
    return path


@pytest.mark.parametrize("symbol", ["SYN\n", 5])
def test_the_readers_symbol_argument_is_one_whole_ticker(tmp_path, symbol):
    with pytest.raises(DataError, match=re.escape(f"symbol {symbol!r}: not a valid symbol")):
        read_bars_csv(_bars_file(tmp_path / "bars.csv"), symbol=symbol)


def test_a_file_name_ending_in_a_line_break_gives_no_symbol(tmp_path):
    with pytest.raises(DataError, match=re.escape("symbol 'SYN\\n', taken from the file name, is not a valid")):
        read_bars_csv(_bars_file(tmp_path / "syn\n.csv"))


def test_a_series_whose_symbol_ends_in_a_line_break_is_not_written(tmp_path):
    series = generate("easy", 5, 1).series
    bad = BarSeries("SYN\n", series.timestamp, series.open, series.high, series.low, series.close, series.volume)
    out = tmp_path / "bars.csv"
    with pytest.raises(DataError, match=re.escape("symbol 'SYN\\n': not a valid symbol")):
        write_bars_csv(out, [bad], symbol_column=True)
    assert not out.exists()


@pytest.mark.parametrize("start", [None, 20000103, np.datetime64("2000-01-03")])
def test_a_start_that_is_not_text_is_a_data_error(start):
    with pytest.raises(DataError, match=re.escape(f"start={start!r}: must be ISO-8601 text")):
        generate("easy", 10, 1, start=start)


def test_a_start_with_digits_past_the_microsecond_is_refused_not_truncated():
    for start in ("2000-01-03T00:00:00.1234567", "2000-01-03 00:00:00,0000001+00:00", "20000103T000000.1234567"):
        with pytest.raises(DataError, match=re.escape(f"start={start!r}: has digits past the microsecond")):
            generate("easy", 10, 1, start=start)
        with pytest.raises(DataError, match="past the microsecond"):
            bar_times(start, "1s", 2)
    # zeros past the microsecond lose nothing: taken as before
    times = bar_times("2000-01-03T00:00:00.1234560", "1s", 2)
    assert times[0] == np.datetime64("2000-01-03T00:00:00.123456", "ns")


@pytest.mark.parametrize("scenario", [["easy"], {"easy": 1}])
def test_a_scenario_that_cannot_be_a_name_is_a_data_error(scenario):
    with pytest.raises(DataError, match=re.escape(f"unknown scenario {scenario!r}")):
        generate(scenario, 10, 1)


# --- RegimeParams --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("garch_alpha", math.nan, "alpha + beta + gamma/2 < 1"),
        ("garch_beta", math.nan, "alpha + beta + gamma/2 < 1"),
        ("garch_gamma", math.nan, "alpha + beta + gamma/2 < 1"),
        ("level_vol", math.inf, "must be in [0, 0.5) per bar"),
        ("level_vol", 0.5, "must be in [0, 0.5) per bar"),
        ("volume_level", math.nan, "must be finite"),
        ("volume_level", -math.inf, "must be finite"),
        ("dwell", math.inf, "must be a finite number of bars >= 1"),
        ("drift", False, "must be a number"),
        ("drift", "0.01", "must be a number"),
        ("dwell", True, "must be a number"),
        ("mean_reversion", False, "must be a number"),
        ("level_vol", False, "must be a number"),
        ("garch_beta", False, "must be a number"),
        ("volume_level", np.True_, "must be a number"),
        ("vol", None, "must be a number"),
    ],
)
def test_regime_params_refuse_a_value_out_of_range_naming_the_field_and_value(field, value, reason):
    with pytest.raises(DataError, match=re.escape(f"{field}={value!r}") + ".*" + re.escape(reason)):
        RegimeParams(**{**GOOD, field: value})


# --- ScenarioSpec --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("start_price", -1.0, "must be finite and > 0"),
        ("start_price", 0.0, "must be finite and > 0"),
        ("start_price", math.nan, "must be finite and > 0"),
        ("start_price", math.inf, "must be finite and > 0"),
        ("start_price", True, "must be a number"),
        ("base_volume", -5.0, "must be finite and > 0"),
        ("base_volume", math.nan, "must be finite and > 0"),
        ("volume_sigma", math.nan, "must be finite and >= 0"),
        ("volume_sigma", -0.1, "must be finite and >= 0"),
        ("volume_sigma", math.inf, "must be finite and >= 0"),
        ("volume_response", math.inf, "must be finite and >= 0"),
        ("volume_response", math.nan, "must be finite and >= 0"),
        ("volume_response", -0.2, "must be finite and >= 0"),
        ("volume_persistence", math.nan, "must be in [0, 1)"),
        ("volume_persistence", False, "must be a number"),
        ("intrabar_steps", 1, "must be an integer >= 2"),
        ("intrabar_steps", 2.5, "must be an integer >= 2"),
        ("intrabar_steps", True, "must be an integer >= 2"),
        ("intrabar_steps", "24", "must be an integer >= 2"),
        ("tail_df", "6", "must be a number"),
        ("tail_df", True, "must be a number"),
        ("gap_scale", False, "must be a number"),
        ("description", 5, "must be a string"),
    ],
)
def test_scenario_spec_refuses_a_value_out_of_range_naming_the_field_and_value(field, value, reason):
    with pytest.raises(DataError, match=re.escape(f"scenario 'easy': {field}={value!r}") + ".*" + re.escape(reason)):
        dataclasses.replace(EASY, **{field: value})


@pytest.mark.parametrize("name", [None, "", 7])
def test_a_scenario_name_is_a_non_empty_string(name):
    with pytest.raises(DataError, match=re.escape(f"scenario name={name!r}: must be a non-empty string")):
        dataclasses.replace(EASY, name=name)


def test_regimes_must_be_four_regime_params():
    regimes = (*EASY.regimes[:3], dict(GOOD))
    with pytest.raises(DataError, match="regimes=.*must be four RegimeParams"):
        dataclasses.replace(EASY, regimes=regimes)


@pytest.mark.parametrize(
    "weights",
    [
        ((0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, True, 0)),  # a bool is no weight
        ((0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 0)),  # ragged (numpy raised ValueError)
        ((0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, "1", 0)),
    ],
)
def test_exit_weights_must_be_a_4x4_of_numbers(weights):
    with pytest.raises(DataError, match=re.escape(f"exit_weights={weights!r}: must be a 4x4 of finite weights >= 0")):
        dataclasses.replace(EASY, exit_weights=weights)


def test_exit_weights_that_split_the_chain_in_two_are_refused_naming_the_groups():
    # BULL <-> BEAR and SIDEWAYS <-> VOLATILE never meet: no single long-run share (LinAlgError)
    weights = ((0, 1, 0, 0), (1, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0))
    with pytest.raises(DataError, match=re.escape("never leaves, (BULL, BEAR) and (SIDEWAYS, VOLATILE)")):
        dataclasses.replace(EASY, exit_weights=weights)
    # a regime only left (a transient one) still leaves one group: accepted, its long-run share 0
    spec = dataclasses.replace(EASY, exit_weights=((0, 1, 0, 0), (0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 1, 0)))
    assert spec.stationary()[0] == pytest.approx(0.0, abs=1e-12)


def test_parameters_in_range_that_overflow_float64_over_the_series_are_a_data_error(monkeypatch):
    # a drift of 0.09 a bar is in range; 20,000 bars of it is e^1800, past float64 (inf closes)
    steep = dataclasses.replace(EASY, name="steep", regimes=(RegimeParams(0.09, 0.01, 50.0),) * 4)
    monkeypatch.setitem(SCENARIOS, "steep", steep)
    with pytest.raises(DataError, match=r"scenario 'steep', seed 1: bar \d+ is out of float64's range \(open="):
        generate("steep", 20_000, 1)
    assert np.isfinite(generate("steep", 5_000, 1).series.close).all()
