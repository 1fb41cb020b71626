"""Kinesis publisher: PutRecords in bounded requests, per-key order kept, retrying only the entries that failed,
a key's messages packed into aggregated records (:mod:`ensemble_trader.runtime.aggregation`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ensemble_trader.adapters.aws._names import physical
from ensemble_trader.adapters.aws._retry import resend_failed
from ensemble_trader.adapters.aws.clients import attempt_seconds
from ensemble_trader.adapters.aws.clients import client as make_client
from ensemble_trader.adapters.limits import check_stream_record, check_stream_records
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.aggregation import aggregate as aggregate_records
from ensemble_trader.runtime.settings import Settings, get_settings

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024


def chunk_records(
    records: Sequence[tuple[str, bytes]],
    max_records: int = MAX_RECORDS_PER_CALL,
    max_bytes: int = MAX_BYTES_PER_CALL,
) -> list[list[tuple[str, bytes]]]:
    """Split ``records`` (in order) into PutRecords requests within Kinesis' limits.

    The size of an entry is its data plus its partition key, as Kinesis counts it. An entry
    Kinesis refuses (over 1 MiB, a partition key empty or over 256 characters) raises
    :class:`~ensemble_trader.domain.errors.DataError` naming its key
    (:func:`~ensemble_trader.adapters.limits.check_stream_record`).
    """
    chunks: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for key, data in records:
        entry = check_stream_record(key, data)
        if current and (len(current) >= max_records or size + entry > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append((key, data))
        size += entry
    if current:
        chunks.append(current)
    return chunks


def key_rounds(records: Sequence[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    """``records`` regrouped so that no partition key appears twice in a group: group ``r`` holds
    the ``r``-th record of every key (in the given order). Sent group after group, a record
    Kinesis rejects is retried before its key's next record is sent."""
    rounds: list[list[tuple[str, bytes]]] = []
    seen: dict[str, int] = {}
    for key, data in records:
        r = seen.get(key, 0)
        seen[key] = r + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append((key, data))
    return rounds


class KinesisPublisher:
    """:class:`ensemble_trader.ports.StreamPublisher` over Kinesis ``PutRecords``.

    ``stream`` may be a logical name (``"features"``, qualified with the stage) or a physical
    one. Records go out in requests of at most 500 entries and 5 MB. When Kinesis rejects some
    entries of a request (``FailedRecordCount`` > 0, typically throttling), only those entries
    are sent again, after an exponential backoff with jitter; after ``max_attempts`` calls an
    :class:`InfrastructureError` says how many entries are still failing and why. Inside a Lambda
    invocation no request or back-off is started that the invocation's deadline could not hold
    (:func:`~ensemble_trader.adapters.aws._retry.resend_failed`: DeadlineExceededError).

    Ordering: records of one partition key reach the shard in the order given. Kinesis may
    accept a later entry of a request where it rejected an earlier one, and a retry would then
    put the earlier record after the later one — which the next stage takes for a redelivery
    and skips. So a request never holds two records of one key (:func:`key_rounds`): the
    ``r``-th records of all keys go together, and a key's next record is sent only once its
    previous one is in. So that one symbol's backlog does not cost a request per message, a
    key's messages are first packed into aggregated records of up to 10 messages
    (:func:`~ensemble_trader.runtime.aggregation.aggregate`; a key with one message stays a
    plain record): 500 bars of one symbol take 50 requests, not 500. ``aggregate=False`` puts
    every message as its own record (producers whose consumers cannot unpack).
    """

    def __init__(
        self,
        kinesis_client: Any | None = None,
        *,
        settings: Settings | None = None,
        max_attempts: int = 6,
        base_delay_s: float = 0.05,
        max_delay_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        aggregate: bool = True,
    ) -> None:
        self._settings = settings or get_settings()
        self.aggregate = aggregate
        self._client = kinesis_client or make_client("kinesis", self._settings)
        self._attempt_s = attempt_seconds(self._client)
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._sleep = sleep
        self.calls = 0
        self.retried_entries = 0

    def put(self, stream: str, records: Sequence[tuple[str, bytes]]) -> None:
        """Put ``(partition_key, data)`` records on ``stream``; raise InfrastructureError on failure.

        A record Kinesis refuses is a DataError raised before any record is put (records go out
        round by round: found in a later round, the earlier rounds would already be on the
        stream, and put again when the caller splits the call to find the bad record)."""
        name = physical(stream, self._settings)
        check_stream_records(records)
        if self.aggregate:
            records = aggregate_records(records)
        for group in key_rounds(records):
            for chunk in chunk_records(group):
                self._put_chunk(name, chunk)

    def _put_chunk(self, stream: str, chunk: list[tuple[str, bytes]]) -> None:
        sent = 0

        def send(pending: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], str]:
            nonlocal sent
            self.calls += 1
            sent += len(pending)
            response = self._client.put_records(
                StreamName=stream, Records=[{"PartitionKey": key, "Data": data} for key, data in pending]
            )
            if not response.get("FailedRecordCount"):
                return [], ""
            entries = response["Records"]
            failed = [rec for rec, res in zip(pending, entries, strict=True) if "ErrorCode" in res]
            codes = sorted({res["ErrorCode"] for res in entries if "ErrorCode" in res})
            return failed, f"{len(failed)} of {len(pending)} entries rejected ({', '.join(codes)})"

        pending, last_error = resend_failed(
            send, chunk, max_attempts=self.max_attempts, base_delay_s=self.base_delay_s,
            max_delay_s=self.max_delay_s, sleep=self._sleep,
            what=f"Kinesis PutRecords to {stream}", attempt_s=self._attempt_s,
        )
        self.retried_entries += sent - len(chunk)
        if not pending:
            return
        raise InfrastructureError(
            f"Kinesis PutRecords to {stream}: {len(pending)} of {len(chunk)} records still failing "
            f"after {self.max_attempts} attempts; last error: {last_error}"
        )
