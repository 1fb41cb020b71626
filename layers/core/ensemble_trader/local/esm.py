"""An emulator of Lambda event-source mappings over the local stack's Kinesis and SQS.

For each function it polls the function's source the way Lambda does and calls the real handler
with the real event shape and a fake context:

* **Kinesis**: one tracked shard iterator per shard, ``GetRecords`` up to the batch size, the
  records as ``Records[].kinesis`` with base64 data. With ``ReportBatchItemFailures`` the batch is
  retried from the lowest failed sequence number (an unknown or empty ``itemIdentifier`` fails the
  whole batch, as in AWS); a thrown exception splits the batch in two when ``bisect_on_error`` is
  set (each half then retried on its own); after ``retry_attempts`` retries, or for records older
  than ``max_record_age_seconds``, the records go to the function's on-failure destination (its
  dead-letter queue) with the reason, and the shard moves on.
* **SQS**: ``ReceiveMessage`` up to the batch size (at most 10), in flight for the queue's own
  visibility timeout (the deployed one, six times the function timeout) — or, with
  ``release_interrupted_sqs=False`` (``local drain``), for the function timeout; successes are deleted,
  failures (reported items, or all on an exception) become visible again — at once, or after a
  backoff (``sqs_retry_backoff_s``, doubling with each receive, at most the function timeout) —
  and a message that failed on its ``max_receive_count``-th receive (10, the deployed queue's
  ``maxReceiveCount``) goes to the dead-letter queue with the reason. What an emulator leaves in
  flight is noted on the stack: :meth:`EventSourceMappingEmulator.release` and the stack's
  ``reset()`` make it visible again.

A shard is blocked while its batch is retried, as in Lambda, so per-symbol order holds.

What counts as a **function error** (retried, bisected, finally dead-lettered): the handler
raises an ``Exception``; it calls ``sys.exit`` (``SystemExit``: in Lambda the runtime exits and
the invocation fails); it runs longer than the function's ``timeout_seconds`` (Lambda's "Task
timed out": the handler cannot be interrupted in process, so it runs to its end and its result is
discarded); or it returns what JSON cannot encode (a ``datetime``, a ``set``: Lambda's runtime
fails such an invocation with ``Runtime.MarshalError``). The mapping reads the response as
Lambda's does, after a JSON round trip (a tuple of failures is a list). Any other
``BaseException`` (``KeyboardInterrupt``, pytest's failure outcomes) stops the emulator: the
batch in hand is given back first — the shard iterator rewound to its first unfinished record,
the SQS messages made visible again (unless ``release_interrupted_sqs`` is False: then they stay
in flight for the function timeout, as after an invocation Lambda lost, though Lambda would leave
them for the queue's longer visibility timeout) — and the exception is re-raised.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ensemble_trader import constants
from ensemble_trader.adapters.aws.sqs import SqsDeadLetterWriter
from ensemble_trader.local.events import FakeLambdaContext, kinesis_record, sqs_record
from ensemble_trader.local.functions import deployed_functions, load_handler
from ensemble_trader.local.stack import LocalStack
from ensemble_trader.runtime.aggregation import messages_of

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class MappingStats:
    """What one event-source mapping did."""

    function: str
    source: str
    invocations: int = 0
    records_received: int = 0  # records read from the source
    messages_received: int = 0  # messages in them (an aggregated Kinesis record holds several)
    records_succeeded: int = 0  # records whose invocation succeeded (incl. dead-lettered by the handler)
    item_failures: int = 0  # records a response marked failed: its batchItemFailures (the whole batch if malformed)
    function_errors: int = 0  # invocations that raised, exited, timed out or returned what JSON cannot encode
    timeouts: int = 0  # of which: ran longer than the function timeout
    bisections: int = 0
    # Kinesis: retried invocations (a batch, or what is left of it, delivered again; not the
    # bisected halves); SQS: messages made visible again for another receive after a failure
    retries: int = 0
    # records (Kinesis) or messages (SQS) this emulator delivered again after a failed delivery:
    # Kinesis, each record of a retried batch and of a bisected batch's halves; SQS, each message
    # received again after it failed and was made visible again. The same thing for both kinds,
    # what the summary's ``redelivered`` column shows (``retries`` counts batches for Kinesis)
    redelivered: int = 0
    dead_lettered: int = 0  # records sent to the on-failure destination by the mapping
    expired: int = 0  # of which: older than the maximum record age
    invoke_seconds: float = 0.0
    disabled: str = ""  # why the mapping was switched off (``disable_after_errors``)
    undelivered: int = 0  # records read but not delivered because the mapping was switched off


class _LogBuffer(io.TextIOBase):
    """A function's stdout (its CloudWatch log stream): the last lines, bounded."""

    def __init__(self, maxlen: int = 2000) -> None:
        self.lines: deque[str] = deque(maxlen=maxlen)
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        self.lines.extend(complete)
        return len(text)


