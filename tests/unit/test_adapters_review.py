"""Adapters (review): what DynamoDB, SQS, Kinesis, EventBridge and Redis refuse is refused alike
by the real adapters and their in-memory fakes, permanently (DataError) and before anything is
sent; what they return reads back and writes back the same way."""

from __future__ import annotations

import threading

import fakeredis
import numpy as np
import pytest
from botocore.exceptions import ClientError
from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore
from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
from ensemble_trader.adapters.memory import (
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryQueuePublisher,
    MemoryStreamPublisher,
)
from ensemble_trader.adapters.redis.cache import RedisCache
from ensemble_trader.domain.errors import ConcurrencyError, DataError, InfrastructureError
from pydantic import BaseModel

from tests.unit.test_adapters import SETTINGS

KEY = {"pk": "features", "sk": "SPX"}


def _create_table(name: str) -> object:
    import boto3

    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}])
    return ddb


@pytest.fixture(params=["dynamodb", "memory"])
def store(request, aws):
    if request.param == "memory":
        return MemoryKeyValueStore()
    return DynamoKeyValueStore(_create_table("et-unit-stage-state"), settings=SETTINGS)


# ---- DynamoDB: refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({**KEY, "version": 1, "state": b"x" * 410_000}, "(?i)item size"),
        ({**KEY, "version": 1, "tags": set()}, "tags.*empty set"),
        ({"pk": "", "sk": "SPX", "version": 1}, "(?i)empty"),
        ({**KEY, "version": 1, "when": object()}, "when"),
        ({**KEY, "version": 1, "mixed": {"a", 1}}, "mixed"),
    ],
    ids=["over-400-KB", "empty-set", "empty-key", "unsupported-type", "mixed-set"],
)
def test_an_item_dynamodb_refuses_is_a_data_error_from_the_store_and_its_fake(store, item, reason):
    """DynamoDB refuses these for good: a DataError (the stage runner's and the router's 'no retry
    can fix it'), not an InfrastructureError retried for ever; the fake refuses them too."""
    with pytest.raises(DataError, match=reason):
        store.put_item("stage-state", item)
    with pytest.raises(DataError, match=reason):
        store.put_items("stage-state", [{**KEY, "version": 9}, item])
    assert store.get_item("stage-state", KEY) is None  # nothing written, nor the batch's other row


def test_a_validation_exception_names_the_table_and_the_reason_and_throttling_stays_transient():
    """A ValidationException (an item too large, but also a condition or expression the code got
    wrong) is permanent and loud: DataError with the table and DynamoDB's message."""

    class Refusing:
        def __init__(self, code: str, message: str) -> None:
            self.error = ClientError({"Error": {"Code": code, "Message": message}}, "PutItem")

        def put_item(self, **kwargs):
            raise self.error

    bug = Refusing("ValidationException", "Invalid ConditionExpression: Syntax error; token: \"OR\"")
    with pytest.raises(DataError, match=r"et-unit-stage-state.*Invalid ConditionExpression: Syntax error"):
        DynamoKeyValueStore(bug, settings=SETTINGS).put_item("stage-state", {**KEY, "version": 1}, expected_version=0)
    busy = Refusing("ProvisionedThroughputExceededException", "slow down")
    with pytest.raises(InfrastructureError, match="et-unit-stage-state"):
        DynamoKeyValueStore(busy, settings=SETTINGS).put_item("stage-state", {**KEY, "version": 1})


