"""The order stage (pure): an OrderIntent and the current position become orders.

An intent states a *target* position as a signed fraction of the capital allocated to its
symbol (``allocation`` × equity; the whole equity when the allocation is 1). The stage turns it into
shares (``target_quantity``), subtracts what is held and what is already working at the broker,
rounds toward zero to the tradable step and emits at most two orders: when the target lies on the
other side of zero, the first order closes the position (risk-reducing, so it may pass while the
breaker only allows reductions) and the second opens the new side. Planning does not know the
limits: the router cuts an order that reduces exposure down to the per-order limits before its
check (:meth:`~ensemble_trader.domain.risk.RiskEngine.cut_to_order_limits`), so an exit larger
than one order goes out over several intents, and sends a flip's opening leg only once its
closing leg went out in full.

Every order's client order id is derived from the decision — strategy, symbol, bar time, model
version and leg — never from the attempt, so a redelivered intent names the same orders and the
store's conditional put (and the broker's own uniqueness check) turns a duplicate into a lookup.

This module also holds what brokers report (:class:`BrokerOrder`, :class:`BrokerPosition`), the
errors a broker adapter raises, the events the stage publishes, and :func:`fill_from_progress`,
which turns a broker's cumulative fill progress into an idempotent :class:`Fill`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from ensemble_trader.constants import CONTROL_EVENT_SOURCE, KILL_SWITCH_DETAIL_TYPE
from ensemble_trader.domain.errors import DataError, EnsembleTraderError, FieldProblem, InvalidMessageError
from ensemble_trader.domain.models import (
    Fill,
    Finite,
    Message,
    NonNegative,
    OptionalTimestamp,
    Order,
    OrderIntent,
    OrderStatus,
    Position,
    Price,
    Quantity,
    Side,
    Symbol,
    Timestamp,
    deterministic_id,
)

QUANTITY_EPSILON = 1e-9
"""Quantities closer than this are equal (fill progress, position comparisons)."""

WORKING_STATUSES = frozenset(
    {OrderStatus.PENDING, OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNKNOWN}
)
"""Orders that may still trade: their remaining quantity counts toward the position."""


# --------------------------------------------------------------------------------------------
# Errors raised by broker adapters
# --------------------------------------------------------------------------------------------


class BrokerError(EnsembleTraderError):
    """A broker call failed."""


class BrokerRejectedError(BrokerError):
    """The broker refused the order (definitive: it will not trade). ``reason`` says why."""

    def __init__(self, client_order_id: str, reason: str):
        self.client_order_id = client_order_id
        self.reason = reason
        super().__init__(f"broker rejected {client_order_id}: {reason}")


class UnknownOutcomeError(BrokerError):
    """A submit whose outcome is unknown (timeout, 5xx, lost connection).

    The order may or may not exist at the broker: resolve it by looking the client order id up,
    never by submitting again under a new id.
    """

    def __init__(self, client_order_id: str, cause: str):
        self.client_order_id = client_order_id
        self.cause = cause
        super().__init__(f"outcome of {client_order_id} unknown: {cause}")


class DuplicateClientOrderIdError(BrokerError):
    """The broker already holds an order with this client order id (resolve by lookup)."""

    def __init__(self, client_order_id: str):
        self.client_order_id = client_order_id
        super().__init__(f"broker already has an order with client_order_id {client_order_id}")


class BrokerUnavailableError(BrokerError):
    """A read (lookup, listing, cancel) could not reach the broker; retrying may help."""


class BrokerReportError(BrokerError):
    """A broker's report of an order that cannot be booked as it stands (progress without the
    price it was made at). Nothing of it is applied; ``reason`` says what was wrong."""

    def __init__(self, client_order_id: str, reason: str):
        self.client_order_id = client_order_id
        self.reason = reason
        super().__init__(f"broker report of {client_order_id} cannot be booked: {reason}")


class BrokerAuthenticationError(BrokerUnavailableError):
    """The broker refused our API keys (HTTP 401, or a 403 that refuses the keys rather than the
    order), also after the keys were read again from their secret: the secret holds a pair the
    broker does not accept (revoked before the new pair was put in, mistyped, paper keys against
    the live endpoint). Nothing was placed; retrying helps once the secret holds a valid pair."""


# --------------------------------------------------------------------------------------------
# What a broker reports
# --------------------------------------------------------------------------------------------


class BrokerOrder(Message):
    """The broker's view of one order: cumulative progress, not individual executions."""

    client_order_id: str
    broker_order_id: str
    symbol: Symbol
    side: Side
    quantity: Quantity
    status: OrderStatus
    filled_quantity: NonNegative = 0.0
    average_fill_price: Price | None = None
    fees_paid: NonNegative = 0.0
    reject_reason: str | None = None
    updated_at: Timestamp

    @model_validator(mode="after")
    def _priced_progress(self) -> BrokerOrder:
        # a fill without its price cannot be booked (an adapter's partial report, status
        # UNKNOWN, is built without validation and says why it is partial instead)
        if self.status is not OrderStatus.UNKNOWN:
            problem = unbookable(self)
            if problem is not None:
                raise ValueError(problem)
        return self


