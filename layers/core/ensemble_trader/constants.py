"""Resource names and wiring shared by the CDK app and the local stack.

One place names every stream, queue, table, bus and function, so that the local stack creates
exactly what ``cdk deploy`` creates and the handlers read the same names from their settings.
Names are prefixed by the stage (``local``, ``dev``, ``prod``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

APP_NAME = "ensemble-trader"
EVENT_SOURCE = "ensemble-trader"
"""``source`` of every event the system puts on EventBridge."""

CONTROL_EVENT_SOURCE = "ensemble-trader.control"
"""``source`` of operator events (KillSwitch on/off)."""

KILL_SWITCH_DETAIL_TYPE = "KillSwitch"
"""``detail-type`` of the operator's kill-switch event (source :data:`CONTROL_EVENT_SOURCE`)."""

LOCAL_STAGE = "local"


@dataclass(frozen=True)
class TableSpec:
    """A DynamoDB table: key attribute names (strings) and an optional TTL attribute."""

    logical: str
    partition_key: str
    sort_key: str | None = None
    ttl_attribute: str | None = None

    @property
    def key_names(self) -> tuple[str, ...]:
        """The key attributes: partition key, then the sort key if any."""
        return (self.partition_key,) + ((self.sort_key,) if self.sort_key else ())


@dataclass(frozen=True)
class SourceMapping:
    """How a function is fed: an event-source mapping over a stream or a queue."""

    source: str  # logical name of a stream (kind "kinesis") or a queue (kind "sqs")
    kind: str  # "kinesis" | "sqs"
    batch_size: int
    batching_window_seconds: int = 0
    bisect_on_error: bool = True
    retry_attempts: int = 3
    # -1: a record waits as long as the stream keeps it (a paused mapping, a replay from
    # AT_TIMESTAMP: the runbook relies on the stream's retention, not on a shorter age)
    max_record_age_seconds: int = -1
    report_batch_item_failures: bool = True
    parallelization_factor: int = 1

    @property
    def max_receive_count(self) -> int:
        """Receives of an SQS message before the queue's redrive moves it to the dead-letter
        queue (an SQS mapping has no retry limit of its own). A failed intent fails its symbol's
        later intents in the batch (FIFO order), so healthy intents are received again with it:
        room for that, as AWS advises (>= 5). The CDK queue, the local queue and the local
        emulator all read this one figure."""
        return max(10, self.retry_attempts + 1)


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function: its folder under functions/, its feed and what it writes."""

    logical: str  # folder name under functions/
    mapping: SourceMapping
    dead_letter_queue: str  # logical queue name receiving records that failed all retries
    outputs: tuple[str, ...] = ()
    memory_mb: int = 1024
    timeout_seconds: int = 30
    hot_path: bool = True
    extra_entries: tuple[str, ...] = field(default=())  # other handlers in the same folder
    entry_timeouts: tuple[tuple[str, int], ...] = field(default=())  # (extra entry, its own timeout in s)

    def timeout_of(self, entry: str = "handler") -> int:
        """The timeout (seconds) of the entry ``entry`` ("handler", or an extra entry's name):
        its own from :attr:`entry_timeouts`, else the function's :attr:`timeout_seconds`."""
        return dict(self.entry_timeouts).get(entry, self.timeout_seconds)


REFIT_TIMEOUT_SECONDS = 900
"""The daily regime refit's timeout, Lambda's largest: its Baum-Welch pass grows with the symbols
(about 0.5 s per symbol of 2,000 history rows on one core of the development machine, measured
2026-11-29: 4.1 s for 8 symbols, 15.8 s for 32), so the stream functions' 30 s would end the
refit of a stage trading some 50 symbols, every day."""


STREAMS = ("market-data", "features", "market-state")
"""Kinesis streams, in pipeline order; partition key = symbol everywhere."""

QUEUES = {
    # logical name -> FIFO?
    "order-intents": True,
    "features-dlq": False,
    "regime-dlq": False,
    "meta-agent-dlq": False,
    "orders-dlq": True,
    "events-dlq": False,
}

TABLES = (
    TableSpec("stage-state", "pk", "sk"),  # snapshots of per-symbol stage state (cache backup)
    TableSpec("regime-history", "symbol", "timestamp"),
    TableSpec("decisions", "symbol", "timestamp", ttl_attribute="expires_at"),
    TableSpec("bandit-state", "pk"),
    TableSpec("orders", "client_order_id"),
    TableSpec("positions", "symbol"),
    TableSpec("risk-state", "pk"),
    TableSpec("idempotency", "id", ttl_attribute="expiration"),
    TableSpec("paper-broker", "pk", "sk"),  # the paper broker's own books (orders, positions)
)

FUNCTIONS = (
    FunctionSpec(
        "features",
        SourceMapping("market-data", "kinesis", batch_size=500, batching_window_seconds=0),
        dead_letter_queue="features-dlq",
        outputs=("features",),
    ),
    FunctionSpec(
        "regime",
        SourceMapping("features", "kinesis", batch_size=500),
        dead_letter_queue="regime-dlq",
        outputs=("market-state",),
        extra_entries=("refit",),
        entry_timeouts=(("refit", REFIT_TIMEOUT_SECONDS),),
    ),
    FunctionSpec(
        "meta_agent",
        SourceMapping("market-state", "kinesis", batch_size=200),
        dead_letter_queue="meta-agent-dlq",
        outputs=("order-intents",),
    ),
    FunctionSpec(
        "orders",
        SourceMapping("order-intents", "sqs", batch_size=10, retry_attempts=3),
        dead_letter_queue="orders-dlq",
        hot_path=False,
        extra_entries=("reconcile", "kill_switch"),
    ),
)

EVENT_BUS = "events"
MODEL_BUCKET = "model-registry"


def qualified(stage: str, logical: str) -> str:
    """Physical name of a resource: ``et-{stage}-{logical}`` (``.fifo`` appended for a FIFO queue)."""
    fifo = QUEUES.get(logical, False)
    base = f"et-{stage}-{logical}"
    return base + ".fifo" if fifo else base


def function_spec(logical: str) -> FunctionSpec:
    for spec in FUNCTIONS:
        if spec.logical == logical:
            return spec
    raise KeyError(f"no function named {logical!r}; known: {[f.logical for f in FUNCTIONS]}")


def table_spec(logical: str) -> TableSpec:
    for spec in TABLES:
        if spec.logical == logical:
            return spec
    raise KeyError(f"no table named {logical!r}; known: {[t.logical for t in TABLES]}")
