"""A cached stage state that cannot be decoded, with no snapshot that holds it, is never replaced by
a new state (docs/features.md, "State format": a state is never silently reset).

The stage runner repairs an undecodable cache entry from its snapshot. When there is no snapshot
(the table lost it) or only one behind the entry (lost writes), the entry may be the only copy of
the newest state: the symbol's records fail with a StateError and are retried, the entry stays in
the cache as it was, nothing is dead-lettered and nothing is computed from a new or older state.
Before, the features stage started a new engine (``warmup_remaining`` 172 again), overwrote the
entry with it and dead-lettered a redelivered bar as late. Every stage on the runner shares the
path: features, regime and meta-agent are checked here with the in-memory fakes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.adapters.memory.fakes import MemoryQueuePublisher
from ensemble_trader.domain.features import FEATURE_VERSION, STATE_VERSION, WARMUP_BARS
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.models import Bar, FeatureVector, MarketState
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
from pydantic import BaseModel

from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SYMBOL = "SPX"
HISTORY = 12  # messages applied before the state is damaged


class Agents(RuleAgents):
    feature_version = FEATURE_VERSION


def bars(n: int, start: int = 0, symbol: str = SYMBOL) -> list[Bar]:
    out = []
    for i in range(start, start + n):
        price = 100.0 + (i * 37) % 11 - 5
        out.append(Bar(symbol=symbol, timestamp=T0 + timedelta(days=i), open=price, high=price * 1.01,
                       low=price * 0.99, close=price, volume=1000.0 + i))
    return out


class Stage:
    """One stage's runner over in-memory ports, with snapshots; ``send`` returns the failed ids."""

    def __init__(self, step, stream: str, sink: Callable[[Stage], object]) -> None:
        self.cache, self.dlq, self.snapshots = MemoryCache(), MemoryDeadLetters(), MemoryKeyValueStore()
        self.bus, self.stats, self.stream, self.seq = MemoryEventBus(), StageStats(), stream, 0
        self.pub, self.queue = MemoryStreamPublisher(), MemoryQueuePublisher()
        self.runner = KinesisStageRunner(step, cache=self.cache, dlq=self.dlq, sink=sink(self), events=self.bus,
                                         snapshots=self.snapshots, stats=self.stats)
        self.key = step.key(SYMBOL)

    def send(self, messages: list[BaseModel]) -> list[str]:
        records = []
        for m in messages:
            records.append(kinesis_record(m.model_dump_json().encode(), partition_key=m.symbol,
                                          sequence_number=f"{self.seq:020d}", stream=self.stream))
            self.seq += 1
        return [f["itemIdentifier"] for f in self.runner.process(kinesis_event(records))["batchItemFailures"]]

    def outputs(self) -> list[bytes]:
        return [d for _, d in self.pub.streams["out"]] + [body for _, _, body in self.queue.queues["out"]]

    def snapshot(self, symbol: str = SYMBOL) -> dict | None:
        return self.snapshots.get_item(SNAPSHOT_TABLE, {"pk": self.runner.step.name, "sk": symbol})


def _stream(stage: Stage) -> StreamSink:
    return StreamSink(stage.pub, "out")


def _queue(stage: Stage) -> QueueSink:
    return QueueSink(stage.queue, "out", lambda intent: intent.intent_id)


@pytest.fixture(scope="module")
def inputs() -> dict[str, list[BaseModel]]:
    """Each stage's input messages: bars, the features stage's vectors, the regime stage's states."""
    features = Stage(FeaturesStep(), "market-data", _stream)
    history = bars(HISTORY + 3)
    assert features.send(history) == []
    vectors = [FeatureVector.parse(d) for d in features.outputs()]
    regime = Stage(RegimeStep(hand_regime_model()), "features", _stream)
    assert regime.send(vectors) == []
    states = [MarketState.parse(d) for d in regime.outputs()]
    assert len(vectors) == len(states) == len(history)
    return {"features": history, "regime": vectors, "meta_agent": states}