def unbookable(report: BrokerOrder) -> str | None:
    """Why nothing of the broker's ``report`` can be applied to the stored order (None: it can).

    A partial report (status ``UNKNOWN``: an adapter could not read the broker's order in full,
    ``reject_reason`` says why), or progress without the price it was made at (``filled_quantity``
    above 0 and no ``average_fill_price``; :class:`BrokerOrder` refuses one, but a report made
    with ``model_copy`` or ``model_construct`` is not validated)."""
    if report.status is OrderStatus.UNKNOWN:
        return f"the broker's order cannot be read in full: {report.reject_reason}"
    if report.filled_quantity > QUANTITY_EPSILON and report.average_fill_price is None:
        return f"filled_quantity {report.filled_quantity:g} without an average fill price"
    return None


class BrokerPosition(Message):
    """The broker's holding of one symbol (signed quantity)."""

    symbol: Symbol
    quantity: Finite  # a NaN would compare as "in sync" with any position of ours
    average_price: NonNegative = 0.0


# --------------------------------------------------------------------------------------------
# Events (EventBridge detail-type = class name)
# --------------------------------------------------------------------------------------------


class OrderSubmitted(Message):
    client_order_id: str
    intent_id: str
    symbol: Symbol
    side: Side
    quantity: Quantity
    broker_order_id: str | None
    timestamp: Timestamp


class OrderFilled(Message):
    client_order_id: str
    fill_id: str
    symbol: Symbol
    side: Side
    quantity: Quantity
    price: Price
    fee: NonNegative
    position_after: Finite
    order_status: OrderStatus
    timestamp: Timestamp


class OrderRejected(Message):
    """An intent or order refused. ``symbol`` is a valid symbol or None: every rejection names the
    symbol of a parsed intent or a stored order (both checked), and a queued intent too malformed
    to parse is rejected with ``symbol`` None — its bad text, as received, is in ``message`` (the
    :class:`InvalidMessageError` naming each bad field and its value) and in the dead letter."""

    client_order_id: str | None
    intent_id: str | None
    symbol: Symbol | None
    reason_code: str
    message: str
    timestamp: Timestamp


class OrderCanceled(Message):
    client_order_id: str
    symbol: Symbol
    reason: str
    timestamp: Timestamp


class CircuitBreakerTripped(Message):
    """A move of the breaker. ``latched`` (HALTED only): the halt holds until an operator resets
    it; a daily-loss halt that becomes latched is published once more, HALTED to HALTED.
    ``correction``: published by the writer of a merged risk-state save to announce the stored
    state, from a state an earlier event may have left as the last word
    (:func:`~ensemble_trader.domain.risk.announce`), not by a move of the account; False for
    every other event (a trip only the merge made, beyond every state announced, among them:
    :func:`~ensemble_trader.domain.risk.merge_corrections`), and for events stored before the
    field existed, which lack it."""

    previous: str
    current: str
    reason: str
    equity: Finite  # at or below zero halts
    daily_loss: NonNegative  # fractions of the day's start and of the peak; may exceed 1
    drawdown: NonNegative
    timestamp: Timestamp
    latched: bool = False
    correction: bool = False


