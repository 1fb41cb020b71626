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
    """Durable items (DynamoDB): get / put with an optional optimistic version check.

    An item DynamoDB can never store (a value it cannot hold, an empty set, an empty key, an item
    over 400 KB) is a DataError, raised before anything is written; a failure that may pass on a
    retry is an InfrastructureError. A number reads back as int when it is a whole number of at
    most 38 digits, else as float.
    """

    def get_item(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def put_item(
        self, table: str, item: Mapping[str, Any], *, expected_version: int | None = None
    ) -> None:
        """Write ``item``; with ``expected_version`` the write succeeds only if the stored
        ``version`` equals it (or the item is absent and it is 0: an item stored without a
        ``version`` is not absent), else ConcurrencyError."""
        ...

    def get_versions(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        """The stored ``version`` of the item at each key (0 where there is none), read
        consistently — how a cached copy is checked against the durable one."""
        ...


@runtime_checkable
class ModelStore(Protocol):
    """The model registry (S3 in AWS, a folder or the local stack's bucket locally)."""

    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes) -> None: ...

    def replace(self, key: str, data: bytes, expected: bytes | None) -> None:
        """Write ``data`` only if the object still holds ``expected`` (None: it does not exist),
        as one atomic step; ConcurrencyError otherwise (another writer got there first)."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with ``prefix``."""
        ...


# --------------------------------------------------------------------------------------------
# Orders and risk (issue 6). Types live in ensemble_trader.domain.orders / domain.risk.
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Broker(Protocol):
    """Where orders go (paper or Alpaca). Idempotent on ``client_order_id``.

    ``submit`` raises ``BrokerRejectedError`` (definitive refusal), ``UnknownOutcomeError``
    (timeout, 5xx, lost connection: resolve by ``get_order_by_client_id``, never resubmit under a
    new id) or ``DuplicateClientOrderIdError``; reads raise ``BrokerUnavailableError``.
    """

    name: str

    def submit(self, order: Any) -> Any:
        """Send an ``Order``; returns the broker's ``BrokerOrder`` acknowledgement."""
        ...

    def get_order_by_client_id(self, client_order_id: str) -> Any | None:
        """The ``BrokerOrder`` with this client order id, or None if the broker has none."""
        ...

    def cancel(self, client_order_id: str) -> Any | None:
        """Request cancellation; returns the order's ``BrokerOrder`` after the request."""
        ...

    def list_open_orders(self) -> Sequence[Any]:
        """Every working ``BrokerOrder``."""
        ...

    def list_positions(self) -> Sequence[Any]:
        """Every non-zero ``BrokerPosition``."""
        ...


@runtime_checkable
class OrdersStore(Protocol):
    """Orders, positions and risk state (DynamoDB in AWS, a dict in memory)."""

    def create_order(self, order: Any) -> bool:
        """Conditional put (the id must be new): True if written, False if it already existed."""
        ...

    def get_order(self, client_order_id: str) -> Any | None: ...

    def update_order(self, order: Any, *, expected_status: Any, expected_filled: float) -> bool:
        """Write ``order`` if the stored one still has this status and filled quantity; False
        (nothing written) if another writer changed it first."""
        ...

    def list_orders(self, *, working_only: bool = False) -> list[Any]: ...

    def apply_fill(self, order: Any, fill: Any, *, expected_status: Any, expected_filled: float) -> Any | None:
        """Atomically write ``order`` and the symbol's position after ``fill`` (one transaction).
        Returns the new ``Position``, or None (nothing written) if the stored order's status is
        no longer ``expected_status`` or its filled quantity no longer ``expected_filled`` (the
        fill was applied already, or another writer moved the order on — e.g. the kill switch
        retired it: a fill must not overwrite that)."""
        ...

    def get_position(self, symbol: str) -> Any | None: ...

    def list_positions(self) -> list[Any]: ...

    def put_position(self, position: Any) -> None: ...

    def load_risk_state(self) -> Any:
        """The ``RiskState`` (a fresh one if none is stored); its ``version`` is the stored one."""
        ...

    def save_risk_state(self, state: Any, *, write_kill_switch: bool = False) -> None:
        """Write ``state`` if the stored version is still ``state.version`` (then bump it), else
        ConcurrencyError. The kill-switch flag is its own attribute, written only with
        ``write_kill_switch`` (so an operator's direct flip is never overwritten); that write is
        also conditional on the switch, its command time and id being as they were read
        (ConcurrencyError otherwise: the command is decided again on the new state).

        A store may also offer ``server_time() -> datetime``: its service's clock in whole
        seconds (DynamoDB: the ``Date`` header), which the operator CLI stamps its kill-switch
        commands with; without it the router's clock, cut to whole seconds, is used."""
        ...
