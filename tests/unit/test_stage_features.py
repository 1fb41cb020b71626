"""The features step inside the stage runner, with in-memory fakes and the sample events."""

from __future__ import annotations

import json
from pathlib import Path

from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.features import FeatureEngine
from ensemble_trader.domain.models import FeatureVector
from ensemble_trader.runtime.features_stage import FeaturesStep
from ensemble_trader.runtime.stage import KinesisStageRunner, StageStats, StreamSink, decode_cached

EVENTS = Path(__file__).resolve().parents[2] / "events"


def make_runner():
    cache, dlq, pub, snaps = MemoryCache(), MemoryDeadLetters(), MemoryStreamPublisher(), MemoryKeyValueStore()
    runner = KinesisStageRunner(FeaturesStep(), cache=cache, dlq=dlq, sink=StreamSink(pub, "features"),
                                snapshots=snaps, stats=StageStats())
    return runner, cache, dlq, pub


def test_sample_event_with_a_bad_record():
    runner, cache, dlq, pub = make_runner()
    event = json.loads((EVENTS / "kinesis-market-data-bad-record.json").read_text())
    assert runner.process(event) == {"batchItemFailures": []}
    vectors = [FeatureVector.parse(data) for _, data in pub.streams["features"]]
    assert [v.symbol for v in vectors] == ["SPX", "IXIC", "SPX", "IXIC", "SPX", "IXIC"]
    assert len(dlq.letters) == 1 and "low=" in dlq.reasons[0]
    _, state = decode_cached(cache.data["features:SPX"])
    engine = FeatureEngine.from_bytes(state)
    assert engine.bars_seen == 3 and engine.last_timestamp_ns == runner.step.message_sequence(vectors[4].bar)


def test_features_match_the_engine_run_directly():
    runner, _, _, pub = make_runner()
    event = json.loads((EVENTS / "kinesis-market-data.json").read_text())
    runner.process(event)
    direct = FeatureEngine("SPX")
    from ensemble_trader.marketdata import load_arch

    series = load_arch("sp500")
    expected = [direct.update(series.bar(i)).values for i in range(3)]
    got = [FeatureVector.parse(d).values for k, d in pub.streams["features"] if k == "SPX"]
    assert got == expected


def test_the_packed_sample_event_gives_the_vectors_of_its_bars_interleaved_in_time():
    runner, _, dlq, pub = make_runner()
    event = json.loads((EVENTS / "kinesis-market-data-packed.json").read_text())
    assert len(event["Records"]) == 4  # twelve bars of each index, ten to a record
    assert runner.process(event) == {"batchItemFailures": []} and dlq.letters == []
    vectors = [FeatureVector.parse(d) for _, d in pub.streams["features"]]
    assert [v.symbol for v in vectors] == ["SPX", "IXIC"] * 12
    from ensemble_trader.marketdata import load_arch

    direct = FeatureEngine("SPX")
    expected = [direct.update(load_arch("sp500").bar(i)).values for i in range(12)]
    assert [v.values for v in vectors if v.symbol == "SPX"] == expected
