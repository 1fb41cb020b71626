"""The event shapes Lambda delivers from Kinesis and SQS event-source mappings.

Used by the ESM emulator (:mod:`ensemble_trader.local.esm`), by tests and to write the sample
events in ``events/``. Field names, types and nesting are exactly AWS's.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"


def kinesis_stream_arn(stream: str, region: str = "us-east-1") -> str:
    return f"arn:aws:kinesis:{region}:{ACCOUNT}:stream/{stream}"


def sqs_queue_arn(queue: str, region: str = "us-east-1") -> str:
    return f"arn:aws:sqs:{region}:{ACCOUNT}:{queue}"


def kinesis_record(
    data: bytes,
    *,
    partition_key: str,
    sequence_number: str,
    stream: str,
    shard_id: str = "shardId-000000000000",
    arrival: float | None = None,
    region: str = "us-east-1",
    function: str = "function",
) -> dict[str, Any]:
    """One record of a Kinesis event (``Records[i]``), data base64-encoded as Lambda does;
    ``arrival`` (epoch seconds) defaults to now."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": float(time.time() if arrival is None else arrival),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/{function}-role",
        "awsRegion": region,
        "eventSourceARN": kinesis_stream_arn(stream, region),
    }


def kinesis_event(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"Records": [dict(r) for r in records]}


def sqs_record(
    body: str,
    *,
    queue: str,
    message_id: str | None = None,
    receipt_handle: str | None = None,
    attributes: Mapping[str, str] | None = None,
    message_attributes: Mapping[str, Any] | None = None,
    md5_of_body: str | None = None,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """One record of an SQS event. For a FIFO queue ``attributes`` carries MessageGroupId,
    MessageDeduplicationId and SequenceNumber, as SQS reports them. ``md5OfBody`` is the MD5
    of the body unless given (as SQS reports it)."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": receipt_handle or base64.b64encode(uuid.uuid4().bytes).decode(),
        "body": body,
        "attributes": dict(attributes or {}),
        "messageAttributes": dict(message_attributes or {}),
        "md5OfBody": md5_of_body or hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": sqs_queue_arn(queue, region),
        "awsRegion": region,
    }


def eventbridge_event(detail_type: str, detail: Mapping[str, Any], *, source: str, time: str,
                      region: str = "us-east-1", resources: Sequence[str] = ()) -> dict[str, Any]:
    """An EventBridge event as a rule target (a Lambda) receives it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": time,
        "region": region,
        "resources": list(resources),
        "detail": dict(detail),
    }


@dataclass
class FakeLambdaContext:
    """What a handler reads from Lambda's context object (Powertools reads these fields)."""

    function_name: str
    memory_limit_in_mb: int = 1024
    timeout_seconds: int = 30
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    region: str = "us-east-1"
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        import time

        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(0, int((self._deadline - time.monotonic()) * 1000))
