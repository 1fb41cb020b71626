"""The stateful per-symbol stage runner shared by every Kinesis-fed Lambda.

A stage of the pipeline (features, regime, meta-agent) is a pure step over per-symbol state::

    Kinesis records ──decode/validate──▶ group by symbol (order kept)
        ──one round trip of GETs──▶ state per symbol (cache, checked against the snapshots' versions;
                      DynamoDB snapshot on a miss, a stale entry or a cache that cannot be read;
                      new state when neither holds one)
        ──step.apply(state, message) for each new record──▶ outputs, events
        ──▶ outputs on the next stream / queue (in time order) ──▶ events on the bus
        ──▶ conditional snapshot per symbol (DynamoDB) ──▶ one pipelined write-back (cache)

:class:`SymbolStep` is what a stage implements (in the core, no I/O); :class:`KinesisStageRunner`
is the I/O around it, so a handler is a few lines. The response is exactly Lambda's partial-batch
response, ``{"batchItemFailures": [{"itemIdentifier": <sequenceNumber>}, ...]}``, for an event
source mapping with ``ReportBatchItemFailures``.

Rules, in the order they apply:

* **Permanent errors are dead-lettered at once.** A record that is not a valid Kinesis record or
  whose data does not validate as ``step.input_model`` (:class:`InvalidMessageError`, naming field
  and value), or that the step rejects with InvalidMessageError/DataError, is sent to the
  function's dead-letter queue with the reason and is *not* reported as failed: a retry cannot fix
  it and would block the shard. (If the DLQ itself cannot be reached the item is reported failed.)
  The same holds for an output or event that the sink or the bus rejects permanently
  (DataError, e.g. an entry over the Kinesis 1 MiB or EventBridge 256 KB limit, or an SQS
  sender fault): the batch is split until the input record whose outputs are rejected is found,
  that record is dead-lettered with the reason, and the outputs of the other records go out.
  Its state change stays applied (a retry could not publish its outputs either).
* **Redelivery is a no-op.** The state records the last applied sequence (the bar time in ns); a
  record at or below it is skipped and counted as a duplicate (``<stage>_duplicates``) — for a
  step that detects conflicts (below) only when its content is the one handled then.
* **Another version of a producer's record is dead-lettered, not skipped.** Beside each
  remembered time (below) the runner keeps the CRC-32 of the record handled at it
  (:func:`record_digest`: the validated message's canonical JSON, so a redelivery matches
  whatever its bytes, plain or packed several to a Kinesis record). For a step that opts in with
  ``detects_conflicts = True`` — the features stage, whose input comes from producers outside
  the pipeline — a record at or below the last applied time whose time is remembered with another
  digest (a vendor's corrected bar, a producer sending two versions of one bar) goes to the
  dead-letter queue with the reason ``conflicting record: SPX 2024-01-02T00:01:00Z already
  applied ...`` (both digests named; counted as ``<stage>_conflicts``,
  logged); the state keeps the version handled first, the other records go on. When the record
  differs from the one handled only in the UTC offset of a time (the same bar resent as
  ``…T19:00:00-05:00`` after ``…T00:00:00Z``: the digest covers the time as written) the reason
  says so (:func:`_offset_only`) — still a conflict, but no correction. A time remembered
  without a digest (stored before digests were kept) matches any content, and a time older than
  the memory is a duplicate as before. Above the last applied time the runner does not compare: a
  corrected record after a rejected one is applied (and its digest remembered).
* **A derived stream keeps the first version, quietly.** The other stages (``detects_conflicts``
  False, the default) read records an upstream stage computed, and recomputed floats are not
  bit-equal to the first computation: after a rebuild of the features states (a restart, a replay
  of history) the re-emitted vectors differ from the ones the regime stage handled at those times
  (warming up instead of ready, or the last digits of a float), and so do the outputs of two
  upstream writers of one symbol (see *Outputs are at least once* below). Such a record is
  skipped like any redelivery — the version handled first wins — counted as a duplicate and as
  ``<stage>_redelivered_changed``, and logged at info with both digests; nothing is
  dead-lettered. The digests are kept for every stage, in the same encoding.
* **A late record is dead-lettered, not skipped.** Beside each state the runner keeps the times
  (and digests, 4 bytes each) of the last ``HANDLED_MEMORY`` (1,024) records it applied or
  dead-lettered. A record below the last applied time whose own time is not among them — a bar
  that reached the stream after a newer bar of its symbol was applied, e.g. from a producer that
  retried it out of order — was never applied and never will be: it goes to the dead-letter
  queue with both times (counted as ``<stage>_late``) instead of vanishing as a duplicate.
  While the memory holds every record
  since the state began (a new symbol's first 1,024) a record older than all of them is late
  too; once times have been forgotten, a record older than the memory is counted as a
  duplicate, as is every record of a state stored without it.
* **Transient errors fail a symbol from its first unprocessed record.** An InfrastructureError of
  the sink, the bus or DynamoDB, or a ConcurrencyError of the snapshot reports that
  symbol's first unprocessed record and every later record of that symbol as batch item failures;
  the ESM then retries from the lowest failed sequence number, and the records already applied
  before it are no-ops on the retry. An unexpected exception inside ``apply`` (a bug) fails
  *all* of the symbol's records in the batch and keeps none of its state changes or outputs: the
  step may have changed its state part-way. Other symbols in the batch are unaffected.
  Running out of the invocation's time is such an error (DeadlineExceededError, an
  InfrastructureError: :mod:`ensemble_trader.runtime.deadline` refuses any AWS call or retry that
  could outlast the invocation): the symbols whose outputs, events, state reads or snapshots it
  stopped are reported failed, and the invocation returns its response instead of running into
  its timeout. Once a state read or a snapshot write is refused, the remaining ones are not
  tried (they would be refused alike): their symbols fail at once, with one warning.
* **The cache is best effort.** With snapshots, an InfrastructureError of the cache fails no
  record: a failed read loads every state of the batch from its snapshot (a consistent read, as
  for a miss) and the batch then leaves the cache alone; a failed write-back after the snapshots
  committed, or a failed drop of a key, only loses the cache's copy. Each is logged and counted
  (``<stage>_cache_unavailable``); the next read finds such entries behind their snapshots and
  replaces them (the stale-cache rule below). A cache outage costs latency (the client's timeout
  per batch and one GetItem per symbol), never a skipped record. Without snapshots the cache is
  the only copy, and its errors fail the symbols as above.
* **A record whose partition key is not its symbol is applied, and reported.** For a step that
  opts in with ``checks_partition_key = True`` (the features stage, fed by producers outside the
  pipeline) each valid message whose Kinesis record's ``partitionKey`` differs from its symbol is
  processed like any other (applied, unless it is a redelivery or late) — the message itself is
  valid, and refusing it would lose the bars of a producer whose key is merely another constant
  per symbol, which keeps their order just as well — but it is counted (``<stage>_foreign_partition_keys``) and the batch logs one warning
  naming each such symbol, its keys and why it matters: Kinesis puts a record on the shard its
  key hashes to, so the bars of one symbol put under several keys (random keys, a venue's name
  per venue) spread over shards, whose batches run concurrently and deliver them out of order;
  the bars that then arrive after a newer bar of their symbol are dead-lettered as late (their
  reason names the key too) and the symbol's concurrent batches race on its state.
* **A message dated ahead of its arrival is refused.** A record whose message time is more than
  ``max_lead_seconds`` (default 300) after the record reached the stream
  (``approximateArrivalTimestamp``) is dead-lettered with the reason: applied, a mistyped future
  date would make every later genuine record look like a redelivery and silently stop the symbol.
* **Write order makes a crash harmless.** Outputs and events go out before the state is written,
  so a crash in between re-emits (harmless) rather than loses outputs. The DynamoDB snapshot
  (``stage-state`` table, pk = stage name, sk = symbol) is written with a ``version`` condition
  *before* the cache: two concurrent writers cannot both win, and the loser drops its cache key
  so its retry reloads the newer snapshot. A cache loss is repaired from the snapshots.
* **A stale cache is never computed from.** Before applying anything, the cached versions are
  compared with the snapshots' (one consistent BatchGetItem of the versions per batch); an entry
  behind its snapshot — a write-back that failed after the snapshot was written, a cache
  failover that lost recent writes — is replaced by the snapshot, so no output is ever computed
  from an old state (counted as ``<stage>_stale_cache``). An entry *ahead* of its snapshot (the
  snapshots lost writes: an item deleted, a table restored) is kept and written over the
  snapshot, logged as an error (``<stage>_snapshot_reseeded``), not silently restarted; the
  rewritten snapshot takes the version after the *cached* one, so versions never go back and
  an older entry the cache still holds (a failed write-back) is found behind it. Every cached
  version is thus one the snapshot has committed with the same state, or an older one.
* **A cached state that cannot be decoded is repaired only from a snapshot that holds it.** An
  entry whose bytes the runner or ``step.load`` refuses (corrupt, or a state version newer than
  the code, as after a rollback) is replaced by its snapshot when the snapshot is at its version
  (or the entry's envelope is unreadable, so its version is unknown). With no snapshot, or one
  behind the entry (the snapshots lost writes), the entry may be the only copy of the newest
  state: the symbol's records fail (:class:`UnreadableStateError`, a StateError, logged as an
  error naming the symbol, both versions and what to do), the entry is left in the cache, and no
  new or older state is computed from — the symbol does not silently start over. Only a symbol
  with neither a cache entry nor a snapshot starts with ``step.new_state``.
* **Outputs are at least once, and per writer.** Two invocations that process the same symbol
  at the same time — which one event-source mapping never runs (one shard's records go to one
  invocation at a time), but which a mapping being replaced or a manual replay can cause — both
  compute from the state they loaded; the snapshot's condition lets only one of them commit, but
  the other has already emitted outputs computed without the winner's records (same
  deterministic ids, possibly other content; downstream deduplication keeps whichever came
  first: a derived stage counts the second as ``<stage>_redelivered_changed``, see above). Its
  retry computes from the committed state. A transactional outbox (outputs stored with the
  state and sent after the conditional write) would close this; it is not built.

* **A state the step can only start over from is replaced, loudly.** When ``step.load`` refuses a
  stored state (cached or snapshot) and the step has the optional hook
  ``start_over(symbol, data, error) -> (state, note) | None`` — the features stage does, for an
  intact feature state of an older format version, which cannot be converted — the runner uses
  the state it returns, logs a warning with the symbol and the note, and counts
  ``<stage>_state_restarted``. The hook's state must keep the old state's last applied time as
  its ``sequence`` (redelivery stays a no-op) and the remembered times and digests are kept, so
  no record is applied twice or dead-lettered because of the upgrade. A hook returning None (a
  corrupt state) leaves the refusal as it was: the symbol's records fail.

* **A pure step's states are decoded once per container.** A step declaring ``pure_states``
  (its ``apply`` never changes the state it is given, and a state decodes from its own bytes to
  one that decides alike — the meta-agent, whose learners are copied on write) has its last
  decoded or stored state per symbol kept by the runner (``DECODED_MEMORY`` symbols and
  ``DECODED_MEMORY_BYTES`` of their bytes, the oldest dropped first) with the
  bytes it came from or went to; a batch that loads exactly those bytes reuses it instead of
  decoding them. Any other bytes (another writer's, an older snapshot after a failed write-back)
  are decoded as always, so nothing but the decoding is skipped.

``apply`` must not leave its state changed when it raises (validate first, then mutate).
Measurements go to Powertools metrics (``<stage>_compute_us`` per record and counts per batch)
and to a process-wide :class:`StageStats` (the local demo and benchmarks read it).
"""

