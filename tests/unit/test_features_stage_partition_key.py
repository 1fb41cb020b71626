"""The features stage and a record's partition key (review).

Our feed puts each bar with its symbol as the Kinesis partition key, so a symbol's bars share a
shard and arrive in order. The stage never looked at the key: a producer putting bars under
other keys (random keys, a venue's name) spread a symbol over shards, its bars arrived out of
order across concurrent shard batches and were dead-lettered as late with nothing naming the
cause. Such bars are still applied (they are valid), but each is counted
(``features_foreign_partition_keys``), one warning per batch names the symbols and their keys,
and a late letter of such a bar names its key."""

from __future__ import annotations

import base64
import copy
import json
import logging
from pathlib import Path

import pytest
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.models import FeatureVector
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime.features_stage import FeaturesStep
from ensemble_trader.runtime.stage import KinesisStageRunner, StageStats, StreamSink

EVENTS = Path(__file__).resolve().parents[2] / "events"
ARRIVAL = 1_735_801_200.0  # the samples' arrival time (2025-01-02)
WARNING = "came with a partition key other than their symbol"


class Metrics:
    def __init__(self) -> None:
        self.counts: dict[str, float] = {}

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.counts[name] = self.counts.get(name, 0) + value


def make_runner():
    dlq, pub, metrics = MemoryDeadLetters(), MemoryStreamPublisher(), Metrics()
    runner = KinesisStageRunner(FeaturesStep(), cache=MemoryCache(), dlq=dlq, sink=StreamSink(pub, "features"),
                                snapshots=MemoryKeyValueStore(), stats=StageStats(), metrics=metrics)
    return runner, dlq, pub, metrics


def sample(name: str = "kinesis-market-data.json") -> dict:
    return json.loads((EVENTS / name).read_text())


def with_keys(event: dict, keys: list[str]) -> dict:
    event = copy.deepcopy(event)
    for record, key in zip(event["Records"], keys, strict=True):
        record["kinesis"]["partitionKey"] = key
    return event


def bar_record(day: int, key: str, seq: int, symbol: str = "SPX") -> dict:
    bar = dict(symbol=symbol, timestamp=f"2024-01-{day:02d}T00:00:00Z", open=100.0 + day, high=101.0 + day,
               low=99.0 + day, close=100.5 + day, volume=1000.0)
    return kinesis_record(json.dumps(bar).encode(), partition_key=key, sequence_number=f"{seq:056d}",
                          stream="market-data", arrival=ARRIVAL)


def vectors(pub: MemoryStreamPublisher) -> list[FeatureVector]:
    return [FeatureVector.parse(data) for _, data in pub.streams["features"]]


def test_the_sample_event_keyed_by_symbol_raises_nothing(caplog):
    runner, dlq, pub, metrics = make_runner()
    with caplog.at_level(logging.WARNING):
        assert runner.process(sample()) == {"batchItemFailures": []}
    assert len(vectors(pub)) == 6 and dlq.letters == []
    assert runner.stats.foreign_keys == 0 and "features_foreign_partition_keys" not in metrics.counts
    assert WARNING not in caplog.text


def test_bars_under_other_keys_are_applied_counted_and_named_in_one_warning(caplog):
    """The sample event with a foreign producer's keys: the same vectors as under the symbols'
    keys, nothing dead-lettered, six counted, one warning naming each symbol and its keys."""
    runner, _, reference, _ = make_runner()
    runner.process(sample())
    runner, dlq, pub, metrics = make_runner()
    event = with_keys(sample(), ["venue-a", "venue-a", "7f3c", "venue-a", "e91b", "venue-a"])
    with caplog.at_level(logging.WARNING):
        assert runner.process(event) == {"batchItemFailures": []}
    assert [v.model_dump() for v in vectors(pub)] == [v.model_dump() for v in vectors(reference)]
    assert dlq.letters == []
    assert runner.stats.foreign_keys == 6 and metrics.counts["features_foreign_partition_keys"] == 6
    warnings = [r for r in caplog.records if WARNING in r.getMessage()]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "6 messages of 2 symbols" in text
    assert "SPX under 'venue-a' x1, '7f3c' x1, 'e91b' x1" in text
    assert "IXIC under 'venue-a' x3" in text
    assert "out of order" in text and "dead-lettered as late" in text
    assert warnings[0].foreign_partition_keys == {"SPX": {"venue-a": 1, "7f3c": 1, "e91b": 1}, "IXIC": {"venue-a": 3}}


