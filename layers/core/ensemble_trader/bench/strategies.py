"""Many strategies at once: the three Kinesis stages over one batch per bar holding every symbol.

Each of ``STRATEGIES`` symbols (a synthetic *realistic* series per symbol, its own seed) is one
strategy with its own feature engine, regime filter and meta-agent learners. For every bar the
benchmark builds one Kinesis event with one record per symbol — what a stage's Lambda receives
when all strategies tick together — and runs it through the real stage runners of the features,
regime and meta_agent stages in turn (in-memory cache, snapshots, streams and FIFO queue instead
of Redis, DynamoDB, Kinesis and SQS, so the figure is the compute of the stages, not the network;
with the Powertools metrics each handler emits, :class:`~ensemble_trader.bench.HandlerMetrics`):

``strategies_n``
    strategies (symbols) per bar.
``strategies_bar_ms_p50`` / ``_p99``
    one bar for every strategy: three stage invocations, ``strategies_n`` records each.
``strategies_decisions_per_s``
    decisions (order intents) per second of one core, over the bars after the warm-up.
``strategies_records_per_s``
    Kinesis records per second through the three stages (3 × decisions).

Needs the committed agent set and regime model; without them the keys are absent and
``strategies_note`` says why.
"""

from __future__ import annotations

import time
from typing import Any

from ensemble_trader.bench import HandlerMetrics, committed_models, models_missing, percentiles_us
from ensemble_trader.domain.errors import ModelArtifactError
from ensemble_trader.domain.features import WARMUP_BARS as FEATURE_WARMUP_BARS

STRATEGIES = 64
WARMUP_BARS = FEATURE_WARMUP_BARS + 9  # the first decisions come after the features' warm-up


def _event(stream: str, payloads: list[tuple[str, bytes]], bar: int) -> dict[str, Any]:
    from ensemble_trader.local.events import kinesis_event, kinesis_record

    return kinesis_event([
        kinesis_record(data, partition_key=key, sequence_number=f"{bar:08d}{i:04d}", stream=stream)
        for i, (key, data) in enumerate(payloads)
    ])


def run(quick: bool = False) -> dict[str, Any]:
    from ensemble_trader.adapters.memory import (
        MemoryCache,
        MemoryDeadLetters,
        MemoryEventBus,
        MemoryKeyValueStore,
        MemoryQueuePublisher,
        MemoryStreamPublisher,
    )
    from ensemble_trader.domain.meta_agent import MetaAgentStep
    from ensemble_trader.domain.synthetic import generate
    from ensemble_trader.runtime.features_stage import FeaturesStep
    from ensemble_trader.runtime.stage import KinesisStageRunner, QueueSink, StageStats, StreamSink

    try:
        pool, regime = committed_models()
    except ModelArtifactError as exc:
        return models_missing("strategies_note", exc)

    n_bars = WARMUP_BARS + (40 if quick else 200)
    series = [generate("realistic", n_bars, seed=1_000 + k, symbol=f"S{k:03d}").series for k in range(STRATEGIES)]
    streams, queue = MemoryStreamPublisher(), MemoryQueuePublisher()

    def runner(step: Any, sink: Any) -> tuple[KinesisStageRunner, HandlerMetrics]:
        metrics = HandlerMetrics(step.name)
        return KinesisStageRunner(step, cache=MemoryCache(), dlq=MemoryDeadLetters(), sink=sink,
                                  events=MemoryEventBus(), snapshots=MemoryKeyValueStore(), stats=StageStats(),
                                  metrics=metrics.metrics), metrics

    stages = [
        ("market-data", *runner(FeaturesStep(), StreamSink(streams, "features")), "features"),
        ("features", *runner(regime, StreamSink(streams, "market-state")), "market-state"),
        ("market-state", *runner(MetaAgentStep(agents=pool), QueueSink(queue, "order-intents", lambda i: i.intent_id)),
         None),
    ]
    per_bar_ns: list[int] = []
    decisions = 0
    for t in range(n_bars):
        payloads = [(s.symbol, s.bar(t).model_dump_json().encode()) for s in series]
        before = len(queue.queues["order-intents"])
        t0 = time.perf_counter_ns()
        for stream, stage, metrics, output in stages:
            response = metrics.process(stage, _event(stream, payloads, t))
            if response["batchItemFailures"]:
                raise RuntimeError(f"benchmark batch failed in {stream}: {response}")
            if output is not None:
                payloads = streams.streams.pop(output, [])
        elapsed = time.perf_counter_ns() - t0
        if t >= WARMUP_BARS:
            per_bar_ns.append(elapsed)
            decisions += len(queue.queues["order-intents"]) - before
    if decisions != STRATEGIES * (n_bars - WARMUP_BARS):
        raise RuntimeError(f"expected one decision per strategy and bar, got {decisions}")
    seconds = sum(per_bar_ns) / 1e9
    timed = percentiles_us(per_bar_ns, "strategies_bar")
    return {
        "strategies_n": STRATEGIES,
        "strategies_bar_ms_p50": round(timed["strategies_bar_us_p50"] / 1e3, 2),
        "strategies_bar_ms_p99": round(timed["strategies_bar_us_p99"] / 1e3, 2),
        "strategies_decisions_per_s": round(decisions / seconds),
        "strategies_records_per_s": round(3 * decisions / seconds),
        "strategies_bars_timed": len(per_bar_ns),
    }