from __future__ import annotations

import base64
import bisect
import logging
import struct
import sys
import time
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from ensemble_trader.domain.errors import (
    ConcurrencyError,
    DataError,
    FieldProblem,
    InfrastructureError,
    InvalidMessageError,
    StateError,
)
from ensemble_trader.domain.features import timestamp_ns
from ensemble_trader.domain.models import parse
from ensemble_trader.ports import (
    Cache,
    DeadLetterWriter,
    EventBus,
    KeyValueStore,
    QueuePublisher,
    StreamPublisher,
)
from ensemble_trader.runtime.aggregation import MAGIC as AGGREGATE_MAGIC
from ensemble_trader.runtime.aggregation import AggregationError, unpack
from ensemble_trader.runtime.dead_letters import logged_reason
from ensemble_trader.runtime.deadline import DeadlineExceededError

log = logging.getLogger(__name__)

S = TypeVar("S")
In = TypeVar("In", bound=BaseModel)

SNAPSHOT_TABLE = "stage-state"
MAX_LEAD_SECONDS = 300.0
"""How far a message's time may lie after its record's arrival on the stream (clock skew)."""
COMPUTE_SAMPLES = 200_000
HANDLED_MEMORY = 1024
"""How many of the latest handled (applied or dead-lettered) message times a state keeps, to
tell a redelivery from a late record. A redelivery or re-emission reaching further back (a batch
of aggregated records may hold more) is counted as duplicates: older than the memory, a message
is not called late — unless the memory still holds every message since the state began (a new
symbol's first 1,024), when an older one was certainly never handled."""
DECODED_MEMORY = 4096
"""How many symbols' last decoded or stored states a runner of a pure step keeps for reuse."""
DECODED_MEMORY_BYTES = 32 * 2**20
"""At most this many stored bytes behind those states (a decoded state takes a few times its
bytes): learners with large windows keep fewer symbols; a state above a quarter of it is not kept."""
_ENVELOPE = struct.Struct(">3sQ")  # magic, version
_MAGIC_V1 = b"ET1"  # magic, version, state
_MAGIC = b"ET2"  # magic, version, length of the handled times, handled times, state
_HANDLED_LENGTH = struct.Struct(">I")
_DIGEST_CODE = "I"  # array typecode of the digests: unsigned, 4 bytes on every platform Lambda runs on
NO_DIGEST = 0
"""The digest of a time remembered without one (stored before digests were kept): it matches any
content, so a redelivery after an upgrade stays a duplicate. :func:`record_digest` never returns it."""


class UnreadableStateError(StateError):
    """A symbol's cached state cannot be decoded and no snapshot holds it (none, or one behind
    it): the entry may be the only copy, so the symbol's records fail instead of starting over."""


class SymbolStep(Protocol[S, In]):
    """A pure per-symbol stage: what the runner needs to know about it.

    ``name`` is the stage name (metric prefix, snapshot partition key). ``apply`` returns the new
    state, the records for the next stream or queue, and the events for the bus.
    ``message_sequence`` is the message's time in ns since the epoch (redelivery is judged by it,
    and its lead over the record's arrival is bounded).
    """

    name: str
    input_model: type[In]

    def key(self, symbol: str) -> str: ...

    def symbol_of(self, message: In) -> str: ...

    def message_sequence(self, message: In) -> int: ...

    def new_state(self, symbol: str) -> S: ...

    def load(self, data: bytes) -> S: ...

    def dump(self, state: S) -> bytes: ...

    def sequence(self, state: S) -> int | None: ...

    def apply(self, state: S, message: In) -> tuple[S, list[BaseModel], list[BaseModel]]: ...

    # Optional (looked up with getattr, so not part of the protocol):
    # detects_conflicts: bool = False
    #     True for a step fed by producers outside the pipeline (the features stage): a record at
    #     a handled time with other content is dead-lettered as a conflict. False (derived
    #     streams, whose recomputed floats are never bit-equal): it is skipped as a redelivery
    #     and counted as ``<stage>_redelivered_changed``.
    # checks_partition_key: bool = False
    #     True for a step whose producers must put each message with its symbol as the Kinesis
    #     partition key (the features stage): a valid message under another key is processed
    #     like any other, counted as ``<stage>_foreign_partition_keys`` and named in one warning per batch.
    # pure_states: bool = False
    #     True when ``apply`` never changes the state it is given (it returns a new one) and
    #     ``load(dump(state))`` decides exactly like ``state``: the runner then keeps, per symbol,
    #     the last state it decoded or stored with its bytes, and reuses it while the stored bytes
    #     are those (a warm container skips decoding its own last write).
    # def start_over(self, symbol: str, data: bytes, error: Exception) -> tuple[S, str] | None
    #     a state to use instead of stored bytes ``load`` refused with ``error`` (an older format
    #     that cannot be converted), with a note for the log; None keeps the refusal.


