"""Order routing latency: intent → risk checks → paper broker acknowledgement, in process.

Each timed call handles a fresh intent (a new bar, so a new decision and client order id) with
in-memory stores: it fills the previous bar's order at the new price, updates the breaker, plans
the order, runs every pre-trade check, records the order with the conditional put, submits it to
the paper broker and syncs the acknowledgement. The AWS hops (SQS, DynamoDB, EventBridge) are not
included; they dominate in a deployment and are reported by the Lambda's metrics.

Two clocks: ``order_route_us_*`` is wall time (``perf_counter_ns``, the project's convention);
``order_route_cpu_us_*`` is the thread's CPU time, which excludes the time the thread spent
descheduled — on a shared, oversubscribed machine the wall p99 measures the neighbours.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np

from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore, MemoryPaperLedger
from ensemble_trader.bench import percentiles_us
from ensemble_trader.domain.models import OrderIntent, Regime, make_intent_id
from ensemble_trader.domain.risk import RiskLimits
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import OrderRouter


def _intents(n: int, seed: int = 7) -> list[OrderIntent]:
    rng = np.random.default_rng(seed)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    targets = np.clip(rng.normal(0.3, 0.4, n), -1.0, 1.0)
    t0 = datetime(2015, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        ts = t0 + timedelta(days=i)
        out.append(
            OrderIntent(
                intent_id=make_intent_id("bench", "SPX", ts, "v1"), strategy_id="bench",
                symbol="SPX", timestamp=ts, target_position=float(targets[i]),
                reference_price=float(prices[i]), model_version="v1", regime=Regime.BULL,
                confidence=0.8,
            )
        )
    return out


def run(quick: bool = False) -> dict[str, float | int | str]:
    n = 300 if quick else 3_000
    warmup = 50
    intents = _intents(n + warmup)
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    router = OrderRouter(
        MemoryOrdersStore(), PaperBroker(MemoryPaperLedger(), clock), clock,
        limits=RiskLimits(
            clock="event", max_orders_per_symbol=10_000, max_orders_global=10_000,
            daily_loss_reduce=0.5, daily_loss_halt=0.9, drawdown_reduce=0.5, drawdown_halt=0.9,
        ),
        reconcile_on_start=False,
    )
    for it in intents[:warmup]:
        router.handle(it)
    samples, cpu_samples, routed = [], [], 0
    perf, cpu = time.perf_counter_ns, time.thread_time_ns
    for it in intents[warmup:]:
        t0, c0 = perf(), cpu()
        outcome = router.handle(it)
        cpu_samples.append(cpu() - c0)
        samples.append(perf() - t0)
        routed += len(outcome.orders)
    result: dict[str, float | int | str] = dict(percentiles_us(samples, "order_route"))
    result.update(percentiles_us(cpu_samples, "order_route_cpu"))
    result["order_route_orders_acknowledged"] = routed
    result["order_route_intents"] = len(samples)
    return result
