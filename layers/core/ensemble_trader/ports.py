"""Ports: what the domain needs from the outside world, as Protocols.

Adapters implement them for AWS (``adapters/aws``), Redis (``adapters/redis``) and in memory
(``adapters/memory``, used by unit tests and the in-process backtester). Adapters translate
service errors into the domain's exceptions (:mod:`ensemble_trader.domain.errors`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


@runtime_checkable
class Cache(Protocol):
    """Hot state (ElastiCache / Redis): bytes by key. A cache, never the only copy."""

    def get(self, key: str) -> bytes | None: ...

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def set_many(self, items: Mapping[str, bytes]) -> None: ...

    def delete(self, *keys: str) -> None: ...


@runtime_checkable
class StreamPublisher(Protocol):
    """Puts records on a stream (Kinesis), partition key = symbol, order kept per key."""

    def put(self, stream: str, records: Sequence[tuple[str, bytes]]) -> None: ...


@runtime_checkable
class QueuePublisher(Protocol):
    """Sends messages to a FIFO queue (SQS): group id = symbol, deduplication id = intent id."""

    def send(self, queue: str, messages: Sequence[tuple[str, str, bytes]]) -> None:
        """``messages`` are (group_id, deduplication_id, body)."""
        ...


@runtime_checkable
class DeadLetterWriter(Protocol):
    """Sends a record that cannot be processed, with the reason, to a dead-letter queue."""

    def send(self, record: Any, reason: str, *, source: str = "") -> None:
        """``record`` is the raw input (a Lambda event record dict, bytes or a model);
        ``reason`` says what was wrong (for an InvalidMessageError: field and value)."""
        ...


@runtime_checkable
class EventBus(Protocol):
    """Publishes domain events (EventBridge). Off the hot path."""

    def publish(self, events: Sequence[BaseModel]) -> None: ...


@runtime_checkable
class KeyValueStore(Protocol):
    """Durable items (DynamoDB): get / put with an optional optimistic version check."""

    def get_item(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def put_item(
        self, table: str, item: Mapping[str, Any], *, expected_version: int | None = None
    ) -> None:
        """Write ``item``; with ``expected_version`` the write succeeds only if the stored
        ``version`` equals it (or the item is absent and it is 0), else ConcurrencyError."""
        ...


@runtime_checkable
class ModelStore(Protocol):
    """The model registry (S3 in AWS, a folder or the local stack's bucket locally)."""

    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes) -> None: ...
