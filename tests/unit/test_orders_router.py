"""OrderRouter over in-memory stores and the paper broker: exactly-once effect, unknown outcomes,
crash recovery by reconciliation, kill switch, breaker events."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore, MemoryPaperLedger
from ensemble_trader.domain.errors import ConcurrencyError, InfrastructureError
from ensemble_trader.domain.models import Order, OrderIntent, OrderStatus, Regime, Side, make_intent_id
from ensemble_trader.domain.orders import BrokerRejectedError, BrokerUnavailableError, UnknownOutcomeError
from ensemble_trader.domain.risk import RejectReason, RiskLimits, TradingState
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import OrderRouter

EVENTS = Path(__file__).resolve().parents[2] / "events"

T0 = datetime(2021, 3, 1, tzinfo=UTC)
WALL = datetime(2026, 1, 5, 12, tzinfo=UTC)


def intent(day: int, target: float, price: float, symbol: str = "SPX") -> OrderIntent:
    ts = T0 + timedelta(days=day)
    return OrderIntent(
        intent_id=make_intent_id("ens", symbol, ts, "v1"), strategy_id="ens", symbol=symbol,
        timestamp=ts, target_position=target, reference_price=price, model_version="v1",
        regime=Regime.BULL, confidence=0.9,
    )


class Rig:
    """A router over memory stores and a paper broker, with a settable wall clock."""

    def __init__(self, broker=None, **limits):
        self.clock = FixedClock(WALL)
        self.store = MemoryOrdersStore()
        self.ledger = MemoryPaperLedger()
        self.paper = PaperBroker(self.ledger, self.clock, slippage_bps=0, fee_bps=0)
        self.broker = broker(self.paper) if broker else self.paper
        self.bus = MemoryEventBus()
        self.limits = RiskLimits(clock="event", **limits)
        self.router = self.new_router()

    def new_router(self) -> OrderRouter:
        return OrderRouter(
            self.store, self.broker, self.clock, events=self.bus,
            limits=self.limits, initial_equity=100_000,
            reconcile_grace_seconds=60,
        )

    def events(self, name: str) -> list:
        return [e for e in self.bus.events if type(e).__name__ == name]

    def warm(self, symbol="SPX", price=100.0):
        """A first intent so the symbol has a reference price (its own order is rejected)."""
        out = self.router.handle(intent(0, 0.0, price, symbol))
        assert not out.orders


def test_same_intent_delivered_1000_times_gives_one_broker_order():
    rig = Rig()
    rig.warm()
    it = intent(1, 0.5, 100.0)
    outcomes = [rig.router.handle(it) for _ in range(1000)]
    assert rig.paper.created == 1
    placed = [o for o in rig.store.list_orders() if o.status is not OrderStatus.REJECTED]
    assert len(placed) == 1 and placed[0].quantity == 500
    assert sum(len(o.orders) for o in outcomes) == 1
    assert len(rig.events("OrderSubmitted")) == 1
    # the next bar fills it exactly once, however often that bar is delivered too
    nxt = intent(2, 0.5, 101.0)
    for _ in range(50):
        rig.router.handle(nxt)
    assert rig.store.get_position("SPX").quantity == 500
    assert len(rig.events("OrderFilled")) == 1


def test_same_intent_delivered_concurrently_gives_one_broker_order():
    rig = Rig()
    rig.warm()
    it = intent(1, 0.5, 100.0)
    start = threading.Barrier(16)

    def deliver(_):
        start.wait()
        for _ in range(63):
            try:
                rig.router.handle(it)
            except ConcurrencyError:  # a delivery that lost every risk-state race fails (SQS redelivers)
                pass

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(deliver, range(16)))
    assert rig.paper.created == 1
    assert len([o for o in rig.store.list_orders() if o.status is not OrderStatus.REJECTED]) == 1


def test_a_leg_recorded_by_a_concurrent_delivery_after_the_read_is_not_planned_twice():
    """Delivery A reads the working orders (none), plans BUY 500 (leg 0) and finds it recorded:
    delivery B recorded it in between. A's replan took B's leg off a position read without it,
    started from -500, planned a flip and sent its "opening leg", a second BUY 500 (1 run in ~500
    of the concurrent test above failed so on a loaded machine)."""
    rig = Rig()
    rig.warm()
    it = intent(1, 0.5, 100.0)
    store = rig.store
    create = store.create_order

    def create_after_a_concurrent_delivery(order):
        if order.intent_id == it.intent_id and store.get_order(order.client_order_id) is None:
            create(order)  # delivery B records the same leg first (its submit still to come)
        return create(order)

    store.create_order = create_after_a_concurrent_delivery
    out = rig.router.handle(it)
    assert out.resolved_existing == 1 and rig.paper.created == 1
    assert [(o.side.value, o.quantity) for o in store.list_orders() if o.intent_id == it.intent_id] == [("BUY", 500.0)]


class BrokerWrapper:
    """A broker around another one: everything not overridden is the inner broker's."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name):
        return getattr(self.inner, name)


class CrashAfterAccept(BrokerWrapper):
    """Delegates the submit, then dies before the caller can record the acknowledgement."""

    def __init__(self, inner):
        super().__init__(inner)
        self.crash = True

    def submit(self, order):
        ack = self.inner.submit(order)
        if self.crash:
            raise SystemExit("process killed after the broker accepted")
        return ack


def test_crash_after_broker_accepted_is_repaired_by_reconciliation_without_duplicate():
    rig = Rig(broker=CrashAfterAccept)
    rig.warm()
    with pytest.raises(SystemExit):
        rig.router.handle(intent(1, 0.5, 100.0))
    (stuck,) = [o for o in rig.store.list_orders() if o.status is OrderStatus.PENDING]
    # the broker fills it while we are down
    rig.paper.on_price("SPX", 102.0, T0 + timedelta(days=2))
    assert rig.store.get_position("SPX") is None

    rig.broker.crash = False
    cold = rig.new_router()  # a new container: reconciles before its first intent
    report = cold.reconcile()
    assert report.ok and len(report.synced) == 1
    repaired = rig.store.get_order(stuck.client_order_id)
    assert repaired.status is OrderStatus.FILLED and repaired.filled_quantity == 500
    assert rig.store.get_position("SPX").quantity == 500
    # redelivery of the same intent: no second order
    cold.handle(intent(1, 0.5, 100.0))
    assert rig.paper.created == 1
    assert cold.reconcile().ok


class Flaky(BrokerWrapper):
    """A broker whose submit times out; ``reached`` says whether the order got there first."""

    def __init__(self, inner):
        super().__init__(inner)
        self.reached = True
        self.lookup_down = False
        self.lookups = 0

    def submit(self, order):
        if self.reached:
            self.inner.submit(order)
        raise UnknownOutcomeError(order.client_order_id, "read timeout after 5 s")

    def get_order_by_client_id(self, coid):
        self.lookups += 1
        if self.lookup_down:
            raise BrokerUnavailableError("connection refused")
        return self.inner.get_order_by_client_id(coid)


def test_timeout_with_unknown_outcome_is_resolved_by_lookup():
    rig = Rig(broker=Flaky)
    rig.warm()
    out = rig.router.handle(intent(1, 0.5, 100.0))
    (order,) = out.orders
    assert order["status"] == "SUBMITTED"  # found at the broker by its client order id
    assert rig.broker.lookups == 1 and rig.paper.created == 1


