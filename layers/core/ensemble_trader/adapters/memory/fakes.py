"""In-memory implementations of the ports in :mod:`ensemble_trader.ports`."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ensemble_trader.adapters.dynamo_numbers import storable
from ensemble_trader.domain.errors import ConcurrencyError, InfrastructureError, ModelArtifactError

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
    """:class:`~ensemble_trader.ports.StreamPublisher`: records per stream, in order."""

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.streams: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self.failures = failures or FailureInjector()

    def put(self, stream: str, records: Sequence[tuple[str, bytes]]) -> None:
        self.failures.check("put")
        self.streams[stream].extend(records)


class MemoryQueuePublisher:
    """:class:`~ensemble_trader.ports.QueuePublisher` with FIFO deduplication by id."""

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.queues: dict[str, list[tuple[str, str, bytes]]] = defaultdict(list)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self.failures = failures or FailureInjector()

    def send(self, queue: str, messages: Sequence[tuple[str, str, bytes]]) -> None:
        self.failures.check("send")
        for group, dedup, body in messages:
            if dedup in self._seen[queue]:
                continue  # SQS FIFO drops a duplicate deduplication id
            self._seen[queue].add(dedup)
            self.queues[queue].append((group, dedup, body))


class MemoryEventBus:
    """:class:`~ensemble_trader.ports.EventBus`: the published events, in order."""

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.events: list[BaseModel] = []
        self.failures = failures or FailureInjector()

    def publish(self, events: Sequence[BaseModel]) -> None:
        self.failures.check("publish")
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
    could never be read back by key).
    """

    def __init__(self, failures: FailureInjector | None = None) -> None:
        self.tables: dict[str, dict[tuple, dict[str, Any]]] = defaultdict(dict)
        self.failures = failures or FailureInjector()

    @staticmethod
    def _key_names(table: str) -> tuple[str, ...]:
        from ensemble_trader import constants

        for spec in constants.TABLES:
            if table == spec.logical or table.endswith("-" + spec.logical):
                return spec.key_names
        raise ValueError(f"MemoryKeyValueStore: {table!r} is not a table of constants.TABLES")

    def get_item(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        self.failures.check("get_item")
        names = self._key_names(table)
        found = self.tables[table].get(tuple(key[n] for n in names))
        return copy.deepcopy(found) if found is not None else None

    def put_item(
        self, table: str, item: Mapping[str, Any], *, expected_version: int | None = None
    ) -> None:
        self.failures.check("put_item")
        names = self._key_names(table)
        missing = [n for n in names if n not in item]
        if missing:
            raise InfrastructureError(f"item for table {table} lacks key attributes {missing}")
        k = tuple(item[n] for n in names)
        if expected_version is not None:
            current = self.tables[table].get(k)
            stored = None if current is None else current.get(VERSION_ATTRIBUTE)
            ok = (stored == expected_version) or (current is None and expected_version == 0)
            if not ok:
                raise ConcurrencyError(
                    f"{table} {dict(zip(names, k, strict=True))}: expected version "
                    f"{expected_version}, stored {stored}"
                )
        self.tables[table][k] = {a: storable(copy.deepcopy(v), a) for a, v in item.items()}

    def get_versions(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        self.failures.check("get_versions")
        names = self._key_names(table)
        rows = self.tables[table]
        return [int(rows.get(tuple(k[n] for n in names), {}).get(VERSION_ATTRIBUTE, 0)) for k in keys]

    def put_items(self, table: str, items: Sequence[Mapping[str, Any]]) -> None:
        """Unconditional puts of many rows (DynamoKeyValueStore's BatchWriteItem)."""
        self.failures.check("put_items")
        names = self._key_names(table)
        rows = [{a: storable(copy.deepcopy(v), a) for a, v in item.items()} for item in items]  # checked first
        for item in rows:
            self.tables[table][tuple(item[n] for n in names)] = item

    def items(self, table: str) -> list[dict[str, Any]]:
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
