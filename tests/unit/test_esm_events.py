"""Event shapes of the ESM emulator and the sample events: exactly what Lambda delivers."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser.models import (
    EventBridgeModel,
    KinesisDataStreamModel,
    SqsModel,
)
from ensemble_trader.domain.models import Bar, OrderIntent
from ensemble_trader.local.esm import MarshalError, _batch_item_failures, _lambda_message_attributes, _marshal
from ensemble_trader.local.events import FakeLambdaContext, kinesis_event, kinesis_record, sqs_record

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_kinesis_record_matches_the_lambda_shape():
    record = kinesis_record(b'{"a": 1}', partition_key="SPX", sequence_number="4959", stream="et-local-market-data",
                            shard_id="shardId-000000000001", arrival=1700000000.5)
    parsed = KinesisDataStreamModel.model_validate(kinesis_event([record])).Records[0]
    assert parsed.kinesis.data == b'{"a": 1}'
    assert parsed.eventID == "shardId-000000000001:4959"
    assert parsed.eventSourceARN == "arn:aws:kinesis:us-east-1:123456789012:stream/et-local-market-data"
    assert parsed.kinesis.approximateArrivalTimestamp == 1700000000.5


def test_sqs_record_matches_the_lambda_shape():
    record = sqs_record("{}", queue="et-local-order-intents.fifo", message_id="m-1",
                        attributes={"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000000",
                                    "SenderId": "x", "ApproximateFirstReceiveTimestamp": "1700000000001",
                                    "MessageGroupId": "SPX", "MessageDeduplicationId": "d"})
    parsed = SqsModel.model_validate({"Records": [record]}).Records[0]
    assert parsed.messageId == "m-1" and parsed.attributes.MessageGroupId == "SPX"
    assert parsed.eventSourceARN.endswith(":et-local-order-intents.fifo")
    assert record["md5OfBody"] == hashlib.md5(b"{}").hexdigest()  # as SQS reports it


def test_sample_kinesis_events_carry_real_bars():
    good = json.loads((EVENTS / "kinesis-market-data.json").read_text())
    records = KinesisDataStreamModel.model_validate(good).Records
    bars = [Bar.parse(r.kinesis.data) for r in records]
    assert {b.symbol for b in bars} == {"SPX", "IXIC"} and len(bars) == 6
    bad = json.loads((EVENTS / "kinesis-market-data-bad-record.json").read_text())
    payloads = [base64.b64decode(r["kinesis"]["data"]) for r in bad["Records"]]
    problems = []
    for data in payloads:
        try:
            Bar.parse(data)
        except ValueError as exc:
            problems.append(str(exc))
    assert len(problems) == 1 and "low" in problems[0]


def test_sample_sqs_and_eventbridge_events_parse():
    sqs = SqsModel.model_validate(json.loads((EVENTS / "sqs-order-intent.json").read_text()))
    intent = OrderIntent.parse(sqs.Records[0].body)
    assert sqs.Records[0].attributes.MessageDeduplicationId == intent.intent_id
    for name in ("sqs-order-intent.json", "sqs-order-intents-batch.json"):
        for r in json.loads((EVENTS / name).read_text())["Records"]:
            assert r["md5OfBody"] == hashlib.md5(r["body"].encode()).hexdigest()
    for name in ("eventbridge-kill-switch-on.json", "eventbridge-kill-switch-off.json"):
        event = EventBridgeModel.model_validate(json.loads((EVENTS / name).read_text()))
        assert event.detail_type == "KillSwitch" and event.source == "ensemble-trader.control"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (None, []),
        ({}, []),
        ({"batchItemFailures": []}, []),
        ({"batchItemFailures": [{"itemIdentifier": "7"}, {"itemIdentifier": "9"}]}, ["7", "9"]),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
        ({"batchItemFailures": [{"id": "7"}]}, None),
        ({"batchItemFailures": "7"}, None),
        ("ok", None),
    ],
)
def test_partial_batch_response_parsing(response, expected):
    assert _batch_item_failures(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (None, None),
        ({"batchItemFailures": ({"itemIdentifier": "7"},)}, {"batchItemFailures": [{"itemIdentifier": "7"}]}),
        ({"price": Decimal("1.5"), 1: "a"}, {"price": 1.5, "1": "a"}),  # as the runtime encodes them
        (b'{"batchItemFailures": []}', {"batchItemFailures": []}),  # bytes are the payload itself
        (b"not json", b"not json"),  # ... a malformed response
    ],
)
def test_the_response_is_what_lambdas_json_round_trip_gives(response, expected):
    assert _marshal(response) == expected


@pytest.mark.parametrize("response", [{"at": datetime(2024, 1, 2, tzinfo=UTC)}, {"symbols": {"SPX"}}, {(1, 2): 3}])
def test_a_response_json_cannot_encode_is_a_marshal_error(response):
    with pytest.raises(MarshalError, match="^Unable to marshal response: "):
        _marshal(response)


def test_message_attributes_use_the_lambda_casing():
    out = _lambda_message_attributes({"a": {"StringValue": "x", "DataType": "String"},
                                      "b": {"BinaryValue": b"\x01", "DataType": "Binary"}})
    assert out["a"]["stringValue"] == "x" and out["b"]["binaryValue"] == "AQ=="


def test_fake_context_satisfies_powertools_logger(capsys):
    logger = Logger(service="esm-test")

    @logger.inject_lambda_context(correlation_id_path="Records[0].eventID")
    def handler(event, context):
        logger.info("hello")
        return context.get_remaining_time_in_millis()

    context = FakeLambdaContext("et-local-features", timeout_seconds=30)
    remaining = handler(kinesis_event([kinesis_record(b"{}", partition_key="K", sequence_number="1", stream="s")]),
                        context)
    assert 0 < remaining <= 30_000
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["function_name"] == "et-local-features"
    assert line["correlation_id"] == "shardId-000000000000:1"
