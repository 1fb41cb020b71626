"""The orders Lambda given a batch of the wrong shape, through functions/orders/handler.py.

* An event that is not an SQS batch (no ``Records`` list, a Kinesis event, records that are not
  SQS records) did not come from the queue: nothing of it can be redriven, so the invocation
  fails with an InvalidMessageError naming what was wrong, and nothing is routed or dead-lettered.
* An SQS event with no records is answered with no batch-item failures, and logged.
* An SQS record without a usable body is dead-lettered (``MALFORMED_INTENT``, naming ``body``)
  and the rest of the batch is processed: it no longer becomes a batch-item failure that SQS
  moves to the DLQ after its receives with no reason.
"""

from __future__ import annotations

import logging

import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from ensemble_trader.adapters.memory import MemoryDeadLetters
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.models import OrderStatus
from ensemble_trader.local.events import FakeLambdaContext, kinesis_record
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.orders import IntentConsumer, OrdersService

from tests.unit.test_orders_handler import fifo_record
from tests.unit.test_orders_router import Rig, intent


@pytest.fixture()
def orders():
    """The orders handler over a router on memory stores; ``letters`` is its dead-letter queue."""
    rig = Rig()
    rig.warm("SPX", 100.0)
    rig.warm("IXIC", 50.0)
    handler = load_module("orders", "handler", fresh=True)
    letters = MemoryDeadLetters()
    service = OrdersService(router=rig.router, consumer=IntentConsumer(rig.router, letters),
                            idempotency_config=IdempotencyConfig())
    handler.service = lambda: service  # the module is loaded fresh for each test

    class Orders:
        def __init__(self) -> None:
            self.rig, self.letters = rig, letters

        def invoke(self, event):
            return handler.lambda_handler(event, FakeLambdaContext("et-dev-orders"))

        def placed(self) -> list[str]:
            return sorted(o.intent_id for o in rig.store.list_orders() if o.status is not OrderStatus.REJECTED)

    return Orders()


def record(message_id: str, it, seq: int) -> dict:
    return dict(fifo_record(message_id, it.symbol, seq), body=it.model_dump_json())


@pytest.mark.parametrize(("event", "named"), [
    ({"foo": 1}, r"invalid SQSEvent: Records: missing"),
    ({"Records": "x"}, r"invalid SQSEvent: Records='str': must be a list of SQS records"),
    ([1, 2], r"invalid SQSEvent: Records: missing"),
    ({"Records": [kinesis_record(b"{}", partition_key="SPX", sequence_number="1", stream="et-dev-intents")]},
     r"Records\[0\]\.eventSource='aws:kinesis': must be 'aws:sqs'"),
    ({"Records": [fifo_record("a", "SPX", 1), 7]}, r"Records\[1\]='int': must be an SQS record"),
])
def test_an_event_that_is_not_an_sqs_batch_is_refused_and_nothing_is_processed(orders, event, named):
    with pytest.raises(InvalidMessageError, match=named):
        orders.invoke(event)
    assert orders.letters.letters == [] and orders.placed() == []


def test_a_kinesis_batch_names_at_most_three_records(orders):
    event = {"Records": [kinesis_record(b"{}", partition_key="SPX", sequence_number=str(i), stream="s")
                         for i in range(6)]}
    with pytest.raises(InvalidMessageError) as raised:
        orders.invoke(event)
    assert [p.field for p in raised.value.problems] == [
        "Records[0].eventSource", "Records[1].eventSource", "Records[2].eventSource", "Records"]
    assert "3 more records" in str(raised.value)


def test_an_empty_batch_is_answered_with_no_failures_and_logged(orders, caplog):
    caplog.set_level(logging.WARNING, logger="ensemble_trader.runtime.orders")
    assert orders.invoke({"Records": []}) == {"batchItemFailures": []}
    assert any("no records" in r.getMessage() for r in caplog.records)
    assert orders.letters.letters == []


@pytest.mark.parametrize(("body", "named"), [
    (None, "body: missing"),
    ({"intent_id": "x"}, "body='dict': must be the intent's JSON text"),
    (12, "body='int': must be the intent's JSON text"),
])
def test_a_record_without_a_usable_body_is_dead_lettered_and_the_rest_of_the_batch_goes_on(orders, body, named):
    first, later, other = intent(1, 0.5, 100.0), intent(2, 0.4, 101.0), intent(1, 0.4, 51.0, "IXIC")
    bad = fifo_record("spx-bad", "SPX", 2)
    if body is None:
        del bad["body"]
    else:
        bad["body"] = body
    event = {"Records": [record("spx-1", first, 1), bad, record("ixic-1", other, 3), record("spx-2", later, 4)]}
    assert orders.invoke(event) == {"batchItemFailures": []}

    ((letter_record, reason, source),) = orders.letters.letters
    assert source == "orders" and letter_record == bad  # the record as delivered, to inspect
    assert reason.startswith("MALFORMED_INTENT: invalid SQSRecord: ") and named in reason
    # the symbol's later intent is not held back by it, and the other symbol's goes on
    assert orders.placed() == sorted([first.intent_id, later.intent_id, other.intent_id])
    (rejected,) = orders.rig.events("OrderRejected")
    assert rejected.reason_code == "MALFORMED_INTENT" and rejected.intent_id is None
