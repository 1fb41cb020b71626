"""``feed replay``'s pace and merge (review): a rate is 0 or at least one bar a day, and bars
merge by time whatever the datetime64 unit they were built with."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ensemble_trader.adapters.memory import MemoryStreamPublisher
from ensemble_trader.cli import main
from ensemble_trader.cli.feed import MIN_RATE, interleave, replay_bars
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import generate

from tests.unit.test_local_review import _Publisher


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"the replay slept {seconds!r} s")


@pytest.mark.parametrize("rate", [1e-300, 1e-9, MIN_RATE / 2, -1.0, float("nan"), float("inf")])
def test_replay_bars_refuses_a_rate_below_one_bar_a_day_before_putting(rate: float) -> None:
    """1e-300 died in an OverflowError from time.sleep; 1e-9 slept 31 years after the first bar."""
    stream = MemoryStreamPublisher()
    with pytest.raises(DataError, match=r"^rate=.*: must be 0 \(as fast as possible\) or a finite number >= 1/86400"):
        replay_bars([generate("easy", 3, 0).series], stream, "market-data", rate=rate, sleep=_no_sleep)
    assert not stream.streams.get("market-data")


def test_one_bar_a_day_is_taken_and_paced() -> None:
    waits: list[float] = []
    clock = iter(range(100))
    result = replay_bars([generate("easy", 3, 0).series], MemoryStreamPublisher(), "market-data", rate=MIN_RATE,
                         sleep=waits.append, clock=lambda: float(next(clock)))
    assert result.bars == 3
    assert waits == [pytest.approx(86_400 - 2), pytest.approx(2 * 86_400 - 3)]


@pytest.fixture()
def publisher(monkeypatch: pytest.MonkeyPatch) -> type[_Publisher]:
    _Publisher.puts = []
    monkeypatch.setattr("ensemble_trader.adapters.aws.kinesis.KinesisPublisher", _Publisher)
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never real AWS, were it reached
    return _Publisher


@pytest.mark.parametrize("text", ["1e-300", "1e-9", "-1", "inf"])
def test_feed_replay_rate_below_one_bar_a_day_is_a_usage_error(
    publisher: type[_Publisher], capsys: pytest.CaptureFixture[str], text: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["feed", "replay", "--no-progress", "--bars", "synth:easy:0:3", "--rate", text])
    assert info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"argument --rate: {text!r} must be" in err
    assert publisher.puts == []


def test_interleave_merges_series_built_with_different_datetime64_units_by_time() -> None:
    """A series of datetime64[D] was merged by its raw int64 (days) against another's
    nanoseconds: all of A's bars went before B's 2020-01-02 bar."""
    one, two = np.ones(2), np.ones(1)
    a = BarSeries("A", np.array(["2020-01-01", "2020-01-03"], "datetime64[D]"), one, one * 2, one * 0.5, one, one)
    b = BarSeries("B", np.array(["2020-01-02"], "datetime64[ns]"), two, two * 2, two * 0.5, two, two)
    merged = [(symbol, json.loads(data)["timestamp"]) for symbol, data in interleave([a, b])]
    assert merged == [("A", "2020-01-01T00:00:00Z"), ("B", "2020-01-02T00:00:00Z"), ("A", "2020-01-03T00:00:00Z")]
