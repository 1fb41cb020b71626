"""The order stage at run time: settings, the router (intent → risk → broker), reconciliation, kill switch.

:class:`OrderRouter` is what the orders Lambda, the local stack, the benchmark and the tests all
call. It talks to the outside only through ports (an :class:`~ensemble_trader.ports.OrdersStore`,
a :class:`~ensemble_trader.ports.Broker`, an :class:`~ensemble_trader.ports.EventBus`, a
:class:`~ensemble_trader.ports.Clock`), so the same code runs over DynamoDB + Alpaca in AWS and
over dictionaries + the paper broker in process.

Exactly-once effect, step by step, for each order an intent needs:

1. the client order id is derived from the decision (:func:`~ensemble_trader.domain.orders.client_order_id`);
2. if the store already has that id, the order is *resolved* (looked up at the broker and synced),
   never submitted again under another id;
3. otherwise the risk engine checks it; a rejection is recorded (conditional put) and published;
4. an accepted order is written ``PENDING`` with a conditional put **before** the broker is
   called; losing that put to a concurrent delivery means the other delivery owns the order;
5. the submit: an acknowledgement is synced; a definitive refusal is recorded as rejected; an
   unknown outcome (timeout, 5xx, lost connection) marks the order ``UNKNOWN`` and is resolved
   by looking the id up — if the broker cannot be reached or does not have it (yet), the symbol's
   next intent looks it up again before it plans, and reconciliation resolves it at the latest;
6. fills are derived from the broker's cumulative progress and written with the position in one
   transaction that only succeeds if the order's filled quantity is still the one read.

Outside a batch, the whole intent is retried when the versioned risk-state write loses a race;
the steps above make the retry harmless. Inside :meth:`OrderRouter.batch` (the Lambda) the risk
state is written once at the end: merged into a newer stored copy on a lost race, tried again
after a transient failure, and carried to the next batch if it still fails.
"""

from __future__ import annotations

import difflib
import logging
import os
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, get_origin

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from ensemble_trader.constants import FunctionSpec, function_spec
from ensemble_trader.domain.errors import (
    ConcurrencyError,
    DataError,
    EnsembleTraderError,
    InfrastructureError,
    StoreRefusedError,
)
from ensemble_trader.domain.models import SYMBOL_PATTERN, Order, OrderIntent, OrderStatus, Position, Side
from ensemble_trader.domain.orders import (
    QUANTITY_EPSILON,
    WORKING_STATUSES,
    BrokerError,
    BrokerOrder,
    BrokerRejectedError,
    BrokerUnavailableError,
    CircuitBreakerTripped,
    DuplicateClientOrderIdError,
    KillSwitchChanged,
    KillSwitchCommand,
    KillSwitchCommandIgnored,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    ReconciliationFailed,
    UnknownOutcomeError,
    closing_quantity,
    describe,
    fill_from_progress,
    order_after_report,
    plan_orders,
    report_is_behind,
    report_matches,
    unbookable,
    working_quantity,
)
from ensemble_trader.domain.orders import client_order_id as leg_order_id
from ensemble_trader.domain.reconcile import (
    ReconciliationReport,
    Verdict,
    compare_order,
    compare_positions,
    foreign_orders,
)
from ensemble_trader.domain.risk import (
    BreakerMove,
    BreakerTransition,
    KillSwitchVerdict,
    Mark,
    OrderContext,
    OrderCut,
    Reference,
    RejectReason,
    Revaluation,
    RiskDecision,
    RiskEngine,
    RiskLimits,
    RiskState,
    SwitchAnnouncement,
    TradingState,
    account_equity,
    announce,
    apply_kill_switch,
    breaker_of,
    clock_now,
    kill_switch_verdict,
    last_words,
    merge_states,
)
from ensemble_trader.ports import Broker, Clock, EventBus, OrdersStore
from ensemble_trader.runtime.dead_letters import logged_reason
from ensemble_trader.runtime.deadline import DeadlineExceededError, pause

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
"""How often one intent is retried after losing the versioned risk-state write."""

RETRY_BACKOFF_S = 0.002
"""Base of the jittered pause after a lost race, so writers contending for the risk state spread out."""


def _backoff_s(attempt: int) -> float:
    return random.uniform(0.0, RETRY_BACKOFF_S * 2 ** min(attempt, 6))


def _backoff(attempt: int) -> None:
    time.sleep(_backoff_s(attempt))


VISIBILITY_TIMEOUT_FACTOR = 6
"""AWS's guidance for a Lambda consumer of an SQS queue: a visibility timeout of at least six times
the function's timeout. The CDK queue takes its visibility timeout from
:func:`visibility_timeout_seconds`, and the orders functions their reconciliation grace from
:func:`reconcile_grace_seconds_for`, so the two cannot drift apart."""


def visibility_timeout_seconds(spec: FunctionSpec) -> int:
    """The visibility timeout of the queue ``spec``'s function reads: a failed record is received
    again that long after its last receive."""
    return VISIBILITY_TIMEOUT_FACTOR * spec.timeout_seconds


def redelivery_gap_seconds(spec: FunctionSpec, visibility_timeout: float | None = None) -> float:
    """The longest time between two deliveries' attempts at a failed intent: the next receive
    comes a visibility timeout (by default :func:`visibility_timeout_seconds`) after the last one,
    and the attempt (:meth:`OrderRouter.handle` touches the intent's PENDING orders first) at most
    one function timeout after its receive."""
    visibility = visibility_timeout_seconds(spec) if visibility_timeout is None else visibility_timeout
    return visibility + spec.timeout_seconds


BROKER_REQUEST_TIMEOUT_SECONDS = 5.0
"""The broker client's request timeout by default (``ET_ORDERS_ALPACA_TIMEOUT_SECONDS``). Also the
router's default :attr:`OrderRouter.submit_in_flight_seconds`: an ``UNKNOWN`` order the broker
does not have is judged absent only once its submit gave up at least this long ago."""


def reconcile_grace_seconds_for(spec: FunctionSpec) -> int:
    """The reconciliation grace deployed with ``spec``'s queue: the redelivery gap plus one more
    function timeout of slack (the poller's own delay). Reconciliation retires a PENDING order
    only when nothing attempted it for that long, so an order whose intent SQS is still
    delivering is never retired ``NOT_AT_BROKER``; one whose intent went to the dead-letter queue
    (or completed without sending it) is retired by the symbol's next intent before it plans
    (:meth:`OrderRouter._settle_superseded_pending`), or by reconciliation this long after its
    last attempt, whichever comes first."""
    return redelivery_gap_seconds(spec) + spec.timeout_seconds


class ReconcileGraceError(ValueError):
    """A reconciliation grace that is not longer than a failed intent's redelivery gap: the
    scheduled reconciliation could retire the intent's PENDING order between two deliveries, and
    the redelivered intent would then complete without trading."""

    def __init__(self, grace_seconds: float, spec: FunctionSpec, visibility_timeout: float):
        self.grace_seconds = grace_seconds
        gap = redelivery_gap_seconds(spec, visibility_timeout)
        super().__init__(
            f"ET_ORDERS_RECONCILE_GRACE_SECONDS={grace_seconds:g} is not longer than the redelivery gap of "
            f"the {spec.mapping.source} queue ({gap:g} s: its visibility timeout of {visibility_timeout:g} s "
            f"plus the {spec.logical} function's timeout of {spec.timeout_seconds} s): reconciliation "
            "would retire an intent's unsent PENDING order NOT_AT_BROKER before SQS delivers the intent "
            "again, and the trade would be dropped"
        )


def require_grace_past_redelivery(
    grace_seconds: float, spec: FunctionSpec, visibility_timeout: float | None = None
) -> float:
    """``grace_seconds``, if longer than the redelivery gap of ``spec``'s queue (its
    ``visibility_timeout``, by default :func:`visibility_timeout_seconds`, plus the function's
    timeout); else :class:`ReconcileGraceError`."""
    visibility = visibility_timeout_seconds(spec) if visibility_timeout is None else visibility_timeout
    if not grace_seconds > redelivery_gap_seconds(spec, visibility):
        raise ReconcileGraceError(grace_seconds, spec, visibility)
    return grace_seconds


class _NotJson:
    """An environment value that a JSON-valued setting (``ET_ORDERS_ALLOCATIONS``,
    ``ET_RISK_RESTRICTED_SYMBOLS``) could not decode, handed on instead of aborting: validation
    refuses it by type along with every other bad variable, and :func:`_environment_named` says
    it is not JSON."""

    def __init__(self, raw: str, error: ValueError):
        self.raw = raw
        self.error = error

    def __repr__(self) -> str:
        return repr(self.raw)


class _CollectingEnvSource(EnvSettingsSource):
    """The environment source, except that a JSON decode error does not abort the settings
    (pydantic-settings raises it before anything is validated, so it hid every other bad
    variable): the value is handed on as :class:`_NotJson`."""

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError as exc:
            return _NotJson(value, exc)


def _collecting_sources(
    settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
    dotenv_settings: PydanticBaseSettingsSource, file_secret_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    return init_settings, _CollectingEnvSource(settings_cls), dotenv_settings, file_secret_settings


def _json_wanted(model: type[BaseSettings], field: str) -> str:
    origin = get_origin(model.model_fields[field].annotation)
    return ('a JSON object, e.g. \'{"SPX": 0.6}\'' if origin is dict
            else 'a JSON list, e.g. \'["GME", "AMC"]\'' if origin in (list, set, frozenset) else "JSON")


def _unknown_variables(model: type[BaseSettings]) -> dict[str, str]:
    """Every environment variable that carries ``model``'s prefix but is none of its settings
    (sorted), with what is wrong: not a setting, and the closest setting's name."""
    prefix = str(model.model_config.get("env_prefix") or "").upper()
    known = {f"{prefix}{field}".upper() for field in model.model_fields}
    unknown = sorted(name for name in os.environ if name.upper().startswith(prefix) and name.upper() not in known)

    def problem(name: str) -> str:
        close = difflib.get_close_matches(name.upper().removeprefix(prefix), [k.removeprefix(prefix) for k in sorted(known)], n=1)
        return (f"not a setting (did you mean {prefix}{close[0]}?)" if close
                else f"not a setting; the {prefix}* settings are {', '.join(sorted(known))}")

    return {name: problem(name) for name in unknown}


def _refuse_unknown_variables(model: type[BaseSettings]) -> None:
    """:class:`EnvironmentSettingError` naming every environment variable that carries
    ``model``'s prefix but is none of its settings, with the closest setting's name."""
    from ensemble_trader.runtime.settings import EnvironmentSettingError

    if unknown := _unknown_variables(model):
        raise EnvironmentSettingError.naming(unknown)


@contextmanager
def _environment_named(model: type[BaseSettings], given: Mapping[str, Any]) -> Iterator[None]:
    """Re-raise a settings model's refusal of an environment value as an
    :class:`~ensemble_trader.runtime.settings.EnvironmentSettingError` naming the variable(s)
    (``ET_RISK_PRICE_COLLAR``, not the field ``price_collar``), the value and the cause — every
    bad variable at once, one that is not valid JSON included (see :class:`_CollectingEnvSource`);
    the original error is its ``__cause__``. Values ``given`` in code are not the environment's: a
    refusal of only those propagates as it is."""
    from ensemble_trader.runtime.settings import EnvironmentSettingError

    prefix = str(model.model_config.get("env_prefix") or "")
    environ = {key.upper(): (key, value) for key, value in os.environ.items()}

    def variable(field: str) -> tuple[str, str] | None:  # (name as set, raw value), None: not set
        return None if field in given else environ.get(f"{prefix}{field}".upper())

    try:
        yield
    except SettingsError as exc:  # pydantic-settings could not decode a JSON-valued variable
        match = re.search(r'field "([^"]+)"', str(exc))
        found = variable(match.group(1)) if match else None
        if found is None:
            raise
        raise EnvironmentSettingError(
            found[0], f"{found[1]!r} is not valid JSON ({exc.__cause__ or exc}); it takes "
            f"{_json_wanted(model, match.group(1))}"
        ) from exc
    except ValidationError as exc:
        named: dict[str, str] = {}
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if isinstance(error.get("input"), _NotJson) and error["loc"]:
                field_name = str(error["loc"][0])
                found = variable(field_name)
                if found is not None:
                    named[found[0]] = (f"{found[1]!r} is not valid JSON ({error['input'].error}); it takes "
                                       f"{_json_wanted(model, field_name)}")
                    continue
            if error["loc"]:
                fields = [str(error["loc"][0])]
                if len(error["loc"]) > 1:  # inside the value: say where (allocations.SPX)
                    message = f"{'.'.join(map(str, error['loc']))}: {message}"
            else:  # a check across fields: the fields its message names
                fields = [f for f in model.model_fields if re.search(rf"\b{f}\b", message)]
            for found in filter(None, map(variable, fields)):
                named[found[0]] = f"{message} (got {found[1]!r})"
        if not named:
            raise
        raise EnvironmentSettingError.naming(named) from exc


class _NamedEnvironmentSettings(BaseSettings):
    """Settings whose bad environment variables are named, all at once, in one
    :class:`EnvironmentSettingError` (see :func:`_environment_named`)."""

    def __init__(self, **values: Any) -> None:
        """A bad variable raises :class:`EnvironmentSettingError` naming it (see
        :func:`_environment_named`), and so does a variable with the class's prefix that is not
        one of its settings (a misspelt ``ET_RISK_DRAWDOWN_HALTT`` would leave the limit at its
        default without a word): one error naming the unknown variables and the bad values
        together."""
        from ensemble_trader.runtime.settings import EnvironmentSettingError

        unknown = _unknown_variables(type(self))
        try:
            with _environment_named(type(self), values):
                super().__init__(**values)
        except EnvironmentSettingError as exc:
            if unknown:
                raise EnvironmentSettingError.naming({**unknown, **exc.problems}) from exc
            raise
        except (ValidationError, SettingsError):
            if unknown:  # a refusal of values given in code: the environment's fault is named first
                raise EnvironmentSettingError.naming(unknown) from None
            raise
        if unknown:
            raise EnvironmentSettingError.naming(unknown)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return _collecting_sources(settings_cls, init_settings, dotenv_settings, file_secret_settings)


class RiskSettings(RiskLimits, _NamedEnvironmentSettings):
    """:class:`RiskLimits` read from the environment: ``ET_RISK_MAX_ORDER_QUANTITY`` and so on.

    ``ET_RISK_RESTRICTED_SYMBOLS`` takes a JSON list (``'["GME","AMC"]'``); its entries are
    stripped and upper-cased, and one that is not a symbol is refused by name.
    """

    model_config = SettingsConfigDict(env_prefix="ET_RISK_", frozen=True, extra="ignore")

    def limits(self) -> RiskLimits:
        return RiskLimits(**self.model_dump())


class OrdersSettings(_NamedEnvironmentSettings):
    """The order stage's own settings (``ET_ORDERS_*``). Every number must be finite (an
    ``inf`` initial equity made every intent fail)."""

    model_config = SettingsConfigDict(env_prefix="ET_ORDERS_", frozen=True, extra="ignore", allow_inf_nan=False)

    broker: Literal["paper", "alpaca"] = "paper"
    initial_equity: float = Field(default=1_000_000.0, gt=0)
    quantity_step: float = Field(default=1.0, gt=0)
    min_trade_fraction: float = Field(default=0.01, ge=0, lt=1)  # no-trade band, fraction of allocation x equity
    # Capital per symbol, as a fraction of equity: an intent's target is a fraction of it.
    # ET_ORDERS_ALLOCATIONS='{"SPX": 0.6, "IXIC": 0.4}'; symbols not named get the default.
    allocations: dict[str, Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=dict)
    default_allocation: float = Field(default=1.0, gt=0, le=1)
    # measured from an order's last submit attempt; the default is the deployed figure (the CDK
    # app sets it from the same numbers): longer than a failed intent's redelivery gap
    reconcile_grace_seconds: float = Field(default=reconcile_grace_seconds_for(function_spec("orders")), ge=0)
    # below 10,000 bps (the whole price): at or past it a SELL would fill at a price of 0 or less
    paper_slippage_bps: float = Field(default=1.0, ge=0, lt=10_000)
    paper_fee_bps: float = Field(default=0.5, ge=0)
    paper_fee_per_share: float = Field(default=0.0, ge=0)
    paper_fill_fraction: float = Field(default=1.0, gt=0, le=1)
    alpaca_secret_name: str | None = None  # default: the stage's "broker-keys" secret
    alpaca_paper: bool = True
    # every Alpaca HTTP call's timeout; also how long after an unknown submit outcome its order may
    # still be landing (OrderRouter.submit_in_flight_seconds)
    alpaca_timeout_seconds: float = Field(default=BROKER_REQUEST_TIMEOUT_SECONDS, gt=0)

    @field_validator("allocations", mode="before")
    @classmethod
    def _allocations_by_symbol(cls, v: object) -> object:
        """Keys stripped and upper-cased (symbols are upper case: a 'spx' would never match SPX,
        which would trade the default allocation); a key that is not a symbol, or a symbol named
        twice, is refused by name."""
        if not isinstance(v, Mapping):
            return v  # pydantic reports the wrong type
        allocations: dict[str, object] = {}
        for key, value in v.items():
            symbol = key.strip().upper() if isinstance(key, str) else None
            if symbol is None or not re.match(SYMBOL_PATTERN, symbol):
                raise ValueError(
                    f"{key!r} is not a symbol (an upper-case ticker such as SPX, BRK.B, BTC-USD, ^GSPC; "
                    "case and surrounding blanks do not matter)"
                )
            if symbol in allocations:
                raise ValueError(f"{symbol} is named twice")
            allocations[symbol] = value
        return allocations

    @model_validator(mode="after")
    def _allocations_fit_the_account(self) -> OrdersSettings:
        total = sum(self.allocations.values())
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"allocations add up to {total:g} of equity, more than 1: {dict(sorted(self.allocations.items()))}"
            )
        return self


