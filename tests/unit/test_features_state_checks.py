"""A feature state that does not fit the symbol or the engine's invariants is refused as a
StateError, never as bad data and never part-way through an update.

* Another symbol's state (current version) under a symbol's key: every bar of that symbol used
  to be dead-lettered for good as a DataError; now its records fail and are retried, as the
  regime stage does, until the state is replaced.
* A state whose exponential averages hold impossible means (a negative EWMA of squared returns,
  an EMA of closes <= 0, a mean before the first term) used to load; the next update then failed
  with a bare ValueError (sqrt or log of a negative) after changing the engine.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import DataError, StateError
from ensemble_trader.domain.features import FeatureEngine, StaleBarError
from ensemble_trader.domain.models import Bar
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.marketdata import load_arch
from ensemble_trader.runtime.features_stage import FeaturesStep
from ensemble_trader.runtime.stage import (
    SNAPSHOT_TABLE,
    KinesisStageRunner,
    StageStats,
    StreamSink,
    encode_cached,
)

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def bar(symbol: str, day: int, close: float = 10.5) -> Bar:
    return Bar(symbol=symbol, timestamp=T0 + timedelta(days=day), open=10, high=11, low=9, close=close, volume=1)


def engine_after(symbol: str, n: int) -> FeatureEngine:
    engine = FeatureEngine(symbol)
    for i in range(n):
        engine.update(bar(symbol, i - 1000, close=10 + (i % 7) * 0.1))
    return engine


class Runner:
    def __init__(self, snapshots: bool):
        self.cache, self.dlq, self.pub = MemoryCache(), MemoryDeadLetters(), MemoryStreamPublisher()
        self.snapshots = MemoryKeyValueStore() if snapshots else None
        self.runner = KinesisStageRunner(FeaturesStep(), cache=self.cache, dlq=self.dlq,
                                         sink=StreamSink(self.pub, "features"), snapshots=self.snapshots,
                                         stats=StageStats())
        self.seq = 0

    def send(self, bars: list[Bar]) -> list[str]:
        records = []
        for b in bars:
            records.append(kinesis_record(b.model_dump_json().encode(), partition_key=b.symbol,
                                          sequence_number=f"{self.seq:020d}", stream="market-data", arrival=1.9e9))
            self.seq += 1
        result = self.runner.process(kinesis_event(records))
        return [f["itemIdentifier"] for f in result["batchItemFailures"]]


@pytest.mark.parametrize("where", ["cache", "snapshot"])
def test_another_symbols_state_under_a_key_fails_the_records_for_retry_not_the_dlq(where, caplog):
    stage = Runner(snapshots=where == "snapshot")
    foreign = engine_after("IXIC", 5).to_bytes()  # intact, current version: it loads
    if where == "cache":
        stage.cache.data["features:SPX"] = encode_cached(1, foreign)
    else:
        stage.snapshots.put_item(SNAPSHOT_TABLE, {"pk": "features", "sk": "SPX", "version": 1, "sequence": 0,
                                                  "state": foreign}, expected_version=None)
    failed = stage.send([bar("SPX", d) for d in range(3)] + [bar("AAA", 0)])
    assert failed == [f"{i:020d}" for i in range(3)]  # retried (before: all three dead-lettered, for good)
    assert stage.dlq.letters == []
    assert [k for k, _ in stage.pub.streams["features"]] == ["AAA"]  # the other symbols go on
    assert "feature state of IXIC is stored under the key of SPX" in caplog.text
    # the stored state is untouched, so the records fail again until it is replaced
    assert stage.send([bar("SPX", 0)]) == [f"{4:020d}"]
    # replaced (here: deleted, so the symbol starts afresh), the retried records go through
    stage.cache.data.pop("features:SPX", None)
    if stage.snapshots is not None:
        stage.snapshots.tables[SNAPSHOT_TABLE].clear()
    assert stage.send([bar("SPX", d) for d in range(3)]) == []
    assert [k for k, _ in stage.pub.streams["features"]] == ["AAA", "SPX", "SPX", "SPX"]

def test_the_step_and_the_engine_raise_a_state_error_for_a_bar_of_another_symbol():
    engine = engine_after("IXIC", 3)
    before = engine.to_bytes()
    with pytest.raises(StateError, match="feature state of IXIC is stored under the key of SPX"):
        FeaturesStep().apply(engine, bar("SPX", 0))
    with pytest.raises(StateError, match="'SPX' given to the feature engine of 'IXIC'"):
        engine.update(bar("SPX", 0))
    assert engine.to_bytes() == before
    assert not issubclass(StateError, DataError)  # the runner dead-letters DataError, retries StateError


@pytest.mark.parametrize(
    ("n", "key", "pair", "message"),
    [
        (30, "ewma", lambda w, m: [w, -1e-4], "squared returns is never negative"),
        (30, "ema_fast", lambda w, m: [w, -m], "closes is always > 0"),
        (30, "ema_slow", lambda w, m: [w, 0.0], "closes is always > 0"),
        (30, "ema_slow", lambda w, m: [w, -5.0], "closes is always > 0"),
        (0, "ema_fast", lambda w, m: [0.0, 1e300], "expected \\[0.0, 0.0\\] before its first term"),
        (0, "ema_slow", lambda w, m: [2.0, 0.0], "expected \\[0.0, 0.0\\] before its first term"),
        (1, "ewma", lambda w, m: [0.0, -3.0], "expected \\[0.0, 0.0\\] before its first term"),
    ],
)
def test_impossible_means_are_refused_on_load(n, key, pair, message):
    d = engine_after("SPX", n).to_dict()
    d[key] = pair(*d[key])
    with pytest.raises(StateError, match=message):
        FeatureEngine.from_dict(json.loads(json.dumps(d)))


def test_every_state_the_engine_writes_still_loads():
    series = load_arch("sp500")
    engine = FeatureEngine("SPX")
    for i in range(400):
        for state in (engine.to_dict(), engine.to_bytes()):
            loaded = FeatureEngine.from_dict(state) if isinstance(state, dict) else FeatureEngine.from_bytes(state)
            assert loaded.to_bytes() == engine.to_bytes()
        engine.update(series.bar(i))
    assert FeatureEngine.from_bytes(FeatureEngine.restart("SPX", 10**18).to_bytes()).bars_seen == 0
    flat = engine_after("SPX", 0)  # all returns 0: the EWMA of squared returns stays exactly 0
    for i in range(5):
        flat.update(bar("SPX", i, close=10.0))
    assert flat.to_dict()["ewma"][1] == 0.0 and FeatureEngine.from_bytes(flat.to_bytes()).bars_seen == 5


def test_no_loaded_state_fails_its_update_with_an_unexpected_error():
    """Random bytes changed in a valid state (checksum recomputed): whatever loads steps without
    a bare ValueError (before: 9 of these 20,000 states loaded and then failed on log or sqrt)."""
    series = load_arch("sp500")
    engine = FeatureEngine("SPX")
    for i in range(300):
        engine.update(series.bar(i))
    blob = engine.to_bytes()
    next_ns = int(series.timestamp[300].astype("int64")) + 10**15
    rng = random.Random(3)
    unexpected = []
    for _ in range(20_000):
        b = bytearray(blob[:-4])
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        b += struct.pack("<I", zlib.crc32(b))
        try:
            FeatureEngine.from_bytes(bytes(b)).update_raw(next_ns, 100.0, 101.0, 99.0, 100.0, 1.0)
        except (StateError, DataError, StaleBarError):
            pass
        except Exception as exc:  # noqa: BLE001 - the point of the test
            unexpected.append(f"{type(exc).__name__}: {exc}")
    assert unexpected == []
