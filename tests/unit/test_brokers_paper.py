"""PaperBroker: next-price fills, slippage and fees, partial fills, idempotent on client order id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory.orders_store import MemoryPaperLedger
from ensemble_trader.domain.models import Order, OrderStatus, Side
from ensemble_trader.runtime.clock import FixedClock

T = datetime(2024, 5, 6, tzinfo=UTC)


def order(coid="coid-0001", qty=100.0, side=Side.BUY, symbol="SPX") -> Order:
    return Order(client_order_id=coid, intent_id="i", strategy_id="s", symbol=symbol, side=side,
                 quantity=qty, created_at=T, updated_at=T, decision_time=T, decision_price=50.0)


def broker(**kw) -> PaperBroker:
    return PaperBroker(MemoryPaperLedger(), FixedClock(T), **kw)


def test_fills_at_the_next_price_never_the_decision_price():
    b = broker(slippage_bps=10, fee_bps=5, fee_per_share=0.01)
    ack = b.submit(order())
    assert ack.status is OrderStatus.SUBMITTED and ack.filled_quantity == 0
    assert b.on_price("SPX", 50.0, T) == []  # same bar as the decision
    assert b.on_price("NDX", 10.0, T + timedelta(days=1)) == []  # other symbol
    (filled,) = b.on_price("SPX", 52.0, T + timedelta(days=1))
    assert filled.status is OrderStatus.FILLED and filled.filled_quantity == 100
    assert filled.average_fill_price == pytest.approx(52.0 * 1.001)
    assert filled.fees_paid == pytest.approx(100 * 52.052 * 5e-4 + 1.0)
    (pos,) = b.list_positions()
    assert pos.quantity == 100 and b.list_open_orders() == []


def test_partial_fills_over_several_prices_and_sell_slippage():
    b = broker(fill_fraction=0.4, slippage_bps=0, fee_bps=0)
    b.submit(order(qty=10, side=Side.SELL))
    seen = [b.on_price("SPX", 10.0 + i, T + timedelta(days=i))[0] for i in (1, 2, 3)]
    assert [r.filled_quantity for r in seen] == [4, 8, 10]
    assert [r.status for r in seen] == [OrderStatus.PARTIALLY_FILLED] * 2 + [OrderStatus.FILLED]
    assert seen[-1].average_fill_price == pytest.approx((4 * 11 + 4 * 12 + 2 * 13) / 10)
    assert b.list_positions()[0].quantity == -10


def test_a_redelivered_price_does_not_fill_a_partial_order_again():
    b = broker(fill_fraction=0.4, slippage_bps=0, fee_bps=0)
    b.submit(order(qty=10))
    (first,) = b.on_price("SPX", 11.0, T + timedelta(days=1))
    assert b.on_price("SPX", 11.0, T + timedelta(days=1)) == []  # the same bar again
    (second,) = b.on_price("SPX", 12.0, T + timedelta(days=2))
    assert (first.filled_quantity, second.filled_quantity) == (4, 8)
    assert b.list_positions()[0].quantity == 8


def test_submit_is_idempotent_on_client_order_id_and_cancel_works():
    b = broker()
    first = b.submit(order())
    again = b.submit(order(qty=999))
    assert again.broker_order_id == first.broker_order_id and again.quantity == 100
    assert b.created == 1
    assert b.get_order_by_client_id("coid-0001") == first
    assert b.get_order_by_client_id("coid-none") is None
    canceled = b.cancel("coid-0001")
    assert canceled.status is OrderStatus.CANCELED
    assert b.on_price("SPX", 51.0, T + timedelta(days=1)) == []
    assert b.cancel("coid-none") is None


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="fill_fraction"):
        broker(fill_fraction=0)
    with pytest.raises(ValueError, match="slippage_bps"):
        broker(slippage_bps=float("nan"))


def test_a_fill_from_a_stale_position_read_is_refused_by_the_ledger():
    from ensemble_trader.domain.errors import ConcurrencyError

    ledger = MemoryPaperLedger()
    b = PaperBroker(ledger, FixedClock(T), slippage_bps=0, fee_bps=0)
    b.submit(order("coid-0001", qty=10))
    b.submit(order("coid-0002", qty=5))
    stale = {p["symbol"]: p for p in ledger.list_positions()}  # nothing held yet
    b.on_price("SPX", 11.0, T + timedelta(days=1))  # fills both, position version 2
    assert b.list_positions()[0].quantity == 15
    record = dict(ledger.get_order("coid-0001"), open=True, status="PARTIALLY_FILLED")
    with pytest.raises(ConcurrencyError, match="position SPX changed meanwhile"):
        ledger.update_order(record, {"symbol": "SPX", "quantity": 3.0, "version": stale.get("SPX", {}).get("version", 0)})
    assert b.list_positions()[0].quantity == 15
