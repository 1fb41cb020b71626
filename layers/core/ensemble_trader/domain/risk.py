"""Pre-trade risk engine, circuit breaker and kill switch (pure: pydantic and the standard library).

The checks follow the controls SEC Rule 15c3-5 (market access) requires of a broker-dealer and
the pre-trade limits the FIA recommends for automated trading:

========================  ==================================================================
check                     rejects an order when ...
========================  ==================================================================
kill switch               the operator's kill switch is on (EventBridge event or DynamoDB flag)
trading state             the breaker is HALTED, or REDUCING and the order adds exposure
symbol halt               reconciliation could not account for the symbol (fail closed)
restricted list           the symbol is on the restricted list
order sanity              quantity or decision price is not a finite positive number
reference price           the independent reference is missing, zero/NaN, older than allowed, or
                          dated further ahead of the clock than an intent may be
price collar              the order's price deviates from the reference by more than the collar
                          (a fraction < 1, the boundary itself allowed on both sides) *and* the
                          order adds exposure
max order quantity        the quantity exceeds the per-order limit
max order notional        quantity x price exceeds the per-order notional limit
max position              the potential position (held + working + order) would exceed the
                          per-symbol quantity or notional limit *and* the order adds exposure
gross exposure            the sum of |position x price| over all symbols would exceed the limit
                          *and* the order adds exposure
duplicate                 the same client order id, or the same symbol/side/quantity (from another
                          intent) within the duplicate window
throttle                  too many orders in the sliding window, per symbol or overall
========================  ==================================================================

Orders that reduce exposure are never blocked by the price collar or the position and
gross-exposure limits (a breach must stay repairable, and an exit on a bar that gaps past the
collar must go out on that bar; a reducing order's size is bounded by the position, so a wrong
price can at worst reduce it further), but every other check applies to them. One larger than the per-order
quantity or notional limit is cut down to it (:meth:`RiskEngine.cut_to_order_limits`, which the
router applies before the check) rather than rejected, so an exit goes out in parts over bars.

Circuit breaker: the trading state moves ACTIVE → REDUCING (only risk-reducing orders) → HALTED
as the daily loss (against the equity at the start of the day) or the drawdown (against the peak
equity) crosses its soft and hard thresholds, and to HALTED when equity is zero or negative
(every target, a fraction of equity, is then flat: intents plan the exit, which HALTED refuses
until an operator resets the breaker; after that reset, while equity stays at or below zero,
the state is REDUCING — the exit goes out, nothing adds exposure). A
loss is a fraction of a positive baseline: a day that starts at or below zero, or a reset there,
keeps no baseline until equity is positive again, and that equity becomes it (no loss is measured
against nothing).
Within a day the state never relaxes; at a day roll it is re-evaluated. A drawdown halt, and a
halt for equity at or below zero, is latched until an operator resets it.

Every rejection carries a :class:`RejectReason` code and a message with the numbers involved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from ensemble_trader.domain.models import SYMBOL_PATTERN, Order, Position, Side
from ensemble_trader.domain.orders import KillSwitchCommand, step_multiple


class RejectReason(StrEnum):
    """Why an order (or an intent) was not sent to the broker."""

    KILL_SWITCH = "KILL_SWITCH"
    HALTED = "HALTED"
    REDUCING_ONLY = "REDUCING_ONLY"
    SYMBOL_HALTED = "SYMBOL_HALTED"
    RESTRICTED_SYMBOL = "RESTRICTED_SYMBOL"
    INVALID_ORDER = "INVALID_ORDER"
    REFERENCE_MISSING = "REFERENCE_MISSING"
    REFERENCE_INVALID = "REFERENCE_INVALID"
    REFERENCE_STALE = "REFERENCE_STALE"
    PRICE_COLLAR = "PRICE_COLLAR"
    MAX_ORDER_QUANTITY = "MAX_ORDER_QUANTITY"
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    MAX_POSITION = "MAX_POSITION"
    MAX_GROSS_EXPOSURE = "MAX_GROSS_EXPOSURE"
    THROTTLE_SYMBOL = "THROTTLE_SYMBOL"
    THROTTLE_GLOBAL = "THROTTLE_GLOBAL"
    DUPLICATE_ORDER = "DUPLICATE_ORDER"
    # Intent-level and broker-level outcomes, reported with the same codes.
    STALE_INTENT = "STALE_INTENT"
    FUTURE_INTENT = "FUTURE_INTENT"
    MALFORMED_INTENT = "MALFORMED_INTENT"
    INTENT_CONFLICT = "INTENT_CONFLICT"
    BROKER_REJECTED = "BROKER_REJECTED"
    NOT_AT_BROKER = "NOT_AT_BROKER"
    # A flip's opening leg, held back because its closing leg did not go out in full.
    CLOSING_LEG_INCOMPLETE = "CLOSING_LEG_INCOMPLETE"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class RiskLimits(BaseModel):
    """Pre-trade limits and breaker thresholds (the runtime reads them from ``ET_RISK_*``).

    Money amounts are in the account currency; loss and drawdown thresholds are fractions of
    equity; every number must be finite (an infinite limit would check nothing). ``clock`` chooses the time the time-based checks (reference age, throttle and
    duplicate windows, day boundaries) use: ``event``, the intent's bar time (the default, so a
    replay of old bars and live trading decide alike on the same data; the in-process backtest
    stops before this stage), or ``wall``. Live
    deployments also set ``max_intent_age_seconds``, which compares the bar time with the wall
    clock and refuses intents that arrive late.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # an inf limit checks nothing

    max_order_quantity: float = Field(default=50_000.0, gt=0)
    max_order_notional: float = Field(default=2_500_000.0, gt=0)
    max_position_quantity: float = Field(default=100_000.0, gt=0)
    max_position_notional: float = Field(default=2_500_000.0, gt=0)
    max_gross_exposure: float = Field(default=4_000_000.0, gt=0)
    price_collar: float = Field(
        default=0.10, gt=0, lt=1, description="max |price/reference - 1|, a fraction (0.10 = 10 %)"
    )
    max_reference_age_seconds: float = Field(default=7 * 86_400.0, gt=0)
    throttle_window_seconds: float = Field(default=1.0, gt=0)
    max_orders_per_symbol: int = Field(default=5, ge=1)
    max_orders_global: int = Field(default=50, ge=1)
    duplicate_window_seconds: float = Field(default=5.0, ge=0)
    restricted_symbols: frozenset[str] = frozenset()
    daily_loss_reduce: float = Field(default=0.03, gt=0, lt=1)
    daily_loss_halt: float = Field(default=0.06, gt=0, lt=1)
    drawdown_reduce: float = Field(default=0.15, gt=0, lt=1)
    drawdown_halt: float = Field(default=0.25, gt=0, lt=1)
    clock: Literal["wall", "event"] = "event"
    max_intent_age_seconds: float | None = Field(
        default=None, gt=0, description="reject intents older than this (wall clock); None = off"
    )
    max_intent_lead_seconds: float = Field(
        default=300.0, gt=0, description="reject intents dated further ahead of the wall clock than this"
    )

    @field_validator("restricted_symbols", mode="before")
    @classmethod
    def _normalise_symbols(cls, v: object) -> object:
        """Every entry stripped and upper-cased (symbols are upper case: a 'gme' would never match
        GME), whether given as a comma-separated string or as a list, tuple or set (the JSON list
        of ``ET_RISK_RESTRICTED_SYMBOLS``); an entry that is not a symbol is refused by name."""
        if isinstance(v, str):
            entries: list[object] = [s for s in v.split(",") if s.strip()]
        elif isinstance(v, list | tuple | set | frozenset):
            entries = list(v)
        else:
            return v  # pydantic reports the wrong type
        symbols = set()
        for entry in entries:
            symbol = entry.strip().upper() if isinstance(entry, str) else None
            if symbol is None or not re.match(SYMBOL_PATTERN, symbol):
                raise ValueError(
                    f"restricted_symbols: {entry!r} is not a symbol (an upper-case ticker such as SPX, "
                    "BRK.B, BTC-USD, ^GSPC; case and surrounding blanks do not matter)"
                )
            symbols.add(symbol)
        return frozenset(symbols)

    @model_validator(mode="after")
    def _halt_at_or_above_reduce(self) -> RiskLimits:
        for soft, hard in (("daily_loss_reduce", "daily_loss_halt"), ("drawdown_reduce", "drawdown_halt")):
            if getattr(self, hard) < getattr(self, soft):
                raise ValueError(f"{hard}={getattr(self, hard)} must be >= {soft}={getattr(self, soft)}")
        return self


