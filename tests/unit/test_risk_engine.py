"""Risk engine: each pre-trade check, a Hypothesis property over all limits, the breaker state machine."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from ensemble_trader.domain import risk
from ensemble_trader.domain.models import Order, Side
from ensemble_trader.domain.risk import (
    Mark,
    OrderContext,
    RecentOrder,
    Reference,
    RejectReason,
    RiskEngine,
    RiskLimits,
    RiskState,
    TradingState,
    merge_states,
    reduces_exposure,
)
from ensemble_trader.runtime.orders import RiskSettings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NOW = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)
LIMITS = RiskLimits(
    max_order_quantity=1_000,
    max_order_notional=50_000,
    max_position_quantity=2_000,
    max_position_notional=150_000,
    max_gross_exposure=300_000,
    price_collar=0.05,
    max_reference_age_seconds=60,
    throttle_window_seconds=1.0,
    max_orders_per_symbol=3,
    max_orders_global=5,
    duplicate_window_seconds=2.0,
    restricted_symbols=frozenset({"BAD"}),
)


def order(qty=10.0, side=Side.BUY, price=100.0, symbol="SPX", coid="coid-0001", intent_id="intent-1") -> Order:
    return Order(
        client_order_id=coid, intent_id=intent_id, strategy_id="s", symbol=symbol, side=side,
        quantity=qty, created_at=NOW, updated_at=NOW, decision_time=NOW, decision_price=price,
    )


def ctx(position=0.0, ref_price=100.0, ref_age=1.0, other_gross=0.0) -> OrderContext:
    ref = None if ref_price is None else Reference(ref_price, NOW - timedelta(seconds=ref_age))
    return OrderContext(now=NOW, reference=ref, position=position, other_gross=other_gross)


def check(o: Order, c: OrderContext | None = None, state: RiskState | None = None):
    return RiskEngine(LIMITS).check(o, state or RiskState(), c or ctx())


def test_a_plain_order_passes():
    decision = check(order())
    assert decision.accepted and decision.reason is None


@pytest.mark.parametrize(
    ("o", "c", "reason"),
    [
        (order(qty=1_001, price=10), ctx(ref_price=10), RejectReason.MAX_ORDER_QUANTITY),
        (order(qty=600), ctx(), RejectReason.MAX_ORDER_NOTIONAL),
        (order(qty=400), ctx(position=1_700), RejectReason.MAX_POSITION),
        (order(qty=10, price=10), ctx(position=1_995, ref_price=10), RejectReason.MAX_POSITION),
        (order(qty=400), ctx(other_gross=280_000), RejectReason.MAX_GROSS_EXPOSURE),
        (order(price=106), ctx(), RejectReason.PRICE_COLLAR),
        (order(price=94), ctx(), RejectReason.PRICE_COLLAR),
        (order(), ctx(ref_price=None), RejectReason.REFERENCE_MISSING),
        (order(), ctx(ref_price=float("nan")), RejectReason.REFERENCE_INVALID),
        (order(), ctx(ref_price=0.0), RejectReason.REFERENCE_INVALID),
        (order(), ctx(ref_age=61), RejectReason.REFERENCE_STALE),
        (order(symbol="BAD"), ctx(), RejectReason.RESTRICTED_SYMBOL),
    ],
)
def test_each_limit_rejects_with_its_reason_and_a_message(o, c, reason):
    decision = check(o, c)
    assert not decision.accepted
    assert decision.reason is reason
    assert decision.message  # says what and by how much


def test_reducing_orders_pass_position_and_gross_limits():
    # Long 2,500 (over the 2,000 limit): selling 500 reduces and must be allowed.
    assert check(order(qty=500, side=Side.SELL, price=10), ctx(position=2_500, ref_price=10)).accepted
    assert check(order(qty=400, side=Side.SELL), ctx(position=450, other_gross=1e9)).accepted
    # ... but not when it flips through zero beyond the limit.
    flip = check(order(qty=900, side=Side.SELL, price=10), ctx(position=-1_500, ref_price=10))
    assert flip.reason is RejectReason.MAX_POSITION


def test_throttle_per_symbol_and_global_over_a_sliding_window():
    engine = RiskEngine(LIMITS)
    state = RiskState()
    for i in range(3):
        o = order(qty=10 + i, coid=f"coid-{i:04d}")
        assert engine.check(o, state, ctx()).accepted
        engine.record(o, state, NOW)
    decision = engine.check(order(qty=50, coid="coid-0100"), state, ctx())
    assert decision.reason is RejectReason.THROTTLE_SYMBOL
    # another symbol still has room until the global limit (5)
    for i in range(2):
        o = order(qty=20 + i, symbol="NDX", coid=f"coid-n{i:03d}")
        assert engine.check(o, state, ctx()).accepted
        engine.record(o, state, NOW)
    assert engine.check(order(qty=60, symbol="DJI", coid="coid-d001"), state, ctx()).reason is (
        RejectReason.THROTTLE_GLOBAL
    )
    # the window slides: 1.5 s later everything is allowed again
    later = OrderContext(NOW + timedelta(seconds=1.5), Reference(100.0, NOW), 0.0, 0.0)
    assert engine.check(order(qty=70, coid="coid-0200"), state, later).accepted


def test_duplicate_detection_by_id_and_by_content():
    engine = RiskEngine(LIMITS)
    state = RiskState()
    first = order(qty=10, coid="coid-aaaa")
    engine.record(first, state, NOW)
    assert engine.check(order(qty=11, coid="coid-aaaa"), state, ctx()).reason is RejectReason.DUPLICATE_ORDER
    same_content = engine.check(order(qty=10, coid="coid-bbbb", intent_id="intent-2"), state, ctx())
    assert same_content.reason is RejectReason.DUPLICATE_ORDER
    other_leg = engine.check(order(qty=10, coid="coid-cccc"), state, ctx())  # same intent: a leg
    assert other_leg.accepted
    later = OrderContext(NOW + timedelta(seconds=3), Reference(100.0, NOW), 0.0, 0.0)
    assert engine.check(order(qty=10, coid="coid-bbbb", intent_id="intent-2"), state, later).accepted


def test_trading_states_and_kill_switch():
    reducing = RiskState(trading_state=TradingState.REDUCING, state_reason="test")
    assert check(order(side=Side.BUY), ctx(position=0), reducing).reason is RejectReason.REDUCING_ONLY
    assert check(order(side=Side.SELL, qty=5), ctx(position=10), reducing).accepted
    halted = RiskState(trading_state=TradingState.HALTED)
    assert check(order(side=Side.SELL, qty=5), ctx(position=10), halted).reason is RejectReason.HALTED
    killed = RiskState(kill_switch=True, kill_switch_reason="operator")
    assert check(order(), ctx(), killed).reason is RejectReason.KILL_SWITCH
    assert killed.effective_state is TradingState.HALTED
    symbol_halt = RiskState(halted_symbols={"SPX": "reconciliation failed"})
    assert check(order(), ctx(), symbol_halt).reason is RejectReason.SYMBOL_HALTED
    assert check(order(symbol="NDX"), ctx(), symbol_halt).accepted


def test_a_reducing_only_rejection_names_the_held_and_the_potential_position():
    """Held flat with a working BUY 1,000: SELL 500 reduces the potential position but not the held
    one, which decided; the message printed only the potential position (1000)."""
    reducing = RiskState(trading_state=TradingState.REDUCING, state_reason="daily loss 4%")
    c = OrderContext(NOW, Reference(100.0, NOW - timedelta(seconds=1)), 1_000.0, 0.0, held=0.0)
    decision = RiskEngine(LIMITS).check(order(qty=500, side=Side.SELL), reducing, c)
    assert decision.reason is RejectReason.REDUCING_ONLY
    assert "held position 0" in decision.message and "1000" in decision.message


def test_a_reference_dated_slightly_ahead_is_allowed_up_to_the_intent_lead():
    """With clock=wall an intent may be dated up to max_intent_lead_seconds ahead of the wall
    clock; its price is the next intent's reference, which was refused as '-2 s old'."""
    engine = RiskEngine(LIMITS.model_copy(update={"max_intent_lead_seconds": 300.0}))
    ahead = OrderContext(NOW, Reference(100.0, NOW + timedelta(seconds=2)), 0.0, 0.0)
    assert engine.check(order(), RiskState(), ahead).accepted
    too_far = OrderContext(NOW, Reference(100.0, NOW + timedelta(seconds=301)), 0.0, 0.0)
    decision = engine.check(order(), RiskState(), too_far)
    assert decision.reason is RejectReason.REFERENCE_STALE
    assert "301 s ahead" in decision.message and "300 s" in decision.message