# ---- DynamoDB: what reads back ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e40, 1e40),  # read back as the 41-digit int 10**40, which could not be written back
        (-1.5e100, -1.5e100),
        (2.0, 2),  # DynamoDB keeps no trace of the float: an integral number reads as int
        (-0.0, 0),
        (12345678901234567890123456789012345678, 12345678901234567890123456789012345678),
        (np.float64(0.1), 0.1),
        (np.float32(0.5), 0.5),
        (np.int64(3), 3),
        (np.bool_(True), True),
        ((1, 2.5), [1, 2.5]),
        (bytearray(b"ab"), b"ab"),
        ({1.5, 2.5}, {1.5, 2.5}),
        ({np.float64(0.25), 3}, {0.25, 3}),
        ({"a", "b"}, {"a", "b"}),
        ({b"a"}, {b"a"}),
        ({1: (np.int32(2),)}, {"1": [2]}),
    ],
    ids=["1e40", "-1.5e100", "2.0", "-0.0", "38-digits", "np.float64", "np.float32", "np.int64", "np.bool_",
         "tuple", "bytearray", "float-set", "numpy-set", "str-set", "bytes-set", "nested"],
)
def test_values_read_back_alike_from_the_store_and_its_fake_and_write_back(store, value, expected):
    store.put_item("stage-state", {**KEY, "version": 1, "v": value})
    got = store.get_item("stage-state", KEY)
    assert got["v"] == expected and type(got["v"]) is type(expected)
    if isinstance(expected, list | dict | set):
        assert [type(x) for x in _leaves(got["v"])] == [type(x) for x in _leaves(expected)]
    assert type(got["version"]) is int
    store.put_item("stage-state", {**got, "version": 2}, expected_version=1)  # what was read writes back
    assert store.get_item("stage-state", KEY) == {**got, "version": 2}


def _leaves(value):
    if isinstance(value, dict):
        return [leaf for k in sorted(value) for leaf in _leaves(value[k])]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, set):
        return sorted(value, key=repr)
    return [value]


def test_the_fake_hands_out_copies():
    kv = MemoryKeyValueStore()
    item = {**KEY, "version": 1, "v": [1, {"a": 2}]}
    kv.put_item("stage-state", item)
    item["v"][1]["a"] = 99
    got = kv.get_item("stage-state", KEY)
    got["v"].append(3)
    assert kv.get_item("stage-state", KEY)["v"] == [1, {"a": 2}]


# ---- DynamoDB: conditional puts --------------------------------------------------------------


def test_expected_version_0_writes_only_where_no_item_is(store):
    """The port: with expected_version=0 the put succeeds only when the item is absent (or
    stored with version 0) — not over an item that has no version attribute."""
    store.put_item("stage-state", {**KEY, "note": "written without a version"})
    with pytest.raises(ConcurrencyError):
        store.put_item("stage-state", {**KEY, "version": 1}, expected_version=0)
    assert store.get_item("stage-state", KEY) == {**KEY, "note": "written without a version"}
    store.put_item("stage-state", {**KEY, "version": 0})
    store.put_item("stage-state", {**KEY, "version": 1}, expected_version=0)  # stored version 0
    store.put_item("stage-state", {"pk": "features", "sk": "NEW", "version": 1}, expected_version=0)  # absent


def test_expected_version_0_on_a_table_of_another_naming_writes_only_where_no_item_is(aws):
    """A physical table name constants.TABLES does not know: the key is not known either, and the
    condition 'absent' still holds (no attribute of the item exists)."""
    kv = DynamoKeyValueStore(_create_table("someone-elses-table"), settings=SETTINGS)
    kv.put_item("someone-elses-table", {**KEY, "note": "x"})
    with pytest.raises(ConcurrencyError):
        kv.put_item("someone-elses-table", {**KEY, "version": 1}, expected_version=0)
    kv.put_item("someone-elses-table", {"pk": "features", "sk": "NEW", "version": 1}, expected_version=0)
    with pytest.raises(ConcurrencyError):
        kv.put_item("someone-elses-table", {"pk": "features", "sk": "NEW", "version": 1}, expected_version=0)


def test_the_fakes_conditional_put_is_atomic():
    """Two writers that read version 0 and put with expected_version=0: exactly one may win. The
    second writer is started inside the first one's check-then-set (when it reads the stored
    row); without a lock it slipped in between, and both 'won' (one update lost)."""
    kv = MemoryKeyValueStore()
    outcome: dict[str, str] = {}

    def put(name: str) -> None:
        try:
            kv.put_item("stage-state", {**KEY, "version": 1, "by": name}, expected_version=0)
            outcome[name] = "won"
        except ConcurrencyError:
            outcome[name] = "lost"

    second = threading.Thread(target=put, args=("second",))

    class Interleaving(dict):
        def get(self, key, default=None):
            found = super().get(key, default)
            if not second.is_alive() and "second" not in outcome:
                second.start()
                second.join(0.3)  # it finishes here without a lock; with one it waits for ours
            return found

    kv.tables["stage-state"] = Interleaving()
    put("first")
    second.join()
    assert sorted(outcome.values()) == ["lost", "won"]
    assert kv.get_item("stage-state", KEY)["by"] == next(n for n, o in outcome.items() if o == "won")


