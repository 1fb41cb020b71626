"""Two regime runtime defects found by a review (2026-11-29).

A deleted pointer stranded warm containers on the deleted pin's model: ``SymbolModels.recheck``
returned False when no pointer pinned a version any more, so a warm container went on serving
the old model while new containers served the committed default, each restarting the other's
filter. And ``RegimeFilterState.from_bytes`` read ``last_ns`` through ``int()``: 2.7, true, "5",
-5 and 1e300 were accepted, and a time past every bar made each later bar a silent redelivery."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

import pytest
from ensemble_trader.adapters.memory.fakes import MemoryModelStore
from ensemble_trader.domain.errors import StateError
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine, timestamp_ns
from ensemble_trader.domain.models import Bar, FeatureVector
from ensemble_trader.domain.regime import RegimeFilterState, RegimeModel, RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.runtime import regime_registry as registry
from ensemble_trader.runtime.settings import get_settings

N_BARS = WARMUP_BARS + 200


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def committed() -> RegimeModel:
    return RegimeModel.load(get_settings().models_dir / "regime")


@pytest.fixture(scope="module")
def other(committed, shifted_regime_model) -> RegimeModel:
    return shifted_regime_model(committed, 0.3)  # fitted from scratch: no lineage, other hidden states


@pytest.fixture(scope="module")
def refit(committed) -> RegimeModel:
    """A refit of the committed model (its lineage names it): the filter carries over between them."""
    return RegimeModel(committed.features, committed.start_prob, committed.transmat, committed.means + 0.05,
                       committed.covariances, committed.covariance_type, committed.state_regimes,
                       log_floor=committed.log_floor,
                       info={"refit_of": committed.version, "refit_lineage": [committed.version]})


@pytest.fixture(scope="module")
def vectors():
    engine = FeatureEngine("SYN")
    return [engine.update(bar) for bar in generate("realistic", N_BARS, 5, symbol="SYN").series.bars()]


def container(store: MemoryModelStore, clock: Clock | None = None, **options) -> tuple[RegimeStep, registry.SymbolModels]:
    """A container's cold start, as the regime Lambda's: the pinned model, every symbol's own."""
    models = registry.SymbolModels(store, registry.load_pinned(store, get_settings().models_dir / "regime"),
                                   clock=clock or Clock(), **options)
    return RegimeStep(models.default, models_for=models, recheck=models.recheck), models


def run(steps: list[RegimeStep], which, vectors) -> list[tuple]:
    """Bars of one symbol through the containers ``which(i)`` picks, sharing one stored state."""
    state, outputs = None, []
    for i, vector in enumerate(vectors):
        state, out, events = steps[which(i)].apply(state, vector)
        outputs += [(m.regime.regime, m.regime.confidence, m.regime.bars_in_regime, m.regime.model_version,
                     tuple((e.from_regime, e.to_regime) for e in events)) for m in out]
    return outputs


def unpinned_rollout(store, delete_key, vectors):
    """A warm container started while ``delete_key`` pinned its model; the pointer is deleted
    before bar ``first``, and a container started then takes every other bar from there on. The
    outputs, ``first`` and the warm container's models."""
    warm, warm_models = container(store)
    first = len(vectors) // 2 | 1
    state, outputs = None, []
    for i, vector in enumerate(vectors):
        if i == first:  # the operator deletes the pointer; a container starts after it
            del store.objects[delete_key]
            cold, _ = container(store)
        step = cold if i >= first and i % 2 == 1 else warm
        state, out, events = step.apply(state, vector)
        outputs += [(m.regime.regime, m.regime.confidence, m.regime.bars_in_regime, m.regime.model_version,
                     tuple((e.from_regime, e.to_regime) for e in events)) for m in out]
    return outputs, first, warm_models


def test_a_deleted_symbol_pin_without_a_shared_pointer_sends_warm_containers_to_the_committed_default(
        committed, other, vectors, caplog):
    store = MemoryModelStore()
    registry.publish(store, other, previous=None, symbol="SYN")
    with caplog.at_level(logging.INFO, logger=registry.__name__):
        outputs, first, warm_models = unpinned_rollout(store, registry.pointer_key("SYN"), vectors)
    # the same outputs as one container serving the pin up to the deletion and one serving the
    # committed default after it (which restarts the unrelated pin's filter once, at ``first``)
    assert outputs == run([RegimeStep(other), RegimeStep(committed)], lambda i: int(i >= first), vectors)
    assert {o[3] for o in outputs[first:]} == {committed.version}
    assert warm_models("SYN").version == committed.version and "SYN" not in warm_models.models
    assert (f"switched from {other.version} to {committed.version}, the committed default, as no pointer "
            "pins a version any more") in caplog.text


def test_a_deleted_shared_pointer_sends_every_symbol_without_its_own_to_the_committed_default(
        committed, other, vectors, caplog):
    store = MemoryModelStore()
    registry.publish(store, other, previous=None)
    with caplog.at_level(logging.INFO, logger=registry.__name__):
        outputs, first, warm_models = unpinned_rollout(store, registry.POINTER, vectors)
    assert outputs == run([RegimeStep(other), RegimeStep(committed)], lambda i: int(i >= first), vectors)
    assert warm_models("SYN").version == committed.version and warm_models("OTHER").version == committed.version
    assert "every symbol without its own pin switched" in caplog.text


