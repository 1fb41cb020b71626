"""SQS adapters: a FIFO/standard queue publisher and the dead-letter writer."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from ensemble_trader.adapters.aws._names import physical
from ensemble_trader.adapters.aws._retry import resend_failed
from ensemble_trader.adapters.aws.clients import CALL_ERRORS, attempt_seconds, call_error
from ensemble_trader.adapters.aws.clients import client as make_client
from ensemble_trader.adapters.limits import is_fifo_queue, message_text
from ensemble_trader.domain.errors import DataError, InfrastructureError
from ensemble_trader.runtime.settings import Settings, get_settings

MAX_BATCH = 10
MAX_BATCH_BYTES = 256 * 1024
DLQ_RECORD_LIMIT = 200 * 1024
"""A dead letter whose JSON would exceed this many bytes keeps its record truncated, marked as such."""
DLQ_REASON_LIMIT = 8 * 1024
"""A reason longer than this (e.g. every field of a record with thousands of bad keys) is cut."""


class SqsPublisher:
    """:class:`ensemble_trader.ports.QueuePublisher`: ``SendMessageBatch`` in batches of 10.

    For a FIFO queue (name ending in ``.fifo``) each message carries its group id (the symbol:
    order is kept per group) and deduplication id (the intent id: a resend within five minutes
    is dropped by SQS). For a standard queue both are ignored. Entries SQS rejects are sent
    again with backoff; after ``max_attempts`` an InfrastructureError names how many failed.
    A body SQS would refuse (not UTF-8, a character SQS refuses, over 256 KiB:
    :func:`~ensemble_trader.adapters.limits.message_text`, which the in-memory fake runs too) is
    a DataError before any message is sent. Entries SQS still rejects as the sender's fault
    (``SenderFault``: e.g. a bad group id) are not retried: once the others went through, a
    DataError names them. Inside a Lambda invocation no call or back-off is started that its
    deadline could not hold (DeadlineExceededError naming the queue and the operation, see
    :func:`~ensemble_trader.adapters.aws._retry.resend_failed`). A failed queue lookup is an
    InfrastructureError naming the queue and what SQS said, its error code included
    (``SQS get_queue_url et-prod-order-intents.fifo: An error occurred (AccessDenied) ...``;
    :func:`~ensemble_trader.adapters.aws.clients.call_error`).
    """

    def __init__(
        self,
        sqs_client: Any | None = None,
        *,
        settings: Settings | None = None,
        max_attempts: int = 5,
        base_delay_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings or get_settings()
        self._client = sqs_client or make_client("sqs", self._settings)
        self._attempt_s = attempt_seconds(self._client)
        self._urls: dict[str, str] = {}
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self._sleep = sleep

    def queue_url(self, queue: str) -> str:
        name = physical(queue, self._settings)
        url = self._urls.get(name)
        if url is None:
            try:
                url = self._client.get_queue_url(QueueName=name)["QueueUrl"]
            except CALL_ERRORS as exc:  # what SQS said (AccessDenied, NonExistentQueue, ...), led by the queue
                raise call_error(exc, f"SQS get_queue_url {name}") from exc
            self._urls[name] = url
        return url

    def send(self, queue: str, messages: Sequence[tuple[str, str, bytes]]) -> None:
        """Send ``(group_id, deduplication_id, body)`` messages in order."""
        name = physical(queue, self._settings)
        fifo = is_fifo_queue(name)
        url = self.queue_url(queue)
        entries = []
        for i, (group, dedup, body) in enumerate(messages):  # every body checked before a batch goes
            text = message_text(name, dedup, body)
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": text}
            if fifo:
                entry["MessageGroupId"] = group
                entry["MessageDeduplicationId"] = dedup
            entries.append(entry)
        for batch in _batches(entries):
            self._send_batch(name, url, batch)

    def _send_batch(self, name: str, url: str, batch: list[dict[str, Any]]) -> None:
        rejected: list[dict[str, Any]] = []  # sender faults: a resend would be rejected again

        def send(pending: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
            response = self._client.send_message_batch(QueueUrl=url, Entries=pending)
            failed_ids = {f["Id"]: f for f in response.get("Failed", [])}
            rejected.extend(f for f in failed_ids.values() if f.get("SenderFault"))
            transient = {i for i, f in failed_ids.items() if not f.get("SenderFault")}
            failed = [e for e in pending if e["Id"] in transient]
            return failed, "; ".join(f"{failed_ids[i].get('Code')}" for i in sorted(transient))

        pending, last_error = resend_failed(
            send, batch, max_attempts=self.max_attempts, base_delay_s=self.base_delay_s, sleep=self._sleep,
            what=f"SQS SendMessageBatch to {name}", attempt_s=self._attempt_s,
        )
        if pending:
            raise InfrastructureError(
                f"SQS SendMessageBatch to {name}: {len(pending)} of {len(batch)} messages still failing "
                f"after {self.max_attempts} attempts; last error: {last_error}"
            )
        if rejected:
            raise DataError(
                f"SQS {name} rejected {len(rejected)} of {len(batch)} messages as the sender's fault: "
                + "; ".join(f"{f.get('Code')}: {f.get('Message', '')}" for f in rejected)
            )


class SqsDeadLetterWriter:
    """:class:`ensemble_trader.ports.DeadLetterWriter`: one JSON message per failed record.

    The body is ``{"reason", "source", "failed_at", "record"}``; ``record`` is the input as it
    arrived (a Lambda event record dict, a model as JSON, text, or bytes as base64 under
    ``record_base64``), so the message can be inspected and replayed — unless the letter would
    exceed ``DLQ_RECORD_LIMIT``: then it keeps a prefix under ``record_truncated`` (see
    :func:`dead_letter_body`). On a FIFO dead-letter queue (``orders-dlq.fifo``) the
    deduplication id (:func:`dead_letter_dedup_id`) is derived from the reason, the source and
    the record without what changes from one delivery of an SQS message to the next, so the
    letters of one record delivered again and dead-lettered again within SQS's five-minute
    deduplication window are stored once (the first, its record as that delivery carried it).
    On a standard queue (the stages' ``features-dlq``, ``regime-dlq``, ``meta-agent-dlq``) SQS
    has no deduplication: each redelivery dead-lettered again is stored again.
    """

    def __init__(
        self,
        queue: str,
        sqs_client: Any | None = None,
        *,
        settings: Settings | None = None,
        source: str = "",
    ) -> None:
        self.queue = queue
        self.source = source
        self._publisher = SqsPublisher(sqs_client, settings=settings)

    def send(self, record: Any, reason: str, *, source: str = "") -> None:
        source = source or self.source
        body = dead_letter_body(record, reason, source=source)
        group = source or "dead-letters"
        self._publisher.send(self.queue, [(group, dead_letter_dedup_id(record, reason, source), body.encode())])


SQS_DELIVERY_FIELDS = ("receiptHandle",)
"""Fields of an SQS event record that change from one delivery of a message to the next."""
SQS_DELIVERY_ATTRIBUTES = ("ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp")
"""Its ``attributes`` that may change between deliveries (the receive count does every time)."""


def dead_letter_dedup_id(record: Any, reason: str, source: str = "") -> str:
    """The deduplication id of a dead letter on a FIFO queue: a SHA-256 of the letter's content
    without ``failed_at``, the record of an SQS event (``eventSource`` ``aws:sqs``) taken without
    :data:`SQS_DELIVERY_FIELDS` and :data:`SQS_DELIVERY_ATTRIBUTES`. So every delivery of one
    message (same ``messageId``, body and attributes) refused for the same reason gives one id,
    while another message, even with the same body, or another reason gives another. Any other
    record counts whole, as the letter stores it (cut as :func:`dead_letter_body` cuts it)."""
    if isinstance(record, Mapping) and record.get("eventSource") == "aws:sqs":
        record = {k: v for k, v in record.items() if k not in SQS_DELIVERY_FIELDS}
        attributes = record.get("attributes")
        if isinstance(attributes, Mapping):
            record["attributes"] = {k: v for k, v in attributes.items() if k not in SQS_DELIVERY_ATTRIBUTES}
    content = json.loads(dead_letter_body(record, reason, source=source))
    del content["failed_at"]  # the same record and reason give the same id on every attempt
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def dead_letter_body(record: Any, reason: str, *, source: str = "") -> str:
    """The JSON document a dead-lettered record is stored as: at most ``DLQ_RECORD_LIMIT`` bytes
    in all (the reason cut at ``DLQ_REASON_LIMIT`` characters, the record at the length that
    fits), so the dead-letter queue never refuses it."""
    if len(reason) > DLQ_REASON_LIMIT:
        reason = f"{reason[:DLQ_REASON_LIMIT]} … ({len(reason) - DLQ_REASON_LIMIT:,} more characters)"
    doc: dict[str, Any] = {
        "reason": reason,
        "source": source,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    if isinstance(record, BaseModel):
        doc["record"] = record.model_dump(mode="json")
    elif isinstance(record, (bytes, bytearray)):
        try:
            doc["record"] = bytes(record).decode("utf-8")
        except UnicodeDecodeError:
            doc["record_base64"] = base64.b64encode(bytes(record)).decode()
    elif isinstance(record, (Mapping, list, str, int, float)) or record is None:
        doc["record"] = record
    else:
        doc["record"] = repr(record)
    body = json.dumps(doc, default=str)
    if len(body.encode()) <= DLQ_RECORD_LIMIT:
        return body
    text = json.dumps(doc.pop("record", doc.pop("record_base64", None)), default=str)
    doc["truncated"] = True
    keep = DLQ_RECORD_LIMIT
    while True:  # the kept text is escaped again inside the body: shrink until the body fits
        doc["record_truncated"] = text[:keep]
        body = json.dumps(doc, default=str)
        size = len(body.encode())
        if size <= DLQ_RECORD_LIMIT or keep == 0:
            return body
        keep = max(0, min(keep - 1, int(keep * DLQ_RECORD_LIMIT / size * 0.98)))


def _batches(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        n = len(entry["MessageBody"].encode())
        if current and (len(current) >= MAX_BATCH or size + n > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        entry = {**entry, "Id": str(len(current))}
        current.append(entry)
        size += n
    if current:
        batches.append(current)
    return batches