# ---- batch publishers: nothing sent before a refusal -----------------------------------------


class RecordingKinesis:
    def __init__(self) -> None:
        self.put: list[tuple[str, int]] = []

    def put_records(self, StreamName, Records):  # noqa: N803 (boto3's names)
        self.put += [(r["PartitionKey"], len(r["Data"])) for r in Records]
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1", "ShardId": "s"} for _ in Records]}


@pytest.mark.parametrize("aggregate", [False, True])
@pytest.mark.parametrize(
    ("bad", "reason"),
    [(("A", b"x" * (1024 * 1024)), "partition key 'A' is 1048577 bytes"),
     (("K" * 257, b"x"), "partition key 'KKK.*257 characters"),
     (("", b"x"), "empty partition key")],
    ids=["over-1-MiB", "long-key", "empty-key"],
)
def test_kinesis_refuses_a_call_holding_a_record_it_cannot_put_before_putting_any(aggregate, bad, reason):
    """Records went out round by round: the first round was put before the second's oversized
    record raised, and the stage runner, splitting the call, put them again (duplicates)."""
    client = RecordingKinesis()
    publisher = KinesisPublisher(client, settings=SETTINGS, aggregate=aggregate)
    with pytest.raises(DataError, match=reason):
        publisher.put("features", [("A", b"a1"), ("B", b"b1"), ("A", b"a2"), bad])
    assert client.put == []
    with pytest.raises(DataError, match=reason):
        MemoryStreamPublisher().put("features", [bad])


class RecordingEvents:
    def __init__(self) -> None:
        self.put: list[dict] = []

    def put_events(self, Entries):  # noqa: N803 (boto3's names)
        self.put += Entries
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in Entries]}


class Small(BaseModel):
    n: int


class Big(BaseModel):
    blob: str


def test_eventbridge_refuses_a_call_holding_an_event_it_cannot_put_before_putting_any():
    client = RecordingEvents()
    with pytest.raises(DataError, match="Big event is 300029 bytes; EventBridge accepts at most 262144"):
        EventBridgePublisher(client, settings=SETTINGS).publish([Small(n=i) for i in range(15)] + [Big(blob="x" * 300_000)])
    assert client.put == []  # the first ten had gone out


# ---- the publisher fakes keep the real limits ------------------------------------------------


def test_the_publisher_fakes_refuse_what_the_services_refuse_and_keep_nothing_of_the_call():
    stream = MemoryStreamPublisher()
    with pytest.raises(DataError, match="1048576"):
        stream.put("features", [("A", b"ok"), ("A", b"x" * (2 * 1024 * 1024))])
    assert stream.streams["features"] == []
    bus = MemoryEventBus()
    with pytest.raises(DataError, match="EventBridge accepts at most 262144"):
        bus.publish([Small(n=1), Big(blob="x" * 300_000)])
    assert bus.events == []
    queue = MemoryQueuePublisher()
    with pytest.raises(DataError, match="over the 262,144-byte limit"):
        queue.send("features-dlq", [("g", "a", b"ok"), ("g", "b", b"x" * 300_000)])
    with pytest.raises(DataError, match="UTF-8"):
        queue.send("features-dlq", [("g", "a", b"ok"), ("g", "c", b"\xff\xfe")])
    with pytest.raises(DataError, match="character"):
        queue.send("features-dlq", [("g", "d", b"nul \x00")])
    assert queue.queues["features-dlq"] == []


def test_the_queue_fake_drops_a_repeated_deduplication_id_on_fifo_queues_only():
    """SQS deduplicates on FIFO queues only: a standard queue (the stages' dead-letter queues)
    keeps a message sent twice."""
    queue = MemoryQueuePublisher()
    for name in ("features-dlq", "et-unit-features-dlq"):
        queue.send(name, [("g", "same", b"1")])
        queue.send(name, [("g", "same", b"2")])
        assert [body for _, _, body in queue.queues[name]] == [b"1", b"2"]
    for name in ("order-intents", "orders-dlq", "et-unit-order-intents.fifo"):
        queue.send(name, [("g", "same", b"1"), ("g", "same", b"2")])
        queue.send(name, [("g", "same", b"3")])
        assert [body for _, _, body in queue.queues[name]] == [b"1"]