class Mark(BaseModel):
    """The last price seen for a symbol and the one before it (the reference of a redelivery)."""

    price: float
    timestamp: datetime
    previous_price: float | None = None
    previous_timestamp: datetime | None = None


class RecentOrder(BaseModel):
    """An order that passed the checks, remembered for the throttle and duplicate checks."""

    at: float  # seconds since the epoch, on the engine's clock
    symbol: str
    side: Side
    quantity: float
    client_order_id: str
    intent_id: str = ""  # legs of one intent (close + open) are not duplicates of each other


class SwitchAnnouncement(BaseModel):
    """A kill-switch command saved in the risk state whose events are not known to be published.

    The save that applies a command (:func:`kill_switch_verdict`: ``APPLY``) stores one, and the
    delivery that saved it removes it once ``KillSwitchChanged`` — and the ``CircuitBreakerTripped``
    of the breaker reset the command made (``reset_*``; None when it reset nothing) — went out.
    While it stands, a later delivery of the same command and the scheduled reconciliation publish
    what it names again, once no other delivery can still be publishing it (see
    :meth:`~ensemble_trader.runtime.orders.OrderRouter.apply_kill_switch`). ``breaker_events`` is
    the state's count of breaker events at the save: the reset is announced again only while no
    other breaker event followed it (a later one announced the breaker as it then stood).

    A delivery publishes it only while it holds the claim: the save that applied the command holds
    it from ``saved_at``; any other delivery first saves the mark with ``claimed_at`` set to its
    own time, conditionally on the state's version, and publishes only when that save lands. A
    claim lapses after the wait a delivery may still be running (:meth:`claimed_until`).
    ``switch_announced``: its ``KillSwitchChanged`` went out and only a reset it carries is left.
    ``token``: a random token of the delivery that saved or last claimed it, so that a delivery
    whose conditional save was reported failed although it landed (a retried write whose first
    answer was lost) finds its own mark and knows it holds it. ``saved_at`` and ``claimed_at``
    are AWS's time where the store offers it (every router compares them on the same clock). A
    state saved before these fields existed reads as unclaimed since the save, not announced,
    and held by no delivery (an empty token)."""

    model_config = ConfigDict(frozen=True)

    command_id: str
    active: bool
    reason: str
    saved_at: AwareDatetime
    breaker_events: int = Field(ge=0)
    reset_previous: TradingState | None = None
    reset_current: TradingState | None = None
    reset_reason: str = ""
    reset_equity: float = 0.0
    claimed_at: AwareDatetime | None = None
    switch_announced: bool = False
    token: str = ""

    @classmethod
    def of(cls, state: RiskState, reset: BreakerTransition | None, saved_at: datetime,
           pending: SwitchAnnouncement | None = None, token: str = "") -> SwitchAnnouncement:
        """What remains to be announced once ``state`` — a command just applied to it, and its
        breaker ``reset`` if any — is saved. A reset of an earlier command still ``pending`` and
        still the breaker's last move (no breaker event since) is carried, when this command
        reset nothing itself: its announcement would otherwise be lost with the mark it replaces.
        Whether the delivery saving this mark may publish a carried reset at once is the claim
        rule's (the earlier delivery may still be publishing it): see :meth:`claimed_until`.
        ``token``: the saving delivery's (see the class)."""
        if reset is None and pending is not None and pending.reset() is not None \
                and pending.breaker_events == state.breaker_events:
            reset = pending.reset()
        fields: dict[str, Any] = {}
        if reset is not None:
            fields = {"reset_previous": reset.previous, "reset_current": reset.current,
                      "reset_reason": reset.reason, "reset_equity": reset.equity}
        return cls(command_id=state.kill_switch_command_id, active=state.kill_switch, reason=state.kill_switch_reason,
                   saved_at=saved_at, breaker_events=state.breaker_events, token=token, **fields)

    def reset(self) -> BreakerTransition | None:
        """The breaker reset to announce (a reset rebases the losses: they are 0)."""
        if self.reset_previous is None or self.reset_current is None:
            return None
        return BreakerTransition(self.reset_previous, self.reset_current, self.reset_reason, self.reset_equity,
                                 0.0, 0.0)

    def claimed_until(self, wait_seconds: float) -> datetime:
        """When the last claim on this mark lapses: ``wait_seconds`` (the longest a delivery may
        run) after the later of its save and its last claim. Until then the delivery holding
        the claim may still be publishing it, and nobody else publishes it."""
        since = self.saved_at if self.claimed_at is None else max(self.saved_at, self.claimed_at)
        return since + timedelta(seconds=wait_seconds)

    def claimed(self, at: datetime, token: str = "") -> SwitchAnnouncement:
        """This mark claimed at ``at`` by a delivery about to publish it (its ``token``)."""
        return self.model_copy(update={"claimed_at": at, "token": token})

    def without_reset(self) -> SwitchAnnouncement:
        """This mark with no reset to announce."""
        return self.model_copy(update={"reset_previous": None, "reset_current": None, "reset_reason": "",
                                       "reset_equity": 0.0})

    def same_switch(self, other: SwitchAnnouncement) -> bool:
        """Whether ``other`` names the switch of the same save (its command as saved then)."""
        return (self.command_id, self.active, self.reason, self.saved_at) == \
            (other.command_id, other.active, other.reason, other.saved_at)

    def same_reset(self, other: SwitchAnnouncement) -> bool:
        """Whether ``other`` carries the same breaker reset (each reset is a breaker event of its
        own, so the count at it and the transition name it, also once another mark carries it)."""
        return self.reset() is not None and self.reset() == other.reset() \
            and self.breaker_events == other.breaker_events

    def settled(self, done: SwitchAnnouncement, switch: bool, reset: bool) -> SwitchAnnouncement | None:
        """This (stored) mark once a delivery settled ``done``: its switch (``switch``) and its
        reset (``reset``) published or no longer to be announced. Only what names the same save
        or the same reset is settled — a newer command's mark keeps its own switch, and loses a
        reset it carried of ``done``'s —; None when nothing is left to announce."""
        mark = self
        if switch and not mark.switch_announced and mark.same_switch(done):
            mark = mark.model_copy(update={"switch_announced": True})
        if reset and done.same_reset(mark):
            mark = mark.without_reset()
        if mark.switch_announced and mark.reset() is None:
            return None
        return mark

    def still_current(self, state: RiskState) -> tuple[bool, bool]:
        """Whether ``state`` still holds what this has left to announce: (the switch as the command
        set it, not announced yet; the breaker as its reset left it — no breaker event since)."""
        switch = (not self.switch_announced and state.kill_switch_command_id == self.command_id
                  and state.kill_switch == self.active and state.kill_switch_reason == self.reason)
        return switch, self.reset() is not None and state.breaker_events == self.breaker_events


