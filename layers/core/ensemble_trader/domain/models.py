"""Messages that cross a boundary: frozen pydantic v2 models.

Flow: ``Bar`` → ``FeatureVector`` → ``MarketState`` (features + ``RegimeEstimate``) →
``OrderIntent`` → ``Order`` / ``Fill`` → ``Position``.

Use :func:`parse` (or ``Model.parse``) at every boundary: it turns pydantic's ValidationError into
:class:`~ensemble_trader.domain.errors.InvalidMessageError`, which names the model, each bad field
and its value.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ensemble_trader.domain.errors import MISSING, FieldProblem, InvalidMessageError

SYMBOL_PATTERN = r"^[A-Z0-9^][A-Z0-9.\-/=_]{0,23}$"
"""Upper-case tickers such as ``SPX``, ``BRK.B``, ``BTC-USD``, ``^GSPC``, ``EUR/USD``."""


class Regime(StrEnum):
    """Market regimes, always listed in this order wherever probabilities are listed."""

    BULL = "BULL"
    BEAR = "BEAR"
    SIDEWAYS = "SIDEWAYS"
    VOLATILE = "VOLATILE"


REGIMES: tuple[Regime, ...] = (Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be finite")
    return v


def _finite_positive(v: float) -> float:
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError("must be a finite number > 0")
    return v


def _finite_non_negative(v: float) -> float:
    if not math.isfinite(v) or v < 0.0:
        raise ValueError("must be a finite number >= 0")
    return v


def _is_numpy_bool(value: Any) -> bool:
    """NumPy's boolean scalar (``np.True_``), which is no ``bool`` and which pydantic reads as
    1.0; told by its type, so that this module needs no NumPy."""
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")


def _number_input(value: Any) -> Any:
    """A number field takes a number or the plain text of one (``10``, ``10.5``, ``"1e3"``);
    pydantic's lax float would also read ``true``/``false`` as 1.0/0.0 and ``"1_000"`` as 1000.0
    (Python's digit grouping), which no producer means: both are refused, as the bars CSV
    reader refuses them. Integer fields (:data:`Count`) go through it too: pydantic's lax int
    reads ``true`` as 1 and ``"1_000"`` as 1000 the same way."""
    if value.__class__ is float or value.__class__ is int:  # the usual case, first
        return value
    if isinstance(value, bool) or _is_numpy_bool(value):
        raise ValueError(f"must be a number, not a boolean ({value!r})")
    if (isinstance(value, str) and "_" in value) or (isinstance(value, (bytes, bytearray)) and b"_" in value):
        raise ValueError(f"{value!r} is not a number (no '_' digit separators)")
    return value


_NUMBER = BeforeValidator(_number_input)
Finite = Annotated[float, _NUMBER, AfterValidator(_finite)]
Price = Annotated[float, _NUMBER, AfterValidator(_finite_positive)]
Quantity = Annotated[float, _NUMBER, AfterValidator(_finite_positive)]
NonNegative = Annotated[float, _NUMBER, AfterValidator(_finite_non_negative)]
Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN)]
Probability = Annotated[float, _NUMBER, Field(ge=0.0, le=1.0)]
Count = Annotated[int, _NUMBER, Field(ge=0)]
"""A count of bars in a message: an int >= 0 or integral text (``3``, ``"3"``); a boolean or
``"1_000"`` is refused (see :func:`_number_input`)."""

_EXTENDED_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
TIME_FORMS = (
    "ISO-8601 text with a date, a time and a UTC offset, extended form ('2024-01-02T00:00:00Z', "
    "'2024-01-02T09:30:00-05:00'), or a timezone-aware datetime"
)
"""What a message's time field takes (in its error messages)."""


def _time_input(value: Any, info: ValidationInfo) -> Any:
    """A time field takes a datetime or ISO-8601 text only, and text only in the form
    :func:`time_text_problem` takes, in every message (a bar, an order, a fill, a position, a
    regime estimate, an event). pydantic would also read a number, or text of digits, as a Unix
    time (seconds, or milliseconds when large): ``"20240102"`` became 1970-08-23, ``"2024"``
    1970-01-01 00:33:44, and digits past the microsecond of a number were dropped. It takes
    ``_`` between the date and the time, and drops digits past the microsecond of text
    (``2024-01-02T00:00:00.1234567Z`` read as ``…00.123456``). A producer sending such times
    would see its bars dated 1970 (or dead-lettered as late records), or two instants less than a
    microsecond apart made one, so they are refused, naming the text and what is wrong with it
    (the time-text reason, ``'2024-01-02_09:30Z' separates the date and the time with '_' ...``)
    or the field and the forms taken. The text a message serialises its times to
    (``2024-01-02T09:30:00Z``, ``…T09:30:00.5+05:30``) has the form: stored messages read back."""
    if isinstance(value, datetime) or value is None:  # None: an optional time (a required one refuses it)
        return value
    if value.__class__ is str:  # the usual case first: one short match (a message's own serialisation)
        if _COMMON_TIME.fullmatch(value) is not None:
            return value
    field = info.field_name or "time"
    if isinstance(value, str):
        extended = _EXTENDED_DATE.match(value) is not None
        # text that is no date at all ("1704153600") gets no time-text reason ("") but the forms below
        problem = time_text_problem(value, f"is not {TIME_FORMS}" if extended else "")
        if problem:
            raise ValueError(f"{value!r} {problem}")
        if extended:
            return value  # pydantic reads it (and refuses a missing time or offset, a month 13)
        hint = ""
        if re.fullmatch(r"[+-]?\d+(\.\d*)?", value):
            hint = " (numbers are not taken as Unix times"
            if len(value) == 8 and value.isdigit():  # YYYYMMDD
                hint += f"; for the date {value} write '{value[:4]}-{value[4:6]}-{value[6:]}T00:00:00Z'"
            hint += ")"
        raise ValueError(f"{field} must be {TIME_FORMS}; got the text {value!r}{hint}")
    if isinstance(value, bool):
        raise ValueError(f"{field} must be {TIME_FORMS}; got a boolean ({value!r})")
    if isinstance(value, (int, float)):
        raise ValueError(f"{field} must be {TIME_FORMS}; got the number {value!r} (numbers are not taken as Unix times)")
    raise ValueError(f"{field} must be {TIME_FORMS}; got a value of type {type(value).__name__}")


Timestamp = Annotated[AwareDatetime, BeforeValidator(_time_input)]
"""A message's time: a timezone-aware datetime or extended ISO-8601 text with an offset in the
form :func:`time_text_problem` takes; never a number (see :func:`_time_input`)."""
OptionalTimestamp = Annotated[AwareDatetime | None, BeforeValidator(_time_input)]

M = TypeVar("M", bound="Message")


class Message(BaseModel):
    """Base of every boundary message: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    @classmethod
    def parse(cls, data: Mapping[str, Any] | str | bytes) -> Self:
        """Validate a dict or a JSON document; raise InvalidMessageError naming each bad field."""
        return parse(cls, data)


def parse(model: type[M], data: Mapping[str, Any] | str | bytes) -> M:
    """Validate ``data`` as ``model``; bad input raises :class:`InvalidMessageError`."""
    try:
        if isinstance(data, (str, bytes, bytearray)):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessageError(model.__name__, field_problems(exc)) from None


def field_problems(exc: ValidationError, whole: str = "<message>", fields: Collection[str] = ()) -> list[FieldProblem]:
    """Each of pydantic's errors as a :class:`FieldProblem` (``whole`` names an error of the
    object itself, which has no field). Given the model's ``fields``, a name that is not one of
    them says so and names the closest (``unknown option; did you mean regime_prior_rounds?``),
    where pydantic says "Extra inputs are not permitted"."""
    return [
        FieldProblem(
            field=".".join(str(p) for p in err["loc"]) or whole,
            # a missing field's "input" is the whole object that lacks it, not its value
            value=MISSING if err["type"] == "missing" else err.get("input"),
            message=_unknown_field(err["loc"], fields) if err["type"] == "extra_forbidden" and fields else err["msg"],
        )
        for err in exc.errors(include_url=False)
    ]


def _unknown_field(loc: tuple[Any, ...], fields: Collection[str]) -> str:
    """"unknown option", with the closest of ``fields`` when one is close, else all of them."""
    name = str(loc[-1]) if loc else ""
    close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
    if close:
        return f"unknown option; did you mean {close[0]}?"
    return f"unknown option; the options are {', '.join(sorted(fields))}"


# --------------------------------------------------------------------------------------------
# Market data and features
# --------------------------------------------------------------------------------------------


TIME_SEPARATORS = "Tt "
"""The characters that may stand between the date and the time of a time's text."""

