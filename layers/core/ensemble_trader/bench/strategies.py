"""Many strategies at once: the three Kinesis stages over one batch per bar holding every symbol.

Each of ``STRATEGIES`` symbols (a synthetic *realistic* series per symbol, its own seed) is one
strategy with its own feature engine, regime filter and meta-agent learners. For every bar the
benchmark builds one Kinesis event with one record per symbol — what a stage's Lambda receives
when all strategies tick together — and runs it through the real stage runners of the features,
regime and meta_agent stages in turn, wired as their handlers wire them (but the regime stage's
per-symbol model registry, one dictionary lookup a record, absent here): the regime stage admits
each record's features (``admit_features``) and writes every MarketState's regime-history row
(``MarketStateSink``); the meta-agent stage writes every decision row with its explanation
(``DecisionSink``), one regret metric set per symbol (``EmfSymbolMetrics``) and its snapshots
keyed as in ``bandit-state`` (``BanditSnapshots``). In-memory cache, tables, streams and FIFO
queue stand in for Redis, DynamoDB, Kinesis and SQS, so the figure is the compute of the stages,
not the network; with the Powertools metrics each handler emits
(:class:`~ensemble_trader.bench.HandlerMetrics`):

``strategies_n``
    strategies (symbols) per bar.
``strategies_bar_ms_p50`` / ``_p99``
    one bar for every strategy: three stage invocations, ``strategies_n`` records each.
``strategies_decisions_per_s``
    bars handled end to end per second of one core — each strategy's bar through all three
    stages to its order intent — over the bars after the warm-up.
``strategies_records_per_s``
    Kinesis records per second counted per stage (3 × decisions: each bar is one record in each
    of the three stages), the throughput each stage sustains while the other two share the core.
``strategies_bare_decisions_per_s``
    the same loop with the stages' bare sinks (no regime-history rows, decision rows, per-symbol
    metrics or bandit-state keys), timed in the same run, bar for bar alternately: what the
    handlers' extra writes cost (``strategies_wiring_cost`` = 1 − wired / bare).

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


def _pipeline(pool: Any, regime: Any, wired: bool) -> tuple[list[tuple[str, Any, Any, str | None]], Any, Any]:
    """The three stage runners in pipeline order (``wired``: as the handlers wire them), the
    streams between them and the FIFO queue."""
    from ensemble_trader.adapters.memory import (
        MemoryCache,
        MemoryDeadLetters,
        MemoryEventBus,
        MemoryKeyValueStore,
        MemoryQueuePublisher,
        MemoryStreamPublisher,
    )
    from ensemble_trader.domain.meta_agent import MetaAgentStep
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.runtime.features_stage import FeaturesStep
    from ensemble_trader.runtime.meta_agent_stage import BanditSnapshots, DecisionSink, EmfSymbolMetrics
    from ensemble_trader.runtime.regime_registry import MarketStateSink, admit_features
    from ensemble_trader.runtime.stage import KinesisStageRunner, QueueSink, StageStats, StreamSink

    streams, queue = MemoryStreamPublisher(), MemoryQueuePublisher()

    def runner(step: Any, sink: Any) -> tuple[KinesisStageRunner, HandlerMetrics]:
        metrics = HandlerMetrics(step.name)
        return KinesisStageRunner(step, cache=MemoryCache(), dlq=MemoryDeadLetters(), sink=sink,
                                  events=MemoryEventBus(), snapshots=MemoryKeyValueStore(), stats=StageStats(),
                                  metrics=metrics.metrics), metrics

    if wired:
        regime = RegimeStep(regime.detector.model, regime.rule, admit=admit_features)
    features = runner(FeaturesStep(), StreamSink(streams, "features"))
    states = runner(regime, StreamSink(streams, "market-state"))
    decide = runner(MetaAgentStep(agents=pool), QueueSink(queue, "order-intents", lambda i: i.intent_id))
    if wired:
        states[0].sink = MarketStateSink(states[0].sink, states[0].snapshots)
        meta, metrics = decide
        store = meta.snapshots
        meta.sink = DecisionSink(meta.sink, store, metrics.metrics, symbol_metrics=EmfSymbolMetrics(metrics.metrics))
        meta.snapshots = BanditSnapshots(store)
    stages = [("market-data", *features, "features"), ("features", *states, "market-state"),
              ("market-state", *decide, None)]
    return stages, streams, queue


def _bar(stages: list[tuple[str, Any, Any, str | None]], streams: Any, payloads: list[tuple[str, bytes]],
         t: int) -> int:
    """One bar of every strategy through the three stages; nanoseconds taken."""
    t0 = time.perf_counter_ns()
    for stream, stage, metrics, output in stages:
        response = metrics.process(stage, _event(stream, payloads, t))
        if response["batchItemFailures"]:
            raise RuntimeError(f"benchmark batch failed in {stream}: {response}")
        if output is not None:
            payloads = streams.streams.pop(output, [])
    return time.perf_counter_ns() - t0


def run(quick: bool = False) -> dict[str, Any]:
    from ensemble_trader.domain.synthetic import generate

    try:
        pool, regime = committed_models()
    except ModelArtifactError as exc:
        return models_missing("strategies_note", exc)

    n_bars = WARMUP_BARS + (40 if quick else 200)
    series = [generate("realistic", n_bars, seed=1_000 + k, symbol=f"S{k:03d}").series for k in range(STRATEGIES)]
    runs = {wired: _pipeline(pool, regime, wired) for wired in (True, False)}
    per_bar_ns: dict[bool, list[int]] = {True: [], False: []}
    timed_intents = dict.fromkeys(runs, 0)
    for t in range(n_bars):
        payloads = [(s.symbol, s.bar(t).model_dump_json().encode()) for s in series]
        for wired in ((True, False) if t % 2 else (False, True)):  # alternate which goes first
            stages, streams, queue = runs[wired]
            before = len(queue.queues["order-intents"])
            elapsed = _bar(stages, streams, payloads, t)
            if t >= WARMUP_BARS:
                per_bar_ns[wired].append(elapsed)
                timed_intents[wired] += len(queue.queues["order-intents"]) - before
    decisions = STRATEGIES * (n_bars - WARMUP_BARS)
    if any(n != decisions for n in timed_intents.values()):
        raise RuntimeError(f"expected {decisions} decisions (one per strategy and bar), got {timed_intents}")
    seconds = {wired: sum(ns) / 1e9 for wired, ns in per_bar_ns.items()}
    timed = percentiles_us(per_bar_ns[True], "strategies_bar")
    return {
        "strategies_n": STRATEGIES,
        "strategies_bar_ms_p50": round(timed["strategies_bar_us_p50"] / 1e3, 2),
        "strategies_bar_ms_p99": round(timed["strategies_bar_us_p99"] / 1e3, 2),
        "strategies_decisions_per_s": round(decisions / seconds[True]),
        "strategies_records_per_s": round(3 * decisions / seconds[True]),
        "strategies_bare_decisions_per_s": round(decisions / seconds[False]),
        "strategies_wiring_cost": round(1.0 - seconds[False] / seconds[True], 3),
        "strategies_bars_timed": len(per_bar_ns[True]),
    }