def test_unknown_outcome_unresolvable_now_is_settled_by_reconciliation():
    rig = Rig(broker=Flaky)
    rig.warm()
    rig.broker.lookup_down = True
    rig.router.handle(intent(1, 0.5, 100.0))
    (unknown,) = [o for o in rig.store.list_orders() if o.status is OrderStatus.UNKNOWN]
    # while UNKNOWN its quantity counts as working: the next intent does not order again
    rig.broker.lookup_down = False
    rig.broker.reached = False  # whatever it submits now would never arrive
    rig.router.handle(intent(1, 0.5, 100.0))
    assert rig.paper.created == 1
    report = rig.router.reconcile()
    assert report.synced and rig.store.get_order(unknown.client_order_id).status is OrderStatus.SUBMITTED


def test_order_that_never_reached_the_broker_is_marked_after_the_grace_period():
    rig = Rig(broker=Flaky)
    rig.warm()
    rig.broker.reached = False
    rig.router.handle(intent(1, 0.5, 100.0))
    (unknown,) = [o for o in rig.store.list_orders() if o.status is OrderStatus.UNKNOWN]
    assert rig.router.reconcile().waiting  # too young to judge
    rig.clock.set(WALL + timedelta(seconds=61))
    report = rig.router.reconcile()
    assert report.not_at_broker
    settled = rig.store.get_order(unknown.client_order_id)
    assert settled.status is OrderStatus.REJECTED and settled.reject_code == RejectReason.NOT_AT_BROKER.value
    assert rig.paper.created == 0


def test_kill_switch_cancels_working_orders_and_blocks_new_ones():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))
    assert len(rig.paper.list_open_orders()) == 1
    result = rig.router.set_kill_switch(True, "operator drill")
    assert len(result["canceled"]) == 1 and result["trading_state"] == "HALTED"
    assert rig.paper.list_open_orders() == []
    assert all(o.status is not OrderStatus.SUBMITTED for o in rig.store.list_orders())
    out = rig.router.handle(intent(2, -0.5, 100.0))
    assert {r["reason"] for r in out.rejections} == {RejectReason.KILL_SWITCH.value}
    assert rig.paper.created == 1
    rig.router.set_kill_switch(False, "drill over")
    assert rig.router.handle(intent(3, -0.5, 100.0)).orders


def test_kill_switch_flag_set_directly_in_the_store_also_cancels():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))
    rig.store.kill_switch_flag = True  # an operator flipped the DynamoDB attribute
    out = rig.router.handle(intent(1, 0.5, 100.0, symbol="NDX"))
    assert rig.paper.list_open_orders() == []
    assert rig.events("OrderCanceled")
    assert not out.orders


def test_foreign_order_at_the_broker_halts_that_symbol_only():
    rig = Rig()
    rig.warm("SPX")
    rig.warm("NDX")
    rig.paper.submit(Order(
        client_order_id="manual-0001", intent_id="manual", strategy_id="human", symbol="SPX",
        side=Side.BUY, quantity=5, created_at=WALL, updated_at=WALL, decision_time=WALL,
    ))
    report = rig.router.reconcile()
    assert not report.ok and "SPX" in report.failures
    (failed,) = rig.events("ReconciliationFailed")
    assert failed.symbol == "SPX" and "not placed by this system" in failed.reasons[0]
    spx = rig.router.handle(intent(1, 0.5, 100.0, "SPX"))
    assert spx.rejections[0]["reason"] == RejectReason.SYMBOL_HALTED.value
    assert rig.router.handle(intent(1, 0.5, 100.0, "NDX")).orders
    rig.paper.cancel("manual-0001")
    assert "SPX" in rig.router.reconcile().cleared_symbols


def test_risk_rejection_is_recorded_and_published_once():
    rig = Rig(max_order_quantity=100)
    rig.warm()
    for _ in range(5):
        out = rig.router.handle(intent(1, 0.5, 100.0))
    assert out.resolved_existing == 1
    (rej,) = rig.events("OrderRejected")
    assert rej.reason_code == RejectReason.MAX_ORDER_QUANTITY.value
    assert rig.paper.created == 0


def test_losses_trip_the_breaker_and_only_reducing_orders_pass():
    rig = Rig(daily_loss_reduce=0.02, daily_loss_halt=0.5, drawdown_reduce=0.4, drawdown_halt=0.6)
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))  # buy 1,000
    rig.router.handle(intent(2, 1.0, 100.0))  # filled at 100
    out = rig.router.handle(intent(3, 1.5, 96.0))  # -4 % on 100k: REDUCING, the add is refused
    (trip,) = rig.events("CircuitBreakerTripped")
    assert trip.current == TradingState.REDUCING.value
    assert out.rejections[0]["reason"] == RejectReason.REDUCING_ONLY.value
    out = rig.router.handle(intent(3, 0.2, 96.0))  # same bar and model: the same decision id
    assert not out.orders  # ... already recorded as rejected
    reduce = rig.router.handle(intent(4, 0.2, 96.0))
    assert reduce.orders and reduce.orders[0]["side"] == "SELL"


def test_an_exit_on_a_bar_that_gaps_past_the_collar_goes_out_on_that_bar():
    """A -15 % bar under a 10 % collar: the exit to flat was refused PRICE_COLLAR and went out a
    bar later, after a further fall. An order that adds exposure on such a bar is still refused."""
    rig = Rig(daily_loss_reduce=0.3, daily_loss_halt=0.5, drawdown_reduce=0.3, drawdown_halt=0.5)  # stays ACTIVE
    rig.warm()
    rig.warm(symbol="NDX")
    rig.router.handle(intent(1, 0.3, 100.0))
    rig.router.handle(intent(2, 0.3, 100.0))  # filled: long 300
    out = rig.router.handle(intent(3, 0.0, 85.0))
    assert [(o["side"], o["quantity"]) for o in out.orders] == [("SELL", 300.0)] and not out.rejections
    out = rig.router.handle(intent(3, 0.3, 85.0, symbol="NDX"))  # an entry at 15 % from its reference
    assert not out.orders and [r["reason"] for r in out.rejections] == [RejectReason.PRICE_COLLAR.value]
    rig.router.handle(intent(4, 0.0, 82.0))
    assert rig.store.get_position("SPX").quantity == 0.0  # filled at the next bar


def test_a_daily_loss_halt_that_becomes_latched_is_published_again():
    """A daily-loss halt lifts at the day roll; a drawdown halt reached later the same day does
    not. Without an event of its own the operator saw only the first (a daily loss) and waited for
    midnight: the latch is published as HALTED to HALTED, ``latched`` true, once."""
    rig = Rig(daily_loss_reduce=0.02, daily_loss_halt=0.04, drawdown_reduce=0.045, drawdown_halt=0.08)
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))  # buy 1,000
    rig.router.handle(intent(2, 1.0, 100.0))  # filled at 100
    rig.router.handle(intent(3, 1.0, 95.0))  # -5 % on the day: HALTED for the day
    rig.router.handle(intent(3.5, 1.0, 91.0))  # the same day, drawdown 9 % >= 8 %: latched
    rig.router.handle(intent(4, 1.0, 91.0))  # the next day: still HALTED, nothing new to say
    trips = [(e.previous, e.current, e.latched, e.reason.split()[0]) for e in rig.events("CircuitBreakerTripped")]
    assert trips == [("ACTIVE", "HALTED", False, "daily"), ("HALTED", "HALTED", True, "drawdown")]
    assert rig.store.load_risk_state().breaker_latched


