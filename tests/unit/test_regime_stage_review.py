"""The regime stage refuses what it cannot keep before anything moves (review of 2026-11-28).

A record whose regime-history row DynamoDB cannot store was dead-lettered only when its outputs
were published, after the step had moved the symbol's filter and its RegimeChanged had gone out;
an oversize row's MarketState reached the stream before the row was refused; a negative
volatility was read as the quietest bar; a stored state with a count of 1e999 raised an untyped
OverflowError."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache

import pytest
from ensemble_trader.adapters.memory.fakes import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import InvalidMessageError, StateError
from ensemble_trader.domain.features import FeatureEngine
from ensemble_trader.domain.models import FeatureVector
from ensemble_trader.domain.regime import RegimeFilterState, RegimeStep
from ensemble_trader.domain.regime_model import RegimeModel
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime.regime_registry import MarketStateSink, admit_features
from ensemble_trader.runtime.settings import Settings
from ensemble_trader.runtime.stage import KinesisStageRunner, StreamSink


@cache
def model() -> RegimeModel:
    return RegimeModel.load(Settings().models_dir / "regime")


@cache
def vectors() -> tuple[FeatureVector, ...]:
    engine = FeatureEngine("SYN")
    return tuple(engine.update(bar) for bar in generate("realistic", 240, 1, symbol="SYN").series.bars())


class Rig:
    def __init__(self, admit=admit_features):
        self.snapshots, self.bus, self.dlq = MemoryKeyValueStore(), MemoryEventBus(), MemoryDeadLetters()
        self.publisher = MemoryStreamPublisher()
        self.runner = KinesisStageRunner(
            RegimeStep(model(), admit=admit), cache=MemoryCache(), dlq=self.dlq,
            sink=MarketStateSink(StreamSink(self.publisher, "market-state"), self.snapshots),
            events=self.bus, snapshots=self.snapshots, max_lead_seconds=None,
        )
        self.sequence = 10**6

    def process(self, batch) -> dict:
        records = []
        for v in batch:
            self.sequence += 1
            records.append(kinesis_record(v.model_dump_json().encode(), partition_key="SYN",
                                          sequence_number=str(self.sequence), stream="features",
                                          arrival=datetime.now(UTC).timestamp()))
        return self.runner.process(kinesis_event(records))

    def state(self) -> RegimeFilterState:
        item = self.snapshots.get_item("stage-state", {"pk": "regime", "sk": "SYN"})
        return RegimeFilterState.from_bytes(bytes(item["state"]))

    def streamed_times(self) -> list[datetime]:
        return [datetime.fromisoformat(json.loads(data)["features"]["bar"]["timestamp"])
                for _, data in self.publisher.streams["market-state"]]


def with_values(v: FeatureVector, **changes) -> FeatureVector:
    return FeatureVector(bar=v.bar, values={**v.values, **changes}, warmup_remaining=0,
                         feature_version=v.feature_version)


def _refused_before_anything_moves(rig: Rig, bad: FeatureVector) -> str:
    before = rig.state()
    events_before, streamed_before = len(rig.bus.events), len(rig.streamed_times())
    assert rig.process([bad]) == {"batchItemFailures": []}
    (reason,) = rig.dlq.reasons
    after = rig.state()
    assert (after.last_ns, after.n_observed, after.regime, after.changes) == (
        before.last_ns, before.n_observed, before.regime, before.changes)
    assert len(rig.bus.events) == events_before and len(rig.streamed_times()) == streamed_before
    return reason


def test_a_value_dynamodb_cannot_store_is_refused_before_the_filter_moves():
    rig = Rig()
    rig.process(vectors()[:-1])
    reason = _refused_before_anything_moves(rig, with_values(vectors()[-1], range_vol_1=1e130))
    assert "features.range_vol_1=1e+130" in reason and "1e126" in reason
    rig.process(vectors()[-1:])  # the genuine bar of that time is applied afterwards
    assert rig.streamed_times()[-1] == vectors()[-1].timestamp and rig.state().n_observed > 0


def test_a_row_over_400_kb_is_refused_before_the_filter_moves():
    extra = {f"extra_feature_{i:05d}": 1.0 + i for i in range(20_000)}
    rig = Rig()
    rig.process(vectors()[:-1])
    reason = _refused_before_anything_moves(rig, with_values(vectors()[-1], **extra))
    assert "regime-history row of SYN" in reason and "over DynamoDB's 409,600" in reason


def test_without_the_admission_check_an_oversize_rows_market_state_never_reaches_the_stream():
    """The sink's own check (the last guard) sizes the rows before the stream gets anything."""
    extra = {f"extra_feature_{i:05d}": 1.0 + i for i in range(20_000)}
    rig = Rig(admit=None)
    rig.process(vectors()[:-3])
    bad = with_values(vectors()[-2], **extra)
    rig.process([vectors()[-3], bad, vectors()[-1]])
    (reason,) = rig.dlq.reasons
    assert "is 4" in reason and "over DynamoDB's 409,600" in reason
    streamed = rig.streamed_times()
    assert bad.timestamp not in streamed and vectors()[-1].timestamp in streamed
    assert len(streamed) == len(set(streamed))  # and the others once each


def test_a_negative_volatility_is_refused_by_name():
    rig = Rig()
    rig.process(vectors()[:-1])
    reason = _refused_before_anything_moves(rig, with_values(vectors()[-1], range_vol_1=-5.0))
    assert "values.range_vol_1" in reason and "below 0" in reason
    step = RegimeStep(model())
    state = None
    for v in vectors()[:-1]:
        state, _, _ = step.apply(state, v)
    with pytest.raises(InvalidMessageError, match="range_vol_1"):
        step.apply(state, with_values(vectors()[-1], range_vol_1=-5.0))
    step.apply(state, with_values(vectors()[-1], range_vol_1=0.0))  # zero is a flat bar: valid


@pytest.mark.parametrize(("key", "value", "says"), [
    ("n_bars", 1e999, "OverflowError"),
    ("last_ns", 1e999, "last_ns inf must be an integer"),  # read through int(): OverflowError until 2026-11-29
    ("bars_in_regime", -5, "must be a whole number >= 0"),
    ("pending_count", 2.7, "must be a whole number >= 0"),
    ("changes", True, "must be a whole number >= 0"),
])
def test_a_stored_state_with_an_impossible_count_is_a_state_error(key, value, says):
    step = RegimeStep(model())
    state, _, _ = step.apply(None, vectors()[-1])
    raw = json.loads(state.to_bytes())
    raw[key] = value
    with pytest.raises(StateError, match=says):
        RegimeFilterState.from_bytes(json.dumps(raw).encode())


def test_a_state_of_the_models_version_with_another_number_of_states_is_a_state_error():
    step = RegimeStep(model())
    state = None
    for v in vectors()[-3:-1]:
        state, _, _ = step.apply(state, v)
    state.log_alpha = state.log_alpha[:-1]
    with pytest.raises(StateError, match="holds 3 hidden-state probabilities; that model has 4"):
        step.apply(state, vectors()[-1])
