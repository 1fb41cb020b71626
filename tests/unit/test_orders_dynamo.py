"""DynamoDB orders store and paper ledger against moto's in-process mock (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from ensemble_trader import constants
from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore, DynamoPaperLedger
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.domain.errors import ConcurrencyError
from ensemble_trader.domain.models import Fill, Order, OrderIntent, OrderStatus, Regime, Side, make_intent_id
from ensemble_trader.domain.risk import Mark, RiskEngine, RiskLimits, TradingState
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import BatchingOrdersStore, OrderRouter
from ensemble_trader.runtime.settings import Settings
from moto import mock_aws

T = datetime(2022, 6, 1, tzinfo=UTC)
SETTINGS = Settings(stage="unit", aws_endpoint_url=None)


@pytest.fixture()
def dynamodb(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for spec in constants.TABLES:
            if spec.logical not in ("orders", "positions", "risk-state", "paper-broker"):
                continue
            keys = [(spec.partition_key, "HASH")] + ([(spec.sort_key, "RANGE")] if spec.sort_key else [])
            client.create_table(
                TableName=SETTINGS.name(spec.logical),
                KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
                AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                BillingMode="PAY_PER_REQUEST",
            )
        yield client


def _order(coid="coid-0001", **kw) -> Order:
    base = dict(client_order_id=coid, intent_id="i", strategy_id="s", symbol="SPX", side=Side.BUY,
                quantity=100.0, created_at=T, updated_at=T, decision_time=T, decision_price=10.0)
    base.update(kw)
    return Order(**base)


def test_conditional_create_update_and_fill_transaction(dynamodb):
    store = DynamoOrdersStore(dynamodb, settings=SETTINGS)
    order = _order()
    assert store.create_order(order) and not store.create_order(order.model_copy(update={"quantity": 5}))
    assert store.get_order("coid-0001") == order
    submitted = order.model_copy(update={"status": OrderStatus.SUBMITTED})
    assert store.update_order(submitted, expected_status=OrderStatus.PENDING, expected_filled=0.0)
    assert not store.update_order(submitted, expected_status=OrderStatus.PENDING, expected_filled=0.0)
    assert [o.client_order_id for o in store.list_orders(working_only=True)] == ["coid-0001"]

    fill = Fill(fill_id="coid-0001@40", client_order_id="coid-0001", symbol="SPX", side=Side.BUY,
                quantity=40, price=10.5, fee=0.2, timestamp=T)
    partial = submitted.model_copy(update={"status": OrderStatus.PARTIALLY_FILLED, "filled_quantity": 40.0,
                                           "average_fill_price": 10.5, "fees_paid": 0.2})
    position = store.apply_fill(partial, fill, expected_status=OrderStatus.SUBMITTED, expected_filled=0.0)
    assert position.quantity == 40 and store.get_position("SPX").average_price == 10.5
    assert store.apply_fill(partial, fill, expected_status=OrderStatus.SUBMITTED, expected_filled=0.0) is None  # already applied
    assert store.get_position("SPX").quantity == 40
    assert store.get_order("coid-0001").filled_quantity == 40


def test_a_fill_is_conditional_on_the_order_status_read(dynamodb):
    """A fill computed from a copy read while the order was PENDING must not overwrite the order
    another writer retired meanwhile (the kill switch: REJECTED, filled 0 — the same filled
    quantity as the copy): nothing is written, neither the order nor the position."""
    store = DynamoOrdersStore(dynamodb, settings=SETTINGS)
    retired = _order(status=OrderStatus.REJECTED, reject_code="KILL_SWITCH", reject_reason="never sent")
    assert store.create_order(retired)
    fill = Fill(fill_id="coid-0001@40", client_order_id="coid-0001", symbol="SPX", side=Side.BUY,
                quantity=40, price=10.5, timestamp=T)
    partial = retired.model_copy(update={"status": OrderStatus.PARTIALLY_FILLED, "filled_quantity": 40.0,
                                         "average_fill_price": 10.5, "reject_code": None})
    assert store.apply_fill(partial, fill, expected_status=OrderStatus.PENDING, expected_filled=0.0) is None
    assert store.get_order("coid-0001") == retired and store.get_position("SPX") is None
    assert store.list_orders(working_only=True) == []
    # read again as it is stored, the fill goes through (the router cancels the rest first)
    position = store.apply_fill(partial, fill, expected_status=OrderStatus.REJECTED, expected_filled=0.0)
    assert position.quantity == 40 and store.get_order("coid-0001").filled_quantity == 40


def test_risk_state_is_versioned_and_the_kill_switch_is_its_own_attribute(dynamodb):
    store = DynamoOrdersStore(dynamodb, settings=SETTINGS)
    a = store.load_risk_state()
    b = store.load_risk_state()
    a.halted_symbols["SPX"] = "test"
    store.save_risk_state(a)
    with pytest.raises(ConcurrencyError):
        store.save_risk_state(b)
    dynamodb.update_item(
        TableName=SETTINGS.name("risk-state"), Key={"pk": {"S": "global"}},
        UpdateExpression="SET kill_switch = :t, kill_switch_reason = :r",
        ExpressionAttributeValues={":t": {"BOOL": True}, ":r": {"S": "operator"}},
    )
    c = store.load_risk_state()
    assert c.kill_switch and c.kill_switch_reason == "operator" and c.halted_symbols == {"SPX": "test"}
    # a routine save of a copy read before the flip must not switch it back off
    a.marks.clear()
    a.kill_switch = False
    dynamodb.update_item(  # the operator's flip did not bump the version
        TableName=SETTINGS.name("risk-state"), Key={"pk": {"S": "global"}},
        UpdateExpression="SET kill_switch = :t", ExpressionAttributeValues={":t": {"BOOL": True}},
    )
    store.save_risk_state(a)
    assert store.load_risk_state().kill_switch
    d = store.load_risk_state()
    d.kill_switch = False
    store.save_risk_state(d, write_kill_switch=True)
    assert not store.load_risk_state().kill_switch


def test_breaker_reset_racing_a_batch_save_survives_in_dynamodb(dynamodb):
    store = DynamoOrdersStore(dynamodb, settings=SETTINGS)
    seed = store.load_risk_state()
    seed.trading_state, seed.breaker_latched = TradingState.HALTED, True
    seed.peak_equity, seed.equity = 150_000.0, 100_000.0
    store.save_risk_state(seed)
    batch = BatchingOrdersStore(store)
    ours = batch.load_risk_state()  # the router's copy: HALTED, latched
    ours.marks["SPX"] = Mark(price=101.0, timestamp=T)
    RiskEngine().update_breaker(ours, 99_000.0, T.date())
    batch.save_risk_state(ours)
    operator = store.load_risk_state()  # the reset, saved between the router's load and save
    RiskEngine.reset_breaker(operator, "reviewed")
    store.save_risk_state(operator, write_kill_switch=True)
    batch.flush()
    stored = store.load_risk_state()
    assert stored.trading_state is TradingState.ACTIVE and not stored.breaker_latched
    assert stored.breaker_resets == 1 and stored.version == 3
    assert stored.peak_equity == pytest.approx(100_000.0)  # rebased, not the stale 150,000
    assert stored.equity == pytest.approx(99_000.0) and stored.marks["SPX"].price == 101.0
    item = dynamodb.get_item(TableName=SETTINGS.name("risk-state"), Key={"pk": {"S": "global"}})["Item"]
    assert item["trading_state"] == {"S": "ACTIVE"}


def test_router_over_dynamodb_and_the_persistent_paper_broker(dynamodb):
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))

    def router() -> tuple[OrderRouter, PaperBroker]:  # a fresh "container" every time
        store = DynamoOrdersStore(dynamodb, settings=SETTINGS)
        broker = PaperBroker(DynamoPaperLedger(dynamodb, settings=SETTINGS), clock, fill_fraction=0.5)
        return OrderRouter(store, broker, clock, events=MemoryEventBus(), limits=RiskLimits(clock="event"),
                           initial_equity=100_000), broker

    def intent(day, target, price):
        ts = T + timedelta(days=day)
        return OrderIntent(intent_id=make_intent_id("s", "SPX", ts, "v"), strategy_id="s", symbol="SPX",
                           timestamp=ts, target_position=target, reference_price=price,
                           model_version="v", regime=Regime.BULL, confidence=0.5)

    r, b = router()
    r.handle(intent(0, 0.0, 100.0))
    for _ in range(20):
        r, b = router()
        r.handle(intent(1, 0.5, 100.0))
    orders = [o for o in DynamoOrdersStore(dynamodb, settings=SETTINGS).list_orders()]
    assert len(orders) == 1 and orders[0].status is OrderStatus.SUBMITTED
    assert len(b.list_open_orders()) == 1  # the broker's book survived the "cold starts"
    for day, price in ((2, 101.0), (3, 102.0)):
        r, b = router()
        r.handle(intent(day, 0.5, price))
    store = DynamoOrdersStore(dynamodb, settings=SETTINGS)
    first = store.get_order(orders[0].client_order_id)
    assert first.status is OrderStatus.FILLED and first.filled_quantity == 500  # two partial fills
    held = store.get_position("SPX").quantity
    assert held == b.list_positions()[0].quantity and abs(held - 500) < 10  # small rebalances
    assert r.reconcile().ok


def test_fill_with_a_stale_known_position_re_reads_it(dynamodb):
    ours, other = DynamoOrdersStore(dynamodb, settings=SETTINGS), DynamoOrdersStore(dynamodb, settings=SETTINGS)
    for coid in ("coid-a001", "coid-b001"):
        ours.create_order(_order(coid, status=OrderStatus.SUBMITTED))

    def fill(store, coid, qty):
        f = Fill(fill_id=f"{coid}@{qty}", client_order_id=coid, symbol="SPX", side=Side.BUY,
                 quantity=qty, price=10.0, timestamp=T)
        done = _order(coid, status=OrderStatus.PARTIALLY_FILLED, filled_quantity=qty, average_fill_price=10.0)
        return store.apply_fill(done, f, expected_status=OrderStatus.SUBMITTED, expected_filled=0.0)

    assert fill(ours, "coid-a001", 10).quantity == 10  # ours now "knows" version 1
    assert fill(other, "coid-b001", 5).quantity == 15  # another container moves it to version 2
    ours.create_order(_order("coid-c001", status=OrderStatus.SUBMITTED))
    assert fill(ours, "coid-c001", 1).quantity == 16  # stale version → condition fails → re-read
    assert ours.get_position("SPX").quantity == 16


def _paper_record(coid: str) -> dict:
    return {"client_order_id": coid, "symbol": "SPX", "side": "BUY", "quantity": 10.0, "filled_quantity": 0.0,
            "average_fill_price": None, "fees_paid": 0.0, "status": "SUBMITTED", "open": True,
            "decision_time": T.isoformat(), "created_at": T.isoformat(), "updated_at": T.isoformat()}


def test_paper_ledger_position_writes_are_conditional_on_the_version_read(dynamodb):
    from ensemble_trader.domain.errors import ConcurrencyError

    ledger = DynamoPaperLedger(dynamodb, settings=SETTINGS)
    for coid in ("p-1", "p-2"):
        assert ledger.create_order(_paper_record(coid))
    position = {"symbol": "SPX", "quantity": 10.0, "average_price": 100.0, "realized_pnl": 0.0, "fees": 0.0}
    first = dict(ledger.get_order("p-1"), filled_quantity=10.0, open=False, status="FILLED")
    ledger.update_order(first, dict(position, version=0))
    (stored,) = ledger.list_positions()
    assert int(stored["version"]) == 1
    # a second fill computed from the same (now stale) position read loses, and writes nothing
    second = dict(ledger.get_order("p-2"), filled_quantity=10.0, open=False, status="FILLED")
    with pytest.raises(ConcurrencyError, match="changed meanwhile"):
        ledger.update_order(second, dict(position, quantity=20.0, version=0))
    assert ledger.get_order("p-2")["open"] is True and ledger.list_positions()[0]["quantity"] == 10.0
    ledger.update_order(second, dict(position, quantity=20.0, version=1))
    assert ledger.list_positions()[0]["quantity"] == 20.0


def test_paper_ledger_accepts_a_position_written_before_positions_were_versioned(dynamodb):
    ledger = DynamoPaperLedger(dynamodb, settings=SETTINGS)
    dynamodb.put_item(TableName=SETTINGS.name("paper-broker"), Item={
        "pk": {"S": "POSITION"}, "sk": {"S": "SPX"}, "symbol": {"S": "SPX"}, "quantity": {"N": "5"}})
    assert ledger.create_order(_paper_record("p-3"))
    record = dict(ledger.get_order("p-3"), filled_quantity=10.0, open=False, status="FILLED")
    ledger.update_order(record, {"symbol": "SPX", "quantity": 15.0, "version": 0})
    assert int(ledger.list_positions()[0]["version"]) == 1


def test_a_transaction_conflict_is_run_again_and_a_failed_condition_is_not():
    """Every order write also updates the one '#working' item, so concurrent invocations cancel
    each other's transactions (TransactionConflict): botocore does not retry that, the store does."""
    from botocore.stub import Stubber
    from ensemble_trader.domain.errors import InfrastructureError

    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    sleeps: list[float] = []
    store = DynamoOrdersStore(client, settings=SETTINGS, sleep=sleeps.append)

    def cancel(stub: Stubber, *codes: str) -> None:
        stub.add_client_error("transact_write_items", "TransactionCanceledException", "cancelled",
                              response_meta={}, modeled_fields={"CancellationReasons": [{"Code": c} for c in codes]})

    with Stubber(client) as stub:
        cancel(stub, "None", "TransactionConflict")
        cancel(stub, "TransactionConflict", "None")
        stub.add_response("transact_write_items", {})
        assert store.create_order(_order()) is True
        stub.assert_no_pending_responses()
    assert len(sleeps) == 2  # a backoff before each retry
    with Stubber(client) as stub:
        cancel(stub, "ConditionalCheckFailed", "None")
        assert store.create_order(_order()) is False  # the order exists: not retried
        stub.assert_no_pending_responses()
    with Stubber(client) as stub:
        for _ in range(6):
            cancel(stub, "None", "TransactionConflict")
        with pytest.raises(InfrastructureError, match=r"TransactionConflict.*\(attempt 6\)"):
            store.create_order(_order())
        stub.assert_no_pending_responses()


def test_unread_keys_of_the_working_orders_are_read_again_a_bounded_number_of_times():
    from botocore.stub import Stubber
    from ensemble_trader.domain.errors import InfrastructureError

    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    sleeps: list[float] = []
    store = DynamoOrdersStore(client, settings=SETTINGS, sleep=sleeps.append)
    table = SETTINGS.name("orders")
    keys = {table: {"Keys": [{"client_order_id": {"S": "coid-0001"}}], "ConsistentRead": True}}
    with Stubber(client) as stub:
        stub.add_response("get_item", {"Item": {"client_order_id": {"S": "#working"}, "ids": {"SS": ["coid-0001"]}}})
        for _ in range(6):
            stub.add_response("batch_get_item", {"Responses": {table: []}, "UnprocessedKeys": keys})
        with pytest.raises(InfrastructureError, match="1 keys still unread after 6 attempts"):
            store.list_orders(working_only=True)
    assert len(sleeps) == 5
