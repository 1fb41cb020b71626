"""Order-stage settings from the environment: a bad ``ET_ORDERS_*`` / ``ET_RISK_*`` value is refused
with an :class:`EnvironmentSettingError` naming the variable and the cause (it was a bare pydantic
``ValidationError`` about a field, or "error parsing value for field ..." with no reason)."""

from __future__ import annotations

import pytest
from ensemble_trader.domain.errors import DataError
from ensemble_trader.runtime.orders import OrdersSettings, RiskSettings, build_router
from ensemble_trader.runtime.settings import EnvironmentSettingError, Settings
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("variable", "value", "build", "says"),
    [
        ("ET_ORDERS_BROKER", "alpacaa", OrdersSettings, ["'paper' or 'alpaca'", "'alpacaa'"]),
        ("ET_ORDERS_ALLOCATIONS", "SPX=0.5", OrdersSettings, ["not valid JSON", "'SPX=0.5'", "JSON object"]),
        ("ET_ORDERS_ALLOCATIONS", '{"SPX": 0.7, "IXIC": 0.5}', OrdersSettings, ["add up to 1.2"]),
        ("ET_ORDERS_ALLOCATIONS", '{"SPX": 2}', OrdersSettings, ["allocations.SPX", "less than or equal to 1"]),
        ("ET_ORDERS_INITIAL_EQUITY", "-5", OrdersSettings, ["greater than 0", "'-5'"]),
        ("ET_RISK_PRICE_COLLAR", "10", RiskSettings, ["less than 1", "'10'"]),
        ("ET_RISK_RESTRICTED_SYMBOLS", '["gme", "$$"]', RiskSettings, ["'$$' is not a symbol"]),
        ("ET_RISK_RESTRICTED_SYMBOLS", "gme,amc", RiskSettings, ["not valid JSON", "JSON list"]),
        ("ET_RISK_DAILY_LOSS_HALT", "0.01", RiskSettings, ["daily_loss_halt=0.01 must be >= daily_loss_reduce=0.03"]),
        ("ET_RISK_CLOCK", "sometimes", RiskSettings, ["'wall' or 'event'"]),
    ],
)
def test_a_bad_environment_value_names_its_variable_and_the_cause(monkeypatch, variable, value, build, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(EnvironmentSettingError) as caught:
        build()
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    for text in says:
        assert text in str(caught.value)
    assert isinstance(caught.value, DataError) and caught.value.__cause__ is not None


def test_every_bad_variable_is_named(monkeypatch):
    monkeypatch.setenv("ET_RISK_PRICE_COLLAR", "10")
    monkeypatch.setenv("ET_RISK_MAX_ORDER_QUANTITY", "lots")
    with pytest.raises(EnvironmentSettingError) as caught:
        RiskSettings()
    assert "ET_RISK_PRICE_COLLAR" in caught.value.variable and "ET_RISK_MAX_ORDER_QUANTITY" in caught.value.variable
    assert "'lots'" in str(caught.value) and "'10'" in str(caught.value)


def test_a_bad_value_given_in_code_is_not_blamed_on_the_environment(monkeypatch):
    monkeypatch.delenv("ET_ORDERS_BROKER", raising=False)
    with pytest.raises(ValidationError) as caught:
        OrdersSettings(broker="alpacaa")
    assert not isinstance(caught.value, EnvironmentSettingError)


@pytest.mark.parametrize(("variable", "value"), [("ET_ORDERS_BROKER", "alpacaa"), ("ET_RISK_PRICE_COLLAR", "10")])
def test_building_the_router_names_the_bad_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(EnvironmentSettingError, match=f"^{variable}: "):
        build_router(Settings())


def test_a_variable_that_is_not_json_is_named_with_every_other_bad_variable(monkeypatch):
    """A JSON decode error of one variable stopped the settings before the others were validated:
    only ALLOCATIONS was named, and the next start failed on the next variable."""
    monkeypatch.setenv("ET_ORDERS_ALLOCATIONS", "SPX=0.5")
    monkeypatch.setenv("ET_ORDERS_BROKER", "alpacaa")
    monkeypatch.setenv("ET_ORDERS_QUANTITY_STEP", "0")
    with pytest.raises(EnvironmentSettingError) as caught:
        OrdersSettings()
    assert set(caught.value.variable.split(", ")) == {
        "ET_ORDERS_ALLOCATIONS", "ET_ORDERS_BROKER", "ET_ORDERS_QUANTITY_STEP"}
    message = str(caught.value)
    assert "'SPX=0.5' is not valid JSON" in message and "JSON object" in message
    assert "'alpacaa'" in message and "greater than 0 (got '0')" in message
    monkeypatch.setenv("ET_RISK_RESTRICTED_SYMBOLS", "GME")
    monkeypatch.setenv("ET_RISK_PRICE_COLLAR", "10")
    with pytest.raises(EnvironmentSettingError) as caught:
        RiskSettings()
    assert set(caught.value.variable.split(", ")) == {"ET_RISK_RESTRICTED_SYMBOLS", "ET_RISK_PRICE_COLLAR"}
    assert "'GME' is not valid JSON" in str(caught.value) and "JSON list" in str(caught.value)


def test_allocation_keys_are_symbols_in_upper_case(monkeypatch):
    """'{"spx": 0.5}' was kept as {'spx': 0.5}: SPX never matched it and silently traded the
    default allocation (the whole account)."""
    monkeypatch.setenv("ET_ORDERS_ALLOCATIONS", '{"spx": 0.5, " ixic ": 0.25}')
    assert OrdersSettings().allocations == {"SPX": 0.5, "IXIC": 0.25}
    monkeypatch.delenv("ET_ORDERS_ALLOCATIONS")
    assert OrdersSettings(allocations={"btc-usd": 0.5}).allocations == {"BTC-USD": 0.5}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('{"S P X": 0.5}', "'S P X' is not a symbol"),
        ('{"": 0.5}', "'' is not a symbol"),
        ('{"spx": 0.3, "SPX": 0.3}', "SPX is named twice"),
    ],
)
def test_an_allocation_key_that_is_not_a_symbol_is_refused_by_name(monkeypatch, value, says):
    monkeypatch.setenv("ET_ORDERS_ALLOCATIONS", value)
    with pytest.raises(EnvironmentSettingError, match="^ET_ORDERS_ALLOCATIONS: ") as caught:
        OrdersSettings()
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "build"),
    [
        ("ET_ORDERS_INITIAL_EQUITY", "inf", OrdersSettings),
        ("ET_ORDERS_INITIAL_EQUITY", "nan", OrdersSettings),
        ("ET_ORDERS_QUANTITY_STEP", "inf", OrdersSettings),
        ("ET_RISK_MAX_ORDER_NOTIONAL", "inf", RiskSettings),
        ("ET_RISK_MAX_GROSS_EXPOSURE", "Infinity", RiskSettings),
    ],
)
def test_a_money_amount_or_a_limit_must_be_finite(monkeypatch, variable, value, build):
    """ET_ORDERS_INITIAL_EQUITY=inf was accepted, and then every intent failed; an infinite
    risk limit switched its check off unseen."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(EnvironmentSettingError, match=f"^{variable}: .*finite"):
        build()


@pytest.mark.parametrize(
    ("variable", "build", "suggestion"),
    [
        ("ET_RISK_DRAWDOWN_HALTT", RiskSettings, "ET_RISK_DRAWDOWN_HALT"),
        ("ET_ORDERS_INITIAL_EQUTY", OrdersSettings, "ET_ORDERS_INITIAL_EQUITY"),
        ("et_risk_max_order_notionl", RiskSettings, "ET_RISK_MAX_ORDER_NOTIONAL"),
    ],
)
def test_a_misspelt_variable_is_refused_with_the_setting_it_resembles(monkeypatch, variable, build, suggestion):
    # it was ignored: the limit stayed at its default (a 25 % drawdown halt for a meant 5 %)
    monkeypatch.setenv(variable, "0.05")
    with pytest.raises(EnvironmentSettingError) as caught:
        build()
    assert caught.value.variable == variable
    assert f"did you mean {suggestion}?" in str(caught.value)


def test_every_unknown_variable_is_named_and_an_unlike_one_gets_the_list(monkeypatch):
    monkeypatch.setenv("ET_ORDERS_XYZZY", "1")
    monkeypatch.setenv("ET_ORDERS_BROKR", "paper")
    with pytest.raises(EnvironmentSettingError) as caught:
        OrdersSettings()
    assert caught.value.variable == "ET_ORDERS_BROKR, ET_ORDERS_XYZZY"
    assert "did you mean ET_ORDERS_BROKER?" in str(caught.value)
    assert "ET_ORDERS_XYZZY: not a setting; the ET_ORDERS_* settings are " in str(caught.value)
    assert "ET_ORDERS_INITIAL_EQUITY" in str(caught.value)


def test_every_field_is_accepted_by_its_own_name(monkeypatch):
    for field in RiskSettings.model_fields:
        monkeypatch.setenv(f"ET_RISK_{field.upper()}", "")
    for field in OrdersSettings.model_fields:
        monkeypatch.setenv(f"ET_ORDERS_{field.upper()}", "")
    from ensemble_trader.runtime.orders import _refuse_unknown_variables

    _refuse_unknown_variables(RiskSettings)
    _refuse_unknown_variables(OrdersSettings)