class RiskState(BaseModel):
    """What the risk engine remembers between invocations (one DynamoDB item, versioned)."""

    model_config = ConfigDict(validate_assignment=False)

    version: int = 0
    trading_state: TradingState = TradingState.ACTIVE
    state_reason: str = ""
    breaker_latched: bool = False
    kill_switch: bool = False
    kill_switch_reason: str = ""
    # when the command that last set the switch was issued, and its id (an EventBridge event's
    # time and id, the CLI's clock and its own id): an older command is stale (kill_switch_verdict)
    kill_switch_at: AwareDatetime | None = None
    kill_switch_command_id: str = ""
    # the broker the stage's order router trades ("paper", "alpaca-paper", "alpaca-live"; "" for
    # a state no such router has saved yet): written by the deployed router at every save, so an
    # operator's command run elsewhere can refuse to cancel or reconcile at another broker
    broker: str = ""
    halted_symbols: dict[str, str] = Field(default_factory=dict)
    # the reconciliation run that last set or confirmed each halt (an id unique to the run): a
    # run lifts only a halt that is still as it was when the run began (:meth:`halt`), so a halt
    # set or confirmed by a run that began later stands. A halt without one was set before this
    # field existed, or by hand; an entry of a symbol not halted is dropped when the state is read
    halt_runs: dict[str, str] = Field(default_factory=dict)
    day: date | None = None
    day_start_equity: float | None = None
    peak_equity: float | None = None
    equity: float | None = None
    breaker_resets: int = 0  # operator resets so far: tells a merge that one happened meanwhile
    # CircuitBreakerTripped events published about this breaker so far (each transition of
    # update_breaker and reset_breaker, each correction of a merged save: every change of the
    # stored state or latch is one of them): tells a merge whether the other writer published one
    # since the load, and so whether the stored breaker state is the last one announced
    breaker_events: int = 0
    # the last kill-switch command applied whose events are not known to be published (None:
    # announced, or saved by code that did not record it): see SwitchAnnouncement
    unannounced: SwitchAnnouncement | None = None
    # an operator reset the breaker while equity was at or below zero: until equity is positive
    # again, equity there means REDUCING (exits only) instead of a latched HALTED
    exits_only_below_zero: bool = False
    marks: dict[str, Mark] = Field(default_factory=dict)
    recent: list[RecentOrder] = Field(default_factory=list)
    # the kill-switch attributes as the store read them (opaque here; None: not read from a
    # store): a kill-switch save is conditional on them still being so, since a flip by hand
    # (update-item of the flag) need not bump ``version`` — see :attr:`switch_as_stored`
    _switch_as_stored: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _halt_runs_of_halted_symbols(self) -> RiskState:
        for symbol in [s for s in self.halt_runs if s not in self.halted_symbols]:
            del self.halt_runs[symbol]
        return self

    def halt(self, symbol: str) -> tuple[str, str] | None:
        """The halt of ``symbol`` as one value — its reason and the run that last set or confirmed
        it (``""``: not recorded) — or None when it is not halted. Two reads of a halt compare
        equal only if no run set or confirmed it in between (each run has its own id), also when
        the reason reads the same."""
        if symbol not in self.halted_symbols:
            return None
        return self.halted_symbols[symbol], self.halt_runs.get(symbol, "")

    @property
    def switch_as_stored(self) -> Any:
        """The kill-switch attributes as the store that loaded this state read them, in the
        store's own form (None: the state was not loaded from a store). Set by the store's load
        and after its kill-switch save; the store writes the switch only if they are unchanged.
        Copies of the state (``model_copy``) keep it."""
        return self._switch_as_stored

    @switch_as_stored.setter
    def switch_as_stored(self, value: Any) -> None:
        self._switch_as_stored = value

    @property
    def effective_state(self) -> TradingState:
        """HALTED while the kill switch is on, else the breaker's state."""
        return TradingState.HALTED if self.kill_switch else self.trading_state

    def losses(self) -> tuple[float, float]:
        """``(daily loss, drawdown)`` of the last equity the breaker saw, as fractions ≥ 0: against
        the equity at the start of the day and against the peak (0 before any equity was seen).

        A loss is a fraction of a positive baseline (it may exceed 1: from 100,000 to -20,000 is
        a loss of 1.2). A baseline at or below zero has nothing to lose a fraction of, so against
        it no loss is measured (0), rather than a made-up 100 %: equity at or below zero halts by
        its own rule, and :meth:`RiskEngine.update_breaker` never keeps such a baseline — the
        first positive equity after it becomes the baseline."""
        if self.equity is None:
            return 0.0, 0.0
        start = self.day_start_equity if self.day_start_equity is not None else self.equity
        peak = self.peak_equity if self.peak_equity is not None else self.equity
        daily_loss = max(0.0, (start - self.equity) / start) if start > 0 else 0.0
        drawdown = max(0.0, (peak - self.equity) / peak) if peak > 0 else 0.0
        return daily_loss, drawdown


@dataclass(frozen=True, slots=True)
class Reference:
    """An independent reference price and when it was observed."""

    price: float
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class OrderContext:
    """What the engine needs to know besides the order.

    ``position`` is the symbol's held quantity plus the signed remaining quantity of its working
    orders (the potential position before this order); ``held`` the quantity actually held (None:
    the same). A working order may never execute (a submit that timed out and never arrived, an
    expiry, a cancel), so the limits hold for both: an order counts as reducing only if it
    reduces both, and the position limits apply to the larger of the two positions after it.
    ``other_gross`` is the gross notional of every other symbol (the larger of |held| and
    |potential| quantity, x mark).
    """

    now: datetime
    reference: Reference | None
    position: float
    other_gross: float
    held: float | None = None


@dataclass(frozen=True, slots=True)
class RiskDecision:
    accepted: bool
    reason: RejectReason | None = None
    message: str = ""


ACCEPTED = RiskDecision(True)


@dataclass(frozen=True, slots=True)
class OrderCut:
    """An order that reduces exposure, cut down to the per-order limits: its new ``quantity``,
    the limit that bound (``MAX_ORDER_QUANTITY`` or ``MAX_ORDER_NOTIONAL``) and a message."""

    quantity: float
    reason: RejectReason
    message: str


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """A change of trading state, with the figures that caused it. ``latched``: the halt holds
    until an operator resets it (a drawdown halt, equity at or below zero); a daily-loss halt that
    becomes latched is a transition too (HALTED to HALTED): it no longer lifts at the day roll.
    ``correction``: one of a merged save's re-announcements of the stored state
    (:func:`merge_corrections`), not a move of the breaker."""

    previous: TradingState
    current: TradingState
    reason: str
    equity: float
    daily_loss: float
    drawdown: float
    latched: bool = False
    correction: bool = False


COLLAR_TOLERANCE = 1e-9
"""Relative tolerance of the collar's boundary: 110 against 100 is 0.10000000000000009 away in
floats, and must pass a 10 % collar exactly as 90 does."""

ORDER_LIMIT_TOLERANCE = 1e-9
"""Relative tolerance of the per-order quantity and notional limits: a cut of 3 steps of 0.1
under a 0.3 limit is 0.30000000000000004 in floats, and 0.3 shares at 100 under a 30 notional
limit 30.000000000000004; both are at the limit, not over it."""

FLAT_EPSILON = 1e-9
"""A position this close to zero is flat (a fractional step's float arithmetic leaves ~1e-16)."""


def reduces_exposure(position: float, signed_quantity: float) -> bool:
    """True if the order moves the position toward zero without crossing it."""
    after = position + signed_quantity
    return abs(after) < abs(position) and (abs(after) <= FLAT_EPSILON or (after > 0) == (position > 0))


