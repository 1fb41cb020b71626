"""The order stage's books after partial failures: a paper fill the broker made but the store did
not book is repaired by the next delivery; settings that would make the paper broker fill at a
price of zero or less are refused."""

from __future__ import annotations

import pytest
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore, MemoryPaperLedger
from ensemble_trader.domain.errors import ConcurrencyError, InfrastructureError
from ensemble_trader.domain.models import OrderStatus
from ensemble_trader.domain.risk import RiskLimits
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import OrderRouter, OrdersSettings
from ensemble_trader.runtime.settings import EnvironmentSettingError
from pydantic import ValidationError

from tests.unit.test_orders_router import WALL, intent


class FlakyFillStore(MemoryOrdersStore):
    """A store whose next ``fail`` fill writes fail (DynamoDB throttled) after the broker filled."""

    fail = 0

    def apply_fill(self, *args, **kwargs):
        if self.fail:
            self.fail -= 1
            raise InfrastructureError("DynamoDB fill: ProvisionedThroughputExceeded")
        return super().apply_fill(*args, **kwargs)


class RacingLedger(MemoryPaperLedger):
    """A paper ledger whose ``fail_on``-th order write from now loses a race (ConcurrencyError)."""

    fail_on = 0

    def update_order(self, record, position=None):
        if self.fail_on:
            self.fail_on -= 1
            if not self.fail_on:
                raise ConcurrencyError(f"paper order {record['client_order_id']} changed meanwhile")
        return super().update_order(record, position)


class Rig:
    def __init__(self, store=None, ledger=None):
        self.clock = FixedClock(WALL)
        self.store = store or MemoryOrdersStore()
        self.ledger = ledger or MemoryPaperLedger()
        self.paper = PaperBroker(self.ledger, self.clock, slippage_bps=0, fee_bps=0)
        self.bus = MemoryEventBus()
        self.router = OrderRouter(
            self.store, self.paper, self.clock, events=self.bus, limits=RiskLimits(clock="event"),
            initial_equity=100_000, reconcile_grace_seconds=60,
        )
        self.router.handle(intent(0, 0.0, 100.0))  # the symbol's first price: its reference

    def events(self, name: str) -> list:
        return [e for e in self.bus.events if type(e).__name__ == name]

    def broker_quantity(self, symbol: str = "SPX") -> float:
        return sum(p.quantity for p in self.paper.list_positions() if p.symbol == symbol)


def _lose_the_fill_write(rig: Rig, batched: bool) -> str:
    """BUY 500 working; the next price fills it at the broker and its booking fails. Its id."""
    (buy,) = rig.router.handle(intent(1, 0.5, 100.0)).orders
    rig.store.fail = 1
    with pytest.raises(InfrastructureError):
        if batched:
            with rig.router.batch():
                rig.router.handle(intent(2, 0.5, 110.0))  # the broker fills at 110; the store write fails
        else:
            rig.router.handle(intent(2, 0.5, 110.0))
    assert rig.broker_quantity() == 500 and rig.store.get_position("SPX") is None
    return buy["client_order_id"]


@pytest.mark.parametrize("batched", [False, True])
def test_a_fill_the_store_failed_to_book_is_booked_by_the_redelivery(batched):
    rig = Rig(store=FlakyFillStore())
    buy = _lose_the_fill_write(rig, batched)
    if batched:
        with rig.router.batch():
            out = rig.router.handle(intent(2, 0.5, 110.0))  # the SQS redelivery
    else:
        out = rig.router.handle(intent(2, 0.5, 110.0))
    assert out.fills == 1
    assert rig.store.get_position("SPX").quantity == 500
    order = rig.store.get_order(buy)
    assert order.status is OrderStatus.FILLED and order.filled_quantity == 500
    assert out.account["equity"] == pytest.approx(100_000)  # bought at 110, marked at 110
    # planned from the booked 500: at 110 the target is 454 shares
    assert [(o["side"], o["quantity"]) for o in out.orders] == [("SELL", 46.0)]
    assert len(rig.events("OrderFilled")) == 1
    assert rig.router.reconcile().ok  # nothing left for reconciliation to repair