STAGES = {
    "features": lambda: Stage(FeaturesStep(), "market-data", _stream),
    "regime": lambda: Stage(RegimeStep(hand_regime_model()), "features", _stream),
    "meta_agent": lambda: Stage(MetaAgentStep(MetaAgentConfig.create(), Agents()), "market-state", _queue),
}


def _damage(stage: Stage, how: str) -> bytes:
    """Replace the symbol's cached state by one the step cannot load, keeping its version and
    remembered times (``in-envelope``), or by bytes without the runner's envelope (``no-envelope``)."""
    version, handled, _ = decode_cached_entry(stage.cache.data[stage.key])
    bad = encode_cached(version, b"not a state of any stage" * 4, handled) if how == "in-envelope" else b"\x00" * 40
    stage.cache.data[stage.key] = bad
    return bad


@pytest.mark.parametrize("how", ["in-envelope", "no-envelope"])
@pytest.mark.parametrize("name", list(STAGES))
def test_an_undecodable_cached_state_without_a_snapshot_fails_the_records_and_is_kept(name, how, inputs, caplog):
    messages = inputs[name]
    reference = STAGES[name]()  # the same messages, nothing damaged
    assert reference.send(messages[:HISTORY]) == [] and reference.send(messages[HISTORY:]) == []

    stage = STAGES[name]()
    assert stage.send(messages[:HISTORY]) == []
    good = stage.cache.data[stage.key]
    bad = _damage(stage, how)
    stage.snapshots.tables[SNAPSHOT_TABLE].clear()  # the snapshot lost (e.g. a table restored)
    before = len(stage.outputs())
    events_before = len(stage.bus.events)

    with caplog.at_level(logging.ERROR, logger="ensemble_trader.runtime.stage"):
        failed = stage.send(messages[HISTORY:])
    assert failed == [f"{i:020d}" for i in range(HISTORY, len(messages))]  # retried, all of them
    assert len(stage.outputs()) == before and len(stage.bus.events) == events_before
    assert stage.dlq.letters == []
    assert stage.cache.data[stage.key] == bad  # the only copy is not overwritten
    assert stage.snapshot() is None  # nor written anywhere else
    assert stage.stats.reseeded == 0 and stage.stats.applied == HISTORY
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"cannot load state of {SYMBOL}" in m and "cannot be decoded" in m and "no snapshot" in m
               for m in errors), errors

    # a redelivery of an applied message is not dead-lettered as late either: it fails too
    assert stage.send(messages[3:4]) == [f"{len(messages):020d}"]
    assert stage.dlq.letters == []

    # once the state is readable again (the code that wrote it deployed again), the retried
    # records continue it: the same outputs as a run that was never interrupted
    stage.cache.data[stage.key] = good
    assert stage.send(messages[HISTORY:]) == []
    assert stage.outputs()[before:] == reference.outputs()[HISTORY:]


def _future_version(state: bytes) -> bytes:
    """A feature state as a newer code version writes it (its state version byte raised)."""
    return state[:4] + bytes([STATE_VERSION + 1]) + state[5:]


