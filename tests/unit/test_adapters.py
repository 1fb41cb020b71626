"""AWS and Redis adapters: chunking, retries of failed entries, error translation, versions."""

from __future__ import annotations

import json

import fakeredis
import pytest
from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore
from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
from ensemble_trader.adapters.aws.kinesis import KinesisPublisher, chunk_records
from ensemble_trader.adapters.aws.s3 import S3ModelStore
from ensemble_trader.adapters.aws.sqs import SqsDeadLetterWriter, SqsPublisher, dead_letter_body
from ensemble_trader.adapters.memory import MemoryKeyValueStore
from ensemble_trader.adapters.redis.cache import RedisCache
from ensemble_trader.domain.errors import ConcurrencyError, DataError, InfrastructureError, ModelArtifactError
from ensemble_trader.runtime.aggregation import unpack
from ensemble_trader.runtime.settings import Settings
from pydantic import BaseModel

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused")


# ---- Kinesis ---------------------------------------------------------------------------------


def test_chunks_respect_count_and_size_limits():
    records = [(f"K{i % 3}", b"x" * 10) for i in range(1234)]
    chunks = chunk_records(records)
    assert [len(c) for c in chunks] == [500, 500, 234]
    assert [r for c in chunks for r in c] == records
    big = [("K", b"x" * 900_000)] * 12
    assert [len(c) for c in chunk_records(big)] == [5, 5, 2]  # ≤ 5 MiB per call
    with pytest.raises(DataError, match="partition key 'K'"):
        chunk_records([("K", b"x" * (1024 * 1024))])


class FlakyKinesis:
    """Rejects the entries whose data is in ``reject`` for the first ``times`` calls."""

    def __init__(self, reject: set[bytes], times: int) -> None:
        self.reject, self.times, self.calls = reject, times, []

    def put_records(self, StreamName, Records):  # noqa: N803 (boto3's names)
        self.calls.append([r["Data"] for r in Records])
        failing = len(self.calls) <= self.times
        results = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}
            if failing and r["Data"] in self.reject else {"SequenceNumber": "1", "ShardId": "s"}
            for r in Records
        ]
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}


def test_only_failed_entries_are_retried_in_order():
    client = FlakyKinesis(reject={b"2", b"3"}, times=2)
    publisher = KinesisPublisher(client, settings=SETTINGS, sleep=lambda s: None)
    publisher.put("features", [(f"K{i}", str(i).encode()) for i in range(5)])
    assert client.calls == [[b"0", b"1", b"2", b"3", b"4"], [b"2", b"3"], [b"2", b"3"]]
    assert publisher.retried_entries == 4


def test_a_keys_records_reach_the_stream_in_order_when_one_is_rejected():
    """Kinesis may reject one entry and accept a later one of the same key; had both been in
    one request, the retry would put the earlier bar after the later one, and the next stage
    would skip it as a redelivery. A request never holds two records of one key."""
    client = FlakyKinesis(reject={b"A1"}, times=2)
    publisher = KinesisPublisher(client, settings=SETTINGS, sleep=lambda s: None, aggregate=False)
    records = [(key, f"{key}{i}".encode()) for i in range(3) for key in ("A", "B")]
    publisher.put("features", records)
    accepted = [d for n, call in enumerate(client.calls, 1) for d in call if not (n <= 2 and d == b"A1")]
    assert [d for d in accepted if d.startswith(b"A")] == [b"A0", b"A1", b"A2"]
    assert [d for d in accepted if d.startswith(b"B")] == [b"B0", b"B1", b"B2"]
    assert all(len({d[:1] for d in call}) == len(call) for call in client.calls)  # one record per key per call
    assert client.calls[:2] == [[b"A0", b"B0"], [b"A1", b"B1"]]  # many keys still share a call


def test_persistent_failure_raises_naming_the_count():
    client = FlakyKinesis(reject={b"1"}, times=99)
    publisher = KinesisPublisher(client, settings=SETTINGS, max_attempts=3, sleep=lambda s: None, aggregate=False)
    with pytest.raises(InfrastructureError, match=r"1 of 2 records still failing after 3 attempts.*Provisioned"):
        publisher.put("features", [("A", b"0"), ("B", b"1"), ("B", b"2")])
    assert b"2" not in {d for call in client.calls for d in call}  # B's next record waits for it