def test_equity_at_or_below_zero_halts_and_latches_instead_of_failing_every_intent():
    """Short 2,000 at 100 on 100,000, marked at 160: equity -20,000. Planning raised ValueError
    (a target is a fraction of equity), so the HALTED state was published but never saved, the
    intent was retried and dead-lettered, and the next intent traded on from an ACTIVE state."""
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, -2.0, 100.0))
    rig.router.handle(intent(2, -2.0, 100.0))  # filled: short 2,000
    out = rig.router.handle(intent(3, 0.0, 160.0))
    assert not out.orders and out.account["equity"] == pytest.approx(-20_000)
    (rejection,) = out.rejections
    assert rejection["reason"] == RejectReason.HALTED.value and "-20,000" in rejection["message"]
    state = rig.store.load_risk_state()
    assert state.trading_state is TradingState.HALTED and state.breaker_latched
    assert state.equity == pytest.approx(-20_000) and state.marks["SPX"].price == 160.0
    assert "equity" in state.state_reason
    assert [(e.current, e.latched) for e in rig.events("CircuitBreakerTripped")] == [(TradingState.HALTED.value, True)]
    assert [e.reason_code for e in rig.events("OrderRejected")] == [RejectReason.HALTED.value]
    # equity back above zero: still HALTED (latched until an operator resets it)
    later = rig.router.handle(intent(4, 0.0, 100.0))
    assert not later.orders and later.rejections[0]["reason"] == RejectReason.HALTED.value
    assert rig.store.get_position("SPX").quantity == -2_000


def test_a_reset_after_equity_went_negative_lets_the_next_day_trade():
    """The reset rebased the day's start and the peak to equity -20,000; the next day, back at
    100,000, the breaker HALTED again on a 'daily loss 100.00%' and refused the exit."""
    rig = Rig(price_collar=0.5)  # 160 → 100 is a 37.5 % move
    rig.warm()
    rig.router.handle(intent(1, -2.0, 100.0))
    rig.router.handle(intent(2, -2.0, 100.0))  # filled: short 2,000
    rig.router.handle(intent(3, 0.0, 160.0))  # equity -20,000: halted, latched
    rig.router.set_kill_switch(False, "operator: recapitalised", reset_breaker=True)
    out = rig.router.handle(intent(4, 0.0, 100.0))  # equity back at 100,000
    assert out.account["trading_state"] == "ACTIVE" and out.account["daily_loss"] == 0.0
    assert [(o["side"], o["quantity"]) for o in out.orders] == [("BUY", 2_000.0)] and not out.rejections


def test_while_equity_is_at_or_below_zero_exits_trade_once_the_operator_reset_the_halt():
    """Equity <= 0 ended every intent with no order planned, so the short could never be exited,
    not even after the documented reset (which the next intent undid, halting again), and the
    kill switch was reported as HALTED. Now every intent plans the exit to flat (a target is a
    fraction of equity: of none, no shares): HALTED refuses it until the operator resets, the kill
    switch refuses it KILL_SWITCH, and after the reset it goes out while nothing adds exposure."""
    rig = Rig()
    rig.warm()
    rig.warm("IXIC")
    rig.router.handle(intent(1, -2.0, 100.0))
    rig.router.handle(intent(2, -2.0, 100.0))  # filled: short 2,000
    out = rig.router.handle(intent(3, 0.0, 160.0))  # equity -20,000: halted, latched
    assert [(r["reason"], r.get("client_order_id") is not None) for r in out.rejections] == [("HALTED", True)]
    rig.router.set_kill_switch(True, "incident")
    out = rig.router.handle(intent(4, 0.0, 170.0))  # equity -40,000
    assert [r["reason"] for r in out.rejections] == [RejectReason.KILL_SWITCH.value]
    result = rig.router.set_kill_switch(False, "operator: close the short", reset_breaker=True)
    assert result["trading_state"] == TradingState.REDUCING.value
    out = rig.router.handle(intent(5, 0.0, 170.0))  # still -40,000: exits only
    assert out.account["trading_state"] == "REDUCING" and out.account["equity"] == pytest.approx(-40_000)
    assert [(o["side"], o["quantity"]) for o in out.orders] == [("BUY", 2_000.0)] and not out.rejections
    opening = rig.router.handle(intent(5, 0.5, 100.0, "IXIC"))  # adds exposure: refused
    assert not opening.orders and [r["reason"] for r in opening.rejections] == [RejectReason.REDUCING_ONLY.value]
    rig.router.handle(intent(6, 0.0, 170.0))  # the exit fills
    assert rig.store.get_position("SPX").quantity == 0
    assert rig.store.load_risk_state().trading_state is TradingState.REDUCING


def test_stale_intent_is_rejected():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(5, 0.1, 100.0))
    out = rig.router.handle(intent(3, 0.5, 100.0))
    assert out.rejections[0]["reason"] == RejectReason.STALE_INTENT.value


def test_an_intent_dated_ahead_of_the_clock_is_refused_and_leaves_the_symbol_usable():
    """Its price would become the newest mark and every genuine intent after it would be stale."""
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(5, 0.1, 100.0))
    ahead = (WALL - T0).days + 3650
    out = rig.router.handle(intent(ahead, 0.5, 100.0))
    assert out.rejections[0]["reason"] == RejectReason.FUTURE_INTENT.value and not out.orders
    assert "ahead of the clock" in out.rejections[0]["message"]
    assert rig.store.load_risk_state().marks["SPX"].timestamp == T0 + timedelta(days=5)
    later = rig.router.handle(intent(6, 0.0, 101.0))
    assert not later.rejections and later.orders and later.orders[0]["side"] == "SELL"


def test_with_the_wall_clock_an_intent_dated_slightly_ahead_leaves_a_usable_reference():
    """An intent 2 s ahead of the wall clock is allowed (max_intent_lead_seconds); its price is the
    next intent's reference, which was then refused REFERENCE_STALE as '-2 s old'."""
    rig = Rig()
    rig.limits = RiskLimits(clock="wall")
    rig.router = rig.new_router()

    def at(seconds: float, target: float) -> OrderIntent:
        ts = WALL + timedelta(seconds=seconds)
        return OrderIntent(intent_id=make_intent_id("ens", "SPX", ts, "v1"), strategy_id="ens", symbol="SPX",
                           timestamp=ts, target_position=target, reference_price=100.0, model_version="v1",
                           regime=Regime.BULL, confidence=0.9)

    rig.router.handle(at(2, 0.0))
    out = rig.router.handle(at(3, 0.5))
    assert not out.rejections and [(o["side"], o["quantity"]) for o in out.orders] == [("BUY", 500.0)]


def test_a_batch_reads_shared_state_once_and_publishes_once():
    rig = Rig()
    rig.warm()
    published_before = len(rig.bus.events)
    with rig.router.batch():
        for day in range(1, 6):
            rig.router.handle(intent(day, 0.1 * day, 100.0 + day))
        assert len(rig.bus.events) == published_before  # held until the batch ends
    assert len(rig.events("OrderSubmitted")) == 5 and len(rig.events("OrderFilled")) == 4
    assert rig.store.load_risk_state().marks["SPX"].price == 105.0  # flushed
    assert rig.router.reconcile().ok


def test_batch_flush_merges_into_a_risk_state_saved_meanwhile():
    rig = Rig()
    rig.warm()
    with rig.router.batch():
        rig.router.handle(intent(1, 0.2, 101.0))
        other = rig.store.load_risk_state()  # another writer: the operator's kill switch
        other.kill_switch, other.kill_switch_reason = True, "operator"
        rig.store.save_risk_state(other, write_kill_switch=True)
    state = rig.store.load_risk_state()
    assert state.kill_switch and state.marks["SPX"].price == 101.0 and state.recent


