"""Upgrading the feature state version on a running stage, through the stage runner with the
in-memory fakes: a stored version-1 feature state (cache entry and snapshot) is replaced by a new
engine after its last bar — warned, counted, redeliveries still duplicates, nothing dead-lettered —
while a corrupt state is still refused; the regime and meta-agent stages take the not-ready
vectors that follow ready ones without errors or spurious events."""

from __future__ import annotations

import logging
import struct
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.adapters.memory.fakes import MemoryQueuePublisher
from ensemble_trader.domain.errors import StateError
from ensemble_trader.domain.features import (
    FEATURE_VERSION,
    WARMUP_BARS,
    FeatureEngine,
    FeatureStateVersionError,
)
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.models import Bar, FeatureVector, MarketState, OrderIntent
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime.features_stage import FeaturesStep
from ensemble_trader.runtime.stage import (
    SNAPSHOT_TABLE,
    KinesisStageRunner,
    QueueSink,
    StageStats,
    StreamSink,
    decode_cached_entry,
    encode_cached,
)

from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

T0 = datetime(2020, 1, 2, tzinfo=UTC)
SYMBOL = "SPX"
KEY = f"features:{SYMBOL}"

# the version-1 byte layout (feature version 1): 61 closes and the all-time peak
_V1_CLOSES = 61
_HEADER = struct.Struct("<4sBB")
_INTS = struct.Struct("<qBq" + "HH" * 4)


def bars(n: int, start: int = 0, symbol: str = SYMBOL) -> list[Bar]:
    out, price = [], 100.0
    for i in range(start + n):
        price *= 1.0 + 0.01 * ((i * 7919) % 13 - 6) / 6
        if i >= start:
            out.append(Bar(symbol=symbol, timestamp=T0 + timedelta(days=i), open=price, high=price * 1.01,
                           low=price * 0.99, close=price * 1.002, volume=1000.0 + i))
    return out


def version_1_bytes(engine: FeatureEngine, symbol: str | None = None) -> bytes:
    """What the version-1 code stored for ``engine``'s history (its ring of 61 closes, the peak)."""
    d = engine.to_dict()
    n = d["bars_seen"]
    closes = [0.0] * _V1_CLOSES
    for j in range(max(0, n - _V1_CLOSES), n):
        closes[j % _V1_CLOSES] = d["closes"][j % len(d["closes"])]
    floats = [*closes, max(d["closes"])]
    ints = [n, 0 if d["last_timestamp_ns"] is None else 1, d["last_timestamp_ns"] or 0]
    for key in ("ewma", "ema_fast", "ema_slow", "rsi"):
        floats += d[key]
    for name in ("returns", "closes", "volumes", "gk"):
        w = d["windows"][name]
        floats += [*w["values"], w["anchor"], w["s1"], w["s2"], w["scale"]]
        ints += [w["pos"], w["count"]]
    sym = (symbol or engine.symbol).encode()
    body = _HEADER.pack(b"ETFE", 1, len(sym)) + sym + _INTS.pack(*ints) + struct.pack(f"<{len(floats)}d", *floats)
    return body + struct.pack("<I", zlib.crc32(body))


class Metrics:
    def __init__(self) -> None:
        self.values: list[tuple[str, str, float]] = []

    def count(self, name: str) -> float:
        return sum(v for n, _, v in self.values if n == name)

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.values.append((name, unit, value))


class Stage:
    """One stage's runner over in-memory ports; ``send`` numbers its records across calls."""

    def __init__(self, step, stream: str, sink_factory) -> None:
        self.cache, self.dlq, self.snapshots = MemoryCache(), MemoryDeadLetters(), MemoryKeyValueStore()
        self.bus, self.metrics, self.stats = MemoryEventBus(), Metrics(), StageStats()
        self.stream, self.seq = stream, 0
        self.sink = sink_factory()
        self.runner = KinesisStageRunner(step, cache=self.cache, dlq=self.dlq, sink=self.sink, events=self.bus,
                                         snapshots=self.snapshots, metrics=self.metrics, stats=self.stats)

    def send(self, messages) -> dict:
        records = []
        for m in messages:
            records.append(kinesis_record(m.model_dump_json().encode(), partition_key=m.symbol,
                                          sequence_number=f"{self.seq:020d}", stream=self.stream))
            self.seq += 1
        return self.runner.process(kinesis_event(records))