def test_kinesis_publisher_against_moto(aws):
    import boto3

    kinesis = boto3.client("kinesis", region_name="us-east-1")
    kinesis.create_stream(StreamName="et-unit-features", ShardCount=1)
    records = [("SPX", b"a"), ("IXIC", b"b"), ("SPX", b"c")]
    KinesisPublisher(kinesis, settings=SETTINGS, aggregate=False).put("features", records)
    shard = kinesis.list_shards(StreamName="et-unit-features")["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(StreamName="et-unit-features", ShardId=shard,
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    response = kinesis.get_records(ShardIterator=it)
    assert [(r["PartitionKey"], r["Data"]) for r in response["Records"]] == records

    publisher = KinesisPublisher(kinesis, settings=SETTINGS)  # a key's messages share a record
    publisher.put("features", records)
    got = kinesis.get_records(ShardIterator=response["NextShardIterator"])["Records"]
    assert [(r["PartitionKey"], unpack(r["Data"]) or r["Data"]) for r in got] == [("SPX", [b"a", b"c"]), ("IXIC", b"b")]
    assert publisher.calls == 1


def test_a_backlog_of_one_key_takes_a_request_per_10_messages_in_order():
    client = FlakyKinesis(reject=set(), times=0)
    publisher = KinesisPublisher(client, settings=SETTINGS, sleep=lambda s: None)
    messages = [f"{{\"n\":{i}}}".encode() for i in range(500)]
    publisher.put("features", [("SPX", m) for m in messages])
    assert publisher.calls == 50 and all(len(call) == 1 for call in client.calls)
    assert [m for call in client.calls for m in unpack(call[0])] == messages


def test_resend_failed_retries_a_failed_call_and_caps_the_backoff():
    from botocore.exceptions import EndpointConnectionError
    from ensemble_trader.adapters.aws._retry import resend_failed

    calls, sleeps = [], []

    def send(pending):
        calls.append(list(pending))
        if len(calls) == 1:
            raise EndpointConnectionError(endpoint_url="http://x")
        return [e for e in pending if e == "b" and len(calls) < 4], "b throttled"

    left, why = resend_failed(send, ["a", "b"], max_attempts=5, base_delay_s=1.0, max_delay_s=2.0, sleep=sleeps.append)
    assert (left, why) == ([], "")
    assert calls == [["a", "b"], ["a", "b"], ["b"], ["b"]]  # the whole call again, then only the rejected entry
    assert len(sleeps) == 3 and all(0.5 <= s <= 2.0 for s in sleeps) and sleeps[2] >= 1.0  # 4 s capped at 2
    left, why = resend_failed(lambda p: (p, "still"), ["x"], max_attempts=2, base_delay_s=0.0, sleep=lambda s: None)
    assert (left, why) == (["x"], "still")


class RaisingKinesis:
    """A Kinesis client whose every PutRecords raises ``exc``; counts the calls."""

    def __init__(self, exc: Exception) -> None:
        self.exc, self.calls = exc, 0

    def put_records(self, StreamName, Records):  # noqa: N803 (boto3's names)
        self.calls += 1
        raise self.exc


def test_missing_credentials_fail_at_once_without_retries():
    from botocore.exceptions import ClientError, NoCredentialsError

    sleeps: list[float] = []
    client = RaisingKinesis(NoCredentialsError())
    with pytest.raises(InfrastructureError, match="misconfigured.*NoCredentialsError"):
        KinesisPublisher(client, settings=SETTINGS, sleep=sleeps.append).put("features", [("A", b"0")])
    assert client.calls == 1 and sleeps == []
    denied = ClientError({"Error": {"Code": "UnrecognizedClientException", "Message": "bad token"}}, "PutRecords")
    client = RaisingKinesis(denied)
    with pytest.raises(InfrastructureError, match="UnrecognizedClientException"):
        KinesisPublisher(client, settings=SETTINGS, sleep=sleeps.append).put("features", [("A", b"0")])
    assert client.calls == 1 and sleeps == []
    # a throttled call is still retried
    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "PutRecords")
    client = RaisingKinesis(throttled)
    with pytest.raises(InfrastructureError, match="still failing after 3 attempts"):
        KinesisPublisher(client, settings=SETTINGS, max_attempts=3, sleep=sleeps.append).put("features", [("A", b"0")])
    assert client.calls == 3 and len(sleeps) == 2


