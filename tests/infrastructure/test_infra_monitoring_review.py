"""Monitoring review: orders failures, the breaker and kill-switch state alarms, the alarm math."""

from __future__ import annotations

import json

from ensemble_trader.constants import qualified

STAGE = "dev"


def _alarms(synth) -> dict[str, dict]:
    return {p["AlarmName"]: p for p in synth.props("AWS::CloudWatch::Alarm")}


def _dashboard(synth, name: str) -> str:
    for props in synth.props("AWS::CloudWatch::Dashboard"):
        if props["DashboardName"] == qualified(STAGE, name):
            body = props["DashboardBody"]
            return "".join(str(part) for part in body["Fn::Join"][1]) if isinstance(body, dict) else body
    raise AssertionError(name)


def _orders_emf(alarm: dict, metric: str, statistic: str) -> None:
    assert alarm["Namespace"] == "EnsembleTrader"
    assert alarm["MetricName"] == metric and alarm["Statistic"] == statistic
    assert {"Name": "service", "Value": "orders"} in alarm["Dimensions"]
    assert {"Name": "stage", "Value": STAGE} in alarm["Dimensions"]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1


def test_failed_intents_have_an_alarm_and_a_widget(full):
    alarm = _alarms(full)[qualified(STAGE, "OrdersFailedItems")]
    _orders_emf(alarm, "intents_failed", "Sum")
    assert "intents_failed" in _dashboard(full, "operations")


def test_the_breaker_alarm_follows_the_state_of_every_intent_and_keeps_it_when_none_flow(full):
    alarm = _alarms(full)[qualified(STAGE, "BreakerTripped")]
    _orders_emf(alarm, "account_breaker_state", "Maximum")
    # no intent in a period is not "back to ACTIVE": only an intent routed while ACTIVE clears it
    assert alarm["TreatMissingData"] == "ignore"
    assert alarm["OKActions"] and alarm["AlarmActions"]
    assert "account_breaker_state" in _dashboard(full, "business")


def test_the_kill_switch_has_an_alarm_held_while_it_is_on(full):
    alarm = _alarms(full)[qualified(STAGE, "KillSwitchOn")]
    _orders_emf(alarm, "kill_switch_active", "Maximum")
    assert alarm["TreatMissingData"] == "ignore"


def test_error_rates_use_the_safe_division(full):
    rates = [a for name, a in _alarms(full).items() if name.endswith("ErrorRate")]
    assert len(rates) >= 7
    for alarm in rates:
        expression = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
        assert expression == "IF(invocations > 0, 100 * errors / invocations, 0)"


def test_training_failed_counts_timeouts_and_aborts(full):
    alarm = _alarms(full)[qualified(STAGE, "TrainingFailed")]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert names == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    assert json.dumps(alarm).count("Sum") == 3