class KillSwitchChanged(Message):
    active: bool
    reason: str
    canceled: list[str]
    timestamp: Timestamp


class KillSwitchCommandIgnored(Message):
    """A kill-switch command judged stale (issued before the command the risk state holds): it
    changed nothing. ``active`` and ``reason`` are the command's, ``switch_active`` the switch as it
    stands, ``ignored`` why. An ignored "on" means trading goes on although an operator asked to
    stop it: look at it at once."""

    command_id: str | None
    active: bool
    reason: str
    issued_at: OptionalTimestamp
    switch_active: bool
    ignored: str
    timestamp: Timestamp


class ReconciliationFailed(Message):
    """A symbol reconciliation could not explain, halted (fail closed), with the reasons.

    ``symbol`` is plain text, not ``Symbol``: a broker's open order that this system did not
    place and that the adapter can read only in part (Alpaca's ``_partial_report``, built without
    validation) is reported under the symbol the broker sent, unchecked, and refusing it here
    would lose the alarm of a halt already saved."""

    symbol: str
    reasons: list[str]
    timestamp: Timestamp


_EVENT_TIME: TypeAdapter[datetime] = TypeAdapter(Timestamp)
"""The control event's ``time``: ISO-8601 text with its offset, never a number (see ``Timestamp``)."""