# ---- SQS -------------------------------------------------------------------------------------


def test_fifo_publisher_and_dead_letter_writer(aws):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1")
    fifo = sqs.create_queue(QueueName="et-unit-order-intents.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    dlq = sqs.create_queue(QueueName="et-unit-features-dlq")["QueueUrl"]
    SqsPublisher(sqs, settings=SETTINGS).send(
        "order-intents", [("SPX", f"id-{i}", f'{{"n": {i}}}'.encode()) for i in range(23)] + [("SPX", "id-0", b"dup")]
    )
    bodies = []
    while True:
        msgs = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10,
                                   MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not msgs:
            break
        bodies += [json.loads(m["Body"])["n"] for m in msgs]
        assert all(m["Attributes"]["MessageGroupId"] == "SPX" for m in msgs)
        sqs.delete_message_batch(QueueUrl=fifo, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                         for i, m in enumerate(msgs)])
    assert bodies == list(range(23))  # in order, the duplicate deduplication id dropped

    SqsDeadLetterWriter("features-dlq", sqs, settings=SETTINGS, source="features").send({"k": 1}, "bad: x=1")
    (msg,) = sqs.receive_message(QueueUrl=dlq)["Messages"]
    body = json.loads(msg["Body"])
    assert body["reason"] == "bad: x=1" and body["record"] == {"k": 1} and body["source"] == "features"


class PickySqs:
    """Rejects bodies in ``sender_fault`` permanently and bodies in ``busy`` on the first call."""

    def __init__(self, sender_fault: set[str], busy: set[str] = frozenset()) -> None:
        self.sender_fault, self.busy, self.calls = sender_fault, busy, []

    def get_queue_url(self, QueueName):  # noqa: N803 (boto3's names)
        return {"QueueUrl": f"https://sqs/{QueueName}"}

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 (boto3's names)
        self.calls.append([e["MessageBody"] for e in Entries])
        failed = [{"Id": e["Id"], "SenderFault": True, "Code": "InvalidParameterValue", "Message": "too long"}
                  for e in Entries if e["MessageBody"] in self.sender_fault]
        if len(self.calls) == 1:
            failed += [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"}
                       for e in Entries if e["MessageBody"] in self.busy]
        ok = [{"Id": e["Id"]} for e in Entries if e["Id"] not in {f["Id"] for f in failed}]
        return {"Successful": ok, "Failed": failed}


def test_sqs_sender_fault_is_a_data_error_and_is_not_retried():
    client = PickySqs(sender_fault={"bad"}, busy={"slow"})
    publisher = SqsPublisher(client, settings=SETTINGS, sleep=lambda s: None)
    with pytest.raises(DataError, match="rejected 1 of 3 messages as the sender's fault: InvalidParameterValue"):
        publisher.send("features-dlq", [("g", "1", b"ok"), ("g", "2", b"bad"), ("g", "3", b"slow")])
    assert client.calls == [["ok", "bad", "slow"], ["slow"]]  # the transient one retried, the bad one not
    client = PickySqs(sender_fault=set(), busy={"slow"})
    SqsPublisher(client, settings=SETTINGS, sleep=lambda s: None).send("features-dlq", [("g", "1", b"slow")])
    assert client.calls == [["slow"], ["slow"]]


def test_dead_letter_redelivery_is_stored_once_on_a_fifo_queue(aws):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="et-unit-orders-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    writer = SqsDeadLetterWriter("orders-dlq", sqs, settings=SETTINGS, source="orders")
    writer.send({"k": 1}, "bad: x=1")
    writer.send({"k": 1}, "bad: x=1")  # the same record redelivered: same deduplication id
    writer.send({"k": 2}, "bad: x=1")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["record"] for m in got] == [{"k": 1}, {"k": 2}]


