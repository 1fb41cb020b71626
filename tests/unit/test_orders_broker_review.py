"""Review of order submission (2026-11-29): a broker order found under our id that is another
order is not booked, and a broker refusal that lands after the order was retired meanwhile
publishes nothing of its own."""

from __future__ import annotations

from ensemble_trader.domain.models import OrderStatus
from ensemble_trader.domain.orders import BrokerRejectedError, client_order_id
from ensemble_trader.domain.risk import RejectReason

from tests.unit.test_orders_alpaca_flows import AlpacaRig
from tests.unit.test_orders_router import BrokerWrapper, Rig, intent


def test_a_broker_order_of_our_id_that_is_another_order_is_not_booked():
    """Alpaca already holds a filled SELL 3 under the id our BUY 500 leg computes (a second system
    on the account, a replay after the store was reset). It was booked as ours: the BUY closed
    FILLED at 3 of 500, a position of +3 against the broker's -3, an OrderFilled BUY 3."""
    rig = AlpacaRig()
    rig.router.handle(intent(0, 0.0, 100.0))
    leg = intent(1, 0.5, 100.0)
    coid = client_order_id(leg, 0)
    rig.alpaca.add(coid, "SPX", "sell", "3")
    rig.alpaca.fill(coid, 3, 100.0)
    rig.router.handle(leg)
    stored = rig.store.get_order(coid)
    assert (stored.side.value, stored.quantity, stored.filled_quantity) == ("BUY", 500.0, 0.0)
    assert stored.status is not OrderStatus.FILLED
    assert rig.store.get_position("SPX") is None and rig.events("OrderFilled") == []
    failures = rig.router.reconcile().failures["SPX"]  # named, and the symbol halts while it lasts
    assert any(f"{coid}: side BUY here, SELL at the broker" in f for f in failures), failures


class _RetiredWhileRefused(BrokerWrapper):
    """The kill switch (another container) retires the PENDING order while the broker refuses it."""

    rig: Rig

    def submit(self, order):
        stored = self.rig.store.get_order(order.client_order_id)
        self.rig.router._reject_absent(stored, RejectReason.KILL_SWITCH, "never sent: kill switch", [])
        raise BrokerRejectedError(order.client_order_id, "HTTP 403: insufficient buying power")


def test_a_refusal_after_the_order_was_retired_meanwhile_publishes_no_rejection():
    """The submit path published OrderRejected BROKER_REJECTED and reported it, while the store
    held the kill switch's REJECTED KILL_SWITCH (whose writer publishes its own rejection)."""
    rig = Rig(broker=_RetiredWhileRefused)
    _RetiredWhileRefused.rig = rig
    rig.warm()
    (order,) = rig.router.handle(intent(1, 0.5, 100.0)).orders
    stored = rig.store.get_order(order["client_order_id"])
    assert (order["status"], order["reject_code"]) == ("REJECTED", "KILL_SWITCH")
    assert (stored.status, stored.reject_code) == (OrderStatus.REJECTED, "KILL_SWITCH")
    assert [e for e in rig.events("OrderRejected") if e.client_order_id == order["client_order_id"]] == []
