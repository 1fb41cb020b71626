"""PaperBroker: a simulated broker that fills at the next price, with slippage, fees and partial fills.

Fill model. A market order is accepted (``SUBMITTED``) and waits for the next price of its symbol
strictly after its decision time (:meth:`PaperBroker.on_price`): it never fills at the price the
decision was made on. Each later price fills up to ``fill_fraction`` of the order's quantity
(whole ``lot`` units, at least one lot), so ``fill_fraction < 1`` gives partial fills spread over
several bars. The fill price is the new price moved against the order by ``slippage_bps``
(below 10,000, so a SELL fills at a positive price); the fee is ``fee_bps`` of the notional plus ``fee_per_share``.

State. Orders and positions live in a ledger (:class:`MemoryPaperLedger`, or the DynamoDB one in
``adapters/aws/orders_store.py`` so the books survive a Lambda cold start). Every order update is
a versioned write; ``submit`` is a conditional create, so the broker holds at most one order per
client order id: submitting the same id again returns the existing order unchanged.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from ensemble_trader.domain.errors import ConcurrencyError
from ensemble_trader.domain.models import Fill, Order, OrderStatus, OrderType, Position, Side
from ensemble_trader.domain.orders import (
    BrokerOrder,
    BrokerPosition,
    BrokerRejectedError,
    fill_id,
    round_toward_zero,
)
from ensemble_trader.ports import Clock


class PaperLedger(Protocol):
    """Storage of the paper broker's books (see the memory and DynamoDB implementations)."""

    def get_order(self, client_order_id: str) -> dict[str, Any] | None: ...

    def create_order(self, record: dict[str, Any]) -> bool: ...

    def update_order(self, record: dict[str, Any], position: dict[str, Any] | None = None) -> None:
        """Write ``record`` if the stored order's version is ``record['version']``, and ``position``
        if the stored position's version is ``position['version']`` (0: none yet), in one step;
        raise :class:`ConcurrencyError` when either changed meanwhile."""
        ...

    def open_orders(self) -> list[dict[str, Any]]: ...

    def list_positions(self) -> list[dict[str, Any]]: ...


_OPEN = (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)