def test_dead_letter_body_keeps_any_record_kind():
    class M(BaseModel):
        a: int

    assert json.loads(dead_letter_body(M(a=1), "r"))["record"] == {"a": 1}
    assert json.loads(dead_letter_body(b"\xff\x00", "r"))["record_base64"] == "/wA="
    huge = json.loads(dead_letter_body("x" * 300_000, "r"))
    assert huge["truncated"] and huge["record_truncated"].startswith('"xxx') and len(huge["record_truncated"]) > 190_000


@pytest.mark.parametrize(
    "record",
    [{"a": ["x"] * 60_000}, {"messageId": "m", "body": json.dumps({"k": ["v"] * 40_000})}, "é" * 150_000],
    ids=["quotes", "json-in-json", "non-ascii"],
)
def test_a_dead_letter_always_fits_the_queue(record):
    """The kept text is escaped again inside the body (quotes, backslashes, \\uXXXX): the letter is
    cut until its encoded size fits, and a reason quoting thousands of bad fields is cut too."""
    body = dead_letter_body(record, "bad field " * 200_000)
    assert len(body.encode()) <= 200 * 1024
    doc = json.loads(body)
    assert doc["truncated"] and len(doc["record_truncated"]) > 20_000
    assert doc["reason"].startswith("bad field") and doc["reason"].endswith("more characters)")


def test_an_sqs_message_over_the_size_limit_is_a_data_error_sent_nowhere():
    client = PickySqs(sender_fault=set(), busy=set())
    with pytest.raises(DataError, match=r"message 'd-2' is 262,145 bytes, over the 262,144-byte limit"):
        SqsPublisher(client, settings=SETTINGS, sleep=lambda s: None).send(
            "features-dlq", [("g", "d-1", b"ok"), ("g", "d-2", b"x" * (256 * 1024 + 1))])
    assert client.calls == []


def test_a_request_aws_refuses_as_malformed_is_a_data_error_and_a_missing_stream_is_not_retried():
    from botocore.exceptions import ClientError, ParamValidationError

    sleeps: list[float] = []
    for exc in (ClientError({"Error": {"Code": "ValidationException", "Message": "too big"}}, "PutRecords"),
                ParamValidationError(report="Invalid length for parameter Records[0].Data")):
        client = RaisingKinesis(exc)
        with pytest.raises(DataError, match=r"^Kinesis PutRecords to \S*features\S*: request refused, not retried"):
            KinesisPublisher(client, settings=SETTINGS, sleep=sleeps.append).put("features", [("A", b"0")])
        assert client.calls == 1 and sleeps == []
    client = RaisingKinesis(ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no stream"}}, "PutRecords"))
    with pytest.raises(InfrastructureError, match=r"no such resource \(is the name right.*ResourceNotFoundException"):
        KinesisPublisher(client, settings=SETTINGS, sleep=sleeps.append).put("features", [("A", b"0")])
    assert client.calls == 1 and sleeps == []


# ---- EventBridge -----------------------------------------------------------------------------


class Evt(BaseModel):
    symbol: str
    n: int


class FlakyEvents:
    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def put_events(self, Entries):  # noqa: N803
        self.calls.append(Entries)
        results = [{"ErrorCode": "ThrottlingException", "ErrorMessage": "x"} if len(self.calls) == 1 and i == 3
                   else {"EventId": "e"} for i, _ in enumerate(Entries)]
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


def test_eventbridge_chunks_by_ten_and_retries_failed_entries():
    client = FlakyEvents()
    EventBridgePublisher(client, settings=SETTINGS, sleep=lambda s: None).publish([Evt(symbol="S", n=i) for i in range(12)])
    assert [len(c) for c in client.calls] == [10, 1, 2]
    assert json.loads(client.calls[1][0]["Detail"]) == {"symbol": "S", "n": 3}
    entry = client.calls[0][0]
    assert entry["Source"] == "ensemble-trader" and entry["DetailType"] == "Evt"
    assert entry["EventBusName"] == "et-unit-events"


def test_eventbridge_batches_stay_under_256_kb():
    class Big(BaseModel):
        blob: str

    client = FlakyEvents()
    client.calls.append([])  # no injected failure
    publisher = EventBridgePublisher(client, settings=SETTINGS, sleep=lambda s: None)
    publisher.publish([Big(blob="x" * 100_000) for _ in range(5)])
    assert [len(c) for c in client.calls[1:]] == [2, 2, 1]
    with pytest.raises(DataError, match="at most 262144"):
        publisher.publish([Big(blob="x" * 300_000)])


# ---- DynamoDB --------------------------------------------------------------------------------


@pytest.fixture(params=["dynamodb", "memory"])
def store(request, aws):
    if request.param == "memory":
        return MemoryKeyValueStore()
    import boto3

    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(TableName="et-unit-stage-state", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}])
    return DynamoKeyValueStore(ddb, settings=SETTINGS)


