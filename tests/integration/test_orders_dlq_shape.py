"""The orders Lambda's dead letters against the local stack (moto server + Redis): a bad intent
SQS delivers again is stored once in ``orders-dlq.fifo``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture()
def orders_env(clean_stack, monkeypatch):
    monkeypatch.setenv("ET_RISK_CLOCK", "event")  # replayed 1999 bars
    return clean_stack.stack


def sample_records() -> list[dict]:
    return json.loads((EVENTS / "sqs-order-intents-batch.json").read_text())["Records"]


def invoke(stack, event: dict):
    handler = load_module("orders", "handler", fresh=True)
    return handler.lambda_handler(event, FakeLambdaContext(stack.name("orders")))


def test_a_malformed_intent_delivered_three_times_is_one_letter(orders_env):
    stack = orders_env
    malformed = next(r for r in sample_records() if '"reference_price": -1' in r["body"])  # target 7.5 too
    for receive in (1, 2, 3):  # as SQS delivers it again: a new receipt handle, a higher receive count
        record = dict(malformed, receiptHandle=f"{malformed['receiptHandle']}-{receive}",
                      attributes={**malformed["attributes"], "ApproximateReceiveCount": str(receive)})
        assert invoke(stack, {"Records": [record]}) == {"batchItemFailures": []}
    (letter,) = stack.read_queue("orders-dlq")
    assert letter["reason"].startswith("MALFORMED_INTENT") and letter["record"]["messageId"] == malformed["messageId"]
    assert letter["record"]["attributes"]["ApproximateReceiveCount"] == "1"  # the first delivery, whole
