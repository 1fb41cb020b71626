"""In-memory implementations of the ports in :mod:`ensemble_trader.ports`."""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from ensemble_trader.adapters.dynamo_numbers import MAX_ITEM_BYTES, from_dynamo, item_size, to_dynamo
from ensemble_trader.adapters.limits import check_stream_records, checked_entries, is_fifo_queue, message_text
from ensemble_trader.domain.errors import (
    ConcurrencyError,
    DataError,
    InfrastructureError,
    ModelArtifactError,
    StoreRefusedError,
)

VERSION_ATTRIBUTE = "version"


@dataclass
class FailureInjector:
    """Makes the next ``times`` calls of the named operations raise InfrastructureError.

    ``fail("set_many", times=1)`` makes the next ``set_many`` fail once; the fake calls
    :meth:`check` at the top of each operation.
    """

    pending: dict[str, int] = field(default_factory=dict)
    raised: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def fail(self, operation: str, times: int = 1) -> None:
        self.pending[operation] = self.pending.get(operation, 0) + times

    def check(self, operation: str) -> None:
        left = self.pending.get(operation, 0)
        if left > 0:
            self.pending[operation] = left - 1
            self.raised[operation] += 1
            raise InfrastructureError(f"injected failure of {operation}")


class MemoryCache:
    """:class:`~ensemble_trader.ports.Cache` in a dict."""

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.data: dict[str, bytes] = {}
        self.failures = failures or FailureInjector()
        self.calls: dict[str, int] = defaultdict(int)

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.calls["get_many"] += 1
        self.failures.check("get_many")
        return [self.data.get(k) for k in keys]

    def set_many(self, items: Mapping[str, bytes]) -> None:
        self.calls["set_many"] += 1
        self.failures.check("set_many")
        self.data.update(items)

    def delete(self, *keys: str) -> None:
        self.failures.check("delete")
        for k in keys:
            self.data.pop(k, None)


class MemoryStreamPublisher:
    """:class:`~ensemble_trader.ports.StreamPublisher`: records per stream, in order.

    A record Kinesis refuses (over 1 MiB, a partition key empty or over 256 characters) is a
    DataError and nothing of the call is kept, as with the real publisher
    (:func:`~ensemble_trader.adapters.limits.check_stream_records`)."""

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.streams: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self.failures = failures or FailureInjector()

    def put(self, stream: str, records: Sequence[tuple[str, bytes]]) -> None:
        self.failures.check("put")
        check_stream_records(records)
        self.streams[stream].extend(records)


class MemoryQueuePublisher:
    """:class:`~ensemble_trader.ports.QueuePublisher` with SQS's limits and FIFO deduplication.

    A body SQS refuses (not UTF-8, a character SQS refuses, over 256 KiB) is a DataError and
    nothing of the call is kept (:func:`~ensemble_trader.adapters.limits.message_text`, as the
    real publisher). On a FIFO queue (a logical FIFO name of ``constants.QUEUES`` or a name
    ending in ``.fifo``) a repeated deduplication id is dropped — for good here, where SQS
    forgets it after five minutes; a standard queue keeps every message.
    """

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.queues: dict[str, list[tuple[str, str, bytes]]] = defaultdict(list)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self.failures = failures or FailureInjector()

    def send(self, queue: str, messages: Sequence[tuple[str, str, bytes]]) -> None:
        self.failures.check("send")
        for _, dedup, body in messages:
            message_text(queue, dedup, body)
        fifo = is_fifo_queue(queue)
        for group, dedup, body in messages:
            if fifo:
                if dedup in self._seen[queue]:
                    continue  # SQS FIFO drops a duplicate deduplication id
                self._seen[queue].add(dedup)
            self.queues[queue].append((group, dedup, body))


class MemoryEventBus:
    """:class:`~ensemble_trader.ports.EventBus`: the published events, in order.

    An event over EventBridge's 256 KB is a DataError and nothing of the call is kept
    (:func:`~ensemble_trader.adapters.limits.checked_entries`, as the real publisher)."""

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.events: list[BaseModel] = []
        self.failures = failures or FailureInjector()

    def publish(self, events: Sequence[BaseModel]) -> None:
        self.failures.check("publish")
        checked_entries(events, "memory")
        self.events.extend(events)


class MemoryDeadLetters:
    """:class:`~ensemble_trader.ports.DeadLetterWriter`: ``(record, reason, source)`` tuples."""

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.letters: list[tuple[Any, str, str]] = []
        self.failures = failures or FailureInjector()

    def send(self, record: Any, reason: str, *, source: str = "") -> None:
        self.failures.check("send")
        self.letters.append((record, reason, source))

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.letters]


