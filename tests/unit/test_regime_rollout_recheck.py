"""A publish while warm containers still serve the old model: the first state the new version
writes makes an old container read the pointers again and switch, instead of the two versions
taking turns on a symbol's records (each restarting the other's filter: an unrelated model shares
no hidden states)."""

from __future__ import annotations

import logging

import pytest
from ensemble_trader.adapters.memory.fakes import MemoryModelStore
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.domain.regime import RegimeModel, RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.runtime import regime_registry as registry
from ensemble_trader.runtime.settings import get_settings

N_BARS = WARMUP_BARS + 400


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryModelStore):
    """Counts pointer reads; ``fail`` makes every read an S3 outage."""

    def __init__(self) -> None:
        super().__init__()
        self.pointer_reads = 0
        self.fail = False

    def read(self, key: str) -> bytes:
        if self.fail:
            raise InfrastructureError(f"S3 get {key}: service unavailable")
        self.pointer_reads += key.endswith("current.json")
        return super().read(key)


@pytest.fixture(scope="module")
def old() -> RegimeModel:
    return RegimeModel.load(get_settings().models_dir / "regime")


@pytest.fixture(scope="module")
def new(old, shifted_regime_model) -> RegimeModel:
    return shifted_regime_model(old, 0.15)  # fitted from scratch: no refit lineage, other hidden states


@pytest.fixture(scope="module")
def vectors():
    engine = FeatureEngine("SYN")
    return [engine.update(bar) for bar in generate("realistic", N_BARS, 3, symbol="SYN").series.bars()]


def container(store: CountingStore, clock: Clock | None = None) -> tuple[RegimeStep, registry.SymbolModels]:
    """A container's cold start: the pinned model, every symbol's own, the step with recheck."""
    models = registry.SymbolModels(store, registry.load_pinned(store, get_settings().models_dir / "regime"),
                                   clock=clock or Clock())
    return RegimeStep(models.default, models_for=models, recheck=models.recheck), models


def run(steps: list[RegimeStep], which, vectors) -> tuple[list, list]:
    """Bars of one symbol through the containers ``which(i)`` picks, sharing one stored state."""
    state, outputs, events = None, [], []
    for i, vector in enumerate(vectors):
        state, out, evs = steps[which(i)].apply(state, vector)
        outputs += [(m.regime.regime, m.regime.confidence, m.regime.model_version) for m in out]
        events += [(e.from_regime, e.to_regime, e.timestamp) for e in evs]
    return outputs, events


def test_an_old_container_switches_at_the_first_state_the_new_version_wrote(old, new, vectors, caplog):
    store = CountingStore()
    registry.publish(store, old, previous=None)
    warm, warm_models = container(store)
    registry.publish(store, new, previous=old.version)  # the operator's publish
    cold, _ = container(store)
    first = len(vectors) // 2 | 1  # the new container's first bar; from then on the two alternate
    store.pointer_reads = 0
    with caplog.at_level(logging.INFO, logger=registry.__name__):
        alternating = run([warm, cold], lambda i: int(i >= first and i % 2 == 1), vectors)
    # the warm container switched at the first state the new one wrote: the same outputs as one
    # container serving the old model up to there and another serving the new one after
    assert alternating == run([RegimeStep(old), RegimeStep(new)], lambda i: int(i >= first), vectors)
    assert {version for _, _, version in alternating[0][first:]} == {new.version}
    assert warm_models("SYN").version == new.version and warm_models("OTHER").version == new.version
    # one recheck per container (the new one read a state the old one wrote, found itself pinned),
    # each reading the symbol's pointer (none) and the global one; none after
    assert store.pointer_reads == 4
    assert f"switched from {old.version} to {new.version}" in caplog.text


def test_without_the_recheck_the_two_versions_take_turns(old, new, vectors):
    """What the recheck prevents (the rollout before 2026-11-28): the filter restarts at every
    turn, so the labels of alternating containers disagree with either model's own."""
    alone = run([RegimeStep(new)], lambda i: 0, vectors)[0]
    turns = run([RegimeStep(old), RegimeStep(new)], lambda i: i % 2, vectors)[0]
    agree = sum(a[0] == b[0] for a, b in zip(alone[WARMUP_BARS:], turns[WARMUP_BARS:], strict=True))
    assert agree < 0.8 * (len(alone) - WARMUP_BARS)


def test_a_container_serving_the_pinned_version_reads_the_pointers_once_a_minute_per_writer(old, new, vectors):
    store = CountingStore()
    registry.publish(store, new, previous=None)
    clock = Clock()
    current, models = container(store, clock)
    stale = RegimeStep(old)  # a container that has not switched (no registry: it never rechecks)
    store.pointer_reads = 0
    state = None
    for i, vector in enumerate(vectors[:40]):
        state, _, _ = (stale, current)[i % 2].apply(state, vector)
    assert store.pointer_reads == 2 and models("SYN").version == new.version  # symbol's, global
    clock.now += registry.RECHECK_SECONDS
    for i, vector in enumerate(vectors[40:44]):
        state, _, _ = (stale, current)[i % 2].apply(state, vector)
    assert store.pointer_reads == 4
    for vector in vectors[44:60]:  # states the pinned version wrote: nothing to read
        state, _, _ = current.apply(state, vector)
    assert store.pointer_reads == 4


def test_an_unreadable_registry_keeps_the_model_served_and_tries_again_later(old, new, vectors, caplog):
    store = CountingStore()
    registry.publish(store, old, previous=None)
    clock = Clock()
    warm, models = container(store, clock)
    registry.publish(store, new, previous=old.version)
    cold, _ = container(store)
    state = None
    for vector in vectors[:3]:
        state, _, _ = cold.apply(state, vector)
    store.fail = True
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        state, out, _ = warm.apply(state, vectors[3])  # the bar is served, by the old model
    assert out[0].regime.model_version == old.version
    assert "not rechecked" in caplog.text and "service unavailable" in caplog.text
    store.fail = False
    state, out, _ = warm.apply(state, vectors[4])  # within the minute: no read, still the old model
    assert out[0].regime.model_version == old.version
    clock.now += registry.RECHECK_SECONDS
    state, out, _ = cold.apply(state, vectors[5])
    state, out, _ = warm.apply(state, vectors[6])
    assert out[0].regime.model_version == new.version


def test_a_symbol_pinned_after_the_cold_start_switches_that_symbol_only(old, new, vectors):
    store = CountingStore()
    registry.publish(store, old, previous=None)
    warm, models = container(store)
    registry.publish(store, new, previous=None, symbol="SYN")
    cold, _ = container(store)
    state, _, _ = cold.apply(None, vectors[0])
    _, out, _ = warm.apply(state, vectors[1])
    assert out[0].regime.model_version == new.version
    assert models("SYN").version == new.version and models("OTHER").version == old.version


def test_recheck_needs_a_per_symbol_lookup(old):
    with pytest.raises(ValueError, match="recheck needs models_for"):
        RegimeStep(old, recheck=lambda symbol, writer: False)