def _seed_latched_halt(rig: Rig) -> None:
    """A drawdown halt the operator is about to reset: latched, the peak far above the equity."""
    state = rig.store.load_risk_state()
    state.trading_state, state.state_reason = TradingState.HALTED, "drawdown 30.00% >= 25.00%"
    state.breaker_latched, state.peak_equity, state.equity = True, 150_000.0, 100_000.0
    rig.store.save_risk_state(state)


def test_breaker_reset_between_a_batch_load_and_its_save_survives():
    rig = Rig()
    rig.warm()
    _seed_latched_halt(rig)
    with rig.router.batch():
        out = rig.router.handle(intent(1, 0.2, 101.0))  # the batch loads the HALTED state
        assert out.rejections[0]["reason"] == RejectReason.HALTED.value
        # meanwhile the operator resets the breaker (another container, straight to the store)
        result = rig.new_router().set_kill_switch(False, "operator reviewed", reset_breaker=True)
        assert result["trading_state"] == TradingState.ACTIVE.value
    state = rig.store.load_risk_state()
    assert state.trading_state is TradingState.ACTIVE and not state.breaker_latched
    assert state.state_reason == "reset: operator reviewed" and state.breaker_resets == 1
    assert state.peak_equity == pytest.approx(100_000.0)  # rebased, not the stale 150,000
    # the router's own updates landed: its mark, its equity and its day
    assert state.marks["SPX"].price == 101.0
    assert state.equity == pytest.approx(100_000.0) and state.day == (T0 + timedelta(days=1)).date()
    # and trading goes on
    assert rig.router.handle(intent(2, 0.2, 101.0)).orders


def test_kill_switch_set_between_a_batch_load_and_its_save_survives():
    rig = Rig()
    rig.warm()
    with rig.router.batch():
        rig.router.handle(intent(1, 0.2, 101.0))
        rig.new_router().set_kill_switch(True, "operator drill")
    state = rig.store.load_risk_state()
    assert state.kill_switch and state.kill_switch_reason == "operator drill"
    assert state.marks["SPX"].price == 101.0 and state.recent
    out = rig.router.handle(intent(2, 0.4, 101.0))
    assert out.rejections[0]["reason"] == RejectReason.KILL_SWITCH.value


def test_kill_switch_with_reset_between_a_batch_load_and_its_save_survives():
    rig = Rig()
    rig.warm()
    _seed_latched_halt(rig)
    with rig.router.batch():
        rig.router.handle(intent(1, 0.2, 101.0))
        rig.new_router().set_kill_switch(False, "reset the breaker", reset_breaker=True)
    state = rig.store.load_risk_state()
    assert not state.kill_switch and not state.breaker_latched
    assert state.trading_state is TradingState.ACTIVE and state.peak_equity == pytest.approx(100_000.0)


def test_batch_save_of_a_state_it_did_not_load_is_checked_against_the_stored_version():
    rig = Rig()
    rig.warm()
    stale = rig.store.load_risk_state()
    rig.store.save_risk_state(rig.store.load_risk_state())  # someone saves first
    with pytest.raises(ConcurrencyError, match="stale"):
        with rig.router.batch():
            rig.router.store.save_risk_state(stale)


def _failing_saves(rig: Rig, times: int) -> list[int]:
    """Make the durable store's risk-state write fail ``times`` times; returns the call count."""
    from ensemble_trader.domain.errors import InfrastructureError

    save, calls = rig.store.save_risk_state, [0]

    def flaky(state, **kw):
        calls[0] += 1
        if calls[0] <= times:
            raise InfrastructureError("DynamoDB put_item risk-state: throttled")
        return save(state, **kw)

    rig.store.save_risk_state = flaky
    return calls


def test_a_batch_writes_its_risk_state_through_a_transient_failure():
    rig = Rig()
    calls = _failing_saves(rig, 2)
    with rig.router.batch():
        rig.router.handle(intent(0, 0.0, 100.0))
    assert calls[0] == 3 and "SPX" in rig.store.load_risk_state().marks


def test_a_batch_whose_risk_state_cannot_be_written_hands_it_to_the_next_batch():
    """The batch's intents are done for idempotency, and their redelivery replays them without
    routing: their risk changes are kept by the router and written with its next batch."""
    from ensemble_trader.domain.errors import InfrastructureError
    from ensemble_trader.runtime.orders import MAX_ATTEMPTS

    rig = Rig()
    _failing_saves(rig, MAX_ATTEMPTS)
    with pytest.raises(InfrastructureError, match="throttled"):
        with rig.router.batch():
            rig.router.handle(intent(0, 0.0, 100.0))
    assert "SPX" not in rig.store.load_risk_state().marks
    rig.store.save_risk_state(rig.store.load_risk_state())  # another writer moves the version meanwhile
    with rig.router.batch():
        pass  # the redelivered batch: every intent replayed by idempotency, nothing routed
    state = rig.store.load_risk_state()
    assert state.marks["SPX"].price == 100.0 and state.version == 2


def test_batch_recovers_when_another_writer_synced_a_fill_first():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))  # order working at the broker
    with rig.router.batch():
        rig.router.store.list_orders(working_only=True)  # the batch caches the working order
        # meanwhile the scheduled reconciliation (another container) applies the fill
        rig.paper.on_price("SPX", 101.0, T0 + timedelta(days=2))
        assert rig.new_router().reconcile().synced
        rig.router.handle(intent(2, 0.5, 101.0))
    assert rig.store.get_position("SPX").quantity == 500
    assert len(rig.store.applied_fills) == 1
    # the next order is the small rebalance to 50 % of equity at 101, not a 500-share sell
    # computed from a stale copy of the filled order
    second = [o for o in rig.store.list_orders() if o.status is not OrderStatus.REJECTED][1:]
    assert [(o.side, o.quantity) for o in second] == [(Side.SELL, 5.0)]


@pytest.mark.parametrize("reducing", [False, True])
def test_an_exit_larger_than_the_per_order_notional_goes_out_in_parts(reducing):
    """Long 2,000 bought at the 200,000 per-order notional; at 108 the exit is 216,000 and was
    rejected MAX_ORDER_NOTIONAL on every bar, also while the breaker allowed only reductions."""
    rig = Rig(max_order_notional=200_000, max_position_notional=1e9, max_gross_exposure=1e9)
    rig.warm()
    rig.router.handle(intent(1, 2.0, 100.0))
    rig.router.handle(intent(2, 2.0, 100.0))  # filled: long 2,000
    if reducing:
        state = rig.store.load_risk_state()
        state.trading_state, state.state_reason, state.breaker_latched = TradingState.REDUCING, "test", True
        rig.store.save_risk_state(state)
    exit_ = intent(3, 0.0, 108.0)
    out = rig.router.handle(exit_)
    assert not out.rejections
    (sell,) = out.orders
    assert (sell["side"], sell["quantity"], sell["planned_quantity"]) == ("SELL", 1_851.0, 2_000.0)  # 200,000 / 108
    assert "MAX_ORDER_NOTIONAL" in sell["cut"]
    for _ in range(3):
        assert not rig.router.handle(exit_).orders  # redeliveries: the same cut order, not another
    assert rig.paper.created == 2
    rest = rig.router.handle(intent(4, 0.0, 108.0))  # fills 1,851; the next intent sells the rest
    assert [(o["side"], o["quantity"]) for o in rest.orders] == [("SELL", 149.0)] and "cut" not in rest.orders[0]
    rig.router.handle(intent(5, 0.0, 108.0))
    assert rig.store.get_position("SPX").quantity == 0


