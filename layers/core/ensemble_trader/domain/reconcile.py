"""Reconciliation (pure): compare our orders and positions with the broker's, which is authoritative.

The order stage can crash between any two steps: after the conditional put but before the
submit, after the broker accepted but before the store was updated, between two fills. These
functions decide, for each difference, whether it can be repaired from the broker's records:

* an order of ours the broker reports differently (status, fill progress) → **sync** it (fills
  are derived from the cumulative progress, so a repeated sync changes nothing);
* an order of ours the broker does not know, not attempted for a grace period (measured from
  its ``updated_at``: its last submit attempt — an intent's redelivery marks one on its unsent
  orders) → it never reached the broker and nothing will send it: mark it rejected
  (``NOT_AT_BROKER``); attempted more recently → **wait** (a submit may be in flight, or the
  intent is still being delivered and will send it; an intent given up meanwhile — refused, or
  dead-lettered — is not: the order stage retires its order at the refusal or before the
  symbol's next intent plans, so the wait never makes a dead order count as working; the same
  holds for an ``UNKNOWN`` order the broker does not have once the broker request timeout has
  passed since its submit gave up);
* an order of ours whose symbol, side or quantity differ from the broker's order of the same id
  or whose record there cannot be read in full (an ``UNKNOWN`` report) or booked (a fill without
  its price), an open order at the
  broker that we never placed, or a position that differs after every order is synced → **not
  reconcilable**: the symbol stays halted (fail closed) and the reasons are published.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ensemble_trader.domain.models import Order, OrderStatus
from ensemble_trader.domain.orders import (
    QUANTITY_EPSILON,
    WORKING_STATUSES,
    BrokerOrder,
    report_matches,
    unbookable,
)


class Verdict(StrEnum):
    IN_SYNC = "IN_SYNC"
    SYNC = "SYNC"
    NOT_AT_BROKER = "NOT_AT_BROKER"
    WAIT = "WAIT"
    MISMATCH = "MISMATCH"


@dataclass(frozen=True)
class OrderVerdict:
    verdict: Verdict
    detail: str = ""


def compare_order(
    local: Order, report: BrokerOrder | None, now: datetime, grace_seconds: float
) -> OrderVerdict:
    """What to do about one of our orders given the broker's record of the same id.

    An order the broker does not have is judged by the time since its last attempt
    (``updated_at``), not since it was created: an intent whose submit was refused is attempted
    again at each delivery, so its order is retired only once the deliveries stop for
    ``grace_seconds``."""
    if report is None:
        if local.status not in WORKING_STATUSES:
            return OrderVerdict(Verdict.IN_SYNC)
        idle = (now - local.updated_at).total_seconds()
        if idle >= grace_seconds:
            return OrderVerdict(
                Verdict.NOT_AT_BROKER,
                f"{local.client_order_id} ({local.status.value}) unknown to the broker {idle:.0f} s after "
                f"its last attempt (created {(now - local.created_at).total_seconds():.0f} s ago)",
            )
        return OrderVerdict(Verdict.WAIT, f"{local.client_order_id} was last attempted {idle:.1f} s ago")
    problem = unbookable(report)  # a partial report (UNKNOWN), or a fill without its price
    if problem is not None:
        return OrderVerdict(Verdict.MISMATCH, f"{local.client_order_id}: {problem}")
    problems = report_matches(local, report)
    if problems:
        return OrderVerdict(Verdict.MISMATCH, f"{local.client_order_id}: " + "; ".join(problems))
    if report.filled_quantity + QUANTITY_EPSILON < local.filled_quantity:
        return OrderVerdict(
            Verdict.MISMATCH,
            f"{local.client_order_id}: filled {local.filled_quantity} here but only "
            f"{report.filled_quantity} at the broker",
        )
    same_progress = abs(report.filled_quantity - local.filled_quantity) <= QUANTITY_EPSILON
    same_status = report.status is local.status
    if same_progress and same_status and report.broker_order_id == local.broker_order_id:
        return OrderVerdict(Verdict.IN_SYNC)
    return OrderVerdict(
        Verdict.SYNC,
        f"{local.client_order_id}: {local.status.value}/{local.filled_quantity:g} here, "
        f"{report.status.value}/{report.filled_quantity:g} at the broker",
    )


def foreign_orders(broker_open: Iterable[BrokerOrder], known_ids: set[str]) -> dict[str, list[str]]:
    """Open broker orders we never placed, by symbol."""
    out: dict[str, list[str]] = {}
    for b in broker_open:
        if b.client_order_id not in known_ids:
            size = f"{b.quantity:g}" if math.isfinite(b.quantity) else "of unknown quantity"
            out.setdefault(b.symbol, []).append(
                f"open order {b.client_order_id} ({b.side.value} {size}) at the broker "
                "was not placed by this system"
                + (f" ({b.reject_reason})" if b.status is OrderStatus.UNKNOWN and b.reject_reason else "")
            )
    return out


def compare_positions(
    local: Mapping[str, float], broker: Mapping[str, float], tolerance: float = 1e-6
) -> dict[str, str]:
    """Symbols whose quantity differs between our positions and the broker's, with the figures."""
    out = {}
    for symbol in sorted(set(local) | set(broker)):
        ours, theirs = local.get(symbol, 0.0), broker.get(symbol, 0.0)
        if abs(ours - theirs) > tolerance:
            out[symbol] = f"position {ours:g} here, {theirs:g} at the broker"
    return out


@dataclass
class ReconciliationReport:
    """What a reconciliation run found and did."""

    checked_orders: int = 0
    synced: list[str] = field(default_factory=list)
    not_at_broker: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    failures: dict[str, list[str]] = field(default_factory=dict)
    cleared_symbols: list[str] = field(default_factory=list)

    def fail(self, symbol: str, reason: str) -> None:
        self.failures.setdefault(symbol, []).append(reason)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {
            "checked_orders": self.checked_orders,
            "synced": self.synced,
            "not_at_broker": self.not_at_broker,
            "waiting": self.waiting,
            "failures": self.failures,
            "cleared_symbols": self.cleared_symbols,
        }
