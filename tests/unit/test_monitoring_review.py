"""Monitoring review: what the orders consumer reports for every intent, and the documented metrics."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.risk import RiskState, TradingState
from ensemble_trader.runtime.orders import IntentConsumer, SubmitInFlightError

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.calls.append((name, value))

    def values(self, name: str) -> list[float]:
        return [value for metric, value in self.calls if metric == name]


class StateStore:
    def __init__(self, state: RiskState) -> None:
        self.state = state

    def load_risk_state(self) -> RiskState:
        return self.state


class FakeRouter:
    events = None

    def __init__(self, state: RiskState) -> None:
        self.store = StateStore(state)


def _batch() -> dict:
    event = json.loads((ROOT / "events" / "sqs-order-intents-batch.json").read_text())
    good = event["Records"][0]
    bad = copy.deepcopy(good)
    body = json.loads(bad["body"])
    body["symbol"], body["intent_id"] = "QQQ", "b" * 32
    bad["body"], bad["messageId"] = json.dumps(body), "bad-1"
    bad["attributes"]["MessageGroupId"] = "QQQ"
    return {"Records": [good, bad]}


def _route(intent: dict) -> dict:
    if intent["symbol"] == "QQQ":
        raise InfrastructureError("broker unreachable")
    return {"orders": [], "rejections": [], "fills": 0}


def _process_batch(consumer: IntentConsumer) -> dict:
    """The sample batch through the consumer as the orders handler runs it (FIFO, group skipping)."""
    return process_partial_response(
        event=_batch(), record_handler=lambda record: consumer.process(record.body, record.raw_event),
        processor=SqsFifoPartialProcessor(skip_group_on_error=True),
    )


def test_an_intent_that_fails_is_counted_and_still_reported_as_a_batch_item_failure():
    metrics = Recorder()
    consumer = IntentConsumer(FakeRouter(RiskState()), dead_letters=None, route=_route, metrics=metrics)
    response = _process_batch(consumer)
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    assert metrics.values("intents_failed") == [1]
    assert metrics.values("intents_routed") == [1]


def test_an_intent_left_for_its_next_delivery_is_counted_as_deferred_not_failed():
    class Short:
        def get_remaining_time_in_millis(self) -> int:
            return 1

    metrics = Recorder()
    consumer = IntentConsumer(FakeRouter(RiskState()), dead_letters=None, route=_route, metrics=metrics)
    record = _batch()["Records"][0]
    try:
        consumer.process(record["body"], record, Short())
    except InfrastructureError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the intent should have been left for its next delivery")
    assert metrics.values("intents_deferred") == [1]
    assert metrics.values("intents_failed") == []


def test_an_intent_waiting_for_an_earlier_submit_in_flight_is_deferred_not_failed():
    """SubmitInFlightError is an expected wait (an earlier intent's submit may still land), retried
    by SQS like any batch-item failure, but it must not count as a failed intent (alarmed)."""

    def in_flight(intent: dict) -> dict:
        if intent["symbol"] == "QQQ":
            raise SubmitInFlightError("c" * 32, intent["intent_id"], 1.0, 5.0)
        return {"orders": [], "rejections": [], "fills": 0}

    metrics = Recorder()
    consumer = IntentConsumer(FakeRouter(RiskState()), dead_letters=None, route=in_flight, metrics=metrics)
    response = _process_batch(consumer)
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    assert metrics.values("intents_deferred") == [1]
    assert metrics.values("intents_failed") == []
    assert metrics.values("intents_routed") == [1]


def test_every_routed_intent_reports_the_breaker_state_and_the_kill_switch():
    for state, breaker, kill in (
        (RiskState(), 0, 0),
        (RiskState(trading_state=TradingState.REDUCING), 1, 0),
        (RiskState(trading_state=TradingState.HALTED), 2, 0),
        (RiskState(kill_switch=True, kill_switch_reason="ops"), 0, 1),
    ):
        metrics = Recorder()
        consumer = IntentConsumer(FakeRouter(state), dead_letters=None, route=_route, metrics=metrics)
        consumer.process(_batch()["Records"][0]["body"])
        assert metrics.values("account_breaker_state") == [breaker], state
        assert metrics.values("kill_switch_active") == [kill], state


def test_the_state_metrics_are_skipped_when_the_state_cannot_be_read():
    class Broken:
        events = None

        class store:  # noqa: N801
            @staticmethod
            def load_risk_state():
                raise InfrastructureError("table unreachable")

    metrics = Recorder()
    consumer = IntentConsumer(Broken(), dead_letters=None, route=_route, metrics=metrics)
    consumer.process(_batch()["Records"][0]["body"])  # the intent was routed: it does not fail now
    assert metrics.values("intents_routed") == [1]
    assert metrics.values("account_breaker_state") == []


def test_cold_start_is_documented_with_its_real_dimensions():
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    row = next((line for line in deployment.splitlines() if "`ColdStart`" in line), None)
    assert row is not None
    assert "function_name" in row and "service" in row
    from ensemble_trader.runtime import observability

    assert "ColdStart" in observability.__doc__


def test_an_item_the_orders_store_refuses_fails_the_intent_instead_of_dead_lettering_it_as_malformed():
    """A DataError from routing meant "impossible to trade" and was dead-lettered MALFORMED_INTENT,
    also when it was the store refusing an item, possibly after the order went out: the intent
    fails (counted) and is redelivered, to the queue's DLQ after its receives, whole."""
    from ensemble_trader.domain.errors import StoreRefusedError

    class NoDeadLetters:
        def send(self, *args, **kwargs):
            raise AssertionError("dead-lettered")

    def refused(intent: dict) -> dict:
        raise StoreRefusedError("DynamoDB put order: refused by DynamoDB, not retried: ValidationException")

    metrics = Recorder()
    consumer = IntentConsumer(FakeRouter(RiskState()), dead_letters=NoDeadLetters(), route=refused, metrics=metrics)
    record = _batch()["Records"][0]
    try:
        consumer.process(record["body"], record)
    except StoreRefusedError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the intent should have failed")
    assert metrics.values("intents_failed") == [1]


def test_dynamodb_refusing_a_request_is_a_store_refusal():
    from botocore.exceptions import ClientError
    from ensemble_trader.adapters.aws.dynamodb import translate
    from ensemble_trader.domain.errors import DataError, StoreRefusedError

    exc = ClientError({"Error": {"Code": "ValidationException", "Message": "Item size has exceeded"}}, "PutItem")
    refused = translate(exc, "DynamoDB put order")
    assert isinstance(refused, StoreRefusedError) and isinstance(refused, DataError)