def test_an_order_that_reduces_exposure_is_cut_down_to_the_per_order_limits():
    """An exit larger than a per-order limit was rejected on every bar, the position itself within
    limits: it is cut down to the limits (rounded toward zero to the step), and the cut passes."""
    engine = RiskEngine(LIMITS)  # at most 1,000 shares and 50,000 per order
    sell = order(qty=2_500, side=Side.SELL, price=10)
    c = ctx(position=2_500, ref_price=10)
    cut = engine.cut_to_order_limits(sell, c, step=1.0)
    assert (cut.quantity, cut.reason) == (1_000, RejectReason.MAX_ORDER_QUANTITY)
    assert "2500" in cut.message and "1000" in cut.message
    assert engine.check(sell.model_copy(update={"quantity": cut.quantity}), RiskState(), c).accepted
    for step, expected in ((1.0, 462.0), (7.0, 462.0), (0.1, 462.9), (0.25, 462.75)):  # 50,000 / 108 = 462.96
        sell = order(qty=900, side=Side.SELL, price=108)
        c = ctx(position=900, ref_price=108)
        cut = engine.cut_to_order_limits(sell, c, step=step)
        assert cut.quantity == pytest.approx(expected) and cut.reason is RejectReason.MAX_ORDER_NOTIONAL
        assert engine.check(sell.model_copy(update={"quantity": cut.quantity}), RiskState(), c).accepted
    buy_back = order(qty=2_000, side=Side.BUY, price=10)
    assert engine.cut_to_order_limits(buy_back, ctx(position=-3_000, ref_price=10), 1.0).quantity == 1_000


@pytest.mark.parametrize(
    ("step", "max_quantity", "max_notional", "held", "expected"),
    [
        (0.1, 0.3, 1e9, 0.7, 0.3),  # 3 x 0.1 is 0.30000000000000004 > 0.3: it was cut to 0.2
        (0.1, 0.7, 1e9, 1.0, 0.7),  # it was cut to 0.6000000000000001
        (0.01, 0.29, 1e9, 1.0, 0.29),
        (0.001, 0.007, 1e9, 0.01, 0.007),
        (0.1, 1e9, 30.0, 0.7, 0.3),  # the notional limit: 0.3 x 100 is 30.000000000000004
        (1.0, 3.0, 1e9, 7.0, 3.0),
    ],
)
def test_a_fractional_cut_reaches_the_limit_and_is_a_clean_multiple_of_the_step(
    step, max_quantity, max_notional, held, expected
):
    """The cut stepped one step below the limit when the float product of the steps overshot it
    by a rounding error, and left float noise in the quantity (0.6000000000000001)."""
    engine = RiskEngine(RiskLimits(max_order_quantity=max_quantity, max_order_notional=max_notional))
    sell = order(qty=held, side=Side.SELL, price=100.0)
    c = ctx(position=held, ref_price=100.0)
    cut = engine.cut_to_order_limits(sell, c, step)
    assert cut is not None and cut.quantity == expected  # exactly: no float noise
    assert engine.check(sell.model_copy(update={"quantity": cut.quantity}), RiskState(), c).accepted


def test_an_order_is_not_cut_when_it_fits_adds_exposure_or_cannot_be_cut():
    engine = RiskEngine(LIMITS)
    assert engine.cut_to_order_limits(order(qty=500, side=Side.SELL), ctx(position=500), 1.0) is None  # fits
    assert engine.cut_to_order_limits(order(qty=2_500, price=10), ctx(ref_price=10), 1.0) is None  # adds
    flip = order(qty=2_500, side=Side.SELL, price=10)
    assert engine.cut_to_order_limits(flip, ctx(position=1_000, ref_price=10), 1.0) is None  # crosses zero
    # reduces the position with working orders, not the one held (the working order may never fill)
    c = OrderContext(NOW, Reference(10.0, NOW), 2_500.0, 0.0, held=0.0)
    assert engine.cut_to_order_limits(order(qty=2_500, side=Side.SELL, price=10), c, 1.0) is None
    assert engine.cut_to_order_limits(order(qty=2_500, side=Side.SELL, price=10), ctx(position=2_500, ref_price=10),
                                      step=2_000.0) is None  # not one step fits: check rejects it