class RiskEngine:
    """Pre-trade checks and the breaker state machine over a :class:`RiskState`.

    ``check`` is a pure function of the order, the state and the context; ``record`` remembers an
    accepted order (throttle and duplicate windows); ``update_breaker`` moves the trading state.
    """

    def __init__(self, limits: RiskLimits | None = None):
        self.limits = limits or RiskLimits()

    # -- pre-trade ---------------------------------------------------------------------------

    def check(self, order: Order, state: RiskState, ctx: OrderContext) -> RiskDecision:
        lim = self.limits
        symbol = order.symbol
        signed = order.signed_quantity
        held = ctx.position if ctx.held is None else ctx.held
        reducing = reduces_exposure(ctx.position, signed) and reduces_exposure(held, signed)

        if state.kill_switch:
            return _reject(RejectReason.KILL_SWITCH, f"kill switch on: {state.kill_switch_reason}")
        if state.trading_state is TradingState.HALTED:
            return _reject(RejectReason.HALTED, f"trading HALTED: {state.state_reason}")
        if state.trading_state is TradingState.REDUCING and not reducing:
            return _reject(
                RejectReason.REDUCING_ONLY,
                f"trading REDUCING ({state.state_reason}): {order.side.value} {order.quantity:g} "
                f"{symbol} would not reduce both the held position {held:g} and the position with "
                f"working orders {ctx.position:g}",
            )
        if symbol in state.halted_symbols:
            return _reject(
                RejectReason.SYMBOL_HALTED, f"{symbol} halted: {state.halted_symbols[symbol]}"
            )
        if symbol in lim.restricted_symbols:
            return _reject(RejectReason.RESTRICTED_SYMBOL, f"{symbol} is on the restricted list")

        price = order.decision_price
        if not (math.isfinite(order.quantity) and order.quantity > 0):
            return _reject(RejectReason.INVALID_ORDER, f"quantity {order.quantity!r} is not > 0")
        if price is None or not (math.isfinite(price) and price > 0):
            return _reject(RejectReason.INVALID_ORDER, f"decision price {price!r} is not > 0")

        ref = ctx.reference
        if ref is None:
            return _reject(RejectReason.REFERENCE_MISSING, f"no reference price for {symbol}")
        if not (math.isfinite(ref.price) and ref.price > 0):
            return _reject(
                RejectReason.REFERENCE_INVALID, f"reference price {ref.price!r} for {symbol}"
            )
        age = (ctx.now - ref.timestamp).total_seconds()
        if age > lim.max_reference_age_seconds:
            return _reject(
                RejectReason.REFERENCE_STALE,
                f"reference for {symbol} is {age:,.0f} s old (limit "
                f"{lim.max_reference_age_seconds:,.0f} s)",
            )
        if -age > lim.max_intent_lead_seconds:  # dated ahead: at most as far as an intent may be
            return _reject(
                RejectReason.REFERENCE_STALE,
                f"reference for {symbol} is dated {-age:,.0f} s ahead of the clock (limit "
                f"{lim.max_intent_lead_seconds:,.0f} s ahead)",
            )
        deviation = abs(price - ref.price) / ref.price
        # an order that reduces exposure is not collared: its size is bounded by the position, so
        # a wrong price can at worst reduce it further, and an exit on a bar that gaps past the
        # collar (a crash) must go out on that bar, not after it
        if not reducing and deviation > lim.price_collar * (1.0 + COLLAR_TOLERANCE):
            return _reject(
                RejectReason.PRICE_COLLAR,
                f"price {price:g} is {deviation:.2%} from reference {ref.price:g} "
                f"(collar {lim.price_collar:.2%})",
            )

        if not _within(order.quantity, lim.max_order_quantity):
            return _reject(
                RejectReason.MAX_ORDER_QUANTITY,
                f"quantity {order.quantity:g} > max {lim.max_order_quantity:g}",
            )
        notional = order.quantity * price
        if not _within(notional, lim.max_order_notional):
            return _reject(
                RejectReason.MAX_ORDER_NOTIONAL,
                f"notional {notional:,.2f} > max {lim.max_order_notional:,.2f}",
            )

        after = max(ctx.position + signed, held + signed, key=abs)
        if not reducing:
            if abs(after) > lim.max_position_quantity:
                return _reject(
                    RejectReason.MAX_POSITION,
                    f"position {symbol} would be {after:g} (max {lim.max_position_quantity:g})",
                )
            if abs(after) * price > lim.max_position_notional:
                return _reject(
                    RejectReason.MAX_POSITION,
                    f"position {symbol} would be worth {abs(after) * price:,.2f} "
                    f"(max {lim.max_position_notional:,.2f})",
                )
            gross = ctx.other_gross + abs(after) * price
            if gross > lim.max_gross_exposure:
                return _reject(
                    RejectReason.MAX_GROSS_EXPOSURE,
                    f"gross exposure would be {gross:,.2f} (max {lim.max_gross_exposure:,.2f})",
                )

        now_s = ctx.now.timestamp()
        window_start = now_s - lim.throttle_window_seconds
        dup_start = now_s - lim.duplicate_window_seconds
        n_symbol = n_global = 0
        for r in state.recent:
            if r.client_order_id == order.client_order_id:
                return _reject(
                    RejectReason.DUPLICATE_ORDER, f"{order.client_order_id} was already accepted"
                )
            if r.at > window_start:
                n_global += 1
                if r.symbol == symbol:
                    n_symbol += 1
            if (
                r.at > dup_start
                and r.symbol == symbol
                and r.side is order.side
                and abs(r.quantity - order.quantity) < 1e-9
                and r.intent_id != order.intent_id
            ):
                return _reject(
                    RejectReason.DUPLICATE_ORDER,
                    f"same {order.side.value} {order.quantity:g} {symbol} as "
                    f"{r.client_order_id} {now_s - r.at:.3f} s ago",
                )
        if n_symbol >= lim.max_orders_per_symbol:
            return _reject(
                RejectReason.THROTTLE_SYMBOL,
                f"{n_symbol} orders in {symbol} in the last {lim.throttle_window_seconds:g} s "
                f"(max {lim.max_orders_per_symbol})",
            )
        if n_global >= lim.max_orders_global:
            return _reject(
                RejectReason.THROTTLE_GLOBAL,
                f"{n_global} orders in the last {lim.throttle_window_seconds:g} s "
                f"(max {lim.max_orders_global})",
            )
        return ACCEPTED

    def cut_to_order_limits(self, order: Order, ctx: OrderContext, step: float) -> OrderCut | None:
        """The cut that fits an order reducing exposure into the per-order quantity and notional
        limits, rounded toward zero to ``step`` (a clean multiple of it, see :func:`step_multiple`,
        the limits compared with :data:`ORDER_LIMIT_TOLERANCE` as in :meth:`check`); None when it
        needs none or cannot have one.

        An exit, a reduction or a flip's closing leg larger than a per-order limit would be
        rejected on every bar although the position itself is within limits: cut down, part of it
        goes now and the next intent, planned from the position, sends more. "Reducing" means what
        it means to :meth:`check` (reduces the held and the potential position). An order that
        fits, adds exposure (rejected by :meth:`check`), is invalid, or of which not one ``step``
        fits is not cut.
        """
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"quantity step must be a finite number > 0, got {step!r}")
        lim = self.limits
        price, quantity = order.decision_price, order.quantity
        if price is None or not (math.isfinite(price) and price > 0 and math.isfinite(quantity) and quantity > 0):
            return None

        def fits(q: float) -> bool:  # the per-order checks of check(), as they are written there
            return _within(q, lim.max_order_quantity) and _within(q * price, lim.max_order_notional)

        held = ctx.position if ctx.held is None else ctx.held
        signed = order.signed_quantity
        if fits(quantity) or not (reduces_exposure(ctx.position, signed) and reduces_exposure(held, signed)):
            return None
        room = min(lim.max_order_quantity, lim.max_order_notional / price)
        units = math.floor(min(room, quantity) / step + 1e-9)
        while units > 0 and not fits(step_multiple(units, step)):  # float rounding may overshoot by a step
            units -= 1
        if units == 0:
            return None
        cut = step_multiple(units, step)  # 0.3, not 3 x 0.1 = 0.30000000000000004
        if lim.max_order_quantity <= lim.max_order_notional / price:
            reason, limit = RejectReason.MAX_ORDER_QUANTITY, f"max {lim.max_order_quantity:g} shares an order"
        else:
            reason, limit = (
                RejectReason.MAX_ORDER_NOTIONAL,
                f"max {lim.max_order_notional:,.2f} an order, at {price:g}",
            )
        return OrderCut(
            cut,
            reason,
            f"{order.side.value} {quantity:g} {order.symbol} reduces exposure and is cut to {cut:g} "
            f"({reason.value}: {limit}); the next intent plans the rest from the position",
        )

    def record(self, order: Order, state: RiskState, now: datetime) -> None:
        """Remember an accepted order; forget those older than every window."""
        now_s = now.timestamp()
        horizon = now_s - max(self.limits.throttle_window_seconds, self.limits.duplicate_window_seconds)
        state.recent = [r for r in state.recent if r.at > horizon]
        state.recent.append(
            RecentOrder(
                at=now_s,
                symbol=order.symbol,
                side=order.side,
                quantity=order.quantity,
                client_order_id=order.client_order_id,
                intent_id=order.intent_id,
            )
        )

    # -- circuit breaker ---------------------------------------------------------------------

    def update_breaker(self, state: RiskState, equity: float, today: date) -> BreakerTransition | None:
        """Feed the current equity; move the trading state; return the transition if any."""
        if not math.isfinite(equity):
            raise ValueError(f"equity must be finite, got {equity!r}")
        # only a later day starts a new one: symbols' intents interleave, and an intent of another
        # symbol stamped the day before must not reset the day's loss or relax the state
        new_day = state.day is None or today > state.day
        if new_day:
            state.day = today
            state.day_start_equity = state.equity if state.equity is not None else equity
        state.equity = equity
        state.peak_equity = equity if state.peak_equity is None else max(state.peak_equity, equity)
        # a baseline at or below zero (a day that starts there, a peak after a reset there) measures
        # no loss: none is kept until equity is positive, and then that equity is the baseline
        state.day_start_equity = _positive(state.day_start_equity) or _positive(equity)
        state.peak_equity = _positive(state.peak_equity) or _positive(equity)
        if equity > 0:
            state.exits_only_below_zero = False  # a later fall to zero or below halts again
        daily_loss, drawdown = state.losses()

        if state.breaker_latched:
            return None
        desired, why, latches = self.desired_state(equity, daily_loss, drawdown, state.exits_only_below_zero)
        current = state.trading_state
        if not new_day and _SEVERITY[desired] < _SEVERITY[current]:
            return None  # within a day the state never relaxes
        if latches:
            state.breaker_latched = True
        if desired is current and not latches:
            return None
        state.trading_state = desired
        state.state_reason = why  # already HALTED (a daily loss) and now latched: the latch says why
        state.breaker_events += 1  # the caller publishes the transition
        return BreakerTransition(current, desired, why, equity, daily_loss, drawdown, latched=latches)

    def desired_state(
        self, equity: float, daily_loss: float, drawdown: float, exits_only_below_zero: bool = False
    ) -> tuple[TradingState, str, bool]:
        """The trading state these figures call for, why, and whether it latches (a drawdown
        halt, a halt for equity at or below zero) — before the rule that a state never relaxes
        within a day (:meth:`update_breaker` applies it)."""
        lim = self.limits
        if equity <= 0 and exits_only_below_zero:  # the operator reset the halt: exits only
            desired, why = TradingState.REDUCING, _exits_only_reason(equity)
        elif equity <= 0:  # nothing left to trade with: every target (a fraction of equity) is flat
            desired, why = TradingState.HALTED, f"equity {equity:,.2f} is not positive"
        elif daily_loss >= lim.daily_loss_halt:
            desired, why = TradingState.HALTED, f"daily loss {daily_loss:.2%} >= {lim.daily_loss_halt:.2%}"
        elif drawdown >= lim.drawdown_halt:
            desired, why = TradingState.HALTED, f"drawdown {drawdown:.2%} >= {lim.drawdown_halt:.2%}"
        elif daily_loss >= lim.daily_loss_reduce:
            desired, why = (
                TradingState.REDUCING,
                f"daily loss {daily_loss:.2%} >= {lim.daily_loss_reduce:.2%}",
            )
        elif drawdown >= lim.drawdown_reduce:
            desired, why = TradingState.REDUCING, f"drawdown {drawdown:.2%} >= {lim.drawdown_reduce:.2%}"
        else:
            desired, why = TradingState.ACTIVE, "within limits"
        latches = desired is TradingState.HALTED and (drawdown >= lim.drawdown_halt or equity <= 0)
        if latches and equity > 0 and daily_loss >= lim.daily_loss_halt:  # the daily branch named it first
            why = f"drawdown {drawdown:.2%} >= {lim.drawdown_halt:.2%} (latched; {why})"
        return desired, why, latches

    @staticmethod
    def reset_breaker(state: RiskState, reason: str) -> BreakerTransition | None:
        """Operator reset: ACTIVE again, the peak and the day's start rebased to the current
        equity — when it is positive; at or below zero there is no baseline until it is (see
        :meth:`RiskState.losses`), and the state is REDUCING instead: the position can be exited
        (a breach must stay repairable) but nothing adds exposure until equity is positive again
        (``exits_only_below_zero``; falling to zero or below after that halts and latches again)."""
        previous = state.trading_state
        below_zero = state.equity is not None and state.equity <= 0
        state.breaker_latched = False
        state.exits_only_below_zero = below_zero
        state.trading_state = TradingState.REDUCING if below_zero else TradingState.ACTIVE
        state.state_reason = f"reset: {reason}"
        if below_zero:
            state.state_reason += f"; {_exits_only_reason(state.equity or 0.0)}"
        state.peak_equity = _positive(state.equity)
        state.day_start_equity = _positive(state.equity)
        state.breaker_resets += 1
        if previous is state.trading_state:
            return None
        state.breaker_events += 1  # the caller publishes the transition
        eq = state.equity or 0.0
        return BreakerTransition(previous, state.trading_state, state.state_reason, eq, 0.0, 0.0)