@dataclass
class IntentOutcome:
    """What handling one intent did (returned by the Lambda for its logs and idempotency record)."""

    intent_id: str
    symbol: str
    orders: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, str]] = field(default_factory=list)
    fills: int = 0
    resolved_existing: int = 0
    attempts: int = 1
    # orders of the symbol's earlier intents the broker does not have (PENDING: never sent;
    # UNKNOWN: a submit that never landed) that this intent retired before it planned
    superseded: list[dict[str, str]] = field(default_factory=list)
    # the account as the breaker saw it for this intent: equity, daily_loss, drawdown, trading_state
    account: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "intent_id": self.intent_id,
            "symbol": self.symbol,
            "orders": self.orders,
            "rejections": self.rejections,
            "fills": self.fills,
            "resolved_existing": self.resolved_existing,
            "attempts": self.attempts,
            "superseded": self.superseded,
            "account": self.account,
        }


class UnsavedRiskState(NamedTuple):
    """A batch's risk state that was not written (:meth:`BatchingOrdersStore.unsaved`): the stored
    state it started from, the state, and the breaker states the last event published about it
    may announce (None: none published since ``base``; see
    :func:`~ensemble_trader.domain.risk.last_words`)."""

    base: RiskState
    state: RiskState
    words: list[BreakerMove] | None


class BatchingOrdersStore:
    """An :class:`OrdersStore` that reads shared state once per batch of intents.

    Wraps the durable store for one SQS batch: the risk state, the positions and the working
    orders are read at the first use and kept; every write still goes to the durable store at
    once (conditional puts and fill transactions are unchanged) and updates the copies. Only the
    risk state is written back once, by :meth:`flush`; if another writer saved it meanwhile, our
    changes are merged into the newer copy by a three-way merge against the copy we loaded
    (:func:`~ensemble_trader.domain.risk.merge_states`), so an operator's reset or kill switch
    saved meanwhile is kept.
    The kill switch and halts are therefore seen at the next batch (at most ten intents later).

    Given the breaker's ``limits`` and the ``initial_equity`` (the router passes both), a merge
    values the account at the merged marks and the positions read from the store then
    (:class:`~ensemble_trader.domain.risk.Revaluation`): the equity, peak, day figures and
    breaker state follow from that, not from a view in which the other writer's symbols kept
    the prices we loaded. Once a merge is saved, a correcting transition goes from each breaker
    state the last event published may announce — ours' last, the stored writer's last, or the
    loaded state's when neither published since (:func:`~ensemble_trader.domain.risk.last_words`)
    — to the stored one when they differ (:meth:`take_corrections`), so that what was published
    ends on what is stored: a move either writer published that the merge did not keep, and a
    move of the merge's own.

    ``carried`` is the :class:`UnsavedRiskState` of an earlier batch whose write-back failed
    (:meth:`unsaved`): its intents are already marked done by idempotency and their redelivery
    replays them without routing, so their risk-state changes (marks, the throttle's and the
    duplicate check's recent orders, the breaker) would be lost. It is merged into the stored
    state at the first load, as a lost race is, and written with this batch; the breaker states
    its events (or a merge of it) left as possibly the last word are carried with it.
    """

    def __init__(self, inner: OrdersStore, carried: UnsavedRiskState | None = None, *,
                 limits: RiskLimits | None = None, initial_equity: float | None = None):
        self.inner = inner
        self._state: RiskState | None = None
        self._base: RiskState | None = None  # the stored state our copy started from
        self._valuation = (limits, initial_equity) if limits is not None and initial_equity is not None else None
        # the breaker states the last event published about our state may announce (last_words);
        # None: none published since the load, whose state is the last word
        self._words: list[BreakerMove] | None = None
        self._corrections: list[BreakerTransition] = []
        self._dirty = False
        self._carried = carried
        self._positions: dict[str, Position] | None = None
        self._working: dict[str, Order] | None = None

    def _track(self, order: Order) -> None:
        if self._working is None:
            return
        if order.status.terminal:
            self._working.pop(order.client_order_id, None)
        else:
            self._working[order.client_order_id] = order

    def create_order(self, order: Order) -> bool:
        created = self.inner.create_order(order)
        if created:
            self._track(order)
        return created

    def get_order(self, client_order_id: str) -> Order | None:
        if self._working is not None and client_order_id in self._working:
            return self._working[client_order_id]
        return self.inner.get_order(client_order_id)

    def update_order(self, order: Order, *, expected_status: OrderStatus, expected_filled: float) -> bool:
        written = self.inner.update_order(order, expected_status=expected_status, expected_filled=expected_filled)
        if written:
            self._track(order)
        else:
            self._refresh(order.client_order_id)
        return written

    def refresh_symbol(self, symbol: str) -> None:
        """Re-read the symbol's working orders (and its position if one of them moved on).

        Only other writers' progress can make our copies stale — the scheduled reconciliation or
        the kill switch settling an order — never a new order (a symbol's intents are handled by
        one consumer at a time: FIFO message group = symbol). A symbol with no working order in
        the copy therefore needs no read.
        """
        if self._working is None:
            return
        changed = False
        for order in [o for o in self._working.values() if o.symbol == symbol]:
            fresh = self.inner.get_order(order.client_order_id)
            if fresh != order:
                changed = True
                self._working.pop(order.client_order_id, None)
                if fresh is not None:
                    self._track(fresh)
        if changed and self._positions is not None:
            position = self.inner.get_position(symbol)
            if position is None:
                self._positions.pop(symbol, None)
            else:
                self._positions[symbol] = position

    def forget_copies(self) -> None:
        """Drop the copies of the working orders and positions: the next reads go to the store.
        For reconciliation's second look at a symbol whose positions differed (an order another
        writer created or filled while it ran: :meth:`OrderRouter._recheck_positions`)."""
        self._working = None
        self._positions = None

    def _refresh(self, client_order_id: str) -> None:
        """Another writer changed this order: replace our copy with the stored one."""
        if self._working is None:
            return
        self._working.pop(client_order_id, None)
        fresh = self.inner.get_order(client_order_id)
        if fresh is not None:
            self._track(fresh)

    def list_orders(self, *, working_only: bool = False) -> list[Order]:
        if not working_only:
            return self.inner.list_orders()
        if self._working is None:
            self._working = {o.client_order_id: o for o in self.inner.list_orders(working_only=True)}
        return list(self._working.values())

    def apply_fill(
        self, order: Order, fill: Any, *, expected_status: OrderStatus, expected_filled: float
    ) -> Position | None:
        position = self.inner.apply_fill(order, fill, expected_status=expected_status,
                                         expected_filled=expected_filled)
        if position is None:
            self._refresh(order.client_order_id)
        else:
            self._track(order)
            if self._positions is not None:
                self._positions[position.symbol] = position
        return position

    def get_position(self, symbol: str) -> Position | None:
        if self._positions is not None:
            return self._positions.get(symbol)
        return self.inner.get_position(symbol)

    def list_positions(self) -> list[Position]:
        if self._positions is None:
            self._positions = {p.symbol: p for p in self.inner.list_positions()}
        return list(self._positions.values())

    def put_position(self, position: Position) -> None:
        self.inner.put_position(position)
        if self._positions is not None:
            self._positions[position.symbol] = position

    def load_risk_state(self) -> RiskState:
        """A copy of the batch's risk state: an intent that fails part-way leaves nothing of its
        changes (its ``recent`` entry, its mark, a breaker move) in what the batch writes back."""
        if self._state is None:
            self._state = self.inner.load_risk_state()
            self._base = self._state.model_copy(deep=True)
            self._words = None
            if self._carried is not None:
                carried = self._carried
                self._words = carried.words
                self._state = self._merge(carried.base, carried.state, self._state)
                self._carried, self._dirty = None, True
        return self._state.model_copy(deep=True)

    def _merge(self, base: RiskState, ours: RiskState, theirs: RiskState) -> RiskState:
        """:func:`merge_states` with the account revalued at the merged marks (when this store
        knows the limits and the initial equity: the positions are read now), noting the breaker
        states the last event published may announce (:func:`last_words`)."""
        self._words = last_words(base, self._words, theirs)
        revaluation = None
        if self._valuation is not None:
            limits, initial_equity = self._valuation
            revaluation = Revaluation(limits=limits, initial_equity=initial_equity,
                                      positions=tuple(self.inner.list_positions()))
        return merge_states(base, ours, theirs, revaluation)

    def take_corrections(self) -> list[BreakerTransition]:
        """The correcting transitions of the merges saved so far (see the class), once."""
        corrections, self._corrections = self._corrections, []
        return corrections

    def save_risk_state(self, state: RiskState, *, write_kill_switch: bool = False) -> None:
        if write_kill_switch:  # an operator action: straight through, and re-read afterwards
            self.inner.save_risk_state(state, write_kill_switch=True)
            self._state, self._base, self._dirty, self._words = None, None, False, None
            return
        if self._base is None:  # a state we did not load here: what it started from is its version
            self._base = self.inner.load_risk_state()
            if self._base.version != state.version:
                raise ConcurrencyError(
                    f"risk state version {state.version} is stale (stored {self._base.version})"
                )
        held = self._state if self._state is not None else self._base
        if state.breaker_events != held.breaker_events:  # the intent published a breaker transition
            self._words = [breaker_of(state)]
        self._state = state
        self._dirty = True

    def flush(self) -> None:
        """Write the risk state back (merging into a newer stored copy if one appeared, and
        trying again after a transient failure — inside an invocation only while its deadline
        leaves time for it: a save or back-off it could not hold raises DeadlineExceededError at
        once, and the router carries the unsaved state to its next batch)."""
        if self._carried is not None:
            self.load_risk_state()  # a batch that never read the state still writes the carried one
        if not self._dirty or self._state is None:
            return
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                # a merged state that is not the breaker state last announced is announced once
                # saved (corrections counted in the state: the next merge sees them)
                state, corrections = announce(self._state, self._words or ())
                self.inner.save_risk_state(state)
                self._state, self._dirty, self._words = state, False, None
                self._corrections.extend(corrections)
                return
            except ConcurrencyError:
                if attempt == MAX_ATTEMPTS:
                    raise
                assert self._base is not None  # set whenever a state is held
                theirs = self.inner.load_risk_state()
                self._state = self._merge(self._base, self._state, theirs)
                self._base = theirs
            except DeadlineExceededError:
                raise  # no time for another save in this invocation: the router carries the state
            except InfrastructureError as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                pause(_backoff_s(attempt), f"risk-state save: failed {attempt} times (last error: {exc})")

    def unsaved(self) -> UnsavedRiskState | None:
        """The risk state not yet written, what it started from and the breaker states its last
        event may announce (for the next batch to carry)."""
        if self._carried is not None:
            return self._carried
        if self._dirty and self._state is not None and self._base is not None:
            return UnsavedRiskState(self._base, self._state, self._words)
        return None


def _retired(order: Order) -> bool:
    """Rejected by this system, not by the broker: refused by a check before it was sent, or a
    recorded order the broker did not have when it was retired — by the kill switch
    (``KILL_SWITCH``), as absent (``NOT_AT_BROKER``), or refused on the re-check of a PENDING
    order (any risk code, ``CLOSING_LEG_INCOMPLETE``: :meth:`OrderRouter._resolve`). A broker that
    has such an order live after all got it from a submit already under way, and it is canceled
    there and its fills booked (see ``_sync_report``). The broker's own rejections
    (``BROKER_REJECTED``, or no code: an order stored before codes were recorded) are final there
    and are not retired orders."""
    return order.status is OrderStatus.REJECTED and order.reject_code not in (
        None, RejectReason.BROKER_REJECTED.value
    )


def _may_have_reached_broker(order: Order) -> bool:
    """A retired order (:func:`_retired`) that was recorded ``PENDING`` before it was retired, so
    that a submit of it may have been under way: the only ones the broker can hold.

    An order refused by a check when its intent planned it is recorded ``REJECTED`` in one write
    and never written again (nothing sends it, and no broker report names it): its
    ``updated_at`` is its ``created_at``. Every retirement of a recorded order is a second write
    that moves ``updated_at`` on (:meth:`OrderRouter._reject_absent`, which never writes the
    creation time itself), and ``NOT_AT_BROKER`` is only ever such a retirement. Orders stored by
    earlier code follow the same rule: refusals have always been recorded in one write, and
    retirements have always set ``updated_at``."""
    return _retired(order) and order.broker_order_id is None and (
        order.reject_code == RejectReason.NOT_AT_BROKER.value or order.updated_at != order.created_at
    )


BROKER_NAMES = {
    "paper": "the paper broker (ET_ORDERS_BROKER=paper)",
    "alpaca-paper": "Alpaca's paper endpoint (ET_ORDERS_BROKER=alpaca, ET_ORDERS_ALPACA_PAPER=true)",
    "alpaca-live": "Alpaca with real money (ET_ORDERS_BROKER=alpaca, ET_ORDERS_ALPACA_PAPER=false)",
}
"""The brokers a router can trade, by the name the risk state records (``RiskState.broker``)."""


def broker_name(orders: OrdersSettings) -> str:
    """The name of the broker ``orders`` configures: ``paper``, ``alpaca-paper`` or ``alpaca-live``."""
    if orders.broker == "alpaca":
        return "alpaca-paper" if orders.alpaca_paper else "alpaca-live"
    return "paper"


class BrokerMismatchError(EnsembleTraderError):
    """An operator's command would act at another broker than the one the stage's router trades.

    ``ours`` is the operator router's broker, ``stored`` the one the risk state records (see
    :attr:`OrderRouter.operator`); nothing was changed, in the state or at either broker."""

    def __init__(self, action: str, ours: str, stored: str):
        self.action, self.ours, self.stored = action, ours, stored
        if action.startswith("kill switch"):
            harm = ("the switch would be set in the stage's risk state, but working orders canceled at "
                    f"{ours}: the stage's orders at {stored} would stay open")
        elif action.startswith("reconcil"):
            harm = (f"the stage's books would be compared with {ours} instead of {stored} and "
                    "'repaired' to match the wrong broker")
        else:
            harm = f"it would act at {ours}, not at the stage's {stored}"
        super().__init__(
            f"{action} refused: the risk state says the stage's order router trades {stored} "
            f"({BROKER_NAMES.get(stored, 'a broker this version does not know')}), but this command's "
            f"settings trade {ours} ({BROKER_NAMES[ours]}); {harm}. Nothing was changed"
        )


class SubmitInFlightError(UnknownOutcomeError):
    """An earlier intent's ``UNKNOWN`` order the broker does not have (yet) gave up its submit too
    recently to be called absent: the request may still be landing. The intent that would plan
    around it fails and is delivered again (see :meth:`OrderRouter._settle_superseded_pending`)."""

    def __init__(self, client_order_id: str, intent_id: str, age_seconds: float, in_flight_seconds: float):
        self.intent_id = intent_id
        self.age_seconds = age_seconds
        super().__init__(
            client_order_id,
            f"its submit gave up {age_seconds:.1f} s ago, within the broker request timeout of "
            f"{in_flight_seconds:g} s, and the broker does not have it yet: it may still be in flight, so "
            f"intent {intent_id} fails and is delivered again rather than plan around it or retire it",
        )


class CancelFailedError(BrokerUnavailableError):
    """The kill switch could not cancel some working orders; every other one was tried.

    ``canceled`` lists those canceled (or whose cancel is pending), ``failures`` maps
    each order id that failed — or ``"open orders"`` when the broker's list could not be read —
    to its error.
    """

    def __init__(self, canceled: list[str], failures: dict[str, str]):
        self.canceled = canceled
        self.failures = failures
        named = "; ".join(f"{key}: {error}" for key, error in failures.items())
        super().__init__(f"kill switch: {len(failures)} cancel(s) failed ({named}); canceled {len(canceled)}")


class KillSwitchNotAnnouncedError(InfrastructureError):
    """A kill-switch command is saved (and its cancels done), but its events could not be
    published: ``KillSwitchChanged`` and, for a breaker reset, ``CircuitBreakerTripped``.

    The risk state records them as not announced (:class:`SwitchAnnouncement`): Lambda's retry of
    the control event publishes them again, and so does the next scheduled reconciliation, or the
    next kill-switch command (a reset it carries). Repeating the command is safe: a repeat is a
    retry (same id: nothing is written again) or a new command setting the same switch."""

    def __init__(self, command: KillSwitchCommand, announcement: SwitchAnnouncement, cause: BaseException,
                 cancel_failures: int = 0):
        self.command = command
        self.announcement = announcement
        reset = announcement.reset()
        what = f"KillSwitchChanged (switch {'on' if announcement.active else 'off'}: {announcement.reason!r})"
        if reset is not None:
            what += f" and CircuitBreakerTripped ({reset.previous.value} -> {reset.current.value}, the breaker reset)"
        failed = f"; {cancel_failures} cancel(s) failed too" if cancel_failures else ""
        super().__init__(
            f"kill switch command {command.command_id or '(unnamed)'} is saved, but {what} could not be "
            f"published ({type(cause).__name__}: {cause}){failed}: subscribers still see the switch and breaker as "
            "they were. The risk state records them as not announced; a retry of this command, the next "
            "scheduled reconciliation or the next kill-switch command publishes them. Repeating the command "
            "is safe"
        )


