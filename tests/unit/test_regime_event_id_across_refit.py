"""A RegimeChanged retried on a container serving a refit of the model that first published it
keeps its event id: the id derives from the symbol, the bar's UTC instant and the change only
(the model version stays in the body), so a consumer can drop the duplicate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
from ensemble_trader.adapters.memory.fakes import (
    FailureInjector,
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.models import Bar, FeatureVector, Regime
from ensemble_trader.domain.regime import RegimeChanged, RegimeStep
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime.regime_registry import MarketStateSink
from ensemble_trader.runtime.stage import KinesisStageRunner, StreamSink

B, R, S, V = Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def one_feature_model(means, lineage=None) -> RegimeModel:
    k = len(means)
    trans = np.full((k, k), 0.03 / (k - 1))
    np.fill_diagonal(trans, 0.97)
    info = {} if lineage is None else {"refit_of": lineage[0], "refit_lineage": list(lineage)}
    return RegimeModel((FeatureSpec("f0", "identity", 0.0, 1.0),), np.full(k, 1.0 / k), trans,
                       np.array(means, dtype=float)[:, None], np.ones((k, 1, 1)), "full", (B, R, S, V), info=info)


OLD = one_feature_model([0.0, 3.0, -3.0, 6.0])
REFIT = one_feature_model([0.0, 3.1, -3.0, 6.0], lineage=[OLD.version])  # carries OLD's filter


def vector(t: int, value: float) -> FeatureVector:
    bar = Bar(symbol="SYN", timestamp=T0 + timedelta(days=t), open=100, high=101, low=99, close=100.5, volume=1000)
    return FeatureVector(bar=bar, values={"f0": value}, warmup_remaining=0)


def test_the_id_names_symbol_utc_bar_time_and_change_not_the_model_version():
    args = ("SYN", B, R, 0.8, T0, 12)
    same = RegimeChanged.create(*args, "r000000000001").event_id
    assert RegimeChanged.create(*args, "r000000000002").event_id == same  # another model version
    assert RegimeChanged.create("SYN", B, R, 0.6, T0, 7, "r000000000002").event_id == same  # body only
    local = T0.astimezone(timezone(timedelta(hours=2)))  # the same instant at another offset
    assert RegimeChanged.create("SYN", B, R, 0.8, local, 12, "r1").event_id == same
    for other in (("SYN", B, V, 0.8, T0, 12), ("SYN", S, R, 0.8, T0, 12), ("SYM", B, R, 0.8, T0, 12),
                  ("SYN", B, R, 0.8, T0 + timedelta(days=1), 12)):
        assert RegimeChanged.create(*other, "r000000000001").event_id != same


def test_the_same_change_computed_by_the_old_model_and_its_refit_has_one_id():
    state = None
    for t in range(10):
        state, _, _ = RegimeStep(OLD).apply(state, vector(t, 0.0))
    _, _, first = RegimeStep(OLD).apply(state, vector(10, 3.5))  # the attempt on the old container
    _, _, retry = RegimeStep(REFIT).apply(state, vector(10, 3.5))  # its retry on a new one
    assert [(e.from_regime, e.to_regime) for e in first] == [(B, R)] == [(e.from_regime, e.to_regime) for e in retry]
    assert (first[0].model_version, retry[0].model_version) == (OLD.version, REFIT.version)
    assert first[0].event_id == retry[0].event_id


def test_a_batch_retried_on_a_refit_after_its_snapshot_failed_republishes_the_same_event_id():
    """The stage runner: a change goes out from a container serving OLD, the snapshot write
    fails, the ESM retry lands on a container serving REFIT (the cached state carries over)."""
    cache, snaps, bus = MemoryCache(), MemoryKeyValueStore(FailureInjector()), MemoryEventBus()

    def runner(model: RegimeModel) -> KinesisStageRunner:
        sink = MarketStateSink(StreamSink(MemoryStreamPublisher(), "market-state"), snaps)
        return KinesisStageRunner(RegimeStep(model), cache=cache, dlq=MemoryDeadLetters(), sink=sink,
                                  events=bus, snapshots=snaps)

    old, new = runner(OLD), runner(REFIT)
    arrival = (T0 + timedelta(days=20)).timestamp()

    def event(t: int, value: float) -> dict:
        data = vector(t, value).model_dump_json().encode()
        return kinesis_event([kinesis_record(data, partition_key="SYN", sequence_number=str(10**6 + t),
                                             stream="features", arrival=arrival)])

    for t in range(10):
        assert old.process(event(t, 0.0)) == {"batchItemFailures": []}
    assert bus.events == []
    put = snaps.put_item

    def failing_put(table, item, **kwargs):
        if table == "stage-state":
            raise InfrastructureError("injected: the snapshot write failed after the event went out")
        return put(table, item, **kwargs)

    snaps.put_item = failing_put
    assert old.process(event(10, 3.5))["batchItemFailures"]  # the change went out, then failed
    snaps.put_item = put
    assert new.process(event(10, 3.5)) == {"batchItemFailures": []}  # the retry, on the refit
    assert [(e.from_regime, e.to_regime, e.model_version) for e in bus.events] == [
        (B, R, OLD.version), (B, R, REFIT.version)]
    assert len({e.event_id for e in bus.events}) == 1  # was two ids: no consumer could dedupe