class BaseSymbolStep(Generic[S, In]):
    """Defaults for a :class:`SymbolStep` whose messages have ``symbol`` and ``timestamp``.

    A subclass sets ``name`` and ``input_model`` and implements ``new_state``, ``load``,
    ``dump``, ``sequence`` and ``apply``; a step fed by producers outside the pipeline sets
    ``detects_conflicts = True``.
    """

    name: str
    input_model: type[In]
    detects_conflicts: bool = False

    def key(self, symbol: str) -> str:
        return f"{self.name}:{symbol}"

    def symbol_of(self, message: In) -> str:
        return message.symbol  # type: ignore[attr-defined]

    def message_sequence(self, message: In) -> int:
        return timestamp_ns(message.timestamp)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Where outputs go
# ---------------------------------------------------------------------------------------------


class RecordSink(Protocol):
    """Where a stage's output records go (the next stream, a FIFO queue)."""

    def emit(self, records: Sequence[BaseModel]) -> None: ...


class StreamSink:
    """Outputs as JSON records on a Kinesis stream, partition key = the record's symbol."""

    def __init__(
        self,
        publisher: StreamPublisher,
        stream: str,
        partition_key: Callable[[BaseModel], str] = lambda m: m.symbol,  # type: ignore[attr-defined]
    ) -> None:
        self.publisher = publisher
        self.stream = stream
        self.partition_key = partition_key

    def emit(self, records: Sequence[BaseModel]) -> None:
        self.publisher.put(
            self.stream, [(self.partition_key(r), r.model_dump_json().encode()) for r in records]
        )


class QueueSink:
    """Outputs as JSON messages on a FIFO queue: group = symbol, deduplication id from the record."""

    def __init__(
        self,
        publisher: QueuePublisher,
        queue: str,
        deduplication_id: Callable[[BaseModel], str],
        group_id: Callable[[BaseModel], str] = lambda m: m.symbol,  # type: ignore[attr-defined]
    ) -> None:
        self.publisher = publisher
        self.queue = queue
        self.deduplication_id = deduplication_id
        self.group_id = group_id

    def emit(self, records: Sequence[BaseModel]) -> None:
        self.publisher.send(
            self.queue,
            [(self.group_id(r), self.deduplication_id(r), r.model_dump_json().encode()) for r in records],
        )


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


class MetricsSink(Protocol):
    """The part of Powertools ``Metrics`` the runner uses."""

    def add_metric(self, name: str, unit: str, value: float) -> None: ...


@dataclass
class StageStats:
    """What one stage did in this process (a Lambda container, or the local stack)."""

    invocations: int = 0
    records: int = 0
    applied: int = 0
    duplicates: int = 0
    late: int = 0  # records dated before the last applied one and never handled (dead-lettered)
    conflicts: int = 0  # records at a handled time with other content than then (dead-lettered; detects_conflicts)
    redelivered_changed: int = 0  # such records of a derived stream, skipped (also in duplicates)
    rejected: int = 0
    failed_items: int = 0
    outputs: int = 0
    events: int = 0
    stale_cache: int = 0  # cached states found behind their snapshot (and reloaded from it)
    reseeded: int = 0  # snapshots found behind (or without) their cached state, rewritten from it
    cache_unavailable: int = 0  # cache calls that failed (read, write-back, key drop): snapshots used instead
    restarted: int = 0  # stored states the step could not load and started over from (step.start_over)
    foreign_keys: int = 0  # valid messages whose record's partition key is not their symbol (checks_partition_key)
    # the latest per-record compute times (bounded: a warm container may live for millions)
    compute_ns: deque[int] = field(default_factory=lambda: deque(maxlen=COMPUTE_SAMPLES))

    def compute_us(self) -> dict[str, float]:
        """p50/p99/mean per-record compute latency in microseconds (empty when none)."""
        if not self.compute_ns:
            return {}
        arr = np.asarray(self.compute_ns, dtype=np.float64) / 1e3
        return {
            "p50": float(np.percentile(arr, 50)),
            "p99": float(np.percentile(arr, 99)),
            "mean": float(arr.mean()),
        }


_stats: dict[str, StageStats] = {}


def stage_stats(name: str) -> StageStats:
    """The process-wide statistics of stage ``name`` (created empty on first use)."""
    return _stats.setdefault(name, StageStats())


def reset_stage_stats() -> None:
    _stats.clear()


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


@dataclass
class _Item:
    item_id: str | None
    raw: Mapping[str, Any]
    message: BaseModel
    position: int  # index of the message in the batch (ties of time go out in this order)
    sequence: int  # the message's time in ns (step.message_sequence)
    foreign_key: str | None = None  # the record's partition key, when it is not the symbol (checks_partition_key)


@dataclass
class _Unit:
    """The outputs (or events) of one input record, as one unit of publishing."""

    group: _Group
    item: _Item
    models: list[BaseModel]


@dataclass
class _Group:
    items: list[_Item]
    state: Any = None
    version: int = 0  # of the state loaded; the next commit is version + 1
    stored: int = 0  # the snapshot's version: the condition of the next commit (= version unless reseeding)
    outputs: list[tuple[int, BaseModel]] = field(default_factory=list)
    events: list[tuple[int, BaseModel]] = field(default_factory=list)
    changed: bool = False
    warm: bool = False  # loaded from the snapshot on a cache miss: write it back to the cache
    reseed: bool = False  # the snapshot lost writes the cache holds: rewrite it from the cache, at a
    # version above the cached one (stored < version), so versions never go back and an entry the
    # cache keeps from before cannot pass for the rewritten state
    failed_from: int | None = None  # index of the first unprocessed item after a failure
    handled: array = field(default_factory=lambda: array("q"))  # sorted times of the latest handled messages
    digests: array = field(default_factory=lambda: array(_DIGEST_CODE))  # the content digest of each (same order)
    complete: bool = False  # ``handled`` holds every message handled since the state began

    def handled_bytes(self) -> bytes:
        """The latest ``HANDLED_MEMORY`` handled times and their digests, encoded to be stored
        beside the state (complete while none has been forgotten)."""
        kept = self.handled[-HANDLED_MEMORY:]
        return encode_handled(kept, self.digests[-HANDLED_MEMORY:],
                              complete=self.complete and len(kept) == len(self.handled))

    def fail(self, index: int = 0) -> None:
        self.failed_from = index if self.failed_from is None else min(self.failed_from, index)
        if index == 0:
            self.changed = False


_COMPLETE = b"\x01"  # before the times: they are every one handled since the state began (a zlib
# stream starts with 0x78, so the marker cannot be mistaken for times stored without it)
_DIGESTS = b"\x02"  # before the times: their 4-byte digests follow the compressed times


def record_digest(message: BaseModel) -> int:
    """The content digest of a validated message: CRC-32 of its canonical JSON — the model's own
    serialisation (``model_dump_json``: its fields in their declared order, numbers in shortest
    round-trip form, no whitespace), so a redelivery matches whatever its bytes (plain or packed
    several to a Kinesis record, spacing, the order of the model's fields, ``101`` for ``101.0``),
    and other values do not — nor do the keys of a dict field in another order, or a time with
    another UTC offset (upstream stages emit both as they were). Never :data:`NO_DIGEST` (0 is
    mapped to 1)."""
    return zlib.crc32(message.__pydantic_serializer__.to_json(message)) or 1  # model_dump_json's bytes


def encode_handled(times: Sequence[int], digests: Sequence[int] | None = None, *, complete: bool = False) -> bytes:
    """Sorted message times (ns) as compressed deltas (regular bars take a few bytes in all),
    followed by each one's content digest (4 bytes; :data:`NO_DIGEST` where unknown) when
    ``digests`` are given, marked ``complete`` when they are all the state ever handled (so an
    older, unknown time was never handled: late, not a redelivery)."""
    marker = _COMPLETE if complete else b""
    if not times:
        return marker
    arr = np.asarray(times, dtype=np.int64)  # the runner's arrays through the buffer protocol: no copy
    packed = zlib.compress(np.diff(arr, prepend=np.int64(0)).astype("<i8").tobytes(), 1)
    if digests is None:
        return marker + packed
    if len(digests) != len(times):
        raise ValueError(f"{len(digests)} digests for {len(times)} handled times")
    return marker + _DIGESTS + packed + np.asarray(digests, dtype="<u4").tobytes()