class MemoryKeyValueStore:
    """:class:`~ensemble_trader.ports.KeyValueStore` with DynamoDB's conditional-put rule.

    Tables are those of ``constants.TABLES``, by logical name or a physical name ending in it,
    keyed by their key attributes; any other table name is a ValueError (a put keyed by guesswork
    could never be read back by key). Items go through the DynamoDB adapter's conversion
    (:mod:`..dynamo_numbers`): a value DynamoDB cannot hold, an item over 400 KB, a missing or
    empty key attribute is a :class:`DataError` (nothing written, in a batch neither), and what is
    read back is what :class:`~ensemble_trader.adapters.aws.dynamodb.DynamoKeyValueStore` returns
    (a whole number as int, tuples as lists, bytearrays as bytes, numpy scalars as Python
    numbers). A conditional put checks and writes under a lock, as DynamoDB does atomically.
    """

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.tables: dict[str, dict[tuple, dict[str, Any]]] = defaultdict(dict)
        self.failures = failures or FailureInjector()
        self._lock = threading.Lock()

    @staticmethod
    def _key_names(table: str) -> tuple[str, ...]:
        from ensemble_trader import constants

        for spec in constants.TABLES:
            if table == spec.logical or table.endswith("-" + spec.logical):
                return spec.key_names
        raise ValueError(f"MemoryKeyValueStore: {table!r} is not a table of constants.TABLES")

    @staticmethod
    def _key(table: str, names: tuple[str, ...], key: Mapping[str, Any]) -> tuple:
        """The stored key of ``key``'s attributes, checked as DynamoDB checks a key."""
        missing = [n for n in names if n not in key]
        if missing:
            raise DataError(f"{table}: the item lacks its key attributes {missing}")
        values = []
        for n in names:
            value = to_dynamo(key[n], n)
            if not isinstance(value, (str, bytes, Decimal)):
                raise DataError(f"{table}: key attribute {n}={key[n]!r} must be a string, a number or bytes")
            if isinstance(value, (str, bytes)) and not value:
                raise StoreRefusedError(f"{table}: key attribute {n} is empty; DynamoDB refuses an empty key value")
            values.append(from_dynamo(value))
        return tuple(values)

    def _row(self, table: str, names: tuple[str, ...], item: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """(key, item as DynamoDB would return it), or DataError for an item it would refuse."""
        try:
            converted = {a: to_dynamo(v, a) for a, v in item.items()}
        except DataError as exc:
            raise DataError(f"{table}: {exc}") from exc
        size = item_size(converted)
        if size > MAX_ITEM_BYTES:
            raise StoreRefusedError(f"{table}: item size {size:,} bytes has exceeded the maximum allowed size "
                            f"({MAX_ITEM_BYTES:,})")
        return self._key(table, names, item), {a: from_dynamo(v) for a, v in converted.items()}

    def get_item(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        self.failures.check("get_item")
        k = self._key(table, self._key_names(table), key)
        with self._lock:
            found = self.tables[table].get(k)
            return copy.deepcopy(found) if found is not None else None

    def put_item(
        self, table: str, item: Mapping[str, Any], *, expected_version: int | None = None
    ) -> None:
        self.failures.check("put_item")
        names = self._key_names(table)
        k, row = self._row(table, names, item)
        with self._lock:  # check and write as one step
            rows = self.tables[table]
            current = rows.get(k)
            if expected_version is not None:
                stored = None if current is None else current.get(VERSION_ATTRIBUTE)
                ok = (stored == expected_version) or (current is None and expected_version == 0)
                if not ok:
                    raise ConcurrencyError(
                        f"{table} {dict(zip(names, k, strict=True))}: expected version "
                        f"{expected_version}, stored {stored}"
                    )
            rows[k] = row

    def get_versions(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        self.failures.check("get_versions")
        names = self._key_names(table)
        wanted = [self._key(table, names, k) for k in keys]
        with self._lock:
            rows = self.tables[table]
            return [int(rows.get(k, {}).get(VERSION_ATTRIBUTE, 0)) for k in wanted]

    def put_items(self, table: str, items: Sequence[Mapping[str, Any]]) -> None:
        """Unconditional puts of many rows (DynamoKeyValueStore's BatchWriteItem)."""
        self.failures.check("put_items")
        names = self._key_names(table)
        rows = [self._row(table, names, item) for item in items]  # every row checked first
        with self._lock:
            for k, row in rows:
                self.tables[table][k] = row

    def put_new_items(
        self, table: str, items: Sequence[Mapping[str, Any]], *, unless_same: str | None = None
    ) -> list[dict[str, Any] | None]:
        """First writer wins (DynamoKeyValueStore's conditional PutItem per row): each row is
        written unless a row with its key — with ``unless_same``, and the same value of that
        attribute — is stored; per row, None when written, else the stored row that was kept."""
        self.failures.check("put_new_items")
        names = self._key_names(table)
        rows = [self._row(table, names, item) for item in items]  # every row checked first
        out: list[dict[str, Any] | None] = []
        seen: set[tuple] = set()  # a key repeated in the call: written once, the first time
        with self._lock:
            stored = self.tables[table]
            for k, row in rows:
                current = stored.get(k)
                kept = k in seen or current is not None and (
                    unless_same is None or unless_same not in row or current.get(unless_same) == row[unless_same]
                )
                seen.add(k)
                if kept:
                    out.append(copy.deepcopy(current))
                else:
                    stored[k] = row
                    out.append(None)
        return out

    def items(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(v) for v in self.tables[table].values()]


class MemoryModelStore:
    """:class:`~ensemble_trader.ports.ModelStore` in a dict."""

    def __init__(self, objects: Mapping[str, bytes] | None = None) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})

    def read(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise ModelArtifactError(f"model artifact {key!r} does not exist") from None

    def write(self, key: str, data: bytes) -> None:
        self.objects[key] = bytes(data)

    def replace(self, key: str, data: bytes, expected: bytes | None) -> None:
        if self.objects.get(key) != expected:
            raise ConcurrencyError(f"model artifact {key!r} changed since it was read")
        self.objects[key] = bytes(data)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))