CHECK_ORDER = [
    RejectReason.KILL_SWITCH, RejectReason.HALTED, RejectReason.REDUCING_ONLY, RejectReason.SYMBOL_HALTED,
    RejectReason.RESTRICTED_SYMBOL, RejectReason.INVALID_ORDER, RejectReason.REFERENCE_MISSING,
    RejectReason.REFERENCE_INVALID, RejectReason.REFERENCE_STALE, RejectReason.PRICE_COLLAR,
    RejectReason.MAX_ORDER_QUANTITY, RejectReason.MAX_ORDER_NOTIONAL, RejectReason.MAX_POSITION,
    RejectReason.MAX_GROSS_EXPOSURE, RejectReason.DUPLICATE_ORDER, RejectReason.THROTTLE_SYMBOL,
    RejectReason.THROTTLE_GLOBAL,
]


def _failing(faults: set[RejectReason]):
    """An order, state, context and engine that fail exactly the checks in ``faults``."""
    f = faults.__contains__
    limits = LIMITS if f(RejectReason.RESTRICTED_SYMBOL) else LIMITS.model_copy(update={"restricted_symbols": frozenset()})
    recent = []
    if f(RejectReason.DUPLICATE_ORDER):
        recent.append(RecentOrder(at=NOW.timestamp(), symbol="BAD", side=Side.SELL, quantity=1.0,
                                  client_order_id="coid-0001", intent_id="other"))
    if f(RejectReason.THROTTLE_SYMBOL):
        recent += [RecentOrder(at=NOW.timestamp(), symbol="BAD", side=Side.BUY, quantity=11.0 + i,
                               client_order_id=f"coid-s{i:03d}", intent_id="other") for i in range(3)]
    if f(RejectReason.THROTTLE_GLOBAL):
        recent += [RecentOrder(at=NOW.timestamp(), symbol="NDX", side=Side.BUY, quantity=11.0 + i,
                               client_order_id=f"coid-g{i:03d}", intent_id="other") for i in range(5)]
    trading = (TradingState.HALTED if f(RejectReason.HALTED)
               else TradingState.REDUCING if f(RejectReason.REDUCING_ONLY) else TradingState.ACTIVE)
    state = RiskState(kill_switch=f(RejectReason.KILL_SWITCH), trading_state=trading, recent=recent,
                      halted_symbols={"BAD": "reconciliation"} if f(RejectReason.SYMBOL_HALTED) else {})
    price = None if f(RejectReason.INVALID_ORDER) else 110.0 if f(RejectReason.PRICE_COLLAR) else 100.0
    qty = 1_001.0 if f(RejectReason.MAX_ORDER_QUANTITY) else 600.0 if f(RejectReason.MAX_ORDER_NOTIONAL) else 10.0
    ref = (None if f(RejectReason.REFERENCE_MISSING)
           else Reference(float("nan"), NOW) if f(RejectReason.REFERENCE_INVALID)
           else Reference(100.0, NOW - timedelta(seconds=61)) if f(RejectReason.REFERENCE_STALE)
           else Reference(100.0, NOW - timedelta(seconds=1)))
    c = OrderContext(NOW, ref, 1_995.0 if f(RejectReason.MAX_POSITION) else 0.0,
                     299_500.0 if f(RejectReason.MAX_GROSS_EXPOSURE) else 0.0)
    return RiskEngine(limits), order(qty=qty, price=price, symbol="BAD"), state, c


def test_the_checks_run_in_the_documented_order():
    """Every check failing at once, then one fault removed at a time: each rejection names the
    next check. The docs' table lists the same order (it said THROTTLE before DUPLICATE)."""
    faults = set(CHECK_ORDER)
    for expected in CHECK_ORDER:
        engine, o, state, c = _failing(faults)
        assert engine.check(o, state, c).reason is expected
        faults.discard(expected)
    engine, o, state, c = _failing(faults)
    assert engine.check(o, state, c).accepted
    docs = (Path(__file__).resolve().parents[2] / "docs" / "orders-and-risk.md").read_text()
    table = docs.split("| code | rejects when |", 1)[1].split("\n\n", 1)[0]
    documented = [code for code in re.findall(r"`([A-Z_]+)`", table) if code in RejectReason.__members__]
    assert documented == [r.value for r in CHECK_ORDER]
    module_table = risk.__doc__.split("========================  ==", 3)[2]
    assert module_table.index("duplicate") < module_table.index("throttle")


# -- the property -------------------------------------------------------------------------------

def mostly(valid, invalid):
    """Valid values three times as often as invalid ones, so both outcomes are well covered."""
    return st.integers(0, 4).flatmap(lambda i: invalid if i == 0 else valid)


