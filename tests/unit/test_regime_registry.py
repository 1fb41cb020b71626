"""The regime registry helpers of the regime Lambdas, with in-memory fakes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory.fakes import MemoryKeyValueStore, MemoryModelStore, MemoryStreamPublisher
from ensemble_trader.domain.errors import DataError, ModelArtifactError
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.domain.regime import RegimeModel, RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.runtime import regime_registry
from ensemble_trader.runtime.settings import get_settings
from ensemble_trader.runtime.stage import StreamSink


@pytest.fixture(scope="module")
def registry():
    return regime_registry


@pytest.fixture(scope="module")
def default_dir():
    return get_settings().models_dir / "regime"


def test_default_model_until_a_version_is_pinned(registry, default_dir):
    store = MemoryModelStore()
    default = RegimeModel.load(default_dir)
    assert registry.pinned_version(store) is None
    assert registry.load_pinned(store, default_dir).version == default.version

    shifted = RegimeModel(
        default.features, default.start_prob, default.transmat, default.means + 0.1, default.covariances,
        default.covariance_type, default.state_regimes, log_floor=default.log_floor,
    )  # fmt: skip
    registry.publish(store, shifted, previous=default.version, now=datetime(2026, 1, 1, tzinfo=UTC))
    pointer = json.loads(store.objects["regime/current.json"])
    assert pointer == {"version": shifted.version, "previous": default.version, "published_at": "2026-01-01T00:00:00+00:00"}
    assert registry.load_pinned(store, default_dir).version == shifted.version


def test_a_broken_pin_fails_closed(registry, default_dir):
    store = MemoryModelStore({"regime/current.json": b"{oops"})
    with pytest.raises(ModelArtifactError, match="malformed"):
        registry.load_pinned(store, default_dir)
    store = MemoryModelStore({"regime/current.json": json.dumps({"version": "r000000000000"}).encode()})
    with pytest.raises(ModelArtifactError, match="manifest.json"):
        registry.load_pinned(store, default_dir)
    model = RegimeModel.load(default_dir)
    store = MemoryModelStore()
    registry.publish(store, model, previous=None)
    store.objects[f"regime/{model.version}/regime_model.json"] += b" "
    with pytest.raises(ModelArtifactError, match="does not match its manifest"):
        registry.load_pinned(store, default_dir)


def test_sink_writes_the_stream_then_one_history_row_per_bar(registry, default_dir):
    step = RegimeStep(RegimeModel.load(default_dir))
    n = WARMUP_BARS + 19  # past the feature warm-up
    bars = generate("easy", n, 3, symbol="SYNA").series
    engine = FeatureEngine("SYNA")
    state, states = None, []
    for bar in bars.bars():
        state, outputs, _ = step.apply(state, engine.update(bar))
        states.extend(outputs)
    publisher, table = MemoryStreamPublisher(), MemoryKeyValueStore()
    registry.MarketStateSink(StreamSink(publisher, "market-state"), table).emit(states)
    assert [key for key, _ in publisher.streams["market-state"]] == ["SYNA"] * n
    rows = sorted(table.items("regime-history"), key=lambda r: r["timestamp"])
    assert len(rows) == n
    last, expected = rows[-1], states[-1]
    assert last["timestamp"] == expected.timestamp.isoformat() and last["regime"] == expected.regime.regime.value
    assert last["ready"] and set(last["features"]) == set(expected.features.values)
    assert last["p_bull"] + last["p_bear"] + last["p_sideways"] + last["p_volatile"] == pytest.approx(1.0)
    assert not rows[0]["ready"]
    assert datetime.fromisoformat(rows[1]["timestamp"]) - datetime.fromisoformat(rows[0]["timestamp"]) == timedelta(days=1)


def test_a_symbol_pointer_pins_its_own_model_and_the_others_keep_the_global_one(registry, default_dir, shifted_regime_model):
    store = MemoryModelStore()
    default = RegimeModel.load(default_dir)
    own = shifted_regime_model(default, 0.2)
    registry.publish(store, own, previous=None, now=datetime(2026, 1, 2, tzinfo=UTC), symbol="IXIC")
    assert json.loads(store.objects["regime/symbols/IXIC/current.json"]) == {
        "version": own.version, "previous": None, "published_at": "2026-01-02T00:00:00+00:00", "symbol": "IXIC",
    }
    assert "regime/current.json" not in store.objects  # the global pin is untouched
    assert registry.pinned_version(store, "IXIC") == own.version
    assert registry.pinned_version(store) is None and registry.pinned_version(store, "SPX") is None
    assert registry.load_pinned(store, default_dir).version == default.version

    registry.publish(store, own, previous=None, symbol="EUR/USD")  # a symbol with "/" nests its key
    assert registry.pinned_symbols(store) == ["EUR/USD", "IXIC"]
    reads = []
    read = store.read
    store.read = lambda key: reads.append(key) or read(key)
    models = registry.SymbolModels(store, default)  # everything is read here, at the cold start
    n_reads = len(reads)
    assert reads.count("regime/symbols/IXIC/current.json") == 1
    assert sum(k.endswith("regime_model.json") for k in reads) == 1  # one version, loaded once
    assert models("IXIC").version == own.version and models("EUR/USD") is models("IXIC")
    assert models("SPX") is default and len(reads) == n_reads  # the hot path reads nothing
    with pytest.raises(DataError, match="does not match"):
        registry.pointer_key("not a symbol")


def test_a_broken_symbol_pin_fails_closed_naming_the_pointer(registry, default_dir):
    default = RegimeModel.load(default_dir)
    store = MemoryModelStore({"regime/symbols/IXIC/current.json": json.dumps({"version": "r000000000000"}).encode()})
    with pytest.raises(ModelArtifactError, match="manifest.json"):
        registry.SymbolModels(store, default)
    store = MemoryModelStore({"regime/symbols/IXIC/current.json": b"[]"})
    with pytest.raises(ModelArtifactError, match="regime/symbols/IXIC/current.json is malformed"):
        registry.SymbolModels(store, default)


def test_the_step_labels_each_symbol_with_its_own_model(registry, default_dir, shifted_regime_model):
    default = RegimeModel.load(default_dir)
    own = shifted_regime_model(default, 0.5)
    models = {"SYNA": own}
    step = RegimeStep(default, models_for=lambda symbol: models.get(symbol, default))
    states: dict[str, list] = {"SYNA": [], "SYNB": []}
    last: dict[str, object] = {}
    bars = {symbol: list(generate("easy", 121, seed, symbol=symbol).series.bars()) for symbol, seed in (("SYNA", 1), ("SYNB", 2))}
    engines = {symbol: FeatureEngine(symbol) for symbol in bars}
    for symbol in bars:
        state = None
        for bar in bars[symbol][:-1]:
            state, outputs, _ = step.apply(state, engines[symbol].update(bar))
            states[symbol].extend(outputs)
        last[symbol] = state
    assert {s.regime.model_version for s in states["SYNA"]} == {own.version}
    assert {s.regime.model_version for s in states["SYNB"]} == {default.version}
    assert step.model_version == default.version
    assert step.new_state("SYNA").model_version == own.version
    # a symbol whose model changes restarts its filter under the new one
    models["SYNA"] = default
    moved, outputs, _ = step.apply(last["SYNA"], engines["SYNA"].update(bars["SYNA"][-1]))
    assert moved.model_version == default.version and outputs[0].regime.model_version == default.version
    assert last["SYNA"].model_version == own.version  # the old state is left intact


def test_a_pinned_model_reading_a_feature_the_engine_does_not_compute_fails_closed(registry, default_dir):
    from ensemble_trader.domain.regime_model import FeatureSpec

    default = RegimeModel.load(default_dir)
    first = default.features[0]
    renamed = (FeatureSpec("range_vol_l", first.transform, first.center, first.scale),) + tuple(default.features[1:])
    stray = RegimeModel(renamed, default.start_prob, default.transmat, default.means, default.covariances,
                        default.covariance_type, default.state_regimes, log_floor=default.log_floor)
    store = MemoryModelStore()
    registry.publish(store, stray, previous=None)
    with pytest.raises(ModelArtifactError, match=r"reads features \['range_vol_l'\] that the feature engine"):
        registry.load_pinned(store, default_dir)


def states_of(step, symbol: str, bars) -> list:
    engine, state, states = FeatureEngine(symbol), None, []
    for bar in bars:
        state, outputs, _ = step.apply(state, engine.update(bar))
        states.extend(outputs)
    return states


def test_history_rows_are_keyed_by_the_utc_instant_so_the_key_order_is_time_order(registry, default_dir):
    """A feed in local time (Berlin, hourly) across the October daylight-saving change: keyed by
    the bar's own offset, 02:00+01:00 sorted before the earlier 02:00+02:00."""
    from zoneinfo import ZoneInfo

    from ensemble_trader.domain.models import Bar

    berlin = ZoneInfo("Europe/Berlin")
    bars = generate("easy", 80, 1, symbol="DAX", start="2024-10-26T00:00:00", freq="1h").series.bars()
    local = [Bar(**{**bar.model_dump(), "timestamp": bar.timestamp.astimezone(berlin)}) for bar in bars]
    assert {b.timestamp.utcoffset() for b in local} == {timedelta(hours=1), timedelta(hours=2)}
    states = states_of(RegimeStep(RegimeModel.load(default_dir)), "DAX", local)
    table = MemoryKeyValueStore()
    registry.MarketStateSink(StreamSink(MemoryStreamPublisher(), "market-state"), table).emit(states)
    keys = sorted(row["timestamp"] for row in table.items("regime-history"))  # DynamoDB's (byte) order
    assert keys == [s.timestamp.astimezone(UTC).isoformat() for s in states]
    assert all(k.endswith("+00:00") for k in keys) and len(set(keys)) == 80
    # (compared as UTC: an aware time in a repeated hour never equals one of another zone, PEP 495)
    assert [registry.history_time({"timestamp": k}) for k in keys] == [s.timestamp.astimezone(UTC) for s in states]


