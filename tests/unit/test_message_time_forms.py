"""Every message time reads text in the one form the bar's time takes (review of session 32).

Session 32 checked a bar's and an intent's time (``BarTime``) against
``domain.models.time_text_problem``; every other ``Timestamp`` field (an order's, a fill's, a
position's, a regime estimate's, the events on the bus) still went to pydantic unchecked, which
takes ``_`` between the date and the time and drops digits past the microsecond. The check now
sits in ``Timestamp`` itself, so one rule, with one wording, holds for every message. Text the
models serialise their own times to (what the stores hold) still reads back."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.meta_agent import AgentSwitched
from ensemble_trader.domain.models import (
    _COMMON_TIME,
    Bar,
    FeatureVector,
    Fill,
    MarketState,
    Message,
    Order,
    OrderIntent,
    Position,
    RegimeEstimate,
    time_text_problem,
)
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

T0 = "2024-01-02T09:30:00Z"
BAR = dict(symbol="SPX", timestamp=T0, open=10.0, high=11.0, low=9.0, close=10.0, volume=1.0)
REGIME = dict(symbol="SPX", timestamp=T0, probabilities=[0.7, 0.1, 0.1, 0.1], regime="BULL", confidence=0.7,
              bars_in_regime=3, model_version="v1")
FEATURES = dict(bar=BAR, values={"ret_1": 0.01}, warmup_remaining=0)

# (model, a valid message, the path of each of its time fields)
MESSAGES: list[tuple[type[Message], dict[str, Any], list[tuple[str, ...]]]] = [
    (Bar, BAR, [("timestamp",)]),
    (OrderIntent, dict(intent_id="intent-0001", strategy_id="ensemble", symbol="SPX", timestamp=T0,
                       target_position=0.5, reference_price=10.0, model_version="v1", regime="BULL",
                       confidence=0.7), [("timestamp",)]),
    (Order, dict(client_order_id="order-0001", intent_id="intent-0001", strategy_id="ensemble", symbol="SPX",
                 side="BUY", quantity=5.0, created_at=T0, updated_at=T0, decision_time=T0),
     [("created_at",), ("updated_at",), ("decision_time",)]),
    (Fill, dict(fill_id="f1", client_order_id="order-0001", symbol="SPX", side="BUY", quantity=5.0, price=10.0,
                timestamp=T0), [("timestamp",)]),
    (Position, dict(symbol="SPX", quantity=5.0, average_price=10.0, updated_at=T0), [("updated_at",)]),
    (RegimeEstimate, REGIME, [("timestamp",)]),
    (FeatureVector, FEATURES, [("bar", "timestamp")]),
    (MarketState, dict(features=FEATURES, regime=REGIME), [("regime", "timestamp")]),
    (BrokerOrder, dict(client_order_id="order-0001", broker_order_id="b1", symbol="SPX", side="BUY", quantity=5.0,
                       status="SUBMITTED", updated_at=T0), [("updated_at",)]),
    (OrderSubmitted, dict(client_order_id="order-0001", intent_id="intent-0001", symbol="SPX", side="BUY",
                          quantity=5.0, broker_order_id="b1", timestamp=T0), [("timestamp",)]),
    (OrderFilled, dict(client_order_id="order-0001", fill_id="f1", symbol="SPX", side="BUY", quantity=5.0,
                       price=10.0, fee=0.0, position_after=5.0, order_status="FILLED", timestamp=T0),
     [("timestamp",)]),
    (OrderRejected, dict(client_order_id=None, intent_id="intent-0001", symbol="SPX", reason_code="KILL_SWITCH",
                         message="kill switch on", timestamp=T0), [("timestamp",)]),
    (OrderCanceled, dict(client_order_id="order-0001", symbol="SPX", reason="kill switch", timestamp=T0),
     [("timestamp",)]),
    (CircuitBreakerTripped, dict(previous="ACTIVE", current="HALTED", reason="loss", equity=90.0, daily_loss=0.1,
                                 drawdown=0.1, timestamp=T0), [("timestamp",)]),
    (KillSwitchChanged, dict(active=True, reason="ops", canceled=[], timestamp=T0), [("timestamp",)]),
    (KillSwitchCommandIgnored, dict(command_id="c1", active=False, reason="ops", issued_at=T0, switch_active=True,
                                    ignored="stale", timestamp=T0), [("issued_at",), ("timestamp",)]),
    (ReconciliationFailed, dict(symbol="SPX", reasons=["unknown order"], timestamp=T0), [("timestamp",)]),
    (AgentSwitched, dict(event_id="e1", symbol="SPX", timestamp=T0, from_agent="conservative", to_agent="aggressive",
                         regime="BULL", confidence=0.7, weights={"aggressive": 1.0}, reason="leader",
                         intent_id="intent-0001"), [("timestamp",)]),
    (RegimeChanged, dict(event_id="e1", symbol="SPX", from_regime="BEAR", to_regime="BULL", confidence=0.7,
                         timestamp=T0, bars_since_previous_change=4, model_version="v1"), [("timestamp",)]),
]
FIELDS = [pytest.param(model, data, path, id=f"{model.__name__}.{'.'.join(path)}")
          for model, data, paths in MESSAGES for path in paths]

SEPARATOR = "separates the date and the time with"
REFUSED = [  # text, the reason (time_text_problem's wording, as for a bar)
    ("2024-01-02_09:30:00Z", f"{SEPARATOR} '_'"),
    ("2024-01-02_09:30:00.1234567Z", f"{SEPARATOR} '_'"),  # pydantic read it as ...00.123456
    ("2024-01-02T09:30:00.1234567Z", "has digits past the microsecond"),
    ("2024-01-02T09:30:00.123456789+05:30", "has digits past the microsecond"),
    ("2024-01-02T09:30:00.0000000000Z", "has 10 fraction digits (at most 9)"),
    ("2024-01-02T12.5Z", "has a fraction of an hour (12.5)"),
    ("2024-01-02T09:30.5Z", "has a fraction of a minute (09:30.5)"),
    ("2024-01-02T09Z", "gives the hour alone"),
]


def _with(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    if path == ("regime", "timestamp") and "features" in data:  # a MarketState's two times name one bar
        data = _with(data, ("features", "bar", "timestamp"), value)
    out = dict(data)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = _with(data[path[0]], path[1:], value)
    return out


def _get(message: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        message = message[name] if isinstance(message, dict) else getattr(message, name)
    return message


@pytest.mark.parametrize(("model", "data", "path"), FIELDS)
@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_every_message_time_refuses_the_forms_a_bar_refuses(model, data, path, text, reason):
    with pytest.raises(InvalidMessageError) as info:
        model.parse(_with(data, path, text))
    assert f"{text!r} {reason}" in str(info.value)
    assert path[-1] in str(info.value)  # the field is named
    with pytest.raises(InvalidMessageError, match="separates|past the microsecond|fraction|hour alone"):
        model.parse(json.dumps(_with(data, path, text)))  # the JSON path (records, queue bodies) too


@pytest.mark.parametrize(("model", "data", "path"), FIELDS)
def test_every_message_time_still_refuses_numbers_as_before(model, data, path):
    with pytest.raises(InvalidMessageError, match="numbers are not taken as Unix times"):
        model.parse(_with(data, path, "1704187800"))


TAKEN = [  # text, the instant it names
    ("2024-01-02T09:30:00Z", datetime(2024, 1, 2, 9, 30, tzinfo=UTC)),
    ("2024-01-02t09:30:00.25z", datetime(2024, 1, 2, 9, 30, 0, 250000, tzinfo=UTC)),
    ("2024-01-02 09:30:00.123456+00:00", datetime(2024, 1, 2, 9, 30, 0, 123456, tzinfo=UTC)),
    ("2024-01-02T15:00:00.123456000+05:30", datetime(2024, 1, 2, 9, 30, 0, 123456, tzinfo=UTC)),
    ("2024-01-02T04:30-05:00", datetime(2024, 1, 2, 9, 30, tzinfo=UTC)),  # not the fast path's form
    ("2024-01-02T09:30Z", datetime(2024, 1, 2, 9, 30, tzinfo=UTC)),
]


@pytest.mark.parametrize(("model", "data", "path"), FIELDS)
@pytest.mark.parametrize(("text", "instant"), TAKEN)
def test_the_forms_taken_read_the_same_instant_in_every_message(model, data, path, text, instant):
    assert _get(model.parse(_with(data, path, text)), path) == instant


OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-5))]


@pytest.mark.parametrize(("model", "data", "path"), FIELDS)
@pytest.mark.parametrize("tz", OFFSETS, ids=["utc", "plus0530", "minus05"])
@pytest.mark.parametrize("microsecond", [0, 500000, 123456, 1])
def test_what_a_message_serialises_its_times_to_reads_back(model, data, path, tz, microsecond):
    """What the stores hold: messages written with ``model_dump_json`` or
    ``model_dump(mode="json")`` (orders, positions, stage outputs) by this code or the code
    before it (the serialisation is pydantic's, unchanged): ``…T09:30:00Z``, ``…00.5+05:30``."""
    when = datetime(2024, 1, 2, 9, 30, 0, microsecond, tzinfo=tz)
    message = model.parse(_with(data, path, when))
    for written in (message.model_dump_json(), message.model_dump(mode="json")):
        back = model.parse(written)
        assert back == message
        assert _get(back, path).utcoffset() == when.utcoffset()
    text = _get(message.model_dump(mode="json"), path)
    assert text.endswith("Z" if tz is UTC else when.isoformat()[-6:])


def test_the_fast_path_takes_nothing_the_full_check_refuses():
    """``_COMMON_TIME`` (one short match for the usual text, which skips the full check) is a part
    of the full form: text it matches passes ``time_text_problem`` — checked on 20,000 texts made
    of the characters of times around the usual form."""
    rng = random.Random(7)
    base = ["2024-01-02T09:30:00Z", "2024-01-02T09:30:00.123456789+05:30", "2024-01-02 09:30:00.5-05:00",
            "2024-01-02T09:30:00.123456000Z", "2024-01-02t09:30:00.000000100z"]
    alphabet = "0123456789-:T tZz+.,_x"
    fast = 0
    for _ in range(20_000):
        chars = list(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(chars))
            action = rng.random()
            if action < 0.6:
                chars[i] = rng.choice(alphabet)
            elif action < 0.8:
                del chars[i]
            else:
                chars.insert(i, rng.choice(alphabet))
        text = "".join(chars)
        if _COMMON_TIME.fullmatch(text) is not None:
            fast += 1
            assert time_text_problem(text, "OTHER") is None, text
    assert fast > 1000  # the mutations keep many texts in the usual form