def test_a_newer_feature_state_whose_snapshot_was_lost_does_not_restart_the_engine(inputs, caplog):
    """The review's case: a rollback finds a state of a newer version in the cache, and the
    snapshots lost it. The next vector used to come from a fresh engine (warmup_remaining 172)."""
    stage = STAGES["features"]()
    history = inputs["features"]
    assert stage.send(history[:HISTORY]) == []
    last = FeatureVector.parse(stage.outputs()[-1])
    assert last.warmup_remaining == WARMUP_BARS - HISTORY
    version, handled, state = decode_cached_entry(stage.cache.data[stage.key])
    newer = encode_cached(version, _future_version(state), handled)
    stage.cache.data[stage.key] = newer
    stage.snapshots.tables[SNAPSHOT_TABLE].clear()

    with caplog.at_level(logging.ERROR, logger="ensemble_trader.runtime.stage"):
        assert stage.send(history[HISTORY : HISTORY + 1]) == [f"{HISTORY:020d}"]
    assert len(stage.outputs()) == HISTORY and stage.dlq.letters == []
    assert stage.cache.data[stage.key] == newer and stage.snapshot() is None
    assert f"version {STATE_VERSION + 1} != supported {STATE_VERSION}" in caplog.text
    assert stage.stats.restarted == 0

    stage.cache.data[stage.key] = encode_cached(version, state, handled)  # readable again
    assert stage.send(history[HISTORY : HISTORY + 1]) == []
    assert FeatureVector.parse(stage.outputs()[-1]).warmup_remaining == WARMUP_BARS - HISTORY - 1


@pytest.mark.parametrize("name", list(STAGES))
def test_an_undecodable_cached_state_ahead_of_its_snapshot_does_not_go_back_to_it(name, inputs, caplog):
    """The snapshot lost the latest writes and the cache entry holding them cannot be decoded:
    neither the older snapshot is computed from nor the entry overwritten (and nothing reseeded)."""
    messages = inputs[name]
    stage = STAGES[name]()
    assert stage.send(messages[:6]) == []
    older = stage.snapshot()
    assert stage.send(messages[6:HISTORY]) == []
    stage.snapshots.put_item(SNAPSHOT_TABLE, older, expected_version=None)  # lost writes: back to version 1
    bad = _damage(stage, "in-envelope")
    before = len(stage.outputs())

    with caplog.at_level(logging.ERROR, logger="ensemble_trader.runtime.stage"):
        assert stage.send(messages[HISTORY:]) == [f"{i:020d}" for i in range(HISTORY, len(messages))]
    assert len(stage.outputs()) == before and stage.dlq.letters == []
    assert stage.cache.data[stage.key] == bad and stage.snapshot() == older
    assert stage.stats.reseeded == 0
    assert "its snapshot is behind it (version 1)" in caplog.text
    assert "snapshots of" not in caplog.text  # no reseeding announced


@pytest.mark.parametrize("name", list(STAGES))
def test_an_undecodable_cached_state_is_still_repaired_from_a_snapshot_at_its_version(name, inputs, caplog):
    messages = inputs[name]
    reference = STAGES[name]()
    assert reference.send(messages[:HISTORY]) == [] and reference.send(messages[HISTORY:]) == []
    stage = STAGES[name]()
    assert stage.send(messages[:HISTORY]) == []
    _damage(stage, "in-envelope")
    with caplog.at_level(logging.WARNING, logger="ensemble_trader.runtime.stage"):
        assert stage.send(messages[HISTORY:]) == []
    assert stage.outputs()[HISTORY:] == reference.outputs()[HISTORY:]
    assert "using snapshot" in caplog.text
    assert decode_cached_entry(stage.cache.data[stage.key]) == decode_cached_entry(
        reference.cache.data[reference.key])  # the entry rewritten from the repaired state


def test_a_new_symbol_still_starts_fresh_beside_a_failing_one():
    stage = STAGES["features"]()
    assert stage.send(bars(HISTORY)) == []
    _damage(stage, "in-envelope")
    stage.snapshots.tables[SNAPSHOT_TABLE].clear()
    failed = stage.send([*bars(1, start=HISTORY), *bars(2, symbol="NDX")])
    assert failed == [f"{HISTORY:020d}"]  # the damaged symbol only
    vectors = [FeatureVector.parse(d) for d in stage.outputs()[HISTORY:]]
    assert [(v.symbol, v.warmup_remaining) for v in vectors] == [("NDX", WARMUP_BARS - 1), ("NDX", WARMUP_BARS - 2)]
    assert stage.snapshot("NDX")["version"] == 1
