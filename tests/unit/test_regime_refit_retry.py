"""The refit Lambda publishes a version only when the refit is material, and a retry of a run
whose event failed puts that event again (same id) instead of refitting the new pin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory.fakes import (
    FailureInjector,
    MemoryEventBus,
    MemoryModelStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import DataError, InfrastructureError
from ensemble_trader.domain.features import FeatureEngine
from ensemble_trader.domain.regime import RegimeModel, RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime import regime_registry as registry
from ensemble_trader.runtime.settings import get_settings
from ensemble_trader.runtime.stage import StreamSink

from tests.unit.test_regime_refit import HistoryTable

DAY1 = datetime(2030, 3, 4, 22, 0, tzinfo=UTC)  # the schedule's firing time (22:00 UTC)


@pytest.fixture(scope="module")
def setup():
    default_dir = get_settings().models_dir / "regime"
    default = RegimeModel.load(default_dir)
    table = HistoryTable()
    step, engine, state, states = RegimeStep(default), FeatureEngine("SYNA"), None, []
    for bar in generate("easy", 400, 1, symbol="SYNA").series.bars():
        state, out, _ = step.apply(state, engine.update(bar))
        states += out
    registry.MarketStateSink(StreamSink(MemoryStreamPublisher(), "market-state"), table).emit(states)
    return load_module("regime", "refit"), default_dir, default, table


def test_a_retry_after_the_event_failed_republishes_the_pinned_version_instead_of_refitting_it(setup):
    refit, default_dir, default, table = setup
    failures = FailureInjector()
    store, bus = MemoryModelStore(), MemoryEventBus(failures)
    failures.fail("publish")  # EventBridge refuses once, after the pointer moved
    with pytest.raises(InfrastructureError):
        refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"]}, now=DAY1)
    first = registry.pinned_version(store)
    assert first is not None and first != default.version and bus.events == []
    retry = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"]}, now=DAY1 + timedelta(minutes=3))
    assert retry["republished"] and not retry["published"] and retry["version"] == first
    assert registry.pinned_version(store) == first  # not refit again: one version in the bucket
    assert {k.split("/")[1] for k in store.objects if k.endswith("/manifest.json")} == {first}
    [event] = bus.events
    assert (event.version, event.previous, event.symbols) == (first, default.version, ["SYNA"])
    # another retry puts the same event: the same id, so consumers drop the duplicate
    refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"]}, now=DAY1 + timedelta(hours=1))
    assert [e.event_id for e in bus.events] == [event.event_id] * 2 and bus.events[0] == bus.events[1]
    # the next day's run refits the pin (from it), it does not republish
    nxt = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"], "min_gain_per_row": 0.0},
                          now=DAY1 + timedelta(days=1))
    assert "republished" not in nxt and nxt["previous"] == first


def test_the_event_id_derives_from_the_publish_not_the_attempt(setup):
    refit, default_dir, default, table = setup
    ids = []
    for _ in range(2):
        store, bus = MemoryModelStore(), MemoryEventBus()
        out = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"]}, now=DAY1)
        ids.append(bus.events[0].event_id)
    assert out["published"] and ids[0] == ids[1] and len(ids[0]) == 32
    model = registry.load_version(store, out["version"])
    assert refit.RegimeModelPublished.of(model, ["SYNA"], "SYNA").event_id != ids[0]  # another pointer


def test_a_refit_that_is_not_material_publishes_nothing_and_keeps_the_pin(setup):
    refit, default_dir, default, table = setup
    store, bus = MemoryModelStore(), MemoryEventBus()
    first = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"]}, now=DAY1)
    assert first["published"] and first["gain_per_row"] >= refit.MIN_GAIN_PER_ROW
    # the next day, the same rows: EM moves the parameters a little, the likelihood hardly
    again = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"]}, now=DAY1 + timedelta(days=1))
    assert again["unchanged"] and not again["published"] and again["version"] == first["version"]
    assert again["candidate"] != first["version"] and again["gain_per_row"] < refit.MIN_GAIN_PER_ROW
    assert registry.pinned_version(store) == first["version"] and len(bus.events) == 1
    # with the threshold at 0 the same refit publishes
    forced = refit.run_refit(store, table, bus, default_dir, {"symbols": ["SYNA"], "min_gain_per_row": 0},
                             now=DAY1 + timedelta(days=2))
    assert forced["published"] and registry.pinned_version(store) == forced["version"] == again["candidate"]


def test_bad_times_and_thresholds_are_refused_naming_them(setup):
    refit = setup[0]
    assert refit.event_time({"time": "2030-03-04T22:00:00Z"}) == DAY1
    assert refit.refit_period(DAY1 + timedelta(hours=1, minutes=59)) == "2030-03-04"
    assert refit.refit_period(DAY1 + timedelta(hours=2)) == "2030-03-05"
    with pytest.raises(DataError, match="event time 'yesterday'"):
        refit.event_time({"time": "yesterday"})
    with pytest.raises(DataError, match="no UTC offset"):
        refit.refit_period(datetime(2030, 3, 4, 22))
    for bad in (-1, "0.1", True, float("nan")):
        with pytest.raises(DataError, match="detail.min_gain_per_row="):
            refit.min_gain_option({"min_gain_per_row": bad})