def _exits_only_reason(equity: float) -> str:
    return f"equity {equity:,.2f} is not positive: exits only until it is (breaker reset by an operator)"


def _positive(value: float | None) -> float | None:
    """``value`` when it is a positive number, else None (an equity baseline is positive or none)."""
    return value if value is not None and value > 0 else None


def _within(value: float, limit: float) -> bool:
    """``value`` is at most ``limit``, up to :data:`ORDER_LIMIT_TOLERANCE` (relative)."""
    return value <= limit * (1.0 + ORDER_LIMIT_TOLERANCE)


def _reject(reason: RejectReason, message: str) -> RiskDecision:
    return RiskDecision(False, reason, message)


def clock_now(limits: RiskLimits, wall: datetime, event: datetime) -> datetime:
    """The time the checks use: the wall clock, or the intent's bar time in replays."""
    return event if limits.clock == "event" else wall


class KillSwitchVerdict(StrEnum):
    """What a kill-switch command does to the stored switch (see :func:`kill_switch_verdict`)."""

    APPLY = "APPLY"  # newer than the command the state holds: set the switch
    RETRY = "RETRY"  # the command the state holds, delivered again: finish its cancels and events
    STALE = "STALE"  # issued before the command the state holds: a logged no-op


def kill_switch_verdict(state: RiskState, command: KillSwitchCommand) -> tuple[KillSwitchVerdict, str]:
    """Whether ``command`` applies to ``state``, and why (for the log and the result).

    Commands apply in the order they were issued (``issued_at``), not delivered: Lambda retries
    a failed asynchronous invocation minutes later, when a newer command may have been applied.

    * the state's own command again (same ``command_id``, the switch still as it set it) is a
      retry after a partial failure: :data:`KillSwitchVerdict.RETRY` — the flag is not written
      again (a reset is not repeated), the cancels and the events are;
    * issued before the state's command, or the same id while the switch has been changed since
      (by hand, in the table): :data:`KillSwitchVerdict.STALE`;
    * issued in the same second as a different command that turned the switch on (times are
      compared in whole seconds, the precision of EventBridge's ``time``, also for a stored time
      with a fraction — the CLI wrote its machine's clock so before it used AWS's): an "on"
      applies, an "off" is stale — a tie never lifts the switch;
    * otherwise (later, the first command ever, a state written before commands carried their
      time, or a command without ``issued_at``): :data:`KillSwitchVerdict.APPLY`.
    """
    if command.command_id is not None and command.command_id == state.kill_switch_command_id:
        if state.kill_switch == command.active:
            return KillSwitchVerdict.RETRY, f"command {command.command_id} was applied already: finishing its work"
        return KillSwitchVerdict.STALE, (
            f"command {command.command_id} was applied already and the switch was changed since "
            f"(now {'on' if state.kill_switch else 'off'}: {state.kill_switch_reason!r})"
        )
    if command.issued_at is None or state.kill_switch_at is None:
        return KillSwitchVerdict.APPLY, "newer than the stored command"
    issued, stored_at = whole_second(command.issued_at), whole_second(state.kill_switch_at)
    if issued > stored_at:
        return KillSwitchVerdict.APPLY, "newer than the stored command"
    stored = (f"the stored command {state.kill_switch_command_id or '(unnamed)'} "
              f"({'on' if state.kill_switch else 'off'}: {state.kill_switch_reason!r}) issued at "
              f"{state.kill_switch_at.isoformat()}")
    if issued < stored_at:
        return KillSwitchVerdict.STALE, f"issued at {command.issued_at.isoformat()}, before {stored}"
    if command.active or not state.kill_switch:
        return KillSwitchVerdict.APPLY, f"issued in the same second as {stored}"
    return KillSwitchVerdict.STALE, (
        f"issued in the same second as {stored}: a tie never lifts the switch (send the 'off' again)"
    )