def test_versioned_puts_detect_a_lost_race(store):
    key = {"pk": "features", "sk": "SPX"}
    item = {**key, "version": 1, "state": b"\x00\x01", "x": 0.1, "n": [1, 2.5], "none": None}
    store.put_item("stage-state", item, expected_version=0)
    assert store.get_item("stage-state", key) == item
    with pytest.raises(ConcurrencyError):
        store.put_item("stage-state", {**key, "version": 1}, expected_version=0)
    store.put_item("stage-state", {**key, "version": 2}, expected_version=1)
    with pytest.raises(ConcurrencyError):
        store.put_item("stage-state", {**key, "version": 2}, expected_version=1)
    assert store.get_item("stage-state", {"pk": "features", "sk": "NONE"}) is None


def test_batch_puts_write_every_row_once(store):
    rows = [{"pk": "regime", "sk": f"S{i:03d}", "version": 0, "p": i / 10} for i in range(60)]
    store.put_items("stage-state", rows + [{**rows[0], "p": 9.5}])  # a repeated key: last one wins
    assert store.get_item("stage-state", {"pk": "regime", "sk": "S059"})["p"] == 5.9
    assert store.get_item("stage-state", {"pk": "regime", "sk": "S000"})["p"] == 9.5


def test_versions_of_many_keys_in_their_order_with_zero_for_absent_items(store):
    rows = [{"pk": "features", "sk": f"S{i:03d}", "version": i + 1, "state": b"x"} for i in range(130)]
    store.put_items("stage-state", rows)
    keys = [{"pk": "features", "sk": f"S{i:03d}"} for i in range(129, -1, -1)]  # 130 keys: two calls
    keys.insert(5, {"pk": "features", "sk": "NONE"})
    versions = store.get_versions("stage-state", keys)
    assert versions[5] == 0 and versions[:5] == [130, 129, 128, 127, 126] and versions[-1] == 1
    assert store.get_versions("stage-state", []) == []


def test_dynamo_rejects_non_finite_numbers(aws):
    with pytest.raises(DataError, match="x=nan"):
        from ensemble_trader.adapters.aws.dynamodb import serialize_item

        serialize_item({"x": float("nan")})


def test_numbers_beyond_dynamodbs_range_are_refused_or_flushed_alike_by_the_store_and_its_fake(store):
    """DynamoDB holds magnitudes 1e-130 .. <1e126 and 38 digits: an EWMA volatility after ten
    thousand unchanged closes (~1e-131) made it answer 'Number underflow' and fail the batch."""
    key = {"pk": "regime", "sk": "FLAT"}
    store.put_item("stage-state", {**key, "version": 1, "vol": 9.86e-131, "v": [-1e-200, 1e-130]})
    assert store.get_item("stage-state", key)["vol"] == 0
    assert store.get_item("stage-state", key)["v"] == [0, 1e-130]
    with pytest.raises(DataError, match=r"store vol=1e\+126: numbers must be below 1e126"):
        store.put_item("stage-state", {**key, "version": 2, "vol": 1e126})
    with pytest.raises(DataError, match="integer n of 39 digits"):
        store.put_items("stage-state", [{**key, "version": 2, "n": 10**38}])
    assert store.get_item("stage-state", key)["version"] == 1  # nothing written by either