recent_orders = st.lists(
    st.builds(
        RecentOrder,
        at=st.floats(NOW.timestamp() - 5, NOW.timestamp()),
        symbol=st.sampled_from(["SPX", "NDX"]),
        side=st.sampled_from(list(Side)),
        quantity=st.sampled_from([10.0, 100.0, 500.0]),
        client_order_id=st.sampled_from(["coid-0001", "coid-0002", "coid-0003", "coid-0004"]),
        intent_id=st.sampled_from(["intent-0", "intent-1"]),
    ),
    max_size=4,
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    qty=mostly(st.floats(0.5, 400), st.one_of(st.sampled_from([10.0, 100.0, 500.0]), st.floats(0.5, 3_000))),
    side=st.sampled_from(list(Side)),
    price=st.floats(1.0, 200.0),
    ref_ratio=mostly(
        st.floats(0.97, 1.03),
        st.one_of(st.floats(0.8, 1.2), st.sampled_from([float("nan"), 0.0, float("inf")]), st.none()),
    ),
    ref_age=mostly(st.floats(0.0, 60.0), st.floats(-5.0, 120.0)),
    position=mostly(st.floats(-1_500, 1_500), st.floats(-4_000, 4_000)),
    other_gross=mostly(st.floats(0, 150_000), st.floats(0, 400_000)),
    symbol=mostly(st.sampled_from(["SPX", "NDX"]), st.just("BAD")),
    coid=mostly(st.just("coid-0009"), st.just("coid-0001")),
    trading=mostly(st.just(TradingState.ACTIVE), st.sampled_from(list(TradingState))),
    kill=mostly(st.just(False), st.booleans()),
    recent=recent_orders,
)
def test_no_order_that_breaches_a_limit_passes(
    qty, side, price, ref_ratio, ref_age, position, other_gross, symbol, coid, trading, kill, recent
):
    lim = LIMITS
    state = RiskState(trading_state=trading, kill_switch=kill, recent=recent)
    ref_price = None if ref_ratio is None else price * ref_ratio
    c = ctx(position=position, ref_price=ref_price, ref_age=ref_age, other_gross=other_gross)
    o = order(qty=qty, side=side, price=price, symbol=symbol, coid=coid)
    decision = RiskEngine(lim).check(o, state, c)
    signed = qty if side is Side.BUY else -qty
    after = position + signed
    reducing = abs(after) < abs(position) and (after == 0 or (after > 0) == (position > 0))
    if not decision.accepted:
        assert decision.reason is not None and decision.message
        # and only for a reason: an order clearly inside every limit (by a margin of 1e-6,
        # away from the boundaries' float tolerance) must pass
        assert not _clearly_within(lim, qty, side, price, ref_price, c, position, after, reducing,
                                   other_gross, symbol, coid, trading, kill, recent, o), decision.message
        return
    # Accepted: verify every limit independently.
    assert not kill and trading is not TradingState.HALTED
    assert trading is TradingState.ACTIVE or reducing
    assert symbol not in lim.restricted_symbols
    assert ref_price is not None and math.isfinite(ref_price) and ref_price > 0
    age = (NOW - c.reference.timestamp).total_seconds()  # timedelta keeps microseconds only
    assert -lim.max_intent_lead_seconds <= age <= lim.max_reference_age_seconds
    assert reducing or abs(price - ref_price) / ref_price <= lim.price_collar * (1 + 1e-9)
    assert qty <= lim.max_order_quantity * (1 + 1e-9)  # the per-order limits' tolerance, as the collar's
    assert qty * price <= lim.max_order_notional * (1 + 1e-9)
    if not reducing:
        assert abs(after) <= lim.max_position_quantity
        assert abs(after) * price <= lim.max_position_notional
        assert other_gross + abs(after) * price <= lim.max_gross_exposure
    now_s = NOW.timestamp()
    in_window = [r for r in recent if r.at > now_s - lim.throttle_window_seconds]
    assert len([r for r in in_window if r.symbol == symbol]) < lim.max_orders_per_symbol
    assert len(in_window) < lim.max_orders_global
    assert all(r.client_order_id != coid for r in recent)
    assert not any(
        r.at > now_s - lim.duplicate_window_seconds and r.symbol == symbol and r.side is side
        and abs(r.quantity - qty) < 1e-9 and r.intent_id != o.intent_id
        for r in recent
    )


def _clearly_within(lim, qty, side, price, ref_price, c, position, after, reducing, other_gross, symbol, coid,
                    trading, kill, recent, o) -> bool:
    """Every limit holds with a relative margin of 1e-6 (the engine's own tolerance is 1e-9)."""
    inside = 1 - 1e-6
    if kill or trading is TradingState.HALTED or not (trading is TradingState.ACTIVE or reducing):
        return False
    if symbol in lim.restricted_symbols or ref_price is None or not (math.isfinite(ref_price) and ref_price > 0):
        return False
    age = (NOW - c.reference.timestamp).total_seconds()
    if not -lim.max_intent_lead_seconds * inside <= age <= lim.max_reference_age_seconds * inside:
        return False
    if not reducing and abs(price - ref_price) / ref_price > lim.price_collar * inside:
        return False
    if qty > lim.max_order_quantity * inside or qty * price > lim.max_order_notional * inside:
        return False
    if not reducing and (abs(after) > lim.max_position_quantity * inside
                         or abs(after) * price > lim.max_position_notional * inside
                         or other_gross + abs(after) * price > lim.max_gross_exposure * inside):
        return False
    now_s = NOW.timestamp()
    in_window = [r for r in recent if r.at > now_s - lim.throttle_window_seconds]
    if len([r for r in in_window if r.symbol == symbol]) >= lim.max_orders_per_symbol:
        return False
    if len(in_window) >= lim.max_orders_global or any(r.client_order_id == coid for r in recent):
        return False
    return not any(
        r.at > now_s - lim.duplicate_window_seconds and r.symbol == symbol and r.side is side
        and abs(r.quantity - qty) < 1e-9 and r.intent_id != o.intent_id
        for r in recent
    )


def test_reduces_exposure():
    assert reduces_exposure(10, -5) and reduces_exposure(-10, 10)
    assert not reduces_exposure(10, -25) and not reduces_exposure(0, 5) and not reduces_exposure(10, 1)


# -- circuit breaker ----------------------------------------------------------------------------

BREAKER = RiskLimits(daily_loss_reduce=0.02, daily_loss_halt=0.04, drawdown_reduce=0.10, drawdown_halt=0.20)


def test_breaker_active_reducing_halted_then_next_day_recovers():
    engine = RiskEngine(BREAKER)
    s = RiskState()
    d1, d2 = date(2024, 1, 2), date(2024, 1, 3)
    assert engine.update_breaker(s, 100_000, d1) is None
    assert s.trading_state is TradingState.ACTIVE
    t = engine.update_breaker(s, 97_500, d1)  # -2.5 % on the day
    assert t is not None and t.current is TradingState.REDUCING and "daily loss" in t.reason
    assert engine.update_breaker(s, 99_000, d1) is None  # recovers intraday: no relaxing
    assert s.trading_state is TradingState.REDUCING
    t = engine.update_breaker(s, 95_500, d1)  # -4.5 %
    assert t.previous is TradingState.REDUCING and t.current is TradingState.HALTED
    t = engine.update_breaker(s, 95_600, d2)  # new day: daily loss resets, drawdown 4.4 %
    assert t.current is TradingState.ACTIVE
    assert s.day_start_equity == pytest.approx(95_500)


def test_an_earlier_day_neither_resets_the_daily_loss_nor_relaxes_the_breaker():
    """Symbols' intents interleave: one of another symbol stamped the day before must not start
    a new day (which would reset the day's loss to the current, already lost, equity)."""
    engine = RiskEngine(BREAKER)
    s = RiskState()
    d2, d3 = date(2024, 1, 3), date(2024, 1, 4)
    engine.update_breaker(s, 100_000, d3)
    t = engine.update_breaker(s, 94_000, d3)  # -6 % on the day: HALTED
    assert t.current is TradingState.HALTED
    assert engine.update_breaker(s, 94_000, d2) is None  # a late intent of another symbol
    assert s.trading_state is TradingState.HALTED and s.day == d3
    assert s.day_start_equity == pytest.approx(100_000) and s.losses()[0] == pytest.approx(0.06)