_TIME_TEXT = re.compile(  # \d\d rather than \d{2}: the bars CSV reader matches every row's time
    r"(?:\d\d\d\d-\d\d-\d\d|\d{8})"  # a calendar date, extended or basic form
    r"(?:[Tt ]"  # then optionally a time, after one of TIME_SEPARATORS
    r"(?:\d\d:\d\d(?::\d\d(?:[.,](\d{1,9}))?)?"  # HH:MM[:SS[.fraction]]
    r"|\d\d\d\d(?:\d\d(?:[.,](\d{1,9}))?)?)"  # HHMM[SS[.fraction]]
    r"(?:[Zz]|[+-]\d\d(?::?\d\d)?)?)?",  # and an optional offset: Z, +HH, +HHMM, +HH:MM
    re.ASCII,
)
"""A date or a time as this system reads it: the only text handed to a parser of times
(:meth:`datetime.fromisoformat`, pydantic), which take more forms than these. Python 3.11's
``fromisoformat`` takes any character between the date and the time and reads ``12.5`` as
12:00:00.5 (ISO-8601: 12:30); pydantic also takes ``_`` there; both drop digits past the
microsecond. A fraction is taken after the seconds only, of at most 9 digits."""

_LOOSE_TIME = re.compile(
    r"(?:\d{4}-\d{2}-\d{2}|\d{8})(?P<separator>\D)"
    r"(?P<clock>\d{2}(?::?\d{2}(?::?\d{2})?)?)(?:[.,](?P<fraction>\d+))?",
    re.ASCII,
)
"""The parts of a time's text that :data:`_TIME_TEXT` refused, to say what is wrong."""

