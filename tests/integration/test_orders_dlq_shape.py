"""The orders Lambda's dead letters against the local stack (moto server + Redis): a bad intent
SQS delivers again is stored once in ``orders-dlq.fifo``; a batch of the wrong shape is refused
(not an SQS batch), answered (no records) or dead-letters its body-less record with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.models import OrderStatus
from ensemble_trader.local.events import FakeLambdaContext, kinesis_record
from ensemble_trader.local.functions import load_module

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture()
def orders_env(clean_stack, monkeypatch):
    monkeypatch.setenv("ET_RISK_CLOCK", "event")  # replayed 1999 bars
    return clean_stack.stack


def sample_records() -> list[dict]:
    return json.loads((EVENTS / "sqs-order-intents-batch.json").read_text())["Records"]


def invoke(stack, event: dict):
    handler = load_module("orders", "handler", fresh=True)
    return handler.lambda_handler(event, FakeLambdaContext(stack.name("orders")))


def test_a_malformed_intent_delivered_three_times_is_one_letter(orders_env):
    stack = orders_env
    malformed = next(r for r in sample_records() if '"reference_price": -1' in r["body"])  # target 7.5 too
    for receive in (1, 2, 3):  # as SQS delivers it again: a new receipt handle, a higher receive count
        record = dict(malformed, receiptHandle=f"{malformed['receiptHandle']}-{receive}",
                      attributes={**malformed["attributes"], "ApproximateReceiveCount": str(receive)})
        assert invoke(stack, {"Records": [record]}) == {"batchItemFailures": []}
    (letter,) = stack.read_queue("orders-dlq")
    assert letter["reason"].startswith("MALFORMED_INTENT") and letter["record"]["messageId"] == malformed["messageId"]
    assert letter["record"]["attributes"]["ApproximateReceiveCount"] == "1"  # the first delivery, whole


def test_a_record_without_a_body_is_dead_lettered_naming_it_and_the_batch_goes_on(orders_env):
    stack = orders_env
    first, second = sample_records()[:2]  # two valid SPX intents, the second filling the first's order
    bodiless = {k: v for k, v in dict(first, messageId="no-body").items() if k != "body"}
    bodiless["attributes"] = {**first["attributes"], "MessageDeduplicationId": "no-body"}
    assert invoke(stack, {"Records": [first, bodiless, second]}) == {"batchItemFailures": []}
    (letter,) = stack.read_queue("orders-dlq")
    assert letter["reason"] == ("MALFORMED_INTENT: invalid SQSRecord: body: missing "
                                "(must be the intent's JSON text)")
    assert letter["record"]["messageId"] == "no-body" and letter["source"] == "orders"
    # both intents of its symbol were routed: the first sets the reference (no order), the one
    # after the body-less record, in the same message group, is placed
    orders = {o.intent_id: o.status for o in DynamoOrdersStore(settings=stack.settings).list_orders()}
    ids = [json.loads(r["body"])["intent_id"] for r in (first, second)]
    assert orders == {ids[0]: OrderStatus.REJECTED, ids[1]: OrderStatus.SUBMITTED}


def test_an_event_from_elsewhere_is_refused_and_an_empty_batch_answered(orders_env):
    stack = orders_env
    kinesis = {"Records": [kinesis_record(b"{}", partition_key="SPX", sequence_number="1",
                                          stream=stack.name("market-data"))]}
    with pytest.raises(InvalidMessageError, match=r"Records\[0\]\.eventSource='aws:kinesis'"):
        invoke(stack, kinesis)
    assert invoke(stack, {"Records": []}) == {"batchItemFailures": []}
    assert stack.read_queue("orders-dlq") == []
    assert DynamoOrdersStore(settings=stack.settings).list_orders() == []
