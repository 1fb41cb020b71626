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
    assert alarm["Statistic"] == "Sum" and alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] and alarm["OKActions"]
    assert qualified(stage, "broker-keys") in alarm["AlarmDescription"]
