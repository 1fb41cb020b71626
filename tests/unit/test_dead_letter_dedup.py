"""A redelivered SQS record dead-lettered again is stored once on a FIFO dead-letter queue.

SQS gives every delivery of a message a new ``receiptHandle`` and a higher
``attributes.ApproximateReceiveCount``; the letter keeps the record as delivered, but its
deduplication id leaves those out, so the second letter of one message falls in SQS's
five-minute deduplication window. Another message (another ``messageId``), even with the same
body, is a letter of its own. moto's SQS deduplicates FIFO messages as SQS does.
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.adapters.aws.sqs import SqsDeadLetterWriter, dead_letter_dedup_id
from ensemble_trader.runtime.settings import Settings

from tests.unit.test_orders_handler import fifo_record

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused")


def redelivered(record: dict, receive: int) -> dict:
    """``record`` as SQS delivers it the ``receive``-th time."""
    return dict(record, receiptHandle=f"{record['receiptHandle']}-again-{receive}",
                attributes={**record["attributes"], "ApproximateReceiveCount": str(receive)})


@pytest.fixture()
def orders_dlq(aws):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="et-unit-orders-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]

    def letters() -> list[dict]:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in got]

    return SqsDeadLetterWriter("orders-dlq", sqs, settings=SETTINGS, source="orders"), letters


def test_a_redelivered_record_dead_lettered_again_is_stored_once_with_its_first_delivery(orders_dlq):
    writer, letters = orders_dlq
    first = fifo_record("m-1", "SPX", 1)
    writer.send(first, "MALFORMED_INTENT: invalid OrderIntent: target_position=True: ...")
    writer.send(redelivered(first, 2), "MALFORMED_INTENT: invalid OrderIntent: target_position=True: ...")
    writer.send(redelivered(first, 3), "MALFORMED_INTENT: invalid OrderIntent: target_position=True: ...")
    (letter,) = letters()
    assert letter["record"] == first  # kept whole: receipt handle and receive count included


def test_other_messages_and_other_reasons_are_letters_of_their_own(orders_dlq):
    writer, letters = orders_dlq
    first = fifo_record("m-1", "SPX", 1)
    same_body = dict(fifo_record("m-2", "SPX", 2), body=first["body"])
    writer.send(first, "MALFORMED_INTENT: a")
    writer.send(same_body, "MALFORMED_INTENT: a")
    writer.send(redelivered(first, 2), "INTENT_CONFLICT: b")
    got = letters()
    assert [(x["record"]["messageId"], x["reason"]) for x in got] == [
        ("m-1", "MALFORMED_INTENT: a"), ("m-2", "MALFORMED_INTENT: a"), ("m-1", "INTENT_CONFLICT: b")]


def test_the_deduplication_id_ignores_only_what_changes_between_deliveries():
    first = fifo_record("m-1", "SPX", 1)
    again = redelivered(first, 2)
    assert dead_letter_dedup_id(first, "r", "orders") == dead_letter_dedup_id(again, "r", "orders")
    for changed in (dict(first, body='{"symbol": "IXIC"}'), dict(first, messageId="m-9"),
                    dict(first, attributes={**first["attributes"], "MessageDeduplicationId": "other"})):
        assert dead_letter_dedup_id(changed, "r", "orders") != dead_letter_dedup_id(first, "r", "orders")
    assert dead_letter_dedup_id(first, "r", "orders") != dead_letter_dedup_id(first, "r2", "orders")
    assert dead_letter_dedup_id(first, "r", "orders") != dead_letter_dedup_id(first, "r", "features")
    # a record that is not an SQS record keeps every field in the id, as before
    kinesis_like = {"receiptHandle": "h1", "kinesis": {"sequenceNumber": "1"}}
    assert dead_letter_dedup_id(kinesis_like, "r", "features") != dead_letter_dedup_id(
        dict(kinesis_like, receiptHandle="h2"), "r", "features")


def test_a_record_too_large_for_the_letter_is_still_stored_once(orders_dlq):
    writer, letters = orders_dlq
    first = dict(fifo_record("m-1", "SPX", 1), body="x" * 210_000)  # the letter keeps a prefix only
    writer.send(first, "MALFORMED_INTENT: too long")
    writer.send(redelivered(first, 2), "MALFORMED_INTENT: too long")
    (letter,) = letters()
    assert letter["truncated"] is True and "record" not in letter