def test_losses_report_daily_loss_and_drawdown_of_the_last_equity():
    engine = RiskEngine(BREAKER)
    s = RiskState()
    assert s.losses() == (0.0, 0.0)
    engine.update_breaker(s, 100_000, date(2024, 1, 2))
    engine.update_breaker(s, 110_000, date(2024, 1, 2))  # new peak
    engine.update_breaker(s, 99_000, date(2024, 1, 3))  # day starts at 110,000
    assert s.losses() == pytest.approx((0.1, 0.1))
    engine.update_breaker(s, 104_500, date(2024, 1, 3))
    assert s.losses() == pytest.approx((0.05, 0.05))


def test_drawdown_halt_is_latched_until_reset():
    engine = RiskEngine(BREAKER)
    s = RiskState()
    equity = 100_000.0
    day = date(2024, 1, 1)
    for _ in range(30):  # slow bleed: -1 %/day, never a daily-loss trip
        day += timedelta(days=1)
        equity *= 0.99
        engine.update_breaker(s, equity, day)
    assert s.trading_state is TradingState.HALTED and s.breaker_latched
    assert "drawdown" in s.state_reason
    engine.update_breaker(s, equity * 1.5, day + timedelta(days=1))
    assert s.trading_state is TradingState.HALTED  # latched
    t = engine.reset_breaker(s, "operator reviewed")
    assert t.current is TradingState.ACTIVE and s.peak_equity == s.equity


@pytest.mark.parametrize("equity", [0.0, -20_000.0])
def test_equity_at_or_below_zero_halts_and_latches(equity):
    engine = RiskEngine()
    state = RiskState()
    engine.update_breaker(state, 100_000, date(2024, 1, 1))
    transition = engine.update_breaker(state, equity, date(2024, 1, 2))
    assert transition is not None and transition.current is TradingState.HALTED
    assert state.breaker_latched and "not positive" in state.state_reason
    engine.update_breaker(state, 100_000, date(2024, 1, 3))  # a later day does not relax it
    assert state.trading_state is TradingState.HALTED


def test_a_reset_after_equity_at_or_below_zero_keeps_no_baseline_at_or_below_zero():
    """The reset rebased the peak and the day's start to the negative equity, and losses() read a
    start at or below zero as a 100 % loss: the next day, equity back at 100,000, the breaker
    HALTED again on a made-up 'daily loss 100.00%'."""
    engine = RiskEngine()
    s = RiskState()
    engine.update_breaker(s, 100_000, date(2024, 1, 2))
    engine.update_breaker(s, -20_000, date(2024, 1, 3))  # halted, latched
    engine.reset_breaker(s, "recapitalised")
    assert s.day_start_equity is None and s.peak_equity is None  # none until equity is positive
    engine.update_breaker(s, 100_000, date(2024, 1, 4))
    assert s.trading_state is TradingState.ACTIVE and not s.breaker_latched
    assert (s.day_start_equity, s.peak_equity) == (100_000, 100_000) and s.losses() == (0.0, 0.0)
    engine.update_breaker(s, 95_000, date(2024, 1, 4))  # losses are measured from there
    assert s.losses() == pytest.approx((0.05, 0.05))


def test_a_day_that_starts_at_or_below_zero_is_measured_from_its_first_positive_equity():
    """Without a reset: the day rolled with the last equity (-20,000) as its start, and losses()
    reported a daily loss of 100 % at any equity; the start is now the first positive equity."""
    engine = RiskEngine()
    s = RiskState()
    engine.update_breaker(s, 100_000, date(2024, 1, 2))
    engine.update_breaker(s, -20_000, date(2024, 1, 3))
    engine.update_breaker(s, -20_000, date(2024, 1, 4))
    assert s.day_start_equity is None and s.losses() == pytest.approx((0.0, 1.2))  # 120 % below the peak
    engine.update_breaker(s, 90_000, date(2024, 1, 4))
    assert s.day_start_equity == 90_000 and s.losses() == pytest.approx((0.0, 0.1))
    assert s.trading_state is TradingState.HALTED and s.breaker_latched  # still latched


@pytest.mark.parametrize(
    ("start", "peak", "equity", "expected"),
    [
        (-20_000.0, -20_000.0, 50_000.0, (0.0, 0.0)),
        (0.0, 0.0, 50_000.0, (0.0, 0.0)),
        (-20_000.0, 100_000.0, -30_000.0, (0.0, 1.3)),
        (100_000.0, 100_000.0, -20_000.0, (1.2, 1.2)),  # a loss of more than all: said as it is
        (None, None, -5_000.0, (0.0, 0.0)),
    ],
)
def test_losses_are_fractions_of_a_positive_baseline_only(start, peak, equity, expected):
    """A loss is a fraction of the day's start or of the peak; one at or below zero has no fraction
    to lose, so none is measured (equity at or below zero halts by its own rule)."""
    s = RiskState(day_start_equity=start, peak_equity=peak, equity=equity)
    assert s.losses() == pytest.approx(expected)


def test_a_reset_while_equity_is_at_or_below_zero_allows_only_exits_until_it_is_positive():
    """The reset went ACTIVE and the next update halted and latched again on equity <= 0, so the
    position could never be exited. HALTED still means nothing trades until the reset; after it,
    equity at or below zero means REDUCING (only orders that reduce exposure), until equity is
    positive again; falling to zero or below after that halts and latches again."""
    engine = RiskEngine()
    s = RiskState()
    engine.update_breaker(s, 100_000, date(2024, 1, 2))
    engine.update_breaker(s, -20_000, date(2024, 1, 3))
    assert s.trading_state is TradingState.HALTED and s.breaker_latched
    t = engine.reset_breaker(s, "operator: close it out")
    assert t.current is TradingState.REDUCING and not s.breaker_latched and "exits only" in s.state_reason
    assert engine.update_breaker(s, -25_000, date(2024, 1, 4)) is None  # not halted again
    assert s.trading_state is TradingState.REDUCING and not s.breaker_latched
    engine.update_breaker(s, 10_000, date(2024, 1, 4))
    assert s.trading_state is TradingState.REDUCING  # within the day the state never relaxes
    engine.update_breaker(s, 10_000, date(2024, 1, 5))
    assert s.trading_state is TradingState.ACTIVE
    t = engine.update_breaker(s, -1_000, date(2024, 1, 6))
    assert t.current is TradingState.HALTED and s.breaker_latched


