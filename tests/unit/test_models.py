"""Boundary messages: validation names the field and the value; ids are deterministic."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.models import (
    REGIMES,
    Bar,
    FeatureVector,
    Fill,
    MarketState,
    Order,
    OrderIntent,
    OrderStatus,
    Position,
    Regime,
    RegimeEstimate,
    Side,
    deterministic_id,
    make_intent_id,
    parse,
)
from pydantic import ValidationError

T0 = datetime(2020, 1, 2, tzinfo=UTC)


def bar(**overrides) -> dict:
    data = {
        "symbol": "SPX",
        "timestamp": "2020-01-02T00:00:00Z",
        "open": 100.0,
        "high": 101.0,
        "low": 99.0,
        "close": 100.5,
        "volume": 1000.0,
    }
    data.update(overrides)
    return data


def problem_fields(exc: InvalidMessageError) -> set[str]:
    return {p.field for p in exc.problems}


def test_valid_bar_round_trips_through_json():
    b = Bar.parse(bar())
    assert Bar.parse(b.model_dump_json()) == b
    assert b.timestamp.tzinfo is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("open", -1.0),
        ("open", 0.0),
        ("close", math.nan),
        ("high", math.inf),
        ("volume", -5.0),
        ("symbol", "spx lower"),
        ("symbol", ""),
        ("timestamp", "2020-01-02T00:00:00"),  # naive
        ("timestamp", "not a time"),
    ],
)
def test_bad_field_is_named_with_its_value(field, value):
    with pytest.raises(InvalidMessageError) as info:
        Bar.parse(bar(**{field: value}))
    err = info.value
    assert err.model == "Bar"
    assert field in problem_fields(err)
    offending = next(p for p in err.problems if p.field == field)
    assert offending.value == value or (isinstance(value, float) and math.isnan(value))
    assert field in str(err)


def test_inconsistent_range_names_the_values():
    with pytest.raises(InvalidMessageError) as info:
        Bar.parse(bar(high=100.2))  # close 100.5 above high
    assert "high=100.2" in str(info.value)
    with pytest.raises(InvalidMessageError) as info:
        Bar.parse(bar(low=100.1))  # open 100 below low
    assert "low=100.1" in str(info.value)


def test_a_bar_time_finer_than_a_microsecond_is_refused_not_truncated():
    """Truncated, two bars less than a microsecond apart would become one time, and the second
    would be skipped downstream as a redelivery."""
    with pytest.raises(InvalidMessageError, match="sub-microsecond"):
        Bar.parse(bar(timestamp="2024-01-02T00:00:00.123456789Z"))
    assert Bar.parse(bar(timestamp="2024-01-02T00:00:00.123456000Z")).timestamp.microsecond == 123456
    assert Bar.parse(bar(timestamp="2024-01-02T00:00:00.5+00:00")).timestamp.microsecond == 500000
    # every separator the parsers accept is checked, not only an upper-case T
    for text in ("2024-01-02 00:00:00.1234567Z", "2024-01-02t00:00:00.1234567Z", "20240102T000000.1234567Z"):
        with pytest.raises(InvalidMessageError, match="sub-microsecond"):
            Bar.parse(bar(timestamp=text))


@pytest.mark.parametrize("text", ["1600-01-02T00:00:00Z", "2300-01-02T00:00:00Z", "0224-01-02T00:00:00Z"])
def test_a_bar_time_beyond_64_bit_nanoseconds_is_refused(text):
    """Bar times become int64 nanoseconds downstream; numpy would wrap year 0224 round to 1977."""
    with pytest.raises(InvalidMessageError, match="outside the times kept"):
        Bar.parse(bar(timestamp=text))
    assert Bar.parse(bar(timestamp="2262-04-10T23:59:59Z")).timestamp.year == 2262


def test_a_bar_without_a_volume_is_refused():
    data = bar()
    del data["volume"]
    with pytest.raises(InvalidMessageError, match="volume"):
        Bar.parse(data)


def test_unknown_field_and_bad_json_are_rejected():
    with pytest.raises(InvalidMessageError) as info:
        Bar.parse(bar(extra=1))
    assert "extra" in problem_fields(info.value)
    with pytest.raises(InvalidMessageError):
        Bar.parse(b"{not json")


def test_models_are_frozen():
    b = Bar.parse(bar())
    with pytest.raises(ValidationError, match="frozen"):
        b.close = 1.0  # type: ignore[misc]


def _regime(**overrides) -> RegimeEstimate:
    data = dict(
        symbol="SPX",
        timestamp=T0,
        probabilities=(0.7, 0.1, 0.1, 0.1),
        regime=Regime.BULL,
        confidence=0.7,
        bars_in_regime=3,
        model_version="m1",
    )
    data.update(overrides)
    return parse(RegimeEstimate, data)


def test_regime_probabilities_must_sum_to_one_and_are_ordered():
    est = _regime()
    assert est.probability(Regime.BULL) == 0.7
    assert [r.value for r in REGIMES] == ["BULL", "BEAR", "SIDEWAYS", "VOLATILE"]
    with pytest.raises(InvalidMessageError, match="sum to 1"):
        _regime(probabilities=(0.5, 0.1, 0.1, 0.1))
    with pytest.raises(InvalidMessageError) as info:
        _regime(probabilities=(1.2, -0.2, 0.0, 0.0))
    assert any(p.field.startswith("probabilities") for p in info.value.problems)


def test_market_state_requires_the_same_bar():
    b = Bar.parse(bar())
    fv = FeatureVector(bar=b, values={"ret_1": 0.0}, warmup_remaining=5)
    assert not fv.ready and fv.symbol == "SPX"
    MarketState(features=fv, regime=_regime())
    with pytest.raises(InvalidMessageError, match="different bars"):
        parse(MarketState, {"features": fv, "regime": _regime(timestamp=T0 + timedelta(days=1))})


def test_feature_values_must_be_finite():
    with pytest.raises(InvalidMessageError) as info:
        parse(FeatureVector, {"bar": bar(), "values": {"ret_1": math.nan}, "warmup_remaining": 0})
    assert "values.ret_1" in problem_fields(info.value)


def test_ids_depend_on_the_instant_not_on_the_utc_offset_it_is_written_with():
    from datetime import timezone

    new_york = T0.astimezone(timezone(timedelta(hours=-5)))
    assert new_york == T0 and new_york.isoformat() != T0.isoformat()
    assert make_intent_id("ens", "SPX", new_york, "v1") == make_intent_id("ens", "SPX", T0, "v1")
    # the ids of UTC times are the ones they always were
    assert make_intent_id("ens", "SPX", T0, "v1") == deterministic_id("intent", "ens", "SPX",
                                                                      "2020-01-02T00:00:00+00:00", "v1")


def test_intent_id_is_deterministic_and_depends_on_every_part():
    a = make_intent_id("ens", "SPX", T0, "v1")
    assert a == make_intent_id("ens", "SPX", T0, "v1")
    assert len({a, make_intent_id("ens", "SPX", T0, "v2"), make_intent_id("ens", "IXIC", T0, "v1"),
                make_intent_id("ens", "SPX", T0 + timedelta(days=1), "v1")}) == 4
    intent = OrderIntent(
        intent_id=a, strategy_id="ens", symbol="SPX", timestamp=T0, target_position=0.5,
        reference_price=100.0, model_version="v1", regime=Regime.BULL, confidence=0.8,
    )
    assert OrderIntent.parse(intent.model_dump_json()) == intent
    with pytest.raises(InvalidMessageError) as info:
        OrderIntent.parse({**intent.model_dump(), "target_position": 3.0})
    assert "target_position" in problem_fields(info.value)


def test_order_consistency():
    now = T0
    o = Order(client_order_id="abcdef1234", intent_id="i" * 10, strategy_id="ens", symbol="SPX",
              side=Side.SELL, quantity=2.0, created_at=now, updated_at=now)
    assert o.signed_quantity == -2.0 and o.remaining_quantity == 2.0
    assert not o.status.terminal and OrderStatus.FILLED.terminal
    with pytest.raises(InvalidMessageError, match="limit_price"):
        Order.parse({**o.model_dump(), "order_type": "LIMIT"})
    with pytest.raises(InvalidMessageError, match="exceeds quantity"):
        Order.parse({**o.model_dump(), "filled_quantity": 3.0})


def _fill(side: Side, qty: float, price: float, n: int) -> Fill:
    return Fill(fill_id=f"f{n}", client_order_id="abcdef1234", symbol="SPX", side=side,
                quantity=qty, price=price, fee=0.5, timestamp=T0 + timedelta(minutes=n))


def test_position_accounting_average_price_realised_pnl_and_flip():
    p = Position(symbol="SPX")
    p = p.apply(_fill(Side.BUY, 10, 100.0, 1))
    p = p.apply(_fill(Side.BUY, 10, 110.0, 2))
    assert p.quantity == 20 and p.average_price == pytest.approx(105.0)
    p = p.apply(_fill(Side.SELL, 5, 120.0, 3))
    assert p.quantity == 15 and p.average_price == pytest.approx(105.0)
    assert p.realized_pnl == pytest.approx(75.0)
    p = p.apply(_fill(Side.SELL, 25, 100.0, 4))  # closes 15 at a loss of 5 each, opens 10 short at 100
    assert p.quantity == pytest.approx(-10) and p.average_price == pytest.approx(100.0)
    assert p.realized_pnl == pytest.approx(0.0)
    p = p.apply(_fill(Side.BUY, 10, 90.0, 5))
    assert p.quantity == 0 and p.average_price == 0 and p.realized_pnl == pytest.approx(100.0)
    assert p.fees_paid == pytest.approx(2.5) and p.last_fill_id == "f5"
    with pytest.raises(ValueError, match="IXIC"):
        Position(symbol="IXIC").apply(_fill(Side.BUY, 1, 1.0, 6))


def test_bar_series_times_convert_exactly_to_the_microsecond():
    import numpy as np
    from ensemble_trader.domain.bars import to_datetime, to_datetime64

    # the last one came back 1 µs early through float seconds
    for text in ("1906-08-16T20:26:40.000001", "2024-03-04T05:06:07.891011", "2248-07-08T17:18:46.538531"):
        ts = np.datetime64(text, "ns")
        when = to_datetime(ts)
        assert when.tzinfo is not None and to_datetime64(when) == ts


def test_closing_a_position_with_rounding_noise_leaves_it_flat():
    p = Position(symbol="SPX", quantity=0.3, average_price=10.0)
    fill = Fill(fill_id="f", client_order_id="c", symbol="SPX", side=Side.SELL, quantity=0.1 + 0.2,
                price=11.0, timestamp=T0)
    after = p.apply(fill)  # 0.1 + 0.2 sells 5.6e-17 more than is held
    assert (after.quantity, after.average_price) == (0.0, 0.0)
    assert after.realized_pnl == pytest.approx(0.3)


@pytest.mark.parametrize("quantity", [0.0, -1.0, math.inf, math.nan])
def test_order_and_fill_quantities_must_be_finite_and_positive(quantity):
    with pytest.raises(InvalidMessageError, match="quantity"):
        parse(Fill, {"fill_id": "f", "client_order_id": "c", "symbol": "SPX", "side": "BUY",
                     "quantity": quantity, "price": 10.0, "timestamp": T0.isoformat()})


def test_broker_position_quantity_must_be_finite():
    from ensemble_trader.domain.orders import BrokerPosition

    with pytest.raises(InvalidMessageError, match="quantity"):
        BrokerPosition.parse({"symbol": "SPX", "quantity": math.nan})


def test_a_missing_field_is_named_as_missing_not_shown_with_the_whole_message_as_its_value():
    """pydantic's "missing" error carries the whole object as its input: the reason printed
    `timestamp={'symbol': 'SPX', 'open': ...}: Field required`."""
    from ensemble_trader.domain.errors import MISSING

    data = bar()
    del data["timestamp"], data["volume"]
    with pytest.raises(InvalidMessageError) as info:
        Bar.parse(data)
    err = info.value
    assert {p.field: p.value for p in err.problems} == {"timestamp": MISSING, "volume": MISSING}
    assert str(err) == "invalid Bar: timestamp: missing (Field required); volume: missing (Field required)"
    assert "SPX" not in err.reason


def test_the_meta_agent_configuration_names_its_problems_like_a_message():
    """One conversion of pydantic's errors: an error of the whole configuration is named as such
    (it was an empty field name), a bad option by its name and value."""
    from ensemble_trader.domain.meta_agent import MetaAgentConfig

    with pytest.raises(InvalidMessageError) as info:
        MetaAgentConfig.create(feedback="bandit", context="probability", mode="select", bogus=1)
    fields = {p.field for p in info.value.problems}
    assert fields == {"bogus"} or fields == {"<configuration>", "bogus"}
    with pytest.raises(InvalidMessageError, match=r"^invalid MetaAgentConfig: <configuration>=\{"):
        MetaAgentConfig.create(feedback="bandit", context="probability", mode="select")
