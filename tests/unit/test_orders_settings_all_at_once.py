"""The order stage reads ``ET_ORDERS_*`` and ``ET_RISK_*``: every bad variable of both is named in
one :class:`EnvironmentSettingError`. ``build_router`` read ``OrdersSettings()`` and then
``RiskSettings()``, so a bad ``ET_RISK_*`` value was named only after every ``ET_ORDERS_*`` one
was fixed (one more failed start per class), and within one class a misspelt variable hid every
bad value."""

from __future__ import annotations

import pytest
from ensemble_trader.domain.risk import RiskLimits
from ensemble_trader.runtime.orders import OrdersSettings, RiskSettings, build_router, read_order_settings
from ensemble_trader.runtime.settings import EnvironmentSettingError, Settings

BAD = {
    "ET_ORDERS_BROKER": "alpacaa",
    "ET_ORDERS_ALLOCATIONS": "SPX=0.5",
    "ET_RISK_PRICE_COLLAR": "10",
}


@pytest.fixture()
def bad_environment(monkeypatch):
    for name, value in BAD.items():
        monkeypatch.setenv(name, value)


def _names(error: EnvironmentSettingError) -> list[str]:
    return error.variable.split(", ")


def test_building_the_router_names_the_bad_variables_of_both_prefixes(bad_environment):
    # the documented example (docs/orders-and-risk.md): ET_RISK_PRICE_COLLAR was not named
    with pytest.raises(EnvironmentSettingError) as caught:
        build_router(Settings())
    error = caught.value
    assert _names(error) == ["ET_ORDERS_BROKER", "ET_ORDERS_ALLOCATIONS", "ET_RISK_PRICE_COLLAR"]
    assert list(error.problems) == _names(error)
    message = str(error)
    assert message.startswith("ET_ORDERS_BROKER, ET_ORDERS_ALLOCATIONS, ET_RISK_PRICE_COLLAR: ET_ORDERS_BROKER: ")
    assert "(got 'alpacaa')" in message
    assert "ET_ORDERS_ALLOCATIONS: 'SPX=0.5' is not valid JSON" in message
    assert "ET_RISK_PRICE_COLLAR: Input should be less than 1 (got '10')" in message
    # each class's own refusal is kept
    assert isinstance(error.__cause__, ExceptionGroup)
    assert [type(e) for e in error.__cause__.exceptions] == [EnvironmentSettingError] * 2
    assert [_names(e) for e in error.__cause__.exceptions] == [
        ["ET_ORDERS_BROKER", "ET_ORDERS_ALLOCATIONS"], ["ET_RISK_PRICE_COLLAR"]]


def test_one_class_refused_raises_its_own_error_unchanged(monkeypatch):
    monkeypatch.setenv("ET_RISK_PRICE_COLLAR", "10")
    with pytest.raises(EnvironmentSettingError) as caught:
        read_order_settings()
    assert caught.value.variable == "ET_RISK_PRICE_COLLAR"
    assert caught.value.problems == {"ET_RISK_PRICE_COLLAR": "Input should be less than 1 (got '10')"}
    assert not isinstance(caught.value.__cause__, ExceptionGroup)


def test_settings_given_in_code_are_not_read(bad_environment, monkeypatch):
    orders = OrdersSettings.model_construct()
    monkeypatch.delenv("ET_RISK_PRICE_COLLAR")
    got_orders, got_risk = read_order_settings(orders=orders)
    assert got_orders is orders and type(got_risk) is RiskLimits
    limits = RiskLimits()
    monkeypatch.setenv("ET_RISK_PRICE_COLLAR", "10")
    with pytest.raises(EnvironmentSettingError) as caught:
        read_order_settings(risk=limits)
    assert _names(caught.value) == ["ET_ORDERS_BROKER", "ET_ORDERS_ALLOCATIONS"]
    monkeypatch.delenv("ET_ORDERS_BROKER")
    monkeypatch.delenv("ET_ORDERS_ALLOCATIONS")
    assert read_order_settings(risk=limits)[1] is limits


def test_a_misspelt_variable_and_a_bad_value_are_named_together(monkeypatch):
    # the misspelt name was raised alone, and the bad value only at the next start
    monkeypatch.setenv("ET_RISK_DRAWDOWN_HALTT", "0.05")
    monkeypatch.setenv("ET_RISK_PRICE_COLLAR", "10")
    with pytest.raises(EnvironmentSettingError) as caught:
        RiskSettings()
    assert _names(caught.value) == ["ET_RISK_DRAWDOWN_HALTT", "ET_RISK_PRICE_COLLAR"]
    assert "ET_RISK_DRAWDOWN_HALTT: not a setting (did you mean ET_RISK_DRAWDOWN_HALT?)" in str(caught.value)
    assert "ET_RISK_PRICE_COLLAR: Input should be less than 1 (got '10')" in str(caught.value)
    monkeypatch.setenv("ET_ORDERS_BROKR", "paper")
    monkeypatch.setenv("ET_ORDERS_BROKER", "alpacaa")
    with pytest.raises(EnvironmentSettingError) as caught:
        read_order_settings()
    assert _names(caught.value) == [
        "ET_ORDERS_BROKR", "ET_ORDERS_BROKER", "ET_RISK_DRAWDOWN_HALTT", "ET_RISK_PRICE_COLLAR"]


def test_a_misspelt_variable_alone_is_still_refused(monkeypatch):
    monkeypatch.setenv("ET_ORDERS_INITIAL_EQUTY", "5")
    with pytest.raises(EnvironmentSettingError) as caught:
        OrdersSettings()
    assert caught.value.variable == "ET_ORDERS_INITIAL_EQUTY"
    assert caught.value.problems == {"ET_ORDERS_INITIAL_EQUTY": "not a setting (did you mean ET_ORDERS_INITIAL_EQUITY?)"}


def test_naming_one_or_several_variables():
    one = EnvironmentSettingError.naming({"ET_X": "bad"})
    assert (one.variable, one.problem, str(one), one.problems) == ("ET_X", "bad", "ET_X: bad", {"ET_X": "bad"})
    two = EnvironmentSettingError.naming({"ET_X": "bad", "ET_Y": "worse"})
    assert str(two) == "ET_X, ET_Y: ET_X: bad; ET_Y: worse"
    assert two.problems == {"ET_X": "bad", "ET_Y": "worse"}
    with pytest.raises(ValueError, match="at least one variable"):
        EnvironmentSettingError.naming({})
