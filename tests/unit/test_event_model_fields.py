"""The events the system publishes check their numbers and times as the input messages do.

``OrderSubmitted``, ``OrderFilled`` and ``CircuitBreakerTripped`` had plain ``float`` fields, which
read ``true`` as 1.0 and ``"1_000"`` as 1000.0 (and took a NaN or a negative fill); the events'
times and ``BrokerOrder.updated_at`` were plain ``AwareDatetime``, which read a number as a Unix
time. They now use the messages' types (``Quantity``, ``Price``, ``NonNegative``, ``Finite``,
``Timestamp``), so bad input raises :class:`InvalidMessageError` naming the field, and a valid
event's JSON is what it was.
"""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from ensemble_trader.domain import meta_agent, orders, regime
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.meta_agent import AgentSwitched
from ensemble_trader.domain.models import Message, OrderStatus, Regime, Side
from ensemble_trader.domain.orders import (
    BrokerOrder,
    CircuitBreakerTripped,
    KillSwitchChanged,
    KillSwitchCommandIgnored,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    ReconciliationFailed,
)
from ensemble_trader.domain.regime import RegimeChanged
from pydantic import TypeAdapter, ValidationError

T = datetime(2024, 1, 2, 9, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-5)))
TEXT = "2024-01-02T09:30:00.123456-05:00"

VALID = {
    OrderSubmitted: {"client_order_id": "c1", "intent_id": "i1", "symbol": "SPX", "side": "BUY", "quantity": 2.5,
                     "broker_order_id": None, "timestamp": TEXT},
    OrderFilled: {"client_order_id": "c1", "fill_id": "f1", "symbol": "SPX", "side": "SELL", "quantity": 3,
                  "price": 101.25, "fee": 0, "position_after": -3.0, "order_status": "FILLED",
                  "timestamp": "2024-01-02T00:00:00Z"},
    OrderRejected: {"client_order_id": None, "intent_id": "i1", "symbol": None, "reason_code": "X", "message": "m",
                    "timestamp": TEXT},
    OrderCanceled: {"client_order_id": "c1", "symbol": "SPX", "reason": "r", "timestamp": TEXT},
    CircuitBreakerTripped: {"previous": "ACTIVE", "current": "HALTED", "reason": "r", "equity": -20000.0,
                            "daily_loss": 1.2, "drawdown": 0.0, "timestamp": TEXT},
    KillSwitchChanged: {"active": True, "reason": "r", "canceled": ["a"], "timestamp": TEXT},
    KillSwitchCommandIgnored: {"command_id": None, "active": False, "reason": "r", "issued_at": None,
                               "switch_active": True, "ignored": "stale", "timestamp": TEXT},
    ReconciliationFailed: {"symbol": "SPX", "reasons": ["x"], "timestamp": TEXT},
    RegimeChanged: {"event_id": "619c1a5d54d13560b0d132b30d2e4625", "symbol": "SPX", "from_regime": "BULL",
                    "to_regime": "BEAR", "confidence": 0.75, "timestamp": TEXT, "bars_since_previous_change": 12,
                    "model_version": "m1"},
    BrokerOrder: {"client_order_id": "c1", "broker_order_id": "b1", "symbol": "SPX", "side": "BUY", "quantity": 10,
                  "status": "PARTIALLY_FILLED", "filled_quantity": 4, "average_fill_price": 10.5, "updated_at": TEXT},
    AgentSwitched: {"event_id": "e1", "symbol": "SPX", "timestamp": TEXT, "from_agent": "balanced",
                    "to_agent": "contrarian", "regime": "BEAR", "confidence": 0.75,
                    "weights": {"balanced": 0.25, "contrarian": 0.75}, "reason": "r", "intent_id": "i1"},
}
"""A valid instance of every published event, and of the broker's report (``BrokerOrder``)."""

