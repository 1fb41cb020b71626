"""``feed replay`` refuses bars dated after now plus the stages' allowed lead (review).

The features stage dead-letters a bar dated more than ``MAX_LEAD_SECONDS`` (300 s) after it
reached the stream. ``synth:realistic:7:12000`` runs from 2000-01-03 to 2032-11-09: the replay put
all 12,000 bars and reported them put, and the stage dead-lettered 2,172 of them. Now nothing is
put and the error names how many bars lie in the future, the first of them and the ``--limit``
(or the smaller bar count) that keeps them out.
"""

from __future__ import annotations

import re
import types
from datetime import UTC, datetime

import numpy as np
import pytest
from ensemble_trader.adapters.memory import MemoryStreamPublisher
from ensemble_trader.cli import feed, main
from ensemble_trader.cli.feed import replay_bars
from ensemble_trader.domain.errors import DataError
from ensemble_trader.marketdata import load_arch, load_bars
from ensemble_trader.runtime.stage import MAX_LEAD_SECONDS

from tests.unit.test_local_review import _Publisher  # records what would be put

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()
SPEC = "synth:realistic:7:12000"  # daily bars 2000-01-03 ... 2032-11-09
IN_TIME = 9_828  # 2000-01-03 ... 2026-11-29: the bars dated before NOW


def _ns(when: float) -> np.int64:
    return np.int64(round(when * 1e9))


def _put(stream: MemoryStreamPublisher) -> int:
    return sum(1 for _ in stream.streams.get("market-data", []))


def test_a_source_reaching_past_now_is_refused_and_nothing_is_put():
    series = load_bars(SPEC)
    stream = MemoryStreamPublisher()
    with pytest.raises(DataError) as info:
        replay_bars(series, stream, "market-data", now=lambda: NOW)
    message = str(info.value)
    assert message.startswith(f"{12_000 - IN_TIME:,} of the 12,000 bars to put are dated more than 300 s after now "
                              "(2026-11-29T12:00:00Z), the first SYN 2026-11-30T00:00:00Z")
    assert f"--limit {IN_TIME}" in message and f"its first {IN_TIME:,} of 12,000 bars" in message
    assert "2000-01-03" in message
    assert _put(stream) == 0


def test_the_suggested_limit_puts_every_bar_up_to_now():
    series = load_bars(SPEC)
    stream = MemoryStreamPublisher()
    result = replay_bars(series, stream, "market-data", limit=IN_TIME, now=lambda: NOW)
    assert result.bars == IN_TIME
    last = series[0].timestamp[IN_TIME - 1].astype("datetime64[ns]").astype(np.int64)
    assert last <= _ns(NOW) < series[0].timestamp[IN_TIME].astype("datetime64[ns]").astype(np.int64)
    with pytest.raises(DataError, match=f"^1 of the {IN_TIME + 1:,} bars"):
        replay_bars(series, MemoryStreamPublisher(), "market-data", limit=IN_TIME + 1, now=lambda: NOW)


def test_a_bar_within_the_stages_lead_is_put_and_one_beyond_it_is_not():
    series = load_bars("synth:realistic:1:10")
    last = int(series[0].timestamp[-1].astype("datetime64[ns]").astype(np.int64)) / 1e9
    within = replay_bars(series, MemoryStreamPublisher(), "market-data", now=lambda: last - MAX_LEAD_SECONDS)
    assert within.bars == 10  # dated exactly the allowed lead ahead: the stage takes it
    with pytest.raises(DataError, match=r"^1 of the 10 bars .* --limit 9 "):
        replay_bars(series, MemoryStreamPublisher(), "market-data", now=lambda: last - MAX_LEAD_SECONDS - 1)
    # a stage configured with another lead: the replay can be told
    with pytest.raises(DataError, match="more than 60 s after now"):
        replay_bars(series, MemoryStreamPublisher(), "market-data", now=lambda: last - 61, max_lead_seconds=60)


def test_several_sources_are_counted_together_and_named():
    series = [load_arch("sp500"), *load_bars(SPEC)]
    with pytest.raises(DataError) as info:
        replay_bars(series, MemoryStreamPublisher(), "market-data", now=lambda: NOW)
    message = str(info.value)
    n = len(series[0])
    assert message.startswith(f"{12_000 - IN_TIME:,} of the {n + 12_000:,} bars")
    assert f"--limit {n + IN_TIME}" in message
    assert "series 2 (SYN)" in message and "series 1" not in message  # the archive ends in the past


def test_the_demos_archive_data_is_replayed_as_before():
    """cli/demo.py replays the S&P 500 and NASDAQ archives: they end in the past, so at the real
    clock (and at the test's fixed one) every bar is put."""
    series = [load_arch("sp500"), load_arch("nasdaq")]
    stream = MemoryStreamPublisher()
    result = replay_bars(series, stream, "market-data")
    assert result.bars == sum(len(s) for s in series)
    assert replay_bars(series, MemoryStreamPublisher(), "market-data", now=lambda: NOW).bars == result.bars


@pytest.fixture()
def publisher(monkeypatch):
    _Publisher.puts = []
    monkeypatch.setattr("ensemble_trader.adapters.aws.kinesis.KinesisPublisher", _Publisher)
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never real AWS, were it reached
    # the command's clock, fixed (the module's own reference to ``time`` only)
    monkeypatch.setattr(feed, "time", types.SimpleNamespace(time=lambda: NOW))
    return _Publisher


def test_feed_replay_refuses_future_bars_with_exit_1_and_puts_nothing(publisher, capsys):
    assert main(["feed", "replay", "--no-progress", "--bars", SPEC]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"error: {12_000 - IN_TIME:,} of the 12,000 bars to put are dated more than 300 s after now", err)
    assert "the first SYN 2026-11-30T00:00:00Z" in err
    assert f"--limit {IN_TIME}" in err and f"--bars {SPEC}: its first {IN_TIME:,} of 12,000 bars" in err
    assert publisher.puts == []


def test_feed_replay_with_the_suggested_limit_puts_the_bars(publisher, capsys):
    assert main(["feed", "replay", "--no-progress", "--bars", SPEC, "--limit", str(IN_TIME)]) == 0
    assert sum(len(records) for _, records in publisher.puts) == IN_TIME
    assert f"put {IN_TIME:,} bars of SYN" in capsys.readouterr().out