class KillSwitchCommand(Message):
    """The ``detail`` of a KillSwitch control event (source ``ensemble-trader.control``).

    ``active`` true halts new orders and cancels working ones; false lifts the switch, and with
    ``reset_breaker`` also resets a latched circuit breaker (an operator decision).

    ``issued_at`` and ``command_id`` order the commands: the control event's ``time`` and ``id``
    (:meth:`from_event`; EventBridge sets both when the event is put, and Lambda's retries of an
    asynchronous invocation keep them), or the CLI's wall clock and an id of its own. A command
    issued before the one the risk state last applied is stale and changes nothing (see
    :func:`~ensemble_trader.domain.risk.kill_switch_verdict`), so a retried "off" cannot undo a
    later "on". Without ``issued_at`` (an in-process caller) the command is taken as issued now.
    ``issued_at`` is a timezone-aware datetime or ISO-8601 text with an offset, never a number
    (``Timestamp``: ``1704187800`` is refused, not read as a Unix time), like the event's ``time``.
    ``issued_at`` is kept in whole seconds (a fraction is dropped): EventBridge's ``time`` has no
    finer precision, and within one second the tie rule decides (an "on" applies, an "off" does
    not lift the switch). The operator CLI stamps its commands with AWS's clock for the same
    reason (see ``OrderRouter.command_time``).
    """

    active: bool
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    reset_breaker: bool = False
    issued_at: OptionalTimestamp = None
    command_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @classmethod
    def from_event(cls, event: Any, *, now: datetime | None = None,
                   max_lead_seconds: float | None = None) -> KillSwitchCommand:
        """The command of a whole EventBridge event, which must be the operator's control event
        (a schedule or another rule pointed at the function by mistake is refused, not obeyed),
        ordered by the event's ``time`` and named by its ``id``; anything else raises
        :class:`InvalidMessageError` naming what was wrong.

        Given ``now`` (the reader's clock) and ``max_lead_seconds``, a ``time`` more than that
        far ahead of ``now`` is refused too: ``PutEvents`` lets the sender set ``time``, and a
        command dated ahead would make every genuine command until then stale (an "off" dated
        2100 would hold the switch off against every "on"). The kill_switch entry passes both."""
        if (now is None) != (max_lead_seconds is None):
            raise ValueError("from_event: give now and max_lead_seconds together, or neither")
        name = "KillSwitch EventBridge event"
        if not isinstance(event, Mapping):
            raise InvalidMessageError(name, [FieldProblem("<message>", event, "an EventBridge event is an object")])
        wanted = {"source": CONTROL_EVENT_SOURCE, "detail-type": KILL_SWITCH_DETAIL_TYPE}
        problems = [FieldProblem(key, event.get(key), f"must be {value!r}")
                    for key, value in wanted.items() if event.get(key) != value]
        try:
            issued_at = _EVENT_TIME.validate_python(event.get("time"))
        except ValidationError:
            issued_at = None
            problems.append(FieldProblem("time", event.get("time"), "must be the ISO-8601 time EventBridge "
                                         "stamps on every event, with its time zone (it orders the commands)"))
        if issued_at is not None and now is not None and max_lead_seconds is not None:
            lead = (issued_at - now).total_seconds()
            if lead > max_lead_seconds:
                problems.append(FieldProblem("time", event.get("time"), (
                    f"is {lead:,.0f} s ahead of the clock ({now.isoformat()}; at most "
                    f"{max_lead_seconds:,.0f} s ahead): a command dated ahead would make every "
                    "command issued until then stale")))
        command_id = event.get("id")
        if not (isinstance(command_id, str) and 0 < len(command_id) <= 200):
            problems.append(FieldProblem("id", command_id, "must be the event id EventBridge gives every event "
                                         "(1-200 characters)"))
        detail = event.get("detail") or {}
        if isinstance(detail, Mapping):
            problems += [FieldProblem(f"detail.{key}", detail[key], "is taken from the event's time and id, "
                                      "not from the detail") for key in ("issued_at", "command_id") if key in detail]
        if problems:
            raise InvalidMessageError(name, problems)
        if not isinstance(detail, Mapping):
            return cls.parse(detail)  # names the wrong type
        return cls.parse({**detail, "issued_at": issued_at, "command_id": command_id})

    @field_validator("issued_at")
    @classmethod
    def _whole_seconds(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.replace(microsecond=0)

    @model_validator(mode="after")
    def _reset_only_when_lifting(self) -> KillSwitchCommand:
        # a reset rebases the peak and the day's equity: folded into an "on" it would clear a
        # latched drawdown halt unseen, and a later plain "off" would resume trading
        if self.active and self.reset_breaker:
            raise ValueError("reset_breaker goes with active=false (lifting the switch), not with active=true")
        return self


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def client_order_id(intent: OrderIntent, leg: int = 0) -> str:
    """The order id of leg ``leg`` of an intent: a function of the decision only."""
    return "et" + deterministic_id(
        "order", intent.strategy_id, intent.symbol, intent.timestamp, intent.model_version, leg,
        length=30,
    )


def round_toward_zero(quantity: float, step: float) -> float:
    """``quantity`` rounded toward zero to a multiple of ``step`` (whole shares when step = 1)."""
    if step <= 0 or not math.isfinite(step):
        raise ValueError(f"quantity step must be a finite number > 0, got {step!r}")
    ratio = abs(quantity) / step
    # tolerance for the division's float error: relative too, as 1e-9 of a step is below the float
    # spacing of ratios beyond ~1e7 (-180714.96 + 0.73 at step 0.01 rounded to -180714.22)
    units = math.floor(ratio + 1e-9 + ratio * 1e-12)
    return math.copysign(units * step, quantity) if units else 0.0


def step_multiple(units: int, step: float) -> float:
    """``units`` steps as a clean number: the float nearest to the exact decimal product, where
    ``units * step`` carries float noise (3 × 0.1 is 0.30000000000000004, 6 × 0.1
    0.6000000000000001). ``step`` is taken as written (its shortest repr): 0.1 is one tenth."""
    if step <= 0 or not math.isfinite(step):
        raise ValueError(f"quantity step must be a finite number > 0, got {step!r}")
    exponent = Decimal(repr(step)).as_tuple().exponent
    digits = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return round(units * step, digits) if digits else float(units * step)


def closing_quantity(current: float, step: float) -> float:
    """The order that takes ``current`` to flat: exactly ``-current`` when that is a whole number
    of steps (with a fractional step, 7 × 0.1 is 0.7000000000000001, and an exit of a held 0.7
    rounded to it would cross zero by a float step and no longer count as reducing), else rounded
    toward zero like any other order."""
    if abs(current) <= QUANTITY_EPSILON:  # float residue of legs that net out: already flat
        return 0.0
    rounded = round_toward_zero(-current, step)
    return -current if abs(rounded + current) <= 1e-6 * step else rounded


def target_quantity(target_fraction: float, equity: float, price: float, step: float) -> float:
    """Shares that make ``target_fraction`` of ``equity`` at ``price``, rounded toward zero."""
    if not (math.isfinite(equity) and equity > 0):
        raise ValueError(f"equity must be a finite number > 0, got {equity!r}")
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"price must be a finite number > 0, got {price!r}")
    shares = target_fraction * equity / price
    if not math.isfinite(shares):  # a valid but tiny price (below ~1e-300): no order can say it
        raise DataError(f"{target_fraction!r} of equity {equity!r} at price {price!r} is {shares!r} shares")
    return round_toward_zero(shares, step)


