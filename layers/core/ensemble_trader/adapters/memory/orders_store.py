"""In-memory orders store and paper-broker ledger (unit tests, benchmark, in-process backtests).

Both behave like their DynamoDB counterparts where callers can tell: ``create_order`` is a
conditional put, ``apply_fill`` writes order and position together or not at all, the risk state
and ledger records carry versions checked on write. A lock makes them safe to share between
threads (the concurrency tests deliver one intent from many threads at once).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from ensemble_trader.domain.errors import ConcurrencyError
from ensemble_trader.domain.models import Fill, Order, OrderStatus, Position
from ensemble_trader.domain.orders import QUANTITY_EPSILON, WORKING_STATUSES, position_after_fill
from ensemble_trader.domain.risk import RiskState


class MemoryOrdersStore:
    """:class:`ensemble_trader.ports.OrdersStore` in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.orders: dict[str, Order] = {}
        self._working: set[str] = set()  # index of working order ids: listing stays O(working)
        self.positions: dict[str, Position] = {}
        self.applied_fills: list[Fill] = []
        self._risk_json: str | None = None
        self._risk_version = 0
        self.kill_switch_flag = False  # its own attribute, as in DynamoDB: operators flip it directly
        self.kill_switch_reason = ""
        self.kill_switch_at: datetime | None = None  # the command's time and id, written with the flag
        self.kill_switch_command_id = ""

    # -- orders ------------------------------------------------------------------------------

    def create_order(self, order: Order) -> bool:
        with self._lock:
            if order.client_order_id in self.orders:
                return False
            self._put(order)
            return True

    def _put(self, order: Order) -> None:
        self.orders[order.client_order_id] = order
        if order.status in WORKING_STATUSES:
            self._working.add(order.client_order_id)
        else:
            self._working.discard(order.client_order_id)

    def get_order(self, client_order_id: str) -> Order | None:
        with self._lock:
            return self.orders.get(client_order_id)

    def update_order(self, order: Order, *, expected_status: OrderStatus, expected_filled: float) -> bool:
        with self._lock:
            stored = self.orders.get(order.client_order_id)
            if (
                stored is None
                or stored.status is not expected_status
                or abs(stored.filled_quantity - expected_filled) > QUANTITY_EPSILON
            ):
                return False
            self._put(order)
            return True

    def list_orders(self, *, working_only: bool = False) -> list[Order]:
        with self._lock:
            if working_only:
                return [self.orders[c] for c in sorted(self._working)]  # by id, as DynamoOrdersStore
            return list(self.orders.values())

    def apply_fill(
        self, order: Order, fill: Fill, *, expected_status: OrderStatus, expected_filled: float
    ) -> Position | None:
        with self._lock:
            stored = self.orders.get(order.client_order_id)
            if (
                stored is None
                or stored.status is not expected_status
                or abs(stored.filled_quantity - expected_filled) > QUANTITY_EPSILON
            ):
                return None
            position = position_after_fill(self.positions.get(fill.symbol), fill)
            self._put(order)
            self.positions[fill.symbol] = position
            self.applied_fills.append(fill)
            return position

    # -- positions ---------------------------------------------------------------------------

    def get_position(self, symbol: str) -> Position | None:
        with self._lock:
            return self.positions.get(symbol)

    def list_positions(self) -> list[Position]:
        with self._lock:
            return list(self.positions.values())

    def put_position(self, position: Position) -> None:
        with self._lock:
            self.positions[position.symbol] = position

    # -- risk state --------------------------------------------------------------------------

    def load_risk_state(self) -> RiskState:
        with self._lock:
            state = (
                RiskState.model_validate_json(self._risk_json) if self._risk_json else RiskState()
            )
            state.version = self._risk_version
            state.kill_switch = self.kill_switch_flag
            state.kill_switch_reason = self.kill_switch_reason
            state.kill_switch_at = self.kill_switch_at
            state.kill_switch_command_id = self.kill_switch_command_id
            state.switch_as_stored = self._switch()
            return state

    def _switch(self) -> tuple[bool, str, datetime | None, str]:
        return self.kill_switch_flag, self.kill_switch_reason, self.kill_switch_at, self.kill_switch_command_id

    def save_risk_state(self, state: RiskState, *, write_kill_switch: bool = False) -> None:
        with self._lock:
            if state.version != self._risk_version:
                raise ConcurrencyError(
                    f"risk state version {state.version} is stale (stored {self._risk_version})"
                )
            # as in DynamoDB: a kill-switch save also needs the switch as it was read (an
            # operator's direct flip of the attributes does not bump the version)
            if write_kill_switch and state.switch_as_stored is not None and state.switch_as_stored != self._switch():
                raise ConcurrencyError("the kill switch was changed since the risk state was read (by hand)")
            state.version += 1
            self._risk_version = state.version
            if write_kill_switch:
                self.kill_switch_flag = state.kill_switch
                self.kill_switch_reason = state.kill_switch_reason
                self.kill_switch_at = state.kill_switch_at
                self.kill_switch_command_id = state.kill_switch_command_id
                state.switch_as_stored = self._switch()
            self._risk_json = state.model_dump_json()


class MemoryPaperLedger:
    """The paper broker's own books (orders by client order id, positions) in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.orders: dict[str, dict[str, Any]] = {}
        self._open: set[str] = set()
        self.positions: dict[str, dict[str, Any]] = {}

    def get_order(self, client_order_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.orders.get(client_order_id)
            return dict(found) if found is not None else None

    def create_order(self, record: dict[str, Any]) -> bool:
        with self._lock:
            if record["client_order_id"] in self.orders:
                return False
            self.orders[record["client_order_id"]] = dict(record, version=1)
            if record["open"]:
                self._open.add(record["client_order_id"])
            return True

    def update_order(self, record: dict[str, Any], position: dict[str, Any] | None = None) -> None:
        """Write ``record`` (and ``position``) if the stored versions are the ones they carry."""
        with self._lock:
            stored = self.orders.get(record["client_order_id"])
            if stored is None or stored["version"] != record["version"]:
                raise ConcurrencyError(f"paper order {record['client_order_id']} changed meanwhile")
            if position is not None:
                held = self.positions.get(position["symbol"], {}).get("version", 0)
                if held != position.get("version", 0):
                    raise ConcurrencyError(f"paper position {position['symbol']} changed meanwhile")
            self.orders[record["client_order_id"]] = dict(record, version=record["version"] + 1)
            if record["open"]:
                self._open.add(record["client_order_id"])
            else:
                self._open.discard(record["client_order_id"])
            if position is not None:
                self.positions[position["symbol"]] = dict(position, version=position.get("version", 0) + 1)

    def open_orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(self.orders[c]) for c in sorted(self._open)]

    def list_positions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self.positions.values()]