def test_a_utc_bar_keeps_its_history_key(registry):
    """Rows written before the keys were made UTC keep theirs: a UTC time's key is its own text."""
    from datetime import timezone
    from zoneinfo import ZoneInfo

    from ensemble_trader.domain.models import Bar

    for text in ("2024-03-01T00:00:00Z", "2024-03-01T14:30:00.250000+00:00", "2024-03-01T14:30:00.000001Z"):
        bar = Bar(symbol="SPX", timestamp=text, open=1.0, high=1.0, low=1.0, close=1.0, volume=0.0)
        assert registry.history_key(bar.timestamp) == bar.timestamp.isoformat()
    for tz in (UTC, timezone(timedelta(0)), ZoneInfo("UTC"), ZoneInfo("Etc/UTC"), ZoneInfo("Europe/London")):
        when = datetime(2024, 1, 5, 9, 30, 15, tzinfo=tz)
        assert registry.history_key(when) == when.isoformat() == "2024-01-05T09:30:15+00:00"
    with pytest.raises(DataError, match=r"'SPX' has timestamp '2024-01-05T09:30:15', not an ISO-8601 time"):
        registry.history_time({"symbol": "SPX", "timestamp": "2024-01-05T09:30:15"})


def test_a_row_dynamodb_cannot_store_is_refused_before_its_market_state_is_published(registry, default_dir):
    """A feature value of 1e200 (finite, a valid FeatureVector) is beyond DynamoDB's numbers: the
    stage runner dead-letters that record, and its MarketState must not be on the stream (nor
    be published again on each split of the batch)."""
    from ensemble_trader.adapters.memory.fakes import MemoryCache, MemoryDeadLetters, MemoryEventBus
    from ensemble_trader.domain.models import FeatureVector, MarketState
    from ensemble_trader.local.events import kinesis_event, kinesis_record
    from ensemble_trader.runtime.stage import KinesisStageRunner

    model = RegimeModel.load(default_dir)
    engine = FeatureEngine("SYNA")
    vectors = [engine.update(bar) for bar in generate("easy", 70, 1, symbol="SYNA").series.bars()][-3:]
    vectors[1] = FeatureVector.model_validate(
        vectors[1].model_copy(update={"values": {**vectors[1].values, "drawdown": 1e200}}).model_dump()
    )
    publisher, table, dlq = MemoryStreamPublisher(), MemoryKeyValueStore(), MemoryDeadLetters()
    sink = registry.MarketStateSink(StreamSink(publisher, "market-state"), table)
    state, outputs, _ = RegimeStep(model).apply(None, vectors[1])
    with pytest.raises(DataError, match=r"features.drawdown=1e\+200"):
        sink.emit(outputs)
    assert publisher.streams.get("market-state", []) == [] and table.items("regime-history") == []

    runner = KinesisStageRunner(
        RegimeStep(model), cache=MemoryCache(), dlq=dlq, sink=sink, events=MemoryEventBus(),
        snapshots=MemoryKeyValueStore(), max_lead_seconds=None,
    )  # fmt: skip
    records = [
        kinesis_record(v.model_dump_json().encode(), partition_key="SYNA", sequence_number=str(i),
                       stream="features")
        for i, v in enumerate(vectors)
    ]
    assert runner.process(kinesis_event(records)) == {"batchItemFailures": []}
    letters = [(r["kinesis"]["sequenceNumber"], "drawdown=1e+200" in reason) for r, reason, _ in dlq.letters]
    assert letters == [("1", True)]
    emitted = [MarketState.model_validate_json(body).timestamp for _, body in publisher.streams["market-state"]]
    assert emitted == [vectors[0].timestamp, vectors[2].timestamp]  # each once, the refused one never
    assert sorted(r["timestamp"] for r in table.items("regime-history")) == [
        registry.history_key(vectors[0].timestamp), registry.history_key(vectors[2].timestamp)
    ]


