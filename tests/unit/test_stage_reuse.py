"""A runner of a pure step reuses the state it last decoded or stored while the stored bytes are
those: the same decisions as decoding every batch, with fewer decodes."""

from __future__ import annotations

import json

import pytest
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryQueuePublisher,
    MemoryStreamPublisher,
)
from ensemble_trader.bench import committed_models
from ensemble_trader.domain.bandits import POLICIES
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime import stage
from ensemble_trader.runtime.features_stage import FeaturesStep
from ensemble_trader.runtime.stage import KinesisStageRunner, QueueSink, StageStats, StreamSink, encode_cached

from tests.unit.test_meta_agent import market, path
from tests.unit.test_stage_runner import TallyStep, bar_json, event_of


class CountingTally(TallyStep):
    """The tally step (its ``apply`` returns a new dict), counting its decodes."""

    def __init__(self, pure: bool) -> None:
        super().__init__()
        self.pure_states = pure
        self.loads = 0

    def load(self, data: bytes) -> dict:
        self.loads += 1
        return super().load(data)


def tally_runner(step: TallyStep, cache: MemoryCache, snapshots: MemoryKeyValueStore) -> KinesisStageRunner:
    return KinesisStageRunner(step, cache=cache, dlq=MemoryDeadLetters(), sink=StreamSink(MemoryStreamPublisher(), "out"),
                              snapshots=snapshots, stats=StageStats())


def test_a_pure_step_decodes_only_states_it_did_not_write_itself():
    step, cache, snapshots = CountingTally(pure=True), MemoryCache(), MemoryKeyValueStore()
    runner = tally_runner(step, cache, snapshots)
    for i in range(4):
        assert runner.process(event_of([("AAA", bar_json("AAA", i))], 1000 + i)) == {"batchItemFailures": []}
    assert step.loads == 0  # each batch found the bytes it had stored
    # another container moves the state on: the bytes differ, so they are decoded
    other = tally_runner(TallyStep(), cache, snapshots)
    other.process(event_of([("AAA", bar_json("AAA", 4))], 2000))
    runner.process(event_of([("AAA", bar_json("AAA", 5))], 2001))
    assert step.loads == 1
    version, data = stage.decode_cached(cache.data["tally:AAA"])
    assert json.loads(data)["count"] == 6 and version == 6


def test_a_step_not_declared_pure_is_decoded_every_batch():
    step = CountingTally(pure=False)
    runner = tally_runner(step, MemoryCache(), MemoryKeyValueStore())
    for i in range(4):
        runner.process(event_of([("AAA", bar_json("AAA", i))], 1000 + i))
    assert step.loads == 3


def test_a_state_is_reused_only_for_its_own_bytes_and_the_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(stage, "DECODED_MEMORY", 2)
    step, cache = CountingTally(pure=True), MemoryCache()
    runner = tally_runner(step, cache, MemoryKeyValueStore())
    for i, symbol in enumerate(("AAA", "BBB", "CCC")):
        runner.process(event_of([(symbol, bar_json(symbol, 0))], 1000 + i))
    assert list(runner._decoded) == ["BBB", "CCC"]  # AAA, the oldest, was dropped
    runner.process(event_of([("AAA", bar_json("AAA", 1))], 1010))
    assert step.loads == 1
    # a cache entry edited behind the runner's back (same version, other bytes) is decoded
    version, data = stage.decode_cached(cache.data["tally:CCC"])
    edited = json.loads(data) | {"total": 1.0}
    cache.data["tally:CCC"] = encode_cached(version, json.dumps(edited).encode())
    runner.process(event_of([("CCC", bar_json("CCC", 1))], 1011))
    assert step.loads == 2
    assert json.loads(stage.decode_cached(cache.data["tally:CCC"])[1])["total"] == pytest.approx(1.0 + 101.0)


