"""Reconciliation rules (pure) and their effect through the router: repair, wait, fail closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.domain.models import Order, OrderStatus, Position, Side
from ensemble_trader.domain.orders import BrokerOrder
from ensemble_trader.domain.reconcile import Verdict, compare_order, compare_positions, foreign_orders
from ensemble_trader.domain.risk import RejectReason

from tests.unit.test_orders_router import WALL, Rig, intent

T = datetime(2024, 1, 2, tzinfo=UTC)


def local(status=OrderStatus.SUBMITTED, filled=0.0, qty=10.0, side=Side.BUY, created=T) -> Order:
    return Order(client_order_id="coid-0001", intent_id="i", strategy_id="s", symbol="SPX", side=side,
                 quantity=qty, status=status, filled_quantity=filled, created_at=created, updated_at=created,
                 broker_order_id="b-1", average_fill_price=10.0 if filled else None)


def remote(status=OrderStatus.SUBMITTED, filled=0.0, qty=10.0, side=Side.BUY, symbol="SPX") -> BrokerOrder:
    return BrokerOrder(client_order_id="coid-0001", broker_order_id="b-1", symbol=symbol, side=side,
                       quantity=qty, status=status, filled_quantity=filled,
                       average_fill_price=10.0 if filled else None, updated_at=T)


def test_compare_order_verdicts():
    now = T + timedelta(seconds=30)
    assert compare_order(local(), remote(), now, 60).verdict is Verdict.IN_SYNC
    assert compare_order(local(), remote(OrderStatus.FILLED, 10), now, 60).verdict is Verdict.SYNC
    assert compare_order(local(), None, now, 60).verdict is Verdict.WAIT
    assert compare_order(local(), None, T + timedelta(seconds=61), 60).verdict is Verdict.NOT_AT_BROKER
    assert compare_order(local(OrderStatus.FILLED, 10), None, now, 60).verdict is Verdict.IN_SYNC
    for other in (remote(qty=11), remote(side=Side.SELL), remote(symbol="NDX")):
        v = compare_order(local(), other, now, 60)
        assert v.verdict is Verdict.MISMATCH and "at the broker" in v.detail
    shrunk = compare_order(local(OrderStatus.PARTIALLY_FILLED, 6), remote(OrderStatus.PARTIALLY_FILLED, 4), now, 60)
    assert shrunk.verdict is Verdict.MISMATCH  # the broker never takes fills back


def test_positions_and_foreign_orders():
    assert compare_positions({"SPX": 10, "NDX": 0}, {"SPX": 10}) == {}
    assert compare_positions({"SPX": 10}, {"SPX": 12, "DJI": -1}) == {
        "DJI": "position 0 here, -1 at the broker", "SPX": "position 10 here, 12 at the broker"}
    found = foreign_orders([remote(), remote().model_copy(update={"client_order_id": "x-1"})], {"coid-0001"})
    assert list(found) == ["SPX"] and "x-1" in found["SPX"][0]


def test_unexplained_position_difference_halts_the_symbol_until_it_agrees_again():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))
    rig.router.handle(intent(2, 0.5, 100.0))  # filled: 500 here and at the broker
    assert rig.router.reconcile().ok
    rig.store.put_position(Position(symbol="SPX", quantity=480, average_price=100.0))  # drifted
    report = rig.router.reconcile()
    assert report.failures == {"SPX": ["position 480 here, 500 at the broker"]}
    out = rig.router.handle(intent(3, 0.9, 100.0))
    assert out.rejections[0]["reason"] == RejectReason.SYMBOL_HALTED.value
    rig.store.put_position(Position(symbol="SPX", quantity=500, average_price=100.0))  # operator fix
    assert rig.router.reconcile().cleared_symbols == ["SPX"]
    assert rig.router.handle(intent(4, 0.9, 100.0)).orders


def test_reconcile_at_the_first_intent_of_a_container():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))
    rig.paper.on_price("SPX", 100.0, WALL)  # filled while no container ran
    cold = rig.new_router()
    cold.handle(intent(2, 0.5, 100.0))
    assert rig.store.get_position("SPX").quantity == 500
    assert not [o for o in rig.store.list_orders(working_only=True)]


def test_a_container_that_could_not_reconcile_retries_before_trading():
    from ensemble_trader.domain.orders import BrokerUnavailableError

    rig = Rig()
    rig.warm()
    cold = rig.new_router()
    calls = {"n": 0}
    real = rig.paper.list_positions

    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise BrokerUnavailableError("broker API down")
        return real()

    rig.paper.list_positions = flaky
    with pytest.raises(BrokerUnavailableError):  # no trading before the books are reconciled
        cold.handle(intent(1, 0.5, 100.0))
    assert rig.paper.created == 0
    assert cold.handle(intent(1, 0.5, 100.0)).orders and calls["n"] == 2


def test_reconciliation_cancels_an_order_placed_by_a_batch_that_read_the_state_before_the_kill_switch():
    """A batch reads the risk state once: an intent after the kill-switch entry's cancel pass still
    placed an order, and the scheduled reconciliation left it working while the switch was on."""
    rig = Rig()
    for symbol in ("SPX", "IXIC"):
        rig.warm(symbol)
    with rig.router.batch():
        rig.router.handle(intent(1, 0.5, 100.0, "SPX"))
        assert rig.new_router().set_kill_switch(True, "operator: stop")["active"]
        late = rig.router.handle(intent(1, 0.5, 100.0, "IXIC"))
    assert [o["symbol"] for o in late.orders] == ["IXIC"]  # seen at the next batch (documented)
    assert [o.symbol for o in rig.paper.list_open_orders()] == ["IXIC"]
    report = rig.new_router().reconcile()
    assert rig.paper.list_open_orders() == []
    assert any("kill switch is on" in line for line in report.synced)
    assert rig.store.load_risk_state().kill_switch