def test_a_halt_latched_for_equity_at_or_below_zero_says_so():
    """Already HALTED for the day's loss, the latch kept the reason 'daily loss ...'."""
    engine = RiskEngine()
    s = RiskState()
    engine.update_breaker(s, 100_000, date(2024, 1, 2))
    engine.update_breaker(s, 93_000, date(2024, 1, 2))  # -7 % on the day, a 7 % drawdown
    assert s.trading_state is TradingState.HALTED and not s.breaker_latched
    latch = engine.update_breaker(s, -20_000, date(2024, 1, 2))  # the same state, now latched: an event
    assert latch is not None and (latch.previous, latch.current, latch.latched) == (
        TradingState.HALTED, TradingState.HALTED, True)
    assert s.breaker_latched and "not positive" in s.state_reason and latch.reason == s.state_reason


def test_a_merge_keeps_the_exits_only_reset_with_the_rest_of_the_breaker():
    engine = RiskEngine()
    base = RiskState(version=3)
    engine.update_breaker(base, 100_000, date(2024, 1, 2))
    engine.update_breaker(base, -20_000, date(2024, 1, 3))
    ours, theirs = base.model_copy(deep=True), base.model_copy(deep=True)
    engine.update_breaker(ours, -21_000, date(2024, 1, 3))  # a router's stale, halted view
    RiskEngine.reset_breaker(theirs, "operator: close it out")
    merged = merge_states(base, ours, theirs)
    assert merged.trading_state is TradingState.REDUCING and merged.exits_only_below_zero
    assert engine.update_breaker(merged, -21_000, date(2024, 1, 3)) is None
    assert merged.trading_state is TradingState.REDUCING and not merged.breaker_latched


def test_drawdown_reduce_band():
    engine = RiskEngine(BREAKER)
    s = RiskState()
    engine.update_breaker(s, 100_000, date(2024, 1, 1))
    for i, eq in enumerate([98_500, 97_000, 95_500, 94_000, 92_500, 91_000, 89_500]):
        engine.update_breaker(s, eq, date(2024, 1, 2 + i))
    assert s.trading_state is TradingState.REDUCING and "drawdown" in s.state_reason


def test_limits_from_environment(monkeypatch):
    monkeypatch.setenv("ET_RISK_MAX_ORDER_QUANTITY", "123")
    monkeypatch.setenv("ET_RISK_RESTRICTED_SYMBOLS", '["GME","AMC"]')
    monkeypatch.setenv("ET_RISK_CLOCK", "wall")
    limits = RiskSettings().limits()
    assert limits.max_order_quantity == 123
    assert limits.restricted_symbols == frozenset({"GME", "AMC"})
    assert limits.clock == "wall"


@pytest.mark.parametrize("given", [["gme", " AMC "], ("gme", "amc"), frozenset({"Gme", "aMc"}), " gme, AMC ,"])
def test_restricted_symbols_are_upper_case_whatever_the_input_type(given):
    """A list (the JSON form of ET_RISK_RESTRICTED_SYMBOLS) was kept as written: 'gme' never
    matched the upper-case symbol GME, so a restricted symbol traded."""
    limits = RiskLimits(restricted_symbols=given)
    assert limits.restricted_symbols == frozenset({"GME", "AMC"})
    assert RiskEngine(limits).check(order(symbol="GME"), RiskState(), ctx()).reason is RejectReason.RESTRICTED_SYMBOL


def test_restricted_symbols_from_a_json_list_in_the_environment(monkeypatch):
    monkeypatch.setenv("ET_RISK_RESTRICTED_SYMBOLS", '["gme"," AMC"]')
    assert RiskSettings().limits().restricted_symbols == frozenset({"GME", "AMC"})


@pytest.mark.parametrize(("given", "named"), [(["GME", "not a symbol"], "'not a symbol'"), (["GME", ""], "''"),
                                              (["GME", 42], "42"), ("GME,$$$", "'$$$'")])
def test_a_restricted_entry_that_is_not_a_symbol_is_refused_by_name(given, named):
    with pytest.raises(ValueError, match=f"restricted_symbols.*{re.escape(named)}"):
        RiskLimits(restricted_symbols=given)


@pytest.mark.parametrize("collar", [1.0, 10.0])
def test_a_price_collar_of_one_or_more_is_refused(collar):
    """ET_RISK_PRICE_COLLAR=10 (meant as 10 %) was taken as 1,000 %: the fat-finger check was off."""
    with pytest.raises(ValueError, match="price_collar"):
        RiskLimits(price_collar=collar)
    assert RiskLimits(price_collar=0.99).price_collar == 0.99


@pytest.mark.parametrize("ref", [1.0, 30.0, 50.0, 100.0, 0.3, 1234.5])
def test_the_collar_boundary_is_the_same_on_both_sides(ref):
    """110 against 100 is 0.10000000000000009 from the reference in floats: it was refused at a
    10 % collar while 90 passed."""
    engine = RiskEngine(RiskLimits(price_collar=0.10))
    for price in (ref * 0.9, ref * 1.1):
        assert engine.check(order(qty=1, price=price), RiskState(), ctx(ref_price=ref)).accepted, price
    for price in (ref * 0.899, ref * 1.101):
        decision = engine.check(order(qty=1, price=price), RiskState(), ctx(ref_price=ref))
        assert decision.reason is RejectReason.PRICE_COLLAR, price


def test_inconsistent_thresholds_are_rejected():
    with pytest.raises(ValueError, match="daily_loss_halt"):
        RiskLimits(daily_loss_reduce=0.05, daily_loss_halt=0.01)
    assert RiskLimits(restricted_symbols="gme, amc").restricted_symbols == frozenset({"GME", "AMC"})


# -- three-way merge of the risk state (a router's batch save racing an operator) ---------------

D1, D2 = date(2024, 1, 2), date(2024, 1, 3)


def _latched_halt() -> RiskState:
    """The stored state a router loads: drawdown halt latched, peak far above the equity."""
    return RiskState(
        version=7, trading_state=TradingState.HALTED, state_reason="drawdown 30.00% >= 20.00%",
        breaker_latched=True, day=D1, day_start_equity=71_000.0, peak_equity=100_000.0,
        equity=70_000.0, marks={"SPX": Mark(price=70.0, timestamp=NOW - timedelta(days=1))},
    )