def features_stage() -> tuple[Stage, MemoryStreamPublisher]:
    pub = MemoryStreamPublisher()
    return Stage(FeaturesStep(), "market-data", lambda: StreamSink(pub, "features")), pub


def emitted(pub: MemoryStreamPublisher, since: int = 0) -> list[FeatureVector]:
    return [FeatureVector.parse(data) for _, data in pub.streams["features"][since:]]


def store_version_1(stage: Stage, *, in_cache: bool = True, state: bytes | None = None) -> bytes:
    """Replace the symbol's stored state (snapshot, and the cache entry or not) by its version-1
    form, keeping the versions and remembered times: what a deploy of v2 over v1 finds."""
    item = stage.snapshots.get_item(SNAPSHOT_TABLE, {"pk": "features", "sk": SYMBOL})
    old = state if state is not None else version_1_bytes(FeatureEngine.from_bytes(bytes(item["state"])))
    stage.snapshots.put_item(SNAPSHOT_TABLE, {**item, "state": old}, expected_version=item["version"])
    if in_cache:
        version, handled, _ = decode_cached_entry(stage.cache.data[KEY])
        stage.cache.data[KEY] = encode_cached(version, old, handled)
    else:
        stage.cache.data.clear()
    return old


def test_version_1_bytes_are_recognised_as_an_intact_older_state():
    engine = FeatureEngine(SYMBOL)
    for b in bars(70):
        engine.update(b)
    with pytest.raises(FeatureStateVersionError, match="version 1 != supported 2") as info:
        FeatureEngine.from_bytes(version_1_bytes(engine))
    err = info.value
    assert err.readable and err.restartable and err.symbol == SYMBOL
    assert err.last_timestamp_ns == engine.last_timestamp_ns
    # a restarted engine round-trips with its time and refuses what came before it
    restarted = FeatureEngine.from_bytes(FeatureEngine.restart(SYMBOL, err.last_timestamp_ns).to_bytes())
    assert restarted.bars_seen == 0 and restarted.last_timestamp_ns == engine.last_timestamp_ns
    assert restarted.warmup_remaining == WARMUP_BARS


@pytest.mark.parametrize("in_cache", [True, False], ids=["cache-and-snapshot", "snapshot-only"])
def test_a_version_1_state_starts_over_after_its_last_bar(in_cache, caplog):
    stage, pub = features_stage()
    history = bars(WARMUP_BARS + 20)
    assert stage.send(history) == {"batchItemFailures": []}
    assert emitted(pub)[-1].ready
    store_version_1(stage, in_cache=in_cache)

    before, duplicates = len(pub.streams["features"]), stage.stats.duplicates
    new = bars(10, start=len(history))
    with caplog.at_level(logging.WARNING, logger="ensemble_trader.runtime.stage"):
        # the last applied bar comes again (a redelivery) with the first new bars
        result = stage.send([history[-1], *new])
    assert result == {"batchItemFailures": []} and stage.dlq.letters == []
    assert stage.stats.duplicates == duplicates + 1  # still a duplicate, not applied again
    out = emitted(pub, before)
    assert [v.timestamp for v in out] == [b.timestamp for b in new]
    assert [v.warmup_remaining for v in out] == [WARMUP_BARS - k for k in range(1, 11)]
    assert not any(v.ready for v in out)
    assert stage.metrics.count("features_state_restarted") == 1 and stage.stats.restarted == 1
    warning = [r.getMessage() for r in caplog.records if "started over" in r.getMessage()]
    assert len(warning) == 1 and SYMBOL in warning[0]
    assert "version 1" in warning[0] and "version 2" in warning[0] and str(WARMUP_BARS) in warning[0]

    # the new state is stored (version 2) and the upgrade is not counted again
    item = stage.snapshots.get_item(SNAPSHOT_TABLE, {"pk": "features", "sk": SYMBOL})
    engine = FeatureEngine.from_bytes(bytes(item["state"]))
    assert engine.bars_seen == 10 and engine.last_timestamp_ns == stage.runner.step.message_sequence(new[-1])
    before = len(pub.streams["features"])
    later = bars(3, start=len(history) + 10)
    assert stage.send([new[4], *later]) == {"batchItemFailures": []}
    assert [v.timestamp for v in emitted(pub, before)] == [b.timestamp for b in later]
    assert stage.metrics.count("features_state_restarted") == 1 and stage.dlq.letters == []
    # the remembered times survived the restart: another version of a bar handled before it is a conflict
    corrected = history[-2].model_copy(update={"volume": 1.0})
    assert stage.send([corrected]) == {"batchItemFailures": []}
    assert len(stage.dlq.letters) == 1 and "conflicting record" in stage.dlq.reasons[0]