_COMMON_TIME = re.compile(
    r"\d\d\d\d-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d{1,6}0{0,3})?(?:[Zz]|[+-]\d\d:\d\d)", re.ASCII
)
"""The form every message serialises its times to (``2024-01-02T09:30:00Z``,
``2024-01-02T09:30:00.5+05:30``): a part of the form :func:`time_text_problem` takes (a fraction
of at most 6 digits, or 9 with zeros past the 6th), so text that matches it needs no other
check. One match of it costs a message's time 30-70 ns more than the extended-date match that was
all before; :data:`_TIME_TEXT` and its fraction check would cost 150-200 ns."""

_WEEK_DATE = re.compile(r"\d{4}-?W", re.ASCII)

FINER_THAN_MICROSECONDS = (
    "has digits past the microsecond (times are kept to the microsecond: sub-microsecond digits "
    "are refused, not dropped)"
)


def _sub_microsecond(fraction: str | None) -> bool:
    return bool(fraction and fraction[6:].strip("0"))


def time_text_problem(text: str, otherwise: str) -> str | None:
    """What is wrong with ``text`` as a date or a time, or None when it has the form times take.

    The form is a calendar date (``2024-01-02`` or ``20240102``), optionally followed by ``T``,
    ``t`` or a space and a time ``HH:MM[:SS[.fraction]]`` (or ``HHMM[SS[.fraction]]``), the
    fraction (``.`` or ``,``) after the seconds only, of at most 9 digits with none but zeros
    past the sixth, and an optional offset (``Z``, ``z``, ``+HH``, ``+HHMM``, ``+HH:MM``).
    Whether a date alone or a time without an offset will do is the caller's rule. The reason
    follows the text in a message (``'2024-01-02_09:30Z' separates ...``); ``otherwise`` is the
    reason given when there is nothing more precise to say (a caller with a check of its own for
    such text passes ``""``)."""
    match = _TIME_TEXT.fullmatch(text)
    if match is not None:
        # the pattern's only groups are the two fractions: lastindex is None when there is none
        if match.lastindex is not None and _sub_microsecond(match[match.lastindex]):
            return FINER_THAN_MICROSECONDS
        return None
    loose = _LOOSE_TIME.match(text)
    if loose is None:
        if _WEEK_DATE.match(text):
            return "is a week date (write the calendar date, YYYY-MM-DD)"
        return otherwise
    separator, clock, fraction = loose["separator"], loose["clock"], loose["fraction"]
    if separator not in TIME_SEPARATORS:
        return f"separates the date and the time with {separator!r} (write T, t or a space)"
    digits = len(clock.replace(":", ""))
    if fraction is not None and digits < 6:
        unit = "an hour" if digits == 2 else "a minute"
        return (
            f"has a fraction of {unit} ({clock}{text[loose.start('fraction') - 1]}{fraction}); only the "
            "seconds take a fraction here (write HH:MM:SS[.ffffff])"
        )
    if _sub_microsecond(fraction):
        return FINER_THAN_MICROSECONDS
    if fraction is not None and len(fraction) > 9:
        return f"has {len(fraction)} fraction digits (at most 9)"
    if digits == 2:
        return "gives the hour alone (write at least HH:MM)"
    return otherwise