def plan_orders(
    intent: OrderIntent,
    *,
    position: float,
    working: float,
    equity: float,
    step: float,
    now: datetime,
    min_trade_fraction: float = 0.0,
    allocation: float = 1.0,
) -> list[Order]:
    """Orders that move ``position + working`` to the intent's target.

    ``position`` is the signed holding, ``working`` the signed remaining quantity of orders still
    working at the broker, ``allocation`` the fraction of equity budgeted to the symbol: the target
    is a fraction of ``allocation · equity``. A move through zero is split into a closing and an
    opening leg.
    Returns an empty list when the difference is below one ``step``, or — the no-trade band —
    when its notional is below ``min_trade_fraction`` of the symbol's capital (``allocation ·
    equity``, the amount its target is a fraction of; of the whole equity, the band kept a
    50-symbol book from entering any target below half its allocation), unless the target is flat
    or on the other side of zero (exits are never held back).
    With equity at or below zero there is no capital for any position: whatever the intent's
    target, a fraction of no equity is no shares, and the plan is the exit to flat.
    """
    if not (math.isfinite(allocation) and 0.0 < allocation <= 1.0):
        raise ValueError(f"allocation must be a fraction in (0, 1], got {allocation!r}")
    if not math.isfinite(equity):
        raise ValueError(f"equity must be a finite number, got {equity!r}")
    target = (target_quantity(intent.target_position, allocation * equity, intent.reference_price, step)
              if equity > 0 else 0.0)
    current = position + working
    delta = closing_quantity(current, step) if target == 0.0 else round_toward_zero(target - current, step)
    if delta == 0.0:
        return []
    crosses_zero = current != 0.0 and target != 0.0 and (current > 0) != (target > 0)
    exits = target == 0.0 or crosses_zero
    if not exits and abs(delta) * intent.reference_price < min_trade_fraction * allocation * equity:
        return []
    legs: list[float]
    if crosses_zero:
        close = closing_quantity(current, step)
        legs = [q for q in (close, round_toward_zero(delta - close, step)) if q != 0.0]
    else:
        legs = [delta]
    return [
        Order(
            client_order_id=client_order_id(intent, leg),
            intent_id=intent.intent_id,
            strategy_id=intent.strategy_id,
            symbol=intent.symbol,
            side=Side.BUY if qty > 0 else Side.SELL,
            quantity=abs(qty),
            created_at=now,
            updated_at=now,
            decision_time=intent.timestamp,
            decision_price=intent.reference_price,
        )
        for leg, qty in enumerate(legs)
    ]


def working_quantity(orders: list[Order], symbol: str) -> float:
    """Signed remaining quantity of the working orders of ``symbol``."""
    return sum(
        (o.remaining_quantity if o.side is Side.BUY else -o.remaining_quantity)
        for o in orders
        if o.symbol == symbol and o.status in WORKING_STATUSES
    )