def test_a_version_1_state_whose_batch_only_redelivers_starts_over_without_moving_back():
    stage, pub = features_stage()
    history = bars(30)
    stage.send(history)
    store_version_1(stage, in_cache=False)
    before = len(pub.streams["features"])
    assert stage.send(history[-3:]) == {"batchItemFailures": []}
    assert len(pub.streams["features"]) == before and stage.dlq.letters == []
    # the cache now holds the new engine at the old last bar time: the next bar is the first
    new = bars(1, start=30)
    assert stage.send(new) == {"batchItemFailures": []}
    assert [v.warmup_remaining for v in emitted(pub, before)] == [WARMUP_BARS - 1]


def _flip_a_float(data: bytes) -> bytes:
    bad = bytearray(data)
    bad[40] ^= 0xFF
    return bytes(bad)


def _other_symbol(data: bytes) -> bytes:
    body = data[:-4].replace(b"SPX", b"SPY", 1)
    return body + struct.pack("<I", zlib.crc32(body))


def _future_version(data: bytes) -> bytes:
    body = bytearray(FeatureEngine.from_bytes(data).to_bytes()[:-4])
    body[4] = 3
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda v1, v2: _flip_a_float(v1), "checksum mismatch"),
        (lambda v1, v2: v1[:-12] + v1[-4:], "bytes before the checksum"),
        (lambda v1, v2: _future_version(v2), "version 3 != supported 2"),
        (lambda v1, v2: _other_symbol(v1), None),  # intact, but another symbol's
        (lambda v1, v2: b"garbage" * 10, "not a feature state"),
    ],
    ids=["checksum", "truncated", "newer-version", "other-symbol", "garbage"],
)
def test_a_corrupt_or_foreign_state_is_still_refused(corrupt, message):
    stage, pub = features_stage()
    history = bars(30)
    stage.send(history)
    v2 = bytes(stage.snapshots.get_item(SNAPSHOT_TABLE, {"pk": "features", "sk": SYMBOL})["state"])
    v1 = version_1_bytes(FeatureEngine.from_bytes(v2))
    bad = corrupt(v1, v2)
    stored = store_version_1(stage, state=bad)
    if message is not None:
        with pytest.raises(StateError, match=message):
            FeatureEngine.from_bytes(bad)
    before = len(pub.streams["features"])
    new = bars(3, start=30)
    result = stage.send(new)
    assert len(result["batchItemFailures"]) == 3  # retried, as before: never silently reset
    assert len(pub.streams["features"]) == before and stage.stats.restarted == 0
    assert stage.metrics.count("features_state_restarted") == 0
    item = stage.snapshots.get_item(SNAPSHOT_TABLE, {"pk": "features", "sk": SYMBOL})
    assert bytes(item["state"]) == stored


