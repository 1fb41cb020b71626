"""`local drain` interrupted during the orders stage, then run again at once: nothing is lost.

The interrupted intent's Powertools idempotency record stays INPROGRESS until the function
timeout (30 s). The emulator as `local drain` configures it leaves the interrupted batch in flight
for that long (Lambda would leave it for the queue's visibility timeout, 180 s) and gives a failed
message back only after a backoff, so the
next drain routes every intent and dead-letters none. (With the batch made visible at once and
failures retried at once, the ten receives ran out within a second: IdempotencyAlreadyInProgress,
the FIFO group's circuit breaker failing the rest, every intent in orders-dlq.)
"""

from __future__ import annotations

import json
import time

import pytest
from ensemble_trader.cli.local import DRAIN_KINESIS_BATCH, DRAIN_SQS_RETRY_BACKOFF_S


def _intents(count: int) -> list[tuple[str, str, bytes]]:
    from ensemble_trader.domain.models import OrderIntent, Regime, make_intent_id
    from ensemble_trader.marketdata import load_arch

    series = load_arch("sp500")
    out = []
    for i in range(count):
        bar = series.bar(1000 + i)
        intent = OrderIntent(
            intent_id=make_intent_id("ens", bar.symbol, bar.timestamp, "v1"), strategy_id="ens",
            symbol=bar.symbol, timestamp=bar.timestamp, target_position=0.4 if i % 2 else 0.2,
            reference_price=bar.close, model_version="v1", regime=Regime.SIDEWAYS, confidence=0.6,
        )
        out.append((intent.symbol, intent.intent_id, intent.model_dump_json().encode()))
    return out


def _drain_like_the_cli(emulator, stack) -> None:
    """What `local drain` does: rounds until no source holds a message, waiting for those in flight
    (bounded by a generous number of rounds, not by a time)."""
    read: list[int] = []
    for _ in range(2_000):
        read.clear()
        emulator.run_until_drained(on_batch=lambda f, n: read.append(n))
        if not any(emulator.backlog().values()):
            return
        if not read:
            time.sleep(0.5)
    pytest.fail(f"the orders queue never emptied: {emulator.backlog()}")


def test_interrupted_orders_then_drained_again_dead_letters_nothing(clean_stack, monkeypatch):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher
    from ensemble_trader.runtime import orders as runtime

    monkeypatch.setenv("ET_RISK_CLOCK", "event")  # replayed bars: the intents' bar time
    stack = clean_stack.stack
    messages = _intents(6)
    SqsPublisher(settings=stack.settings).send("order-intents", messages)

    handle = runtime.OrderRouter.handle
    calls = []

    def interrupted_once(self, intent):  # Ctrl-C inside the idempotent section of the first intent
        calls.append(intent.intent_id)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return handle(self, intent)

    monkeypatch.setattr(runtime.OrderRouter, "handle", interrupted_once)
    settings = {"release_interrupted_sqs": False, "sqs_retry_backoff_s": DRAIN_SQS_RETRY_BACKOFF_S,
                "kinesis_batch_limit": DRAIN_KINESIS_BATCH}
    with pytest.raises(KeyboardInterrupt):
        clean_stack.emulator(["orders"], **settings).run_until_drained()
    assert stack.queue_depth("order-intents") == len(messages)  # the batch is in flight, not lost

    runtime.reset_route_stats()
    _drain_like_the_cli(clean_stack.emulator(["orders"], **settings), stack)

    dead = stack.read_queue("orders-dlq")
    assert [m.get("reason", m) if isinstance(m, dict) else m for m in dead] == []  # the reasons, if any
    assert runtime.ROUTE_STATS.intents == len(messages) and runtime.ROUTE_STATS.dead_lettered == 0
    assert calls[0] in calls[1:]  # the interrupted intent was routed on the second drain


