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
        (["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--states", "4,x"], "argument --states: '4,x'"),
        (["regime", "fit", "--bars", "arch:sp500", "--out", "m", "--states", "1"], "state counts >= 2"),
        (["regime", "evaluate", "--bars", "0"], "argument --bars: '0' must be an integer >= 1"),
    ],
)
def test_bad_numbers_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