class V2Agents(RuleAgents):
    feature_version = FEATURE_VERSION


def test_regime_and_meta_agent_stages_take_the_warm_up_after_ready_vectors():
    """Ready vectors, a restart (WARMUP_BARS not-ready vectors), then ready ones again: through
    the regime and meta-agent runners without failures, dead letters or events in the gap."""
    stage, pub = features_stage()
    pre = WARMUP_BARS + 40
    history = bars(pre)
    stage.send(history)
    store_version_1(stage)
    after = bars(WARMUP_BARS + 20, start=pre)
    for k in range(0, len(after), 50):
        assert stage.send(after[k : k + 50]) == {"batchItemFailures": []}
    vectors = emitted(pub)
    assert stage.metrics.count("features_state_restarted") == 1
    ready = [v.ready for v in vectors]
    gap = [v.timestamp for v in vectors[pre : pre + WARMUP_BARS - 1]]
    assert ready == [False] * (WARMUP_BARS - 1) + [True] * 41 + [False] * (WARMUP_BARS - 1) + [True] * 21

    regime_out = MemoryStreamPublisher()
    regime = Stage(RegimeStep(hand_regime_model()), "features", lambda: StreamSink(regime_out, "market-state"))
    for k in range(0, len(vectors), 50):
        assert regime.send(vectors[k : k + 50]) == {"batchItemFailures": []}
    states = [MarketState.parse(d) for _, d in regime_out.streams["market-state"]]
    assert len(states) == len(vectors) and regime.dlq.letters == []
    assert not [e for e in regime.bus.events if e.timestamp in gap]  # no RegimeChanged while warming up
    # a warm-up bar is no detection: the start distribution's regime, bars_in_regime 0 (docs/regime.md)
    warm = [s.regime for s in states[pre : pre + WARMUP_BARS - 1]]
    assert {(r.regime, r.bars_in_regime) for r in warm} == {(states[0].regime.regime, 0)}
    assert states[pre + WARMUP_BARS - 1].regime.bars_in_regime == 1  # detected afresh after it

    queue = MemoryQueuePublisher()
    config = MetaAgentConfig.create(max_position_change=0.25)
    meta = Stage(MetaAgentStep(config, V2Agents()), "market-state",
                 lambda: QueueSink(queue, "order-intents", lambda i: i.intent_id))
    for k in range(0, len(states), 50):
        assert meta.send(states[k : k + 50]) == {"batchItemFailures": []}
    intents = [OrderIntent.model_validate_json(body) for _, _, body in queue.queues["order-intents"]]
    assert len(intents) == len(states) and meta.dlq.letters == []
    in_gap = intents[pre : pre + WARMUP_BARS - 1]
    assert all("features warming up" in i.explanation for i in in_gap)
    assert not [e for e in meta.bus.events if e.timestamp in gap]  # no AgentSwitched while warming up
    # the position goes flat at most max_position_change a bar (warm-up targets are 0), then resumes
    positions = np.array([intents[pre - 1].target_position] + [i.target_position for i in in_gap])
    assert np.all(np.abs(np.diff(positions)) <= 0.25 + 1e-12) and positions[-1] == 0.0
    assert np.all(np.abs(positions[1:]) <= np.abs(positions[:-1]) + 1e-12)
    assert not any("features warming up" in i.explanation for i in intents[pre + WARMUP_BARS - 1 :])