def _router_update(base: RiskState, equity: float, today: date) -> RiskState:
    """What a router does with its copy: a new mark, an accepted order, the breaker fed."""
    ours = base.model_copy(deep=True)
    ours.marks["SPX"] = Mark(price=71.0, timestamp=NOW)
    RiskEngine(BREAKER).record(order(coid="coid-ours"), ours, NOW)
    RiskEngine(BREAKER).update_breaker(ours, equity, today)
    return ours


def test_merge_keeps_an_operator_reset_saved_between_the_routers_load_and_save():
    base = _latched_halt()
    ours = _router_update(base, 70_500.0, D1)
    assert ours.trading_state is TradingState.HALTED and ours.breaker_latched  # stale view
    theirs = base.model_copy(deep=True)
    RiskEngine.reset_breaker(theirs, "operator reviewed")
    theirs.version = base.version + 1

    merged = merge_states(base, ours, theirs)

    assert merged.trading_state is TradingState.ACTIVE and not merged.breaker_latched
    assert merged.state_reason == "reset: operator reviewed"
    assert merged.breaker_resets == 1 and merged.version == theirs.version
    # the peak is the rebased one (never the router's stale 100,000), raised to our newer equity
    assert merged.peak_equity == pytest.approx(70_500.0)
    assert merged.day_start_equity == pytest.approx(70_000.0)
    # the router's own updates still land
    assert merged.equity == pytest.approx(70_500.0) and merged.day == D1
    assert merged.marks["SPX"].price == 71.0
    assert [r.client_order_id for r in merged.recent] == ["coid-ours"]
    # and the next breaker update starts from the reset, not from the old drawdown
    assert RiskEngine(BREAKER).update_breaker(merged, 70_400.0, D1) is None
    assert merged.trading_state is TradingState.ACTIVE


def test_merge_after_a_reset_keeps_the_routers_newer_day():
    base = _latched_halt()
    ours = _router_update(base, 69_000.0, D2)  # the router rolled the day
    theirs = base.model_copy(deep=True)
    RiskEngine.reset_breaker(theirs, "ok")
    merged = merge_states(base, ours, theirs)
    assert merged.day == D2 and merged.equity == pytest.approx(69_000.0)
    assert merged.trading_state is TradingState.ACTIVE and not merged.breaker_latched
    assert merged.peak_equity == pytest.approx(70_000.0) and merged.day_start_equity == pytest.approx(70_000.0)


def test_merge_keeps_a_kill_switch_set_meanwhile():
    base = RiskState(version=3, day=D1, day_start_equity=100_000.0, peak_equity=100_000.0, equity=100_000.0)
    ours = _router_update(base, 101_000.0, D1)
    theirs = base.model_copy(update={"version": 4, "kill_switch": True, "kill_switch_reason": "operator"})
    merged = merge_states(base, ours, theirs)
    assert merged.kill_switch and merged.kill_switch_reason == "operator"
    assert merged.effective_state is TradingState.HALTED
    assert merged.equity == pytest.approx(101_000.0) and merged.peak_equity == pytest.approx(101_000.0)
    assert merged.marks["SPX"].price == 71.0 and merged.recent
    # ... and one cleared meanwhile stays cleared
    on = base.model_copy(update={"kill_switch": True, "kill_switch_reason": "drill"})
    off = on.model_copy(update={"version": 4, "kill_switch": False, "kill_switch_reason": "drill over"})
    merged = merge_states(on, on.model_copy(deep=True), off)
    assert not merged.kill_switch and merged.kill_switch_reason == "drill over"


def test_merge_without_operator_action_takes_the_routers_breaker_and_counters():
    base = RiskState(version=3, day=D1, day_start_equity=100_000.0, peak_equity=100_000.0, equity=100_000.0)
    ours = _router_update(base, 95_000.0, D1)  # -5 % on the day: HALTED
    assert ours.trading_state is TradingState.HALTED
    theirs = base.model_copy(deep=True)  # another router: only a mark of another symbol
    theirs.version = 4
    theirs.marks["NDX"] = Mark(price=200.0, timestamp=NOW)
    merged = merge_states(base, ours, theirs)
    assert merged.trading_state is TradingState.HALTED and merged.state_reason == ours.state_reason
    assert merged.equity == pytest.approx(95_000.0) and merged.day_start_equity == pytest.approx(100_000.0)
    assert set(merged.marks) == {"SPX", "NDX"} and merged.version == 4 and merged.breaker_resets == 0


def test_merge_of_two_routers_moving_the_breaker_keeps_the_more_severe():
    base = RiskState(version=3, day=D1, day_start_equity=100_000.0, peak_equity=100_000.0, equity=100_000.0)
    ours = _router_update(base, 97_500.0, D1)  # REDUCING
    theirs = _router_update(base, 95_000.0, D1)  # HALTED
    theirs.version = 4
    assert merge_states(base, ours, theirs).trading_state is TradingState.HALTED
    assert merge_states(base, theirs, ours).trading_state is TradingState.HALTED


def test_merge_of_an_unchanged_breaker_keeps_theirs():
    """We did not move the breaker: a relaxation saved meanwhile (a day roll) is not undone."""
    base = RiskState(version=3, trading_state=TradingState.REDUCING, state_reason="daily loss",
                     day=D1, day_start_equity=100_000.0, peak_equity=100_000.0, equity=97_000.0)
    ours = base.model_copy(deep=True)
    ours.marks["SPX"] = Mark(price=71.0, timestamp=NOW)
    theirs = base.model_copy(deep=True)
    RiskEngine(BREAKER).update_breaker(theirs, 97_100.0, D2)
    assert theirs.trading_state is TradingState.ACTIVE
    merged = merge_states(base, ours, theirs)
    assert merged.trading_state is TradingState.ACTIVE and merged.marks["SPX"].price == 71.0