def test_dynamo_unreachable_table_is_an_infrastructure_error(aws):
    import boto3

    store = DynamoKeyValueStore(boto3.client("dynamodb", region_name="us-east-1"), settings=SETTINGS)
    with pytest.raises(InfrastructureError, match="et-unit-decisions"):
        store.get_item("decisions", {"symbol": "S", "timestamp": "t"})


# ---- S3 and Redis ----------------------------------------------------------------------------


def test_s3_model_store(aws):
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="et-unit-model-registry")
    store = S3ModelStore(s3, settings=SETTINGS, prefix="agents")
    store.write("v1/manifest.json", b"{}")
    assert store.read("v1/manifest.json") == b"{}" and store.list("v1/") == ["v1/manifest.json"]
    with pytest.raises(ModelArtifactError, match="agents/v2/x.onnx"):
        store.read("v2/x.onnx")


def test_s3_model_store_replace_is_a_conditional_write(aws):
    """replace() writes only over the content the caller read: S3 refuses the put (412) when
    another writer changed the object between the adapter's read and its write."""
    import boto3
    from ensemble_trader.domain.errors import ConcurrencyError

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="et-unit-model-registry")
    store = S3ModelStore(s3, settings=SETTINGS, prefix="regime")
    store.replace("current.json", b"v1", None)  # absent, as expected
    with pytest.raises(ConcurrencyError, match="changed since it was read"):
        store.replace("current.json", b"v2", None)  # it exists now
    store.replace("current.json", b"v2", b"v1")
    with pytest.raises(ConcurrencyError, match="changed since it was read"):
        store.replace("current.json", b"v3", b"v1")
    assert store.read("current.json") == b"v2"

    real_put = s3.put_object

    def operator_first(**kwargs):  # another writer lands between the adapter's read and its write
        real_put(Bucket=kwargs["Bucket"], Key=kwargs["Key"], Body=b"operator")
        return real_put(**kwargs)

    s3.put_object = operator_first
    with pytest.raises(ConcurrencyError, match="changed while it was written"):
        store.replace("current.json", b"v3", b"v2")
    s3.put_object = real_put
    assert store.read("current.json") == b"operator"


def test_redis_cache_round_trip_and_prefix():
    client = fakeredis.FakeRedis()
    cache = RedisCache(client, prefix="local:", ttl_seconds=60)
    cache.set_many({"a": b"1", "b": b"2"})
    assert cache.get_many(["a", "missing", "b"]) == [b"1", None, b"2"]
    assert client.get("local:a") == b"1" and 0 < client.ttl("local:a") <= 60
    cache.delete("a")
    assert cache.get("a") is None


def test_redis_errors_become_infrastructure_errors():
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = RedisCache(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)))
    with pytest.raises(InfrastructureError, match="GET of 1 keys"):
        dead.get_many(["a"])
    with pytest.raises(InfrastructureError, match="SET"):
        dead.set_many({"a": b"1"})


def test_replay_paces_the_feed_and_spreads_injected_records():
    from ensemble_trader.adapters.memory import MemoryStreamPublisher
    from ensemble_trader.cli.feed import replay_bars
    from ensemble_trader.marketdata import load_arch

    publisher, naps, now = MemoryStreamPublisher(), [], [0.0]

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds

    series = [load_arch("sp500")[:300], load_arch("nasdaq")[:300]]
    result = replay_bars(series, publisher, "market-data", rate=250, inject=[("X", b"1"), ("X", b"2")],
                         sleep=sleep, clock=lambda: now[0])
    sent = publisher.streams["market-data"]
    assert result.bars == len(sent) == 602
    assert [i for i, (k, _) in enumerate(sent) if k == "X"] == [200, 401]  # spread through the feed
    # 250 bars a second, in one-second chunks, each sent when its first bar is due
    assert naps == pytest.approx([1.0, 1.0])
    assert result.seconds == pytest.approx(500 / 250)  # the last chunk goes at 2 s; nothing waits after it
    naps.clear()
    replay_bars([load_arch("sp500")[:1]], MemoryStreamPublisher(), "market-data", rate=0.001, sleep=sleep,
                clock=lambda: now[0])
    assert naps == []  # one bar at a thousandth of a bar a second: sent, no 1,000 s wait after it
