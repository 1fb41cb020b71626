"""A first Alpaca deployment before the keys are stored: the scheduled reconciliation reports the
missing keys instead of failing every 5 minutes.

The stack creates the broker secret with empty keys. Before, every scheduled run raised
``BrokerUnavailableError`` building its router: Lambda retried each run twice and then sent it to
``events-dlq`` (``OrdersReconcileErrorRate`` and ``EventsDlqNotEmpty`` firing, a letter every 5
minutes). Now a run that finds the exact placeholder logs an error, counts
``broker_keys_missing`` (alarm ``BrokerKeysMissing``) and answers ``skipped``; any other failure
to read the keys still raises.
"""

from __future__ import annotations

import json
import logging

import boto3
import pytest
from ensemble_trader.domain.orders import BrokerUnavailableError
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.broker_keys import PLACEHOLDER, is_placeholder, unstored_keys_secret
from ensemble_trader.runtime.orders import OrdersSettings
from ensemble_trader.runtime.settings import Settings
from moto import mock_aws

SECRET = "et-unit-broker-keys"
SCHEDULED = {"version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-01-05T15:05:00Z", "region": "us-east-1",
             "resources": [], "detail": {}}


@pytest.mark.parametrize(("value", "expected"), [
    (json.dumps(PLACEHOLDER), True),
    ('{"api_key":"","secret_key":""}', True),  # as the template holds it
    ('{"secret_key": "", "api_key": ""}', True),
    ('{"api_key": "PK1", "secret_key": "s"}', False),
    ('{"api_key": "PK1", "secret_key": ""}', False),  # half a pair: an operator's mistake, still an error
    ('{"api_key": "", "secret_key": "", "note": "x"}', False),
    ('{"APCA_API_KEY_ID": "", "APCA_API_SECRET_KEY": ""}', False),
    ("", False),
    ("not json", False),
    ("[]", False),
    (None, False),
])
def test_only_the_stacks_own_placeholder_counts(value, expected):
    assert is_placeholder(value) is expected


@pytest.fixture()
def aws(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_the_secret_is_named_only_for_alpaca_with_the_placeholder(aws):
    settings = Settings(stage="unit", aws_endpoint_url=None)
    alpaca, paper = OrdersSettings(broker="alpaca"), OrdersSettings(broker="paper")
    assert unstored_keys_secret(settings, alpaca, aws) is None  # no secret at all: not the placeholder
    aws.create_secret(Name=SECRET, SecretString=json.dumps(PLACEHOLDER))
    assert unstored_keys_secret(settings, alpaca, aws) == SECRET
    assert unstored_keys_secret(settings, paper, aws) is None
    aws.put_secret_value(SecretId=SECRET, SecretString=json.dumps({"api_key": "PK1", "secret_key": "s"}))
    assert unstored_keys_secret(settings, alpaca, aws) is None
    named = OrdersSettings(broker="alpaca", alpaca_secret_name="their-keys")
    aws.create_secret(Name="their-keys", SecretString=json.dumps(PLACEHOLDER))
    assert unstored_keys_secret(settings, named, aws) == "their-keys"


@pytest.fixture()
def entry(aws, monkeypatch):
    """The reconcile entry with its real router, trading Alpaca, over moto's Secrets Manager."""
    from ensemble_trader.adapters.aws.clients import clear_client_cache
    from ensemble_trader.runtime.settings import get_settings

    monkeypatch.setenv("ET_STAGE", "unit")
    monkeypatch.setenv("ET_ORDERS_BROKER", "alpaca")
    monkeypatch.delenv("ET_AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    get_settings.cache_clear()
    clear_client_cache()
    module = load_module("orders", "reconcile", fresh=True)
    yield lambda: module.lambda_handler(SCHEDULED, FakeLambdaContext("et-unit-orders-reconcile"))
    get_settings.cache_clear()
    clear_client_cache()


def _emitted(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]


def test_a_run_before_the_keys_are_stored_is_skipped_loudly_not_failed(entry, aws, capsys, caplog):
    aws.create_secret(Name=SECRET, SecretString=json.dumps(PLACEHOLDER))
    with caplog.at_level(logging.ERROR):
        answer = entry()  # no exception: no retry, no events-dlq letter
    assert SECRET in answer["skipped"] and "First deployment" in answer["skipped"]
    assert "reconciliation skipped" in caplog.text and SECRET in caplog.text
    [doc] = [d for d in _emitted(capsys) if "broker_keys_missing" in d]
    assert doc["broker_keys_missing"] in (1, [1.0], [1]) and doc["service"] == "orders-reconcile"


@pytest.mark.parametrize("value", [
    '{"api_key": "PK1", "secret_key": ""}',
    '{"user": "x"}',
])
def test_keys_stored_wrongly_still_fail_the_run(entry, aws, capsys, value):
    aws.create_secret(Name=SECRET, SecretString=value)
    with pytest.raises(BrokerUnavailableError, match="lacks api_key/secret_key"):
        entry()
    assert not [d for d in _emitted(capsys) if "broker_keys_missing" in d]


def test_a_secret_that_cannot_be_read_still_fails_the_run(entry, capsys):
    with pytest.raises(BrokerUnavailableError, match="cannot read broker secret"):
        entry()
    assert not [d for d in _emitted(capsys) if "broker_keys_missing" in d]