def read_time_text(text: str, otherwise: str) -> datetime:
    """``text`` as a datetime when it has the form :func:`time_text_problem` takes, read by
    :meth:`datetime.fromisoformat` (a trailing ``z`` taken for UTC, as a message's time takes it;
    Python 3.11 takes ``Z`` only). Raises ValueError whose message is the reason, to follow the
    text in the caller's error: :func:`time_text_problem`'s, or ``otherwise`` (also for what the
    pattern does not check, a month 13 or a day 32)."""
    problem = time_text_problem(text, otherwise)
    if problem is not None:  # fromisoformat takes any separator and reads 12.5 as 12:00:00.5
        raise ValueError(problem)
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # a good row pays nothing for the z
        if text[-1:] == "z":
            try:
                return datetime.fromisoformat(text[:-1] + "Z")
            except ValueError:
                pass
    raise ValueError(otherwise)

EARLIEST_TIME = datetime(1677, 9, 22, tzinfo=UTC)
LATEST_TIME = datetime(2262, 4, 11, tzinfo=UTC)
"""Bar times are kept as int64 nanoseconds since the epoch (numpy's ``datetime64[ns]``), which
hold 1677-09-21 … 2262-04-11; a time outside [EARLIEST_TIME, LATEST_TIME) is refused, not wrapped
around to some other date."""


TIME_RANGE_TEXT = f"lies outside the times kept ({EARLIEST_TIME.date().isoformat()} … {LATEST_TIME.date().isoformat()})"


def outside_time_range(when: datetime) -> str | None:
    """Why the aware datetime ``when`` cannot be a bar time, or None when it can."""
    if EARLIEST_TIME <= when < LATEST_TIME:
        return None
    return f"{when.isoformat()} {TIME_RANGE_TEXT}"


def _kept_time(value: datetime) -> datetime:
    problem = outside_time_range(value)
    if problem:
        raise ValueError(problem)
    return value


BarTime = Annotated[Timestamp, AfterValidator(_kept_time)]
"""A bar's time, and an intent's (its bar's): a :data:`Timestamp` (text in the form
:func:`time_text_problem` takes, kept to the microsecond: text with finer digits is refused
rather than truncated, as two bars less than a microsecond apart would become one and the second
be skipped as a redelivery) within the times bars keep (one at the ends of Python's range, such
as 0001-01-01T00:00:00+14:00, cannot even be converted to UTC)."""


class Bar(Message):
    """One OHLCV bar of one symbol. ``timestamp`` is the bar's time (timezone-aware)."""

    symbol: Symbol
    timestamp: BarTime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: NonNegative  # required: a feed that leaves it out would flatten volume_z_20 to 0

    @model_validator(mode="after")
    def _consistent_range(self) -> Self:
        if self.low > min(self.open, self.close):
            raise ValueError(
                f"low={self.low!r} must be <= min(open, close) = {min(self.open, self.close)!r}"
            )
        if self.high < max(self.open, self.close):
            raise ValueError(
                f"high={self.high!r} must be >= max(open, close) = {max(self.open, self.close)!r}"
            )
        return self


MAX_FEATURE_NAME_BYTES = 64 * 1024
"""A feature name must be shorter than this in UTF-8: DynamoDB's limit on an attribute name."""