JSON = {
    # model_dump_json() of VALID, taken from the code before the fields were typed
    OrderSubmitted: '{"client_order_id":"c1","intent_id":"i1","symbol":"SPX","side":"BUY","quantity":2.5,'
                    '"broker_order_id":null,"timestamp":"2024-01-02T09:30:00.123456-05:00"}',
    OrderFilled: '{"client_order_id":"c1","fill_id":"f1","symbol":"SPX","side":"SELL","quantity":3.0,"price":101.25,'
                 '"fee":0.0,"position_after":-3.0,"order_status":"FILLED","timestamp":"2024-01-02T00:00:00Z"}',
    OrderRejected: '{"client_order_id":null,"intent_id":"i1","symbol":null,"reason_code":"X","message":"m",'
                   '"timestamp":"2024-01-02T09:30:00.123456-05:00"}',
    OrderCanceled: '{"client_order_id":"c1","symbol":"SPX","reason":"r","timestamp":"2024-01-02T09:30:00.123456-05:00"}',
    CircuitBreakerTripped: '{"previous":"ACTIVE","current":"HALTED","reason":"r","equity":-20000.0,"daily_loss":1.2,'
                           '"drawdown":0.0,"timestamp":"2024-01-02T09:30:00.123456-05:00","latched":false,'
                           '"correction":false}',
    KillSwitchChanged: '{"active":true,"reason":"r","canceled":["a"],"timestamp":"2024-01-02T09:30:00.123456-05:00"}',
    KillSwitchCommandIgnored: '{"command_id":null,"active":false,"reason":"r","issued_at":null,"switch_active":true,'
                              '"ignored":"stale","timestamp":"2024-01-02T09:30:00.123456-05:00"}',
    ReconciliationFailed: '{"symbol":"SPX","reasons":["x"],"timestamp":"2024-01-02T09:30:00.123456-05:00"}',
    RegimeChanged: '{"event_id":"619c1a5d54d13560b0d132b30d2e4625","symbol":"SPX","from_regime":"BULL",'
                   '"to_regime":"BEAR","confidence":0.75,"timestamp":"2024-01-02T09:30:00.123456-05:00",'
                   '"bars_since_previous_change":12,"model_version":"m1"}',
    BrokerOrder: '{"client_order_id":"c1","broker_order_id":"b1","symbol":"SPX","side":"BUY","quantity":10.0,'
                 '"status":"PARTIALLY_FILLED","filled_quantity":4.0,"average_fill_price":10.5,"fees_paid":0.0,'
                 '"reject_reason":null,"updated_at":"2024-01-02T09:30:00.123456-05:00"}',
    AgentSwitched: '{"event_id":"e1","symbol":"SPX","timestamp":"2024-01-02T09:30:00.123456-05:00",'
                   '"from_agent":"balanced","to_agent":"contrarian","regime":"BEAR","confidence":0.75,'
                   '"weights":{"balanced":0.25,"contrarian":0.75},"reason":"r","intent_id":"i1"}',
}

MODELS = list(VALID)
IDS = [m.__name__ for m in MODELS]


def _probe(annotation, value) -> bool:
    """True when a field of this annotation takes ``value``."""
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValidationError:
        return False
    return True


def _fields(kind: str):
    """``(model, field)`` of every time field (takes ISO-8601 text, not any text) or number field
    (takes 0.5 or 2.0, and is not a time field)."""
    for model in MODELS:
        for name, info in model.model_fields.items():
            annotation = info.rebuild_annotation()
            time = _probe(annotation, TEXT) and not _probe(annotation, "x")
            number = not time and (_probe(annotation, 0.5) or _probe(annotation, 2.0))
            if (kind == "time" and time) or (kind == "number" and number):
                yield model, name


NUMBER_FIELDS = list(_fields("number"))
TIME_FIELDS = list(_fields("time"))


def test_the_fields_checked_are_the_ones_known():
    """A new number or time field of an event shows up here: give it the messages' types."""
    assert sorted(f"{m.__name__}.{f}" for m, f in NUMBER_FIELDS) == [
        "AgentSwitched.confidence",
        "BrokerOrder.average_fill_price", "BrokerOrder.fees_paid", "BrokerOrder.filled_quantity",
        "BrokerOrder.quantity",
        "CircuitBreakerTripped.daily_loss", "CircuitBreakerTripped.drawdown", "CircuitBreakerTripped.equity",
        "OrderFilled.fee", "OrderFilled.position_after", "OrderFilled.price", "OrderFilled.quantity",
        "OrderSubmitted.quantity",
        "RegimeChanged.bars_since_previous_change", "RegimeChanged.confidence",
    ]
    assert sorted(f"{m.__name__}.{f}" for m, f in TIME_FIELDS) == [
        "AgentSwitched.timestamp", "BrokerOrder.updated_at", "CircuitBreakerTripped.timestamp", "KillSwitchChanged.timestamp",
        "KillSwitchCommandIgnored.issued_at", "KillSwitchCommandIgnored.timestamp", "OrderCanceled.timestamp",
        "OrderFilled.timestamp", "OrderRejected.timestamp", "OrderSubmitted.timestamp",
        "ReconciliationFailed.timestamp", "RegimeChanged.timestamp",
    ]


def test_every_event_model_is_listed():
    """The message models of the order, regime and meta-agent modules are the events above plus the
    inputs."""
    found = {
        name for module in (orders, regime, meta_agent) for name, cls in vars(module).items()
        if inspect.isclass(cls) and issubclass(cls, Message) and cls.__module__ == module.__name__
    }
    inputs = {"BrokerPosition", "KillSwitchCommand"}  # not published; checked by their own tests
    assert found == {m.__name__ for m in MODELS} | inputs


