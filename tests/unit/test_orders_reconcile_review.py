"""Review of the order stage's retired orders and broker reports: a retired order is never reopened
by a stale copy's fill, an order rejected on its re-check counts as never sent, a broker report
the router cannot book does not stop the kill switch or reconciliation, and a retired order that
landed and filled is booked by reconciliation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore
from ensemble_trader.domain.errors import StateError
from ensemble_trader.domain.models import Fill, Order, OrderStatus, Side
from ensemble_trader.domain.orders import BrokerOrder, BrokerReportError, fill_from_progress
from ensemble_trader.domain.risk import RejectReason, RiskLimits
from ensemble_trader.runtime.orders import CancelFailedError, OrderRouter, _retired
from pydantic import ValidationError

from tests.unit.test_brokers_alpaca import COID, recorded
from tests.unit.test_brokers_alpaca import alpaca as alpaca  # noqa: F401  (a fixture)
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


# ---------------------------------------------------------------------------------------------
# 2. An order refused on the re-check of a PENDING order counts as never sent
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "retired"), [
    (OrderStatus.REJECTED, RejectReason.KILL_SWITCH.value, True),
    (OrderStatus.REJECTED, RejectReason.NOT_AT_BROKER.value, True),
    (OrderStatus.REJECTED, RejectReason.MAX_ORDER_QUANTITY.value, True),
    (OrderStatus.REJECTED, RejectReason.HALTED.value, True),
    (OrderStatus.REJECTED, RejectReason.CLOSING_LEG_INCOMPLETE.value, True),
    (OrderStatus.REJECTED, RejectReason.BROKER_REJECTED.value, False),  # the broker's own refusal
    (OrderStatus.REJECTED, None, False),
    (OrderStatus.CANCELED, RejectReason.KILL_SWITCH.value, False),  # canceled at the broker since
])
def test_an_order_rejected_by_this_system_is_retired_one_the_broker_rejected_is_not(status, code, retired):
    order = Order(client_order_id="coid-00000001", intent_id="i1", strategy_id="ens", symbol="SPX",
                  side=Side.BUY, quantity=10, status=status, reject_code=code, created_at=WALL, updated_at=WALL)
    assert _retired(order) is retired


class SecondDeliveryDuringSubmit(BrokerWrapper):
    """Delivery A's submit is under way; meanwhile delivery B of the same intent (another container,
    whose per-order limit was lowered to 100) looks the PENDING order up, does not find it, checks
    it again and rejects it ``MAX_ORDER_QUANTITY``. Then A's submit lands; with ``crash`` A dies
    before it can sync the answer."""

    rig: Rig | None = None
    crash = False

    def submit(self, order):
        rig, self.rig = self.rig, None
        if rig is not None:
            other = OrderRouter(rig.store, self, rig.clock, events=rig.bus, initial_equity=100_000,
                                reconcile_grace_seconds=60, reconcile_on_start=False,
                                limits=RiskLimits(clock="event", max_order_quantity=100))
            self.second = other.handle(self.intent)
        ack = self.inner.submit(order)
        if rig is not None and self.crash:
            raise RuntimeError("invocation died before the submit's answer was synced")
        return ack


def _double_delivery(crash: bool) -> tuple[Rig, Order]:
    rig = Rig(broker=SecondDeliveryDuringSubmit)
    rig.warm()
    rig.broker.rig, rig.broker.crash = rig, crash
    rig.broker.intent = intent(1, 0.5, 100.0)
    if crash:
        with pytest.raises(RuntimeError, match="died"):
            rig.router.handle(rig.broker.intent)
    else:
        rig.router.handle(rig.broker.intent)
    (rejection,) = rig.broker.second.rejections
    assert rejection["reason"] == RejectReason.MAX_ORDER_QUANTITY.value
    return rig, order_of(rig, 500.0)


def test_a_submit_landing_after_its_order_was_refused_on_the_recheck_is_canceled_not_ordered_again():
    rig, order = _double_delivery(crash=False)
    # A's answer meets the rejection: the order is canceled at the broker, not left working there
    assert order.status is OrderStatus.CANCELED and order.reject_code == RejectReason.MAX_ORDER_QUANTITY.value
    assert rig.paper.list_open_orders() == []
    rig.clock.set(WALL + timedelta(minutes=5))
    nxt = rig.router.handle(intent(2, 0.5, 100.0))  # the same target: the next intent orders it
    assert [(o["side"], o["quantity"]) for o in nxt.orders] == [("BUY", 500.0)]
    rig.router.handle(intent(3, 0.5, 100.0))
    assert {p.symbol: p.quantity for p in rig.paper.list_positions()} == {"SPX": 500.0}
    assert rig.store.get_position("SPX").quantity == 500.0
    assert rig.router.reconcile().ok


def test_reconciliation_cancels_an_order_refused_on_the_recheck_that_is_live_at_the_broker():
    rig, order = _double_delivery(crash=True)
    assert order.status is OrderStatus.REJECTED  # A died: nothing synced its answer
    assert [b.client_order_id for b in rig.paper.list_open_orders()] == [order.client_order_id]
    report = rig.new_router().reconcile()
    assert report.ok
    assert report.synced == [f"{order.client_order_id}: retired (MAX_ORDER_QUANTITY) here, SUBMITTED at the broker"]
    assert rig.paper.list_open_orders() == []
    assert rig.store.get_order(order.client_order_id).status is OrderStatus.CANCELED
    rig.clock.set(WALL + timedelta(minutes=5))
    rig.router.handle(intent(2, 0.5, 100.0))
    rig.router.handle(intent(3, 0.5, 100.0))
    assert {p.symbol: p.quantity for p in rig.paper.list_positions()} == {"SPX": 500.0}


# ---------------------------------------------------------------------------------------------
# 3. A report of a fill without its price stops neither the kill switch nor reconciliation
# ---------------------------------------------------------------------------------------------


def test_a_broker_order_filled_without_an_average_price_is_refused_by_name():
    fields = dict(client_order_id="coid-00000001", broker_order_id="b1", symbol="SPX", side=Side.BUY,
                  quantity=10, status=OrderStatus.PARTIALLY_FILLED, filled_quantity=4, updated_at=WALL)
    with pytest.raises(ValidationError, match="filled_quantity 4 without an average fill price"):
        BrokerOrder(**fields)
    assert BrokerOrder(**fields, average_fill_price=100.0).filled_quantity == 4
    assert BrokerOrder(**{**fields, "status": OrderStatus.UNKNOWN}).average_fill_price is None  # partial
    # one made without validation is refused where it would be booked, with a typed error
    unpriced = BrokerOrder(**fields, average_fill_price=100.0).model_copy(update={"average_fill_price": None})
    order = Order(client_order_id="coid-00000001", intent_id="i1", strategy_id="ens", symbol="SPX",
                  side=Side.BUY, quantity=10, status=OrderStatus.SUBMITTED, created_at=WALL, updated_at=WALL)
    with pytest.raises(BrokerReportError, match="coid-00000001 cannot be booked: filled_quantity 4"):
        fill_from_progress(order, unpriced, WALL)


def test_alpaca_reports_a_fill_without_filled_avg_price_as_a_partial_report(alpaca):  # noqa: F811
    broker, http = alpaca
    http.queue = [recorded("get_partially_filled", filled_avg_price=None)]
    report = broker.get_order_by_client_id(COID)
    assert report.status is OrderStatus.UNKNOWN and report.average_fill_price is None
    assert "reports filled_qty 4 with no filled_avg_price" in report.reject_reason
    http.queue = [recorded("list_open_orders", filled_qty="3", filled_avg_price=None)]
    assert {o.status for o in broker.list_open_orders()} == {OrderStatus.UNKNOWN}


class Unpriced(BrokerWrapper):
    """A broker that reports the orders in ``bad`` filled 4 without an average price (a report the
    router gets unvalidated, as an adapter's ``model_copy`` would make it)."""

    bad: set[str] = set()

    def _spoil(self, report, status):
        if report is not None and report.client_order_id in self.bad:
            return report.model_copy(update={"filled_quantity": 4.0, "average_fill_price": None, "status": status})
        return report

    def cancel(self, client_order_id):
        return self._spoil(self.inner.cancel(client_order_id), OrderStatus.CANCELED)

    def get_order_by_client_id(self, client_order_id):
        return self._spoil(self.inner.get_order_by_client_id(client_order_id), OrderStatus.PARTIALLY_FILLED)


def _three_working(broker=Unpriced, store=None) -> tuple[Rig, list[str]]:
    rig = Rig(broker=broker)
    rig.broker.bad = set()
    if store is not None:
        rig.store = store
        rig.router = rig.new_router()
    for symbol in ("AAA", "BBB", "CCC"):
        rig.warm(symbol)
    for symbol in ("AAA", "BBB", "CCC"):
        rig.router.handle(intent(1, 0.2, 100.0, symbol))
    working = sorted(o.client_order_id for o in rig.store.list_orders(working_only=True))
    assert len(working) == 3
    return rig, working


def test_the_kill_switch_cancels_every_order_past_a_fill_reported_without_its_price():
    rig, working = _three_working()
    rig.broker.bad.add(working[0])
    result = rig.new_router().set_kill_switch(True, "incident")
    assert rig.paper.list_open_orders() == []
    assert sorted(result["canceled"]) == working
    (changed,) = rig.events("KillSwitchChanged")
    assert sorted(changed.canceled) == working
    # nothing of the unreadable answer was booked; the other two are canceled in the store
    assert rig.store.get_order(working[0]).status is OrderStatus.SUBMITTED and rig.store.list_positions() == []
    assert {rig.store.get_order(c).status for c in working[1:]} == {OrderStatus.CANCELED}


class FailsToBook(MemoryOrdersStore):
    """A store whose write of one order's update fails with an error of its own."""

    refuse: str | None = None

    def update_order(self, order, **kwargs):
        if order.client_order_id == self.refuse:
            raise StateError(f"stored order {order.client_order_id!r} cannot be written")
        return super().update_order(order, **kwargs)


def test_an_order_whose_cancel_cannot_be_synced_is_a_failure_and_the_others_are_still_canceled():
    rig, working = _three_working(broker=BrokerWrapper, store=FailsToBook())
    rig.store.refuse = working[0]
    with pytest.raises(CancelFailedError) as raised:
        rig.new_router().set_kill_switch(True, "incident")
    assert list(raised.value.failures) == [working[0]]
    assert "canceled, but its report was not synced: StateError" in raised.value.failures[working[0]]
    assert rig.paper.list_open_orders() == []  # every cancel went out
    (changed,) = rig.events("KillSwitchChanged")
    assert sorted(changed.canceled) == working
    assert {rig.store.get_order(c).status for c in working[1:]} == {OrderStatus.CANCELED}


def test_reconciliation_halts_only_the_symbol_whose_fill_comes_without_its_price():
    rig, working = _three_working()
    bad = rig.store.get_order(working[-1])
    rig.broker.bad.add(bad.client_order_id)
    report = rig.new_router().reconcile()
    assert list(report.failures) == [bad.symbol]
    assert "filled_quantity 4 without an average fill price" in report.failures[bad.symbol][0]
    assert list(rig.store.load_risk_state().halted_symbols) == [bad.symbol]
    assert rig.store.get_order(bad.client_order_id).status is OrderStatus.SUBMITTED  # nothing booked
    # a new container reconciles at its first intent: the other symbols trade on
    other = next(s for s in ("AAA", "BBB", "CCC") if s != bad.symbol)
    out = rig.new_router().handle(intent(2, 0.2, 100.0, other))
    assert out.fills == 1 and rig.store.get_position(other).quantity == 200


# ---------------------------------------------------------------------------------------------
# 4. A retired order that landed and filled is booked by reconciliation
# ---------------------------------------------------------------------------------------------


class Crash(Exception):
    """The orders Lambda dies right after the broker accepted the submit."""


class KillSwitchThenCrash(BrokerWrapper):
    """The kill-switch entry retires the PENDING order while its submit is under way; the submit
    lands, and the invocation dies before it can sync the answer. Counts the lookups made."""

    other: OrderRouter | None = None

    def __init__(self, inner):
        super().__init__(inner)
        self.lookups: list[str] = []

    def submit(self, order):
        if self.other is None:
            return self.inner.submit(order)
        other, self.other = self.other, None
        other.set_kill_switch(True, "incident 7")
        self.inner.submit(order)
        raise Crash("invocation died before the answer was synced")

    def get_order_by_client_id(self, client_order_id):
        self.lookups.append(client_order_id)
        return self.inner.get_order_by_client_id(client_order_id)


def test_a_retired_order_that_landed_and_filled_is_booked_not_left_as_a_position_difference():
    rig = Rig(broker=KillSwitchThenCrash)
    rig.warm()
    rig.broker.other = rig.new_router()
    first = intent(1, 0.5, 100.0)
    with pytest.raises(Crash):
        rig.router.handle(first)
    order = order_of(rig, 500.0)
    assert order.status is OrderStatus.REJECTED and order.reject_code == RejectReason.KILL_SWITCH.value
    # the broker fills the market order on its own before any reconciliation sees it open
    rig.paper.on_price("SPX", 101.0, first.timestamp + timedelta(minutes=1))
    assert rig.paper.list_open_orders() == []
    report = rig.new_router().reconcile()
    assert report.ok and rig.store.load_risk_state().halted_symbols == {}
    assert report.synced == [f"{order.client_order_id}: retired (KILL_SWITCH) here, FILLED/500 at the broker"]
    booked = rig.store.get_order(order.client_order_id)
    assert booked.status is OrderStatus.FILLED and booked.filled_quantity == 500
    assert rig.store.get_position("SPX").quantity == 500
    assert [(e.quantity, e.price) for e in rig.events("OrderFilled")] == [(500, 101.0)]
    # booked once: the next run finds the books in agreement and looks nothing retired up
    rig.broker.lookups.clear()
    assert rig.new_router().reconcile().ok and rig.broker.lookups == []
    assert len(rig.events("OrderFilled")) == 1


def test_reconciliation_looks_up_a_bounded_number_of_retired_orders_of_a_differing_symbol():
    rig = Rig(broker=KillSwitchThenCrash)
    rig.warm()
    # twelve recorded orders retired a minute after they were recorded (a submit may have been
    # under way), never at the broker; and twelve refused by a check, never sent
    for n in range(12):
        at = WALL + timedelta(minutes=n)
        rig.store.create_order(Order(
            client_order_id=f"coid-retired-{n:02d}", intent_id=f"i{n}", strategy_id="ens", symbol="SPX",
            side=Side.BUY, quantity=10, status=OrderStatus.REJECTED, reject_code=RejectReason.KILL_SWITCH.value,
            reject_reason="never sent: kill switch", created_at=at - timedelta(minutes=1), updated_at=at))
        rig.store.create_order(Order(
            client_order_id=f"coid-refused-{n:02d}", intent_id=f"r{n}", strategy_id="ens", symbol="SPX",
            side=Side.BUY, quantity=10, status=OrderStatus.REJECTED, reject_code=RejectReason.SYMBOL_HALTED.value,
            reject_reason="halted", created_at=at, updated_at=at))
    # a position the store cannot explain: bought by hand at the broker
    hand = Order(client_order_id="by-hand-0001", intent_id="manual", strategy_id="manual", symbol="SPX",
                 side=Side.BUY, quantity=7, created_at=WALL, updated_at=WALL, decision_time=WALL)
    rig.paper.submit(hand)
    rig.paper.on_price("SPX", 100.0, WALL + timedelta(minutes=1))
    report = rig.new_router().reconcile()
    assert report.failures == {"SPX": ["position 0 here, 7 at the broker"]}
    retired = [c for c in rig.broker.lookups if c.startswith("coid-retired-")]
    assert retired == [f"coid-retired-{n:02d}" for n in range(11, 1, -1)]  # the ten most recent
    assert not [c for c in rig.broker.lookups if c.startswith("coid-refused-")]  # never sent: not looked up