class FeatureVector(Message):
    """The features of one symbol after one bar.

    ``values`` holds every feature by name (the order of ``FEATURE_NAMES`` in
    :mod:`ensemble_trader.domain.features`); all values are finite. Until the engine has seen
    ``WARMUP_BARS`` bars (every window full and every exponential average's start forgotten, so
    that the values no longer depend on where the history began), ``warmup_remaining`` > 0 and
    ``ready`` is False: the values are computed from the bars seen so far and must not be traded
    on. ``feature_version`` defaults to "1", the formulas of every message written before the
    field existed; the engine always sets it.

    A feature's name is stored as an attribute name (the ``features`` map of a regime-history
    row), so a name DynamoDB cannot hold is refused here, where every stage parses its input: an
    empty name or one of whitespace only (no feature is named so; an empty name's row could not
    be read back), or one of :data:`MAX_FEATURE_NAME_BYTES` or more in UTF-8.
    """

    bar: Bar
    values: dict[str, Finite]
    warmup_remaining: Count
    feature_version: str = "1"

    @field_validator("values")
    @classmethod
    def _storable_names(cls, values: dict[str, float]) -> dict[str, float]:
        for name in values:
            if not name.strip():
                raise ValueError(f"feature name {name!r} is empty or only whitespace: every feature needs a name")
            # a character takes at most 4 bytes: shorter names need no encoding
            if len(name) * 4 >= MAX_FEATURE_NAME_BYTES and (size := len(name.encode())) >= MAX_FEATURE_NAME_BYTES:
                raise ValueError(f"feature name {name[:40]!r}... is {size:,} bytes in UTF-8: DynamoDB takes "
                                 f"attribute names under {MAX_FEATURE_NAME_BYTES:,}")
        return values

    @property
    def symbol(self) -> str:
        return self.bar.symbol

    @property
    def timestamp(self) -> datetime:
        return self.bar.timestamp

    @property
    def ready(self) -> bool:
        return self.warmup_remaining == 0


class RegimeEstimate(Message):
    """Causal (filtered) regime probabilities of one symbol at one bar.

    ``probabilities`` are listed in the order BULL, BEAR, SIDEWAYS, VOLATILE. ``regime`` is the
    reported regime after the transition rule (hysteresis / minimum dwell), ``confidence`` the
    filtered probability of that regime.
    """

    symbol: Symbol
    timestamp: Timestamp
    probabilities: tuple[Probability, Probability, Probability, Probability]
    regime: Regime
    confidence: Probability
    bars_in_regime: Count
    model_version: str

    @model_validator(mode="after")
    def _normalised(self) -> Self:
        total = sum(self.probabilities)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"probabilities must sum to 1, got {total!r}")
        return self

    def probability(self, regime: Regime) -> float:
        return self.probabilities[REGIMES.index(regime)]


class MarketState(Message):
    """Features and regime estimate of one symbol at one bar: the meta-agent's input."""

    features: FeatureVector
    regime: RegimeEstimate

    @model_validator(mode="after")
    def _same_bar(self) -> Self:
        f, r = self.features, self.regime
        if f.symbol != r.symbol or f.timestamp != r.timestamp:
            raise ValueError(
                f"features ({f.symbol}@{f.timestamp.isoformat()}) and regime "
                f"({r.symbol}@{r.timestamp.isoformat()}) describe different bars"
            )
        return self

    @property
    def symbol(self) -> str:
        return self.features.symbol

    @property
    def timestamp(self) -> datetime:
        return self.features.timestamp


# --------------------------------------------------------------------------------------------
# Decisions and orders
# --------------------------------------------------------------------------------------------


