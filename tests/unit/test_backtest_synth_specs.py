"""One reader of ``synth:`` data specs (``marketdata.parse_synth_spec``) for every command:
``evaluate agents`` (``engine.load_series``, which keeps the true regimes) and ``backtest``
(``marketdata.load_bars``) refuse the same malformed specs with the same one-line error, and
generate the same bars under the same default symbol, SYN."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.backtest.engine import load_series
from ensemble_trader.cli import main
from ensemble_trader.domain.errors import DataError
from ensemble_trader.marketdata import SynthSpec, load_bars, parse_synth_spec

BAD_SPECS = {
    "synth:realistic:²": "expected synth:<scenario>[:<seed>[:<bars>[:<symbol>]]] with integer seed and bars",
    "synth:realistic:1:٣٠٠": "expected synth:<scenario>",  # Arabic-Indic digits: str.isdigit() says yes
    "synth:": "expected synth:<scenario>",
    "synth::1": "expected synth:<scenario>",
    "synth:realistic:x": "expected synth:<scenario>",
    "synth:realistic:1:-5": "expected synth:<scenario>",
    "synth:realistic:1:300:SYM:extra": "expected synth:<scenario>",
    "synth:realistic:1:0": "n_bars=0: must be an integer >= 1",
    "synth:no_such_preset:1:300": "unknown scenario 'no_such_preset'",
    "synth:realistic:1:300:bad symbol": "symbol='bad symbol': not a valid symbol",
}


@pytest.mark.parametrize("spec", list(BAD_SPECS))
def test_both_commands_refuse_a_bad_synth_spec_alike(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "agents", "--bars", spec]) == 1
    evaluate_err = capsys.readouterr().err
    assert main(["backtest", "--bars", spec]) == 1
    backtest_err = capsys.readouterr().err
    assert evaluate_err == backtest_err
    assert evaluate_err.startswith("ensemble-trader: error: ") and BAD_SPECS[spec] in evaluate_err
    assert evaluate_err.count("\n") == 1  # one line, no traceback


def test_parse_synth_spec_reads_the_parts_and_their_defaults():
    assert parse_synth_spec("synth:hard") == SynthSpec("hard", 0, 2_000, "SYN")
    assert parse_synth_spec("synth:hard:7:300:ABC", default_bars=9) == SynthSpec("hard", 7, 300, "ABC")
    assert parse_synth_spec("synth:hard:7", default_bars=9) == SynthSpec("hard", 7, 9, "SYN")
    assert parse_synth_spec("arch:sp500") is None and parse_synth_spec("synthetic.csv") is None
    with pytest.raises(DataError, match="'synth:hard:²'"):
        parse_synth_spec("synth:hard:²")


def test_both_loaders_give_the_same_series_with_the_documented_default_symbol():
    series, regimes = load_series("synth:realistic:4:300")
    (loaded,) = load_bars("synth:realistic:4:300")
    assert series.symbol == loaded.symbol == "SYN"
    np.testing.assert_array_equal(series.close, loaded.close)
    np.testing.assert_array_equal(series.timestamp, loaded.timestamp)
    assert regimes is not None and len(regimes) == 300
    assert len(load_series("synth:realistic:4", synthetic_bars=250)[0]) == 250