def _refused(model, field, value) -> InvalidMessageError:
    data = VALID[model] | {field: value}
    with pytest.raises(InvalidMessageError) as info:
        model.parse(data)
    assert [p.field for p in info.value.problems] == [field]
    assert repr(info.value.problems[0].value) == repr(value)  # repr: a NaN is not == itself
    assert model.__name__ in str(info.value) and field in str(info.value)
    return info.value


@pytest.mark.parametrize(("model", "field"), NUMBER_FIELDS, ids=[f"{m.__name__}.{f}" for m, f in NUMBER_FIELDS])
@pytest.mark.parametrize(("value", "says"), [
    (True, "not a boolean"), (False, "not a boolean"), ("1_000", "no '_' digit separators"),
    (np.True_, "not a boolean"),  # an in-process producer's NumPy comparison was read as 1.0
])
def test_a_number_field_refuses_booleans_and_grouped_digits(model, field, value, says):
    assert says in _refused(model, field, value).problems[0].message
    if isinstance(value, np.bool_):
        return  # JSON has no NumPy booleans
    data = json.dumps(VALID[model] | {field: value})
    with pytest.raises(InvalidMessageError, match=field):
        model.parse(data)


@pytest.mark.parametrize(("model", "field"), TIME_FIELDS, ids=[f"{m.__name__}.{f}" for m, f in TIME_FIELDS])
@pytest.mark.parametrize("value", [1704187800, 1704187800.5, "1704187800", "20240102", True])
def test_a_time_field_refuses_numbers(model, field, value):
    problem = _refused(model, field, value).problems[0]
    assert "ISO-8601" in problem.message and field in problem.message


@pytest.mark.parametrize(("field", "value"), [
    ("quantity", 0.0), ("quantity", -1.0), ("quantity", float("nan")), ("price", 0.0), ("price", float("inf")),
    ("fee", -0.01), ("position_after", float("nan")), ("position_after", float("-inf")),
])
def test_order_filled_keeps_to_the_fill_s_constraints(field, value):
    problem = _refused(OrderFilled, field, value).problems[0]
    assert "finite" in problem.message


@pytest.mark.parametrize(("field", "value"), [
    ("equity", float("nan")), ("daily_loss", -0.1), ("drawdown", float("inf")),
])
def test_circuit_breaker_tripped_refuses_what_no_transition_holds(field, value):
    _refused(CircuitBreakerTripped, field, value)


def test_order_submitted_refuses_a_non_positive_quantity():
    _refused(OrderSubmitted, "quantity", 0.0)


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_the_json_of_a_valid_event_is_unchanged(model):
    event = model.parse(VALID[model])
    assert event.model_dump_json() == JSON[model]
    assert model.parse(JSON[model]) == event


def test_negative_equity_and_losses_above_one_still_publish():
    """Equity may be at or below zero (it halts the breaker) and a loss above 100 % (see
    RiskState.losses): the event carries both."""
    event = CircuitBreakerTripped.parse(VALID[CircuitBreakerTripped] | {"equity": -5.0, "daily_loss": 1.5})
    assert (event.equity, event.daily_loss) == (-5.0, 1.5)


def test_numpy_numbers_from_the_builders_are_taken_as_plain_numbers():
    """The router and the regime step pass numpy scalars at times: a float64 is a float and an
    int64 is taken as an int; the JSON is the one of plain numbers."""
    filled = OrderFilled(client_order_id="c1", fill_id="f1", symbol="SPX", side=Side.SELL, quantity=np.float64(3),
                         price=np.float64(101.25), fee=np.float64(0.0), position_after=np.float64(-3.0),
                         order_status=OrderStatus.FILLED, timestamp=datetime(2024, 1, 2, tzinfo=UTC))
    assert filled.model_dump_json() == JSON[OrderFilled]
    assert all(type(getattr(filled, f)) is float for f in ("quantity", "price", "fee", "position_after"))
    tripped = CircuitBreakerTripped(previous="ACTIVE", current="HALTED", reason="r", equity=np.float64(-20000.0),
                                    daily_loss=np.float64(1.2), drawdown=np.float64(0.0), timestamp=T)
    assert tripped.model_dump_json() == JSON[CircuitBreakerTripped]
    changed = RegimeChanged.create("SPX", Regime.BULL, Regime.BEAR, np.float64(0.75), T, np.int64(12), "m1")
    assert changed.model_dump_json() == JSON[RegimeChanged]
    assert type(changed.bars_since_previous_change) is int