@dataclass
class _Mapping:
    spec: constants.FunctionSpec
    handler: Handler
    stats: MappingStats
    logs: _LogBuffer = field(default_factory=_LogBuffer)
    iterators: dict[str, str | None] = field(default_factory=dict)  # Kinesis: shard -> iterator
    checkpoints: dict[str, str] = field(default_factory=dict)  # Kinesis: shard -> last sequence number handled
    queue_url: str = ""
    in_flight: set[str] = field(default_factory=set)  # SQS: ids of messages received, not yet deleted or made visible
    failed: set[str] = field(default_factory=set)  # SQS: ids of messages made visible again after a failure
    consecutive_failures: int = 0  # records dead-lettered after function errors, none succeeding since


class EventSourceMappingEmulator:
    """Event-source mappings of ``functions`` (default: every deployed one) over ``stack``.

    ``handlers`` overrides a function's handler (tests use it to inject a failing one);
    ``start_position`` is ``TRIM_HORIZON`` (all records on the streams) or ``LATEST`` (only what
    is put after the emulator is created). Handlers are loaded fresh (a cold start) unless
    ``fresh_handlers`` is False. ``capture_output`` keeps each function's stdout (Powertools
    metrics) in :meth:`logs` instead of the terminal.

    ``disable_after_errors`` (off by default: Lambda has no such rule) switches a mapping off
    once that many records in a row were dead-lettered after function errors with no success in
    between — a function that cannot work at all (say, its model is missing) then costs seconds
    instead of bisecting through every record. The demo uses it and reports the reason.

    ``checkpoints`` (``{function: {shard id: sequence number}}``, what :meth:`checkpoints` returned
    earlier) resumes a Kinesis mapping after the records an earlier emulator already handled, as
    Lambda's mapping keeps its place between invocations (``ensemble-trader local drain`` keeps
    them in the state file); a shard without one starts at ``start_position``.

    ``functions=None`` maps every deployed function; an empty list maps none. ``timer`` measures
    the time inside a handler against the function timeout (default ``time.monotonic``, the clock
    of the context's remaining time; tests inject a fake one).

    ``release_interrupted_sqs`` (default True, what tests want) makes an interrupted SQS batch
    visible again at once; ``local drain`` sets it False: the batch stays in flight for the
    function timeout (Lambda would leave it for the queue's visibility timeout, six times that),
    so that its idempotency records (``INPROGRESS`` until the function timeout) have expired when
    it is delivered again — at once, the redelivery would fail on them until the receives run out
    and the intents were dead-lettered. For that the emulator then receives with
    ``VisibilityTimeout`` = the function timeout, so a batch is never held longer than that
    whenever the drain stops — during the handler, while deleting or dead-lettering after it
    returned, or killed (SIGKILL) at any point; with True it keeps the queue's own timeout.
    ``sqs_retry_backoff_s`` (default 0: a failed message is visible again at once) delays a
    failed message's next receive by that many seconds after its first receive, doubling with
    each receive, at most the function timeout (``local drain`` uses 1 s: ten receives then span
    minutes, as the queue's visibility timeout does in AWS, not a fraction of a second; in AWS
    each retry waits the whole visibility timeout).
    ``kinesis_batch_limit`` caps a Kinesis batch below the mapping's batch size (``local drain``
    does, so that one invocation stays short and ``--timeout`` can be kept).
    """

    def __init__(
        self,
        stack: LocalStack,
        functions: Sequence[constants.FunctionSpec | str] | None = None,
        *,
        handlers: Mapping[str, Handler] | None = None,
        start_position: str = "TRIM_HORIZON",
        fresh_handlers: bool = True,
        capture_output: bool = True,
        clock: Callable[[], float] = time.time,
        disable_after_errors: int | None = None,
        sqs_batches_per_poll: int = 100,
        timer: Callable[[], float] = time.monotonic,
        checkpoints: Mapping[str, Mapping[str, str]] | None = None,
        release_interrupted_sqs: bool = True,
        sqs_retry_backoff_s: float = 0.0,
        kinesis_batch_limit: int | None = None,
    ) -> None:
        if start_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError(f"start_position must be TRIM_HORIZON or LATEST, not {start_position!r}")
        if not sqs_retry_backoff_s >= 0:
            raise ValueError(f"sqs_retry_backoff_s must be a number of seconds >= 0, not {sqs_retry_backoff_s!r}")
        if kinesis_batch_limit is not None and kinesis_batch_limit < 1:
            raise ValueError(f"kinesis_batch_limit must be at least 1, not {kinesis_batch_limit!r}")
        self.release_interrupted_sqs = release_interrupted_sqs
        self.sqs_retry_backoff_s = sqs_retry_backoff_s
        self.kinesis_batch_limit = kinesis_batch_limit
        self.stack = stack
        self.capture_output = capture_output
        self.clock = clock
        self.disable_after_errors = disable_after_errors
        self.sqs_batches_per_poll = sqs_batches_per_poll
        self.timer = timer
        chosen = deployed_functions() if functions is None else functions
        specs = [constants.function_spec(f) if isinstance(f, str) else f for f in chosen]
        handlers = dict(handlers or {})
        self._mappings: dict[str, _Mapping] = {}
        for spec in specs:
            handler = handlers.get(spec.logical) or load_handler(spec.logical, fresh=fresh_handlers)
            mapping = _Mapping(spec, handler, MappingStats(spec.logical, spec.mapping.source))
            if spec.mapping.kind == "kinesis":
                mapping.checkpoints.update((checkpoints or {}).get(spec.logical, {}))
                self._open_iterators(mapping, start_position)
            elif spec.mapping.kind == "sqs":
                mapping.queue_url = stack.queue_url(spec.mapping.source)
            else:
                raise ValueError(f"{spec.logical}: unknown source kind {spec.mapping.kind!r}")
            self._mappings[spec.logical] = mapping
        self._dlq_writers: dict[str, SqsDeadLetterWriter] = {}

    # -- public ----------------------------------------------------------------------------------

    @property
    def functions(self) -> list[str]:
        return list(self._mappings)

    def stats(self) -> dict[str, MappingStats]:
        return {name: m.stats for name, m in self._mappings.items()}

    def logs(self, function: str) -> list[str]:
        return list(self._mappings[function].logs.lines)

    def checkpoints(self) -> dict[str, dict[str, str]]:
        """Per Kinesis mapping and shard, the sequence number of the last record handled (delivered,
        or dead-lettered by the mapping); pass them as ``checkpoints`` to a later emulator."""
        return {name: dict(m.checkpoints) for name, m in self._mappings.items() if m.spec.mapping.kind == "kinesis"}

    def release(self) -> int:
        """Make every SQS message this emulator left in flight (waiting out a retry backoff, or an
        interrupted batch with ``release_interrupted_sqs=False``) visible again at once; how many.
        The stack's :meth:`~ensemble_trader.local.stack.LocalStack.reset` does this for every
        emulator of the stack. A message someone else received meanwhile is made visible too
        (moto accepts its old receipt handle: see
        :meth:`~ensemble_trader.local.stack.LocalStack.release_in_flight`)."""
        released = 0
        for mapping in self._mappings.values():
            if mapping.in_flight:
                released += self.stack.release_in_flight(mapping.queue_url, list(mapping.in_flight))
                mapping.in_flight.clear()
        return released

    def backlog(self) -> dict[str, int]:
        """Per function, the messages waiting at its source: on a Kinesis stream those after the
        mapping's position (read, not delivered: the position does not move), on a queue its
        visible, in-flight and delayed messages (:meth:`LocalStack.queue_depth`: never fewer than it holds,
        also while a visibility timeout ends). A switched-off mapping's backlog is counted too."""
        out = {}
        for name, mapping in self._mappings.items():
            if mapping.spec.mapping.kind == "sqs":
                out[name] = self.stack.queue_depth(mapping.spec.mapping.source)
                continue
            kinesis, waiting = self.stack.client("kinesis"), 0
            for iterator in mapping.iterators.values():
                while iterator:
                    response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                    if not response["Records"]:
                        break
                    waiting += sum(len(messages_of(r["Data"])) for r in response["Records"])
                    iterator = response.get("NextShardIterator")
            out[name] = waiting
        return out

    def poll(self, function: str, *, deadline: float | None = None) -> int:
        """One poll of ``function``'s source, delivering what it got; the number of records read.
        Past ``deadline`` (a ``time.monotonic()`` value) no further batch is started."""
        mapping = self._mappings[function]
        if mapping.stats.disabled or _past(deadline):
            return 0
        if mapping.spec.mapping.kind == "kinesis":
            return self._poll_kinesis(mapping, deadline)
        return self._poll_sqs(mapping, deadline)

    def run_until_drained(
        self,
        *,
        max_rounds: int = 100_000,
        on_batch: Callable[[str, int], None] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, MappingStats]:
        """Poll every function round-robin, in pipeline order, until a round reads nothing."""
        return drain([self], max_rounds=max_rounds, on_batch=on_batch, timeout_s=timeout_s)

    # -- invocation ------------------------------------------------------------------------------

    def _invoke(self, mapping: _Mapping, event: dict[str, Any]) -> tuple[Any, str | None]:
        """Call the handler: ``(response, None)`` with the response as the mapping would read it
        (:func:`_marshal`), or ``(None, reason)`` on a function error (an ``Exception``,
        ``SystemExit``, a run past the function timeout, a response JSON cannot encode). Other
        exceptions derived only from ``BaseException`` propagate: the caller gives the batch back
        and re-raises."""
        spec = mapping.spec
        context = FakeLambdaContext(
            function_name=self.stack.name(spec.logical),
            memory_limit_in_mb=spec.memory_mb,
            timeout_seconds=spec.timeout_seconds,
        )
        mapping.stats.invocations += 1
        response: Any = None
        t0, started = time.perf_counter(), self.timer()
        try:
            if self.capture_output:
                with redirect_stdout(mapping.logs):
                    response = mapping.handler(event, context)
            else:
                response = mapping.handler(event, context)
        except (Exception, SystemExit) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = None
        finally:
            mapping.stats.invoke_seconds += time.perf_counter() - t0
        elapsed = self.timer() - started
        if elapsed > spec.timeout_seconds:
            mapping.stats.timeouts += 1
            reason = f"Task timed out after {elapsed:.2f} seconds"
        elif reason is None:
            try:
                response = _marshal(response)
            except MarshalError as exc:
                reason = f"Runtime.MarshalError: {exc}"
        if reason is not None:
            mapping.stats.function_errors += 1
            log.info("ESM %s: function error on %d records: %s", spec.logical, len(event["Records"]), reason)
            return None, reason
        return response, None

    def _dead_letter(self, mapping: _Mapping, records: Sequence[dict[str, Any]], reason: str) -> None:
        spec = mapping.spec
        writer = self._dlq_writers.get(spec.dead_letter_queue)
        if writer is None:
            writer = SqsDeadLetterWriter(spec.dead_letter_queue, settings=self.stack.settings, source=spec.logical)
            self._dlq_writers[spec.dead_letter_queue] = writer
        for record in records:
            writer.send(record, reason, source=spec.logical)
        mapping.stats.dead_lettered += len(records)
        log.info("ESM %s: %d records to %s: %s", spec.logical, len(records), spec.dead_letter_queue, reason)

    # -- Kinesis ---------------------------------------------------------------------------------

    def _open_iterators(self, mapping: _Mapping, start_position: str) -> None:
        """One iterator per shard: after the shard's checkpoint if it has one, else at
        ``start_position``; TRIM_HORIZON means where the stream begins since the stack's last
        reset (the stack keeps that mark)."""
        kinesis = self.stack.client("kinesis")
        stream = self.stack.name(mapping.spec.mapping.source)
        begins = self.stack.start_position(mapping.spec.mapping.source) if start_position == "TRIM_HORIZON" else {}
        for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
            shard_id = shard["ShardId"]
            after = mapping.checkpoints.get(shard_id)
            if after is not None:
                mapping.iterators[shard_id] = kinesis.get_shard_iterator(
                    StreamName=stream, ShardId=shard_id, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    StartingSequenceNumber=after,
                )["ShardIterator"]
                continue
            mapping.iterators[shard_id] = begins.get(shard_id) or kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard_id, ShardIteratorType=start_position
            )["ShardIterator"]

    def _poll_kinesis(self, mapping: _Mapping, deadline: float | None = None) -> int:
        kinesis = self.stack.client("kinesis")
        stream = self.stack.name(mapping.spec.mapping.source)
        limit = min(mapping.spec.mapping.batch_size, self.kinesis_batch_limit or mapping.spec.mapping.batch_size)
        read = 0
        for shard_id, iterator in list(mapping.iterators.items()):
            if iterator is None:
                continue
            if _past(deadline):
                break
            response = kinesis.get_records(ShardIterator=iterator, Limit=limit)
            mapping.iterators[shard_id] = response.get("NextShardIterator")
            records = response["Records"]
            if not records:
                continue
            messages = sum(len(messages_of(r["Data"])) for r in records)
            read += messages
            mapping.stats.records_received += len(records)
            mapping.stats.messages_received += messages
            event_records = [
                kinesis_record(
                    r["Data"],
                    partition_key=r["PartitionKey"],
                    sequence_number=r["SequenceNumber"],
                    stream=stream,
                    shard_id=shard_id,
                    arrival=_epoch_seconds(r["ApproximateArrivalTimestamp"]),
                    function=self.stack.name(mapping.spec.logical),
                )
                for r in records
            ]
            self._deliver_kinesis(mapping, shard_id, event_records, again=False)
            if not mapping.stats.disabled:  # a switched-off mapping left records undelivered
                mapping.checkpoints[shard_id] = records[-1]["SequenceNumber"]
        return read

    def _deliver_kinesis(self, mapping: _Mapping, shard_id: str, records: list[dict[str, Any]], *,
                         again: bool) -> None:
        """Deliver ``records`` (``again``: already delivered once, in a batch that failed and was
        bisected) until they succeed or are dead-lettered."""
        source = mapping.spec.mapping
        pending = records
        retries = 0
        while pending:
            if mapping.stats.disabled:
                mapping.stats.undelivered += len(pending)
                return
            if source.max_record_age_seconds >= 0:
                now = self.clock()
                too_old = [r for r in pending if now - r["kinesis"]["approximateArrivalTimestamp"] > source.max_record_age_seconds]
                if too_old:
                    mapping.stats.expired += len(too_old)
                    self._dead_letter(
                        mapping, too_old, f"record older than the maximum record age ({source.max_record_age_seconds} s)"
                    )
                    old_ids = {id(r) for r in too_old}
                    pending = [r for r in pending if id(r) not in old_ids]
                    if not pending:
                        return
            if again or retries:
                mapping.stats.redelivered += len(pending)
            try:
                response, reason = self._invoke(mapping, {"Records": pending})
            except BaseException:
                # the emulator is stopped (KeyboardInterrupt, a test's failure): the shard resumes
                # at the first record not yet done, as if this batch had never been read
                self._rewind_kinesis(mapping, shard_id, pending[0])
                raise
            if reason is not None:  # a function error: bisect, retry or give up
                if source.bisect_on_error and len(pending) > 1:
                    mapping.stats.bisections += 1
                    middle = len(pending) // 2
                    self._deliver_kinesis(mapping, shard_id, pending[:middle], again=True)
                    self._deliver_kinesis(mapping, shard_id, pending[middle:], again=True)
                    return
                if retries >= source.retry_attempts:
                    self._dead_letter(mapping, pending, f"{reason} (after {retries} retries)")
                    self._count_failure(mapping, len(pending), reason)
                    return
                retries += 1
                mapping.stats.retries += 1
                continue
            mapping.consecutive_failures = 0
            start, failed = self._first_failed_kinesis(mapping, pending, response)
            mapping.stats.records_succeeded += start
            mapping.stats.item_failures += failed
            if start == len(pending):
                return
            pending = pending[start:]
            if retries >= source.retry_attempts:
                self._dead_letter(mapping, pending, f"batch item failure after {retries} retries")
                return
            retries += 1
            mapping.stats.retries += 1

    def _rewind_kinesis(self, mapping: _Mapping, shard_id: str, first: dict[str, Any]) -> None:
        """Point the shard's iterator back at ``first`` (redelivered by the next poll)."""
        try:
            mapping.iterators[shard_id] = self.stack.client("kinesis").get_shard_iterator(
                StreamName=self.stack.name(mapping.spec.mapping.source),
                ShardId=shard_id,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=first["kinesis"]["sequenceNumber"],
            )["ShardIterator"]
        except Exception:  # the original exception matters more; say what is lost
            log.exception("ESM %s: could not rewind %s to %s", mapping.spec.logical, shard_id,
                          first["kinesis"]["sequenceNumber"])

    def _count_failure(self, mapping: _Mapping, n: int, reason: str) -> None:
        mapping.consecutive_failures += n
        limit = self.disable_after_errors
        if limit is not None and mapping.consecutive_failures >= limit and not mapping.stats.disabled:
            mapping.stats.disabled = f"{mapping.consecutive_failures} records in a row failed: {reason}"
            log.warning("ESM %s: mapping switched off: %s", mapping.spec.logical, mapping.stats.disabled)

    def _first_failed_kinesis(
        self, mapping: _Mapping, pending: list[dict[str, Any]], response: Any
    ) -> tuple[int, int]:
        """Index of the record to resume from (len(pending) when the whole batch succeeded), and
        how many records the response marked failed (all of them when it is malformed). The
        records after the first failure are retried too, but only the reported ones failed."""
        if not mapping.spec.mapping.report_batch_item_failures:
            return len(pending), 0
        failures = _batch_item_failures(response)
        if failures is None:
            return 0, len(pending)  # a malformed response fails the whole batch, as Lambda does
        if not failures:
            return len(pending), 0
        index = {r["kinesis"]["sequenceNumber"]: i for i, r in enumerate(pending)}
        positions = [index.get(f) for f in failures]
        if any(p is None for p in positions):
            log.warning("ESM %s: unknown itemIdentifier in %s: whole batch failed", mapping.spec.logical, failures)
            return 0, len(pending)
        return min(p for p in positions if p is not None), len(set(failures))

    # -- SQS -------------------------------------------------------------------------------------

    def _poll_sqs(self, mapping: _Mapping, deadline: float | None = None) -> int:
        """Receive and deliver batches until the queue is empty (or ``sqs_batches_per_poll``, or
        ``deadline`` passed).

        Lambda runs several SQS pollers at once and scales them with the backlog; polling one
        batch per round would let the queue grow far beyond what Lambda allows (and moto's SQS
        slows down with the queue length).
        """
        total = 0
        for _ in range(self.sqs_batches_per_poll):
            if _past(deadline):
                break
            n = self._poll_sqs_once(mapping)
            total += n
            if n == 0 or mapping.stats.disabled:
                break
        return total

    def _poll_sqs_once(self, mapping: _Mapping) -> int:
        sqs = self.stack.client("sqs")
        spec = mapping.spec
        # in flight for the queue's visibility timeout, as deployed; a drain that may be stopped
        # without giving the batch back (release_interrupted_sqs=False) holds it for the function
        # timeout only, however it stops: Ctrl-C after the handler returned (while deleting,
        # dead-lettering or setting a backoff) or SIGKILL, where no handler of ours runs
        visibility = {} if self.release_interrupted_sqs else {"VisibilityTimeout": spec.timeout_seconds}
        response = sqs.receive_message(
            QueueUrl=mapping.queue_url,
            MaxNumberOfMessages=min(10, spec.mapping.batch_size),
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
            **visibility,
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        # noted on the stack until deleted or made visible again, so that release() and the
        # stack's reset() can give back what an emulator left in flight
        self.stack.hold_in_flight(mapping.queue_url, {m["MessageId"]: m["ReceiptHandle"] for m in messages})
        mapping.in_flight.update(m["MessageId"] for m in messages)
        again = mapping.failed.intersection(m["MessageId"] for m in messages)
        mapping.failed.difference_update(again)
        mapping.stats.redelivered += len(again)
        mapping.stats.records_received += len(messages)
        mapping.stats.messages_received += len(messages)
        queue_name = self.stack.name(spec.mapping.source)
        records = [
            sqs_record(
                m["Body"],
                queue=queue_name,
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                attributes=m.get("Attributes", {}),
                message_attributes=_lambda_message_attributes(m.get("MessageAttributes", {})),
                md5_of_body=m.get("MD5OfBody"),
            )
            for m in messages
        ]
        failed: set[str]
        try:
            response, error = self._invoke(mapping, {"Records": records})
        except BaseException:
            # the emulator is stopped: the batch goes back to the queue at once (a test's next
            # poll sees it), or stays in flight for the function timeout
            if self.release_interrupted_sqs:
                self._make_visible(mapping, records)
            else:
                self._hold_for_function_timeout(mapping, records)
            raise
        if error is not None:
            reason = error
            failed = {r["messageId"] for r in records}
        else:
            reason = ""
            failed = set()
            if spec.mapping.report_batch_item_failures:
                items = _batch_item_failures(response)
                known = {r["messageId"] for r in records}
                if items is None or any(i not in known for i in items):
                    failed = known
                else:
                    failed = set(items)
        succeeded = [r for r in records if r["messageId"] not in failed]
        mapping.stats.records_succeeded += len(succeeded)
        if succeeded:
            mapping.consecutive_failures = 0
        mapping.stats.item_failures += len(failed) if not reason else 0
        self._delete(mapping, succeeded)
        retry, give_up = [], []
        for record in records:
            if record["messageId"] not in failed:
                continue
            received = int(record["attributes"].get("ApproximateReceiveCount", "1"))
            (give_up if received >= spec.mapping.max_receive_count else retry).append(record)
        if give_up:
            self._dead_letter(
                mapping, give_up,
                reason or f"batch item failure after {spec.mapping.max_receive_count} receives",
            )
            self._delete(mapping, give_up)
            if reason:
                self._count_failure(mapping, len(give_up), reason)
        if retry:
            mapping.stats.retries += len(retry)
            mapping.failed.update(r["messageId"] for r in retry)
            self._make_visible(mapping, retry, backoff=True)
        return len(messages)

    def _retry_delay(self, mapping: _Mapping, record: dict[str, Any]) -> int:
        """Seconds before a failed message is received again: ``sqs_retry_backoff_s`` after its
        first receive, doubling with each receive, at most the function timeout."""
        if not self.sqs_retry_backoff_s:
            return 0
        received = int(record["attributes"].get("ApproximateReceiveCount", "1"))
        delay = self.sqs_retry_backoff_s * 2 ** min(max(received - 1, 0), 30)
        return int(min(mapping.spec.timeout_seconds, max(1.0, round(delay))))

    def _make_visible(self, mapping: _Mapping, records: Sequence[dict[str, Any]], *, backoff: bool = False) -> None:
        delays = [self._retry_delay(mapping, r) if backoff else 0 for r in records]
        self._change_visibility(mapping, records, delays)
        # a message waiting out a backoff stays noted as in flight (release() gives it back)
        self._forget(mapping, [r for r, delay in zip(records, delays, strict=True) if delay == 0])

    def _hold_for_function_timeout(self, mapping: _Mapping, records: Sequence[dict[str, Any]]) -> None:
        """A batch interrupted in its handler (``release_interrupted_sqs=False``) stays in flight
        for the function timeout from now, not the queue's visibility timeout (six times as long,
        what Lambda would leave it for): by then the idempotency records its handler left
        ``INPROGRESS`` have expired, and the next ``local drain`` waits no longer than it must.
        (It was received for the function timeout already; this restarts that from the interrupt.)"""
        try:
            self._change_visibility(mapping, records, [mapping.spec.timeout_seconds] * len(records))
        except Exception:  # the interruption matters more; the batch then waits out the receive's timeout
            log.exception("ESM %s: could not shorten the interrupted batch's visibility timeout", mapping.spec.logical)

    def _change_visibility(self, mapping: _Mapping, records: Sequence[dict[str, Any]], delays: Sequence[int]) -> None:
        sqs = self.stack.client("sqs")
        for start in range(0, len(records), 10):
            sqs.change_message_visibility_batch(
                QueueUrl=mapping.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"], "VisibilityTimeout": delay}
                    for i, (r, delay) in enumerate(zip(records[start : start + 10], delays[start : start + 10], strict=True))
                ],
            )

    def _delete(self, mapping: _Mapping, records: Sequence[dict[str, Any]]) -> None:
        sqs = self.stack.client("sqs")
        for start in range(0, len(records), 10):
            chunk = records[start : start + 10]
            sqs.delete_message_batch(
                QueueUrl=mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)],
            )
        self._forget(mapping, records)

    def _forget(self, mapping: _Mapping, records: Sequence[dict[str, Any]]) -> None:
        ids = [r["messageId"] for r in records]
        mapping.in_flight.difference_update(ids)
        self.stack.forget_in_flight(mapping.queue_url, ids)