# ---- SQS: refusals of the whole batch --------------------------------------------------------


def test_an_sqs_batch_refusal_under_its_query_compatible_code_is_not_retried(aws):
    """botocore reports SQS errors under their query-compatible code
    (``AWS.SimpleQueueService.BatchEntryIdsNotDistinct``), the plain name in ``QueryErrorCode``:
    such a refusal was retried 4 times and reported as transient."""
    import boto3
    from ensemble_trader.adapters.aws._retry import is_request_error, resend_failed

    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    calls, sleeps = [], []

    def send(pending):
        calls.append(len(pending))
        sqs.send_message_batch(QueueUrl=url, Entries=pending)
        return [], ""

    for entries in ([{"Id": "0", "MessageBody": "a"}, {"Id": "0", "MessageBody": "b"}],
                    [{"Id": str(i), "MessageBody": "a"} for i in range(11)],
                    [{"Id": "a b", "MessageBody": "a"}],
                    []):
        calls.clear()
        with pytest.raises(DataError, match="request refused, not retried"):
            resend_failed(send, entries, max_attempts=4, base_delay_s=0.01, sleep=sleeps.append)
        assert len(calls) == 1 and sleeps == []
    too_long = ClientError({"Error": {"Code": "AWS.SimpleQueueService.BatchRequestTooLong", "Message": "x"}},
                           "SendMessageBatch")
    assert is_request_error(too_long)
    gone = ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue",
                                  "QueryErrorCode": "QueueDoesNotExist", "Message": "x"}}, "SendMessageBatch")
    assert not is_request_error(gone)


class RecordingSqs:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def get_queue_url(self, QueueName):  # noqa: N803 (boto3's names)
        return {"QueueUrl": f"https://sqs/{QueueName}"}

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 (boto3's names)
        self.calls.append([e["MessageBody"] for e in Entries])
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


@pytest.mark.parametrize(("body", "reason"), [(b"nul \x00", "holds the character"), (b"\xff\xfe", "UTF-8")])
def test_sqs_refuses_a_body_it_cannot_send_before_sending_any(body, reason):
    """A character SQS refuses went out in a batch of 10 after the first batch was sent."""
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    client = RecordingSqs()
    messages = [("g", f"d-{i}", b"ok") for i in range(12)] + [("g", "bad", body)]
    with pytest.raises(DataError, match=f"message 'bad'.*{reason}"):
        SqsPublisher(client, settings=SETTINGS, sleep=lambda s: None).send("features-dlq", messages)
    assert client.calls == []


# ---- Redis -----------------------------------------------------------------------------------


def test_a_cache_key_of_another_type_is_a_miss_not_a_failed_read():
    """One key holding a hash (a stray HSET) failed the whole pipelined read with WRONGTYPE, and
    with it every symbol of the batch on every retry; it is a miss, the others read normally,
    and the next write replaces it."""
    client = fakeredis.FakeRedis()
    cache = RedisCache(client, prefix="local:")
    cache.set_many({"features:AAA": b"1", "features:CCC": b"3"})
    client.hset("local:features:BBB", "f", "v")
    assert cache.get_many(["features:AAA", "features:BBB", "features:CCC"]) == [b"1", None, b"3"]
    cache.set_many({"features:BBB": b"2"})
    assert cache.get("features:BBB") == b"2"


def test_any_other_error_of_one_cache_key_still_fails_the_read():
    import redis

    class Pipeline:
        def get(self, key):
            pass

        def execute(self, raise_on_error=True):
            return [b"1", redis.exceptions.NoPermissionError("NOPERM this user has no permissions to access the key")]

    class Client:
        def pipeline(self, transaction=False):
            return Pipeline()

    with pytest.raises(InfrastructureError, match="failed at local:features:BBB: NOPERM"):
        RedisCache(Client(), prefix="local:").get_many(["features:AAA", "features:BBB"])
