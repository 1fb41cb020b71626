"""What Kinesis, SQS and EventBridge refuse, checked alike by the AWS publishers and their
in-memory fakes (no boto3 here: the fakes run without it).

Each check covers every record, message or event of a call before anything is sent: a
:class:`DataError` then means nothing of the call went out, so the stage runner, which splits a
refused call to find the record at fault, never publishes the others twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from ensemble_trader import constants
from ensemble_trader.domain.errors import DataError

# ---- Kinesis ---------------------------------------------------------------------------------

MAX_BYTES_PER_RECORD = 1024 * 1024
"""A Kinesis record's data plus its partition key (UTF-8), at most."""
MAX_PARTITION_KEY_CHARS = 256


def check_stream_record(key: str, data: bytes) -> int:
    """The size of a Kinesis record as Kinesis counts it (data plus partition key); DataError for
    one Kinesis refuses (over 1 MiB, an empty partition key or one over 256 characters)."""
    if not key:
        raise DataError("Kinesis refuses an empty partition key")
    if len(key) > MAX_PARTITION_KEY_CHARS:
        raise DataError(f"Kinesis partition key {key[:40]!r}… is {len(key)} characters; the limit is "
                        f"{MAX_PARTITION_KEY_CHARS}")
    size = len(data) + len(key.encode())
    if size > MAX_BYTES_PER_RECORD:
        raise DataError(f"Kinesis record for partition key {key!r} is {size} bytes; the limit is {MAX_BYTES_PER_RECORD}")
    return size


def check_stream_records(records: Sequence[tuple[str, bytes]]) -> None:
    """:func:`check_stream_record` of every ``(partition_key, data)`` record."""
    for key, data in records:
        check_stream_record(key, data)


# ---- SQS -------------------------------------------------------------------------------------

MAX_MESSAGE_BYTES = 256 * 1024
"""SQS's classic message size limit (a queue may allow up to 1 MiB; ours keep the default)."""
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters SQS refuses in a message body (its allowed set is #x9, #xA, #xD, #x20-#xD7FF,
#xE000-#xFFFD and #x10000-#x10FFFF)."""


def is_fifo_queue(queue: str) -> bool:
    """True for a FIFO queue: a physical name ending in ``.fifo``, or a logical FIFO name of
    ``constants.QUEUES``. Only FIFO queues use group and deduplication ids."""
    return queue.endswith(".fifo") or bool(constants.QUEUES.get(queue, False))


def message_text(queue: str, deduplication_id: str, body: bytes | str) -> str:
    """``body`` as the text SQS takes; DataError (naming the queue and the message's
    deduplication id) for a body that is not UTF-8, holds a character SQS refuses or is over
    256 KiB."""
    if isinstance(body, str):
        text = body
    else:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"SQS {queue}: message {deduplication_id!r}: an SQS message body must be UTF-8 text "
                            f"({exc})") from exc
    bad = _NOT_SQS_TEXT.search(text)
    if bad:
        raise DataError(f"SQS {queue}: message {deduplication_id!r} holds the character {bad.group()!r} at "
                        f"{bad.start()}, which SQS refuses")
    size = len(text.encode())
    if size > MAX_MESSAGE_BYTES:  # SQS would refuse the whole batch (BatchRequestTooLong)
        raise DataError(f"SQS {queue}: message {deduplication_id!r} is {size:,} bytes, over the "
                        f"{MAX_MESSAGE_BYTES:,}-byte limit")
    return text


# ---- EventBridge -----------------------------------------------------------------------------

MAX_EVENT_BYTES = 256 * 1024
"""A PutEvents entry, and a whole request, at most."""


def entry_size(entry: dict[str, Any]) -> int:
    """An entry's size as EventBridge counts it (source, detail-type, detail, in UTF-8)."""
    return sum(len(str(entry.get(k, "")).encode()) for k in ("Source", "DetailType", "Detail"))


def to_entry(event: BaseModel, bus: str, source: str = constants.EVENT_SOURCE) -> dict[str, Any]:
    """One PutEvents entry: detail-type = the model's class name, detail = its JSON."""
    return {
        "Source": source,
        "DetailType": type(event).__name__,
        "Detail": event.model_dump_json(),
        "EventBusName": bus,
    }


def checked_entries(
    events: Sequence[BaseModel], bus: str, source: str = constants.EVENT_SOURCE
) -> list[tuple[dict[str, Any], int]]:
    """``(entry, size)`` of every event; DataError for an event over 256 KB."""
    out = []
    for event in events:
        entry = to_entry(event, bus, source)
        n = entry_size(entry)
        if n > MAX_EVENT_BYTES:
            raise DataError(f"{entry['DetailType']} event is {n} bytes; EventBridge accepts at most {MAX_EVENT_BYTES}")
        out.append((entry, n))
    return out