def test_a_flip_whose_closing_leg_is_cut_holds_its_opening_leg_back():
    """Long 2,000 under a 1,000-share order limit, flipped to short 1,000: the closing SELL 2,000
    was rejected and the opening SELL 1,000 went out against the unchanged position. Now the
    close is cut to 1,000 and the opening leg waits for a later intent that closes in full."""
    rig = Rig(max_order_quantity=1_000, max_position_notional=1e9, max_gross_exposure=1e9)
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))
    rig.router.handle(intent(2, 2.0, 100.0))
    rig.router.handle(intent(3, 2.0, 100.0))
    assert rig.store.get_position("SPX").quantity == 2_000
    flip = intent(4, -1.0, 100.0)
    out = rig.router.handle(flip)
    assert [(o["side"], o["quantity"], o["planned_quantity"]) for o in out.orders] == [("SELL", 1_000.0, 2_000.0)]
    (held_back,) = out.rejections
    assert held_back["reason"] == RejectReason.CLOSING_LEG_INCOMPLETE.value
    assert "cut to 1000 of 2000" in held_back["message"]
    for _ in range(3):
        again = rig.router.handle(flip)
        assert not again.orders and not again.rejections
    assert rig.paper.created == 3 and len(rig.events("OrderRejected")) == 1
    out = rig.router.handle(intent(5, -1.0, 100.0))  # fills the cut close: long 1,000, a whole flip now
    assert [(o["side"], o["quantity"]) for o in out.orders] == [("SELL", 1_000.0), ("SELL", 1_000.0)]
    rig.router.handle(intent(6, -1.0, 100.0))
    assert rig.store.get_position("SPX").quantity == -1_000


def test_a_flip_cut_then_redelivered_after_a_crash_still_holds_its_opening_leg_back():
    rig = Rig(broker=CrashBeforeSubmit, max_order_quantity=1_000, max_position_notional=1e9, max_gross_exposure=1e9)
    rig.broker.crash = False
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))
    rig.router.handle(intent(2, 2.0, 100.0))
    rig.router.handle(intent(3, 2.0, 100.0))
    flip = intent(4, -1.0, 100.0)
    rig.broker.crash = True
    with pytest.raises(SystemExit):
        rig.router.handle(flip)  # the cut close is recorded PENDING, then the process dies
    out = rig.router.handle(flip)  # SQS redelivers: the close is sent, the opening leg held back
    assert out.resolved_existing == 1
    assert [o.quantity for o in rig.paper.list_open_orders()] == [1_000.0]
    assert [r["reason"] for r in out.rejections] == [RejectReason.CLOSING_LEG_INCOMPLETE.value]
    rig.router.handle(flip)
    assert len(rig.paper.list_open_orders()) == 1


class RejectsNextSell(BrokerWrapper):
    """Refuses the next SELL (Alpaca: 'insufficient qty available'), once."""

    def submit(self, order):
        if order.side is Side.SELL and not getattr(self, "refused", False):
            self.refused = True
            raise BrokerRejectedError(order.client_order_id, "insufficient qty available")
        return self.inner.submit(order)


def test_a_flip_whose_closing_leg_the_broker_refuses_does_not_send_its_opening_leg():
    """The opening leg was checked and sent as if the close had happened."""
    rig = Rig(broker=RejectsNextSell)
    rig.warm()
    rig.router.handle(intent(1, 0.3, 100.0))
    rig.router.handle(intent(2, 0.3, 100.0))  # long 300
    flip = intent(3, -0.3, 100.0)
    out = rig.router.handle(flip)
    assert [(o["side"], o["status"]) for o in out.orders] == [("SELL", "REJECTED")]
    (held_back,) = out.rejections
    assert held_back["reason"] == RejectReason.CLOSING_LEG_INCOMPLETE.value and "BROKER_REJECTED" in held_back["message"]
    assert rig.paper.list_open_orders() == []
    rig.router.handle(flip)  # a redelivery does not send it either
    assert rig.paper.list_open_orders() == []
    nxt = rig.router.handle(intent(4, -0.3, 100.0))  # the next intent flips in full
    assert [(o["side"], o["quantity"]) for o in nxt.orders] == [("SELL", 300.0), ("SELL", 300.0)]


def test_a_flip_under_the_kill_switch_is_rejected_kill_switch_on_both_legs():
    """Holding the opening leg back does not hide the check that refuses it anyway."""
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.3, 100.0))
    rig.router.handle(intent(2, 0.3, 100.0))  # long 300
    rig.router.set_kill_switch(True, "incident")
    out = rig.router.handle(intent(3, -0.3, 100.0))
    assert [r["reason"] for r in out.rejections] == [RejectReason.KILL_SWITCH.value] * 2


def test_a_flip_with_two_equal_legs_is_not_a_duplicate():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.3, 100.0))
    rig.router.handle(intent(2, 0.3, 100.0))  # filled: long 300
    assert rig.store.get_position("SPX").quantity == 300
    out = rig.router.handle(intent(3, -0.3, 100.0))  # close 300, open 300 short
    assert [(o["side"], o["quantity"]) for o in out.orders] == [("SELL", 300.0), ("SELL", 300.0)]
    assert not out.rejections


def test_each_symbol_trades_its_allocated_share_of_equity():
    rig = Rig()
    rig.router.allocations = {"SPX": 0.6}
    rig.router.default_allocation = 0.25
    rig.warm("SPX")
    rig.warm("IXIC")
    spx = rig.router.handle(intent(1, 1.0, 100.0, "SPX"))
    ixic = rig.router.handle(intent(1, -1.0, 100.0, "IXIC"))
    assert [o["quantity"] for o in spx.orders] == [600.0]  # 1.0 x 0.6 x 100,000 / 100
    assert [o["quantity"] for o in ixic.orders] == [250.0]  # the default allocation


def test_outcome_and_metrics_report_the_account_seen_by_the_breaker():
    from ensemble_trader.runtime.orders import IntentConsumer

    class Metrics:
        def __init__(self):
            self.values = {}

        def add_metric(self, name, unit, value):
            self.values[name] = value

    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))  # 1,000 shares ...
    rig.router.handle(intent(2, 1.0, 100.0))  # ... filled at the next price, 100
    metrics = Metrics()
    consumer = IntentConsumer(rig.router, dead_letters=None, metrics=metrics)
    result = consumer.process(intent(3, 1.0, 96.0).model_dump_json())  # marked at 96: -4,000
    assert result["account"] == {"equity": pytest.approx(96_000), "daily_loss": pytest.approx(0.04),
                                 "drawdown": pytest.approx(0.04), "trading_state": "REDUCING"}  # 4 % >= 3 %
    assert metrics.values["account_equity"] == pytest.approx(96_000)
    assert metrics.values["account_drawdown"] == pytest.approx(0.04)
    assert metrics.values["account_daily_loss"] == pytest.approx(0.04)


def test_orders_settings_read_allocations_and_refuse_more_than_the_account(monkeypatch):
    from ensemble_trader.runtime.orders import OrdersSettings
    from ensemble_trader.runtime.settings import EnvironmentSettingError

    monkeypatch.setenv("ET_ORDERS_ALLOCATIONS", '{"SPX": 0.5, "IXIC": 0.5}')
    monkeypatch.setenv("ET_ORDERS_DEFAULT_ALLOCATION", "0.1")
    settings = OrdersSettings()
    assert settings.allocations == {"SPX": 0.5, "IXIC": 0.5} and settings.default_allocation == 0.1
    monkeypatch.setenv("ET_ORDERS_ALLOCATIONS", '{"SPX": 0.7, "IXIC": 0.5}')
    with pytest.raises(EnvironmentSettingError, match="^ET_ORDERS_ALLOCATIONS: allocations add up to 1.2"):
        OrdersSettings()


