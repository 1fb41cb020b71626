"""``feed replay`` reports the symbols it actually put (review).

ReplayResult.symbols listed every series given, so ``feed replay --limit 1`` over the S&P 500 and
the NASDAQ printed 'put 1 bars of SPX, IXIC' when no IXIC bar was sent."""

from __future__ import annotations

import json

import pytest
from ensemble_trader.adapters.memory import MemoryStreamPublisher
from ensemble_trader.cli import main
from ensemble_trader.cli.feed import replay_bars
from ensemble_trader.marketdata import load_arch
from ensemble_trader.runtime.aggregation import messages_of
from test_local_review import _Publisher, publisher  # noqa: F401  (the stub and its fixture)


def _put_symbols(stream: MemoryStreamPublisher) -> list[str]:
    return [json.loads(m)["symbol"] for _, data in stream.streams.get("market-data", []) for m in messages_of(data)]


def test_a_limit_that_stops_before_a_symbol_does_not_report_it():
    stream = MemoryStreamPublisher()
    series = [load_arch("sp500")[:50], load_arch("nasdaq")[:50]]  # the same days: SPX first at each
    result = replay_bars(series, stream, "market-data", limit=1)
    assert _put_symbols(stream) == ["SPX"]
    assert result.symbols == ("SPX",)
    assert result.bars_by_symbol == {"SPX": 1}
    assert result.unsent == ("IXIC",)


def test_the_counts_per_symbol_are_the_bars_sent():
    stream = MemoryStreamPublisher()
    series = [load_arch("nasdaq")[:40], load_arch("sp500")[:50]]
    result = replay_bars(series, stream, "market-data", limit=61, inject=[("X", b"not a bar")])
    put = _put_symbols_and_garbage(stream)
    assert result.bars == len(put) == 62  # the injected record counts as put, as before
    assert result.injected == 1
    assert result.bars_by_symbol == {s: put.count(s) for s in ("IXIC", "SPX")}
    assert sum(result.bars_by_symbol.values()) == 61
    assert set(result.symbols) == {"IXIC", "SPX"} and result.unsent == ()


def _put_symbols_and_garbage(stream: MemoryStreamPublisher) -> list[str]:
    out = []
    for _, data in stream.streams["market-data"]:
        for m in messages_of(data):
            try:
                out.append(json.loads(m)["symbol"])
            except ValueError:
                out.append("<injected>")
    return out


def test_an_empty_series_is_not_reported_as_sent():
    stream = MemoryStreamPublisher()
    result = replay_bars([load_arch("sp500")[:3], load_arch("nasdaq")[:0]], stream, "market-data")
    assert result.symbols == ("SPX",) and result.unsent == ("IXIC",)


@pytest.mark.usefixtures("publisher")
def test_feed_replay_with_a_limit_prints_only_the_symbols_sent(capsys):
    assert main(["feed", "replay", "--no-progress", "--bars", "arch:sp500", "--bars", "arch:nasdaq",
                 "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert [json.loads(data)["symbol"] for _, records in _Publisher.puts for _, data in records] == ["SPX"]
    assert "put 1 bars of SPX on " in out
    assert "IXIC" not in out.splitlines()[0]
    assert "not sent (--limit 1 reached before their first bar): IXIC" in out


@pytest.mark.usefixtures("publisher")
def test_feed_replay_prints_the_bars_of_each_symbol(capsys):
    assert main(["feed", "replay", "--no-progress", "--bars", "synth:realistic:1:50",
                 "--bars", "synth:realistic:2:30:SYNB"]) == 0
    out = capsys.readouterr().out
    assert "put 80 bars of SYN, SYNB on " in out
    assert "bars per symbol: SYN 50, SYNB 30" in out
    assert "not sent" not in out