def apply_kill_switch(state: RiskState, command: KillSwitchCommand, now: datetime) -> None:
    """Set the switch, its reason and the command's time and id in ``state`` (a verdict of
    :data:`KillSwitchVerdict.APPLY`). A command without ``issued_at`` counts as issued ``now``, and
    never moves the stored time back (a clock behind the stored command's would let an older
    command in again)."""
    at = command.issued_at
    if at is None:
        at = now if state.kill_switch_at is None else max(now, state.kill_switch_at)
    state.kill_switch, state.kill_switch_reason = command.active, command.reason
    state.kill_switch_at, state.kill_switch_command_id = at, command.command_id or ""


def whole_second(at: datetime) -> datetime:
    """``at`` without its fraction of a second: kill-switch commands are ordered in whole seconds."""
    return at.replace(microsecond=0)


def _switch(state: RiskState) -> tuple[bool, str, datetime | None, str]:
    return state.kill_switch, state.kill_switch_reason, state.kill_switch_at, state.kill_switch_command_id


def _newer_switch(a: RiskState, b: RiskState) -> bool:
    """``a``'s kill-switch command was issued after ``b``'s (in the same second: when only ``a``
    turned it on — a tie never lifts the switch). A state without a command time is the oldest."""
    if a.kill_switch_at is None:
        return False
    if b.kill_switch_at is None or whole_second(a.kill_switch_at) > whole_second(b.kill_switch_at):
        return True
    return whole_second(a.kill_switch_at) == whole_second(b.kill_switch_at) and a.kill_switch and not b.kill_switch


def account_equity(initial_equity: float, positions: Iterable[Position], marks: Mapping[str, Mark]) -> float:
    """Initial equity + realised P&L − fees + unrealised P&L at ``marks`` (a position whose symbol
    has no mark is valued at its average price)."""
    total = initial_equity
    for p in positions:
        mark = marks.get(p.symbol)
        price = mark.price if mark is not None else p.average_price
        total += p.realized_pnl - p.fees_paid + p.quantity * (price - p.average_price)
    return total


class Revaluation(BaseModel):
    """What :func:`merge_states` needs to value the account at the merged marks: the breaker's
    limits, the initial equity and the positions as stored when the merge is made (the router
    reads them at its write-back)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    limits: RiskLimits
    initial_equity: float
    positions: tuple[Position, ...] = ()

    def equity(self, marks: Mapping[str, Mark]) -> float:
        """The account's equity with every position valued at ``marks``."""
        equity = account_equity(self.initial_equity, self.positions, marks)
        if not math.isfinite(equity):
            bad = sorted(s for s, m in marks.items() if not math.isfinite(m.price))
            raise ValueError(f"the merged marks value the account at {equity!r}, not a finite equity"
                             + (f" (marks of {', '.join(bad)} are not finite)" if bad else ""))
        return equity

    def held(self) -> frozenset[str]:
        """The symbols with an open position (the only ones whose marks move equity)."""
        return frozenset(p.symbol for p in self.positions if abs(p.quantity) > FLAT_EPSILON)


EQUITY_TOLERANCE = 1e-9
"""Relative tolerance within which a side's equity is the recomputed one (the same positions and
marks summed in another order differ in the last bits)."""


def merge_states(base: RiskState, ours: RiskState, theirs: RiskState,
                 revaluation: Revaluation | None = None) -> RiskState:
    """Three-way merge after losing the versioned write: our unsaved state folded into theirs.

    ``base`` is the state we loaded, ``ours`` the state we want to write, ``theirs`` the newer
    stored one. The result keeps theirs' version, so it can be written at once.

    Operator-owned fields win when theirs changed them since ``base``: the kill switch (its flag,
    reason, command time and id, as one; when both sides changed it, the later command wins, see
    :func:`kill_switch_verdict`) and, after
    a breaker reset (``breaker_resets`` moved), the whole breaker — latched flag, trading state
    and reason, the rebased peak and day-start equity. Our breaker state computed from the stale
    pre-reset figures is dropped; the next :meth:`RiskEngine.update_breaker` re-evaluates it from
    the rebased figures and the latest equity (ours', or with a ``revaluation`` the recomputed
    one: ours was valued at the prices it loaded, so the peak is never raised to it).

    ``broker`` (the broker the stage's router trades) is ours when we set it — we are the
    writer whose save lands now — else theirs: an operator's router records none.
    ``unannounced`` (a kill-switch command whose events are not known to be published,
    :class:`SwitchAnnouncement`) is ours when only ours changed it since ``base`` (a command
    ours applied, a claim ours saved, or a mark ours settled once it announced it), else theirs
    (a claim saved meanwhile by another writer stands).

    Marks (newest per symbol) and accepted orders (throttle and duplicate windows) are always
    united. Without a reset in theirs the equity figures come from ours and the peak is the
    higher of the two (unless a side lowered it below ``base``'s: a revaluing merge found it
    stale, and it stays lowered, :func:`_merged_peak`); the breaker state is theirs unless we moved it since ``base``, then ours
    if theirs did not move it, else the more severe of the two (two routers tripping at once). A
    breaker state that is not latched lasts only for the day it was set on: when one side has
    rolled into a later day, the other side's daily-loss REDUCING or HALTED of the day before is
    not carried into it (the later side's own evaluation of its day stands, and the next update
    measures the drawdown against the merged peak).
    Reconciliation halts merge per symbol, a halt's reason and run (``halt_runs``) as one: a symbol
    theirs changed since ``base`` — halted, lifted, or confirmed again by another run, whatever the
    reason reads — keeps theirs' entry, any other takes ours.

    With a ``revaluation`` the equity is recomputed from the merged marks and its positions
    (after a reset on either side too). A side whose valuation agrees with it — every held
    symbol marked as in the merge and the same equity — saw the prices the merge keeps; when
    both sides do, the merge is the one above. (A side that changed nothing since ``base``
    agrees only if ``base`` does: the stored state may be one writer's stale view.)
    Otherwise a side that does not agree valued the other side's symbols at the prices it
    loaded, and its figures are not taken as they are (:func:`_merge_revalued`): the merged
    figures are the stored ones updated by the recomputed equity as one intent would update
    them, a peak either side raised from stale prices is not kept, and a breaker move of such a
    side stands only where the recomputed figures call for at least as much.

    ``breaker_events`` is theirs' plus ours' since ``base``; the corrections the writer publishes
    once the merge is saved are counted by :func:`announce`.
    """
    merged = theirs.model_copy(deep=True)
    merged.breaker_events = theirs.breaker_events + max(0, ours.breaker_events - base.breaker_events)

    if _switch(ours) != _switch(base) and (_switch(theirs) == _switch(base) or _newer_switch(ours, theirs)):
        merged.kill_switch, merged.kill_switch_reason = ours.kill_switch, ours.kill_switch_reason
        merged.kill_switch_at, merged.kill_switch_command_id = ours.kill_switch_at, ours.kill_switch_command_id

    if ours.broker:
        merged.broker = ours.broker

    if ours.unannounced != base.unannounced and theirs.unannounced == base.unannounced:
        merged.unannounced = ours.unannounced  # ours announced it (or a command of ours set it)

    for symbol in set(base.halted_symbols) | set(ours.halted_symbols) | set(theirs.halted_symbols):
        if theirs.halt(symbol) != base.halt(symbol):
            continue  # theirs changed it (set, lifted, or confirmed by another run): keep theirs
        merged.halted_symbols.pop(symbol, None)
        merged.halt_runs.pop(symbol, None)
        if symbol in ours.halted_symbols:
            merged.halted_symbols[symbol] = ours.halted_symbols[symbol]
            if symbol in ours.halt_runs:
                merged.halt_runs[symbol] = ours.halt_runs[symbol]

    for symbol, mark in ours.marks.items():
        stored = merged.marks.get(symbol)
        if stored is None or mark.timestamp > stored.timestamp:
            merged.marks[symbol] = mark
    seen = {r.client_order_id for r in merged.recent}
    merged.recent.extend(r for r in ours.recent if r.client_order_id not in seen)
    merged.recent.sort(key=lambda r: r.at)

    equity = revaluation.equity(merged.marks) if revaluation is not None else None

    if theirs.breaker_resets != base.breaker_resets:  # an operator reset since we loaded
        if ours.day is not None and (merged.day is None or ours.day > merged.day):
            merged.day = ours.day
        if equity is not None:  # the reset's figures updated by the recomputed equity alone
            _take_equity(merged, equity)
        elif ours.equity is not None:
            merged.equity = ours.equity
            if merged.day_start_equity is None:  # a reset at or below zero keeps no baseline
                merged.day_start_equity = _positive(ours.equity)
            merged.peak_equity = max((p for p in (merged.peak_equity, ours.equity) if p is not None and p > 0),
                                     default=None)
        return merged

    if revaluation is not None and equity is not None and ours.breaker_resets == base.breaker_resets:
        held = revaluation.held()
        ours_agrees = _agrees(ours, base, merged.marks, held, equity)
        theirs_agrees = _agrees(theirs, base, merged.marks, held, equity)
        if not (ours_agrees and theirs_agrees):
            _merge_revalued(base, ours, theirs, merged, RiskEngine(revaluation.limits), equity,
                            ours_agrees=ours_agrees, theirs_agrees=theirs_agrees)
            return merged

    if ours.equity is not None and not (ours.day is not None and merged.day is not None and ours.day < merged.day):
        # our figures, unless theirs already moved into a later day (a state carried over from a
        # failed batch can be older than the stored one): the day never goes back
        merged.day, merged.day_start_equity, merged.equity = ours.day, ours.day_start_equity, ours.equity
    merged.peak_equity = _merged_peak(base, ((ours, True), (theirs, True)))
    if ours.breaker_resets != base.breaker_resets:  # our own reset: the operator's figures win
        merged.breaker_resets = ours.breaker_resets
        merged.trading_state, merged.state_reason = ours.trading_state, ours.state_reason
        merged.breaker_latched, merged.exits_only_below_zero = ours.breaker_latched, ours.exits_only_below_zero
        merged.peak_equity, merged.day_start_equity = ours.peak_equity, ours.day_start_equity
        if equity is not None:
            _take_equity(merged, equity)
    elif _breaker(ours) != _breaker(base) or _expired(theirs, merged.day):  # we moved the breaker
        if _expired(ours, merged.day):
            pass  # ours was set on an earlier day than theirs evaluated: theirs stands
        elif _expired(theirs, merged.day) or _breaker(theirs) == _breaker(base):
            merged.trading_state, merged.state_reason = ours.trading_state, ours.state_reason
            merged.breaker_latched, merged.exits_only_below_zero = ours.breaker_latched, ours.exits_only_below_zero
        elif _SEVERITY[ours.trading_state] > _SEVERITY[merged.trading_state] or ours.breaker_latched:
            merged.trading_state, merged.state_reason = ours.trading_state, ours.state_reason
            merged.breaker_latched = merged.breaker_latched or ours.breaker_latched
            merged.exits_only_below_zero = merged.exits_only_below_zero and ours.exits_only_below_zero
    return merged


