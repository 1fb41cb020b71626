"""Reconciliation looks up only the retired orders that may have reached the broker.

When a symbol's positions still differ after its working orders were synced, reconciliation looks
up the symbol's retired orders (at most ``retired_lookups_per_symbol`` per run, the most recently
retired first): one of them may have landed and filled after it was retired. The defect these
tests pin down: orders refused by a check when they were planned (``SYMBOL_HALTED`` on every intent
of a halted symbol) were never sent, yet they were looked up too and crowded out an order whose
submit had an unknown outcome, was retired ``NOT_AT_BROKER`` and then landed and filled. Its fill
was never booked, and the symbol stayed halted on every run.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from ensemble_trader.domain.models import Order, OrderStatus, Side
from ensemble_trader.domain.orders import UnknownOutcomeError
from ensemble_trader.domain.risk import RejectReason
from ensemble_trader.runtime.orders import _may_have_reached_broker

from tests.unit.test_orders_router import WALL, BrokerWrapper, Rig, intent


class LostAnswer(BrokerWrapper):
    """Every submit lands at the broker but its answer is lost; while ``lagging`` the broker's
    lookup does not find the order yet. Counts the lookups made."""

    lagging = True

    def __init__(self, inner):
        super().__init__(inner)
        self.lookups: list[str] = []

    def submit(self, order):
        self.inner.submit(order)
        raise UnknownOutcomeError(order.client_order_id, "read timeout")

    def get_order_by_client_id(self, client_order_id):
        self.lookups.append(client_order_id)
        return None if self.lagging else self.inner.get_order_by_client_id(client_order_id)


def test_a_late_landing_order_is_found_behind_many_refusals_of_its_halted_symbol():
    rig = Rig(broker=LostAnswer)
    rig.warm()
    first = intent(1, 0.5, 100.0)
    rig.router.handle(first)  # BUY 500: it lands, the answer is lost, the lookup does not find it
    rig.paper.on_price("SPX", 100.0, first.timestamp + timedelta(hours=1))  # it fills at the broker
    rig.clock.set(rig.clock.now() + timedelta(seconds=120))  # past the grace: retired NOT_AT_BROKER
    report = rig.router.reconcile()
    assert report.failures == {"SPX": ["position 0 here, 500 at the broker"]}
    (late,) = [o for o in rig.store.list_orders() if o.reject_code == RejectReason.NOT_AT_BROKER.value]
    rig.broker.lagging = False
    for day in range(2, 16):  # fourteen intents of the halted symbol, each refused by a check
        rig.clock.set(rig.clock.now() + timedelta(seconds=60))
        out = rig.router.handle(intent(day, 0.5, 100.0))
        assert [r["reason"] for r in out.rejections] == [RejectReason.SYMBOL_HALTED.value]
    refused = {o.client_order_id for o in rig.store.list_orders()
               if o.reject_code == RejectReason.SYMBOL_HALTED.value}
    assert len(refused) == 14
    rig.broker.lookups.clear()
    report = rig.router.reconcile()
    assert report.failures == {} and report.cleared_symbols == ["SPX"]
    assert rig.store.get_position("SPX").quantity == 500
    booked = rig.store.get_order(late.client_order_id)
    assert booked.status is OrderStatus.FILLED and booked.filled_quantity == 500
    assert not refused & set(rig.broker.lookups)  # never sent: none of them is an Alpaca request
    assert rig.broker.lookups.count(late.client_order_id) == 1


def _order(code: str, *, retired_after: timedelta | None, broker_order_id: str | None = None,
           status: OrderStatus = OrderStatus.REJECTED) -> Order:
    """An order as stored: recorded at WALL, written again ``retired_after`` later (None: never)."""
    return Order(client_order_id="et" + "0" * 30, intent_id="i1", strategy_id="ens", symbol="SPX",
                 side=Side.BUY, quantity=10, status=status, reject_code=code, reject_reason="why",
                 broker_order_id=broker_order_id, created_at=WALL,
                 updated_at=WALL + retired_after if retired_after is not None else WALL)


@pytest.mark.parametrize(("order", "candidate"), [
    # refused by a check when planned: one write, never sent (also as earlier code stored them)
    (_order(RejectReason.SYMBOL_HALTED.value, retired_after=None), False),
    (_order(RejectReason.KILL_SWITCH.value, retired_after=None), False),
    (_order(RejectReason.CLOSING_LEG_INCOMPLETE.value, retired_after=None), False),
    # recorded PENDING, retired later: the kill switch, a re-check, reconciliation
    (_order(RejectReason.KILL_SWITCH.value, retired_after=timedelta(seconds=3)), True),
    (_order(RejectReason.MAX_ORDER_QUANTITY.value, retired_after=timedelta(minutes=3)), True),
    (_order(RejectReason.NOT_AT_BROKER.value, retired_after=timedelta(minutes=4)), True),
    # NOT_AT_BROKER is only ever a retirement, even one an earlier code wrote under a clock that had not moved
    (_order(RejectReason.NOT_AT_BROKER.value, retired_after=None), True),
    # acknowledged here, or the broker's own refusal: not a retired order to look up
    (_order(RejectReason.KILL_SWITCH.value, retired_after=timedelta(seconds=3), broker_order_id="b-1"), False),
    (_order(RejectReason.BROKER_REJECTED.value, retired_after=timedelta(seconds=3)), False),
    (_order(RejectReason.KILL_SWITCH.value, retired_after=timedelta(seconds=3), status=OrderStatus.CANCELED), False),
])
def test_which_retired_orders_may_have_reached_the_broker(order, candidate):
    assert _may_have_reached_broker(order) is candidate


def test_a_retirement_under_a_clock_that_has_not_moved_still_counts_as_a_retirement():
    """The kill switch retires a PENDING order in the instant it was recorded (a clock that did not
    move): the retirement is still written after the creation, so reconciliation looks it up."""
    rig = Rig()
    rig.warm()
    pending = Order(client_order_id="et" + "1" * 30, intent_id="i1", strategy_id="ens", symbol="SPX",
                    side=Side.BUY, quantity=10, created_at=rig.clock.now(), updated_at=rig.clock.now())
    rig.store.create_order(pending)
    rig.router.set_kill_switch(True, "incident")
    retired = rig.store.get_order(pending.client_order_id)
    assert retired.reject_code == RejectReason.KILL_SWITCH.value
    assert retired.updated_at > retired.created_at and _may_have_reached_broker(retired)
