"""Review of the order stage's retired orders and broker reports: a retired order is never reopened
by a stale copy's fill, an order rejected on its re-check counts as never sent, a broker report
the router cannot book does not stop the kill switch or reconciliation, and a retired order that
landed and filled is booked by reconciliation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore
from ensemble_trader.domain.models import Fill, Order, OrderStatus, Side
from ensemble_trader.domain.risk import RejectReason
from ensemble_trader.runtime.orders import OrderRouter

from tests.unit.test_orders_router import WALL, BrokerWrapper, Rig, intent


class FractionRig(Rig):
    """The router test rig with a paper broker that fills ``fill_fraction`` of an order per price."""

    def __init__(self, broker=None, fill_fraction: float = 1.0, **limits):
        super().__init__(broker=broker, **limits)
        self.paper = PaperBroker(self.ledger, self.clock, slippage_bps=0, fee_bps=0, fill_fraction=fill_fraction)
        self.broker = broker(self.paper) if broker else self.paper
        self.router = self.new_router()


def order_of(rig: Rig, quantity: float) -> Order:
    (found,) = [o for o in rig.store.list_orders() if o.quantity == quantity]
    return found


# ---------------------------------------------------------------------------------------------
# 1. A fill read from an older copy of the order does not reopen an order the kill switch retired
# ---------------------------------------------------------------------------------------------


def test_memory_store_apply_fill_is_conditional_on_the_status_read():
    store = MemoryOrdersStore()
    retired = Order(client_order_id="coid-00000001", intent_id="i1", strategy_id="ens", symbol="SPX",
                    side=Side.BUY, quantity=10, status=OrderStatus.REJECTED,
                    reject_code=RejectReason.KILL_SWITCH.value, reject_reason="never sent",
                    created_at=WALL, updated_at=WALL)
    store.create_order(retired)
    filled = retired.model_copy(update={"status": OrderStatus.PARTIALLY_FILLED, "filled_quantity": 4.0,
                                        "average_fill_price": 100.0, "reject_code": None})
    fill = Fill(fill_id="coid-00000001@4", client_order_id="coid-00000001", symbol="SPX", side=Side.BUY,
                quantity=4, price=100.0, timestamp=WALL)
    # a copy read while it was PENDING: same filled quantity, another status
    assert store.apply_fill(filled, fill, expected_status=OrderStatus.PENDING, expected_filled=0.0) is None
    assert store.get_order("coid-00000001") == retired and store.get_position("SPX") is None
    assert store.applied_fills == []
    position = store.apply_fill(filled, fill, expected_status=OrderStatus.REJECTED, expected_filled=0.0)
    assert position is not None and position.quantity == 4


class KillSwitchDuringFilledSubmit(BrokerWrapper):
    """Another container's kill-switch entry runs while this submit is under way (it retires the
    PENDING order), and the submit's answer already carries a partial fill (an Alpaca market order
    answered ``partially_filled``)."""

    other: OrderRouter | None = None

    def submit(self, order):
        if self.other is not None:
            other, self.other = self.other, None
            self.result = other.set_kill_switch(True, "incident 42")
        ack = self.inner.submit(order)
        fills = self.inner.on_price(order.symbol, 100.0, order.decision_time + timedelta(seconds=1))
        return next((f for f in fills if f.client_order_id == order.client_order_id), ack)


@pytest.mark.parametrize("batched", [False, True])
def test_a_filled_submit_answer_does_not_reopen_an_order_the_kill_switch_retired(batched):
    rig = FractionRig(broker=KillSwitchDuringFilledSubmit, fill_fraction=0.5)
    rig.warm()
    rig.broker.other = rig.new_router()
    if batched:
        with rig.router.batch():
            rig.router.handle(intent(1, 0.5, 100.0))
    else:
        rig.router.handle(intent(1, 0.5, 100.0))
    order = order_of(rig, 500.0)
    assert rig.broker.result["canceled"] == [order.client_order_id]
    # the rest is canceled at the broker, the part that filled is booked once
    assert rig.paper.list_open_orders() == []
    assert order.status is OrderStatus.CANCELED and order.filled_quantity == 250
    assert order.reject_code == RejectReason.KILL_SWITCH.value
    assert rig.store.get_position("SPX").quantity == 250
    assert [e.quantity for e in rig.events("OrderFilled")] == [250]
    assert [e.client_order_id for e in rig.events("OrderCanceled")] == [order.client_order_id]
    assert rig.store.load_risk_state().kill_switch
    assert rig.router.reconcile().ok
