"""The orders Lambda's batch processor: a failing intent holds back its own symbol only."""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch import process_partial_response
from ensemble_trader.local.functions import load_module


def fifo_record(message_id: str, symbol: str, seq: int) -> dict:
    return {
        "messageId": message_id, "receiptHandle": f"h-{message_id}", "body": f'{{"symbol": "{symbol}"}}',
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0", "SenderId": "x",
                       "ApproximateFirstReceiveTimestamp": "0", "SequenceNumber": str(seq),
                       "MessageGroupId": symbol, "MessageDeduplicationId": message_id},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:order-intents.fifo", "awsRegion": "us-east-1",
    }


def test_a_failing_intent_fails_the_rest_of_its_symbol_and_lets_the_other_symbols_through():
    handler = load_module("orders", "handler", fresh=True)
    event = {"Records": [fifo_record("a1", "SPX", 1), fifo_record("b1", "IXIC", 2),
                         fifo_record("a2", "SPX", 3), fifo_record("b2", "IXIC", 4)]}
    seen = []

    def record_handler(record):
        seen.append(record.message_id)
        if record.message_id == "a1":
            raise RuntimeError("broker unavailable")
        return {}

    response = process_partial_response(event=event, record_handler=record_handler, processor=handler.processor)
    assert response == {"batchItemFailures": [{"itemIdentifier": "a1"}, {"itemIdentifier": "a2"}]}
    assert seen == ["a1", "b1", "b2"]  # SPX's later intent waits for the retry, IXIC's are processed