def decode_handled(data: bytes) -> tuple[array, array, bool]:
    """(sorted times, their digests, complete) of :func:`encode_handled`'s bytes, as the arrays
    the runner keeps them in (``array('q')``, ``array('I')``: bisect, insert and append like
    lists, and encode without a conversion); times stored without digests (the earlier
    encoding) get :data:`NO_DIGEST`."""
    complete = data[:1] == _COMPLETE
    if complete:
        data = data[1:]
    with_digests = data[:1] == _DIGESTS
    if with_digests:
        data = data[1:]
    if not data:
        return array("q"), array(_DIGEST_CODE), complete
    try:
        unpacker = zlib.decompressobj()
        deltas = np.frombuffer(unpacker.decompress(data), dtype="<i8")
        if not unpacker.eof:
            raise ValueError("the compressed times are truncated")
    except (zlib.error, ValueError) as exc:
        raise StateError(f"handled message times cannot be decoded: {exc}") from exc
    times = np.cumsum(deltas, dtype=np.int64)
    if times.size > 1 and bool(np.any(np.diff(times) <= 0)):
        raise StateError("handled message times are not strictly increasing")
    rest = unpacker.unused_data
    if not with_digests:
        if rest:
            raise StateError(f"handled message times cannot be decoded: {len(rest)} bytes after them")
        return array("q", times.tobytes()), array(_DIGEST_CODE, bytes(4 * times.size)), complete
    if len(rest) != 4 * times.size:
        raise StateError(f"handled message digests cannot be decoded: {len(rest)} bytes for {times.size} times")
    digests = array(_DIGEST_CODE, rest)
    if sys.byteorder == "big":  # stored little-endian
        digests.byteswap()
    return array("q", times.tobytes()), digests, complete


def encode_cached(version: int, state: bytes, handled: bytes = b"") -> bytes:
    """Cache value: magic, snapshot version, the handled times (:func:`encode_handled`), state bytes."""
    return _ENVELOPE.pack(_MAGIC, version) + _HANDLED_LENGTH.pack(len(handled)) + handled + state


def decode_cached_entry(blob: bytes) -> tuple[int, bytes, bytes]:
    """(version, handled times, state) of a cache value; an ET1 value has no handled times."""
    if len(blob) < _ENVELOPE.size or blob[:3] not in (_MAGIC, _MAGIC_V1):
        raise StateError("cached state has no ET2 (or ET1) envelope")
    _, version = _ENVELOPE.unpack_from(blob)
    if blob[:3] == _MAGIC_V1:
        return version, b"", blob[_ENVELOPE.size :]
    start = _ENVELOPE.size + _HANDLED_LENGTH.size
    if len(blob) < start:
        raise StateError("cached state is truncated")
    (n,) = _HANDLED_LENGTH.unpack_from(blob, _ENVELOPE.size)
    if len(blob) < start + n:
        raise StateError("cached state is truncated")
    return version, blob[start : start + n], blob[start + n :]


def decode_cached(blob: bytes) -> tuple[int, bytes]:
    """(version, state bytes) of a cache value."""
    version, _, state = decode_cached_entry(blob)
    return version, state


def _remember(handled: array, digests: array, sequence: int, digest: int) -> None:
    """Insert a handled message time and its content digest into the sorted ``handled`` and the
    parallel ``digests`` (appended in the usual case); a time already there takes the new digest
    (the latest content handled at that time: a corrected record applied after a rejected one)."""
    if not handled or sequence > handled[-1]:
        handled.append(sequence)
        digests.append(digest)
        return
    i = bisect.bisect_left(handled, sequence)
    if i == len(handled) or handled[i] != sequence:
        handled.insert(i, sequence)
        digests.insert(i, digest)
    else:
        digests[i] = digest


def _remembered_digest(handled: array, digests: array, sequence: int) -> int | None:
    """The digest remembered for ``sequence`` (:data:`NO_DIGEST` when stored without one), or
    None when the time is not remembered."""
    i = bisect.bisect_left(handled, sequence)
    if i < len(handled) and handled[i] == sequence:
        return digests[i]
    return None