def test_a_merge_does_not_carry_a_daily_halt_into_the_next_day():
    """One router halts on day D's loss while another, loaded from the same state, has rolled into
    D+1: the merged state is on D+1, where D's daily loss no longer counts, so D's halt must not
    hold all of D+1 (within a day the state never relaxes). Either side may write last."""
    base = RiskState(version=3, day=D1, day_start_equity=100_000.0, peak_equity=100_000.0, equity=100_000.0)
    halted_on_d1 = _router_update(base, 95_000.0, D1)  # -5 % on D1: HALTED (daily), not latched
    assert halted_on_d1.trading_state is TradingState.HALTED and not halted_on_d1.breaker_latched
    rolled = base.model_copy(deep=True)
    RiskEngine(BREAKER).update_breaker(rolled, 100_000.0, D2)  # D2's first bar: ACTIVE
    for ours, theirs in ((rolled, halted_on_d1), (halted_on_d1, rolled)):
        theirs = theirs.model_copy(update={"version": 4})
        merged = merge_states(base, ours, theirs)
        assert merged.day == D2 and merged.trading_state is TradingState.ACTIVE, (ours.day, theirs.day)
        RiskEngine(BREAKER).update_breaker(merged, 100_000.0, D2)  # the next intent of D2
        assert merged.trading_state is TradingState.ACTIVE


def test_a_merge_carries_a_latched_halt_into_the_next_day():
    base = RiskState(version=3, day=D1, day_start_equity=100_000.0, peak_equity=100_000.0, equity=100_000.0)
    latched = _router_update(base, 75_000.0, D1)  # drawdown 25 % >= 20 %: latched
    assert latched.breaker_latched
    rolled = base.model_copy(deep=True)
    RiskEngine(BREAKER).update_breaker(rolled, 100_000.0, D2)
    for ours, theirs in ((rolled, latched), (latched, rolled)):
        merged = merge_states(base, ours, theirs.model_copy(update={"version": 4}))
        assert merged.trading_state is TradingState.HALTED and merged.breaker_latched


def test_merge_of_symbol_halts_is_per_symbol():
    base = RiskState(halted_symbols={"A": "recon a", "B": "recon b"})
    ours = base.model_copy(deep=True)
    del ours.halted_symbols["A"]  # our reconciliation cleared A and halted C
    ours.halted_symbols["C"] = "recon c"
    theirs = base.model_copy(deep=True)
    theirs.halted_symbols["B"] = "recon b again"  # theirs changed B and halted D
    theirs.halted_symbols["D"] = "recon d"
    merged = merge_states(base, ours, theirs)
    assert merged.halted_symbols == {"B": "recon b again", "C": "recon c", "D": "recon d"}


def test_working_orders_that_may_never_fill_do_not_buy_room_past_the_limits():
    """A working BUY that never executes (a submit that timed out and never arrived) must not
    make a SELL look reducing: the limits hold for the held position as well as the potential."""
    ref = Reference(20.0, NOW)  # order notionals within the order limit
    # flat, with a working BUY 1,000: selling 1,000 is within the limit either way
    assert check(order(1_000, Side.SELL, price=20.0), OrderContext(NOW, ref, 1_000.0, 0.0, held=0.0)).accepted
    # short 1,500, with a working BUY 1,000: the SELL 1,000 "reduces" only if that BUY fills
    decision = check(order(1_000, Side.SELL, price=20.0), OrderContext(NOW, ref, -500.0, 0.0, held=-1_500.0))
    assert not decision.accepted and decision.reason is RejectReason.MAX_POSITION
    assert check(order(1_000, Side.SELL, price=20.0), OrderContext(NOW, ref, -500.0, 0.0)).accepted  # held unknown: as before
    # while REDUCING, only an order that reduces the held position too is let through
    reducing = RiskState(trading_state=TradingState.REDUCING, state_reason="test")
    flat_with_buy = OrderContext(NOW, ref, 1_000.0, 0.0, held=0.0)
    assert check(order(500, Side.SELL, price=20.0), flat_with_buy, reducing).reason is RejectReason.REDUCING_ONLY
    assert check(order(500, Side.SELL, price=20.0), OrderContext(NOW, ref, 1_000.0, 0.0, held=1_000.0), reducing).accepted


def test_a_merge_never_moves_the_day_back():
    """A risk state carried over from a failed batch can be older than the stored one: its day and
    day-start equity must not replace a later day's (the daily loss would be measured from them)."""
    from ensemble_trader.domain.risk import RiskState, merge_states

    base = RiskState(day=date(2026, 1, 5), day_start_equity=100_000.0, equity=100_000.0, peak_equity=100_000.0)
    ours = base.model_copy(update={"equity": 99_000.0})
    theirs = base.model_copy(update={"version": 7, "day": date(2026, 1, 6), "day_start_equity": 97_000.0,
                                     "equity": 95_500.0})
    merged = merge_states(base, ours, theirs)
    assert (merged.day, merged.day_start_equity, merged.equity) == (date(2026, 1, 6), 97_000.0, 95_500.0)
    later = ours.model_copy(update={"day": date(2026, 1, 7), "day_start_equity": 95_000.0, "equity": 94_000.0})
    merged = merge_states(base, later, theirs)  # our own later day still wins
    assert (merged.day, merged.day_start_equity, merged.equity) == (date(2026, 1, 7), 95_000.0, 94_000.0)


def test_a_drawdown_halt_latched_during_a_daily_loss_halt_names_the_drawdown():
    """The daily-loss branch is checked first: a drawdown halt latched on the same bar kept the
    daily-loss reason, which an operator expects to clear at the day roll (it does not)."""
    from datetime import date

    from ensemble_trader.domain.risk import RiskEngine, RiskLimits, RiskState

    engine, state = RiskEngine(RiskLimits()), RiskState()
    engine.update_breaker(state, 100_000.0, date(2024, 1, 1))
    engine.update_breaker(state, 80_000.0, date(2024, 1, 2))  # a daily-loss halt, not latched
    assert not state.breaker_latched and state.state_reason.startswith("daily loss")
    latch = engine.update_breaker(state, 70_000.0, date(2024, 1, 2))  # drawdown 30 % >= 25 %: latched
    assert state.breaker_latched and state.state_reason.startswith("drawdown 30.00% >= 25.00% (latched")
    # a transition of its own (HALTED to HALTED, latched), so an event tells the operator that this
    # halt no longer lifts at the day roll; published once
    assert latch is not None and (latch.previous, latch.current, latch.latched) == (
        TradingState.HALTED, TradingState.HALTED, True)
    assert latch.reason == state.state_reason
    assert engine.update_breaker(state, 65_000.0, date(2024, 1, 2)) is None
    engine.update_breaker(state, 70_000.0, date(2024, 1, 3))  # the day roll does not lift it
    assert state.breaker_latched and state.state_reason.startswith("drawdown")
