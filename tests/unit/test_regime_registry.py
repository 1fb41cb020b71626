"""The regime registry helpers of the regime Lambdas, with in-memory fakes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory.fakes import MemoryKeyValueStore, MemoryModelStore, MemoryStreamPublisher
from ensemble_trader.domain.errors import DataError, ModelArtifactError
from ensemble_trader.domain.features import FeatureEngine
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
    bars = generate("easy", 80, 3, symbol="SYNA").series
    engine = FeatureEngine("SYNA")
    state, states = None, []
    for bar in bars.bars():
        state, outputs, _ = step.apply(state, engine.update(bar))
        states.extend(outputs)
    publisher, table = MemoryStreamPublisher(), MemoryKeyValueStore()
    registry.MarketStateSink(StreamSink(publisher, "market-state"), table).emit(states)
    assert [key for key, _ in publisher.streams["market-state"]] == ["SYNA"] * 80
    rows = sorted(table.items("regime-history"), key=lambda r: r["timestamp"])
    assert len(rows) == 80
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
