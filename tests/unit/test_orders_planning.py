"""Order planning: target → difference → legs with ids from the decision; fills from broker progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.domain.models import Order, OrderIntent, OrderStatus, Regime, Side, make_intent_id
from ensemble_trader.domain.orders import (
    BrokerOrder,
    client_order_id,
    fill_from_progress,
    order_after_report,
    plan_orders,
    round_toward_zero,
    target_quantity,
    working_quantity,
)
from ensemble_trader.domain.risk import reduces_exposure

T = datetime(2024, 5, 6, tzinfo=UTC)


def intent(target: float, price: float = 100.0, ts: datetime = T, version: str = "v1") -> OrderIntent:
    return OrderIntent(
        intent_id=make_intent_id("ens", "SPX", ts, version), strategy_id="ens", symbol="SPX",
        timestamp=ts, target_position=target, reference_price=price, model_version=version,
        regime=Regime.BULL, confidence=0.8,
    )


def test_target_quantity_rounds_toward_zero():
    assert target_quantity(0.5, 100_000, 33.0, 1.0) == 1515.0
    assert target_quantity(-0.5, 100_000, 33.0, 1.0) == -1515.0
    assert round_toward_zero(-7.99, 2.0) == -6.0
    # large positions with fine steps: 1e-9 of a step is below the float spacing of the ratio there
    assert round_toward_zero(-180714.96 - -0.73, 0.01) == pytest.approx(-180714.23, abs=1e-6)
    with pytest.raises(ValueError, match="equity"):
        target_quantity(0.5, float("nan"), 10, 1)


@pytest.mark.parametrize("step", [0.1, 0.01, 0.001])
def test_a_fractional_step_never_rounds_past_the_quantity_so_exits_go_flat(step):
    """7 × 0.1 is 0.7000000000000001: an exit of a held 0.7 rounded to that crossed zero by a
    float step and was refused as adding exposure (REDUCING_ONLY, MAX_GROSS_EXPOSURE)."""
    for units in range(1, 2000):
        held = float(f"{units * step:.6f}")  # a position as the broker reports it (0.7, not 7 × 0.1)
        [exit_order] = plan_orders(intent(0.0), position=held, working=0, equity=100_000, step=step, now=T)
        assert exit_order.signed_quantity == -held and reduces_exposure(held, exit_order.signed_quantity)
        close, _ = plan_orders(intent(-0.5), position=held, working=0, equity=100_000, step=step, now=T)
        assert close.signed_quantity == -held  # the closing leg of a flip, exactly
    # whole-share steps stay whole: a target a hair below an integer is not a fractional order
    assert round_toward_zero(5.99999999995, 1.0) == 6.0
    # legs that net out leave float residue, not a position: no dust order to close it
    working = -0.1 - 0.2  # 0.3 held, sells of 0.1 and 0.2 working: 0.3 + working is -5.55e-17
    assert 0.3 + working != 0.0
    assert plan_orders(intent(0.0), position=0.3, working=working, equity=100_000, step=0.1, now=T) == []
    # a quantity that is not a whole number of fine steps is rounded, not taken as it is
    [order] = plan_orders(intent(0.0), position=5.123456785, working=0, equity=100_000, step=1e-8, now=T)
    assert order.quantity == pytest.approx(5.12345678, abs=1e-12)


def test_plan_buys_the_difference_to_the_target_counting_working_orders():
    orders = plan_orders(intent(0.5), position=200, working=100, equity=100_000, step=1, now=T)
    assert len(orders) == 1
    o = orders[0]
    assert (o.side, o.quantity) == (Side.BUY, 200.0)
    assert o.status is OrderStatus.PENDING and o.decision_price == 100.0 and o.decision_time == T
    assert plan_orders(intent(0.5), position=500, working=0, equity=100_000, step=1, now=T) == []


def test_a_move_through_zero_is_split_into_close_and_open_legs():
    orders = plan_orders(intent(-0.3), position=400, working=0, equity=100_000, step=1, now=T)
    assert [(o.side, o.quantity) for o in orders] == [(Side.SELL, 400.0), (Side.SELL, 300.0)]
    assert len({o.client_order_id for o in orders}) == 2


def test_client_order_id_comes_from_the_decision_not_the_attempt():
    a, b = intent(0.5), intent(0.5)
    assert client_order_id(a) == client_order_id(b)
    assert client_order_id(a) != client_order_id(a, leg=1)
    assert client_order_id(a) != client_order_id(intent(0.5, ts=T + timedelta(days=1)))
    assert client_order_id(a) != client_order_id(intent(0.5, version="v2"))
    later = plan_orders(a, position=0, working=0, equity=1e5, step=1, now=T + timedelta(hours=3))
    assert later[0].client_order_id == client_order_id(a)


def _order(**kw) -> Order:
    base = dict(client_order_id="coid-0001", intent_id="i", strategy_id="s", symbol="SPX",
                side=Side.BUY, quantity=100.0, created_at=T, updated_at=T)
    base.update(kw)
    return Order(**base)


def _report(**kw) -> BrokerOrder:
    base = dict(client_order_id="coid-0001", broker_order_id="b-1", symbol="SPX", side=Side.BUY,
                quantity=100.0, status=OrderStatus.PARTIALLY_FILLED, updated_at=T)
    base.update(kw)
    return BrokerOrder(**base)


def test_fills_are_increments_of_cumulative_progress_with_stable_ids():
    o = _order()
    r1 = _report(filled_quantity=40, average_fill_price=10.0, fees_paid=0.4)
    f1 = fill_from_progress(o, r1, T)
    assert (f1.quantity, f1.price, f1.fee) == (40.0, 10.0, 0.4)
    assert fill_from_progress(o, r1, T).fill_id == f1.fill_id
    o2 = order_after_report(o, r1, T)
    assert fill_from_progress(o2, r1, T) is None  # nothing new
    r2 = _report(filled_quantity=100, average_fill_price=10.6, fees_paid=1.0, status=OrderStatus.FILLED)
    f2 = fill_from_progress(o2, r2, T)
    assert f2.quantity == pytest.approx(60) and f2.price == pytest.approx(11.0) and f2.fee == pytest.approx(0.6)
    assert order_after_report(o2, r2, T).status is OrderStatus.FILLED


def test_working_quantity_is_signed_and_ignores_terminal_orders():
    orders = [
        _order(client_order_id="coid-a001", quantity=100, filled_quantity=30, status=OrderStatus.PARTIALLY_FILLED),
        _order(client_order_id="coid-a002", side=Side.SELL, quantity=50, status=OrderStatus.UNKNOWN),
        _order(client_order_id="coid-a003", quantity=70, status=OrderStatus.CANCELED),
        _order(client_order_id="coid-a004", symbol="NDX", quantity=5, status=OrderStatus.SUBMITTED),
    ]
    assert working_quantity(orders, "SPX") == pytest.approx(20.0)


def test_no_trade_band_holds_back_small_rebalances_but_never_exits():
    small = plan_orders(intent(0.5), position=495, working=0, equity=100_000, step=1, now=T,
                        min_trade_fraction=0.01)
    assert small == []  # 5 shares x 100 = 500 < 1 % of 100,000
    assert plan_orders(intent(0.5), position=480, working=0, equity=100_000, step=1, now=T,
                       min_trade_fraction=0.01)
    flat = plan_orders(intent(0.0), position=3, working=0, equity=100_000, step=1, now=T,
                       min_trade_fraction=0.01)
    assert [(o.side, o.quantity) for o in flat] == [(Side.SELL, 3.0)]


def test_the_no_trade_band_is_a_fraction_of_the_symbols_capital():
    """A target is a fraction of allocation x equity, and so is the band: with 50 symbols (an
    allocation of 0.02) a band of 1 % of the whole equity held back every target below 0.5."""
    entry = plan_orders(intent(0.4), position=0, working=0, equity=1_000_000, step=1, now=T,
                        min_trade_fraction=0.01, allocation=0.02)
    assert [(o.side, o.quantity) for o in entry] == [(Side.BUY, 80.0)]  # 0.4 x 20,000 / 100
    # a change of 0.009 of the symbol's capital is inside the band, 0.011 is not
    assert plan_orders(intent(0.409), position=80, working=0, equity=1_000_000, step=0.01, now=T,
                       min_trade_fraction=0.01, allocation=0.02) == []
    assert plan_orders(intent(0.411), position=80, working=0, equity=1_000_000, step=0.01, now=T,
                       min_trade_fraction=0.01, allocation=0.02)


def test_allocation_scales_the_capital_behind_the_target():
    full = plan_orders(intent(0.5), position=0, working=0, equity=100_000, step=1, now=T)
    half = plan_orders(intent(0.5), position=0, working=0, equity=100_000, step=1, now=T, allocation=0.5)
    assert (full[0].quantity, half[0].quantity) == (500.0, 250.0)
    for bad in (0.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match="allocation"):
            plan_orders(intent(0.5), position=0, working=0, equity=100_000, step=1, now=T, allocation=bad)


def test_a_report_behind_the_stored_order_is_recognised():
    """An out-of-date read (less filled, or working after the order finished) would reopen a
    filled order and book its fill again: the router keeps the stored order instead."""
    from ensemble_trader.domain.orders import report_is_behind

    order = plan_orders(intent(0.5), position=0, working=0, equity=100_000, step=1, now=T)[0]
    filled = order.model_copy(update={"status": OrderStatus.FILLED, "filled_quantity": order.quantity,
                                      "average_fill_price": 100.0})
    old = BrokerOrder(client_order_id=order.client_order_id, broker_order_id="b1", symbol="SPX", side=Side.BUY,
                      quantity=order.quantity, filled_quantity=0.0, average_fill_price=None,
                      status=OrderStatus.SUBMITTED, updated_at=T)
    assert report_is_behind(filled, old)
    assert report_is_behind(filled, old.model_copy(update={"status": OrderStatus.PARTIALLY_FILLED,
                                                          "filled_quantity": 100.0, "average_fill_price": 100.0}))
    current = old.model_copy(update={"status": OrderStatus.FILLED, "filled_quantity": order.quantity,
                                     "average_fill_price": 100.0})
    assert not report_is_behind(filled, current)
    assert not report_is_behind(order.model_copy(update={"status": OrderStatus.SUBMITTED}), old)
