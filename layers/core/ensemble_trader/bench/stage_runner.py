"""The stage runner's own cost per record, with in-memory fakes (no network, no Redis).

``stage_runner_features_us_per_record`` is one 500-record Kinesis batch of two symbols through
``KinesisStageRunner(FeaturesStep)`` — envelope validation, base64, Bar parsing, grouping,
state load/store, FeatureEngine.update, FeatureVector JSON, the Powertools metrics the handler
emits per record and their flush (:class:`~ensemble_trader.bench.HandlerMetrics`) — divided by 500;
``stage_runner_features_step_us_per_record`` is ``FeaturesStep.apply`` alone on the same bars,
measured in the same run, so the difference is what the runner adds around the step;
``stage_runner_features_packed_us_per_message`` is the same 500 bars packed 10 to a Kinesis
record (:mod:`ensemble_trader.runtime.aggregation`, as a backlog arrives), per message.
"""

from __future__ import annotations

import time

import numpy as np

from ensemble_trader.bench import HandlerMetrics


def _event(n: int, packed: bool = False):
    from ensemble_trader.local.events import kinesis_event, kinesis_record
    from ensemble_trader.marketdata import load_arch
    from ensemble_trader.runtime.aggregation import aggregate

    spx, ixic = load_arch("sp500"), load_arch("nasdaq")
    bars = [s.bar(i) for i in range(n // 2) for s in (spx, ixic)]
    messages = [(b.symbol, b.model_dump_json().encode()) for b in bars]
    if packed:
        messages = aggregate(messages)
    records = [kinesis_record(data, partition_key=key, sequence_number=str(k), stream="bench")
               for k, (key, data) in enumerate(messages)]
    return kinesis_event(records), bars


def run(quick: bool = False) -> dict[str, float | int | str]:
    from ensemble_trader.adapters.memory import (
        MemoryCache,
        MemoryDeadLetters,
        MemoryKeyValueStore,
        MemoryStreamPublisher,
    )
    from ensemble_trader.runtime.features_stage import FeaturesStep
    from ensemble_trader.runtime.stage import KinesisStageRunner, StageStats, StreamSink

    batch = 500
    repeats = 3 if quick else 15
    event, bars = _event(batch)
    packed_event, _ = _event(batch, packed=True)
    runner_ns, packed_ns, step_ns = [], [], []

    def timed(ev) -> float:
        metrics = HandlerMetrics("features")
        runner = KinesisStageRunner(FeaturesStep(), cache=MemoryCache(), dlq=MemoryDeadLetters(),
                                    sink=StreamSink(MemoryStreamPublisher(), "features"),
                                    snapshots=MemoryKeyValueStore(), stats=StageStats(),
                                    metrics=metrics.metrics)
        t0 = time.perf_counter_ns()
        response = metrics.process(runner, ev)
        elapsed = (time.perf_counter_ns() - t0) / batch
        if response["batchItemFailures"] or runner.stats.applied != batch:
            raise RuntimeError(f"benchmark batch failed: {response}, {runner.stats.applied} applied")
        return elapsed

    for _ in range(repeats):
        runner_ns.append(timed(event))
        packed_ns.append(timed(packed_event))
        step = FeaturesStep()
        states = {"SPX": step.new_state("SPX"), "IXIC": step.new_state("IXIC")}
        t0 = time.perf_counter_ns()
        for bar in bars:
            step.apply(states[bar.symbol], bar)
        step_ns.append((time.perf_counter_ns() - t0) / batch)
    return {
        "stage_runner_features_us_per_record": round(float(np.median(runner_ns)) / 1e3, 3),
        "stage_runner_features_step_us_per_record": round(float(np.median(step_ns)) / 1e3, 3),
        "stage_runner_features_packed_us_per_message": round(float(np.median(packed_ns)) / 1e3, 3),
        "stage_runner_batch_size": batch,
    }
