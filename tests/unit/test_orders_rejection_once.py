"""An intent's rejection is published once, however often the intent is delivered.

A rejection of an *order* is stored under its deterministic client order id (a conditional put),
so a redelivery finds it and publishes nothing (``test_risk_rejection_is_recorded_and_published_once``
in test_orders_router.py). The defects these tests pin down are the rejections nothing is stored
for, which every delivery made and published again:

* a dead-lettered record (``MALFORMED_INTENT``, ``INTENT_CONFLICT``, an intent impossible to
  trade), delivered again because its batch's invocation failed after it was dead-lettered: now
  its ``OrderRejected`` goes out once per SQS message (Powertools idempotency on the message id);
* an intent refused as a whole (``STALE_INTENT``, a target refused for equity at or below zero)
  whose delivery failed after the refusal: that delivery published it and the redelivery did
  again; now only the delivery that completes the intent publishes it;
* the same refusal, and the breaker's transition, made again by the next attempt of a delivery
  whose risk-state save lost a race.
"""

from __future__ import annotations

import boto3
import pytest
from ensemble_trader.domain.errors import ConcurrencyError, InfrastructureError
from ensemble_trader.domain.risk import RejectReason
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.runtime.orders import IntentConsumer, rejection_announcer
from moto import mock_aws

from tests.unit.test_orders_handler import fifo_record
from tests.unit.test_orders_router import Rig, intent


class Letters:
    """The dead-letter queue: the reasons sent."""

    def __init__(self):
        self.sent: list[str] = []

    def send(self, record, reason, source):
        self.sent.append(reason)


@pytest.fixture()
def idempotency_table(monkeypatch):
    """Powertools' persistence layer over a moto DynamoDB table shaped as the stack's ``idempotency``."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="et-unit-idempotency", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        yield lambda: DynamoDBPersistenceLayer(table_name="et-unit-idempotency", boto3_client=client)


def consumer(rig: Rig, persistence) -> tuple[IntentConsumer, Letters]:
    letters = Letters()
    return IntentConsumer(rig.router, letters, announce_rejection=rejection_announcer(rig.router, persistence())), letters


def test_a_dead_lettered_record_delivered_again_is_rejected_once(idempotency_table):
    rig = Rig()
    malformed, letters = consumer(rig, idempotency_table)
    record = dict(fifo_record("m-1", "SPX", 1), body='{"symbol": "SPX"}')
    for _ in range(3):  # its batch's invocation failed after it was dead-lettered: SQS delivers it again
        assert malformed.process_record(record, FakeLambdaContext("et-unit-orders"))["dead_lettered"]
    assert [e.reason_code for e in rig.events("OrderRejected")] == [RejectReason.MALFORMED_INTENT.value]
    assert len(letters.sent) == 3  # each refusal still sends (the FIFO DLQ deduplicates) and counts
    other = dict(fifo_record("m-2", "SPX", 2), body='{"symbol": "SPX"}')  # another message: its own rejection
    malformed.process_record(other)
    assert len(rig.events("OrderRejected")) == 2


def test_a_rejection_whose_publish_failed_is_published_by_the_next_delivery(idempotency_table):
    rig = Rig()
    malformed, _ = consumer(rig, idempotency_table)
    record = dict(fifo_record("m-1", "SPX", 1), body='not json')
    real = rig.bus.publish
    rig.bus.publish = lambda events: (_ for _ in ()).throw(InfrastructureError("EventBridge PutEvents: down"))
    with pytest.raises(InfrastructureError):
        malformed.process_record(record)  # the record fails: SQS delivers it again
    rig.bus.publish = real
    malformed.process_record(record)
    malformed.process_record(record)
    assert [e.reason_code for e in rig.events("OrderRejected")] == [RejectReason.MALFORMED_INTENT.value]


def test_without_an_announcer_or_a_message_id_each_refusal_publishes():
    """In process (no idempotency table), or a body given without its record: published directly."""
    rig = Rig()
    plain = IntentConsumer(rig.router, Letters())
    plain.process('{"symbol": "SPX"}')
    plain.process('{"symbol": "SPX"}')
    assert len(rig.events("OrderRejected")) == 2


def test_an_intent_refused_as_stale_whose_delivery_failed_is_rejected_once():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(2, 0.0, 100.0))
    stale = intent(1, 0.5, 100.0)
    real, calls = rig.store.list_orders, []

    def flaky(**kw):  # the store fails once the refusal is made (retiring the intent's unsent orders)
        calls.append(kw)
        if len(calls) == 2:
            raise InfrastructureError("DynamoDB: throttled")
        return real(**kw)

    rig.store.list_orders = flaky
    with pytest.raises(InfrastructureError):
        rig.router.handle(stale)
    assert rig.events("OrderRejected") == []  # the failed delivery announces no refusal
    out = rig.router.handle(stale)  # SQS delivers it again
    assert [r["reason"] for r in out.rejections] == [RejectReason.STALE_INTENT.value]
    assert [e.reason_code for e in rig.events("OrderRejected")] == [RejectReason.STALE_INTENT.value]


def test_an_attempt_that_lost_a_risk_state_race_does_not_announce_its_refusal_or_breaker_move_twice():
    """Equity below zero (a short position, the price up 150 %): the intent's non-flat target is
    refused and the breaker halts; the first attempt's save loses a race and the intent is routed
    again in the same delivery."""
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, -1.0, 100.0))  # SELL 1000
    rig.router.handle(intent(2, -1.0, 100.0))  # filled at 100: short 1000
    assert rig.store.get_position("SPX").quantity == -1000
    tripped = len(rig.events("CircuitBreakerTripped"))
    real, lost = rig.store.save_risk_state, []

    def save(state, *, write_kill_switch=False):
        if not lost:
            lost.append(True)
            raise ConcurrencyError("risk state version is stale (another writer saved first)")
        return real(state, write_kill_switch=write_kill_switch)

    rig.store.save_risk_state = save
    out = rig.router.handle(intent(3, -1.0, 250.0))  # equity 100,000 - 150,000 < 0
    assert lost and out.attempts == 2
    intent_level = [e for e in rig.events("OrderRejected") if e.client_order_id is None]
    assert [e.reason_code for e in intent_level] == [RejectReason.HALTED.value]
    moves = [(e.previous, e.current) for e in rig.events("CircuitBreakerTripped")[tripped:]]
    assert moves == [("ACTIVE", "HALTED")]
    assert rig.store.load_risk_state().breaker_events == tripped + 1