def test_a_fill_the_store_failed_to_book_is_booked_by_the_next_intent_when_no_redelivery_comes():
    """The failed delivery went to the dead-letter queue: the next bar still books the fill
    before it plans from the position."""
    rig = Rig(store=FlakyFillStore())
    buy = _lose_the_fill_write(rig, batched=False)
    out = rig.router.handle(intent(3, 0.5, 110.0))
    assert rig.store.get_position("SPX").quantity == rig.broker_quantity() == 500
    assert rig.store.get_order(buy).status is OrderStatus.FILLED
    assert out.fills == 1  # planned from the booked 500: at 110 the target is 454 shares
    assert [(o["side"], o["quantity"]) for o in out.orders] == [("SELL", 46.0)]
    assert len(rig.events("OrderFilled")) == 1


def test_a_fill_committed_before_the_broker_lost_a_race_on_another_order_is_booked():
    """on_price filled the first of two working orders, then lost a race on the second: the
    retried intent books both fills, the first one included."""
    rig = Rig(ledger=RacingLedger())
    rig.router.handle(intent(1, 0.5, 100.0))
    rig.router.handle(intent(2, 0.5, 100.0))  # fills the BUY 500
    out = rig.router.handle(intent(3, -0.5, 100.0))  # a flip: SELL 500 to close, SELL 500 to open
    assert [o["side"] for o in out.orders] == ["SELL", "SELL"]
    rig.ledger.fail_on = 2  # the next price fills the closing leg, then loses the race on the opening leg
    out = rig.router.handle(intent(4, -0.5, 100.0))
    assert out.attempts == 2
    assert rig.broker_quantity() == -500
    assert rig.store.get_position("SPX").quantity == -500
    assert all(o.status is OrderStatus.FILLED for o in rig.store.list_orders() if o.status is not OrderStatus.REJECTED)
    assert out.fills == 2 and len(rig.events("OrderFilled")) == 3


@pytest.mark.parametrize("bps", [10_000.0, 20_000.0])
def test_paper_slippage_of_the_whole_price_or_more_is_refused_by_name(bps):
    """At 10,000 bps a SELL fills at 0 or less: refused, not accepted to fail at the first fill."""
    with pytest.raises(ValueError, match="slippage_bps"):
        PaperBroker(MemoryPaperLedger(), FixedClock(WALL), slippage_bps=bps)
    with pytest.raises(ValidationError, match="paper_slippage_bps"):
        OrdersSettings(paper_slippage_bps=bps)


def test_paper_slippage_from_the_environment_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("ET_ORDERS_PAPER_SLIPPAGE_BPS", "10000")
    with pytest.raises(EnvironmentSettingError, match="ET_ORDERS_PAPER_SLIPPAGE_BPS"):
        OrdersSettings()


def test_paper_slippage_just_under_the_whole_price_still_sells_at_a_positive_price():
    settings = OrdersSettings(paper_slippage_bps=9_999.0)
    clock = FixedClock(WALL)
    store, ledger = MemoryOrdersStore(), MemoryPaperLedger()
    paper = PaperBroker(ledger, clock, slippage_bps=settings.paper_slippage_bps, fee_bps=0)
    router = OrderRouter(store, paper, clock, events=MemoryEventBus(), limits=RiskLimits(clock="event"),
                         initial_equity=100_000, reconcile_grace_seconds=60)
    router.handle(intent(0, 0.0, 100.0))
    router.handle(intent(1, -0.5, 100.0))
    out = router.handle(intent(2, -0.5, 100.0))
    assert out.fills == 1
    (position,) = store.list_positions()
    assert position.quantity == -500 and position.average_price == pytest.approx(0.01)
