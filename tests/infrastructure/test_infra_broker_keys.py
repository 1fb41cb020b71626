"""The broker secret's initial value is the placeholder the reconciliation recognises, and the
missing keys it reports have an alarm.

A first Alpaca deployment leaves the secret as the stack created it until an operator stores the
key pair; the scheduled reconciliation then reports ``broker_keys_missing`` instead of failing
every 5 minutes (functions/orders/reconcile.py). It recognises only
``runtime.broker_keys.PLACEHOLDER``, so the template must create exactly that.
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.constants import qualified
from ensemble_trader.runtime.broker_keys import PLACEHOLDER, is_placeholder

from tests.infrastructure.test_infra_state_alarms import evaluate


@pytest.mark.parametrize("fixture", ["full", "real"])
def test_the_secret_is_created_as_the_placeholder(request, fixture):
    synth = request.getfixturevalue(fixture)
    [secret] = synth.props("AWS::SecretsManager::Secret")
    assert isinstance(secret["SecretString"], str)  # a literal, not a generated value
    assert is_placeholder(secret["SecretString"]) and json.loads(secret["SecretString"]) == PLACEHOLDER


@pytest.mark.parametrize(("fixture", "stage"), [("full", "dev"), ("real", "prod")])
def test_missing_keys_have_an_alarm(request, fixture, stage):
    synth = request.getfixturevalue(fixture)
    [alarm] = [p for p in synth.props("AWS::CloudWatch::Alarm") if p["AlarmName"] == qualified(stage, "BrokerKeysMissing")]
    assert alarm["MetricName"] == "broker_keys_missing" and alarm["Namespace"] == "EnsembleTrader"
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {"service": "orders", "stage": stage}
    assert alarm["Statistic"] == "Maximum" and alarm["Threshold"] == 1
    assert alarm["TreatMissingData"] == "ignore"  # every run reports it, 0 included
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] and alarm["OKActions"]
    assert qualified(stage, "broker-keys") in alarm["AlarmDescription"]


def test_missing_keys_alarm_holds_until_the_first_run_that_finds_them(full):
    """The schedule's runs drift against CloudWatch's periods, so some periods hold no run: with
    the sum and missing data not breaching such a period read OK while the keys stayed missing."""
    [alarm] = [p for p in full.props("AWS::CloudWatch::Alarm") if p["AlarmName"] == qualified("dev", "BrokerKeysMissing")]
    period = alarm["Period"]
    for every in (300, 290, 310):
        for phase in range(0, period, 17):
            runs = [phase + k * every for k in range(40)]
            samples = [(t, 1.0) for t in runs[:30]] + [(t, 0.0) for t in runs[30:]]  # missing, then stored
            for until in range(runs[0] + period * 2, runs[29], 60):  # while missing: never OK
                assert evaluate(alarm, samples, until) == "ALARM", (every, phase, until)
            assert evaluate(alarm, samples, runs[31] + 2 * period) == "OK"