class CrashBeforeSubmit(BrokerWrapper):
    """Dies after the PENDING order is recorded, before the broker is called (once, when armed)."""

    error: BaseException = SystemExit("process killed before the broker call")
    armed = True

    def __init__(self, inner):
        super().__init__(inner)
        self.crash = self.armed

    def submit(self, order):
        if self.crash:
            self.crash = False
            raise self.error
        return self.inner.submit(order)


def test_the_kill_switch_retires_a_pending_order_the_broker_never_received():
    rig = Rig(broker=CrashBeforeSubmit)
    rig.warm()
    it = intent(1, 0.5, 100.0)
    with pytest.raises(SystemExit):
        rig.router.handle(it)
    (pending,) = [o for o in rig.store.list_orders() if o.status is OrderStatus.PENDING]
    result = rig.router.set_kill_switch(True, "incident")
    assert pending.client_order_id in result["canceled"]
    stored = rig.store.get_order(pending.client_order_id)
    assert stored.status is OrderStatus.REJECTED and stored.reject_code == RejectReason.KILL_SWITCH.value
    rig.router.handle(it)  # SQS redelivers the intent: nothing is sent
    assert rig.paper.created == 0 and rig.broker.list_open_orders() == []


def test_a_pending_order_found_on_redelivery_is_checked_again_before_it_is_sent():
    """The crash left SPX's BUY recorded but unsent. By the redelivery the breaker has HALTED and
    equity moved (BTC +20 %), so the intent re-plans the same leg and finds the stored order: it
    is checked again, and refused, instead of being sent as it stood."""

    def scenario(halt: bool) -> Rig:
        rig = Rig(broker=CrashBeforeSubmit, max_gross_exposure=1e9, max_position_notional=1e9)
        rig.broker.crash = False
        rig.warm()
        rig.warm("BTC")
        rig.router.handle(intent(1, 0.5, 100.0, "BTC"))
        rig.router.handle(intent(2, 0.5, 100.0, "BTC"))  # BTC held
        it = intent(3, 0.5, 100.0)
        rig.broker.crash = True
        with pytest.raises(SystemExit):
            rig.router.handle(it)
        if halt:
            state = rig.store.load_risk_state()
            state.trading_state, state.state_reason, state.breaker_latched = TradingState.HALTED, "test", True
            rig.store.save_risk_state(state)
        rig.router.handle(intent(3, 0.5, 120.0, "BTC"))
        out = rig.router.handle(it)  # SQS redelivers the SPX intent
        assert out.resolved_existing == 1
        return rig

    halted = scenario(halt=True)
    (spx,) = [o for o in halted.store.list_orders() if o.symbol == "SPX" and o.side.value == "BUY"]
    assert spx.status is OrderStatus.REJECTED and spx.reject_code == RejectReason.HALTED.value
    assert not [o for o in halted.broker.list_open_orders() if o.symbol == "SPX"]
    active = scenario(halt=False)  # without the halt the same redelivery sends it, once
    assert [o.symbol for o in active.broker.list_open_orders()].count("SPX") == 1


class CrashBeforeOpeningLeg(BrokerWrapper):
    """Dies after the second submit's PENDING record, before the broker call (once, when armed):
    a flip's closing leg went out, its opening leg did not."""

    def __init__(self, inner):
        super().__init__(inner)
        self.armed, self.submits = False, 0

    def submit(self, order):
        if self.armed:
            self.submits += 1
            if self.submits == 2:
                self.armed = False
                raise SystemExit("process killed before the opening leg's submit")
        return self.inner.submit(order)


@pytest.mark.parametrize("reconciled", [True, False])
def test_a_redelivered_flip_holds_back_its_pending_opening_leg_when_the_close_was_canceled(reconciled):
    """Long 300, flipped to -300: the close went out, the process died before the opening leg's
    submit (PENDING), and the broker canceled the close. The redelivery checked the PENDING
    opening leg with the pre-trade checks only and sent it against the unchanged long position;
    it is now held back CLOSING_LEG_INCOMPLETE like on a first delivery — also when no
    reconciliation has seen the cancel yet (the close is looked up at the broker first)."""
    from ensemble_trader.domain.orders import client_order_id as leg_id

    rig = Rig(broker=CrashBeforeOpeningLeg)
    rig.warm()
    rig.router.handle(intent(1, 0.3, 100.0))
    rig.router.handle(intent(2, 0.3, 100.0))  # long 300
    flip = intent(3, -0.3, 100.0)
    rig.broker.armed = True
    with pytest.raises(SystemExit):
        rig.router.handle(flip)
    close, opening = leg_id(flip, 0), leg_id(flip, 1)
    assert rig.store.get_order(opening).status is OrderStatus.PENDING
    rig.paper.cancel(close)  # the broker cancels the close meanwhile (an expiry, an asynchronous reject)
    router = rig.new_router() if reconciled else rig.router  # a new container reconciles first
    out = router.handle(flip)  # SQS redelivers
    stored = rig.store.get_order(opening)
    assert stored.status is OrderStatus.REJECTED and stored.reject_code == RejectReason.CLOSING_LEG_INCOMPLETE.value
    assert "canceled with 0 of 300 filled" in stored.reject_reason
    assert [(r["client_order_id"], r["reason"]) for r in out.rejections] == [
        (opening, RejectReason.CLOSING_LEG_INCOMPLETE.value)]
    assert rig.paper.list_open_orders() == []
    router.handle(flip)
    assert rig.paper.list_open_orders() == []
    nxt = router.handle(intent(4, -0.3, 100.0))  # the next intent flips in full
    assert [(o["side"], o["quantity"]) for o in nxt.orders] == [("SELL", 300.0), ("SELL", 300.0)]


def test_a_pending_cut_order_a_lowered_limit_refuses_on_redelivery_is_reported_and_not_recut():
    """The exit was cut to 700 and recorded PENDING, the process died, and the limit was lowered
    to 500 before the redelivery: the order was recorded REJECTED / MAX_ORDER_QUANTITY, but the
    outcome showed no rejection. It is reported now; the recorded order is not cut again under
    its id (the next intent plans the rest and cuts it to the new limit)."""
    from ensemble_trader.domain.orders import client_order_id as leg_id

    rig = Rig(broker=CrashBeforeSubmit, max_position_notional=1e9, max_gross_exposure=1e9)
    rig.broker.crash = False
    rig.warm()
    for day, target in ((1, 1.0), (2, 2.0), (3, 2.0)):
        rig.router.handle(intent(day, target, 100.0))
    assert rig.store.get_position("SPX").quantity == 2_000
    rig.limits = rig.limits.model_copy(update={"max_order_quantity": 700.0})
    exit_ = intent(4, 0.0, 100.0)
    rig.broker.crash = True
    with pytest.raises(SystemExit):
        rig.new_router().handle(exit_)  # SELL 2,000 cut to 700, recorded PENDING
    sent = rig.paper.created
    rig.limits = rig.limits.model_copy(update={"max_order_quantity": 500.0})  # redeployed
    router = rig.new_router()
    out = router.handle(exit_)
    coid = leg_id(exit_, 0)
    assert [(r["client_order_id"], r["reason"]) for r in out.rejections] == [
        (coid, RejectReason.MAX_ORDER_QUANTITY.value)]
    stored = rig.store.get_order(coid)
    assert (stored.status, stored.quantity) == (OrderStatus.REJECTED, 700.0) and rig.paper.created == sent
    nxt = router.handle(intent(5, 0.0, 100.0))
    assert [(o["side"], o["quantity"], o["planned_quantity"]) for o in nxt.orders] == [("SELL", 500.0, 2_000.0)]