def drain(
    emulators: Sequence[EventSourceMappingEmulator],
    *,
    max_rounds: int = 100_000,
    on_batch: Callable[[str, int], None] | None = None,
    timeout_s: float | None = None,
) -> dict[str, MappingStats]:
    """Poll the functions of several emulators round-robin until a whole round reads nothing;
    ``on_batch(function, n)`` after each poll that read ``n`` messages. Past ``timeout_s`` no
    further batch is started (a running invocation cannot be interrupted: it ends first)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for _ in range(max_rounds):
        total = 0
        for emulator in emulators:
            for name in emulator.functions:
                n = emulator.poll(name, deadline=deadline)
                total += n
                if n and on_batch is not None:
                    on_batch(name, n)
        if total == 0:
            break
        if _past(deadline):
            log.warning("ESM emulator: stopped after %.0f s with records still flowing", timeout_s)
            break
    return {name: stats for emulator in emulators for name, stats in emulator.stats().items()}


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


class MarshalError(ValueError):
    """A handler's response that JSON cannot encode (Lambda: ``Runtime.MarshalError``)."""


def _marshal(response: Any) -> Any:
    """The response as the mapping receives it: Lambda's Python runtime encodes it as JSON
    (a ``Decimal`` as a number, NaN allowed) and the mapping decodes that, so a tuple arrives as
    a list; bytes are passed on as they are, which the mapping reads if they are JSON. What the
    runtime cannot encode fails the invocation (:class:`MarshalError`)."""
    if isinstance(response, (bytes, bytearray)):
        try:
            return json.loads(response)
        except ValueError:
            return bytes(response)  # not JSON: a malformed response, the whole batch fails
    try:
        text = json.dumps(response, default=_decimal_as_number)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MarshalError(f"Unable to marshal response: {exc}") from None
    return json.loads(text)