def test_only_the_records_under_another_key_are_counted(caplog):
    runner, _, pub, metrics = make_runner()
    event = with_keys(sample(), ["SPX", "IXIC", "SPX", "nasdaq", "SPX", "IXIC"])
    with caplog.at_level(logging.WARNING):
        runner.process(event)
    assert len(vectors(pub)) == 6
    assert runner.stats.foreign_keys == 1 and metrics.counts["features_foreign_partition_keys"] == 1
    assert "1 messages of 1 symbols came with a partition key other than their symbol (IXIC under 'nasdaq' x1)" \
        in caplog.text
    assert "SPX under" not in caplog.text


def test_every_bar_of_a_packed_record_under_another_key_is_counted():
    """An aggregated record (the sample packs ten bars of one index to a record) carries one key
    for all of its bars."""
    event = sample("kinesis-market-data-packed.json")
    runner, dlq, pub, metrics = make_runner()
    keys = ["feed-1"] * len(event["Records"])
    assert runner.process(with_keys(event, keys)) == {"batchItemFailures": []}
    assert len(vectors(pub)) == 24 and dlq.letters == []
    assert runner.stats.foreign_keys == 24 and metrics.counts["features_foreign_partition_keys"] == 24


def test_an_invalid_record_under_another_key_is_dead_lettered_as_before_and_not_counted():
    event = sample("kinesis-market-data-bad-record.json")
    runner, dlq, pub, _ = make_runner()
    bars = [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]
    bad = [i for i, bar in enumerate(bars) if bar["low"] > bar["open"]]
    assert len(bad) == 1  # the sample's bad record: low above open
    keys = [r["kinesis"]["partitionKey"] for r in event["Records"]]
    for i in bad:
        keys[i] = "somewhere-else"
    runner.process(with_keys(event, keys))
    assert len(dlq.letters) == 1 and "low=" in dlq.reasons[0] and "partition key" not in dlq.reasons[0]
    assert runner.stats.foreign_keys == 0


def test_a_bar_another_key_made_late_is_dead_lettered_naming_the_key():
    """Two shards of one symbol: the batch of shard 1 (key 'venue-a') applies Jan 2-4; the bar of
    Jan 3 under key 'venue-b' went to shard 2, whose batch runs after: it is late, and its letter
    says why it could be."""
    runner, dlq, pub, metrics = make_runner()
    runner.process(kinesis_event([bar_record(2, "venue-a", 1), bar_record(4, "venue-a", 2)]))
    assert runner.process(kinesis_event([bar_record(3, "venue-b", 3)])) == {"batchItemFailures": []}
    assert runner.stats.late == 1 and len(dlq.letters) == 1
    reason = dlq.reasons[0]
    assert reason.startswith("late record: SPX message dated 2024-01-03T00:00:00+00:00 arrived after the one dated "
                             "2024-01-04T00:00:00+00:00 was applied")
    assert "its record's partition key 'venue-b' is not its symbol" in reason
    assert "use the symbol as the partition key" in reason
    assert len(vectors(pub)) == 2 and metrics.counts["features_foreign_partition_keys"] == 3


def test_a_late_bar_under_its_symbol_s_key_keeps_the_plain_reason():
    runner, dlq, _, _ = make_runner()
    runner.process(kinesis_event([bar_record(2, "SPX", 1), bar_record(4, "SPX", 2)]))
    runner.process(kinesis_event([bar_record(3, "SPX", 3)]))
    assert len(dlq.letters) == 1
    assert dlq.reasons[0].endswith("state moves forward only, so it is not applied")


@pytest.mark.parametrize("key", ["SPX", "spx-venue"])
def test_a_redelivery_under_any_key_stays_a_duplicate(key):
    runner, dlq, pub, _ = make_runner()
    runner.process(kinesis_event([bar_record(2, "SPX", 1)]))
    runner.process(kinesis_event([bar_record(2, key, 1)]))
    assert runner.stats.duplicates == 1 and dlq.letters == [] and len(vectors(pub)) == 1
