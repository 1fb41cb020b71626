"""``LocalStack``: every AWS resource of the app in a moto server, plus a real Redis.

::

    with LocalStack() as stack:            # moto server + redis-server on free ports
        stack.settings                     # Settings pointing at them (ET_* variables set too)
        stack.read_queue("features-dlq")   # what reached a dead-letter queue

Resources are created from :mod:`ensemble_trader.constants` under
``qualified(stage, logical)`` names — the names the CDK app deploys — so the real handlers run
unchanged against it. ``LocalStack.attach()`` joins a stack started by ``ensemble-trader local
up`` (its state file) instead of starting one; stopping an attached stack leaves the services
running. The state file records each server's pid with its identity (boot id and start time),
so a pid that a later process reuses is never taken for the stack's server.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_trader import constants
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.local.events import ACCOUNT, sqs_queue_arn
from ensemble_trader.local.functions import repo_root
from ensemble_trader.local.servers import (
    CHILD_ENV_REMOVED,
    RUNNING,
    UNVERIFIED,
    MotoServer,
    RedisServer,
    process_identity,
    process_status,
)
from ensemble_trader.runtime.aggregation import messages_of
from ensemble_trader.runtime.settings import Settings, get_settings

log = logging.getLogger(__name__)


def queue_visibility_timeout(spec: constants.FunctionSpec) -> int:
    """The visibility timeout of the queue ``spec``'s function reads, as deployed: the CDK app's
    own :func:`~ensemble_trader.runtime.orders.visibility_timeout_seconds` (six times the
    function timeout)."""
    from ensemble_trader.runtime.orders import visibility_timeout_seconds

    return visibility_timeout_seconds(spec)

EVENTS_TAP = "events-tap"
"""Local-only standard queue that receives a copy of every event put on the bus."""

STATE_FILE_NAME = ".local-stack.json"


def default_state_file_path() -> Path:
    """``.local-stack.json`` in the root of the checkout this package is installed from (not the
    current folder)."""
    return repo_root() / STATE_FILE_NAME


def state_file_path() -> Path:
    """The state file of ``ensemble-trader local up``, as an absolute path:
    ``$ET_LOCAL_STATE_FILE`` (a relative one taken from the current folder) when set, else
    :func:`default_state_file_path`."""
    override = os.environ.get("ET_LOCAL_STATE_FILE")
    return Path(override).absolute() if override else default_state_file_path()


class StaleStateError(InfrastructureError):
    """The state file describes servers that are gone, or whose pids now belong to other processes."""


@dataclass(frozen=True)
class ServerCheck:
    """One server of a state file, checked against the process table (:func:`check_state`)."""

    name: str  # "moto" | "redis"
    pid: int | None
    status: str  # servers.RUNNING | GONE | OTHER | UNVERIFIED

    def describe(self) -> str:
        what = {"moto": "moto server", "redis": "redis-server"}.get(self.name, self.name)
        return {
            "running": f"{what} (pid {self.pid}) is running",
            "gone": f"{what} (pid {self.pid}) is not running",
            "other": f"pid {self.pid} now belongs to another process, not to the stack's {what}",
            "unverified": f"pid {self.pid} is alive but cannot be verified as the stack's {what} "
                          "(the state file records no process identity: written by an older version)",
        }[self.status]


def check_state(state: dict[str, Any]) -> list[ServerCheck]:
    """The moto and Redis servers of a state file: still the processes ``local up`` started?
    (Their pids and the identities :func:`~ensemble_trader.local.servers.process_identity`
    recorded; a state file without identities is unverifiable.)"""
    checks = []
    for name in ("moto", "redis"):
        pid = state.get(f"{name}_pid")
        checks.append(ServerCheck(name, pid, process_status(pid, state.get(f"{name}_identity"))))
    return checks


def stale_state_message(path: Path, checks: list[ServerCheck]) -> str:
    """What ``local status`` and ``local drain`` say of a state file whose servers are not all
    running: each server once, and what ``local down`` does about it."""
    servers = "; ".join(c.describe() for c in checks)
    if any(c.status in (RUNNING, UNVERIFIED) for c in checks):
        return (f"partly running ({path}): {servers}; `ensemble-trader local down` stops the rest "
                "and removes the state file")
    return f"not running ({path}): {servers}; `ensemble-trader local down` removes the stale state file"


_SQS_HELD = ("ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")


def sqs_backlog(sqs: Any, queue_url: str) -> int:
    """The messages of the queue at ``queue_url``: in flight and delayed, then visible, in two
    requests in that order, so that a message counts at least once even if its visibility timeout
    (or delay) ends while it is counted (it may then count twice). Messages leave those states only
    for the visible one, or are deleted. One request for the visible and in-flight counts could
    count none of a batch whose visibility timeout ended during it: moto counts each attribute at
    its own instant, in the order asked (SQS's counts are approximate too), and a batch turning
    visible after the visible messages were counted and before the in-flight ones was in neither.
    A ``local drain`` waiting out an interrupted batch then found the queue empty and stopped
    without delivering it; more often on a loaded machine, where the request takes longer. A
    message another consumer receives during the count can still be missed; a drain (one per
    stack) has none."""
    held = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(_SQS_HELD))["Attributes"]
    visible = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return sum(int(held.get(name, 0)) for name in _SQS_HELD) + int(visible["ApproximateNumberOfMessages"])


class LocalStack:
    """The moto server, the Redis server and the resources, with the environment set.

    ``shards`` is the shard count of every stream. ``quiet`` lowers Powertools' log level to
    WARNING for handlers run in this process (the demo's setting; tests keep INFO).
    ``detached`` servers outlive this process (``local up``); otherwise the moto server is a child
    process (``moto_mode="process"``, immune to ``mock_aws`` in the same process) or a thread
    (``"thread"``), and both servers end with this process even if it is killed.
    """

    def __init__(
        self,
        stage: str = constants.LOCAL_STAGE,
        *,
        shards: int = 1,
        detached: bool = False,
        quiet: bool = False,
        allow_fake_redis: bool = True,
        moto_mode: str = "process",
    ) -> None:
        self.stage = stage
        self.shards = shards
        self.detached = detached
        self.quiet = quiet
        self.moto = MotoServer(mode="detached" if detached else moto_mode)
        self.redis = RedisServer(allow_fake=allow_fake_redis, detached=detached)
        self.attached = False
        self.server_checks: list[ServerCheck] = []  # attach(): what the state file's pids are now
        self.state_path: Path | None = None  # attach(): the state file it was attached from
        self._saved_env: dict[str, str | None] = {}
        self._started = False
        self._marks: dict[str, dict[str, str]] = {}  # where each stream "begins" since reset()
        # SQS messages an emulator of this stack received and has not deleted or made visible
        # again (a retry backoff, an interrupted batch): queue url -> {message id: receipt handle}
        self._in_flight: dict[str, dict[str, str]] = {}

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    def attach(cls, path: Path | None = None, *, quiet: bool = False) -> LocalStack:
        """A handle on the stack described by a state file (``ensemble-trader local up``)."""
        path = path or state_file_path()
        if not path.exists():
            raise InfrastructureError(f"no local stack state file at {path}; run `ensemble-trader local up`")
        try:
            state = json.loads(path.read_text())
        except ValueError as exc:
            raise InfrastructureError(f"the state file {path} is not valid JSON ({exc})") from None
        if not isinstance(state, dict):
            raise InfrastructureError(f"the state file {path} does not describe a stack")
        checks = check_state(state)
        if any(c.status not in (RUNNING, UNVERIFIED) for c in checks):
            raise StaleStateError(stale_state_message(path, checks))
        stack = cls(state["stage"], shards=state.get("shards", 1), quiet=quiet)
        stack.moto.port, stack.moto.pid = state["moto_port"], state.get("moto_pid")
        stack.redis.port, stack.redis.pid = state["redis_port"], state.get("redis_pid")
        stack.server_checks = checks
        stack.state_path = path
        stack.attached = True
        stack._set_environment()
        stack._started = True
        return stack

    def start(self, *, create: bool = True) -> LocalStack:
        try:
            if self.detached:
                # the detached moto child logs for as long as it runs: into the redis-server's
                # working folder, which `local down` removes (and no start sweeps while moto runs)
                self.redis.start()
                self.moto.log_dir = Path(self.redis.directory) if self.redis.directory else None
                self.moto.start()
                self.redis.add_owner(self.moto.pid)
            else:
                self.moto.start()
                self.redis.start()
            self._set_environment()
            self._started = True
            if create:
                self.create_resources()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if not self.attached:
            self.moto.stop()
            self.redis.stop()
        self._restore_environment()
        self._started = False

    def __enter__(self) -> LocalStack:
        return self if self._started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_state_file(self, path: Path | None = None) -> Path:
        path = path or state_file_path()
        path.write_text(
            json.dumps(
                {
                    "stage": self.stage,
                    "shards": self.shards,
                    "endpoint_url": self.endpoint_url,
                    "redis_url": self.redis_url,
                    "moto_port": self.moto.port,
                    "moto_pid": self.moto.pid,
                    "moto_identity": process_identity(self.moto.pid),
                    "redis_port": self.redis.port,
                    "redis_pid": self.redis.pid,
                    "redis_identity": process_identity(self.redis.pid),
                    "redis_fake": self.redis.fake,
                    "redis_dir": self.redis.directory,
                    "moto_log": str(self.moto.log_path) if self.moto.log_path else None,
                },
                indent=2,
            )
        )
        return path

    def mapping_checkpoints(self) -> dict[str, dict[str, str]]:
        """The event-source mappings' places on the streams (``{function: {shard: sequence
        number}}``) that ``ensemble-trader local drain`` left in the state file of this attached
        stack; empty when it has not run yet."""
        if self.state_path is None:
            return {}
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        found = state.get("mapping_checkpoints") if isinstance(state, dict) else None
        return found if isinstance(found, dict) else {}

    def save_mapping_checkpoints(self, checkpoints: dict[str, dict[str, str]]) -> bool:
        """Keep ``checkpoints`` in the state file of this attached stack (replaced atomically), so
        the next ``local drain`` resumes there. Written only while the file still describes this
        stack (a ``local down`` meanwhile removed it, or a new ``local up`` replaced it: nothing
        is written); True when written."""
        from ensemble_trader.marketdata import write_text_atomic

        if self.state_path is None:
            return False
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(state, dict) or (state.get("moto_pid"), state.get("moto_port")) != (self.moto.pid, self.moto.port):
            return False
        state["mapping_checkpoints"] = checkpoints
        write_text_atomic(self.state_path, json.dumps(state, indent=2))
        return True

    # -- environment -----------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return self.moto.url

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def environment(self, *, for_shell: bool = False) -> dict[str, str]:
        """What a handler reads to find this stack.

        ``for_shell`` adds ``AWS_ENDPOINT_URL`` (so the aws CLI in that shell talks to moto too),
        which ``local up`` prints. It is not set inside this process: it would also redirect the
        clients of moto's in-process ``mock_aws`` in other tests of the same session.
        """
        env = {
            "ET_STAGE": self.stage,
            "ET_AWS_ENDPOINT_URL": self.endpoint_url,
            "ET_REDIS_URL": self.redis_url,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        if self.quiet:
            env["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        if for_shell:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env

    def _set_environment(self) -> None:
        from ensemble_trader.adapters.aws.clients import clear_client_cache

        for key, value in self.environment().items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        # a profile or a session token would override the dummy keys (or name a profile this
        # machine lacks): removed while the stack runs, restored by stop() like the rest
        for key in CHILD_ENV_REMOVED:
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ.pop(key, None)
        get_settings.cache_clear()
        clear_client_cache()

    def _restore_environment(self) -> None:
        from ensemble_trader.adapters.aws.clients import clear_client_cache

        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        get_settings.cache_clear()
        clear_client_cache()

    @property
    def settings(self) -> Settings:
        return Settings(stage=self.stage, aws_endpoint_url=self.endpoint_url, redis_url=self.redis_url)

    def name(self, logical: str) -> str:
        return constants.qualified(self.stage, logical)

    def client(self, service: str) -> Any:
        from ensemble_trader.adapters.aws.clients import client

        return client(service, self.settings)

    def redis_client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url)

    # -- resources -------------------------------------------------------------------------------

    def create_resources(self) -> None:
        """Create every stream, queue, table, the bus (with the tap rule) and the bucket."""
        self._create_queues()
        self._create_streams()
        self._create_tables()
        self._create_bus()
        self.client("s3").create_bucket(Bucket=self.name(constants.MODEL_BUCKET))

    def _create_streams(self) -> None:
        kinesis = self.client("kinesis")
        for logical in constants.STREAMS:
            name = self.name(logical)
            kinesis.create_stream(StreamName=name, ShardCount=self.shards)
            kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
            kinesis.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")

    def _create_queues(self) -> None:
        sqs = self.client("sqs")
        redrive: dict[str, tuple[str, int]] = {}
        visibility: dict[str, int] = {}
        for spec in constants.FUNCTIONS:
            if spec.mapping.kind == "sqs":
                # the emulator dead-letters with the reason after max_receive_count receives, as
                # the deployed redrive would; SQS's own redrive is the backstop one receive later
                redrive[spec.mapping.source] = (spec.dead_letter_queue, spec.mapping.max_receive_count + 1)
                visibility[spec.mapping.source] = queue_visibility_timeout(spec)
        # dead-letter queues first, so that every redrive target exists
        ordered = sorted(constants.QUEUES, key=lambda q: q in redrive)
        for logical in ordered:
            attributes: dict[str, str] = {}  # no function reads it: SQS's default of 30 s, as deployed
            if logical in visibility:
                attributes["VisibilityTimeout"] = str(visibility[logical])
            if constants.QUEUES[logical]:
                attributes.update({"FifoQueue": "true", "ContentBasedDeduplication": "false"})
            if logical in redrive:
                dlq, max_receive = redrive[logical]
                attributes["RedrivePolicy"] = json.dumps(
                    {"deadLetterTargetArn": sqs_queue_arn(self.name(dlq)), "maxReceiveCount": str(max_receive)}
                )
            sqs.create_queue(QueueName=self.name(logical), Attributes=attributes)
        sqs.create_queue(QueueName=self.name(EVENTS_TAP))

    def _create_tables(self) -> None:
        ddb = self.client("dynamodb")
        for spec in constants.TABLES:
            keys = [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
            attrs = [{"AttributeName": spec.partition_key, "AttributeType": "S"}]
            if spec.sort_key:
                keys.append({"AttributeName": spec.sort_key, "KeyType": "RANGE"})
                attrs.append({"AttributeName": spec.sort_key, "AttributeType": "S"})
            name = self.name(spec.logical)
            ddb.create_table(
                TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST"
            )
            if spec.ttl_attribute:
                ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
                )

    def _create_bus(self) -> None:
        events = self.client("events")
        bus = self.name(constants.EVENT_BUS)
        events.create_event_bus(Name=bus)
        rule = f"{bus}-copy-to-tap"
        events.put_rule(
            Name=rule,
            EventBusName=bus,
            EventPattern=json.dumps({"source": [constants.EVENT_SOURCE, constants.CONTROL_EVENT_SOURCE]}),
            State="ENABLED",
        )
        events.put_targets(
            Rule=rule,
            EventBusName=bus,
            Targets=[{"Id": "tap", "Arn": sqs_queue_arn(self.name(EVENTS_TAP))}],
        )

    # -- looking inside --------------------------------------------------------------------------

    def queue_url(self, logical: str) -> str:
        name = self.name(logical) if logical in constants.QUEUES or logical == EVENTS_TAP else logical
        return self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]

    def read_queue(self, logical: str, *, delete: bool = True, limit: int = 10_000) -> list[dict[str, Any]]:
        """Every message now in a queue, bodies parsed as JSON (text kept under ``"body"``).

        With ``delete=False`` the messages stay in the queue. A standard queue's are received,
        held in flight until all are read, then made visible again. A FIFO queue cannot be read
        that way: SQS returns no message of a group while an earlier one of it is in flight, and
        making a batch visible again only gives the same batch back, so at most the first ten of
        each group could be seen. Instead each FIFO batch is sent again as copies (same body,
        group and message attributes) and only then deleted, until just copies come back (held in
        flight, then made visible): every group ends holding its messages in their original order.
        A copy's deduplication id is new (``peek-<message id>``): SQS keeps the original's in its
        five-minute window even after a delete and would drop a copy sent under it. Like any
        send, a copy has a new message id, sent time and receive count. The whole FIFO queue is
        rotated even past ``limit`` (stopping early would leave a group out of order); not for a
        queue something else sends to or receives from meanwhile.
        """
        sqs = self.client("sqs")
        url = self.queue_url(logical)
        rotate = not delete and url.endswith(".fifo")
        out: list[dict[str, Any]] = []
        # messages kept in flight and made visible at the end (message id -> latest receipt
        # handle; a copy not received yet has none): a message received again after its
        # visibility timeout ran out is not counted twice
        held: dict[str, str | None] = {}
        while rotate or len(out) < limit:
            response = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30,
                MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if not messages:
                break
            new = []
            for m in messages:
                if m["MessageId"] in held:
                    held[m["MessageId"]] = m["ReceiptHandle"]
                else:
                    new.append(m)
            for m in new:
                try:
                    out.append(json.loads(m["Body"]))
                except json.JSONDecodeError:
                    out.append({"body": m["Body"]})
            if rotate:
                held.update((self._send_copy(sqs, url, m), None) for m in new)
            elif not delete:
                held.update((m["MessageId"], m["ReceiptHandle"]) for m in new)
            if (delete or rotate) and new:
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(new)],
                )
        handles = [h for h in held.values() if h is not None]
        for start in range(0, len(handles), 10):
            sqs.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for i, h in enumerate(handles[start : start + 10])
                ],
            )
        return out[:limit]

    @staticmethod
    def _send_copy(sqs: Any, url: str, message: dict[str, Any]) -> str:
        """Send ``message`` (received from the FIFO queue ``url``) again; the copy's message id."""
        attributes = {
            name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
            for name, value in message.get("MessageAttributes", {}).items()
        }
        return sqs.send_message(
            QueueUrl=url,
            MessageBody=message["Body"],
            MessageGroupId=message["Attributes"]["MessageGroupId"],
            MessageDeduplicationId=f"peek-{message['MessageId']}",
            **({"MessageAttributes": attributes} if attributes else {}),
        )["MessageId"]

    def published_events(self, *, delete: bool = True) -> list[dict[str, Any]]:
        """The events put on the bus so far (from the tap queue), oldest first."""
        return self.read_queue(EVENTS_TAP, delete=delete)

    def queue_depth(self, logical: str) -> int:
        """The messages of a queue, visible, in flight or delayed (:func:`sqs_backlog`)."""
        return sqs_backlog(self.client("sqs"), self.queue_url(logical))

    def stream_records(self, logical: str, *, since: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
        """Every (partition key, message) on a stream since the last :meth:`reset` (or since a
        :meth:`stream_mark`), shard by shard; an aggregated record gives each of its messages (a
        corrupt one itself)."""
        return [(r["PartitionKey"], m) for r in self.iter_stream(logical, since=since) for m in messages_of(r["Data"])]

    def iter_stream(self, logical: str, *, since: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """The stream's records (GetRecords dicts plus ``_shard``) since ``since`` — by default the
        mark :meth:`reset` left (``since={}``: from the very beginning)."""
        kinesis = self.client("kinesis")
        name = self.name(logical) if logical in constants.STREAMS else logical
        if since is None:
            since = self._marks.get(logical, {})
        for shard in kinesis.list_shards(StreamName=name)["Shards"]:
            shard_id = shard["ShardId"]
            iterator = since.get(shard_id) or kinesis.get_shard_iterator(
                StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                for record in response["Records"]:
                    yield {**record, "_shard": shard_id}
                if not response["Records"]:
                    break
                iterator = response.get("NextShardIterator")

    def stream_mark(self, logical: str) -> dict[str, str]:
        """The stream's current end, per shard (a LATEST iterator): pass it as ``since`` to read
        only the records put after this call. (Real Kinesis iterators expire after 5 minutes;
        moto's do not.)"""
        kinesis = self.client("kinesis")
        name = self.name(logical) if logical in constants.STREAMS else logical
        return {
            shard["ShardId"]: kinesis.get_shard_iterator(
                StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="LATEST"
            )["ShardIterator"]
            for shard in kinesis.list_shards(StreamName=name)["Shards"]
        }

    def start_position(self, logical: str) -> dict[str, str]:
        """Where a stream begins since the last :meth:`reset` (per shard; empty: from the start)."""
        return dict(self._marks.get(logical, {}))

    # -- SQS messages in flight -------------------------------------------------------------------

    def hold_in_flight(self, queue_url: str, handles: Mapping[str, str]) -> None:
        """Note SQS messages received from ``queue_url`` and still in flight (``{message id:
        receipt handle}``), so that :meth:`release_in_flight` (and :meth:`reset`) can give them back."""
        self._in_flight.setdefault(queue_url, {}).update(handles)

    def forget_in_flight(self, queue_url: str, message_ids: Iterable[str]) -> None:
        """The messages were deleted or made visible again: nothing to give back."""
        held = self._in_flight.get(queue_url, {})
        for message_id in message_ids:
            held.pop(message_id, None)

    def release_in_flight(self, queue_url: str | None = None, message_ids: Iterable[str] | None = None) -> int:
        """Make the noted in-flight messages visible again at once (all of them, or those of
        ``queue_url``, or only ``message_ids`` of it); how many were given back. A message deleted
        meanwhile is skipped (its handle is refused). One that someone else received meanwhile is
        not: moto accepts any receipt handle a message ever had, so it becomes visible again while
        that consumer holds it (harmless in :meth:`reset`, which empties every queue next)."""
        sqs = self.client("sqs")
        released = 0
        for url in [queue_url] if queue_url is not None else list(self._in_flight):
            held = self._in_flight.get(url, {})
            chosen = list(held) if message_ids is None else [m for m in message_ids if m in held]
            handles = [held.pop(m) for m in chosen]
            for start in range(0, len(handles), 10):
                response = sqs.change_message_visibility_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                             for i, h in enumerate(handles[start : start + 10])],
                )
                released += len(response.get("Successful", []))
            if not held:
                self._in_flight.pop(url, None)
        return released

    def reset(self) -> None:
        """Empty Redis, every queue, every table and the model bucket (a model a test published,
        say a regime refit, must not be served to the next). Kinesis streams cannot be emptied:
        their current ends become their beginnings for :meth:`stream_records` and for emulators
        that start at TRIM_HORIZON, so a reset stack looks empty to readers in this process.

        A queue is emptied by receiving and deleting, which cannot reach a message in flight (nor,
        on a FIFO queue, the later messages of its group): those an emulator of this stack left in
        flight (a retry backoff, an interrupted batch) are made visible again first
        (:meth:`release_in_flight`). A queue that still holds messages afterwards (received by
        something else and not given back) is purged if SQS allows (once a minute per queue) and
        reset raises :class:`InfrastructureError` naming the queue and the count: they would
        surface in a later test."""
        self.release_in_flight()
        self.redis_client().flushdb()
        s3, bucket = self.client("s3"), self.name(constants.MODEL_BUCKET)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        queues = [*constants.QUEUES, EVENTS_TAP]
        for logical in queues:
            self.read_queue(logical, delete=True)  # PurgeQueue is limited to once a minute
        ddb = self.client("dynamodb")
        for spec in constants.TABLES:
            name = self.name(spec.logical)
            keys = [spec.partition_key] + ([spec.sort_key] if spec.sort_key else [])
            for page in ddb.get_paginator("scan").paginate(TableName=name):
                for item in page.get("Items", []):
                    ddb.delete_item(TableName=name, Key={k: item[k] for k in keys})
        self._marks = {s: self.stream_mark(s) for s in constants.STREAMS}
        left = {logical: n for logical in queues if (n := self.queue_depth(logical))}
        if left:
            purged = self._purge(left)
            raise InfrastructureError(
                "reset() left messages in "
                + ", ".join(f"{self.name(q)} ({n})" for q, n in left.items())
                + ": in flight (received by something other than an emulator of this stack and not "
                "given back), or queued behind one in its FIFO group; they would be delivered in a later "
                "test. " + (f"Purged {', '.join(self.name(q) for q in purged)}." if purged
                            else "PurgeQueue was refused (SQS allows one a minute per queue).")
            )

    def _purge(self, queues: Iterable[str]) -> list[str]:
        """PurgeQueue each of ``queues`` (SQS allows one per minute per queue); those purged."""
        sqs, purged = self.client("sqs"), []
        for logical in queues:
            try:
                sqs.purge_queue(QueueUrl=self.queue_url(logical))
                purged.append(logical)
            except sqs.exceptions.PurgeQueueInProgress:
                pass
        return purged

    def describe(self) -> dict[str, Any]:
        """Resource names and counts, for ``ensemble-trader local status``."""
        return {
            "stage": self.stage,
            "endpoint_url": self.endpoint_url,
            "redis_url": self.redis_url,
            "redis": "fakeredis (fallback)" if self.redis.fake else "redis-server",
            "account": ACCOUNT,
            "streams": {s: self.name(s) for s in constants.STREAMS},
            "queues": {q: self.queue_depth(q) for q in constants.QUEUES},
            "tables": [self.name(t.logical) for t in constants.TABLES],
            "bus": self.name(constants.EVENT_BUS),
            "bucket": self.name(constants.MODEL_BUCKET),
        }