def _decimal_as_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _batch_item_failures(response: Any) -> list[str] | None:
    """The itemIdentifiers of a partial batch response; None when the response is malformed."""
    if response is None:
        return []
    if not isinstance(response, Mapping):
        return None
    items = response.get("batchItemFailures")
    if items is None:
        return []
    if not isinstance(items, list):
        return None
    out = []
    for item in items:
        ident = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not isinstance(ident, str) or not ident:
            return None
        out.append(ident)
    return out


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _lambda_message_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API message attributes in the camelCase shape of a Lambda SQS event."""
    out = {}
    for name, attr in attributes.items():
        binary = attr.get("BinaryValue")
        out[name] = {
            "stringValue": attr.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
            "stringListValues": attr.get("StringListValues", []),
            "binaryListValues": attr.get("BinaryListValues", []),
            "dataType": attr.get("DataType", "String"),
        }
    return out


def summarize_stats(stats: Mapping[str, MappingStats]) -> str:
    """A small table of the mappings' counters: per function the records (Kinesis) or messages
    (SQS) received, succeeded, reported failed, the invocations that failed, the records or
    messages delivered again after a failed delivery (:attr:`MappingStats.redelivered`: the same
    thing for both kinds) and those the mapping dead-lettered."""
    lines = [f"{'function':<12} {'received':>9} {'ok':>9} {'item-fail':>9} {'errors':>7} {'redelivered':>11} {'DLQ':>6}"]
    for s in stats.values():
        lines.append(
            f"{s.function:<12} {s.records_received:>9,} {s.records_succeeded:>9,} {s.item_failures:>9,} "
            f"{s.function_errors:>7,} {s.redelivered:>11,} {s.dead_lettered:>6,}"
        )
        if s.disabled:
            lines.append(f"  ! {s.function} mapping switched off ({s.undelivered:,} records left undelivered): {s.disabled}")
    return "\n".join(lines)


__all__ = ["EventSourceMappingEmulator", "MappingStats", "MarshalError", "drain", "summarize_stats"]