class KinesisStageRunner(Generic[S, In]):
    """Runs a :class:`SymbolStep` over a Kinesis event; see the module docstring for the rules.

    ``sink`` receives the outputs (``StreamSink`` / ``QueueSink``; ``None`` for a stage without
    outputs), ``events`` the domain events, ``dlq`` the rejected records, ``snapshots`` the state
    snapshots (``None``: the cache is the only copy — tests and the backtester only).
    """

    def __init__(
        self,
        step: SymbolStep[S, In],
        *,
        cache: Cache,
        dlq: DeadLetterWriter,
        sink: RecordSink | None = None,
        events: EventBus | None = None,
        snapshots: KeyValueStore | None = None,
        metrics: MetricsSink | None = None,
        snapshot_table: str = SNAPSHOT_TABLE,
        stats: StageStats | None = None,
        max_lead_seconds: float | None = MAX_LEAD_SECONDS,
    ) -> None:
        self.step = step
        self.max_lead_ns = None if max_lead_seconds is None else int(max_lead_seconds * 1e9)
        self.cache = cache
        self.dlq = dlq
        self.sink = sink
        self.events = events
        self.snapshots = snapshots
        self.metrics = metrics
        self.snapshot_table = snapshot_table
        self.stats = stats if stats is not None else stage_stats(step.name)
        self._reuse_states = bool(getattr(step, "pure_states", False))
        self._decoded: dict[str, tuple[bytes, Any]] = {}  # symbol -> (stored bytes, their state)
        self._decoded_bytes = 0

    # -- public ---------------------------------------------------------------------------------

    def process(self, event: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
        """Process a Kinesis Lambda event; return Lambda's partial batch response."""
        records = event.get("Records") if isinstance(event, Mapping) else None
        if not isinstance(records, list):
            raise InvalidMessageError(
                "KinesisEvent", [FieldProblem("Records", type(records).__name__, "must be a list of records")]
            )
        stats = self.stats
        stats.invocations += 1
        stats.records += len(records)
        failures: list[str] = []
        duplicates_before = stats.duplicates
        groups = self._decode(records, failures)
        cache_ok = self._load_states(groups)
        self._apply(groups, failures)
        self._persist(groups, cache_ok)

        for group in groups.values():
            if group.failed_from is not None:
                for item in group.items[group.failed_from :]:
                    if item.item_id is not None:
                        failures.append(item.item_id)
        position = {_sequence_number(r): i for i, r in enumerate(records)}
        failures = sorted(_ordered_unique(failures), key=lambda f: position.get(f, len(records)))
        stats.failed_items += len(failures)
        self._count("records", len(records))
        self._count("duplicates", stats.duplicates - duplicates_before)
        self._count("failed_items", len(failures))
        return {"batchItemFailures": [{"itemIdentifier": f} for f in failures]}

    # -- phases ---------------------------------------------------------------------------------

    def _decode(self, records: list[Any], failures: list[str]) -> dict[str, _Group]:
        from aws_lambda_powertools.utilities.parser.models import KinesisDataStreamRecord

        groups: dict[str, _Group] = {}
        position = 0  # of each message in the batch: outputs go out in this order
        check_keys = bool(getattr(self.step, "checks_partition_key", False))
        foreign: dict[str, dict[str, int]] = {}  # symbol -> the other partition keys its messages came with
        for raw in records:
            item_id = _sequence_number(raw)
            try:
                envelope = KinesisDataStreamRecord.model_validate(raw)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
                )
                self._reject(raw, item_id, f"invalid Kinesis record: {problems}", failures)
                continue
            data: bytes = envelope.kinesis.data  # type: ignore[assignment]
            if data.startswith(AGGREGATE_MAGIC):
                try:
                    packed = unpack(data)
                except AggregationError as exc:
                    self._reject(raw, item_id, f"invalid aggregated Kinesis record: {exc}", failures)
                    continue
                parts = [(_message_record(raw, m, i, len(packed)), m) for i, m in enumerate(packed)]  # type: ignore[arg-type]
            else:
                parts = ((raw, data),)
            for part, payload in parts:
                try:
                    message = parse(self.step.input_model, payload)
                except InvalidMessageError as exc:
                    self._reject(part, item_id, exc.reason, failures)
                    continue
                sequence = self.step.message_sequence(message)
                lead = self._lead_ns(sequence, envelope.kinesis.approximateArrivalTimestamp)
                if lead is not None:
                    self._reject(part, item_id, (
                        f"message time is {lead / 1e9:,.0f} s after the record reached the stream (max "
                        f"{self.max_lead_ns / 1e9:,.0f} s): a future date would make every later record look "
                        f"like a redelivery"), failures)
                    continue
                symbol = self.step.symbol_of(message)
                key = envelope.kinesis.partitionKey if check_keys else symbol
                if key != symbol:
                    keys = foreign.setdefault(symbol, {})
                    keys[key] = keys.get(key, 0) + 1
                groups.setdefault(symbol, _Group(items=[])).items.append(
                    _Item(item_id, part, message, position, sequence, None if key == symbol else key))
                position += 1
        if foreign:
            self._foreign_keys(foreign)
        return groups

    def _foreign_keys(self, foreign: dict[str, dict[str, int]]) -> None:
        """Count the batch's messages whose partition key is not their symbol and log one
        warning naming the symbols (up to 5), their keys (up to 3 each) and why it matters."""
        n = sum(sum(keys.values()) for keys in foreign.values())
        self.stats.foreign_keys += n
        self._count("foreign_partition_keys", n)
        named = []
        for symbol, keys in list(foreign.items())[:5]:
            listed = ", ".join(f"{k!r} x{c}" for k, c in list(keys.items())[:3])
            more = f" and {len(keys) - 3} other keys" if len(keys) > 3 else ""
            named.append(f"{symbol} under {listed}{more}")
        others = f" and {len(foreign) - 5} other symbols" if len(foreign) > 5 else ""
        log.warning(
            "stage %s: %d messages of %d symbols came with a partition key other than their symbol (%s%s); they "
            "are processed like any other, but Kinesis puts a record on the shard its key hashes to, so the messages of one symbol "
            "under several keys spread over shards whose batches run concurrently and deliver them out of order: "
            "one arriving after a newer message of its symbol was applied is dead-lettered as late, and concurrent "
            "batches of one symbol race on its state. Have the producer use the symbol as the partition key",
            self.step.name, n, len(foreign), "; ".join(named), others,
            extra={"foreign_partition_keys": {s: dict(k) for s, k in foreign.items()}})

    def _lead_ns(self, sequence: int, arrival_s: float) -> int | None:
        """How far the message's time lies after its arrival, when beyond ``max_lead_seconds``
        (None: within it)."""
        if self.max_lead_ns is None:
            return None
        lead = sequence - int(arrival_s * 1e9)
        return lead if lead > self.max_lead_ns else None

    def _load_states(self, groups: dict[str, _Group]) -> bool:
        """Load every group's state; False when the cache could not be read (the states then
        come from the snapshots, and the batch leaves the cache alone)."""
        if not groups:
            return True
        symbols = list(groups)
        cache_ok = True
        try:
            blobs = self.cache.get_many([self.step.key(s) for s in symbols])
        except InfrastructureError as exc:
            if self.snapshots is None:  # the cache is the only copy: nothing else to load from
                log.warning("stage %s: cache read failed, failing %d symbols: %s", self.step.name, len(symbols), exc)
                for g in groups.values():
                    g.fail(0)
                return False
            # a cache, never the only copy: every state is read from its snapshot (consistently)
            self._cache_unavailable(f"read failed, loading {len(symbols)} symbols from their snapshots", exc)
            blobs, cache_ok = [None] * len(symbols), False
        try:
            blobs, reseed = self._drop_stale(symbols, blobs)
        except (InfrastructureError, DataError) as exc:  # DataError: the store refused the read
            log.warning("stage %s: snapshot versions unreadable, failing %d symbols: %s",
                        self.step.name, len(symbols), exc)
            for g in groups.values():
                g.fail(0)
            return cache_ok
        for i, (symbol, blob) in enumerate(zip(symbols, blobs, strict=True)):
            group = groups[symbol]
            try:
                (group.state, group.version, group.warm,
                 (group.handled, group.digests, group.complete)) = self._load_one(symbol, blob, reseed.get(symbol))
            except DeadlineExceededError as exc:  # no read can start now: the rest fail with this one
                self._out_of_time("loading states", {s: groups[s] for s in symbols[i:]}, exc)
                break
            except UnreadableStateError as exc:  # kept in the cache; the records are retried
                log.error("stage %s: cannot load state of %s: %s", self.step.name, symbol, exc)
                group.fail(0)
                continue
            except (InfrastructureError, StateError, DataError) as exc:
                log.warning("stage %s: cannot load state of %s: %s", self.step.name, symbol, exc)
                group.fail(0)
                continue
            group.stored = group.version
            if symbol in reseed:  # write the cached state over the snapshot that lost it
                group.stored, group.reseed = reseed[symbol], True
        reseeded = sorted(s for s, g in groups.items() if g.reseed)
        if reseeded:
            log.error("stage %s: snapshots of %s are behind their cached state (lost writes?); rewriting them "
                      "from the cache", self.step.name, reseeded)
            self.stats.reseeded += len(reseeded)
            self._count("snapshot_reseeded", len(reseeded))
        return cache_ok

    def _drop_stale(
        self, symbols: list[str], blobs: list[bytes | None]
    ) -> tuple[list[bytes | None], dict[str, int]]:
        """``blobs`` with every cached state older than its snapshot replaced by ``None`` (a miss),
        and the stored version of every snapshot found *behind* its cached state.

        The cache can fall behind the snapshots — a write-back that failed after the snapshot was
        written, a cache failover that lost the newest writes. Computing from such a state would
        emit wrong outputs before the snapshot's version check caught it, so the cached versions
        are checked first, with one consistent read of the snapshots' versions per batch.

        The cache is written only after its snapshot, so a cached version *above* the stored one
        means the snapshots lost writes (an item deleted, the table restored from an older
        backup). The cached state was committed once and is the newest there is: it is kept and
        written over the snapshot (logged as an error and counted as ``<stage>_snapshot_reseeded``)
        instead of the symbol silently starting over.
        """
        if self.snapshots is None:
            return blobs, {}
        cached = {}
        for symbol, blob in zip(symbols, blobs, strict=True):
            if blob is not None:
                try:
                    cached[symbol] = decode_cached(blob)[0]
                except Exception:  # an unreadable entry is repaired from the snapshot in _load_one
                    continue
        if not cached:
            return blobs, {}
        keys = [{"pk": self.step.name, "sk": symbol} for symbol in cached]
        stored = dict(zip(cached, self.snapshots.get_versions(self.snapshot_table, keys), strict=True))
        stale = {symbol for symbol, version in cached.items() if version < stored[symbol]}
        reseed = {symbol: stored[symbol] for symbol, version in cached.items() if version > stored[symbol]}
        if not stale:
            return blobs, reseed
        log.warning("stage %s: cached state of %s behind its snapshot; reloading", self.step.name, sorted(stale))
        self.stats.stale_cache += len(stale)
        self._count("stale_cache", len(stale))
        return [None if symbol in stale else blob for symbol, blob in zip(symbols, blobs, strict=True)], reseed

    def _load_one(
        self, symbol: str, blob: bytes | None, behind: int | None = None
    ) -> tuple[Any, int, bool, tuple[array, array, bool]]:
        """(state, version, loaded_from_snapshot, (handled times, digests, complete)) of one symbol.

        ``behind``: the stored version of a snapshot found behind the cached entry (or 0 without
        one; :meth:`_drop_stale`). A cached entry that cannot be decoded is repaired from its
        snapshot only when the snapshot holds the same state or a newer one; with no snapshot, or
        one behind the entry, the entry may be the only copy of the newest state, so it raises
        :class:`UnreadableStateError` (the symbol's records fail and are retried, the entry is
        left as it is) instead of the symbol starting over or going back to an older state."""
        unreadable: tuple[int | None, Exception] | None = None
        if blob is not None:
            cached_version: int | None = None
            try:
                version, handled, data = decode_cached_entry(blob)
                cached_version = version
                state = self._load_state(symbol, data)
            except Exception as exc:  # a corrupt cache entry is repaired from the snapshot, if it has one
                if self.snapshots is None:
                    raise StateError(f"cached state of {symbol} cannot be decoded: {exc}") from exc
                unreadable = cached_version, exc
            else:  # the state may be the only copy (ahead of its snapshot): keep it whatever its times
                return state, version, False, self._handled_or_none(symbol, "cached state", handled)
        if self.snapshots is not None:
            item = self.snapshots.get_item(self.snapshot_table, {"pk": self.step.name, "sk": symbol})
            if item is not None:
                if unreadable is not None and behind is not None:
                    raise UnreadableStateError(self._unreadable_reason(
                        symbol, *unreadable, f"its snapshot is behind it (version {int(item['version'])})",
                        "going back to the older snapshot"))
                if unreadable is not None:
                    log.warning("stage %s: cached state of %s unreadable (%s); using snapshot", self.step.name,
                                symbol, unreadable[1])
                try:
                    state = self._load_state(symbol, bytes(item["state"]))
                except Exception as exc:
                    raise StateError(f"snapshot of {self.step.name}/{symbol} cannot be decoded: {exc}") from exc
                handled = self._handled_or_none(symbol, "snapshot", bytes(item.get("handled", b"")))
                return state, int(item["version"]), True, handled
        if unreadable is not None:  # never a new state over what may be the only copy of the old one
            raise UnreadableStateError(self._unreadable_reason(symbol, *unreadable, "it has no snapshot",
                                                               "starting a new state"))
        return self.step.new_state(symbol), 0, False, (array("q"), array(_DIGEST_CODE), True)  # a new state: memory from the start

    @staticmethod
    def _unreadable_reason(symbol: str, version: int | None, exc: Exception, snapshot: str, instead: str) -> str:
        """Why a symbol with an undecodable cached entry and no usable snapshot fails, and what to do."""
        entry = "cached state" if version is None else f"cached state (version {version})"
        return (f"{entry} of {symbol} cannot be decoded ({exc}) and {snapshot}: the entry may be the only "
                f"copy of the state, so it is left in the cache and the records of {symbol} fail (retried) "
                f"instead of {instead}; if the code that wrote it was rolled back, deploy it again, else "
                f"rebuild the symbol (docs/runbook.md section 5, letters of kind (c))")

    def _load_state(self, symbol: str, data: bytes) -> Any:
        """``step.load(data)``; a state the step refuses but can start over from (its optional
        ``start_over`` hook) is replaced, logged and counted as ``<stage>_state_restarted``."""
        if self._reuse_states:
            known = self._decoded.get(symbol)
            if known is not None and known[0] == data:
                return known[1]
        try:
            state = self.step.load(data)
        except Exception as exc:
            start_over = getattr(self.step, "start_over", None)
            replacement = start_over(symbol, data, exc) if start_over is not None else None
            if replacement is None:
                raise
            state, note = replacement
            log.warning("stage %s: state of %s started over: %s", self.step.name, symbol, note)
            self.stats.restarted += 1
            self._count("state_restarted", 1)
            return state
        self._remember_state(symbol, data, state)
        return state

    def _remember_state(self, symbol: str, data: bytes, state: Any) -> None:
        """Keep ``state`` as the decoding of ``data`` (a pure step's states only; at most
        ``DECODED_MEMORY`` symbols and ``DECODED_MEMORY_BYTES`` stored bytes, the oldest dropped
        first)."""
        if not self._reuse_states:
            return
        decoded = self._decoded
        old = decoded.pop(symbol, None)
        if old is not None:
            self._decoded_bytes -= len(old[0])
        if 4 * len(data) > DECODED_MEMORY_BYTES:
            return
        while decoded and (len(decoded) >= DECODED_MEMORY or self._decoded_bytes + len(data) > DECODED_MEMORY_BYTES):
            self._decoded_bytes -= len(decoded.pop(next(iter(decoded)))[0])
        decoded[symbol] = (data, state)
        self._decoded_bytes += len(data)

    def _handled_or_none(self, symbol: str, where: str, data: bytes) -> tuple[array, array, bool]:
        """The handled times and digests stored beside a state; none when they cannot be read
        (logged: only late and conflicting records then go unnoticed, counted as duplicates — the
        state itself is kept)."""
        try:
            return decode_handled(data)
        except StateError as exc:
            log.error("stage %s: %s of %s: %s; going on without them", self.step.name, where, symbol, exc)
            return array("q"), array(_DIGEST_CODE), False

    def _apply(self, groups: dict[str, _Group], failures: list[str]) -> None:
        step, stats = self.step, self.stats
        clock = time.perf_counter_ns
        compute_metric = f"{step.name}_compute_us"
        detects_conflicts = bool(getattr(step, "detects_conflicts", False))
        for symbol, group in groups.items():
            if group.failed_from is not None:
                continue
            state, handled, digests = group.state, group.handled, group.digests
            last = step.sequence(state)
            for index, item in enumerate(group.items):
                seq = item.sequence
                digest = record_digest(item.message)
                if last is not None and seq <= last:
                    known = _remembered_digest(handled, digests, seq)
                    if known is None and seq < last and (group.complete or (handled and seq > handled[0])):
                        if not self._reject(item.raw, item.item_id, _late_reason(symbol, seq, last, item.foreign_key),
                                            failures):
                            group.fail(index)
                            break
                        stats.late += 1
                        self._count("late", 1)
                        _remember(handled, digests, seq, digest)  # a redelivery of it is a duplicate, not late again
                        group.changed = True
                        continue
                    if known is None or known == NO_DIGEST or known == digest:
                        stats.duplicates += 1
                        continue
                    if not detects_conflicts:  # a derived stream: recomputed floats, first version wins
                        log.info("stage %s: %s %s redelivered with other content (crc32 %08x; this record "
                                 "%08x): the version handled first is kept", step.name, symbol, iso_utc(seq), known,
                                 digest)
                        stats.duplicates += 1
                        stats.redelivered_changed += 1
                        self._count("redelivered_changed", 1)
                        continue
                    conflict = _conflict_reason(step.name, symbol, seq, known, digest,
                                                _offset_only(item.message, known))
                    if not self._reject(item.raw, item.item_id, conflict, failures):
                        group.fail(index)
                        break
                    log.warning("stage %s: %s", step.name, conflict)
                    stats.conflicts += 1
                    self._count("conflicts", 1)
                    continue  # the state and its memory keep the version handled first
                t0 = clock()
                try:
                    state, outputs, events = step.apply(state, item.message)
                except (InvalidMessageError, DataError) as exc:
                    if not self._reject(item.raw, item.item_id, str(exc), failures):
                        group.fail(index)
                        break
                    _remember(handled, digests, seq, digest)
                    group.changed = True
                    continue
                except Exception:
                    # a step that fails unexpectedly may have changed its state part-way (the
                    # features engine updates in place): keep nothing of the symbol's batch and
                    # let all of its records come again onto the stored state
                    log.exception("stage %s: step failed on %s seq %s", step.name, symbol, item.item_id)
                    group.fail(0)
                    break
                elapsed = clock() - t0
                stats.compute_ns.append(elapsed)
                if self.metrics is not None:
                    self.metrics.add_metric(compute_metric, "Microseconds", elapsed / 1e3)
                stats.applied += 1
                last = seq
                _remember(handled, digests, seq, digest)
                group.changed = True
                group.outputs.extend((item.position, o) for o in outputs)
                group.events.extend((item.position, e) for e in events)
            group.state = state

    def _persist(self, groups: dict[str, _Group], cache_ok: bool = True) -> None:
        """Outputs, events, conditional snapshots, then the cache write-back (skipped when the
        batch could not read the cache: it is down, and the next read finds its entries behind)."""
        step = self.step
        with_outputs = [g for g in groups.values() if g.changed and g.outputs]
        dead: set[int] = set()  # positions of records dead-lettered because their outputs were refused
        if self.sink is not None and with_outputs:
            n = self._publish("outputs", self.sink.emit, [(g, g.outputs) for g in with_outputs], dead)
            self.stats.outputs += n
            self._count("outputs", n)
        # a record whose outputs went to the DLQ announces nothing: its events would name outputs
        # (an order intent, a market state) that exist nowhere
        with_events = [(g, [(p, e) for p, e in g.events if p not in dead]) for g in groups.values()
                       if g.changed and g.events]
        with_events = [(g, events) for g, events in with_events if events]
        if self.events is not None and with_events:
            self.stats.events += self._publish("events", self.events.publish, with_events)

        to_write = {s: g for s, g in groups.items() if g.changed or (g.reseed and g.failed_from is None)}
        dumped: dict[str, bytes] = {}
        handled: dict[str, bytes] = {}
        for symbol, group in list(to_write.items()):
            try:
                dumped[symbol] = step.dump(group.state)
            except Exception:
                log.exception("stage %s: cannot serialise state of %s", step.name, symbol)
                group.fail(0)
                del to_write[symbol]
                continue
            self._remember_state(symbol, dumped[symbol], group.state)  # true whether or not it is stored
            handled[symbol] = group.handled_bytes()
        if self.snapshots is not None:
            pending = list(to_write.items())
            for i, (symbol, group) in enumerate(pending):
                item = {
                    "pk": step.name,
                    "sk": symbol,
                    "version": group.version + 1,
                    "sequence": step.sequence(group.state),
                    "state": dumped[symbol],
                    "updated_at": datetime.now(UTC).isoformat(),
                }
                if handled[symbol]:
                    item["handled"] = handled[symbol]
                try:
                    self.snapshots.put_item(self.snapshot_table, item, expected_version=group.stored)
                except DeadlineExceededError as exc:  # no write can start now: the rest fail unwritten
                    unwritten = dict(pending[i:])
                    self._out_of_time("writing snapshots", unwritten, exc)
                    for rest in unwritten:
                        del to_write[rest]
                    break
                except ConcurrencyError as exc:
                    log.warning("stage %s: snapshot of %s lost a race: %s", step.name, symbol, exc)
                    if not group.reseed and cache_ok:  # a reseeded entry may be the only copy of its
                        self._drop_cached(symbol)  # state; the retry compares the versions again
                    group.fail(0)
                    del to_write[symbol]
                except InfrastructureError as exc:
                    log.warning("stage %s: snapshot of %s failed: %s", step.name, symbol, exc)
                    group.fail(0)
                    del to_write[symbol]
                except DataError as exc:  # DynamoDB refuses the item itself (over 400 KB): only
                    # this symbol fails, loudly; its records are retried, the others go through
                    log.error("stage %s: snapshot of %s refused by the store: %s", step.name, symbol, exc)
                    self._count("snapshot_refused", 1)
                    group.fail(0)
                    del to_write[symbol]
        if not cache_ok:  # the batch could not read the cache: leave it alone
            return
        cache_items = {step.key(s): encode_cached(g.version + 1, dumped[s], handled[s]) for s, g in to_write.items()}
        for symbol, group in groups.items():
            if group.warm and not group.changed and group.failed_from is None:
                try:
                    cache_items[step.key(symbol)] = encode_cached(group.version, step.dump(group.state),
                                                                  group.handled_bytes())
                except Exception:
                    log.exception("stage %s: cannot serialise state of %s", step.name, symbol)
        if cache_items:
            try:
                self.cache.set_many(cache_items)
            except InfrastructureError as exc:
                if self.snapshots is None:  # the cache is the only copy: the states are not stored
                    log.warning("stage %s: state write-back failed for %d symbols: %s", step.name, len(to_write), exc)
                    for g in to_write.values():
                        g.fail(0)
                else:  # committed in the snapshots; the next read finds these entries behind them
                    self._cache_unavailable(f"write-back of {len(cache_items)} states failed (committed in "
                                            "their snapshots)", exc)

    # -- helpers --------------------------------------------------------------------------------

    def _publish(
        self,
        what: str,
        send: Callable[[list[BaseModel]], None],
        parts: list[tuple[_Group, list[tuple[int, BaseModel]]]],
        dead: set[int] | None = None,
    ) -> int:
        """Send the outputs (or events) of ``parts`` in time order; return how many went out.

        One call when all goes well. A DataError (a permanent, per-entry rejection such as an
        entry over the size limit) splits the records in halves until the input record whose
        models are rejected is alone; that input is dead-lettered with the reason (its position
        added to ``dead``) and the others go out. An InfrastructureError fails the symbols of the
        records in that call.
        """
        owner = {item.position: (group, item) for group, _ in parts for item in group.items}
        models: dict[int, list[BaseModel]] = {}
        for _, part in parts:
            for position, model in part:
                models.setdefault(position, []).append(model)
        # in time order across symbols (each symbol's own order is its time order): what a
        # batch packed symbol by symbol (aggregated records) carries reaches the next stage
        # interleaved as the bars happened, ties in arrival order
        units = [_Unit(*owner[p], models[p]) for p in sorted(models, key=lambda p: (owner[p][1].sequence, p))]
        return self._send_units(what, send, units, set(), set() if dead is None else dead)

    def _send_units(
        self,
        what: str,
        send: Callable[[list[BaseModel]], None],
        units: list[_Unit],
        failed: set[int],
        dead: set[int],
    ) -> int:
        units = [u for u in units if id(u.group) not in failed]  # a failed symbol keeps its order
        if not units:
            return 0
        try:
            send([m for u in units for m in u.models])
            return sum(len(u.models) for u in units)
        except InfrastructureError as exc:
            log.warning("stage %s: %s not published: %s", self.step.name, what, exc)
            for u in units:
                u.group.fail(0)
                failed.add(id(u.group))
            return 0
        except DataError as exc:
            if len(units) > 1:
                mid = len(units) // 2
                return self._send_units(what, send, units[:mid], failed, dead) + self._send_units(
                    what, send, units[mid:], failed, dead
                )
            unit = units[0]
            reason = (f"the {what} of this record cannot be published: {exc}; the record was applied to the "
                      f"state of {self.step.symbol_of(unit.item.message)} (a redelivery of it is skipped as handled)")
            try:
                sent = self._reject(unit.item.raw, unit.item.item_id, reason, [])
            except (InfrastructureError, DataError):  # no DLQ and no item id: retry the symbol
                sent = False
            if sent:
                dead.add(unit.item.position)
            else:
                unit.group.fail(0)
                failed.add(id(unit.group))
            return 0

    def _reject(self, raw: Any, item_id: str | None, reason: str, failures: list[str]) -> bool:
        """Dead-letter a record; if the DLQ is unreachable or refuses it, report it failed. True when sent.

        Either way one warning names the record (:func:`_dead_letter_fields`) and the reason (cut
        by :func:`~ensemble_trader.runtime.dead_letters.logged_reason`; the letter keeps up to
        8 KiB of it), so the function's log says why a record was dead-lettered — or, when the DLQ
        failed, why it is being retried."""
        fields = _dead_letter_fields(self.step.name, raw, reason)
        where = _record_label(fields)
        try:
            self.dlq.send(raw, reason, source=self.step.name)
        except (InfrastructureError, DataError) as exc:
            log.warning("stage %s: %s not dead-lettered, the dead-letter queue is unreachable or refusing (%s); "
                        "its reason: %s", self.step.name, where, exc, fields["reason"])
            if item_id is None:
                raise
            failures.append(item_id)
            return False
        log.warning("stage %s: dead-lettered %s: %s", self.step.name, where, fields["reason"],
                    extra={"dead_letter": fields})
        self.stats.rejected += 1
        self._count("rejected", 1)
        return True

    def _drop_cached(self, symbol: str) -> None:
        try:
            self.cache.delete(self.step.key(symbol))
        except InfrastructureError as exc:  # the retry's version check finds the entry behind anyway
            self._cache_unavailable(f"could not drop cached state of {symbol}", exc)

    def _out_of_time(self, doing: str, groups: Mapping[str, _Group], exc: DeadlineExceededError) -> None:
        """The invocation's deadline stopped ``doing`` at the first of ``groups`` (by symbol): they
        all fail at once, with one warning (the calls of the others would be refused alike)."""
        symbols = list(groups)
        log.warning("stage %s: out of time %s, failing %d symbols (%s): %s", self.step.name, doing,
                    len(symbols), ", ".join(symbols[:5]) + (", ..." if len(symbols) > 5 else ""), exc)
        for group in groups.values():
            group.fail(0)

    def _cache_unavailable(self, what: str, exc: Exception) -> None:
        """A failed cache call the stage carries on without (the snapshots hold every state):
        logged, counted (``<stage>_cache_unavailable``), never a failed record."""
        log.warning("stage %s: cache unavailable, %s: %s", self.step.name, what, exc)
        self.stats.cache_unavailable += 1
        self._count("cache_unavailable", 1)

    def _count(self, what: str, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.add_metric(f"{self.step.name}_{what}", "Count", n)


def _utc(ns: int) -> datetime:
    """A message time (ns since the epoch) as an aware UTC datetime (to the microsecond)."""
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=ns % 1_000_000_000 // 1000)


def iso_utc(ns: int) -> str:
    """A message time (ns since the epoch) as ISO-8601 UTC with ``Z``."""
    return _utc(ns).isoformat().replace("+00:00", "Z")


def _conflict_reason(
    stage: str, symbol: str, sequence: int, handled_digest: int, digest: int,
    offset_only: tuple[str, str, str] | None = None,
) -> str:
    """The dead-letter reason of a record at a handled time with other content (producer data).

    ``offset_only`` (:func:`_offset_only`): the record differs from the one handled only in the
    UTC offset one of its times is written with — the same record, not a correction — and the
    reason says so."""
    head = (f"conflicting record: {symbol} {iso_utc(sequence)} already applied (or dead-lettered) by stage "
            f"{stage} with different content (crc32 {handled_digest:08x}; this record {digest:08x})")
    if offset_only is None:
        return f"{head}; state moves forward only, so this version is not applied"
    name, here, then = offset_only
    return (f"{head}: the two differ only in the UTC offset of {name} ({here} here, {then} in the one handled "
            "first) - the same instant and the same values, written with another offset, which gives another "
            "digest (it covers the time as written); this copy is not applied and nothing is lost, since the "
            "same record was handled then: have the producer write each time with one offset (e.g. UTC) to "
            "make such resends duplicates")


_OFFSET_CANDIDATES = tuple(timezone(timedelta(minutes=m)) for m in range(-24 * 60 + 15, 24 * 60, 15))
"""The UTC offsets :func:`_offset_only` tries: every quarter hour strictly within a day (the
offsets a message's time may carry; every time zone in use is a whole quarter hour from UTC)."""


def _offset_only(message: BaseModel, handled_digest: int) -> tuple[str, str, str] | None:
    """(field, its text here, the offset it had then) when ``message`` with one of its aware
    datetime fields written at another UTC offset (a whole quarter hour, :data:`_OFFSET_CANDIDATES`)
    has the digest ``handled_digest`` — the record handled at its time was this one, written with
    another offset — else None. Run only for a conflict (up to 191 serialisations: about 1 ms)."""
    for name in type(message).model_fields:
        value = getattr(message, name)
        if not isinstance(value, datetime) or value.utcoffset() is None:
            continue
        own = value.utcoffset()
        for tz in _OFFSET_CANDIDATES:
            if tz.utcoffset(None) == own:
                continue
            other = message.model_copy(update={name: value.astimezone(tz)})
            if record_digest(other) == handled_digest:
                return name, _json_time(value), _offset_text(tz.utcoffset(None))
    return None


def _json_time(value: datetime) -> str:
    """A time as the message's JSON writes it (``Z`` for UTC)."""
    from pydantic_core import to_json

    return to_json(value).decode().strip('"')


def _offset_text(offset: timedelta) -> str:
    if not offset:
        return "Z (+00:00)"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _late_reason(symbol: str, sequence: int, last: int, foreign_key: str | None = None) -> str:
    reason = (f"late record: {symbol} message dated {_utc(sequence).isoformat()} arrived after the one dated "
              f"{_utc(last).isoformat()} was applied; state moves forward only, so it is not applied")
    if foreign_key is None:
        return reason
    return (f"{reason}; its record's partition key {foreign_key!r} is not its symbol: messages of {symbol} put "
            "under other keys than the symbol can reach other shards and arrive out of order - have the producer "
            "use the symbol as the partition key (docs/runbook.md section 5, late records (b))")


def _message_record(raw: Mapping[str, Any], message: bytes, index: int, count: int) -> dict[str, Any]:
    """The Kinesis record ``raw`` as if it held only its ``index``-th message (what a dead letter
    of that message carries: replayable as is), with where it came from."""
    kinesis = dict(raw["kinesis"], data=base64.b64encode(message).decode(),
                   aggregated={"index": index, "messages": count})
    return {**raw, "kinesis": kinesis}


def _dead_letter_fields(stage: str, raw: Any, reason: str) -> dict[str, Any]:
    """What the log line of a dead letter carries: the stage, the Kinesis record's sequence number
    and partition key (None when the record lacks them), the message's place in an aggregated
    record when it came from one, and the reason (cut, :func:`logged_reason`)."""
    kinesis = raw.get("kinesis") if isinstance(raw, Mapping) else None
    key = kinesis.get("partitionKey") if isinstance(kinesis, Mapping) else None
    fields: dict[str, Any] = {
        "stage": stage,
        "sequence_number": _sequence_number(raw),
        "partition_key": key if isinstance(key, str) else None,
    }
    aggregated = kinesis.get("aggregated") if isinstance(kinesis, Mapping) else None
    if isinstance(aggregated, Mapping):
        fields["aggregated"] = dict(aggregated)
    fields["reason"] = logged_reason(reason)
    return fields


def _record_label(fields: Mapping[str, Any]) -> str:
    """``record 4959… (partition key SPX)``, with ``message 2 of 3`` for a packed message."""
    label = f"record {fields['sequence_number'] or '(no sequence number)'}"
    if "aggregated" in fields:
        place = fields["aggregated"]
        label = f"message {place.get('index', 0) + 1} of {place.get('messages')} of {label}"
    return f"{label} (partition key {fields['partition_key']})" if fields["partition_key"] else label


def _sequence_number(raw: Any) -> str | None:
    try:
        seq = raw["kinesis"]["sequenceNumber"]
    except (KeyError, TypeError):
        return None
    return seq if isinstance(seq, str) and seq else None


def _ordered_unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


# ---------------------------------------------------------------------------------------------
# Wiring for a Lambda handler
# ---------------------------------------------------------------------------------------------


def runner_for_function(
    step: SymbolStep[S, In],
    function: str,
    *,
    settings: Any = None,
    metrics: MetricsSink | None = None,
    with_events: bool = False,
    deduplication_id: Callable[[BaseModel], str] | None = None,
) -> KinesisStageRunner[S, In]:
    """A runner wired to AWS (or the local stack) for the function ``function`` of constants.

    Built once per container: a Redis cache (keys prefixed with the stage), the function's
    dead-letter queue, DynamoDB snapshots in ``stage-state``, EventBridge when ``with_events``,
    and a sink for the function's first output — a Kinesis stream, or for a FIFO queue an SQS
    sink whose deduplication id is ``deduplication_id(record)``.
    """
    from ensemble_trader import constants
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore
    from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
    from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
    from ensemble_trader.adapters.aws.sqs import SqsDeadLetterWriter, SqsPublisher
    from ensemble_trader.adapters.redis.cache import RedisCache
    from ensemble_trader.runtime.settings import get_settings

    settings = settings or get_settings()
    spec = constants.function_spec(function)
    sink: RecordSink | None = None
    if spec.outputs:
        target = spec.outputs[0]
        if target in constants.STREAMS:
            sink = StreamSink(KinesisPublisher(settings=settings), target)
        elif target in constants.QUEUES:
            if deduplication_id is None:
                raise ValueError(f"function {function} writes to queue {target}: pass deduplication_id")
            sink = QueueSink(SqsPublisher(settings=settings), target, deduplication_id)
        else:
            raise ValueError(f"function {function}: output {target!r} is neither a stream nor a queue")
    return KinesisStageRunner(
        step,
        cache=RedisCache.from_settings(settings, prefix=f"{settings.stage}:"),
        dlq=SqsDeadLetterWriter(spec.dead_letter_queue, settings=settings, source=function),
        sink=sink,
        events=EventBridgePublisher(settings=settings) if with_events else None,
        snapshots=DynamoKeyValueStore(settings=settings),
        metrics=metrics,
    )