def test_the_memory_is_bounded_by_the_bytes_of_the_states_too(monkeypatch):
    step, cache = CountingTally(pure=True), MemoryCache()
    runner = tally_runner(step, cache, MemoryKeyValueStore())
    runner.process(event_of([("AAA", bar_json("AAA", 0))], 1000))
    size = len(stage.decode_cached(cache.data["tally:AAA"])[1])
    monkeypatch.setattr(stage, "DECODED_MEMORY_BYTES", 4 * size + 10)  # four states of this size fit
    for i, symbol in enumerate(("BBB", "CCC", "DDD", "EEE")):
        runner.process(event_of([(symbol, bar_json(symbol, 0))], 1001 + i))
    assert list(runner._decoded) == ["BBB", "CCC", "DDD", "EEE"] and runner._decoded_bytes == 4 * size
    monkeypatch.setattr(stage, "DECODED_MEMORY_BYTES", 3 * size)  # a state above a quarter is not kept
    runner.process(event_of([("FFF", bar_json("FFF", 0))], 1010))
    assert "FFF" not in runner._decoded and runner._decoded_bytes == 4 * size
    runner.process(event_of([("FFF", bar_json("FFF", 1))], 1011))
    assert step.loads == 1  # decoded, as every batch of a state too large to keep


def _pipeline_intents(pure: bool, monkeypatch) -> tuple[list[bytes], int]:
    """Features -> regime -> meta-agent over three synthetic symbols, with a redelivered batch and
    a failed cache write on the way: the order intents' bodies and how many states were decoded."""
    monkeypatch.setattr(MetaAgentStep, "pure_states", pure, raising=False)
    decodes = []
    load = MetaAgentStep.load
    monkeypatch.setattr(MetaAgentStep, "load", staticmethod(lambda data: decodes.append(1) or load(data)))
    pool, regime = committed_models()
    symbols = ("AAA", "BBB", "CCC")
    series = [generate("realistic", WARMUP_BARS + 40, seed=7 + k, symbol=s).series for k, s in enumerate(symbols)]
    streams, queue = MemoryStreamPublisher(), MemoryQueuePublisher()
    meta_cache = MemoryCache()

    def runner(step, sink, cache=None):
        return KinesisStageRunner(step, cache=cache or MemoryCache(), dlq=MemoryDeadLetters(), sink=sink,
                                  events=MemoryEventBus(), snapshots=MemoryKeyValueStore(), stats=StageStats())

    stages = [("market-data", runner(FeaturesStep(), StreamSink(streams, "features")), "features"),
              ("features", runner(regime, StreamSink(streams, "market-state")), "market-state"),
              ("market-state", runner(MetaAgentStep(agents=pool),
                                      QueueSink(queue, "order-intents", lambda i: i.intent_id), meta_cache), None)]
    for t in range(WARMUP_BARS + 40):
        payloads = [(s.symbol, s.bar(t).model_dump_json().encode()) for s in series]
        for stream, stage_runner, output in stages:
            event = kinesis_event([kinesis_record(data, partition_key=key, sequence_number=f"{t:06d}{i:03d}",
                                                  stream=stream) for i, (key, data) in enumerate(payloads)])
            if output is None and t == WARMUP_BARS + 20:
                meta_cache.failures.fail("set_many")  # committed in the snapshots only
            stage_runner.process(event)
            if output is None and t == WARMUP_BARS + 10:
                stage_runner.process(event)  # a redelivery
            if output is not None:
                payloads = streams.streams.pop(output, [])
    return [body for _, _, body in queue.queues["order-intents"]], len(decodes)


def test_the_meta_agent_decides_alike_with_and_without_reusing_its_states(monkeypatch):
    reused, reused_decodes = _pipeline_intents(True, monkeypatch)
    decoded, all_decodes = _pipeline_intents(False, monkeypatch)
    assert len(reused) >= 3 * 35 and reused == decoded
    assert all_decodes > 3 * (WARMUP_BARS + 30) and reused_decodes <= 3  # only after the failed write-back


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize(("mode", "context", "feedback"), [("blend", "regime", "full"), ("select", "regime", "bandit"),
                                                           ("blend", "probability", "full")])
def test_the_meta_agent_step_never_changes_the_state_it_is_given(policy, mode, context, feedback):
    """What ``pure_states`` promises the runner: every policy draws from copies of its learners."""
    assert MetaAgentStep.pure_states
    step = MetaAgentStep(MetaAgentConfig.create(policy=policy, mode=mode, context=context, feedback=feedback,
                                                min_regime_rounds=3))
    prices, regimes, targets = path(60, seed=3)
    state = None
    for i, price in enumerate(prices):
        before = None if state is None else step.dump(state)
        new, decision = step.decide(state, market(i, price, regimes[i]), targets[i])
        if state is not None:
            assert step.dump(state) == before, f"bar {i} changed the state it was given"
            again, twice = step.decide(state, market(i, price, regimes[i]), targets[i])
            assert step.dump(again) == step.dump(new) and twice.intent == decision.intent
        state = new
