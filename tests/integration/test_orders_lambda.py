"""The orders Lambda against the local stack (moto server + Redis): SQS FIFO batch in, DynamoDB,
the paper broker's persistent books, Powertools idempotency, the DLQ and EventBridge.

Uses the sample events in events/ (a batch with a malformed and a conflicting intent; the kill
switch; the reconciliation schedule).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore, DynamoPaperLedger
from ensemble_trader.domain.models import OrderStatus
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module

EVENTS = Path(__file__).resolve().parents[2] / "events"


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture()
def orders_env(clean_stack, monkeypatch):
    # Replayed 1999 bars: time-based checks use the intents' bar time.
    monkeypatch.setenv("ET_RISK_CLOCK", "event")
    return clean_stack.stack


def invoke(module: str, event: dict, stack, entry: str = "lambda_handler"):
    handler = load_module("orders", module, fresh=True)
    return getattr(handler, entry)(event, FakeLambdaContext(stack.name("orders"))), handler


def event_types(stack) -> list[str]:
    return [e.get("detail-type") for e in stack.published_events()]


def test_batch_with_malformed_and_conflicting_intents(orders_env):
    stack = orders_env
    event = sample("sqs-order-intents-batch.json")
    response, handler = invoke("handler", event, stack)
    assert response == {"batchItemFailures": []}  # nothing retried, nothing lost

    store = DynamoOrdersStore(settings=stack.settings)
    orders = store.list_orders()
    placed = [o for o in orders if o.status is not OrderStatus.REJECTED]
    assert len(placed) >= 1
    first = min(placed, key=lambda o: o.decision_time)
    assert first.status is OrderStatus.FILLED  # filled at the next bar's price
    assert store.get_position("SPX").quantity != 0

    letters = stack.read_queue("orders-dlq")
    reasons = sorted(letter["reason"].split(":")[0] for letter in letters)
    assert reasons == ["INTENT_CONFLICT", "MALFORMED_INTENT"]
    malformed = next(letter for letter in letters if letter["reason"].startswith("MALFORMED"))
    assert "target_position" in malformed["reason"] and malformed["record"]["messageId"]

    types = event_types(stack)
    assert {"OrderSubmitted", "OrderFilled", "OrderRejected"} <= set(types)

    # The same batch again (SQS redelivery): Powertools idempotency and the deterministic ids
    # make it a no-op at the broker.
    ledger = DynamoPaperLedger(settings=stack.settings)
    before = [r for r in (ledger.get_order(o.client_order_id) for o in placed) if r]
    response, _ = invoke("handler", event, stack)
    assert response == {"batchItemFailures": []}
    assert len(DynamoOrdersStore(settings=stack.settings).list_orders()) == len(orders)
    assert [ledger.get_order(r["client_order_id"])["version"] for r in before] == [r["version"] for r in before]


def test_kill_switch_entry_cancels_working_orders_and_reconcile_entry(orders_env, capsys):
    stack = orders_env
    records = sample("sqs-order-intents-batch.json")["Records"][:2]  # reference bar, then an order
    invoke("handler", {"Records": records}, stack)
    store = DynamoOrdersStore(settings=stack.settings)
    assert [o.status for o in store.list_orders(working_only=True)] == [OrderStatus.SUBMITTED]

    result, _ = invoke("kill_switch", sample("eventbridge-kill-switch-on.json"), stack)
    assert result["active"] and len(result["canceled"]) == 1
    assert store.list_orders(working_only=True) == []
    assert store.load_risk_state().kill_switch

    report, _ = invoke("reconcile", sample("eventbridge-reconcile.json"), stack)
    assert report["failures"] == {}

    capsys.readouterr()
    result, _ = invoke("kill_switch", sample("eventbridge-kill-switch-off.json"), stack)
    assert not result["active"] and not store.load_risk_state().kill_switch
    assert "KillSwitchChanged" in event_types(stack)
    # lifting the switch reports the breaker's state at once (BreakerTripped would otherwise stay
    # in ALARM after a reset until the next intent is routed)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert [doc["account_breaker_state"] for doc in emf if "account_breaker_state" in doc] == [[0.0]]


def test_intents_through_the_fifo_queue_and_the_esm_emulator(orders_env, clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    stack = orders_env
    bodies = [r["body"] for r in sample("sqs-order-intents-batch.json")["Records"]]
    messages = [("SPX", f"dedup-{i}", body.encode()) for i, body in enumerate(bodies)]
    SqsPublisher(settings=stack.settings).send("order-intents", messages)
    esm = clean_stack.emulator(["orders"])
    esm.run_until_drained()
    assert stack.queue_depth("order-intents") == 0
    assert len(stack.read_queue("orders-dlq")) == 2
    assert DynamoOrdersStore(settings=stack.settings).get_position("SPX") is not None


def test_demo_report_summarises_orders_rejections_and_positions(orders_env):
    from ensemble_trader.local.reports.orders import summarize
    from ensemble_trader.runtime.orders import reset_route_stats

    stack = orders_env
    reset_route_stats()
    invoke("handler", sample("sqs-order-intents-batch.json"), stack)
    text = summarize(stack)
    assert "orders λ" in text and "intents routed           3" in text
    assert "MALFORMED_INTENT" in text and "INTENT_CONFLICT" in text
    assert "SPX" in text and "route latency" in text


def test_one_intent_delivered_100_times_through_the_lambda_gives_one_broker_order(orders_env):
    stack = orders_env
    first, second = sample("sqs-order-intents-batch.json")["Records"][:2]
    invoke("handler", {"Records": [first]}, stack)
    handler = load_module("orders", fresh=True)
    from ensemble_trader.runtime import orders as runtime_orders

    runtime_orders.reset_route_stats()
    for batch in range(10):  # ten batches of ten copies (SQS at-least-once, new message ids)
        records = [dict(second, messageId=f"copy-{batch}-{i}") for i in range(10)]
        assert handler.lambda_handler({"Records": records}, FakeLambdaContext(stack.name("orders"))) == {
            "batchItemFailures": []
        }
    placed = [o for o in DynamoOrdersStore(settings=stack.settings).list_orders()
              if o.status is not OrderStatus.REJECTED]
    assert len(placed) == 1
    ledger = DynamoPaperLedger(settings=stack.settings)
    assert len(ledger.open_orders()) == 1 and ledger.get_order(placed[0].client_order_id)["version"] == 1
    stats = runtime_orders.ROUTE_STATS  # the copies answered from the idempotency table are not routed again
    assert (stats.intents, stats.orders, stats.replayed) == (1, 1, 99)


def test_operator_cli_status_and_kill_switch(orders_env, capsys, monkeypatch):
    from datetime import datetime, timedelta

    from ensemble_trader.cli import main

    stack = orders_env
    invoke("handler", {"Records": sample("sqs-order-intents-batch.json")["Records"][:2]}, stack)
    assert main(["orders", "kill-switch", "on", "--reason", "cli drill"]) == 0
    capsys.readouterr()
    assert main(["orders", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["trading_state"] == "HALTED" and status["kill_switch"]["reason"] == "cli drill"
    assert status["working_orders"] == []
    # stamped by the server's clock (the Date of DynamoDB's answer), in whole seconds
    assert datetime.fromisoformat(status["kill_switch"]["issued_at"]).microsecond == 0
    # an "off" in the same second as the "on" would not lift it (a tie never does): a second later
    server_time = DynamoOrdersStore.server_time
    monkeypatch.setattr(DynamoOrdersStore, "server_time", lambda self: server_time(self) + timedelta(seconds=1))
    assert main(["orders", "kill-switch", "off", "--reason", "drill over"]) == 0
    assert main(["orders", "reconcile"]) == 0


@pytest.mark.slow
def test_two_symbols_through_the_esm_every_intent_accounted_for(orders_env, clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher
    from ensemble_trader.domain.models import OrderIntent, Regime, make_intent_id
    from ensemble_trader.marketdata import load_arch
    from ensemble_trader.runtime import orders as runtime
    from ensemble_trader.runtime.orders import build_router

    stack = orders_env
    messages = []
    for series in (load_arch("sp500"), load_arch("nasdaq")):
        for i in range(20):
            bar = series.bar(1000 + i)
            price = bar.close * (0.5 if i == 12 else 1.0)  # one bad print: outside the 10 % collar
            intent = OrderIntent(
                intent_id=make_intent_id("ens", bar.symbol, bar.timestamp, "v1"), strategy_id="ens",
                symbol=bar.symbol, timestamp=bar.timestamp, target_position=0.4 if i < 10 else -0.2,
                reference_price=price, model_version="v1", regime=Regime.SIDEWAYS, confidence=0.6,
            )
            messages.append((intent.symbol, intent.intent_id, intent.model_dump_json().encode()))
    messages.append(("SPX", "garbage-1", b'{"intent_id": "x"}'))
    SqsPublisher(settings=stack.settings).send("order-intents", messages)
    runtime.reset_route_stats()
    clean_stack.emulator(["orders"]).run_until_drained()

    stats = runtime.ROUTE_STATS  # every intent routed or dead-lettered, none lost or doubled
    assert (stats.intents, stats.dead_lettered) == (len(messages) - 1, 1)
    assert len(stack.read_queue("orders-dlq")) == 1
    orders = DynamoOrdersStore(settings=stack.settings).list_orders()
    codes = {o.reject_code for o in orders if o.status is OrderStatus.REJECTED}
    assert "PRICE_COLLAR" in codes and "REFERENCE_MISSING" in codes
    flips = [o for o in orders if o.status is OrderStatus.FILLED and o.side.value == "SELL"]
    assert {o.symbol for o in flips} == {"SPX", "IXIC"}  # long 40 % → short 20 % on both
    assert build_router(stack.settings).reconcile().ok  # our books agree with the paper broker


def test_plot_of_positions_and_rejections(orders_env, tmp_path):
    from ensemble_trader.cli import main

    invoke("handler", sample("sqs-order-intents-batch.json"), orders_env)
    out = tmp_path / "orders.png"
    assert main(["orders", "plot", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
