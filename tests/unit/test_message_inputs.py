"""What a message's time and number fields take: no Unix times, no booleans, no digit grouping.

pydantic's lax mode read a number, or text of digits, as a Unix time: a producer sending
``"timestamp": "20240102"`` (YYYYMMDD) had its bars dated 1970-08-23, and a symbol with history
had every such bar dead-lettered as a late record dated 1970. It also read ``true`` as 1.0 and
``"1_000"`` as 1000.0.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.models import Bar, Fill, Order, OrderIntent, Position, RegimeEstimate, Side
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime.features_stage import FeaturesStep
from ensemble_trader.runtime.stage import KinesisStageRunner, StageStats, StreamSink

T0 = "2024-01-02T00:00:00Z"


def bar(**overrides) -> dict:
    return {"symbol": "SPX", "timestamp": T0, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5,
            "volume": 100.0} | overrides


def both_ways(data: dict):
    """Bar.parse of the dict and of its JSON text (the stages read JSON)."""
    return Bar.parse(data), Bar.parse(json.dumps(data))


@pytest.mark.parametrize(
    "value",
    [
        "20240102",  # YYYYMMDD: was 1970-08-23T06:15:02Z
        "2024",  # was 1970-01-01T00:33:44Z
        "1704153600",
        "+1704153600",
        "1704153600.5",
        1704153600,  # Unix seconds
        1704153600000,  # Unix milliseconds
        1704153600.0000001,  # digits past the microsecond were dropped
        True,
        "20240102T000000Z",  # ISO basic form: pydantic reads only the extended one
        "yesterday",
    ],
)
def test_a_bar_time_is_iso_text_with_an_offset_never_a_number(value):
    for kind, data in (("dict", bar(timestamp=value)), ("json", json.dumps(bar(timestamp=value)))):
        with pytest.raises(InvalidMessageError) as info:
            Bar.parse(data)
        problem = next(p for p in info.value.problems if p.field == "timestamp")
        assert problem.value == value, kind
        assert "timestamp must be ISO-8601 text with a date, a time and a UTC offset" in problem.message
        assert "'2024-01-02T00:00:00Z'" in problem.message


def test_the_refusal_of_a_yyyymmdd_date_says_how_to_write_it():
    with pytest.raises(InvalidMessageError, match=r"for the date 20240102 write '2024-01-02T00:00:00Z'"):
        Bar.parse(json.dumps(bar(timestamp="20240102")))


def test_what_producers_send_is_still_taken():
    berlin = timezone(timedelta(hours=1))
    for value, expected in [
        (T0, datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02T00:00:00+00:00", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02 01:00:00+01:00", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02T00:00:00.25Z", datetime(2024, 1, 2, 0, 0, 0, 250000, tzinfo=UTC)),
        (datetime(2024, 1, 2, 1, tzinfo=berlin), datetime(2024, 1, 2, tzinfo=UTC)),
    ]:
        b = Bar.parse(bar(timestamp=value))
        assert b.timestamp == expected
        assert Bar.parse(b.model_dump_json()) == b  # what the feed writes reads back
    # a naive time is still refused as before, by pydantic
    with pytest.raises(InvalidMessageError, match="timezone"):
        Bar.parse(bar(timestamp="2024-01-02T00:00:00"))


def test_every_time_field_of_the_messages_follows_the_rule():
    estimate = {"symbol": "SPX", "timestamp": T0, "probabilities": [1, 0, 0, 0], "regime": "BULL",
                "confidence": 1, "bars_in_regime": 0, "model_version": "m"}
    intent = {"intent_id": "abcdefgh", "strategy_id": "s", "symbol": "SPX", "timestamp": T0,
              "target_position": 0.5, "reference_price": 10, "model_version": "m", "regime": "BULL",
              "confidence": 0.9}
    order = {"client_order_id": "abcdefgh", "intent_id": "i", "strategy_id": "s", "symbol": "SPX",
             "side": "BUY", "quantity": 1, "created_at": T0, "updated_at": T0}
    fill = {"fill_id": "f", "client_order_id": "abcdefgh", "symbol": "SPX", "side": "BUY", "quantity": 1,
            "price": 10, "timestamp": T0}
    position = {"symbol": "SPX", "updated_at": T0}
    cases = [(RegimeEstimate, estimate, "timestamp"), (OrderIntent, intent, "timestamp"),
             (Order, order, "created_at"), (Order, order, "updated_at"), (Order, order, "decision_time"),
             (Fill, fill, "timestamp"), (Position, position, "updated_at")]
    for model, good, field in cases:
        model.parse(good)
        model.parse(json.dumps(good))
        for value in (20240102, "20240102", 1704153600.5, False):
            with pytest.raises(InvalidMessageError) as info:
                model.parse(json.dumps(good | {field: value}))
            assert [p.field for p in info.value.problems] == [field], (model.__name__, field, value)
            assert "UTC offset" in info.value.problems[0].message
    # the optional times still take None
    assert Order.parse(order | {"decision_time": None}).decision_time is None
    assert Position.parse(position | {"updated_at": None}).updated_at is None


@pytest.mark.parametrize(("field", "value"), [("open", True), ("volume", False), ("volume", True),
                                              ("close", "1_0.5"), ("volume", "1_000")])
def test_a_bar_number_is_never_a_boolean_or_grouped_digits(field, value):
    data = bar(**{field: value})
    if field == "open":  # true is 1.0: keep the range consistent, so only the type can be refused
        data.update(low=0.5)
    for kind, raw in (("dict", data), ("json", json.dumps(data))):
        with pytest.raises(InvalidMessageError) as info:
            Bar.parse(raw)
        assert [p.field for p in info.value.problems] == [field], kind
        assert info.value.problems[0].value == value


def test_numbers_and_their_plain_text_are_still_taken():
    a, b = both_ways(bar(open=10, high="11", low=" 9 ", close="1.05e1", volume=0))
    assert a == b and (a.open, a.high, a.low, a.close, a.volume) == (10.0, 11.0, 9.0, 10.5, 0.0)
    # the stored orders come back from DynamoDB with Decimal numbers
    order = Order.parse({"client_order_id": "abcdefgh", "intent_id": "i", "strategy_id": "s", "symbol": "SPX",
                         "side": Side.BUY, "quantity": Decimal("2"), "filled_quantity": Decimal("0.5"),
                         "created_at": T0, "updated_at": T0})
    assert order.quantity == 2.0 and order.filled_quantity == 0.5
    with pytest.raises(InvalidMessageError, match="boolean"):
        RegimeEstimate.parse({"symbol": "SPX", "timestamp": T0, "probabilities": [True, 0, 0, 0],
                              "regime": "BULL", "confidence": 1, "bars_in_regime": 0, "model_version": "m"})


def test_a_feed_of_yyyymmdd_dates_is_dead_lettered_naming_the_time_not_dated_1970():
    cache, dlq, pub = MemoryCache(), MemoryDeadLetters(), MemoryStreamPublisher()
    runner = KinesisStageRunner(FeaturesStep(), cache=cache, dlq=dlq, sink=StreamSink(pub, "features"),
                                snapshots=MemoryKeyValueStore(), stats=StageStats())
    records = [
        kinesis_record(json.dumps(bar(symbol="NEW", timestamp=day, close=10 + i, high=12)).encode(),
                       partition_key="NEW", sequence_number=str(100 + i), stream="market-data", arrival=1.9e9)
        for i, day in enumerate(("20240102", "20240103", "20240104"))
    ]
    assert runner.process(kinesis_event(records)) == {"batchItemFailures": []}
    assert pub.streams.get("features", []) == []  # before: two vectors dated 1970-08-23
    assert len(dlq.reasons) == 3
    assert all("timestamp must be ISO-8601" in r and "T00:00:00Z'" in r for r in dlq.reasons)


def test_an_intent_target_position_is_never_a_boolean():
    from ensemble_trader.domain.models import OrderIntent
    from pydantic import TypeAdapter

    target_position = TypeAdapter(OrderIntent.model_fields["target_position"].rebuild_annotation())
    assert target_position.validate_python(0.5) == 0.5
    with pytest.raises(Exception, match="boolean"):
        target_position.validate_python(True)