# --------------------------------------------------------------------------------------------
# Fills from broker progress
# --------------------------------------------------------------------------------------------


def fill_id(client_order_id: str, cumulative_quantity: float) -> str:
    """Id of the fill that brought an order to ``cumulative_quantity``: stable across re-reads."""
    return f"{client_order_id}@{cumulative_quantity:.8f}"


def fill_from_progress(order: Order, report: BrokerOrder, when: datetime) -> Fill | None:
    """The execution between the stored order and the broker's report, or None if nothing new.

    Brokers report cumulative filled quantity and average price; the increment since the stored
    state is one :class:`Fill` whose price is the increment's own average. Its id is derived from
    the cumulative quantity, so reading the same report twice yields the same fill. Progress
    without an average fill price raises :class:`BrokerReportError` (see :func:`unbookable`).
    """
    if report.client_order_id != order.client_order_id:
        raise ValueError(
            f"report for {report.client_order_id} applied to order {order.client_order_id}"
        )
    increment = report.filled_quantity - order.filled_quantity
    if increment <= QUANTITY_EPSILON:
        return None
    if report.average_fill_price is None:
        raise BrokerReportError(
            order.client_order_id, f"filled_quantity {report.filled_quantity:g} without an average fill price"
        )
    old_value = order.filled_quantity * (order.average_fill_price or 0.0)
    new_value = report.filled_quantity * report.average_fill_price
    price = (new_value - old_value) / increment
    if not (math.isfinite(price) and price > 0):
        price = report.average_fill_price
    return Fill(
        fill_id=fill_id(order.client_order_id, report.filled_quantity),
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        quantity=increment,
        price=price,
        fee=max(report.fees_paid - order.fees_paid, 0.0),
        timestamp=when,
    )


def report_is_behind(order: Order, report: BrokerOrder) -> bool:
    """True when the broker's report is older than what the stored order already records: less
    filled, or working again after the order finished. Applied, it would reopen a filled order
    and its next report would book the same fill twice."""
    if report.filled_quantity + QUANTITY_EPSILON < order.filled_quantity:
        return True
    return order.status not in WORKING_STATUSES and report.status in WORKING_STATUSES


def order_after_report(order: Order, report: BrokerOrder, now: datetime) -> Order:
    """The stored order updated with the broker's status, progress and ids."""
    status = report.status
    if status is OrderStatus.PENDING:  # the broker has it: it is at least submitted
        status = OrderStatus.SUBMITTED
    return order.model_copy(
        update={
            "status": status,
            "filled_quantity": min(report.filled_quantity, order.quantity),
            "average_fill_price": report.average_fill_price,
            "fees_paid": max(report.fees_paid, order.fees_paid),
            "broker_order_id": report.broker_order_id,
            "reject_reason": report.reject_reason or order.reject_reason,
            "updated_at": now,
        }
    )


def position_after_fill(position: Position | None, fill: Fill) -> Position:
    """Apply ``fill`` to ``position`` (a flat position when there is none yet)."""
    return (position or Position(symbol=fill.symbol)).apply(fill)


def report_matches(order: Order, report: BrokerOrder) -> list[str]:
    """What differs between our order and the broker's order of the same id (empty = same)."""
    problems = []
    if report.symbol != order.symbol:
        problems.append(f"symbol {order.symbol} here, {report.symbol} at the broker")
    if report.side is not order.side:
        problems.append(f"side {order.side.value} here, {report.side.value} at the broker")
    if abs(report.quantity - order.quantity) > QUANTITY_EPSILON:
        problems.append(f"quantity {order.quantity} here, {report.quantity} at the broker")
    return problems


def describe(order: Order) -> dict[str, Any]:
    """A compact JSON-able description (logs, handler results)."""
    return {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "quantity": order.quantity,
        "status": order.status.value,
        "filled_quantity": order.filled_quantity,
        "reject_code": order.reject_code,
    }