class FailSubmitOnce(CrashBeforeSubmit):
    """A transient failure between the PENDING order's record and the broker call (armed by the test)."""

    error = InfrastructureError("paper ledger throttled")
    armed = False


@pytest.mark.parametrize("batched", [False, True])
def test_a_redelivered_intent_sends_its_own_pending_order_once(batched):
    """The planner counts the intent's own unsent PENDING order as working: without looking it up
    first, the redelivery planned nothing and the order was never sent."""
    rig = Rig(broker=FailSubmitOnce)
    rig.warm()
    it = intent(1, 0.5, 100.0)

    def deliver():
        if not batched:
            return rig.router.handle(it)
        with rig.router.batch():
            return rig.router.handle(it)

    rig.broker.crash = True
    with pytest.raises(InfrastructureError):
        deliver()
    out = deliver()  # SQS redelivers
    assert out.resolved_existing == 1
    assert [(o.side.value, o.quantity) for o in rig.paper.list_open_orders()] == [("BUY", 500.0)]
    deliver()  # and again: still one order
    assert len(rig.paper.list_open_orders()) == 1
    assert [o.status for o in rig.store.list_orders() if o.quantity == 500.0] == [OrderStatus.SUBMITTED]


def test_an_intent_that_fails_in_a_batch_leaves_nothing_in_the_batchs_risk_state():
    """Its `recent` entry had been written back by the next intent of the batch, and on redelivery
    the recheck took the order for a duplicate of itself: refused, never sent."""
    rig = Rig(broker=FailSubmitOnce)
    rig.warm()
    rig.warm("BTC")
    spx = intent(1, 0.5, 100.0)
    rig.broker.crash = True
    with rig.router.batch():
        with pytest.raises(InfrastructureError):
            rig.router.handle(spx)
        rig.router.handle(intent(1, 0.5, 100.0, "BTC"))
    assert [r.symbol for r in rig.store.load_risk_state().recent] == ["BTC"]
    with rig.router.batch():
        rig.router.handle(spx)
    (order,) = [o for o in rig.store.list_orders() if o.symbol == "SPX" and o.quantity == 500.0]
    assert order.status is OrderStatus.SUBMITTED and order.reject_code is None


def test_kill_switch_flag_cancels_a_working_order_before_the_next_price_can_fill_it():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))  # BUY 500 working at the paper broker
    rig.store.kill_switch_flag = True
    rig.router.handle(intent(2, 0.5, 95.0))  # the same symbol's next bar
    assert rig.store.get_position("SPX") is None and not rig.events("OrderFilled")
    assert rig.events("OrderCanceled") and rig.paper.list_open_orders() == []


def test_an_intent_whose_quantity_overflows_is_dead_lettered_with_the_reason():
    from ensemble_trader.runtime.orders import IntentConsumer

    class Letters:
        def __init__(self):
            self.sent = []

        def send(self, record, reason, *, source=""):
            self.sent.append(reason)

    rig = Rig()
    rig.warm()
    letters = Letters()
    consumer = IntentConsumer(rig.router, dead_letters=letters)
    result = consumer.process(intent(1, 0.5, 1e-310).model_dump_json())  # a valid price, no share count
    assert result["dead_lettered"] and result["reason"] == "MALFORMED_INTENT"
    assert letters.sent[0].startswith("MALFORMED_INTENT: intent ") and "inf shares" in letters.sent[0]


def test_a_submit_under_way_when_the_kill_switch_fires_is_canceled_not_reopened():
    """The kill-switch entry retires the PENDING order (never to be sent); the orders entry's
    submit was already under way and lands: the broker's SUBMITTED must not reopen it."""

    class KillSwitchDuringSubmit(BrokerWrapper):
        other = None  # the kill-switch entry's router, a second container

        def submit(self, order):
            if self.other is not None:
                other, self.other = self.other, None
                other.set_kill_switch(True, "incident")
            return self.inner.submit(order)

    rig = Rig(broker=KillSwitchDuringSubmit)
    rig.warm()
    rig.broker.other = rig.new_router()
    with rig.router.batch():
        rig.router.handle(intent(1, 0.5, 100.0))
    (order,) = [o for o in rig.store.list_orders() if o.quantity == 500.0]
    assert order.status is OrderStatus.CANCELED and order.reject_code == "KILL_SWITCH"
    assert rig.paper.list_open_orders() == [] and rig.store.load_risk_state().kill_switch


def test_a_stale_broker_report_does_not_reopen_a_filled_order_or_book_its_fill_twice():
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))  # buy 500, acknowledged
    [order] = rig.store.list_orders(working_only=True)
    stale = rig.paper.get_order_by_client_id(order.client_order_id)  # read before the fill
    rig.router.handle(intent(2, 0.5, 100.0))  # the next price fills it
    assert rig.store.get_order(order.client_order_id).status is OrderStatus.FILLED
    rig.router._sync_report(stale, [])  # e.g. a reconcile run that read the broker first
    assert rig.store.get_order(order.client_order_id).status is OrderStatus.FILLED
    assert rig.store.list_orders(working_only=True) == []
    rig.router.reconcile()
    assert rig.store.get_position("SPX").quantity == 500


def test_a_retired_order_live_at_the_broker_is_reopened_so_its_fills_are_booked():
    """Retired as never sent, yet live and partly filled at a broker that cancels asynchronously
    (Alpaca: PENDING_CANCEL, a working status): its report is not 'behind', its fill is booked."""
    from ensemble_trader.domain.orders import BrokerOrder
    from ensemble_trader.domain.risk import RejectReason

    rig = Rig()
    order = Order(client_order_id="coid-00000001", intent_id="i1", strategy_id="ens", symbol="SPX", side=Side.BUY,
                  quantity=10, status=OrderStatus.REJECTED, reject_code=RejectReason.KILL_SWITCH.value,
                  reject_reason="never sent", created_at=WALL, updated_at=WALL)
    rig.store.create_order(order)
    live = BrokerOrder(client_order_id=order.client_order_id, broker_order_id="b1", symbol="SPX", side=Side.BUY,
                       quantity=10, status=OrderStatus.PARTIALLY_FILLED, filled_quantity=3, average_fill_price=100.0,
                       updated_at=WALL)

    class AsyncCancel:
        def cancel(self, client_order_id):
            return live.model_copy(update={"status": OrderStatus.SUBMITTED})  # cancel pending

    rig.router.broker = AsyncCancel()
    fills, _ = rig.router._sync_report(live, [])
    assert fills == 1 and rig.store.get_position("SPX").quantity == 3
    assert rig.store.get_order(order.client_order_id).filled_quantity == 3


class FailsOnce:
    """A broker whose next submit fails once (a throttled ledger write), when armed."""

    def __init__(self, inner):
        self.inner, self.armed = inner, False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def submit(self, order):
        if self.armed:
            self.armed = False
            raise InfrastructureError("paper ledger throttled")
        return self.inner.submit(order)


