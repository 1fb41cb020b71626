"""What the deadline guard of every AWS client refuses is named where the operator reads it.

The guard (:mod:`ensemble_trader.adapters.aws.clients`) knows only the service and operation
(``DynamoDB PutItem (attempt not started)``). The DynamoDB stores lead it with the table and the
store operation, as the call's other errors are, and keep it a DeadlineExceededError with the
guard's figures; the batch publishers' retry loop counts only the attempts it actually sent.
Real botocore clients, answered without a network (a ``before-send`` handler after the guard's),
on a fake clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ensemble_trader.adapters.aws._retry import resend_failed
from ensemble_trader.adapters.aws.clients import DEFAULT_CONFIG, attempt_seconds
from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore, translate
from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore, DynamoPaperLedger
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.models import Order, Position
from ensemble_trader.domain.risk import RiskState
from ensemble_trader.runtime.deadline import DeadlineExceededError, invocation_deadline
from ensemble_trader.runtime.settings import Settings

from tests.unit import test_invocation_deadline as fake_aws
from tests.unit.test_invocation_deadline import Answers, Context

clock = fake_aws.clock  # the fake clock fixture, which botocore's retry sleep advances

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused", region="us-east-1")
ATTEMPT_S = attempt_seconds(DEFAULT_CONFIG)  # 7.5 s
T0 = datetime(2024, 1, 2, tzinfo=UTC)
NOT_STARTED_TAIL = ("DynamoDB {op} (attempt not started): stopped with 7.40 s of the invocation left, under the "
                    "7.50 s one attempt can take (connect 2 s + read 5 s + 0.5 s)")


def _dynamodb(answers: Answers):
    return fake_aws._client("dynamodb", answers)


def _order() -> Order:
    return Order.model_validate({"client_order_id": "order-0001", "intent_id": "i-1", "strategy_id": "ensemble",
                                 "symbol": "SPX", "side": "BUY", "quantity": 1.0, "created_at": T0.isoformat(),
                                 "updated_at": T0.isoformat()})


def _paper_record(version: int = 1) -> dict:
    return {"client_order_id": "p-1", "symbol": "SPX", "side": "BUY", "quantity": 1.0, "filled_quantity": 0.0,
            "fees_paid": 0.0, "average_fill_price": None, "open": True, "version": version}


KV = {
    "put_item": (lambda s: s.put_item("stage-state", {"pk": "a", "sk": "b", "version": 4}, expected_version=3),
                 "DynamoDB put_item et-unit-stage-state (expected version 3)", "PutItem"),
    "get_item": (lambda s: s.get_item("stage-state", {"pk": "a", "sk": "b"}),
                 "DynamoDB get_item et-unit-stage-state {'pk': 'a', 'sk': 'b'}", "GetItem"),
    "delete_item": (lambda s: s.delete_item("stage-state", {"pk": "a", "sk": "b"}),
                    "DynamoDB delete_item et-unit-stage-state", "DeleteItem"),
    "query": (lambda s: s.query("stage-state", "pk", "a"), "DynamoDB query et-unit-stage-state", "Query"),
    "put_items": (lambda s: s.put_items("stage-state", [{"pk": "a", "sk": "b"}]),
                  "DynamoDB batch_write_item et-unit-stage-state", "BatchWriteItem"),
    "get_versions": (lambda s: s.get_versions("stage-state", [{"pk": "a", "sk": "b"}]),
                     "DynamoDB batch_get_item et-unit-stage-state", "BatchGetItem"),
    "put_new_items": (lambda s: s.put_new_items("stage-state", [{"pk": "a", "sk": "b"}]),
                      "DynamoDB put new items et-unit-stage-state", "PutItem"),
}

ORDERS = {
    "get_order": (lambda s: s.get_order("order-0001"),
                  "DynamoDB get order order-0001 (table et-unit-orders, region us-east-1)", "GetItem"),
    "create_order": (lambda s: s.create_order(_order()),
                     "DynamoDB create order order-0001 (table et-unit-orders, region us-east-1)",
                     "TransactWriteItems"),
    "update_order": (lambda s: s.update_order(_order(), expected_status=_order().status, expected_filled=0.0),
                     "DynamoDB update order order-0001 (table et-unit-orders, region us-east-1)", "PutItem"),
    "list_orders": (lambda s: s.list_orders(working_only=True),
                    "DynamoDB get working index (table et-unit-orders, region us-east-1)", "GetItem"),
    "list_positions": (lambda s: s.list_positions(),
                       "DynamoDB scan (table et-unit-positions, region us-east-1)", "Scan"),
    "put_position": (lambda s: s.put_position(Position(symbol="SPX", quantity=1.0)),
                     "DynamoDB get position SPX (table et-unit-positions, region us-east-1)", "GetItem"),
    "load_risk_state": (lambda s: s.load_risk_state(),
                        "DynamoDB get risk state (table et-unit-risk-state, region us-east-1)", "GetItem"),
    "save_risk_state": (lambda s: s.save_risk_state(RiskState()),
                        "DynamoDB save risk state (table et-unit-risk-state, region us-east-1)", "UpdateItem"),
}

LEDGER = {
    "get_order": (lambda s: s.get_order("p-1"),
                  "DynamoDB get paper order p-1 (table et-unit-paper-broker, region us-east-1)", "GetItem"),
    "create_order": (lambda s: s.create_order(_paper_record()),
                     "DynamoDB create paper order p-1 (table et-unit-paper-broker, region us-east-1)",
                     "TransactWriteItems"),
    "update_order": (lambda s: s.update_order(_paper_record()),
                     "DynamoDB update paper order p-1 (table et-unit-paper-broker, region us-east-1)",
                     "TransactWriteItems"),
    "open_orders": (lambda s: s.open_orders(),
                    "DynamoDB query OPEN (table et-unit-paper-broker, region us-east-1)", "Query"),
}

CASES = ([("kv", name, *case) for name, case in KV.items()]
         + [("orders", name, *case) for name, case in ORDERS.items()]
         + [("ledger", name, *case) for name, case in LEDGER.items()])
STORES = {
    "kv": lambda client: DynamoKeyValueStore(client, settings=SETTINGS),
    "orders": lambda client: DynamoOrdersStore(client, settings=SETTINGS),
    "ledger": lambda client: DynamoPaperLedger(client, settings=SETTINGS),
}


@pytest.mark.parametrize(("store", "name", "call", "what", "operation"), CASES,
                         ids=[f"{store}-{name}" for store, name, *_ in CASES])
def test_an_attempt_the_guard_refused_names_the_table_and_the_store_operation(clock, store, name, call, what,
                                                                             operation):
    answers = Answers(clock, lambda c: False)
    target = STORES[store](_dynamodb(answers))
    with invocation_deadline(Context(ATTEMPT_S - 0.1), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            call(target)
    assert answers.attempts == []
    assert str(caught.value) == f"{what}: {NOT_STARTED_TAIL.format(op=operation)}"
    refusal = caught.value.__cause__
    assert isinstance(refusal, DeadlineExceededError) and refusal.what == f"DynamoDB {operation} (attempt not started)"
    assert isinstance(caught.value, InfrastructureError)  # the stage runner and callers rely on both types
    assert (caught.value.left_s, caught.value.needed_s, caught.value.needed_for) == (
        refusal.left_s, refusal.needed_s, refusal.needed_for)


def test_a_retry_the_guard_refused_names_the_table_and_the_expected_version(clock):
    """Throttled, with too little left for botocore's back-off and another attempt: the refusal
    from ``needs-retry`` is led by the call's context too."""
    answers = Answers(clock, lambda c: True, cost=3.0)
    store = DynamoKeyValueStore(_dynamodb(answers), settings=SETTINGS)
    with invocation_deadline(Context(9.0), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            store.put_item("stage-state", {"pk": "a", "sk": "b", "version": 2}, expected_version=1)
    assert len(answers.attempts) == 1
    assert str(caught.value).startswith(
        "DynamoDB put_item et-unit-stage-state (expected version 1): DynamoDB PutItem: not retried after attempt 1 "
        "(ThrottlingException")
    assert caught.value.left_s == pytest.approx(6.0) and "another attempt" in caught.value.needed_for


def test_translate_keeps_what_a_deadline_error_still_had_to_do():
    refusal = DeadlineExceededError("DynamoDB BatchWriteItem (attempt not started)", 1.25, ATTEMPT_S,
                                    "one attempt can take", failing=["a", "b"])
    named = translate(refusal, "DynamoDB batch_write_item et-unit-regimes")
    assert type(named) is DeadlineExceededError
    assert (named.what, named.left_s, named.needed_s, named.needed_for, named.failing) == (
        "DynamoDB batch_write_item et-unit-regimes: DynamoDB BatchWriteItem (attempt not started)", 1.25, ATTEMPT_S,
        "one attempt can take", ["a", "b"])


# ---- the batch publishers' loop counts the attempts it sent ------------------------------------


def _resend(client, entries: list[str], *, first_fails: bool = False):
    """resend_failed over a guarded client's PutItem, with no deadline check of its own
    (``attempt_s`` 0): only the guard refuses. ``first_fails``: the first call leaves one entry
    failing (the client answered)."""
    calls = []

    def send(pending):
        calls.append(list(pending))
        client.put_item(TableName="t", Item={"k": {"S": "a"}})
        if first_fails and len(calls) == 1:
            return pending[:1], "ProvisionedThroughputExceeded"
        return [], ""

    resend_failed(send, entries, max_attempts=3, base_delay_s=0.01, sleep=lambda s: None, what="Batch to t")
    return calls


def test_a_first_attempt_the_guard_refused_before_sending_it_is_not_counted(clock):
    answers = Answers(clock, lambda c: False)
    with invocation_deadline(Context(ATTEMPT_S - 0.1), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            _resend(_dynamodb(answers), ["x", "y"])
    assert answers.attempts == []
    assert str(caught.value).startswith(
        "Batch to t: 2 of 2 entries still failing before its first attempt (last error: DynamoDB PutItem "
        "(attempt not started)): stopped with 7.40 s")
    assert caught.value.failing == ["x", "y"]


def test_an_attempt_sent_then_refused_a_retry_by_the_guard_is_counted(clock):
    answers = Answers(clock, lambda c: True, cost=3.0)
    with invocation_deadline(Context(9.0), clock=clock):
        with pytest.raises(DeadlineExceededError, match=r"^Batch to t: 2 of 2 entries still failing after 1 attempt "
                                                        r"\(last error: DynamoDB PutItem: not retried after attempt 1"):
            _resend(_dynamodb(answers), ["x", "y"])
    assert len(answers.attempts) == 1


def test_a_later_attempt_the_guard_refused_before_sending_it_is_not_counted(clock):
    """The first call went through (one entry failing); the guard refused the second before
    sending it: one attempt was made, not two."""
    answers = Answers(clock, lambda c: False, cost=2.0)
    with invocation_deadline(Context(ATTEMPT_S + 1.0), clock=clock):
        with pytest.raises(DeadlineExceededError, match=r"^Batch to t: 1 of 2 entries still failing after 1 attempt "
                                                        r"\(last error: DynamoDB PutItem \(attempt not started\)\)"):
            _resend(_dynamodb(answers), ["x", "y"], first_fails=True)
    assert len(answers.attempts) == 1