def deterministic_id(*parts: object, length: int = 32) -> str:
    """A stable id from the parts of a decision (never from an attempt): sha256, hex. A time
    enters as its UTC instant, so one bar written with another UTC offset keeps its ids."""
    text = "|".join(_id_text(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _id_text(part: object) -> str:
    if isinstance(part, datetime):
        return (part.astimezone(UTC) if part.utcoffset() is not None else part).isoformat()
    return str(part)


def make_intent_id(strategy_id: str, symbol: str, bar_time: datetime, model_version: str) -> str:
    """Intent id = f(strategy, symbol, bar time, model version): redelivery gives the same id."""
    return deterministic_id("intent", strategy_id, symbol, bar_time, model_version)


class OrderIntent(Message):
    """What the meta-agent wants: a target position as a signed fraction of equity."""

    intent_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    strategy_id: str = Field(min_length=1, max_length=64)
    symbol: Symbol
    timestamp: BarTime
    target_position: Annotated[float, _NUMBER, Field(ge=-2.0, le=2.0)]
    reference_price: Price
    model_version: str
    regime: Regime
    confidence: Probability
    agent_weights: dict[str, Probability] = Field(default_factory=dict)
    explanation: str = ""
    explanation_detail: dict[str, Any] = Field(default_factory=dict)


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class OrderStatus(StrEnum):
    PENDING = "PENDING"  # recorded, not yet acknowledged by the broker
    SUBMITTED = "SUBMITTED"  # acknowledged, working
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"  # submit outcome unknown: resolved by lookup at the broker, never resubmitted

    @property
    def terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED)


class Order(Message):
    """An order with a client order id derived from the decision."""

    client_order_id: str = Field(min_length=8, max_length=64)
    intent_id: str
    strategy_id: str
    symbol: Symbol
    side: Side
    quantity: Quantity
    order_type: OrderType = OrderType.MARKET
    limit_price: Price | None = None
    status: OrderStatus = OrderStatus.PENDING
    filled_quantity: NonNegative = 0.0
    average_fill_price: Price | None = None
    broker_order_id: str | None = None
    reject_reason: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    # Added by the order stage: the decision behind the order (bar time and price the intent saw),
    # cumulative fees, and the machine-readable code of a rejection (a RejectReason value).
    decision_time: OptionalTimestamp = None
    decision_price: Price | None = None
    fees_paid: NonNegative = 0.0
    reject_code: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.order_type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("a LIMIT order needs limit_price")
        if self.filled_quantity > self.quantity * (1 + 1e-12):
            raise ValueError(
                f"filled_quantity={self.filled_quantity!r} exceeds quantity={self.quantity!r}"
            )
        return self

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side is Side.BUY else -self.quantity

    @property
    def remaining_quantity(self) -> float:
        return max(self.quantity - self.filled_quantity, 0.0)


class Fill(Message):
    """One execution of (part of) an order."""

    fill_id: str = Field(min_length=1, max_length=128)
    client_order_id: str
    symbol: Symbol
    side: Side
    quantity: Quantity
    price: Price
    fee: NonNegative = 0.0
    timestamp: Timestamp

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side is Side.BUY else -self.quantity


class Position(Message):
    """Signed holding of one symbol (negative = short) with its average entry price."""

    symbol: Symbol
    quantity: Finite = 0.0
    average_price: NonNegative = 0.0
    realized_pnl: Finite = 0.0
    fees_paid: NonNegative = 0.0
    updated_at: OptionalTimestamp = None
    last_fill_id: str | None = None

    def apply(self, fill: Fill) -> Position:
        """The position after ``fill`` (average price on increase, realised P&L on decrease)."""
        if fill.symbol != self.symbol:
            raise ValueError(f"fill for {fill.symbol} applied to position in {self.symbol}")
        q0, dq = self.quantity, fill.signed_quantity
        q1 = q0 + dq
        realized = self.realized_pnl
        if q0 == 0.0 or (q0 > 0) == (dq > 0):
            avg = (abs(q0) * self.average_price + abs(dq) * fill.price) / abs(q1)
        else:
            closed = min(abs(q0), abs(dq))
            realized += closed * (fill.price - self.average_price) * (1.0 if q0 > 0 else -1.0)
            if abs(q1) < 1e-12:  # closed (rounding noise either side of zero is flat too)
                q1, avg = 0.0, 0.0
            elif abs(dq) > abs(q0):  # flipped through zero: the rest opens at the fill price
                avg = fill.price
            else:
                avg = self.average_price
        return self.model_copy(
            update={
                "quantity": q1,
                "average_price": avg,
                "realized_pnl": realized,
                "fees_paid": self.fees_paid + fill.fee,
                "updated_at": fill.timestamp,
                "last_fill_id": fill.fill_id,
            }
        )