class PaperBroker:
    """:class:`ensemble_trader.ports.Broker` simulated over a :class:`PaperLedger`."""

    name = "paper"

    def __init__(
        self,
        ledger: PaperLedger,
        clock: Clock,
        *,
        slippage_bps: float = 1.0,
        fee_bps: float = 0.5,
        fee_per_share: float = 0.0,
        fill_fraction: float = 1.0,
        lot: float = 1.0,
        id_factory: Callable[[], str] | None = None,
    ):
        for name, value in (("slippage_bps", slippage_bps), ("fee_bps", fee_bps),
                            ("fee_per_share", fee_per_share)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if slippage_bps >= 1e4:  # a SELL would fill at the price moved down by all of it, or more
            raise ValueError(
                f"slippage_bps must be below 10,000 (the whole price: a SELL would fill at a price "
                f"of 0 or less), got {slippage_bps!r}"
            )
        if not (0 < fill_fraction <= 1):
            raise ValueError(f"fill_fraction must be in (0, 1], got {fill_fraction!r}")
        if not (math.isfinite(lot) and lot > 0):
            raise ValueError(f"lot must be a finite number > 0, got {lot!r}")
        self.ledger = ledger
        self.clock = clock
        self.slippage_bps = slippage_bps
        self.fee_bps = fee_bps
        self.fee_per_share = fee_per_share
        self.fill_fraction = fill_fraction
        self.lot = lot
        self._ids = id_factory or (lambda: str(uuid.uuid4()))
        self.created = 0  # orders this instance created (not calls): for tests and reports

    # -- Broker port -------------------------------------------------------------------------

    def submit(self, order: Order) -> BrokerOrder:
        if order.order_type is not OrderType.MARKET:
            raise BrokerRejectedError(order.client_order_id, "the paper broker takes MARKET orders only")
        now = self.clock.now()
        record = {
            "client_order_id": order.client_order_id,
            "broker_order_id": self._ids(),
            "symbol": order.symbol,
            "side": order.side.value,
            "quantity": order.quantity,
            "status": OrderStatus.SUBMITTED.value,
            "filled_quantity": 0.0,
            "average_fill_price": None,
            "fees_paid": 0.0,
            "reject_reason": None,
            "updated_at": now.isoformat(),
            "decision_time": (order.decision_time or order.created_at).isoformat(),
            "open": True,
        }
        if self.ledger.create_order(record):
            self.created += 1
            return _to_report(record)
        existing = self.ledger.get_order(order.client_order_id)
        if existing is None:  # created and deleted meanwhile: cannot happen with these ledgers
            raise ConcurrencyError(f"paper order {order.client_order_id} vanished during submit")
        return _to_report(existing)

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        record = self.ledger.get_order(client_order_id)
        return _to_report(record) if record is not None else None

    def cancel(self, client_order_id: str) -> BrokerOrder | None:
        for _ in range(5):
            record = self.ledger.get_order(client_order_id)
            if record is None:
                return None
            if not record["open"]:
                return _to_report(record)
            record.update(
                status=OrderStatus.CANCELED.value, open=False, updated_at=self.clock.now().isoformat()
            )
            try:
                self.ledger.update_order(record)
            except ConcurrencyError:
                continue  # filled meanwhile: read again
            return _to_report(dict(record, version=record["version"] + 1))
        raise ConcurrencyError(f"could not cancel paper order {client_order_id}: it keeps changing")

    def list_open_orders(self) -> list[BrokerOrder]:
        return [_to_report(r) for r in self.ledger.open_orders()]

    def list_positions(self) -> list[BrokerPosition]:
        return [
            BrokerPosition(symbol=p["symbol"], quantity=p["quantity"], average_price=p["average_price"])
            for p in self.ledger.list_positions()
            if abs(p["quantity"]) > 0
        ]

    # -- market data -------------------------------------------------------------------------

    def on_price(self, symbol: str, price: float, timestamp: datetime) -> list[BrokerOrder]:
        """A new price of ``symbol``: fill the open orders decided before ``timestamp``.

        Returns the orders that changed. A price at or before an order's decision time, or at or
        before the price that last filled it, does not fill it, so a redelivered price is
        harmless (it does not fill another part of a partially filled order). A fill made by an
        earlier call is not reported again: the router looks up the working orders this call did
        not report, so a fill whose booking failed is still booked (see ``OrderRouter``).
        """
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price of {symbol} must be a finite number > 0, got {price!r}")
        changed = []
        positions: dict[str, dict[str, Any]] | None = None  # read once, only if something fills
        for record in self.ledger.open_orders():
            if record["symbol"] != symbol:
                continue
            if datetime.fromisoformat(record.get("last_fill_time") or record["decision_time"]) >= timestamp:
                continue
            if positions is None:
                positions = {p["symbol"]: p for p in self.ledger.list_positions()}
            report = self._fill(record, price, timestamp, positions)
            if report is not None:
                changed.append(report)
        return changed

    def _fill(self, record: dict[str, Any], price: float, when: datetime,
              positions: dict[str, dict[str, Any]]) -> BrokerOrder | None:
        quantity, filled = record["quantity"], record["filled_quantity"]
        remaining = quantity - filled
        chunk = max(round_toward_zero(quantity * self.fill_fraction, self.lot), self.lot)
        qty = min(remaining, chunk)
        if qty <= 0:
            return None
        sign = 1.0 if record["side"] == Side.BUY.value else -1.0
        fill_price = price * (1.0 + sign * self.slippage_bps / 1e4)
        fee = abs(qty * fill_price) * self.fee_bps / 1e4 + qty * self.fee_per_share
        new_filled = filled + qty
        avg = ((record["average_fill_price"] or 0.0) * filled + fill_price * qty) / new_filled
        done = new_filled >= quantity - 1e-9
        record.update(
            filled_quantity=new_filled,
            average_fill_price=avg,
            fees_paid=record["fees_paid"] + fee,
            status=(OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED).value,
            open=not done,
            updated_at=when.isoformat(),
            last_fill_time=when.isoformat(),
        )
        held = dict(positions.get(record["symbol"]) or {"symbol": record["symbol"]})
        version = int(held.pop("version", 0))  # the ledger's write condition, not part of a Position
        position = Position(**held).apply(
            Fill(
                fill_id=fill_id(record["client_order_id"], new_filled),
                client_order_id=record["client_order_id"],
                symbol=record["symbol"],
                side=Side(record["side"]),
                quantity=qty,
                price=fill_price,
                fee=fee,
                timestamp=when,
            )
        )
        position_record = position.model_dump(mode="json") | {"version": version}
        self.ledger.update_order(record, position_record)
        positions[record["symbol"]] = position_record | {"version": version + 1}
        return _to_report(dict(record, version=record["version"] + 1))


def _to_report(record: dict[str, Any]) -> BrokerOrder:
    return BrokerOrder(
        client_order_id=record["client_order_id"],
        broker_order_id=record["broker_order_id"],
        symbol=record["symbol"],
        side=Side(record["side"]),
        quantity=record["quantity"],
        status=OrderStatus(record["status"]),
        filled_quantity=record["filled_quantity"],
        average_fill_price=record["average_fill_price"],
        fees_paid=record["fees_paid"],
        reject_reason=record["reject_reason"],
        updated_at=datetime.fromisoformat(record["updated_at"]),
    )