def _take_equity(merged: RiskState, equity: float) -> None:
    """After a reset: the recomputed equity, the peak raised to it, and the day's start set to it
    when the reset left none (a reset at or below zero keeps no baseline until equity is positive)."""
    merged.equity = equity
    merged.day_start_equity = _positive(merged.day_start_equity) or _positive(equity)
    merged.peak_equity = _positive(max(merged.peak_equity, equity) if merged.peak_equity is not None else equity)


def _agrees(side: RiskState, base: RiskState, marks: Mapping[str, Mark], held: frozenset[str],
            equity: float) -> bool:
    """``side`` valued the account as the merge does: it marks every held symbol as ``marks`` do
    and its equity is ``equity``. A side that changed nothing since ``base`` agrees only as far
    as ``base`` does: a stored state may be one writer's stale view (its lone save, before the
    other writer's merge replaced it)."""
    return (side.equity is not None
            and math.isclose(side.equity, equity, rel_tol=EQUITY_TOLERANCE, abs_tol=EQUITY_TOLERANCE)
            and all(side.marks.get(symbol) == marks.get(symbol) for symbol in held))


def _merge_revalued(base: RiskState, ours: RiskState, theirs: RiskState, merged: RiskState, engine: RiskEngine,
                    equity: float, *, ours_agrees: bool, theirs_agrees: bool) -> None:
    """The figures and breaker state of a merge in which at least one side valued the other
    side's symbols at stale prices (no reset in theirs or ours).

    Figures, each the same whichever side saved first: the equity is ``equity``, on the later of
    the two days. The peak is ``base``'s, lowered where a side lowered it (a merge found it stale:
    the stored side may be the save of one, ours may be one when a merge's save is retried or
    carried to the next batch), raised where a side that agrees raised it, and raised to
    ``equity``. Within ``base``'s day the day's start stays ``base``'s (when ``base`` kept none,
    equity being at or below zero then, only a side that agrees sets one). A day begun since
    ``base`` starts at ``equity`` less what each side that began it saw the account do since its
    start of that day: each side valued its own symbols at their true prices and held the other
    side's at the prices it loaded, so the changes add up, and a side's change before the day,
    which a later mark of the same symbol may have replaced (a state carried from a failed save),
    plays no part. Baselines at or below zero are dropped as :meth:`RiskEngine.update_breaker`
    drops them. The operator's exits-only mode lasts while ``equity`` is at or below zero unless
    a side that agrees cleared it (a stale view that went positive does not).

    Breaker: a side that does not agree evaluated any day it rolled into on stale figures: its
    state counts as set on ``base``'s day, so a merged day after it is evaluated again from the
    merged figures. A side's move since ``base`` to a more severe state, or to a latched one, stands if
    the side agrees with the recomputation or if the merged figures call for at least that
    state (and the latch); otherwise it stands only as far as they support it — the state they
    call for, unlatched, if that is still more severe than ``base``'s — or not at all, and
    theirs' state (base's, when nothing of theirs' move stands) stays. Moves that stand combine
    as without a revaluation (the more severe wins; a daily state of an earlier day does not
    carry into a later one). A state left standing from an earlier day, unlatched, is replaced
    by the one the figures call for (a day roll's re-evaluation). Otherwise the merge makes no
    move of its own: when the figures call for more than the state that stands, the next
    intent's update makes the move and publishes it. A state the merge stores that neither side
    announced last is announced by the writer once the merge is saved (:func:`announce`).
    """
    sides = ((ours, ours_agrees), (theirs, theirs_agrees))
    peak = _merged_peak(base, sides)
    peak = equity if peak is None else max(peak, equity)
    day = max((d for d in (ours.day, theirs.day) if d is not None), default=None)
    if day is not None and day == base.day:
        start = base.day_start_equity
        if start is None:
            start = next((side.day_start_equity for side, agrees in sides
                          if agrees and side.day_start_equity is not None), None)
    else:
        start = equity
        for side, _ in sides:
            if side.day is None or side.day != day:
                continue  # still on an earlier day: all its change is before the merged day
            if side.equity is None or side.day_start_equity is None:
                start = None  # it keeps no baseline (equity at or below zero): neither does the merge
                break
            start -= side.equity - side.day_start_equity
    merged.day, merged.equity = day, equity
    merged.day_start_equity = _positive(start) or _positive(equity)
    merged.peak_equity = _positive(peak) or _positive(equity)
    merged.exits_only_below_zero = (equity <= 0 and base.exits_only_below_zero
                                    and all(side.exits_only_below_zero for side, agrees in sides if agrees))
    daily_loss, drawdown = merged.losses()
    called, called_why, called_latch = engine.desired_state(equity, daily_loss, drawdown,
                                                            merged.exits_only_below_zero)

    def standing(side: RiskState, agrees: bool) -> tuple[TradingState, str, bool] | None:
        """What stands of the side's breaker move since ``base`` (None: nothing, or no move)."""
        if _breaker(side) == _breaker(base):
            return None
        trip = (_SEVERITY[side.trading_state] > _SEVERITY[base.trading_state]
                or (side.breaker_latched and not base.breaker_latched))
        if not trip:  # a day roll's relaxation: evaluated on stale figures, the roll is evaluated again
            return (side.trading_state, side.state_reason, side.breaker_latched) if agrees else None
        if agrees or (_SEVERITY[called] >= _SEVERITY[side.trading_state] and (called_latch or not side.breaker_latched)):
            return side.trading_state, side.state_reason, side.breaker_latched
        # as far as the figures support it: the state they call for when it is less severe, unlatched
        state = side.trading_state if _SEVERITY[side.trading_state] < _SEVERITY[called] else called
        if _SEVERITY[state] <= _SEVERITY[base.trading_state]:
            return None  # within the day nothing relaxes below base's state, and nothing of the move stands
        return state, called_why if state is called else side.state_reason, False

    kept = standing(theirs, theirs_agrees)
    if kept is not None:
        (merged.trading_state, merged.state_reason, merged.breaker_latched), state_day = kept, theirs.day
    else:  # theirs did not move the breaker, or nothing of its move stands: base's state, as of
        # base's day unless theirs evaluated a later day on the true figures
        merged.trading_state, merged.state_reason = base.trading_state, base.state_reason
        merged.breaker_latched = base.breaker_latched
        state_day = theirs.day if theirs_agrees and _breaker(theirs) == _breaker(base) else base.day
    ours_kept = standing(ours, ours_agrees)
    if ours_kept is not None and not _expired_on(ours.day, ours_kept[2], day):
        state, reason, latched = ours_kept
        if _expired_on(state_day, merged.breaker_latched, day) or kept is None:
            merged.trading_state, merged.state_reason, merged.breaker_latched, state_day = state, reason, latched, ours.day
        elif _SEVERITY[state] > _SEVERITY[merged.trading_state] or latched:
            merged.trading_state, merged.state_reason = state, reason
            merged.breaker_latched, state_day = merged.breaker_latched or latched, ours.day
    if _expired_on(state_day, merged.breaker_latched, day):  # a day roll's re-evaluation
        merged.trading_state, merged.state_reason, merged.breaker_latched = called, called_why, called_latch