def test_a_deleted_pin_of_a_refit_carries_the_filter_over_to_the_committed_default(committed, refit, vectors):
    """The switch takes the path of a new pin: the step carries the filter over when the two
    models share their hidden states (a refit), so the deletion changes no reported regime."""
    store = MemoryModelStore()
    registry.publish(store, refit, previous=committed.version, symbol="SYN")
    outputs, first, warm_models = unpinned_rollout(store, registry.pointer_key("SYN"), vectors)
    assert outputs == run([RegimeStep(refit), RegimeStep(committed)], lambda i: int(i >= first), vectors)
    assert {o[3] for o in outputs[first:]} == {committed.version}
    assert warm_models("SYN").version == committed.version


def test_an_unreadable_committed_default_keeps_the_model_served_and_is_tried_again(
        committed, other, vectors, tmp_path, caplog):
    store = MemoryModelStore()
    registry.publish(store, other, previous=None, symbol="SYN")
    clock = Clock()
    warm, models = container(store, clock, default_dir=tmp_path / "missing")
    del store.objects[registry.pointer_key("SYN")]
    cold, _ = container(store)
    state, _, _ = cold.apply(None, vectors[0])
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        state, out, _ = warm.apply(state, vectors[1])
    assert out[0].regime.model_version == other.version  # served by the model it had, logged
    assert "not rechecked" in caplog.text and "does not exist" in caplog.text
    models.default_dir = get_settings().models_dir / "regime"  # the folder is back
    state, _, _ = cold.apply(state, vectors[2])
    state, out, _ = warm.apply(state, vectors[3])  # within the minute: not read again
    assert out[0].regime.model_version == other.version
    clock.now += registry.RECHECK_SECONDS
    state, _, _ = cold.apply(state, vectors[4])
    state, out, _ = warm.apply(state, vectors[5])
    assert out[0].regime.model_version == committed.version


# -- last_ns ---------------------------------------------------------------------------------


def stored(**changes) -> bytes:
    raw = json.loads(RegimeFilterState("SYN", "r000000000000", last_ns=timestamp_ns(datetime(2024, 1, 2, tzinfo=UTC)))
                     .to_bytes())
    return json.dumps({**raw, **changes}).encode()


@pytest.mark.parametrize(("value", "says"), [
    (2.7, "last_ns 2.7 must be an integer"),
    (True, "last_ns True must be an integer"),
    ("5", "last_ns '5' must be an integer"),
    (1e300, "last_ns 1e+300 must be an integer"),
    (1.7e18, "last_ns 1.7e+18 must be an integer"),  # a float: not exact in nanoseconds
    (-5, "last_ns -5 is no bar time"),
    (2**63, f"last_ns {2**63} is no bar time"),
    (-(2**63) - 1000, f"last_ns {-(2**63) - 1000} is no bar time"),
    (1_704_153_600_000_000_001, "last_ns 1704153600000000001 is no bar time"),  # finer than a microsecond
])
def test_a_stored_last_ns_that_is_no_bar_time_is_a_state_error_naming_it(value, says):
    with pytest.raises(StateError, match=f"cannot decode regime filter state: ValueError..{re.escape(says)}"):
        RegimeFilterState.from_bytes(stored(last_ns=value))
    with pytest.raises(StateError):
        RegimeStep.load(stored(last_ns=value))  # what the stage runner calls


def test_a_state_read_back_with_a_huge_last_ns_no_longer_swallows_every_later_bar(committed, vectors):
    """Before: 1e300 was read as an int past every bar, so each later bar returned ([], [])."""
    state, _, _ = RegimeStep(committed).apply(None, vectors[-2])
    raw = json.loads(state.to_bytes())
    with pytest.raises(StateError, match="last_ns"):
        RegimeFilterState.from_bytes(json.dumps({**raw, "last_ns": 1e300}).encode())
    # the state as written reads back and applies the next bar
    _, out, _ = RegimeStep(committed).apply(RegimeFilterState.from_bytes(state.to_bytes()), vectors[-1])
    assert len(out) == 1


def test_last_ns_of_a_bar_before_1970_or_near_2262_reads_back_but_a_non_bar_time_does_not(committed):
    """Bar times are signed: a bar before 1970 is applied and its state must read back (a rule
    of ``last_ns >= 0`` would make its own state unreadable). Nanoseconds a bar cannot have are
    refused."""
    step = RegimeStep(committed)
    for when in (datetime(1960, 1, 4, tzinfo=UTC), datetime(2262, 4, 10, 23, 59, 59, 999999, tzinfo=UTC)):
        bar = Bar(symbol="SYN", timestamp=when, open=1, high=1.01, low=0.99, close=1, volume=1)
        vector = FeatureVector(bar=bar, values={"range_vol_1": 0.01, "ret_1": 0.0}, warmup_remaining=0)
        state, _, _ = step.apply(None, vector)
        assert RegimeFilterState.from_bytes(state.to_bytes()).last_ns == timestamp_ns(when)
    assert RegimeFilterState.from_bytes(stored(last_ns=None)).last_ns is None
    with pytest.raises(StateError, match="last_ns -5 is no bar time"):
        RegimeFilterState.from_bytes(stored(last_ns=-5))