def test_a_features_rebuild_by_replay_is_redelivery_downstream_not_conflicts():
    """Runbook §4/§3.2: the features state is dropped and rebuilt from the last WARMUP_BARS + 10
    bars while the regime and meta-agent states are kept. The re-emitted vectors differ from the
    ones those stages handled at the same times (warming up, or ready but not bit-equal), yet they
    are redeliveries there: skipped, the first version kept, counted as
    <stage>_redelivered_changed — no dead letter, no output, no event (fc81e3a dead-lettered every
    one as a conflict). The features stage itself still dead-letters another version of a bar."""
    history = bars(2 * WARMUP_BARS + 50)
    feat, pub = features_stage()
    for k in range(0, len(history), 100):
        feat.send(history[k : k + 100])
    vectors = emitted(pub)
    regime_out = MemoryStreamPublisher()
    regime = Stage(RegimeStep(hand_regime_model()), "features", lambda: StreamSink(regime_out, "market-state"))
    for k in range(0, len(vectors), 100):
        assert regime.send(vectors[k : k + 100]) == {"batchItemFailures": []}
    states = [MarketState.parse(d) for _, d in regime_out.streams["market-state"]]
    queue = MemoryQueuePublisher()
    meta = Stage(MetaAgentStep(MetaAgentConfig.create(), V2Agents()), "market-state",
                 lambda: QueueSink(queue, "order-intents", lambda i: i.intent_id))
    for k in range(0, len(states), 100):
        assert meta.send(states[k : k + 100]) == {"batchItemFailures": []}

    # the rebuild: a fresh features state (deleted stage-state item and cache key), replay
    rebuilt, pub2 = features_stage()
    replay = history[-(WARMUP_BARS + 10) :]
    for k in range(0, len(replay), 100):
        assert rebuilt.send(replay[k : k + 100]) == {"batchItemFailures": []}
    re_vectors = emitted(pub2)
    assert len(re_vectors) == len(replay)
    assert not any(a == b for a, b in zip(vectors[-len(replay) :], re_vectors, strict=True))  # none bit-equal

    before = (len(regime_out.streams["market-state"]), len(regime.bus.events), regime.snapshots.get_item(
        SNAPSHOT_TABLE, {"pk": "regime", "sk": SYMBOL}))
    for k in range(0, len(re_vectors), 100):
        assert regime.send(re_vectors[k : k + 100]) == {"batchItemFailures": []}
    assert regime.dlq.letters == [] and regime.stats.conflicts == 0
    assert regime.metrics.count("regime_conflicts") == 0 and regime.metrics.count("regime_rejected") == 0
    assert regime.stats.redelivered_changed == len(re_vectors)
    assert regime.metrics.count("regime_redelivered_changed") == len(re_vectors)
    after = (len(regime_out.streams["market-state"]), len(regime.bus.events), regime.snapshots.get_item(
        SNAPSHOT_TABLE, {"pk": "regime", "sk": SYMBOL}))
    assert after == before  # nothing emitted, the state untouched

    # market states recomputed from the rebuilt vectors (a regime state rebuilt the same way) are
    # redeliveries for the meta-agent stage too
    regime2_out = MemoryStreamPublisher()
    regime2 = Stage(RegimeStep(hand_regime_model()), "features", lambda: StreamSink(regime2_out, "market-state"))
    regime2.send(re_vectors)
    re_states = [MarketState.parse(d) for _, d in regime2_out.streams["market-state"]]
    intents = len(queue.queues["order-intents"])
    assert meta.send(re_states) == {"batchItemFailures": []}
    assert meta.dlq.letters == [] and meta.stats.conflicts == 0
    assert meta.stats.redelivered_changed == len(re_states) and len(queue.queues["order-intents"]) == intents
    assert meta.metrics.count("meta_agent_redelivered_changed") == len(re_states)

    # producer data still detects conflicts: another version of a bar the rebuilt state applied
    corrected = replay[-2].model_copy(update={"close": replay[-2].close * 1.001})
    assert rebuilt.send([corrected]) == {"batchItemFailures": []}
    assert rebuilt.stats.conflicts == 1 and rebuilt.stats.redelivered_changed == 0
    [reason] = rebuilt.dlq.reasons
    assert reason.startswith(f"conflicting record: {SYMBOL} ") and "by stage features" in reason