def test_interrupted_sqs_batch_stays_in_flight_when_not_released(clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    SqsPublisher(settings=clean_stack.stack.settings).send(
        "order-intents", [("SPX", f"held-{n}", json.dumps({"n": n}).encode()) for n in range(3)])

    def interrupted(event, context):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        clean_stack.emulator(["orders"], handlers={"orders": interrupted},
                             release_interrupted_sqs=False).run_until_drained()
    seen = []
    esm = clean_stack.emulator(["orders"], handlers={"orders": lambda e, c: seen.append(e)})
    esm.run_until_drained()
    assert seen == [] and esm.backlog() == {"orders": 3}  # in flight: counted, not delivered
    # (the next test's reset gives them back and deletes them: the emulator noted them in flight)


def test_a_drain_interrupted_after_the_handler_returned_holds_the_batch_for_the_function_timeout(clean_stack):
    """Ctrl-C while the handled batch is being deleted (or a SIGKILL anywhere) skips the explicit
    hold of an interrupted handler: the batch then stayed in flight for what it was received with,
    the queue's own 180 s, and the next `local drain` waited that long. A drain now receives with
    the function timeout (checked on the request, not by waiting)."""
    from ensemble_trader import constants
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    stack = clean_stack.stack
    SqsPublisher(settings=stack.settings).send("order-intents", [("SPX", "after-invoke", b'{"n": 0}')])
    sqs = stack.client("sqs")
    receives: list[dict] = []
    interrupted: list[bool] = []

    def capture(params, **_):
        receives.append(dict(params))

    def ctrl_c(**_):  # lands after the handler returned, while the emulator deletes the batch
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt

    hooks = [("provide-client-params.sqs.ReceiveMessage", capture), ("before-call.sqs.DeleteMessageBatch", ctrl_c)]
    for event, hook in hooks:
        sqs.meta.events.register(event, hook)
    try:
        handled = []
        with pytest.raises(KeyboardInterrupt):
            clean_stack.emulator(["orders"], handlers={"orders": lambda e, c: handled.extend(e["Records"])},
                                 release_interrupted_sqs=False,
                                 sqs_retry_backoff_s=DRAIN_SQS_RETRY_BACKOFF_S).run_until_drained()
    finally:
        for event, hook in hooks:
            sqs.meta.events.unregister(event, hook)
    assert interrupted and len(handled) == 1
    assert stack.queue_depth("order-intents") == 1  # still in flight, not lost
    timeout = constants.function_spec("orders").timeout_seconds
    assert timeout == 30
    assert receives and all(params.get("VisibilityTimeout") == timeout for params in receives)
    # (the next test's reset gives it back: the emulator noted it in flight)


def test_a_failed_sqs_message_comes_back_after_the_backoff_not_at_once(clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    SqsPublisher(settings=clean_stack.stack.settings).send("order-intents", [("SPX", "fails", b'{"n": 0}')])
    calls = []

    def fails(event, context):
        calls.append(event["Records"])
        raise ValueError("not yet")

    esm = clean_stack.emulator(["orders"], handlers={"orders": fails}, sqs_retry_backoff_s=5.0)
    esm.run_until_drained()
    stats = esm.stats()["orders"]
    assert [len(records) for records in calls] == [1]
    assert stats.function_errors == 1 and stats.dead_lettered == 0
    assert esm.backlog() == {"orders": 1}  # waiting out its backoff, not received ten times at once


@pytest.mark.parametrize("bad", [{"sqs_retry_backoff_s": -1.0}, {"kinesis_batch_limit": 0}])
def test_bad_emulator_settings_are_refused_by_name(clean_stack, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        clean_stack.emulator(["orders"], **bad)


def test_a_drain_past_its_deadline_starts_no_further_sqs_batch(clean_stack, monkeypatch):
    """`local drain --timeout` ran minutes over: the deadline was checked only after a whole round
    (up to 100 SQS batches per poll). Now no batch starts once it has passed."""
    import time as real_time
    from types import SimpleNamespace

    from ensemble_trader.adapters.aws.sqs import SqsPublisher
    from ensemble_trader.local import esm as esm_module

    now = [0.0]
    monkeypatch.setattr(esm_module, "time", SimpleNamespace(
        monotonic=lambda: now[0], time=real_time.time, perf_counter=real_time.perf_counter))
    SqsPublisher(settings=clean_stack.stack.settings).send(
        "order-intents", [(f"S{n}", f"late-{n}", json.dumps({"n": n}).encode()) for n in range(25)])
    seen = []

    def slow(event, context):  # each batch takes 10 s of the fake clock
        seen.extend(json.loads(r["body"])["n"] for r in event["Records"])
        now[0] += 10.0

    esm = clean_stack.emulator(["orders"], handlers={"orders": slow}, timer=lambda: 0.0)
    esm.run_until_drained(timeout_s=5.0)
    assert len(seen) == 10 and esm.backlog() == {"orders": 15}
    esm.run_until_drained()  # the next drain carries on
    assert sorted(seen) == list(range(25))


class _SlowMotoClock:
    """moto's clock (``unix_time_millis``) on a slow machine: every reading is a millisecond
    after the one before, so time passes inside a request, the same way every run."""

    def __init__(self) -> None:
        self.now = time.time() * 1000.0

    def __call__(self, dt: object = None) -> float:
        self.now += 1.0
        return self.now


def test_the_backlog_counts_an_interrupted_batch_while_its_visibility_timeout_ends(monkeypatch):
    """The drain after an interrupt waits for the held batch while `backlog()` counts it. The
    count was one GetQueueAttributes for the visible and the in-flight messages, which moto
    evaluates one after the other: a batch turning visible in between was in neither, the queue
    read empty and the drain stopped with nothing routed (seen on a loaded machine: intents=0,
    dead_lettered=0, the queue's six intents undelivered). Here the batch's 30 s hold ends at each
    of a range of points of the counting requests in turn; every count must hold the whole batch,
    and a drain then delivers it."""
    from ensemble_trader import constants
    from ensemble_trader.adapters.aws.sqs import SqsPublisher
    from ensemble_trader.local.esm import EventSourceMappingEmulator
    from ensemble_trader.local.stack import LocalStack
    from moto.sqs import models as moto_sqs

    clock = _SlowMotoClock()
    # in-process moto (thread mode) reads this clock; the session's moto child is another process
    monkeypatch.setattr(moto_sqs, "unix_time_millis", clock)

    def interrupted(event, context):
        raise KeyboardInterrupt

    short: dict[int, list[int]] = {}
    with LocalStack(moto_mode="thread") as stack:
        hold_ms = constants.function_spec("orders").timeout_seconds * 1000.0  # 30 s
        for shift in range(0, 200, 10):  # where in the counting requests (~100 clock readings each) the hold ends
            SqsPublisher(settings=stack.settings).send(
                "order-intents", [("SPX", f"held-{shift}-{n}", json.dumps({"n": n}).encode()) for n in range(6)])
            with pytest.raises(KeyboardInterrupt):
                EventSourceMappingEmulator(stack, ["orders"], handlers={"orders": interrupted},
                                           release_interrupted_sqs=False).run_until_drained()
            ends = clock.now + hold_ms  # the hold's end, at the latest
            clock.now = ends - 300.0 + shift  # skip most of the 30 s
            esm = EventSourceMappingEmulator(stack, ["orders"], handlers={"orders": lambda e, c: None})
            counts = []
            while clock.now < ends + 10.0:
                counts.append(esm.backlog()["orders"])
            if min(counts) < 6:
                short[shift] = counts
            delivered: list[int] = []

            def deliver(event, context, into=delivered):
                into.extend(json.loads(r["body"])["n"] for r in event["Records"])

            EventSourceMappingEmulator(stack, ["orders"], handlers={"orders": deliver}).run_until_drained()
            assert sorted(delivered) == list(range(6)) and esm.backlog() == {"orders": 0}, shift
    assert short == {}  # {shift: the counts}, with a count under the six held (it was 0)
