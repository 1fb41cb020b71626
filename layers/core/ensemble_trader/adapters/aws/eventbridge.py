"""EventBridge publisher: domain events as ``PutEvents`` entries, chunked and retried."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from ensemble_trader import constants
from ensemble_trader.adapters.aws._names import physical
from ensemble_trader.adapters.aws._retry import resend_failed
from ensemble_trader.adapters.aws.clients import attempt_seconds
from ensemble_trader.adapters.aws.clients import client as make_client
from ensemble_trader.adapters.limits import MAX_EVENT_BYTES, checked_entries
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.settings import Settings, get_settings

MAX_ENTRIES = 10
MAX_REQUEST_BYTES = MAX_EVENT_BYTES  # a PutEvents request, like one entry


class EventBridgePublisher:
    """:class:`ensemble_trader.ports.EventBus` over EventBridge ``PutEvents``.

    Events go to the stage's bus (``constants.EVENT_BUS``) with ``source`` =
    ``constants.EVENT_SOURCE`` and ``detail-type`` = the event model's class name, ten entries
    per call; entries EventBridge reports as failed are sent again with backoff, and after
    ``max_attempts`` an InfrastructureError names how many are still failing. Inside a Lambda
    invocation no call or back-off is started that its deadline could not hold
    (DeadlineExceededError, see :func:`~ensemble_trader.adapters.aws._retry.resend_failed`).
    """

    def __init__(
        self,
        events_client: Any | None = None,
        *,
        settings: Settings | None = None,
        bus: str = constants.EVENT_BUS,
        source: str = constants.EVENT_SOURCE,
        max_attempts: int = 4,
        base_delay_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings or get_settings()
        self._client = events_client or make_client("events", self._settings)
        self._attempt_s = attempt_seconds(self._client)
        self.bus = physical(bus, self._settings)
        self.source = source
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self._sleep = sleep

    def publish(self, events: Sequence[BaseModel]) -> None:
        """Put ``events`` in order, at most 10 entries and 256 KB per call. An event over 256 KB
        is a DataError raised before any event is put."""
        batch: list[dict[str, Any]] = []
        size = 0
        for entry, n in checked_entries(events, self.bus, self.source):
            if batch and (len(batch) == MAX_ENTRIES or size + n > MAX_REQUEST_BYTES):
                self._put(batch)
                batch, size = [], 0
            batch.append(entry)
            size += n
        if batch:
            self._put(batch)

    def _put(self, entries: list[dict[str, Any]]) -> None:
        def send(pending: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
            response = self._client.put_events(Entries=pending)
            if not response.get("FailedEntryCount"):
                return [], ""
            results = response["Entries"]
            failed = [e for e, r in zip(pending, results, strict=True) if r.get("ErrorCode")]
            why = sorted({f"{r['ErrorCode']}: {r.get('ErrorMessage', '')}" for r in results if r.get("ErrorCode")})
            return failed, "; ".join(why)

        pending, last_error = resend_failed(
            send, entries, max_attempts=self.max_attempts, base_delay_s=self.base_delay_s, sleep=self._sleep,
            what=f"EventBridge PutEvents to {self.bus}", attempt_s=self._attempt_s,
        )
        if not pending:
            return
        raise InfrastructureError(
            f"EventBridge PutEvents to {self.bus}: {len(pending)} of {len(entries)} events still "
            f"failing after {self.max_attempts} attempts; last error: {last_error}"
        )