class OrderRouter:
    """Intent → risk checks → idempotent submission → fills, plus reconciliation and kill switch.

    ``broker_name`` names the broker it trades (see :data:`BROKER_NAMES`). The stage's router
    (the orders functions) records it in the risk state at every save (``RiskState.broker``). An
    ``operator`` router (the CLI, run from an operator's machine with its own ``ET_ORDERS_*``
    settings) records nothing and refuses — :class:`BrokerMismatchError`, before anything
    changes — to set the kill switch or reconcile when the state records another broker; a
    state that records none (a fresh stage, one saved before the field existed) is not refused.
    """

    retired_lookups_per_symbol = 10
    """At most this many retired orders of a symbol whose positions differ are looked up per
    reconciliation, the most recently retired first — only orders that may have reached the
    broker (recorded ``PENDING``, then retired), never refusals of a check (see
    :meth:`_book_retired`)."""

    def __init__(
        self,
        store: OrdersStore,
        broker: Broker,
        clock: Clock,
        *,
        limits: RiskLimits | None = None,
        events: EventBus | None = None,
        initial_equity: float = 1_000_000.0,
        quantity_step: float = 1.0,
        min_trade_fraction: float = 0.0,
        allocations: Mapping[str, float] | None = None,
        default_allocation: float = 1.0,
        reconcile_grace_seconds: float = reconcile_grace_seconds_for(function_spec("orders")),
        reconcile_on_start: bool = True,
        broker_name: str = "",
        operator: bool = False,
        submit_in_flight_seconds: float = BROKER_REQUEST_TIMEOUT_SECONDS,
        announce_after_seconds: float = float(function_spec("orders").timeout_seconds),
        monotonic: Callable[[], float] = time.monotonic,
    ):
        if broker_name and broker_name not in BROKER_NAMES:
            raise ValueError(f"broker_name {broker_name!r} is none of {', '.join(BROKER_NAMES)}")
        if operator and not broker_name:
            raise ValueError("an operator's router needs its broker_name (to compare with the stage's)")
        self.broker_name = broker_name
        self.operator = operator
        self.store = store
        self.broker = broker
        self.clock = clock
        self.engine = RiskEngine(limits)
        self.events = events
        self.initial_equity = initial_equity
        self.quantity_step = quantity_step
        self.min_trade_fraction = min_trade_fraction
        self.allocations = dict(allocations or {})
        self.default_allocation = default_allocation
        self.reconcile_grace_seconds = reconcile_grace_seconds
        if (isinstance(submit_in_flight_seconds, bool) or not isinstance(submit_in_flight_seconds, int | float)
                or not 0 <= submit_in_flight_seconds < float("inf")):
            raise ValueError(f"submit_in_flight_seconds must be a finite number of seconds >= 0, "
                             f"not {submit_in_flight_seconds!r}")
        # how long after an unknown submit outcome the order may still be landing at the broker
        # (the broker client's request timeout): see _settle_superseded_pending
        self.submit_in_flight_seconds = float(submit_in_flight_seconds)
        if (isinstance(announce_after_seconds, bool) or not isinstance(announce_after_seconds, int | float)
                or not 0 <= announce_after_seconds < float("inf")):
            raise ValueError(f"announce_after_seconds must be a finite number of seconds >= 0, "
                             f"not {announce_after_seconds!r}")
        # how long a kill-switch delivery may still be running after its save (the orders
        # functions' timeout): until then only it announces its command (see apply_kill_switch)
        self.announce_after_seconds = float(announce_after_seconds)
        # how long this process has held a kill-switch announcement: measured on its own clock,
        # which no other machine's skew affects (see _still_held)
        self.monotonic = monotonic
        self._needs_reconcile = reconcile_on_start
        self._deferred: list[BaseModel] | None = None
        self._unsaved: UnsavedRiskState | None = None  # a failed batch's risk state
        self._unpublished: list[BaseModel] = []  # a failed batch's events

    @contextmanager
    def batch(self) -> Iterator[OrderRouter]:
        """Handle several intents with shared state read once and events published once.

        Inside the block the router works over a :class:`BatchingOrdersStore`; at the end the
        events of the whole batch go out in one call and then the risk state is written back —
        each also when the other failed, and also when an intent failed, so the effects of those
        that succeeded are never lost. A batch belongs to one thread (a Lambda invocation);
        outside batches the router may be shared. Events that cannot be published at the end (EventBridge down past its retries) go out
        with the next batch of this router: the intents that made them are done for idempotency,
        and their redeliveries answer from the idempotency table without making them again.
        """
        if self._deferred is not None:  # already batching
            yield self
            return
        durable = self.store
        batching = BatchingOrdersStore(durable, carried=self._unsaved, limits=self.limits,
                                       initial_equity=self.initial_equity)
        self._unsaved = None
        self.store, self._deferred = batching, self._unpublished
        self._unpublished = []
        try:
            yield self
        finally:
            deferred, self._deferred = self._deferred, None
            self.store = durable
            # the events first: they describe work already done (orders sent, fills applied),
            # whatever the save does; the save, whose attempts ride out throttling, comes last
            # so a save the deadline refuses (see MIN_TIME_LEFT_MS) does not take the events
            # with it. Each runs whether the other failed; if both fail, the save's error is
            # raised with the publish's as its context
            try:
                self._publish(deferred)
            except Exception:
                self._unpublished = deferred  # the next batch sends them first
                raise
            finally:
                try:
                    batching.flush()
                except (InfrastructureError, ConcurrencyError):
                    # the batch's intents are done for idempotency: keep their risk changes for
                    # the next batch of this container to merge and write (see BatchingOrdersStore)
                    self._unsaved = batching.unsaved()
                    raise
                # a saved merge that did not keep a published breaker state says so, after the
                # batch's own events (behind them when those wait for the next batch)
                corrections = [_breaker_event(t, self.clock.now()) for t in batching.take_corrections()]
                if corrections and self._unpublished:
                    self._unpublished.extend(corrections)
                elif corrections:
                    try:
                        self._publish(corrections)
                    except Exception:
                        self._unpublished = corrections
                        raise

    @property
    def limits(self) -> RiskLimits:
        return self.engine.limits

    # ------------------------------------------------------------------------------------------
    # Intents
    # ------------------------------------------------------------------------------------------

    def handle(self, intent: OrderIntent) -> IntentOutcome:
        """Turn one intent into orders, exactly once whatever the number of deliveries.

        A redelivery first marks the attempt on the intent's own unsent orders
        (:meth:`touch_pending`), before anything can fail — a container's first reconciliation
        included — so reconciliation, which measures its grace from an order's last attempt,
        leaves them to this delivery and the next ones."""
        self.touch_pending(intent)
        if self._needs_reconcile:
            self.reconcile()
        events: list[BaseModel] = []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            outcome = IntentOutcome(intent.intent_id, intent.symbol, attempts=attempt)
            made = len(events)
            try:
                self._handle_once(intent, outcome, events)
            except ConcurrencyError:
                # the risk state of this attempt was not saved: its breaker transition and the
                # intent's own refusal are made again by the next attempt (what it wrote to the
                # store — fills, orders — is not, and its events stay)
                events[made:] = [e for e in _without_intent_refusals(events[made:], intent)
                                 if not isinstance(e, CircuitBreakerTripped)]
                if attempt == MAX_ATTEMPTS:
                    self._publish(events)
                    raise
                log.info("intent %s lost a risk-state race; retrying", intent.intent_id)
                _backoff(attempt)
                continue
            except Exception:
                # what happened before the failure stays done (a fill booked from this price, an
                # order submitted): its events go out now, since a redelivery will not make them
                # again. The intent's own refusal is not among them: the redelivery refuses it
                # again, and only the delivery that completes the intent announces it
                self._publish(_without_intent_refusals(events, intent))
                raise
            self._publish(events)
            return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    def touch_pending(self, intent: OrderIntent) -> list[str]:
        """Record an attempt (``updated_at`` = now) on the intent's own PENDING orders: recorded
        by an earlier delivery whose submit never reached the broker (refused keys, an outage, a
        crash), they are sent by this delivery or a later one. Reconciliation measures its grace
        from ``updated_at``, and the deployed grace is longer than the queue's redelivery gap
        (:func:`reconcile_grace_seconds_for`): while SQS keeps delivering the intent its orders
        are never retired ``NOT_AT_BROKER`` (which would let the redelivery complete without
        trading). Once the intent is done or dead-lettered nothing sends them: a delivery refused
        (``STALE_INTENT``...) retires them itself, and the symbol's next intent retires any left
        before it plans (:meth:`_settle_superseded_pending`: the grace must not make it count
        them as working), reconciliation a grace after the last attempt. A first delivery has
        none: the batch's copy of the working orders answers without a read. An order another
        writer moved on meanwhile is left as it is (conditional write). Returns the ids touched."""
        touched = []
        for order in self.store.list_orders(working_only=True):
            if order.intent_id != intent.intent_id or order.status is not OrderStatus.PENDING:
                continue
            attempt = order.model_copy(update={"updated_at": self.clock.now()})
            if self.store.update_order(attempt, expected_status=OrderStatus.PENDING,
                                       expected_filled=order.filled_quantity):
                touched.append(order.client_order_id)
        return touched

    def _handle_once(self, intent: OrderIntent, outcome: IntentOutcome, events: list[BaseModel]) -> None:
        state = self.store.load_risk_state()
        wall = self.clock.now()
        now = clock_now(self.limits, wall, intent.timestamp)
        symbol = intent.symbol

        refused = self._refused_intent(intent, state, wall)
        if refused is not None:
            code, message = refused
            outcome.rejections.append({"reason": code.value, "message": message})
            events.append(
                OrderRejected(
                    client_order_id=None, intent_id=intent.intent_id, symbol=symbol,
                    reason_code=code.value, message=message, timestamp=wall,
                )
            )
            self._retire_refused_pending(intent, code, message, events, outcome)
            return

        refresh = getattr(self.store, "refresh_symbol", None)  # batch copies: see BatchingOrdersStore
        if refresh is not None:
            refresh(symbol)
        # The intent's price is also the newest market observation of the symbol: it fills the
        # paper broker's working orders (decided on earlier bars) and becomes the next reference.
        # Every paper order is recorded here before it reaches the broker, so a symbol without
        # working orders in the store has nothing to fill at the broker either.
        reference = _reference_for(state.marks.get(symbol), intent.timestamp)
        # The orders whose broker record this attempt has read and synced: the store holds that
        # answer, so none is looked up again below (each lookup is an Alpaca request, and Alpaca
        # limits their rate; see docs/orders-and-risk.md, "When a broker's fills are booked")
        read: set[str] = set()
        if state.kill_switch:  # before the price fills anything: a working order is canceled, not filled
            # a CancelFailedError propagates; handle() publishes the cancels that went through
            self._cancel_working(f"kill switch: {state.kill_switch_reason}", events, read)
        # before anything counts the symbol's working orders (the paper fills, the plan)
        self._settle_superseded_pending(intent, events, outcome, read)
        outcome.fills += self._book_broker_progress(intent, events, read)
        state.marks[symbol] = Mark(
            price=intent.reference_price,
            timestamp=intent.timestamp,
            previous_price=reference.price if reference else None,
            previous_timestamp=reference.timestamp if reference else None,
        )

        positions = {p.symbol: p for p in self.store.list_positions()}
        equity = self.equity(positions.values(), state)
        transition = self.engine.update_breaker(state, equity, now.astimezone(UTC).date())
        if transition is not None:
            events.append(_breaker_event(transition, wall))
        daily_loss, drawdown = state.losses()
        outcome.account = {"equity": equity, "daily_loss": daily_loss, "drawdown": drawdown,
                           "trading_state": state.effective_state.value}

        working = self.store.list_orders(working_only=True)
        held = positions[symbol].quantity if symbol in positions else 0.0
        working_here = working_quantity(working, symbol)
        own_pending = [o for o in working if o.intent_id == intent.intent_id and o.status is OrderStatus.PENDING]
        resolved = {o.client_order_id for o in own_pending}
        if own_pending:
            # recorded by an earlier delivery of this intent that failed before the broker had it:
            # the planner would count it as working and plan nothing, so it would never be sent.
            # It is looked up at the broker and, if absent, checked again and sent (as any PENDING
            # order found on redelivery), before anything more is planned. A flip's opening leg is
            # held back, as on a first delivery, when its closing leg did not go out in full;
            # the legs start where the replan below would start them (before this intent's own)
            other_gross = self._other_gross(positions, working, state, symbol)
            origin = held + working_here - self._own_effect(intent, working)
            closing_leg = leg_order_id(intent, 0)
            for existing in sorted(own_pending, key=lambda o: o.client_order_id != closing_leg):
                outcome.resolved_existing += 1
                context = OrderContext(now, reference, held + working_here - existing.signed_quantity, other_gross, held)
                outcome.fills += self._resolve(
                    existing, events,
                    recheck=self._pending_recheck(intent, state, context, origin, events, outcome, read),
                    outcome=outcome, read=read,
                )
            positions = {p.symbol: p for p in self.store.list_positions()}
            working = self.store.list_orders(working_only=True)
            held = positions[symbol].quantity if symbol in positions else 0.0
            working_here = working_quantity(working, symbol)
        if equity <= 0 and intent.target_position != 0.0:
            # a target is a fraction of equity: of none, no shares. The plan below is the exit to
            # flat, which the breaker decides like any order (HALTED and latched: refused until an
            # operator resets it; after the reset, REDUCING: it goes out); the target is refused
            code = (RejectReason.KILL_SWITCH if state.kill_switch
                    else RejectReason.HALTED if state.trading_state is TradingState.HALTED
                    else RejectReason.REDUCING_ONLY)
            message = (f"target {intent.target_position:+g} for {symbol} refused: equity {equity:,.2f} is not "
                       f"positive, so the only target is flat (trading {state.effective_state.value}: "
                       f"{state.kill_switch_reason if state.kill_switch else state.state_reason})")
            log.warning("intent %s: %s", intent.intent_id, message)
            outcome.rejections.append({"reason": code.value, "message": message})
            events.append(
                OrderRejected(
                    client_order_id=None, intent_id=intent.intent_id, symbol=symbol,
                    reason_code=code.value, message=message, timestamp=wall,
                )
            )

        def plan(position: float, working: float) -> list[Order]:
            return plan_orders(
                intent, position=position, working=working, equity=equity,
                step=self.quantity_step, now=wall, min_trade_fraction=self.min_trade_fraction,
                allocation=self.allocation(symbol),
            )

        planned = deque(plan(held, working_here))
        seen = {o.client_order_id for o in planned}
        replanned = False
        potential = held + working_here
        origin = potential  # where this intent's legs start (on a redelivery: before its own legs)
        opening_leg = leg_order_id(intent, 1)  # a plan has a second leg only for a flip: the opening one
        other_gross = self._other_gross(positions, working, state, symbol)

        while planned:
            order = planned.popleft()
            context = OrderContext(now, reference, potential, other_gross, held)
            cut: OrderCut | None = None
            planned_quantity = order.quantity
            decision = self.engine.check(order, state, context)
            if order.client_order_id == opening_leg:
                # sent only once its closing leg went out in full (else it would be checked and
                # placed as if the position had closed); a check that refuses it anyway says why
                held_back = self._closing_leg_incomplete(intent, origin) if decision.accepted else None
                if held_back is not None:
                    decision = RiskDecision(False, RejectReason.CLOSING_LEG_INCOMPLETE, held_back)
            elif decision.reason in (RejectReason.MAX_ORDER_QUANTITY, RejectReason.MAX_ORDER_NOTIONAL):
                # reducing exposure, it is cut down to the per-order limits rather than rejected on
                # every bar: the next intent plans the rest from the position. The id stays the
                # leg's, so a redelivery finds the cut order recorded
                cut = self.engine.cut_to_order_limits(order, context, self.quantity_step)
                if cut is not None:
                    log.warning("intent %s: %s", intent.intent_id, cut.message)
                    order = order.model_copy(update={"quantity": cut.quantity})
                    decision = self.engine.check(order, state, context)
            reason = decision.reason or RejectReason.INVALID_ORDER  # used only when rejected
            record = order if decision.accepted else order.model_copy(
                update={"status": OrderStatus.REJECTED, "reject_code": reason.value,
                        "reject_reason": decision.message}
            )
            if not self.store.create_order(record):
                if not replanned:
                    # a redelivery: the position already holds this intent's recorded legs, so a plan
                    # from it can differ from the first one (a flip whose closing leg was recorded
                    # plans one leg, numbered 0 — the closing leg's id — and its opening leg would
                    # never be placed). Plan again from the position before this intent's own
                    # orders: the first plan's legs, those not yet recorded among them placed now.
                    replanned = True
                    before = held + working_here - self._own_effect(intent, working)
                    origin = before
                    missing = [o for o in plan(before, 0.0) if o.client_order_id not in seen]
                    planned.extend(missing)
                    seen.update(o.client_order_id for o in missing)
                if order.client_order_id in resolved:
                    continue  # resolved above, before planning
                # The decision was recorded before (a redelivery, or a concurrent delivery): the
                # stored order is authoritative — look it up at the broker, never order again.
                outcome.resolved_existing += 1
                existing = self.store.get_order(order.client_order_id)
                if existing is not None:
                    # a PENDING order the broker never received is checked again before it is sent:
                    # the kill switch, the breaker or the limits may have changed since it was recorded
                    pending = OrderContext(now, reference, potential - existing.signed_quantity, other_gross, held)
                    outcome.fills += self._resolve(
                        existing, events,
                        recheck=self._pending_recheck(intent, state, pending, origin, events, outcome, read),
                        outcome=outcome, read=read,
                    )
                continue
            if not decision.accepted:
                events.append(_rejected_event(record, wall))
                outcome.rejections.append(
                    {"client_order_id": order.client_order_id, "reason": reason.value,
                     "message": decision.message}
                )
                continue
            self.engine.record(order, state, now)
            potential += order.signed_quantity
            held += order.signed_quantity  # the worst case: the earlier legs are the ones that fill
            final, fills = self._submit(order, events)
            outcome.fills += fills
            described = describe(final)
            if cut is not None:
                described.update(planned_quantity=planned_quantity, cut=cut.message)
            outcome.orders.append(described)

        self._record_broker(state)
        self.store.save_risk_state(state)

    def _book_broker_progress(self, intent: OrderIntent, events: list[BaseModel], read: set[str]) -> int:
        """Book what the broker did with the symbol's working orders before the intent plans;
        returns the fills applied.

        A broker with ``on_price`` (the paper broker) first fills them at the intent's price, and
        reports only what that call filled. Then, for every broker, the symbol's acknowledged
        working orders (``SUBMITTED``, ``PARTIALLY_FILLED``) not reported are looked up and synced
        if the broker moved them on: an Alpaca market order that filled milliseconds after its
        submit, a paper fill whose booking failed (a fill write that failed, ``on_price`` raising
        after it had filled another order), an order canceled or rejected there. Unbooked, such a
        fill would be missing from equity (the daily-loss and drawdown limits, the targets' size)
        and from the position the plan and the ``REDUCING`` check start from, until the next
        reconciliation. A report with nothing new is not written. A lookup that fails raises: the
        intent fails and is delivered again (as in :meth:`_settle_superseded_pending`), never
        planned on books the broker may have moved on. PENDING and UNKNOWN orders are settled
        elsewhere (those of other intents by :meth:`_settle_superseded_pending` just before, this
        intent's own by :meth:`_resolve`, reconciliation). A symbol without working orders in
        the store has nothing to fill or look up: every order is recorded before the broker has it.

        ``read`` holds the ids whose broker record this attempt has already read and synced (the
        kill switch's cancels, :meth:`_settle_superseded_pending`): those are not looked up again.
        The ids reported or looked up here are added to it, so that :meth:`_resolve` does not look
        them up again either (a redelivery's own working legs). With Alpaca every lookup is a
        request under its rate limit: an order costs its submit and, while it is working, one
        lookup per intent of its symbol (normally one: a market order fills within ms).
        """
        symbol = intent.symbol
        here = [o for o in self.store.list_orders(working_only=True) if o.symbol == symbol]
        if not here:
            return 0
        fills = 0
        reported: set[str] = set()
        on_price = getattr(self.broker, "on_price", None)
        if on_price is not None:
            for report in on_price(symbol, intent.reference_price, intent.timestamp):
                reported.add(report.client_order_id)
                fills += self._sync_report(report, events)[0]
        # the listing above still holds them as they were: only the reported ones were synced
        # (and those read before it; their listed copies may be out of date, they are skipped)
        skip = reported | read
        read |= reported
        for order in sorted(here, key=lambda o: o.client_order_id):
            if order.client_order_id in skip or order.status not in (
                OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED
            ):
                continue
            try:
                report = self.broker.get_order_by_client_id(order.client_order_id)
            except BrokerError as exc:
                log.warning("lookup of %s, a working %s order, failed (%s): intent %s fails and is "
                            "delivered again rather than plan on books the broker may have moved on",
                            order.client_order_id, symbol, exc, intent.intent_id)
                raise
            read.add(order.client_order_id)
            if report is not None and (
                report.status is not order.status
                or abs(report.filled_quantity - order.filled_quantity) > QUANTITY_EPSILON
            ):
                fills += self._sync_report(report, events, order)[0]
        return fills

    def _settle_superseded_pending(
        self, intent: OrderIntent, events: list[BaseModel], outcome: IntentOutcome, read: set[str] | None = None,
    ) -> None:
        """Settle the symbol's PENDING and UNKNOWN orders of *other* intents before this one plans.

        SQS delivers a FIFO group's next intent only once the earlier one is done (completed, or
        refused ``STALE_INTENT`` on a redelivery) or moved to the dead-letter queue, and only an
        intent's own deliveries send its PENDING orders (:meth:`_resolve`). Such an order was
        recorded by an earlier intent of the symbol and its broker status is not known here:

        * PENDING: its submit never reached the broker, and nothing will send it any more;
        * UNKNOWN: its submit's outcome was unknown (a timeout, a 5xx) and the lookup right after
          did not find it (or failed); usually the submit did land.

        Counted as working — the grace keeps reconciliation off it for minutes after its last
        attempt (:meth:`touch_pending`, the UNKNOWN mark) — it would make this intent trade
        against quantity that may never come (a flat target selling what was never bought; the
        same target sending nothing). Each is looked up at the broker: found → synced (it is
        working, or filled); absent → retired ``NOT_AT_BROKER`` (published as reconciliation's
        retirements are, listed in ``outcome.superseded``; a submit still under way that lands
        after all is canceled at the broker by the sync, see ``_sync_report``). An UNKNOWN order
        whose submit gave up less than :attr:`submit_in_flight_seconds` ago (the broker client's
        request timeout) is not called absent: its request may still be landing — retired now, a
        late landing would trade beside this intent's own orders until the sync cancels it — so
        the intent fails (:class:`SubmitInFlightError`) and is delivered again. A lookup that
        fails raises too: this intent fails and is delivered again, as when its own order cannot
        be looked up — an order the broker may hold is never retired, nor planned around. The ids
        found and synced are added to ``read`` (not looked up again by :meth:`_book_broker_progress`)."""
        stale = [o for o in self.store.list_orders(working_only=True)
                 if o.symbol == intent.symbol and o.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN)
                 and o.intent_id != intent.intent_id]
        for order in sorted(stale, key=lambda o: o.client_order_id):
            unsent = order.status is OrderStatus.PENDING
            try:
                report = self.broker.get_order_by_client_id(order.client_order_id)
            except BrokerError as exc:
                log.warning("lookup of %s, the %s order of %s (no longer delivered), failed (%s): "
                            "intent %s fails and is delivered again", order.client_order_id,
                            "unsent" if unsent else "UNKNOWN", order.intent_id, exc, intent.intent_id)
                raise
            if report is not None:
                outcome.fills += self._sync_report(report, events, order)[0]
                if read is not None:
                    read.add(order.client_order_id)
                continue
            what = f"{order.client_order_id} ({order.side.value} {order.quantity:g} {order.symbol}) of intent {order.intent_id}"
            if unsent:
                message = (f"{what} was never sent, and its intent is no longer delivered (done or "
                           f"dead-lettered): superseded by intent {intent.intent_id}")
            else:
                age = (self.clock.now() - order.updated_at).total_seconds()
                if age < self.submit_in_flight_seconds:
                    error = SubmitInFlightError(order.client_order_id, intent.intent_id, age,
                                                self.submit_in_flight_seconds)
                    log.warning("%s", error)
                    raise error
                message = (f"{what} had an unknown submit outcome and the broker does not have it "
                           f"{age:.0f} s after the submit gave up: superseded by intent {intent.intent_id}")
            if self._reject_absent(order, RejectReason.NOT_AT_BROKER, message, events, into=outcome.superseded):
                log.warning("retired %s", message)

    def _retire_refused_pending(
        self, intent: OrderIntent, code: RejectReason, why: str, events: list[BaseModel],
        outcome: IntentOutcome,
    ) -> None:
        """Retire the refused intent's own PENDING orders (recorded by an earlier delivery whose
        submit never reached the broker): the intent completes without trading, so nothing will
        send them. Each is looked up first: found → synced (never retired: the broker has it);
        absent → ``NOT_AT_BROKER`` with the refusal as the reason, reported in ``outcome``. A
        lookup that fails leaves the order as it is — the refusal stands and the intent
        completes; the symbol's next intent settles the order before it plans
        (:meth:`_settle_superseded_pending`, failing while the broker cannot answer), or
        reconciliation a grace after its last attempt."""
        own = [o for o in self.store.list_orders(working_only=True)
               if o.intent_id == intent.intent_id and o.status is OrderStatus.PENDING]
        for order in sorted(own, key=lambda o: o.client_order_id):
            try:
                report = self.broker.get_order_by_client_id(order.client_order_id)
            except BrokerError as exc:
                log.warning("lookup of %s, refused intent %s's unsent order, failed (%s): left for the "
                            "symbol's next intent or reconciliation", order.client_order_id, intent.intent_id, exc)
                continue
            if report is not None:
                outcome.fills += self._sync_report(report, events, order)[0]
                continue
            message = f"never sent: its intent was refused ({code.value}: {why})"
            self._reject_absent(order, RejectReason.NOT_AT_BROKER, message, events, into=outcome.rejections)

    def _pending_recheck(
        self, intent: OrderIntent, state: RiskState, context: OrderContext, origin: float,
        events: list[BaseModel], outcome: IntentOutcome, read: set[str] | None = None,
    ) -> Callable[[Order], RiskDecision]:
        """The decision on one of this intent's PENDING orders the broker does not have, before
        it is sent (see :meth:`_resolve`): the pre-trade checks as they stand now and, for a
        flip's opening leg, the rule that holds it back when its closing leg did not go out in
        full (``origin``: where the intent's legs start). A closing leg still working is looked
        up at the broker first (unless this attempt read it already: ``read``, see
        :meth:`_resolve`): it may have been canceled or rejected there meanwhile.

        The order is checked as recorded, never cut again: a PENDING order absent at the broker
        may still be on its way there (a concurrent delivery's submit, a lookup that lags the
        submit), and cut under the same id, the broker could hold one quantity and the store
        another. A limit lowered since it was recorded refuses it; the next intent plans the rest
        and cuts it to the new limit."""

        def recheck(order: Order) -> RiskDecision:
            decision = self.engine.check(order, state, context)
            if not decision.accepted or order.client_order_id != leg_order_id(intent, 1):
                return decision
            close = self.store.get_order(leg_order_id(intent, 0))
            if close is not None and close.status in WORKING_STATUSES and close.status is not OrderStatus.PENDING:
                outcome.fills += self._resolve(close, events, read=read)
            held_back = self._closing_leg_incomplete(intent, origin)
            if held_back is not None:
                return RiskDecision(False, RejectReason.CLOSING_LEG_INCOMPLETE, held_back)
            return decision

        return recheck

    def _closing_leg_incomplete(self, intent: OrderIntent, origin: float) -> str | None:
        """Why a flip's opening leg is held back (None: it is not): its closing leg (leg 0) did not
        go out in full — rejected (by a check or by the broker), canceled before it filled, or cut
        down to the per-order limits. Sent anyway, the opening leg would be checked and placed as
        if the position had closed. ``origin`` is the position the intent's legs start from (the
        closing leg was planned to take it to flat); the next intent replans from the position."""
        coid = leg_order_id(intent, 0)
        close = self.store.get_order(coid)
        whole = abs(closing_quantity(origin, self.quantity_step))
        if close is None:
            why = "was not recorded"
        elif close.status is OrderStatus.REJECTED:
            why = f"was rejected ({close.reject_code}: {close.reject_reason})"
        elif close.status is OrderStatus.CANCELED and close.filled_quantity < close.quantity - QUANTITY_EPSILON:
            why = f"was canceled with {close.filled_quantity:g} of {close.quantity:g} filled"
        elif close.quantity < whole - QUANTITY_EPSILON:
            why = f"was cut to {close.quantity:g} of {whole:g} by the per-order limits"
        else:
            return None
        return (f"opening leg of the flip not sent: its closing leg {coid} {why}; "
                "the next intent plans again from the position")

    def _own_effect(self, intent: OrderIntent, working: list[Order]) -> float:
        """The signed quantity this intent's recorded legs add to held + working, as read in
        ``working`` (the working orders read with the position): a leg working there its whole
        quantity (filled part held, the rest working), a finished one what it filled.

        A leg that is not in ``working`` and is working now was recorded after that read — by a
        concurrent delivery of the same intent — so ``working`` does not count it and nothing is
        taken off for it. Taken off, it made the position before this intent's legs look short by
        the leg (from flat, -500 for a BUY 500), the replan a flip, and its "opening leg" a second
        order for the intent."""
        effect = 0.0
        for leg in (0, 1):  # a plan has at most a closing and an opening leg
            coid = leg_order_id(intent, leg)
            listed = next((o for o in working if o.client_order_id == coid), None)
            if listed is not None:
                effect += listed.signed_quantity
                continue
            order = self.store.get_order(coid)
            if order is None or order.status in WORKING_STATUSES:
                continue
            sign = 1.0 if order.side is Side.BUY else -1.0
            effect += sign * order.filled_quantity
        return effect

    def _refused_intent(
        self, intent: OrderIntent, state: RiskState, wall: datetime
    ) -> tuple[RejectReason, str] | None:
        """Why the intent is refused before any order is planned (None: it is not).

        Dated ahead of the wall clock (beyond ``max_intent_lead_seconds``): its price would become
        the symbol's newest mark and every genuine intent after it would look stale."""
        lead = (intent.timestamp - wall).total_seconds()
        if lead > self.limits.max_intent_lead_seconds:
            return RejectReason.FUTURE_INTENT, (
                f"intent for {intent.symbol}@{intent.timestamp.isoformat()} is dated {lead:,.0f} s ahead of "
                f"the clock (max {self.limits.max_intent_lead_seconds:,.0f} s)"
            )
        mark = state.marks.get(intent.symbol)
        if mark is not None and intent.timestamp < mark.timestamp:
            return RejectReason.STALE_INTENT, (
                f"intent for {intent.symbol}@{intent.timestamp.isoformat()} is older than the "
                f"latest price seen ({mark.timestamp.isoformat()})"
            )
        max_age = self.limits.max_intent_age_seconds
        if max_age is not None and -lead > max_age:
            return RejectReason.STALE_INTENT, f"intent is {-lead:,.0f} s old (max {max_age:,.0f} s)"
        return None

    # ------------------------------------------------------------------------------------------
    # Submission and synchronisation
    # ------------------------------------------------------------------------------------------

    def _submit(self, order: Order, events: list[BaseModel]) -> tuple[Order, int]:
        """Send a freshly recorded PENDING order; returns the stored order and fills applied."""
        try:
            report = self.broker.submit(order)
        except BrokerRejectedError as exc:
            rejected = order.model_copy(
                update={
                    "status": OrderStatus.REJECTED,
                    "reject_code": RejectReason.BROKER_REJECTED.value,
                    "reject_reason": exc.reason,
                    "updated_at": self.clock.now(),
                }
            )
            if not self.store.update_order(
                rejected, expected_status=order.status, expected_filled=order.filled_quantity
            ):  # changed meanwhile (the kill switch retired it): what is stored stands, announced by its writer
                return self.store.get_order(order.client_order_id) or order, 0
            events.append(_rejected_event(rejected, self.clock.now()))
            return rejected, 0
        except (UnknownOutcomeError, DuplicateClientOrderIdError) as exc:
            log.warning("submit of %s: %s; resolving by lookup", order.client_order_id, exc)
            unknown = order.model_copy(
                update={"status": OrderStatus.UNKNOWN, "updated_at": self.clock.now()}
            )
            self.store.update_order(
                unknown, expected_status=order.status, expected_filled=order.filled_quantity
            )
            fills = self._resolve(unknown, events)
            return self.store.get_order(order.client_order_id) or unknown, fills
        fills, stored = self._sync_report(report, events, order)  # publishes OrderSubmitted
        return stored or order, fills

    def _resolve(
        self, order: Order, events: list[BaseModel], recheck: Callable[[Order], RiskDecision] | None = None,
        outcome: IntentOutcome | None = None, read: set[str] | None = None,
    ) -> int:
        """Settle a stored, still-working order by looking its id up at the broker.

        Found → synced. Not found and PENDING (the submit never happened: a crash between the
        conditional put and the call) → submitted now under the same id, if ``recheck`` (the
        pre-trade checks as they stand now) accepts it, else recorded REJECTED with its reason
        (and reported in ``outcome``); the broker's own uniqueness on client order ids makes a
        racing submit harmless. Not found and UNKNOWN → left for reconciliation, which marks it
        NOT_AT_BROKER after the grace period, or for the symbol's next intent, which settles it
        before it plans (:meth:`_settle_superseded_pending`). A lookup that fails is left to reconciliation too —
        except on the intent's own PENDING order (``recheck`` given): whatever stopped the lookup
        (the broker refusing our keys, :class:`BrokerAuthenticationError`, or an outage), it
        raises, so the intent fails and SQS delivers it again until the broker answers, instead
        of completing with its order never sent (reconciliation would later retire it
        NOT_AT_BROKER, and the trade would be dropped).

        ``read``: the ids whose broker record this attempt of the intent has already read and
        synced (the kill switch's cancels, :meth:`_settle_superseded_pending`,
        :meth:`_book_broker_progress`, an earlier call of this one). ``order``, read from the store since, holds
        that answer: it is not looked up again (one Alpaca request saved; what the broker did in
        the milliseconds since is booked by the symbol's next intent or reconciliation). An
        order found here is added to it.
        """
        if order.status.terminal:
            return 0
        if read is not None and order.client_order_id in read:
            return 0
        try:
            report = self.broker.get_order_by_client_id(order.client_order_id)
        except BrokerUnavailableError as exc:
            if recheck is not None and order.status is OrderStatus.PENDING:
                # the intent's own order, never sent: only this intent's deliveries send it, so
                # the intent fails and is delivered again (its attempts keep reconciliation off
                # it: see touch_pending). Sent later under the same id: it cannot be placed twice
                log.warning("lookup of %s, %s's own unsent order, failed (%s): the intent fails and "
                            "is delivered again", order.client_order_id, order.intent_id, exc)
                raise
            log.warning("lookup of %s failed (%s); reconciliation will settle it",
                        order.client_order_id, exc)
            return 0
        if report is not None:
            if read is not None:
                read.add(order.client_order_id)
            return self._sync_report(report, events, order)[0]
        if order.status is OrderStatus.PENDING:
            decision = recheck(order) if recheck is not None else None
            if decision is not None and not decision.accepted:
                code = decision.reason or RejectReason.INVALID_ORDER
                self._reject_absent(order, code, decision.message, events,
                                    into=None if outcome is None else outcome.rejections)
                return 0
            _, fills = self._submit(order, events)
            return fills
        return 0

    def _reject_absent(
        self, order: Order, code: RejectReason, message: str, events: list[BaseModel], now: datetime | None = None,
        into: list[dict[str, str]] | None = None,
    ) -> bool:
        """Record a working order the broker does not have (never sent, or not found there) as
        REJECTED with its reason, unless the stored order changed meanwhile; True when recorded
        (then also listed in ``into``, an outcome's list, when given)."""
        now = now or self.clock.now()
        # a retirement is a write after the order's creation, and says so: a record whose
        # updated_at is its created_at is a refusal never sent (see _may_have_reached_broker),
        # also under a clock that has not moved since the order was recorded
        at = now if now != order.created_at else now + timedelta(microseconds=1)
        rejected = order.model_copy(
            update={"status": OrderStatus.REJECTED, "reject_code": code.value, "reject_reason": message,
                    "updated_at": at}
        )
        if self.store.update_order(rejected, expected_status=order.status, expected_filled=order.filled_quantity):
            events.append(_rejected_event(rejected, now))
            if into is not None:
                into.append({"client_order_id": order.client_order_id, "reason": code.value, "message": message})
            return True
        return False

    def _sync_report(
        self, report: BrokerOrder, events: list[BaseModel], order: Order | None = None
    ) -> tuple[int, Order | None]:
        """Bring the stored order (and position) to the broker's report.

        Returns the number of fills applied (0 or 1) and the order as now stored. The events of
        what changed are added: ``OrderSubmitted`` at the first report of an order not yet
        acknowledged (also one found by lookup after a lost submit response), ``OrderFilled``,
        then ``OrderCanceled`` or ``OrderRejected`` (``BROKER_REJECTED``: refused after it was
        accepted) when it finishes so.
        """
        for _ in range(MAX_ATTEMPTS):
            order = self.store.get_order(report.client_order_id) if order is None else order
            if order is None:
                log.error("broker reports %s, which is not in the store", report.client_order_id)
                return 0, None
            mismatch = report_matches(order, report)
            if mismatch:
                # the broker's order of this id is another order (a second system on the account,
                # a replay after the store was reset): nothing in it is ours to book or to cancel;
                # reconciliation names it and halts the symbol while it lasts
                log.error("broker order %s is not the order stored under that id (%s): not applied",
                          order.client_order_id, "; ".join(mismatch))
                return 0, order
            retired = _retired(order)
            if retired and report.status in WORKING_STATUSES:
                # retired here (the kill switch, reconciliation, a re-check that refused it), yet
                # live at the broker: a submit already under way landed — cancel it there rather
                # than reopen it here
                log.warning("order %s was retired (%s) but the broker has it %s: canceling it",
                            order.client_order_id, order.reject_code, report.status.value)
                report = self.broker.cancel(order.client_order_id) or report
            problem = unbookable(report)
            if problem is not None:
                # an adapter could not read the broker's order in full (Alpaca: a status alpaca-py
                # does not know), or it reports a fill without its price: nothing in it can be
                # applied; reconciliation reads it again and halts the symbol while it lasts
                log.warning("broker report of %s not applied: %s", order.client_order_id, problem)
                return 0, order
            if report_is_behind(order, report) and not retired:
                # an out-of-date read (a reconcile that raced a fill, a lagging broker API): the
                # stored order is ahead — keep it; reconciliation reports the mismatch if it lasts.
                # A retired order live at the broker is the exception: its report reopens it (Alpaca
                # cancels asynchronously) so that its fills are booked
                log.warning("broker report of %s is behind the stored order (%s %s filled; report %s %s): "
                            "not applied", order.client_order_id, order.status.value, order.filled_quantity,
                            report.status.value, report.filled_quantity)
                return 0, order
            now = self.clock.now()
            updated = order_after_report(order, report, now)
            if updated.status is OrderStatus.REJECTED and updated.reject_code is None:
                # refused by the broker after it had accepted the order (Alpaca answers later)
                updated = updated.model_copy(update={"reject_code": RejectReason.BROKER_REJECTED.value})
            fill = fill_from_progress(order, report, report.updated_at)
            if fill is None:
                if updated == order:
                    return 0, order
                if self.store.update_order(
                    updated, expected_status=order.status, expected_filled=order.filled_quantity
                ):
                    events.extend(_report_events(order, updated, report, now))
                    return 0, updated
            else:
                # conditional on the order as read, status included: a copy read before the kill
                # switch retired the order (the submit's own PENDING copy, a lookup's listing)
                # does not overwrite the retirement; read again, it is canceled at the broker above
                position = self.store.apply_fill(updated, fill, expected_status=order.status,
                                                 expected_filled=order.filled_quantity)
                if position is not None:
                    filled = OrderFilled(
                        client_order_id=order.client_order_id, fill_id=fill.fill_id,
                        symbol=order.symbol, side=order.side, quantity=fill.quantity,
                        price=fill.price, fee=fill.fee, position_after=position.quantity,
                        order_status=updated.status, timestamp=fill.timestamp,
                    )
                    events.extend(_report_events(order, updated, report, now, filled))
                    return 1, updated
            order = None  # another writer moved the order on: read it again
        raise ConcurrencyError(f"order {report.client_order_id} kept changing while syncing")

    # ------------------------------------------------------------------------------------------
    # Equity and exposure
    # ------------------------------------------------------------------------------------------

    def allocation(self, symbol: str) -> float:
        """The fraction of equity budgeted to ``symbol`` (its intents' targets are fractions of it)."""
        return self.allocations.get(symbol, self.default_allocation)

    def equity(self, positions: Sequence[Position] | Any, state: RiskState) -> float:
        """Initial equity + realised P&L − fees + unrealised P&L at the latest marks."""
        return account_equity(self.initial_equity, positions, state.marks)

    @staticmethod
    def _other_gross(positions: dict[str, Position], working: list[Order], state: RiskState,
                     symbol: str) -> float:
        symbols = (set(positions) | {o.symbol for o in working}) - {symbol}
        gross = 0.0
        for s in symbols:
            held = positions[s].quantity if s in positions else 0.0
            qty = max(abs(held), abs(held + working_quantity(working, s)))  # working may never fill
            mark = state.marks.get(s)
            price = mark.price if mark else (positions[s].average_price if s in positions else 0.0)
            gross += qty * price
        return gross

    # ------------------------------------------------------------------------------------------
    # Kill switch and breaker reset
    # ------------------------------------------------------------------------------------------

    def command_time(self) -> datetime:
        """The time to stamp an operator's kill-switch command made now with (the CLI's): AWS's
        clock in whole seconds — the ``Date`` of DynamoDB's answer to a read of the risk state
        (the store's ``server_time``) —, the clock and precision of the control events' ``time``.
        So the CLI's commands and the events are ordered by one clock, and within one second
        :func:`~ensemble_trader.domain.risk.kill_switch_verdict`'s tie rule decides (an "on"
        applies, an "off" does not lift the switch) — not the operator machine's clock, whose
        microseconds (or skew) would make an "on" put in the same second (or minutes later)
        stale. A store with no server clock (in memory): this router's clock, in whole seconds."""
        server_time = getattr(self.store, "server_time", None)
        if server_time is not None:
            return server_time()
        return self.clock.now().replace(microsecond=0)

    def set_kill_switch(
        self, active: bool, reason: str, *, reset_breaker: bool = False,
        issued_at: datetime | None = None, command_id: str | None = None,
    ) -> dict[str, Any]:
        """Turn the kill switch on (halt new orders, cancel working ones) or off; lifting it may
        also reset a latched circuit breaker (an operator decision). A command that
        :class:`KillSwitchCommand` refuses (an empty reason, a reset with the switch on): an
        :class:`InvalidMessageError` naming the field, and nothing changes. ``issued_at`` and
        ``command_id`` order the command among others (see :meth:`apply_kill_switch`)."""
        return self.apply_kill_switch(KillSwitchCommand.parse({
            "active": active, "reason": reason, "reset_breaker": reset_breaker,
            "issued_at": issued_at, "command_id": command_id,
        }))

    def apply_kill_switch(self, command: KillSwitchCommand) -> dict[str, Any]:
        """Apply an operator's kill-switch command, in the order the commands were issued.

        A command issued before the one the risk state holds is *stale*: nothing changes, the
        result says ``"ignored"`` and why, and no error is raised (the control event is not
        retried for ever). The command the state holds, delivered again — Lambda retries an
        invocation that failed after the flag was saved (a cancel or the publish failed) —
        does not write the flag again (nor repeat a breaker reset) but does the rest again: the
        cancels when it turned the switch on, and ``KillSwitchChanged``. See
        :func:`~ensemble_trader.domain.risk.kill_switch_verdict`. A breaker reset's
        ``CircuitBreakerTripped`` is published only by the delivery whose save applied the command:
        never by a retry — also not by a delivery that ran at the same time as its twin and lost
        the save to it (it decides again on the stored state, which is then a retry).

        A stale command is made loud: ``KillSwitchCommandIgnored`` is published, and a stale
        "on" — trading goes on although an operator asked to stop it — is logged as an error
        (a stale "off" as a warning: the switch stays on, the safe side).

        The save is conditional on the version and on the switch as read, so a flip by hand made
        meanwhile (which need not bump the version) is not overwritten: the command is decided
        again on the stored state (:class:`ConcurrencyError`, up to ``MAX_ATTEMPTS`` times).

        The result: ``active``, ``reason`` and ``trading_state`` of the switch as it now stands,
        ``canceled``, ``applied`` (False: stale), ``retry`` (True: a redelivery finishing its
        work), ``ignored`` (why, when stale), ``command_id`` and ``issued_at`` of the command.
        """
        events: list[BaseModel] = []
        # each save's token -> (its reset, whether it may publish a carried reset, when it was
        # loaded): a save reported failed that landed all the same is found by its token
        saves: dict[str, tuple[BreakerTransition | None, bool, float]] = {}
        held_since = self.monotonic()  # since when this delivery holds its mark (see _still_held)
        lost: ConcurrencyError | None = None
        for attempt in range(1, MAX_ATTEMPTS + 2):
            # the reset's transition is this attempt's own: an attempt that lost its save to a twin
            # delivery of the command finds the command stored (a retry), whose save published it
            transition: BreakerTransition | None = None
            mark: SwitchAnnouncement | None = None  # what this delivery announces and then settles
            carried_due = False  # the mark carries an earlier command's reset this delivery may publish
            loaded_at = self.monotonic()
            state = self.store.load_risk_state()
            stored = state.unannounced
            if stored is not None and stored.token in saves:
                # a save of ours landed though the store reported it failed (a write retried after
                # its answer was lost, whose retry failed the condition): this delivery applied it
                transition, carried_due, held_since = saves[stored.token]
                verdict, why, mark = KillSwitchVerdict.APPLY, "", stored
                break
            if attempt > MAX_ATTEMPTS:
                assert lost is not None
                raise lost
            self.require_stage_broker(f"kill switch {'on' if command.active else 'off'}", state)
            verdict, why = kill_switch_verdict(state, command)
            if verdict is not KillSwitchVerdict.APPLY:
                break
            pending = stored
            now = self.clock.now()
            stamp = self._shared_now()  # AWS's clock where the store offers it (see _shared_now)
            apply_kill_switch(state, command, now)
            transition = self.engine.reset_breaker(state, command.reason) if command.reset_breaker else None
            token = uuid.uuid4().hex
            mark = state.unannounced = SwitchAnnouncement.of(state, transition, stamp, pending, token)
            # a carried reset is this save's to publish only once the earlier claim on it lapsed
            # (the delivery that saved or claimed it may still be publishing it); the save below,
            # conditional on the version, is then this delivery's claim
            carried_due = (transition is None and mark.reset() is not None and pending is not None
                           and stamp >= pending.claimed_until(self.announce_after_seconds))
            saves[token] = (transition, carried_due, loaded_at)
            self._record_broker(state)
            try:
                self.store.save_risk_state(state, write_kill_switch=True)
                held_since = loaded_at
                break
            except ConcurrencyError as exc:  # another writer saved first (or ours landed): decide again
                lost = exc
        result: dict[str, Any] = {
            "active": state.kill_switch, "reason": state.kill_switch_reason, "canceled": [],
            "trading_state": state.effective_state.value, "applied": verdict is not KillSwitchVerdict.STALE,
            "retry": verdict is KillSwitchVerdict.RETRY, "command_id": command.command_id,
            "issued_at": command.issued_at.isoformat() if command.issued_at else None,
        }
        if verdict is KillSwitchVerdict.STALE:
            # an ignored ON is an error only when it leaves the switch off (a retried ON after a
            # newer ON changed nothing that matters)
            log.log(logging.ERROR if command.active and not state.kill_switch else logging.WARNING,
                    "kill switch command %s (%s: %s) ignored: %s", command.command_id,
                    "on" if command.active else "off", command.reason, why)
            events.append(KillSwitchCommandIgnored(
                command_id=command.command_id, active=command.active, reason=command.reason,
                issued_at=command.issued_at, switch_active=state.kill_switch, ignored=why,
                timestamp=self.clock.now(),
            ))
            self._publish(events)
            return {**result, "ignored": why}
        switch_only: SwitchAnnouncement | None = None  # a retry's stored mark it holds no claim on
        if verdict is KillSwitchVerdict.RETRY:
            log.warning("kill switch command %s delivered again: %s", command.command_id, why)
            claim = self._claim_left(command.command_id or "") if self.events is not None else None
            if claim is not None:  # the delivery that saved it is over and did not announce it
                claimed_state, mark, held_since = claim
                transition = mark.reset() if mark.still_current(claimed_state)[1] else None
            elif state.unannounced is not None and state.unannounced.command_id == (command.command_id or ""):
                switch_only = state.unannounced  # its KillSwitchChanged goes out again: settled below
        if mark is not None and verdict is KillSwitchVerdict.APPLY and transition is None and carried_due:
            transition = mark.reset()  # an earlier command's reset, carried: not announced yet
        # a retry holding the claim settles the whole mark (its reset published, or no longer the
        # breaker's last move)
        publishes_reset = transition is not None or (verdict is KillSwitchVerdict.RETRY and mark is not None)
        failed: CancelFailedError | None = None
        try:
            canceled = self._cancel_working(f"kill switch: {command.reason}", events) if command.active else []
        except CancelFailedError as exc:  # the flag is on: say what was canceled, then fail
            canceled, failed = exc.canceled, exc
        events.append(
            KillSwitchChanged(active=command.active, reason=command.reason, canceled=canceled,
                              timestamp=self.clock.now())
        )
        if mark is not None and transition is not None and self.events is not None:
            # the cancels (or the save's answer) may have taken this delivery past its hold: then
            # the reset is published only once it holds the mark again
            held = self._still_held(mark, held_since)
            if held is None:
                log.warning("kill switch command %s: held its announcement past %g s and could not claim it "
                            "again; its reset is left to the delivery or run that holds it",
                            command.command_id, self.announce_after_seconds)
                transition, publishes_reset = None, False
            else:
                mark, held_since = held
        if transition is not None:
            events.insert(0, _breaker_event(transition, self.clock.now()))
        try:
            self._publish(events)
        except Exception as exc:
            if mark is None:
                raise
            log.error("kill switch command %s saved but not announced: %s", command.command_id, exc)
            tried = mark if transition is not None else mark.without_reset()
            raise KillSwitchNotAnnouncedError(command, tried, exc,
                                              len(failed.failures) if failed is not None else 0) from exc
        if mark is not None and self.events is not None:  # announced (without a bus: nothing was)
            # a carried reset this delivery left for later stays marked; a retry's claimed mark is
            # settled whole (its reset published, or no longer the breaker's last move)
            self._settle_announced(mark, switch=True, reset=publishes_reset)
        elif switch_only is not None and self.events is not None:
            # a retry within the wait of another delivery's hold: its KillSwitchChanged went out,
            # so that is not published again; the reset is left to the holder
            self._settle_announced(switch_only, switch=True, reset=False)
        if failed is not None:
            raise failed
        return {**result, "canceled": canceled}

    def _announcement_left(self, mark: SwitchAnnouncement | None, now: datetime,
                           command_id: str | None = None) -> SwitchAnnouncement | None:
        """The kill-switch announcement ``mark`` the risk state records as not made (of the command
        ``command_id``, when given) that this router may claim at ``now`` (:meth:`_shared_now`):
        the delivery that saved it, or the last one that claimed it, held it more than
        :attr:`announce_after_seconds` ago, so it publishes it no more (see :meth:`_still_held`) —
        its publish failed, or it died before it could settle the mark. Before that it may still
        be publishing, and a second announcement of its breaker reset would be a second reset for
        subscribers and the ``breaker_transitions`` metric; None then."""
        if mark is None or (command_id is not None and mark.command_id != command_id):
            return None
        if now < mark.claimed_until(self.announce_after_seconds):
            return None
        return mark

    def _durable_store(self) -> OrdersStore:
        """The store a save goes to at once (a batch's store writes the risk state at its end)."""
        return self.store.inner if isinstance(self.store, BatchingOrdersStore) else self.store

    def _shared_now(self) -> datetime:
        """The time a kill-switch announcement is stamped (``saved_at``, ``claimed_at``) and
        compared with: AWS's clock where the store offers it (its ``server_time``, as
        :meth:`command_time`), so that the operator CLI's router, whose machine clock may be off,
        and the Lambdas' stamp and compare on one clock; else this router's clock."""
        server_time = getattr(self._durable_store(), "server_time", None)
        return server_time() if server_time is not None else self.clock.now()

    def _hold_seconds(self) -> float:
        """How long after it loaded the state it saved or claimed a mark with a delivery may
        publish it: :attr:`announce_after_seconds`, less the second AWS's clock is cut to (a
        stamp in whole seconds may be up to 1 s earlier than the read it came from), so that the
        hold ends before another router's clock reaches the mark's ``claimed_until``."""
        whole_seconds = getattr(self._durable_store(), "server_time", None) is not None
        return max(0.0, self.announce_after_seconds - (1.0 if whole_seconds else 0.0))

    def _still_held(self, mark: SwitchAnnouncement, held_since: float) -> tuple[SwitchAnnouncement, float] | None:
        """Whether this delivery, which saved or claimed ``mark`` after loading the state at
        ``held_since`` (:attr:`monotonic`), may publish it now: while :meth:`_hold_seconds` have
        not passed, yes (the mark and ``held_since``); past them another delivery may have
        claimed it, so this one claims it again — it saves the mark with a new claim if the
        stored mark still carries its token (nobody claimed it since) — and holds it anew (the
        mark as claimed and the new ``held_since``), else None: the mark is left to whoever
        holds it, or to a later delivery or run."""
        if self.monotonic() - held_since < self._hold_seconds():
            return mark, held_since
        claim = self._claim(lambda stored, _now: stored if stored.token == mark.token and mark.token else None)
        return None if claim is None else (claim[1], claim[2])

    def _claim_left(self, command_id: str | None = None) -> tuple[RiskState, SwitchAnnouncement, float] | None:
        """Claim the announcement :meth:`_announcement_left` finds in the stored risk state (see
        :meth:`_claim`)."""
        return self._claim(lambda stored, now: self._announcement_left(stored, now, command_id))

    def _claim(self, pick: Callable[[SwitchAnnouncement, datetime], SwitchAnnouncement | None],
               ) -> tuple[RiskState, SwitchAnnouncement, float] | None:
        """Claim the mark ``pick`` chooses of the stored one (at AWS's time now): save it with
        that time as ``claimed_at`` and a new random token, conditionally on the state's version,
        so that of two deliveries that found it at once only the one whose save lands publishes
        it (the other reads the claim and leaves it). A save reported failed whose token is
        stored all the same landed: the claim is this router's. The state as claimed, the
        claimed mark and when the state was loaded for it (:attr:`monotonic`), or None: nothing
        to claim now, another writer kept saving first, or the save failed (logged: the mark is
        left for a later delivery or run)."""
        store = self._durable_store()
        claims: dict[str, float] = {}  # each claim's token -> when its state was loaded
        for attempt in range(1, MAX_ATTEMPTS + 2):
            try:
                loaded_at = self.monotonic()
                state = store.load_risk_state()
                stored = state.unannounced
                if stored is not None and stored.token in claims:  # reported failed, but it landed
                    return state, stored, claims[stored.token]
                if attempt > MAX_ATTEMPTS:
                    log.warning("kill switch announcement not claimed: the risk state kept changing; left "
                                "for a later delivery or run")
                    return None
                if stored is None:
                    return None
                now = self._shared_now()
                mark = pick(stored, now)
                if mark is None:
                    return None
                token = uuid.uuid4().hex
                claims[token] = loaded_at
                state.unannounced = mark.claimed(now, token)
                store.save_risk_state(state)
                return state, state.unannounced, loaded_at
            except ConcurrencyError:
                continue
            except InfrastructureError as exc:
                log.warning("kill switch announcement not claimed (%s: %s): left for a later delivery or run",
                            type(exc).__name__, exc)
                return None
        return None

    def _announce_left(self) -> None:
        """Publish what the risk state records as a kill-switch command not announced, once this
        router holds the claim on it (:meth:`_claim_left`, and :meth:`_still_held` just before the
        publish), then settle it: the reset's ``CircuitBreakerTripped`` while no breaker event
        followed it, and ``KillSwitchChanged`` (with no cancels: those were announced by their own
        events) while the switch is still as that command set it and not announced. For
        reconciliation's runs outside a batch; a publish that fails is logged and leaves the mark
        for a run after the claim lapsed. A router without an event bus announces nothing and
        claims nothing."""
        if self.events is None:
            return
        claim = self._claim_left()
        if claim is None:
            return
        state, mark, held_since = claim
        switch, reset = mark.still_current(state)
        if reset:
            held = self._still_held(mark, held_since)
            if held is None:
                log.warning("kill switch command %s: reconciliation held its announcement past %g s and could "
                            "not claim it again: left", mark.command_id or "(unnamed)", self.announce_after_seconds)
                return
            mark = held[0]
        now = self.clock.now()
        events: list[BaseModel] = []
        if reset:
            events.append(_breaker_event(mark.reset(), now))  # type: ignore[arg-type]
        if switch:
            events.append(KillSwitchChanged(active=mark.active, reason=mark.reason, canceled=[], timestamp=now))
        if events:
            try:
                self.events.publish(events)
            except Exception as exc:  # noqa: BLE001 - the run goes on; a later one tries again
                log.error("kill switch command %s still not announced (%s: %s): a later run tries again",
                          mark.command_id or "(unnamed)", type(exc).__name__, exc)
                return
            log.warning("kill switch command %s announced by reconciliation (%d events): its own delivery "
                        "could not publish them", mark.command_id or "(unnamed)", len(events))
        self._settle_announced(mark, switch=True, reset=True)

    def _settle_announced(self, mark: SwitchAnnouncement, *, switch: bool, reset: bool) -> None:
        """Remove from the stored risk state what this delivery published of ``mark`` (or found no
        longer to announce): its switch (``switch``), its reset (``reset``) — also from a newer
        command's mark that carries it — (:meth:`SwitchAnnouncement.settled`; a routine save:
        the kill-switch attributes are not written). A save that keeps failing is logged and
        leaves the mark, so its events may be published once more (at least once)."""
        store = self._durable_store()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                state = store.load_risk_state()
                if state.unannounced is None:
                    return
                left = state.unannounced.settled(mark, switch, reset)
                if left == state.unannounced:
                    return
                state.unannounced = left
                store.save_risk_state(state)
                return
            except ConcurrencyError:
                if attempt == MAX_ATTEMPTS:
                    log.warning("kill switch command %s announced, but its mark kept changing: left; "
                                "its events may be published once more", mark.command_id)
                    return
            except InfrastructureError as exc:
                log.warning("kill switch command %s announced, but its mark could not be removed (%s): "
                            "its events may be published once more", mark.command_id, exc)
                return

    def _cancel_working(self, reason: str, events: list[BaseModel], read: set[str] | None = None) -> list[str]:
        """Cancel every working order, ours and any the broker lists as open; the ids canceled.

        An order counts as canceled once the broker reports it canceled, or still working after
        the cancel request: Alpaca cancels asynchronously (``pending_cancel``; the sync publishes
        ``OrderCanceled`` when it ends).
        One failure does not stop the others: every order is tried, then
        :class:`CancelFailedError` names each failure (a broker list that cannot be read is one
        too, after our own working orders were canceled; so is a cancel whose answer could not be
        synced — whatever raised there: the order counts as canceled, the entry fails and its retry
        syncs it again). The ids of ours whose cancel's report
        was synced are added to ``read`` (an intent's attempt does not look them up again: the
        report is the broker's order as the cancel left it).
        """
        ids = {o.client_order_id for o in self.store.list_orders(working_only=True)}
        failures: dict[str, str] = {}
        try:
            ids |= {o.client_order_id for o in self.broker.list_open_orders()}
        except BrokerError as exc:
            failures["open orders"] = str(exc)
        canceled = []
        for coid in sorted(ids):
            try:
                report = self.broker.cancel(coid)
                if report is None:  # not at the broker: a PENDING order of ours is never to be sent
                    stored = self.store.get_order(coid)
                    if stored is not None and stored.status is OrderStatus.PENDING and self._reject_absent(
                        stored, RejectReason.KILL_SWITCH, f"never sent: {reason}", events
                    ):
                        canceled.append(coid)
                    continue
            except (BrokerError, InfrastructureError, ConcurrencyError) as exc:
                failures[coid] = f"{type(exc).__name__}: {exc}"
                continue
            if report.status is OrderStatus.CANCELED or report.status in WORKING_STATUSES:
                canceled.append(coid)
            try:
                if self.store.get_order(coid) is not None:
                    self._sync_report(report, events)
                    if read is not None:
                        read.add(coid)
            except Exception as exc:  # one order's answer must not stop the others' cancels
                # the cancel went through; booking the broker's answer did not (a report that
                # cannot be applied, a store that failed): that order's failure, the loop goes on
                failures[coid] = f"canceled, but its report was not synced: {type(exc).__name__}: {exc}"
        if canceled:
            log.warning("canceled %d working orders (%s)", len(canceled), reason)
        if failures:
            raise CancelFailedError(canceled, failures)
        return canceled

    # ------------------------------------------------------------------------------------------
    # Reconciliation
    # ------------------------------------------------------------------------------------------

    def reconcile(self) -> ReconciliationReport:
        """Compare orders and positions with the broker (authoritative); repair or halt symbols.

        Raises if the broker cannot be reached; a container that has not reconciled yet tries
        again at its next intent (until then its intents fail and SQS redelivers them). An
        operator's router first checks that the stage trades its broker
        (:meth:`require_stage_broker`). The stage's router records its broker in the risk state
        also when no halt changes, so a scheduled reconciliation brings the record up to date
        after a deployment changed the broker.

        While the kill switch is on, a run cancels every working order too, as the kill-switch
        entry does: an intent of a batch that read the risk state before the switch was set may
        have placed one after the entry's cancel pass (a batch sees the switch at its next batch).

        A run that fails part way (a lookup or a listing the broker does not answer) still
        publishes the events of what it did — the fills it booked are in the store, so no later
        run books (or publishes) them again — and halts the symbols it had already found not
        reconcilable (fail closed: the failure of another call does not make them consistent);
        it lifts no halt (a symbol it did not get to compare is not known to agree). Then it
        raises.

        Runs overlap (the schedule, each container's first intent, operators), so a run lifts
        only a halt that is as it was when the run began — the halts are read before the
        comparisons, and each run marks the halts it sets or confirms with its own id
        (``RiskState.halt_runs``): a halt that another run set or confirmed since this one read
        them is newer than this run's look at the symbol, and stands until a run begun after it
        lifts it.

        A run outside a batch (the schedule's, an operator's) first publishes a kill-switch command
        the risk state records as not announced, once the delivery that saved it has ended
        (:meth:`_announce_left`).
        """
        started = self.store.load_risk_state()  # the halts as they stand before any comparison
        self.require_stage_broker("reconciliation", started)
        if self._deferred is None:  # a scheduled or an operator's run: not a batch's first one
            self._announce_left()
        halts = {symbol: started.halt(symbol) for symbol in started.halted_symbols}
        report = ReconciliationReport()
        events: list[BaseModel] = []
        now = self.clock.now()
        run = f"{now.isoformat()}/{uuid.uuid4().hex[:12]}"  # this run's mark on the halts it sets
        try:
            self._compare_with_broker(report, events, now)
        except Exception as failure:
            if report.failures:
                try:
                    self._apply_halts(report, events, now, run, halts, lift=False)
                except Exception as exc:  # the broker's failure is the one to report
                    log.error("reconciliation failed part way (%s), and halting %s failed too: %s",
                              failure, sorted(report.failures), exc)
            try:
                self._publish(events)
            except Exception as exc:  # so is it when the events cannot go out either
                log.error("reconciliation failed part way (%s), and publishing its %d events failed too: %s",
                          failure, len(events), exc)
            raise
        try:
            self._apply_halts(report, events, now, run, halts)
            state = self.store.load_risk_state()
            if state.kill_switch:  # an order placed by a batch that read the state before the switch
                for coid in self._cancel_working(f"kill switch: {state.kill_switch_reason}", events):
                    report.synced.append(f"{coid}: canceled, the kill switch is on")
        finally:
            self._publish(events)
        self._needs_reconcile = False
        return report

    def _compare_with_broker(self, report: ReconciliationReport, events: list[BaseModel], now: datetime) -> None:
        """Reconciliation's comparisons (see :meth:`reconcile`): the working orders, the broker's
        open orders, the positions (and the second look at those that differ). Fills and retirements
        are booked as they are found, their events added to ``events``; the symbols not
        reconcilable are added to ``report.failures``."""
        checked = set()
        for order in self.store.list_orders(working_only=True):
            checked.add(order.client_order_id)
            self._reconcile_order(order, report, events, now)

        broker_open = self.broker.list_open_orders()
        known = set()
        for broker_order in broker_open:
            stored = self.store.get_order(broker_order.client_order_id)
            if stored is None:
                continue
            known.add(broker_order.client_order_id)
            if _retired(stored):  # not working here, live there: the sync cancels it, books its fills
                self._sync_report(broker_order, events, stored)
                report.synced.append(
                    f"{stored.client_order_id}: retired ({stored.reject_code}) here, "
                    f"{broker_order.status.value} at the broker"
                )
        for symbol, reasons in foreign_orders(broker_open, known).items():
            for reason in reasons:
                report.fail(symbol, reason)

        ours = {p.symbol: p.quantity for p in self.store.list_positions()}
        theirs = {p.symbol: p.quantity for p in self.broker.list_positions()}
        differing = compare_positions(ours, theirs)
        if differing:
            differing = self._recheck_positions(differing, checked, report, events, now)
        for symbol, problem in differing.items():
            report.fail(symbol, problem)

    def _reconcile_order(
        self, order: Order, report: ReconciliationReport, events: list[BaseModel], now: datetime,
        judge: bool = True,
    ) -> None:
        """Look a working order up at the broker and sync it when the broker moved it on; when
        ``judge`` (an order this run has not judged yet) also count it, retire it when the broker
        never had it (past the grace), and report a wait or a mismatch."""
        broker_order = self.broker.get_order_by_client_id(order.client_order_id)
        verdict = compare_order(order, broker_order, now, self.reconcile_grace_seconds)
        if verdict.verdict is Verdict.SYNC:
            assert broker_order is not None
            self._sync_report(broker_order, events, order)
            report.synced.append(verdict.detail)
        if not judge:
            return
        report.checked_orders += 1
        if verdict.verdict is Verdict.NOT_AT_BROKER:
            self._reject_absent(order, RejectReason.NOT_AT_BROKER, verdict.detail, events, now)
            report.not_at_broker.append(verdict.detail)
        elif verdict.verdict is Verdict.WAIT:
            report.waiting.append(verdict.detail)
        elif verdict.verdict is Verdict.MISMATCH:
            report.fail(order.symbol, verdict.detail)

    def _recheck_positions(
        self, differing: dict[str, str], checked: set[str], report: ReconciliationReport,
        events: list[BaseModel], now: datetime,
    ) -> dict[str, str]:
        """The symbols whose positions still differ once their orders are synced again.

        The working orders are synced first and the positions compared last, while the orders
        functions keep trading: an order created after the working orders were listed, or looked
        up before it filled, and filled before the positions were read, shows as a position the
        broker has and the store not yet (or the other way round) — a halt (``SYMBOL_HALTED``
        refuses exits too) and a ``ReconciliationFailed`` alarm for nothing but timing. So for
        each differing symbol its working orders are listed again from the store (including
        those created since the first pass; a batch's copies are read afresh), looked up and
        synced when the broker moved them on, and both positions of the symbol read again; only
        a difference that remains is returned. An order of the symbol the first pass did not see
        is judged as the first pass judges (a mismatch with the broker's order of its id is a
        failure); one it saw was retired or failed there already, and is only synced here. A
        lookup that fails raises, as in the first pass."""
        forget = getattr(self.store, "forget_copies", None)  # batch copies: see BatchingOrdersStore
        if forget is not None:
            forget()
        for order in sorted((o for o in self.store.list_orders(working_only=True) if o.symbol in differing),
                            key=lambda o: o.client_order_id):
            self._reconcile_order(order, report, events, now, judge=order.client_order_id not in checked)
        ours = {p.symbol: p.quantity for p in self.store.list_positions() if p.symbol in differing}
        theirs = {p.symbol: p.quantity for p in self.broker.list_positions() if p.symbol in differing}
        remaining = compare_positions(ours, theirs)
        if remaining and self._book_retired(set(remaining), report, events):
            ours = {p.symbol: p.quantity for p in self.store.list_positions() if p.symbol in remaining}
            theirs = {p.symbol: p.quantity for p in self.broker.list_positions() if p.symbol in remaining}
            remaining = compare_positions(ours, theirs)
        for symbol in sorted(set(differing) - set(remaining)):
            log.info("reconciliation: %s %s at the first comparison, the same after its orders were "
                     "synced again (an order placed or filled while reconciliation ran)",
                     symbol, differing[symbol])
        return remaining

    def _book_retired(self, symbols: set[str], report: ReconciliationReport, events: list[BaseModel]) -> int:
        """Look up the retired orders of ``symbols`` that may have reached the broker and that it
        never acknowledged here, and sync those it has (their fills booked); the number of fills
        booked.

        Such an order was recorded ``PENDING`` and retired before any answer of the broker was
        synced (:func:`_may_have_reached_broker`): by the kill switch while its submit was under
        way, as ``NOT_AT_BROKER`` after an unknown submit outcome, or on the re-check of a
        ``PENDING`` order while a concurrent delivery's submit was under way — and it may have
        landed. Open at the broker, the first pass cancels it (its open orders); filled before
        any run saw it open (an Alpaca market order fills within milliseconds), it is not open any
        more, and its fill is the difference between the positions. So for a symbol whose
        positions still differ after its working orders were synced again, the store's orders
        are read (a scan of the table: only when a symbol differs) and those orders looked up.
        An order refused by a check when it was planned was never sent and is not looked up (a
        halted symbol collects one such refusal per intent; each lookup is an Alpaca request).
        The bound: at most :attr:`retired_lookups_per_symbol` lookups per symbol per run, the
        most recently retired first. One the broker has is synced; one it does not is left as it
        is. A lookup that fails raises, as in the first pass."""
        retired = sorted(
            (o for o in self.store.list_orders() if o.symbol in symbols and _may_have_reached_broker(o)),
            key=lambda o: (o.updated_at, o.client_order_id), reverse=True,
        )
        fills = 0
        looked_up: dict[str, int] = {}
        for order in retired:
            if looked_up.get(order.symbol, 0) >= self.retired_lookups_per_symbol:
                continue
            looked_up[order.symbol] = looked_up.get(order.symbol, 0) + 1
            broker_order = self.broker.get_order_by_client_id(order.client_order_id)
            if broker_order is None:
                continue
            log.warning("reconciliation: %s was retired (%s) but the broker has it %s, %g filled: synced",
                        order.client_order_id, order.reject_code, broker_order.status.value,
                        broker_order.filled_quantity)
            booked, _ = self._sync_report(broker_order, events, order)
            fills += booked
            report.synced.append(
                f"{order.client_order_id}: retired ({order.reject_code}) here, "
                f"{broker_order.status.value}/{broker_order.filled_quantity:g} at the broker"
            )
        return fills

    def _apply_halts(
        self, report: ReconciliationReport, events: list[BaseModel], now: datetime, run: str,
        halts: Mapping[str, tuple[str, str] | None], lift: bool = True,
    ) -> None:
        """Halt the symbols that failed, marked with this ``run``'s id (a halt that stood is
        confirmed: its mark is renewed); lift the halts of symbols that now agree — those still
        as they were when the run began (``halts``, :meth:`RiskState.halt` of each then). A halt
        set or confirmed since by another run is newer than this run's look and stays
        (``lift=False``, a run that failed part way: lift none). A lost conditional save is
        decided again on the stored state."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            state = self.store.load_risk_state()
            before = (dict(state.halted_symbols), dict(state.halt_runs))
            agreeing = [s for s in before[0] if s not in report.failures] if lift else []
            cleared = [s for s in agreeing if halts.get(s) == state.halt(s)]
            for s in cleared:
                del state.halted_symbols[s]
                state.halt_runs.pop(s, None)
            for symbol, reasons in report.failures.items():
                state.halted_symbols[symbol] = "reconciliation failed: " + "; ".join(reasons)
                state.halt_runs[symbol] = run
            recorded = state.broker
            self._record_broker(state)
            if (state.halted_symbols, state.halt_runs) == before and state.broker == recorded:
                break
            try:
                self.store.save_risk_state(state)
                break
            except ConcurrencyError:
                if attempt == MAX_ATTEMPTS:
                    raise
        report.cleared_symbols = cleared
        for symbol in sorted(set(agreeing) - set(cleared)):
            log.warning("reconciliation: %s agrees in this run, but its halt was set or confirmed by another "
                        "run since this one began (%s): kept, the next run decides", symbol,
                        before[0].get(symbol, "?"))
        for symbol, reasons in report.failures.items():
            events.append(ReconciliationFailed(symbol=symbol, reasons=reasons, timestamp=now))

    # ------------------------------------------------------------------------------------------
    # The broker the stage trades
    # ------------------------------------------------------------------------------------------

    def _record_broker(self, state: RiskState) -> None:
        """Write this router's broker into ``state`` before it is saved (the stage's router only)."""
        if self.broker_name and not self.operator:
            state.broker = self.broker_name

    def require_stage_broker(self, action: str, state: RiskState | None = None) -> None:
        """For an operator's router: raise :class:`BrokerMismatchError` (``action`` names the
        command) unless the risk state (``state``, else the stored one) records this router's
        broker or none. The stage's own router is never refused: its deployment decides the
        broker, and its next save records it."""
        if not self.operator:
            return
        stored = (state if state is not None else self.store.load_risk_state()).broker
        if stored and stored != self.broker_name:
            raise BrokerMismatchError(action, self.broker_name, stored)

    def _publish(self, events: list[BaseModel]) -> None:
        if self._deferred is not None:
            self._deferred.extend(events)
        elif events and self.events is not None:
            self.events.publish(list(events))
        events.clear()  # only once published: a failed publish leaves them for the caller


def _reference_for(mark: Mark | None, bar_time: datetime) -> Reference | None:
    """The reference of an intent: the last price before its bar (the previous one on redelivery)."""
    if mark is None:
        return None
    if mark.timestamp < bar_time:
        return Reference(mark.price, mark.timestamp)
    if mark.previous_price is not None and mark.previous_timestamp is not None:
        return Reference(mark.previous_price, mark.previous_timestamp)
    return None


def _without_intent_refusals(events: list[BaseModel], intent: OrderIntent) -> list[BaseModel]:
    """``events`` without the refusals of ``intent`` itself (``OrderRejected`` of no order:
    ``STALE_INTENT``, ``FUTURE_INTENT``, a target refused for equity at or below zero). Nothing is
    stored for them, so every delivery that reaches them makes them again: they are published
    by the delivery that completes the intent (and Powertools' idempotency replays a completed
    intent without routing it), never by one that fails — one refusal per intent."""
    return [e for e in events if not (isinstance(e, OrderRejected) and e.client_order_id is None
                                      and e.intent_id == intent.intent_id)]


def _rejected_event(order: Order, when: datetime) -> OrderRejected:
    return OrderRejected(
        client_order_id=order.client_order_id, intent_id=order.intent_id, symbol=order.symbol,
        reason_code=order.reject_code or RejectReason.BROKER_REJECTED.value,
        message=order.reject_reason or "", timestamp=when,
    )


def _report_events(
    order: Order, updated: Order, report: BrokerOrder, when: datetime, filled: OrderFilled | None = None
) -> list[BaseModel]:
    """The events of one applied broker report, in the order they happened."""
    events: list[BaseModel] = []
    if order.status in (OrderStatus.PENDING, OrderStatus.UNKNOWN):  # its first acknowledgement
        events.append(
            OrderSubmitted(
                client_order_id=order.client_order_id, intent_id=order.intent_id, symbol=order.symbol,
                side=order.side, quantity=order.quantity, broker_order_id=report.broker_order_id,
                timestamp=when,
            )
        )
    if filled is not None:
        events.append(filled)
    if updated.status is order.status:
        return events
    if updated.status is OrderStatus.CANCELED:  # also after partial fills
        events.append(OrderCanceled(client_order_id=order.client_order_id, symbol=order.symbol,
                                    reason=report.reject_reason or "canceled", timestamp=when))
    elif updated.status is OrderStatus.REJECTED:
        events.append(_rejected_event(updated, when))
    return events


def _breaker_event(t: BreakerTransition, when: datetime) -> CircuitBreakerTripped:
    """``t`` as published (``t.correction``: one of a merged save's re-announcements,
    :meth:`BatchingOrdersStore.take_corrections`, not a move of the account)."""
    return CircuitBreakerTripped(
        previous=t.previous.value, current=t.current.value, reason=t.reason, equity=t.equity,
        daily_loss=t.daily_loss, drawdown=t.drawdown, timestamp=when, latched=t.latched,
        correction=t.correction,
    )


# ----------------------------------------------------------------------------------------------
# The Lambda side: one SQS record → one intent, and the wiring to AWS
# ----------------------------------------------------------------------------------------------

VALIDATED_FIELDS = (
    "strategy_id", "symbol", "timestamp", "target_position", "reference_price", "model_version",
    "regime", "confidence",
)
"""Intent fields the idempotency record validates: the same intent id with other values is refused."""


@dataclass
class RouteStats:
    """What the intent consumers of this process did (the demo's report reads it)."""

    intents: int = 0
    dead_lettered: int = 0
    replayed: int = 0  # deliveries answered from the idempotency table (not routed again)
    orders: int = 0
    fills: int = 0
    route_us: list[float] = field(default_factory=list)
    limit: int = 100_000

    def record(self, result: dict[str, Any], micros: float) -> None:
        self.intents += 1
        self.orders += len(result.get("orders", []))
        self.fills += int(result.get("fills", 0))
        if len(self.route_us) < self.limit:
            self.route_us.append(micros)

    def percentiles(self) -> dict[str, float]:
        if not self.route_us:
            return {}
        ordered = sorted(self.route_us)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {"p50": pct(0.50), "p99": pct(0.99), "mean": sum(ordered) / len(ordered)}


MIN_TIME_LEFT_MS = 15_000
"""An intent is not started with less of the invocation left, so that the batch's end — the
events' ``PutEvents`` calls, then the risk-state save (:meth:`OrderRouter.batch`) — fits before
the invocation's deadline with the retries that ride out ordinary throttling. No AWS attempt
starts with less than 7.5 s left (:func:`~ensemble_trader.adapters.aws.clients.attempt_seconds`
of the clients' config: connect 2 s + read 5 s + 0.5 s; :mod:`ensemble_trader.runtime.deadline`),
and the save's last attempt needs that much at its start. 15 s = those 7.5 s; 6 s for the
``PutEvents`` call before it (normally tens of ms) and for the save to ride out a throttling
episode of about 2 s (botocore's jittered throttling back-offs of up to 1, 2 and 4 s can put its
successful attempt up to ~6 s in); and 1.5 s for the intent started at the limit (a dozen
DynamoDB calls and a broker call take a few hundred ms). The events go first because they need
only one attempt's time: a save throttled for longer than the reserve holds is refused without
taking them with it (its state is carried to the container's next batch). An invocation of the
30 s orders function therefore starts intents in its first 15 s — a batch of ten normally takes
well under one —; a later one fails without being started and SQS delivers it again."""

REPLAYED = "replayed"
"""Set in an outcome Powertools answers from the idempotency table (a redelivered intent that
was routed before): the consumer does not count it again in the route metrics."""

ROUTE_STATS = RouteStats()
"""Process-wide statistics of the orders consumers (a Lambda container, or the local stack)."""


def reset_route_stats() -> None:
    global ROUTE_STATS
    ROUTE_STATS = RouteStats()


BREAKER_STATE_VALUES = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
"""``account_breaker_state``: the circuit breaker's state as a number (alarm: >= 1)."""


def state_gauges(state: RiskState) -> tuple[tuple[str, str, int], ...]:
    """The account's state as the alarms ``BreakerTripped`` and ``KillSwitchOn`` read it, as
    ``(name, unit, value)``: ``account_breaker_state`` (:data:`BREAKER_STATE_VALUES`) and
    ``kill_switch_active`` (0/1). Reported after each routed intent and by each reconciliation."""
    return (("account_breaker_state", "None", BREAKER_STATE_VALUES[state.trading_state]),
            ("kill_switch_active", "Count", 1 if state.kill_switch else 0))


class IntentConsumer:
    """Parses one queued intent and routes it; what cannot be processed goes to the DLQ with its reason.

    ``route`` is the router call, normally wrapped in Powertools' idempotency (see
    :func:`build_service`); it takes the intent as a JSON-able dict and returns the outcome dict.
    A malformed intent or an intent id seen before with different content is *permanent*: it is
    dead-lettered with its reason, an OrderRejected event is published, and the record counts as
    processed (retrying cannot fix it). Anything else that fails is counted (``intents_failed``:
    the partial batch response hides it from Lambda's error metrics) and raised, so the record is
    reported as a batch-item failure and SQS delivers it again. Every routed intent also reports
    the state it left the account in: ``account_breaker_state`` (the circuit breaker: 0 ACTIVE,
    1 REDUCING, 2 HALTED) and ``kill_switch_active`` (0/1), so their alarms hold while it lasts.
    """

    def __init__(
        self,
        router: OrderRouter,
        dead_letters: Any,
        *,
        route: Any = None,
        metrics: Any = None,
        conflict_errors: tuple[type[BaseException], ...] = (),
        min_time_left_ms: int = MIN_TIME_LEFT_MS,
        announce_rejection: Callable[[OrderRejected, str, Any], Any] | None = None,
    ):
        self.router = router
        # publishes a dead-lettered record's OrderRejected once per SQS message id (see
        # rejection_announcer); None: published directly, at each refusal
        self.announce_rejection = announce_rejection
        self.min_time_left_ms = min_time_left_ms
        self.dead_letters = dead_letters
        self.route = route or (lambda intent: router.handle(OrderIntent.parse(intent)).as_dict())
        self.metrics = metrics
        self.conflict_errors = conflict_errors

    def process(self, body: str | bytes, record: Any = None, lambda_context: Any = None) -> dict[str, Any]:
        """Route one queued intent. With ``lambda_context``, a record is not started when less than
        ``min_time_left_ms`` of the invocation remains: it fails (SQS delivers it again) instead of
        being cut off by the timeout, which would also lose the batch's end — the risk state and the
        events of the intents already done, which their redeliveries do not make again."""
        if lambda_context is not None:
            left = lambda_context.get_remaining_time_in_millis()
            if left < self.min_time_left_ms:
                self._metric("intents_deferred", "Count", 1)
                self._touch_deferred(body)
                raise InfrastructureError(
                    f"{left} ms left in this invocation, under {self.min_time_left_ms} ms: the intent is "
                    "left for its next delivery, so the batch can end cleanly"
                )
        try:
            return self._process(body, record, lambda_context)
        except SubmitInFlightError:
            # an expected wait, not a fault: an earlier intent's submit may still be landing; the
            # redelivery settles it. Counted with the deferrals, so OrdersFailedItems stays quiet
            self._metric("intents_deferred", "Count", 1)
            raise
        except Exception:
            self._metric("intents_failed", "Count", 1)  # the batch-item failure SQS retries
            raise

    def process_record(self, record: Mapping[str, Any], lambda_context: Any = None) -> dict[str, Any]:
        """Route the intent of one SQS record of an order-intents batch (its ``body``), as
        :meth:`process`; a record without a usable body (none, or not text) is dead-lettered
        ``MALFORMED_INTENT`` naming ``body``: no delivery of it can be routed."""
        return self.process(record.get("body"), record, lambda_context)

    def _touch_deferred(self, body: str | bytes) -> None:
        """A deferred intent still counts as attempted: its own unsent orders are touched
        (:meth:`OrderRouter.touch_pending`), so a redelivery that is deferred does not stretch the
        time between attempts past the reconciliation's grace. Best effort: a body that does not
        parse, or a store that fails, changes nothing (the intent fails and is delivered again
        either way); the failure is logged."""
        touch = getattr(self.router, "touch_pending", None)
        if touch is None or not isinstance(body, (str, bytes)):  # a test's stand-in router; no body to parse
            return
        try:
            touch(OrderIntent.parse(body))
        except Exception as exc:  # noqa: BLE001 - best effort: the deferral below must still be raised
            log.warning("deferred intent: its unsent orders could not be touched (%s: %s)", type(exc).__name__, exc)

    def _process(self, body: str | bytes, record: Any, lambda_context: Any = None) -> dict[str, Any]:
        import time

        from ensemble_trader.domain.errors import MISSING, FieldProblem, InvalidMessageError

        started = time.perf_counter_ns()
        if not isinstance(body, (str, bytes)):  # an SQS record without a body, or not one of text
            missing = body is None and (not isinstance(record, Mapping) or "body" not in record)
            problem = FieldProblem("body", MISSING if missing else type(body).__name__, "must be the intent's JSON text")
            return self._dead_letter(record if record is not None else body, RejectReason.MALFORMED_INTENT,
                                     str(InvalidMessageError("SQSRecord", [problem])), None, lambda_context)
        try:
            intent = OrderIntent.parse(body)
        except InvalidMessageError as exc:
            return self._dead_letter(record if record is not None else body, RejectReason.MALFORMED_INTENT,
                                     str(exc), None, lambda_context)
        try:
            result = self.route(intent=intent.model_dump(mode="json"))
        except self.conflict_errors as exc:
            return self._dead_letter(
                record if record is not None else body, RejectReason.INTENT_CONFLICT,
                f"intent {intent.intent_id} was processed before with different content ({exc})", intent,
                lambda_context,
            )
        except StoreRefusedError:  # the store's refusal, not the intent's fault: the intent fails,
            raise  # counted and alarmed, and reaches the queue's DLQ whole after its receives
        except DataError as exc:  # valid as a message, impossible to trade: no retry can change it
            return self._dead_letter(record if record is not None else body, RejectReason.MALFORMED_INTENT,
                                     f"intent {intent.intent_id} cannot be routed: {exc}", intent, lambda_context)
        micros = (time.perf_counter_ns() - started) / 1e3
        if result.get(REPLAYED):  # a redelivery answered with the stored outcome: nothing new happened
            ROUTE_STATS.replayed += 1
            self._metric("intents_replayed", "Count", 1)
            return result
        ROUTE_STATS.record(result, micros)
        self._metric("orders_route_us", "Microseconds", micros)
        self._metric("intents_routed", "Count", 1)
        self._metric("orders_placed", "Count", len(result.get("orders", [])))
        self._metric("orders_rejected", "Count", len(result.get("rejections", [])))
        self._metric("fills_applied", "Count", result.get("fills", 0))
        account = result.get("account") or {}  # absent when the intent stopped before the breaker
        for key in ("equity", "daily_loss", "drawdown"):
            if key in account:
                self._metric(f"account_{key}", "None", account[key])
        self._state_metrics()
        return result

    def _state_metrics(self) -> None:
        """The breaker's state and the kill switch after this intent (the batch's cached risk state)."""
        store = getattr(self.router, "store", None)
        if self.metrics is None or store is None:
            return
        try:
            state = store.load_risk_state()
        except InfrastructureError:  # the intent is done: a missing sample is better than a redelivery
            return
        for name, unit, value in state_gauges(state):
            self._metric(name, unit, value)

    def _dead_letter(self, record: Any, reason: RejectReason, message: str,
                     intent: OrderIntent | None, lambda_context: Any = None) -> dict[str, Any]:
        """Send the record to the dead-letter queue with its reason, log it, publish its
        ``OrderRejected`` and count it. SQS delivers a record again when its batch's invocation
        failed after it was dead-lettered (a timeout, the batch's end failing): each refusal sends
        (the queue deduplicates within five minutes), logs and counts again, but the
        ``OrderRejected`` goes out once per SQS message (``messageId``) when an
        :attr:`announce_rejection` is given (the Lambda's: :func:`rejection_announcer`)."""
        text = f"{reason.value}: {message}"
        try:
            self.dead_letters.send(record, text, source="orders")
        except Exception as exc:  # the intent fails and is delivered again: its reason is logged meanwhile
            self._log_dead_letter(record, reason, text, intent, refused=exc)
            raise
        self._log_dead_letter(record, reason, text, intent)
        rejected = OrderRejected(
            client_order_id=None,
            intent_id=intent.intent_id if intent else None,
            symbol=intent.symbol if intent else None,
            reason_code=reason.value, message=message[:1000], timestamp=self.router.clock.now(),
        )
        message_id = record.get("messageId") if isinstance(record, Mapping) else None
        if self.announce_rejection is not None and isinstance(message_id, str) and message_id:
            self.announce_rejection(rejected, message_id, lambda_context)
        elif self.router.events is not None:
            self.router.events.publish([rejected])
        ROUTE_STATS.dead_lettered += 1
        self._metric("intents_dead_lettered", "Count", 1)
        return {"dead_lettered": True, "reason": reason.value, "message": message}

    def _log_dead_letter(self, record: Any, reason: RejectReason, text: str, intent: OrderIntent | None,
                         refused: Exception | None = None) -> None:
        """One warning per dead letter, naming the SQS message (id and group, None for a record
        that lacks them or a body given alone), the intent id when the intent parsed, the reject
        code and the reason (cut by :func:`logged_reason`), also as ``dead_letter``
        on the log record. When the dead-letter queue ``refused`` the letter (the intent fails
        and is delivered again) the warning says so, with the reason, and has no ``dead_letter``."""
        raw = record if isinstance(record, Mapping) else {}
        attributes = raw.get("attributes")
        group = attributes.get("MessageGroupId") if isinstance(attributes, Mapping) else None
        message_id = raw.get("messageId")
        text = logged_reason(text)
        fields = {
            "source": "orders",
            "message_id": message_id if isinstance(message_id, str) else None,
            "message_group": group if isinstance(group, str) else None,
            "intent_id": intent.intent_id if intent is not None else None,
            "reason_code": reason.value,
            "reason": text,
        }
        if refused is not None:
            log.warning("orders: message %s (group %s, intent %s) not dead-lettered, the dead-letter queue is "
                        "unreachable or refusing (%s); its reason: %s", fields["message_id"], fields["message_group"],
                        fields["intent_id"] or "unknown", refused, text)
            return
        log.warning("orders: dead-lettered message %s (group %s, intent %s): %s", fields["message_id"],
                    fields["message_group"], fields["intent_id"] or "unknown", text, extra={"dead_letter": fields})

    def _metric(self, name: str, unit: str, value: float) -> None:
        if self.metrics is not None:
            self.metrics.add_metric(name=name, unit=unit, value=value)


INTENT_BATCH_PROBLEMS_NAMED = 3
"""How many wrong records the refusal of an event that is not an SQS batch names (then a count)."""


def intent_batch(event: Any) -> list[Mapping[str, Any]]:
    """The records of an orders invocation, checked to be an SQS batch before anything is built.

    An event that is not one — no ``Records`` list, a record that is not an object, whose
    ``eventSource`` is not ``aws:sqs`` (a Kinesis event) or that has no ``messageId`` (the id a
    batch-item failure names) — did not come from the order-intents queue, so there is nothing
    to report failed or to redrive: an :class:`InvalidMessageError` names what was wrong (the
    first :data:`INTENT_BATCH_PROBLEMS_NAMED` records, then how many more). An SQS event with
    no records is logged and returns ``[]`` (the handler answers no batch-item failures). A
    record's body is not checked here: one without a usable body is dead-lettered by
    :meth:`IntentConsumer.process_record` and the rest of the batch goes on."""
    from ensemble_trader.domain.errors import MISSING, FieldProblem, InvalidMessageError

    records = event.get("Records", MISSING) if isinstance(event, Mapping) else MISSING
    if not isinstance(records, list):
        raise InvalidMessageError("SQSEvent", [FieldProblem(
            "Records", records if records is MISSING else type(records).__name__,
            "must be a list of SQS records: the orders function reads the order-intents queue",
        )])
    if not records:
        log.warning("orders: an SQS event with no records: nothing to process")
        return records
    problems: list[FieldProblem] = []
    wrong = 0
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            found = FieldProblem(f"Records[{i}]", type(record).__name__, "must be an SQS record (an object)")
        elif record.get("eventSource") != "aws:sqs":
            found = FieldProblem(f"Records[{i}].eventSource", record.get("eventSource", MISSING),
                                 "must be 'aws:sqs': the record did not come from the order-intents queue")
        elif not isinstance(record.get("messageId"), str) or not record["messageId"]:
            found = FieldProblem(f"Records[{i}].messageId", record.get("messageId", MISSING),
                                 "must be the SQS message id")
        else:
            continue
        wrong += 1
        if len(problems) < INTENT_BATCH_PROBLEMS_NAMED:
            problems.append(found)
    if wrong > len(problems):
        problems.append(FieldProblem("Records", f"{len(records)} records",
                                     f"{wrong - len(problems)} more records not named here are wrong as well"))
    if problems:
        raise InvalidMessageError("SQSEvent", problems)
    return records


@dataclass
class OrdersService:
    """What an orders Lambda container builds once: the router, the consumer, the idempotency config."""

    router: OrderRouter
    consumer: IntentConsumer
    idempotency_config: Any = None


def broker_secret_name(settings: Any, orders: OrdersSettings) -> str:
    """The Secrets Manager secret holding the Alpaca keys: ``ET_ORDERS_ALPACA_SECRET_NAME``, or
    the stage's ``et-<stage>-broker-keys``."""
    return orders.alpaca_secret_name or settings.name("broker-keys")


def make_broker(settings: Any, orders: OrdersSettings, clock: Clock) -> Broker:
    """The configured broker: the paper broker over DynamoDB, or Alpaca with keys from Secrets Manager."""
    if orders.broker == "alpaca":
        from ensemble_trader.adapters.aws.clients import client
        from ensemble_trader.adapters.brokers.alpaca import AlpacaBroker

        secret = broker_secret_name(settings, orders)
        return AlpacaBroker.from_secret(
            client("secretsmanager", settings), secret, paper=orders.alpaca_paper,
            timeout=orders.alpaca_timeout_seconds,
        )
    from ensemble_trader.adapters.aws.orders_store import DynamoPaperLedger
    from ensemble_trader.adapters.brokers.paper import PaperBroker

    return PaperBroker(
        DynamoPaperLedger(settings=settings), clock,
        slippage_bps=orders.paper_slippage_bps, fee_bps=orders.paper_fee_bps,
        fee_per_share=orders.paper_fee_per_share, fill_fraction=orders.paper_fill_fraction,
        lot=orders.quantity_step,
    )


def read_order_settings(
    orders: OrdersSettings | None = None, risk: RiskLimits | None = None
) -> tuple[OrdersSettings, RiskLimits]:
    """The order stage's settings: ``orders`` (else :class:`OrdersSettings` read from the
    ``ET_ORDERS_*`` variables) and ``risk`` (else the limits of :class:`RiskSettings`, from the
    ``ET_RISK_*`` variables). Each one not given is read, and every bad variable of both — a
    refused value, a value that is not JSON, a name that is not a setting — is named in one
    :class:`~ensemble_trader.runtime.settings.EnvironmentSettingError` (``ET_ORDERS_*`` first);
    the errors of each class are its ``__cause__``, an :class:`ExceptionGroup` when both refused
    variables. A refusal of values given in code propagates as it is."""
    from ensemble_trader.runtime.settings import EnvironmentSettingError

    refused: list[EnvironmentSettingError] = []
    try:
        orders = orders or OrdersSettings()
    except EnvironmentSettingError as exc:
        refused.append(exc)
    try:
        risk = risk or RiskSettings().limits()
    except EnvironmentSettingError as exc:
        refused.append(exc)
    if len(refused) == 1:
        raise refused[0]
    if refused:
        raise EnvironmentSettingError.naming(
            {name: problem for exc in refused for name, problem in exc.problems.items()}
        ) from ExceptionGroup("ET_ORDERS_* and ET_RISK_* variables refused", refused)
    assert orders is not None and risk is not None
    return orders, risk


def build_router(settings: Any = None, *, orders: OrdersSettings | None = None,
                 risk: RiskLimits | None = None, clock: Clock | None = None,
                 operator_command: str | None = None) -> OrderRouter:
    """A router wired to DynamoDB, the configured broker and EventBridge (AWS or the local stack).

    The stage's functions build it without ``operator_command``: their router records its broker
    in the risk state. ``operator_command`` names an operator's command the router is built for
    (the CLI's ``"kill switch on"``, ``"reconciliation"``): the configured broker is compared with
    the one the risk state records before the broker is even built (an Alpaca broker reads its
    keys), :class:`BrokerMismatchError` when they differ, and the router is an ``operator`` one,
    which checks again when it acts (see :class:`OrderRouter`)."""
    from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
    from ensemble_trader.runtime.clock import SystemClock
    from ensemble_trader.runtime.settings import get_settings

    settings = settings or get_settings()
    # both read before anything is wired: the bad ET_ORDERS_* and ET_RISK_* variables raise one
    # EnvironmentSettingError naming them all
    orders, limits = read_order_settings(orders, risk)
    clock = clock or SystemClock()
    store = DynamoOrdersStore(settings=settings)
    if operator_command is not None:
        stored = store.load_risk_state().broker
        if stored and stored != broker_name(orders):
            raise BrokerMismatchError(operator_command, broker_name(orders), stored)
    return OrderRouter(
        store,
        make_broker(settings, orders, clock),
        clock,
        limits=limits,
        events=EventBridgePublisher(settings=settings),
        initial_equity=orders.initial_equity,
        quantity_step=orders.quantity_step,
        min_trade_fraction=orders.min_trade_fraction,
        allocations=orders.allocations,
        default_allocation=orders.default_allocation,
        reconcile_grace_seconds=orders.reconcile_grace_seconds,
        broker_name=broker_name(orders),
        operator=operator_command is not None,
        submit_in_flight_seconds=orders.alpaca_timeout_seconds,
    )


def rejection_announcer(router: OrderRouter, persistence: Any, *,
                        ttl_seconds: int = 86_400) -> Callable[[OrderRejected, str, Any], Any]:
    """The orders Lambda's :attr:`IntentConsumer.announce_rejection`: publishes a dead-lettered
    record's ``OrderRejected`` once per SQS message, through Powertools' idempotency keyed on the
    record's ``messageId`` (``persistence``: a persistence layer of its own — Powertools configures
    a layer once, for the first function that uses it — over the idempotency table, whose keys
    carry the function's name, so they never meet the intents'). A delivery of the same message
    within ``ttl_seconds`` is answered from the table and publishes nothing; one whose publish
    failed left no record and publishes when it is delivered again. The invocation's context
    (the third argument) bounds a record left in progress by an invocation that died."""
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function

    config = IdempotencyConfig(event_key_jmespath="message_id", raise_on_no_idempotency_key=True,
                               expires_after_seconds=ttl_seconds)

    @idempotent_function(data_keyword_argument="rejection", config=config, persistence_store=persistence)
    def announce_rejection(rejection: dict[str, Any]) -> dict[str, Any]:
        if router.events is not None:
            router.events.publish([OrderRejected.model_validate(rejection["event"])])
        return {"message_id": rejection["message_id"]}

    def announce(event: OrderRejected, message_id: str, lambda_context: Any = None) -> Any:
        if lambda_context is not None:
            config.register_lambda_context(lambda_context)
        return announce_rejection(rejection={"message_id": message_id, "event": event.model_dump(mode="json")})

    return announce


def build_service(settings: Any = None, *, metrics: Any = None, router: OrderRouter | None = None,
                  idempotency_ttl_seconds: int = 86_400) -> OrdersService:
    """The orders Lambda's dependencies: router, DLQ writer, Powertools idempotency on the intent id."""
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyValidationError

    from ensemble_trader import constants
    from ensemble_trader.adapters.aws.clients import client
    from ensemble_trader.adapters.aws.sqs import SqsDeadLetterWriter
    from ensemble_trader.runtime.settings import get_settings

    settings = settings or get_settings()
    router = router or build_router(settings)
    config = IdempotencyConfig(
        event_key_jmespath="intent_id",
        payload_validation_jmespath="[" + ", ".join(VALIDATED_FIELDS) + "]",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=idempotency_ttl_seconds,
        response_hook=lambda response, _record: {**response, REPLAYED: True},
    )
    persistence = DynamoDBPersistenceLayer(
        table_name=settings.name("idempotency"), boto3_client=client("dynamodb", settings)
    )

    @idempotent_function(data_keyword_argument="intent", config=config, persistence_store=persistence)
    def route(intent: dict[str, Any]) -> dict[str, Any]:
        return router.handle(OrderIntent.parse(intent)).as_dict()

    dlq = SqsDeadLetterWriter(constants.function_spec("orders").dead_letter_queue, settings=settings,
                              source="orders")
    rejections = DynamoDBPersistenceLayer(
        table_name=settings.name("idempotency"), boto3_client=client("dynamodb", settings)
    )
    consumer = IntentConsumer(router, dlq, route=route, metrics=metrics,
                              conflict_errors=(IdempotencyValidationError,),
                              announce_rejection=rejection_announcer(router, rejections,
                                                                     ttl_seconds=idempotency_ttl_seconds))
    return OrdersService(router, consumer, config)
