"""The regime refit's per-symbol models, with in-memory fakes (the Lambda entry is tested on the local stack)."""

from __future__ import annotations

import pytest
from ensemble_trader.adapters.memory.fakes import (
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryModelStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import DataError, ModelArtifactError
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.domain.regime import RegimeModel, RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime import regime_registry as registry
from ensemble_trader.runtime.settings import get_settings
from ensemble_trader.runtime.stage import StreamSink


class HistoryTable(MemoryKeyValueStore):
    """The ``query`` the refit uses, over the in-memory rows."""

    def query(self, table, key, value, limit=None, newest_first=False):
        rows = sorted((r for r in self.items(table) if r[key] == value), key=lambda r: r["timestamp"], reverse=newest_first)
        return rows[:limit]


@pytest.fixture(scope="module")
def setup():
    default_dir = get_settings().models_dir / "regime"
    default = RegimeModel.load(default_dir)
    table = HistoryTable()
    for symbol, bars, seed in (("SYNA", 400, 1), ("SYNB", 400, 2), ("THIN", WARMUP_BARS + 9, 3)):
        step, engine, state, states = RegimeStep(default), FeatureEngine(symbol), None, []
        for bar in generate("easy", bars, seed, symbol=symbol).series.bars():
            state, outputs, _ = step.apply(state, engine.update(bar))
            states.extend(outputs)
        registry.MarketStateSink(StreamSink(MemoryStreamPublisher(), "market-state"), table).emit(states)
    return load_module("regime", "refit"), default_dir, default, table


def test_a_symbol_model_without_enough_history_is_skipped_and_the_others_go_on(setup, shifted_regime_model):
    refit, default_dir, default, table = setup
    store, bus = MemoryModelStore(), MemoryEventBus()
    thin, own = shifted_regime_model(default, 0.2), shifted_regime_model(default, 0.3)
    registry.publish(store, thin, previous=None, symbol="THIN")
    registry.publish(store, own, previous=None, symbol="SYNB")
    out = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA", "SYNB", "THIN"]})
    ready = 400 - (WARMUP_BARS - 1)
    assert out["published"] and out["previous"] == default.version and out["n_samples"] == ready
    assert out["symbols"]["SYNB"]["published"] and out["symbols"]["SYNB"]["n_samples"] == ready
    skipped = out["symbols"]["THIN"]
    assert not skipped["published"] and "at least" in skipped["skipped"] and skipped["previous"] == thin.version
    assert registry.pinned_version(store, "THIN") == thin.version  # untouched
    assert registry.pinned_version(store, "SYNB") == out["symbols"]["SYNB"]["version"]
    assert registry.pinned_version(store) == out["version"]
    assert sorted((e.symbol_model or "", e.previous) for e in bus.events) == [("", default.version), ("SYNB", own.version)]
    # a published refit says what it was fitted on: the rows' time range and a hash of them
    info = registry.load_version(store, out["version"]).info
    assert info["symbols"] == ["SYNA"] and info["refit_of"] == default.version and info["n_samples"] == ready
    first, last = info["training_window"]
    assert first < last and first.startswith("20") and len(info["training_data_hash"]) == 64 and info["created"]


def test_shared_symbols_without_enough_history_skip_the_shared_model_and_the_pinned_ones_refit(setup,
                                                                                             shifted_regime_model):
    refit, default_dir, default, table = setup
    store, bus = MemoryModelStore(), MemoryEventBus()
    own = shifted_regime_model(default, 0.3)
    registry.publish(store, own, previous=None, symbol="SYNB")
    out = refit.run_refit(store, table, bus, default_dir, {"symbols": ["THIN", "SYNB"]})
    assert not out["published"] and "at least" in out["skipped"] and out["previous"] == default.version
    assert out["symbols"]["SYNB"]["published"]
    assert [e.symbol_model for e in bus.events] == ["SYNB"]


def test_every_symbol_pinned_refits_no_shared_model_and_a_broken_pin_publishes_nothing(setup, shifted_regime_model):
    refit, default_dir, default, table = setup
    store, bus = MemoryModelStore(), MemoryEventBus()
    registry.publish(store, shifted_regime_model(default, 0.2), previous=None, symbol="SYNA")
    out = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"]})
    assert set(out) == {"symbols"} and out["symbols"]["SYNA"]["published"]
    assert registry.pinned_version(store) is None and len(bus.events) == 1

    store, bus = MemoryModelStore(), MemoryEventBus()
    store.write("regime/symbols/SYNB/current.json", b'{"version": "r000000000000"}')
    with pytest.raises(ModelArtifactError, match="manifest.json"):
        refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA", "SYNB"]})
    assert registry.pinned_version(store) is None and bus.events == []  # nothing was published first


def test_publish_refuses_a_model_reading_features_the_stage_does_not_make(setup, tmp_path, capsys):
    from dataclasses import replace

    from ensemble_trader.cli import main

    _, _, default, _ = setup
    alien = RegimeModel(
        (replace(default.features[0], name="not_a_feature"),), default.start_prob, default.transmat, default.means,
        default.covariances, default.covariance_type, default.state_regimes, log_floor=default.log_floor,
    )  # fmt: skip
    alien.save(tmp_path / "alien")
    assert main(["regime", "publish", "--model", str(tmp_path / "alien"), "--symbol", "SYNA"]) == 1
    assert "not_a_feature" in capsys.readouterr().err


def test_the_refit_reads_rows_in_time_order_whatever_offset_their_keys_carry(setup):
    """Rows keyed by a local offset (as they were stored before the keys were UTC) across the
    October daylight-saving change: the key text puts 02:00+01:00 before the earlier 02:00+02:00,
    and Baum-Welch must see the bars in the order they happened."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from ensemble_trader.domain.models import Bar

    refit, default_dir, default, _ = setup
    berlin = ZoneInfo("Europe/Berlin")
    # 140 ready rows; the clocks go back (2024-10-27T01:00Z) 69 rows after the warm-up
    bars = generate("easy", WARMUP_BARS + 139, 1, symbol="DAX", start="2024-10-17T00:00:00", freq="1h").series.bars()
    step, engine, state, states = RegimeStep(default), FeatureEngine("DAX"), None, []
    for bar in bars:
        local = Bar(**{**bar.model_dump(), "timestamp": bar.timestamp.astimezone(berlin)})  # the feed's local time
        state, outputs, _ = step.apply(state, engine.update(local))
        states.extend(outputs)
    table = HistoryTable()
    legacy = [{**registry.history_item(s), "timestamp": s.timestamp.isoformat()} for s in states]
    table.put_items("regime-history", legacy)
    utc_key = states[-1].timestamp.astimezone(UTC).isoformat()
    table.put_item("regime-history", {**legacy[-1], "timestamp": utc_key})  # the last bar again, keyed in UTC
    assert len(table.items("regime-history")) == WARMUP_BARS + 140

    [rows] = refit.history_rows(table, ["DAX"], 2000)
    times = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows]
    assert times == sorted(times)  # in the order the bars happened
    assert len(rows) == len(set(times)) == 140  # one row per bar
    assert times[0] == states[WARMUP_BARS - 1].timestamp.timestamp() and times[-1] == states[-1].timestamp.timestamp()

    store = MemoryModelStore()
    out = refit.run_refit(store, table, MemoryEventBus(), default_dir, {"symbols": ["DAX"]})
    assert out["published"] and out["n_samples"] == 140
    info = registry.load_version(store, out["version"]).info
    # the window starts with the warm-up bars of the first row fitted (its features hold them)
    assert info["training_window"] == [states[0].timestamp.astimezone(UTC).isoformat(), utc_key]
    assert info["fitted_window"] == [states[WARMUP_BARS - 1].timestamp.astimezone(UTC).isoformat(), utc_key]


def test_a_feature_warm_up_among_the_newest_rows_does_not_shorten_the_fit(setup):
    """After a features state restart the newest history holds WARMUP_BARS - 1 rows that are not
    ready: the refit still gets the newest ``lookback`` ready rows (it got lookback - 172)."""
    from datetime import UTC, datetime, timedelta

    refit, *_ = setup
    start = datetime(2024, 1, 1, tzinfo=UTC)
    readiness = [True] * 300 + [False] * (WARMUP_BARS - 1) + [True] * 20
    table = HistoryTable()
    table.put_items("regime-history", [
        {"symbol": "RST", "timestamp": (start + timedelta(hours=i)).isoformat(), "ready": ready}
        for i, ready in enumerate(readiness)
    ])
    [rows] = refit.history_rows(table, ["RST"], 100)
    assert len(rows) == 100 and all(r["ready"] for r in rows)
    assert rows[-1]["timestamp"] == (start + timedelta(hours=len(readiness) - 1)).isoformat()
    assert rows[0]["timestamp"] == (start + timedelta(hours=300 - 80)).isoformat()  # 80 before the warm-up


class RacingTable(HistoryTable):
    """The rows of ``table``; ``during()`` runs on the first query, as an operator's publish
    landing while the refit runs."""

    def __init__(self, table: HistoryTable, during) -> None:
        super().__init__()
        self.tables = table.tables
        self.during = during

    def query(self, *args, **kwargs):
        during, self.during = self.during, lambda: None
        during()
        return super().query(*args, **kwargs)


def test_a_publish_made_while_the_refit_runs_is_not_undone(setup, shifted_regime_model):
    refit, default_dir, default, table = setup
    store, bus = MemoryModelStore(), MemoryEventBus()
    operators = shifted_regime_model(default, 0.25)
    race = RacingTable(table, lambda: registry.publish(store, operators, previous=None))
    out = refit.run_refit(store, race, bus, default_dir, {"symbols": ["SYNA"]})  # loaded the default: no pointer
    assert not out["published"] and out["previous"] == default.version and out["version"] != default.version
    assert f"regime/current.json pins {operators.version} now, not no version" in out["skipped"]
    assert registry.pinned_version(store) == operators.version and bus.events == []

    # a symbol's own pointer too; the shared model, whose pointer did not move, is published
    own, mine = shifted_regime_model(default, 0.3), shifted_regime_model(default, 0.35)
    registry.publish(store, own, previous=None, symbol="SYNB")
    race = RacingTable(table, lambda: registry.publish(store, mine, previous=own.version, symbol="SYNB"))
    out = refit.run_refit(store, race, bus, default_dir, {"symbols": ["SYNA", "SYNB"]})
    assert out["published"] and out["previous"] == operators.version
    assert registry.pinned_version(store) == out["version"]
    skipped = out["symbols"]["SYNB"]
    assert not skipped["published"] and skipped["previous"] == own.version
    assert f"regime/symbols/SYNB/current.json pins {mine.version} now, not {own.version}" in skipped["skipped"]
    assert registry.pinned_version(store, "SYNB") == mine.version
    assert [(e.symbol_model, e.version) for e in bus.events] == [(None, out["version"])]


def test_a_symbol_named_twice_is_refused_not_read_twice(setup, monkeypatch):
    """Read twice, a new symbol's rows would count double against the short-history guard."""
    refit, default_dir, _, table = setup
    with pytest.raises(DataError, match="detail.symbols names THIN more than once"):
        refit.run_refit(MemoryModelStore(), table, MemoryEventBus(), default_dir,
                        {"symbols": ["THIN", "SYNA", "THIN"]})
    monkeypatch.setenv("ET_REGIME_SYMBOLS", "SPX, IXIC, SPX")
    with pytest.raises(DataError, match="ET_REGIME_SYMBOLS names SPX more than once"):
        refit.refit_options({})
    assert refit.refit_options({"symbols": ["THIN", "SYNA"]}) == (["THIN", "SYNA"], 2_000)


def test_options_it_does_not_know_are_refused_not_ignored(setup, monkeypatch):
    """A misspelt option ran the refit with the default in its place, an empty list with every
    configured symbol."""
    refit = setup[0]
    monkeypatch.setenv("ET_REGIME_SYMBOLS", "SPX")
    with pytest.raises(DataError, match="lookback"):
        refit.refit_options({"symbols": ["SPX"], "lookback": 500})
    with pytest.raises(DataError, match="detail.symbols=\\[\\] names no symbol"):
        refit.refit_options({"symbols": []})
    with pytest.raises(DataError, match="detail must be an object"):
        refit.refit_options(["SPX"])
    assert refit.refit_options({"lookback_bars": 500}) == (["SPX"], 500)