@pytest.mark.parametrize("batched", [False, True])
def test_an_intent_that_fails_after_booking_a_fill_still_publishes_the_fill(batched):
    """The bar's price filled an earlier order (booked in the store); then this intent's own
    submit failed. The redelivery finds the fill booked and will not make its event again."""
    rig = Rig(broker=FailsOnce)
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))
    rig.broker.armed = True
    with pytest.raises(InfrastructureError):
        if batched:
            with rig.router.batch():
                rig.router.handle(intent(2, 0.8, 100.0))
        else:
            rig.router.handle(intent(2, 0.8, 100.0))
    assert rig.store.get_position("SPX").quantity == 500
    assert len(rig.events("OrderFilled")) == 1
    rig.router.handle(intent(2, 0.8, 100.0))
    assert len(rig.events("OrderFilled")) == 1 and len(rig.events("OrderSubmitted")) == 2


def test_a_flip_redelivered_after_its_closing_leg_was_recorded_places_its_opening_leg():
    """The first delivery records the closing leg and fails at the broker; the redelivery sends
    it and must still place the opening leg (held + working no longer crosses zero, so the
    replan is one leg — under the closing leg's id it would have been taken for done)."""

    rig = Rig(broker=FailsOnce)
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))
    rig.router.handle(intent(2, 0.5, 100.0))  # fills the long 500
    assert rig.store.get_position("SPX").quantity == 500
    flip = intent(3, -0.5, 100.0)
    rig.broker.armed = True
    with pytest.raises(InfrastructureError):
        rig.router.handle(flip)
    rig.router.handle(flip)  # SQS delivers it again
    rig.router.handle(flip)
    rig.router.handle(intent(4, -0.5, 100.0))  # the next price fills what is working
    legs = [(o.side, o.quantity, o.status) for o in rig.store.list_orders() if o.intent_id == flip.intent_id]
    assert sorted(legs) == [(Side.SELL, 500.0, OrderStatus.FILLED)] * 2
    assert rig.store.get_position("SPX").quantity == -500


def test_a_flip_whose_opening_leg_could_not_be_recorded_places_it_on_redelivery():
    """The closing leg went out; recording the opening leg failed (a DynamoDB error): the
    redelivery finds the closing leg working and places the opening leg, once."""
    rig = Rig()
    rig.warm()
    rig.router.handle(intent(1, 0.5, 100.0))
    rig.router.handle(intent(2, 0.5, 100.0))
    create, calls = rig.store.create_order, []

    def second_fails(order):
        calls.append(order.client_order_id)
        if len(calls) == 2:
            raise InfrastructureError("ProvisionedThroughputExceededException")
        return create(order)

    rig.store.create_order = second_fails
    flip = intent(3, -0.5, 100.0)
    with pytest.raises(InfrastructureError):
        rig.router.handle(flip)
    for _ in range(3):
        rig.router.handle(flip)
    rig.router.handle(intent(4, -0.5, 100.0))
    legs = [(o.side, o.quantity, o.status) for o in rig.store.list_orders() if o.intent_id == flip.intent_id]
    assert sorted(legs) == [(Side.SELL, 500.0, OrderStatus.FILLED)] * 2
    assert rig.store.get_position("SPX").quantity == -500 and rig.paper.created == 3


def test_events_a_batch_could_not_publish_go_out_with_the_next_batch():
    """EventBridge down at the end of a batch: its intents are done (their redeliveries answer
    from the idempotency table), so their events are kept and sent before the next batch's."""
    rig = Rig()
    rig.warm()
    rig.bus.failures.fail("publish")
    with pytest.raises(InfrastructureError, match="injected failure of publish"):
        with rig.router.batch():
            rig.router.handle(intent(1, 0.5, 100.0))
    assert rig.events("OrderSubmitted") == []
    with rig.router.batch():
        rig.router.handle(intent(2, 0.5, 100.0))  # fills the order
    names = [type(e).__name__ for e in rig.bus.events]
    assert names.index("OrderSubmitted") < names.index("OrderFilled")
    assert names.count("OrderSubmitted") == 1 and names.count("OrderFilled") == 1


def test_an_intent_is_not_started_when_the_invocation_is_about_to_time_out():
    from ensemble_trader.adapters.memory import MemoryDeadLetters
    from ensemble_trader.runtime.orders import IntentConsumer

    class Context:
        def __init__(self, left_ms: int):
            self.left_ms = left_ms

        def get_remaining_time_in_millis(self) -> int:
            return self.left_ms

    rig = Rig()
    rig.warm()
    routed = []
    consumer = IntentConsumer(rig.router, MemoryDeadLetters(), route=lambda intent: routed.append(intent) or {})
    body = intent(1, 0.5, 100.0).model_dump_json()
    with pytest.raises(InfrastructureError, match="14999 ms left in this invocation, under 15000 ms"):
        consumer.process(body, None, Context(14_999))
    assert routed == []
    consumer.process(body, None, Context(15_000))
    assert len(routed) == 1


@pytest.mark.parametrize(("active", "reason", "reset", "match"), [
    (True, "halt for the night", True, "reset_breaker goes with active=false"),
    (True, "", False, "reason"),
    (False, "x" * 501, False, "reason"),
])
def test_a_kill_switch_command_the_control_event_would_refuse_changes_nothing(active, reason, reset, match):
    """A reset folded into "on" would clear a latched drawdown halt unseen (and a later plain
    "off" would resume trading); the CLI takes the same rules as the EventBridge command."""
    from ensemble_trader.domain.errors import InvalidMessageError
    from ensemble_trader.domain.orders import KillSwitchCommand

    rig = Rig(drawdown_reduce=0.05, drawdown_halt=0.1)
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))
    rig.router.handle(intent(2, 1.0, 100.0))
    rig.router.handle(intent(3, 1.0, 85.0))  # -15 %: a drawdown halt, latched
    before = rig.store.load_risk_state()
    assert before.trading_state is TradingState.HALTED and before.breaker_latched
    with pytest.raises(InvalidMessageError, match=match):
        rig.router.set_kill_switch(active, reason, reset_breaker=reset)
    with pytest.raises(InvalidMessageError, match=match):
        KillSwitchCommand.parse({"active": active, "reason": reason, "reset_breaker": reset})
    after = rig.store.load_risk_state()
    assert (after.trading_state, after.breaker_latched, after.kill_switch) == (TradingState.HALTED, True, False)


@pytest.mark.parametrize(("change", "match"), [
    ({"source": "aws.events", "detail-type": "Scheduled Event"}, "source"),  # a schedule pointed at it
    ({"detail-type": "KillSwitchTest"}, "detail-type"),
    ({"detail": {"active": True, "reason": "   "}}, "reason"),  # blank: no reason at all
])
def test_the_kill_switch_event_must_be_the_control_event_with_a_reason(change, match):
    from ensemble_trader.domain.errors import InvalidMessageError
    from ensemble_trader.domain.orders import KillSwitchCommand

    event = json.loads((EVENTS / "eventbridge-kill-switch-on.json").read_text())
    assert KillSwitchCommand.from_event(event).active
    with pytest.raises(InvalidMessageError, match=match):
        KillSwitchCommand.from_event({**event, **change})


@pytest.mark.parametrize("event", [[], "on", None])
def test_a_kill_switch_event_that_is_not_an_object_is_a_typed_error(event):
    from ensemble_trader.domain.errors import InvalidMessageError
    from ensemble_trader.domain.orders import KillSwitchCommand

    with pytest.raises(InvalidMessageError, match="EventBridge event"):
        KillSwitchCommand.from_event(event)


def test_the_kill_switch_reason_is_stored_as_the_event_would_store_it():
    """The control event's reason is stripped of blanks; the CLI's was stored as typed."""
    rig = Rig()
    result = rig.router.set_kill_switch(True, "  operator drill \n")
    assert result["reason"] == "operator drill"
    assert rig.store.load_risk_state().kill_switch_reason == "operator drill"