def test_a_publish_expecting_a_pin_leaves_a_moved_pointer_alone(registry, default_dir, shifted_regime_model):
    from ensemble_trader.domain.errors import ConcurrencyError

    default = RegimeModel.load(default_dir)
    first, operators, refit = (shifted_regime_model(default, by) for by in (0.1, 0.2, 0.3))
    store = MemoryModelStore()
    registry.publish(store, first, previous=None, expected_pin=None)  # no pointer yet, as expected
    assert registry.load_pin(store, default_dir)[0] == first.version
    registry.publish(store, refit, previous=first.version, expected_pin=first.version)
    assert registry.pinned_version(store) == refit.version

    registry.publish(store, operators, previous=refit.version)  # an operator's publish: whatever is pinned
    for expected in (refit.version, None):
        with pytest.raises(ConcurrencyError, match=f"regime/current.json pins {operators.version} now, not "):
            registry.publish(store, first, previous=refit.version, expected_pin=expected)
        assert registry.pinned_version(store) == operators.version

    with pytest.raises(ConcurrencyError, match="regime/symbols/IXIC/current.json pins no version now"):
        registry.publish(store, refit, previous=None, symbol="IXIC", expected_pin=first.version)
    assert registry.pinned_version(store, "IXIC") is None
    pin, model = registry.load_pin(MemoryModelStore(), default_dir)
    assert pin is None and model.version == default.version


def test_a_publish_landing_between_the_refits_read_and_write_is_not_undone(registry, default_dir,
                                                                           shifted_regime_model):
    """The pointer is moved by one conditional write over the content read: an operator's
    publish that lands after the refit read the pointer, before it wrote, stays pinned."""
    from ensemble_trader.domain.errors import ConcurrencyError

    default = RegimeModel.load(default_dir)
    first, operators, refit = (shifted_regime_model(default, by) for by in (0.1, 0.2, 0.3))

    class Racing(MemoryModelStore):
        def replace(self, key: str, data: bytes, expected: bytes | None) -> None:
            self.objects[key] = json.dumps({"version": operators.version}).encode()  # the operator's
            super().replace(key, data, expected)

    store = Racing()
    registry.publish(store, first, previous=None)
    with pytest.raises(ConcurrencyError, match="changed since it was read"):
        registry.publish(store, refit, previous=first.version, expected_pin=first.version)
    assert registry.pinned_version(store) == operators.version