def _merged_peak(base: RiskState, sides: Iterable[tuple[RiskState, bool]]) -> float | None:
    """``base``'s peak, lowered where a side lowered it (a merge that found it stale, saved by the
    stored side or, retried or carried, ours), raised where a side whose raise counts (``True``
    with it: without a revaluation both sides' raises count) raised it."""
    sides = tuple(sides)
    peak = base.peak_equity
    for side, _ in sides:
        if peak is not None and side.peak_equity is not None and side.peak_equity < base.peak_equity:
            peak = min(peak, side.peak_equity)
    for side, counts in sides:
        if counts and side.peak_equity is not None and (base.peak_equity is None or side.peak_equity > base.peak_equity):
            peak = side.peak_equity if peak is None else max(peak, side.peak_equity)
    return peak


BreakerMove = tuple[TradingState, bool]
"""A breaker state as a ``CircuitBreakerTripped`` announces it: the trading state and whether it
is latched."""


def breaker_of(state: RiskState) -> BreakerMove:
    """``state``'s breaker state and latch."""
    return state.trading_state, state.breaker_latched


def last_words(base: RiskState, ours: Iterable[BreakerMove] | None, theirs: RiskState) -> list[BreakerMove]:
    """The breaker states the last ``CircuitBreakerTripped`` published so far may announce when
    our state, loaded as ``base``, is merged into the stored ``theirs``.

    ``ours`` are those our side's last event may announce: the state it published last, or the
    states an earlier merge of ours noted and no saved merge has corrected yet (a merge retried,
    or carried to the next batch); None when our side published nothing since ``base``, whose
    own state its writer announced. Theirs' last word is its own state: when its writers
    published since ``base`` (``breaker_events`` moved) the last of their events announced it —
    every event is counted, a saved merge's corrections included — and when they did not, it is
    ``base``'s. It is a last word unless ours published since ``base`` and theirs did not. The
    two sides publish independently, so the last event may be either side's."""
    words = list(ours or ())
    if ours is None or theirs.breaker_events != base.breaker_events:
        words.append(breaker_of(theirs))
    return list(dict.fromkeys(words))


def _rank(move: BreakerMove) -> tuple[int, bool]:
    """How severe a breaker state is: HALTED over REDUCING over ACTIVE, a latched halt over one
    that lifts at the day roll."""
    return _SEVERITY[move[0]], move[1]


def merge_corrections(published: Iterable[BreakerMove], saved: RiskState) -> list[BreakerTransition]:
    """A transition from each published breaker state (:func:`last_words`) other than the saved
    one to the saved one (once per distinct state), so that the last word on the breaker is the
    stored state: a move the merge dropped, one outranked by the other side's more severe move,
    or a move of the merge's own (a day roll evaluated again from the merged figures).

    Each is a ``correction``, except that a saved state more severe than every published one —
    a trip no event announced, which only the merge's own evaluation makes — is announced as a
    move by the first of them (the ``breaker_transitions`` metric counts it once)."""
    now = breaker_of(saved)
    words = list(dict.fromkeys(published))
    trip = bool(words) and all(_rank(now) > _rank(move) for move in words)
    daily_loss, drawdown = saved.losses()
    transitions, seen = [], {now}
    for move in words:
        if move in seen:
            continue
        seen.add(move)
        previous, latched = move
        reason = (f"merge of concurrent saves: the stored breaker is {saved.trading_state.value}"
                  f"{' (latched)' if saved.breaker_latched else ''} ({saved.state_reason or 'no reason recorded'}), "
                  f"not the {previous.value}{' (latched)' if latched else ''} published before")
        transitions.append(BreakerTransition(previous, saved.trading_state, reason, saved.equity or 0.0,
                                             daily_loss, drawdown, latched=saved.breaker_latched,
                                             correction=not (trip and not transitions)))
    return transitions


def announce(state: RiskState, words: Iterable[BreakerMove]) -> tuple[RiskState, list[BreakerTransition]]:
    """``state`` as its writer saves it, and the corrections it publishes once the save lands:
    one from each of ``words`` (:func:`last_words`) that is not ``state``'s breaker state
    (:func:`merge_corrections`), counted in ``breaker_events`` (on a copy; ``state`` itself
    when there is none)."""
    corrections = merge_corrections(words, state)
    if not corrections:
        return state, []
    return state.model_copy(update={"breaker_events": state.breaker_events + len(corrections)}), corrections


def _expired(side: RiskState, day: date | None) -> bool:
    """``side``'s breaker state was set on a day before ``day`` and is not latched: its daily-loss
    part ended with that day (within a day the state never relaxes, but a new day starts afresh),
    and the other side has evaluated ``day`` itself. A latched halt holds across days."""
    return _expired_on(side.day, side.breaker_latched, day)


def _expired_on(set_on: date | None, latched: bool, day: date | None) -> bool:
    return set_on is not None and day is not None and set_on < day and not latched


def _breaker(state: RiskState) -> tuple[TradingState, str, bool, bool]:
    return state.trading_state, state.state_reason, state.breaker_latched, state.exits_only_below_zero
