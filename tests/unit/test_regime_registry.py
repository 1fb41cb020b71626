"""The regime registry helpers of the regime Lambdas, with in-memory fakes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory.fakes import MemoryKeyValueStore, MemoryModelStore, MemoryStreamPublisher
from ensemble_trader.domain.errors import ModelArtifactError
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
