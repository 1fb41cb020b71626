"""Retries bounded by the Lambda invocation's deadline (runtime/deadline.py, the botocore guard of
adapters/aws/clients.py, the publishers' and stores' own retry loops, the orders reserve).

Time is a fake clock: attempts and back-offs advance it, so the tests count attempts and sleeps
instead of timing anything. Without a deadline, or with time to spare, every retry loop must make
the same attempts and sleep the same back-offs as before the deadline existed.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from ensemble_trader.adapters.aws._retry import backoff_delay
from ensemble_trader.adapters.aws.clients import DEFAULT_CONFIG, attempt_seconds, bound_by_deadline
from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore
from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
from ensemble_trader.adapters.aws.sqs import SqsPublisher
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.models import Bar, Message, Order
from ensemble_trader.domain.risk import RiskState
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime import deadline
from ensemble_trader.runtime.deadline import (
    DeadlineExceededError,
    invocation_deadline,
    pause,
    require,
    time_left,
)
from ensemble_trader.runtime.orders import MIN_TIME_LEFT_MS, BatchingOrdersStore
from ensemble_trader.runtime.settings import Settings
from ensemble_trader.runtime.stage import BaseSymbolStep, KinesisStageRunner, StageStats, StreamSink
from pydantic import AwareDatetime, BaseModel

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused")
ATTEMPT_S = attempt_seconds(DEFAULT_CONFIG)  # 7.5 s: connect 2 + read 5 + 0.5
T0 = datetime(2024, 1, 2, tzinfo=UTC)


class FakeClock:
    """``time.monotonic`` for one test: ``sleep`` advances it and is recorded as
    ``(seconds left to the deadline when it started, seconds slept)``."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[tuple[float | None, float]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append((time_left(), seconds))
        self.now += seconds


class Context:
    """Lambda's context object, as far as the deadline reads it."""

    def __init__(self, left_s: float):
        self.left_ms = int(round(left_s * 1000))

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms


class Ping(BaseModel):
    n: int


# ---- the deadline itself -------------------------------------------------------------------


def test_outside_an_invocation_there_is_no_deadline_and_nothing_is_refused():
    clock = FakeClock()
    assert deadline.current() is None and time_left() is None
    require("anything", 1e9)  # no deadline: never refused
    pause(0.25, "a back-off", then_needed_s=1e9, sleep=clock.sleep)
    assert clock.sleeps == [(None, 0.25)]


def test_the_deadline_is_the_contexts_remaining_time_and_ends_with_its_block():
    clock = FakeClock()
    with invocation_deadline(Context(30.0), clock=clock) as held:
        assert held is not None and time_left() == pytest.approx(30.0)
        clock.now += 1.5
        assert time_left() == pytest.approx(28.5)
        with invocation_deadline(Context(60.0), clock=clock):  # a nested block cannot extend it
            assert time_left() == pytest.approx(28.5)
        with invocation_deadline(Context(10.0), clock=clock):  # nor shorten the outer one for good
            assert time_left() == pytest.approx(10.0)
        assert time_left() == pytest.approx(28.5)
    assert time_left() is None
    with invocation_deadline(None) as held:  # a handler called by hand, without a context
        assert held is None and time_left() is None
    with pytest.raises(TypeError, match="get_remaining_time_in_millis"):
        with invocation_deadline(object()):
            pass


def test_a_back_off_the_deadline_cannot_hold_is_refused_before_it_is_slept():
    clock = FakeClock()
    with invocation_deadline(Context(1.0), clock=clock):
        pause(0.4, "risk-state save", then_needed_s=0.5, sleep=clock.sleep)  # 0.9 s of 1.0: slept
        with pytest.raises(DeadlineExceededError) as caught:
            pause(0.4, "risk-state save", then_needed_s=0.5, sleep=clock.sleep)  # 0.9 s of 0.6: not
    assert [s for _, s in clock.sleeps] == [0.4]
    assert str(caught.value) == (
        "risk-state save: stopped with 0.60 s of the invocation left, under the 0.90 s the back-off "
        "(0.40 s) and the next attempt (0.50 s) could take"
    )
    assert isinstance(caught.value, InfrastructureError)  # callers treat it as any infrastructure failure


# ---- botocore's own retries (a real client, canned HTTP answers) -------------------------------


class Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


THROTTLED = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
                        "message": "Rate of requests exceeds the allowed throughput."}).encode()


class Answers:
    """A ``before-send`` handler answering a client's attempts without a network: DynamoDB's
    ThrottlingException while ``throttled(clock)`` holds, else ``ok`` (JSON). Each attempt takes
    ``cost`` seconds of the fake clock; ``attempts`` counts them (by operation)."""

    def __init__(self, clock: FakeClock, throttled, ok=b"{}", cost: float = 0.0):
        self.clock, self.throttled, self.ok, self.cost = clock, throttled, ok, cost
        self.attempts: list[str] = []

    def __call__(self, request, event_name, **_):
        self.attempts.append(event_name.rsplit(".", 1)[-1])
        self.clock.now += self.cost
        if self.throttled(self.clock):
            return AWSResponse(request.url, 400, {"x-amzn-RequestId": "r"}, Raw(THROTTLED))
        return AWSResponse(request.url, 200, {"x-amzn-RequestId": "r"}, Raw(self.ok))


def _client(service: str, answers: Answers, *, guarded: bool = True, config: Config = DEFAULT_CONFIG):
    client = boto3.session.Session().client(
        service, region_name="us-east-1", endpoint_url="http://127.0.0.1:9", config=config,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    if guarded:
        bound_by_deadline(client)
    client.meta.events.register(f"before-send.{client.meta.service_model.service_id.hyphenize()}", answers)
    return client


@pytest.fixture()
def clock(monkeypatch) -> FakeClock:
    """The fake clock, which botocore's retry sleep (``time.sleep`` in botocore.endpoint) advances."""
    fake = FakeClock()
    monkeypatch.setattr(time, "sleep", fake.sleep)
    return fake


def _put(client) -> None:
    client.put_item(TableName="t", Item={"k": {"S": "a"}})


def test_botocore_retries_throttling_exactly_as_without_the_guard(clock):
    """Throttled three times, then accepted: 4 attempts and the same 3 back-offs with the guard
    (outside an invocation and with time to spare) as without it."""
    runs = []
    for guarded, left in ((False, None), (True, None), (True, 30.0)):
        clock.sleeps.clear()
        answers = Answers(clock, throttled=lambda c, a=[]: a.append(1) or len(a) <= 3)
        client = _client("dynamodb", answers, guarded=guarded)
        random.seed(11)
        if left is None:
            _put(client)
        else:
            with invocation_deadline(Context(left), clock=clock):
                _put(client)
        runs.append((len(answers.attempts), [s for _, s in clock.sleeps]))
    assert runs[0][0] == 4 and len(runs[0][1]) == 3
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_botocore_starts_no_attempt_the_deadline_cannot_hold(clock):
    answers = Answers(clock, throttled=lambda c: False)
    client = _client("dynamodb", answers)
    with invocation_deadline(Context(ATTEMPT_S - 0.1), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            _put(client)
    assert answers.attempts == [] and clock.sleeps == []  # refused, and not retried by botocore
    assert str(caught.value) == (
        "DynamoDB PutItem (attempt not started): stopped with 7.40 s of the invocation left, under the "
        "7.50 s one attempt can take (connect 2 s + read 5 s + 0.5 s)"
    )


def test_botocore_retries_no_attempt_the_deadline_cannot_hold(clock):
    """Attempts of 3 s, 12 s left: the first throttled attempt is retried (9 s left, its back-off
    at most 1 s); after the second less than one attempt is left, so no back-off is slept and the
    call ends with DeadlineExceededError naming the throttling."""
    answers = Answers(clock, throttled=lambda c: True, cost=3.0)
    client = _client("dynamodb", answers)
    random.seed(3)
    with invocation_deadline(Context(12.0), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            _put(client)
    assert answers.attempts == ["PutItem", "PutItem"] and len(clock.sleeps) == 1
    assert str(caught.value).startswith("DynamoDB PutItem: not retried after attempt 2 (ThrottlingException")
    assert "another attempt (connect 2 s + read 5 s + 0.5 s) could take" in str(caught.value)


def test_botocore_sleeps_no_back_off_past_the_deadline(clock):
    """A client whose attempt takes at most 0.7 s, 0.9 s left: after a throttled attempt botocore
    may sleep up to 1 s before its retry, past the deadline: refused before the sleep."""
    answers = Answers(clock, throttled=lambda c: True)
    small = Config(connect_timeout=0.1, read_timeout=0.1, retries={"max_attempts": 3, "mode": "standard"})
    client = _client("dynamodb", answers, config=small)
    with invocation_deadline(Context(0.9), clock=clock):
        with pytest.raises(DeadlineExceededError, match=r"not retried after attempt 1 \(ThrottlingException.*under the "
                                                        r"1\.70 s botocore's back-off before the retry \(1\.00 s"):
            _put(client)
    assert answers.attempts == ["PutItem"] and clock.sleeps == []


def test_botocore_sleeps_no_back_off_after_which_no_attempt_fits(clock):
    """9 s left, throttled: after the first attempt a back-off of up to 1 s leaves 8 s (retried);
    after the second (up to 2 s) it could leave under 7.5 s: refused before the sleep, naming the
    throttling — not slept, then refused by before-send as 'attempt not started'."""
    answers = Answers(clock, throttled=lambda c: True, cost=0.02)
    client = _client("dynamodb", answers)
    random.seed(5)
    with invocation_deadline(Context(9.0), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            _put(client)
    assert answers.attempts == ["PutItem", "PutItem"] and len(clock.sleeps) == 1
    assert str(caught.value).startswith("DynamoDB PutItem: not retried after attempt 2 (ThrottlingException")
    for left, slept in clock.sleeps:
        assert left - slept >= ATTEMPT_S


# ---- the publishers' own retries (fake clients) ----------------------------------------------


class FlakyEvents:
    """PutEvents failing every entry ``failures`` times, then accepting; each call takes ``cost``
    seconds of the fake clock."""

    def __init__(self, clock: FakeClock, failures: int, cost: float = 0.0):
        self.clock, self.failures, self.cost, self.calls = clock, failures, cost, 0

    def put_events(self, Entries):  # noqa: N803 - botocore's parameter name
        self.calls += 1
        self.clock.now += self.cost
        if self.calls <= self.failures:
            return {"FailedEntryCount": len(Entries),
                    "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}] * len(Entries)}
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(i)} for i in range(len(Entries))]}


def _ride(left_s: float | None, failures: int = 3, seed: int = 7) -> tuple[int, list[tuple[float | None, float]]]:
    clock = FakeClock()
    client = FlakyEvents(clock, failures)
    publisher = EventBridgePublisher(client, settings=SETTINGS, sleep=clock.sleep)
    random.seed(seed)
    if left_s is None:
        publisher.publish([Ping(n=1)])
    else:
        with invocation_deadline(Context(left_s), clock=clock):
            publisher.publish([Ping(n=1)])
    return client.calls, clock.sleeps


def test_throttling_is_ridden_through_the_same_with_or_without_a_deadline():
    calls, sleeps = _ride(None)
    random.seed(7)
    expected = [backoff_delay(0.05, attempt) for attempt in (1, 2, 3)]  # what the loop always slept
    assert calls == 4 and [s for _, s in sleeps] == expected
    assert _ride(30.0) == (4, [(pytest.approx(30.0 - sum(expected[:i])), s) for i, s in enumerate(expected)])


def test_with_little_time_no_back_off_crosses_the_deadline_and_no_call_starts_that_cannot_finish():
    """Back-offs of 0.5-1 s then 1-2 s, calls of 0.1 s, 9 s left: the first call (9 s >= 7.5) and
    the first back-off (at most 1 s, leaving >= 7.5) happen; the second call then ends with less
    than 2 s + 7.5 s left, so the second back-off is not slept and DeadlineExceededError names
    the entry still failing and the last error."""
    clock = FakeClock()
    client = FlakyEvents(clock, failures=10, cost=0.1)
    publisher = EventBridgePublisher(client, settings=SETTINGS, sleep=clock.sleep, base_delay_s=1.0)
    with invocation_deadline(Context(9.0), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            publisher.publish([Ping(n=1)])
    assert client.calls == 2  # not the 4 attempts it makes with time to spare
    assert len(clock.sleeps) == 1
    for left, slept in clock.sleeps:
        assert left - slept >= ATTEMPT_S  # every back-off left a whole attempt before the deadline
    error = caught.value
    assert str(error).startswith(
        "EventBridge PutEvents to et-unit-events: 1 of 1 entries still failing after 2 attempts "
        "(last error: ThrottlingException: Rate exceeded): stopped with "
    )
    assert "s of the invocation left, under the " in str(error) and error.left_s > 0
    assert [entry["DetailType"] for entry in error.failing] == ["Ping"]


def test_a_publisher_starts_no_call_with_less_than_one_attempt_left():
    clock = FakeClock()
    client = FlakyEvents(clock, failures=0)
    with invocation_deadline(Context(ATTEMPT_S - 0.1), clock=clock):
        with pytest.raises(DeadlineExceededError, match=r"1 of 1 entries still failing before its first attempt: "
                                                        r"stopped with 7\.40 s of the invocation left, under the "
                                                        r"7\.50 s one attempt can take"):
            EventBridgePublisher(client, settings=SETTINGS, sleep=clock.sleep).publish([Ping(n=1)])
    assert client.calls == 0


@pytest.mark.parametrize("publisher", ["kinesis", "sqs"])
def test_an_attempt_refused_by_botocores_guard_names_the_entries_still_failing(publisher):
    """The guard refuses an attempt inside the client's call: the publisher's error says how many
    entries of its batch still fail, and why — before its first attempt, as nothing was sent."""
    refusal = DeadlineExceededError("AWS call (attempt not started)", 3.0, ATTEMPT_S, "one attempt can take",
                                    attempt_started=False)

    class Refusing:
        def put_records(self, **_):
            raise refusal

        def send_message_batch(self, **_):
            raise refusal

        def get_queue_url(self, QueueName):  # noqa: N803
            return {"QueueUrl": f"https://sqs/{QueueName}"}

    with invocation_deadline(Context(20.0)):
        with pytest.raises(DeadlineExceededError) as caught:
            if publisher == "kinesis":
                KinesisPublisher(Refusing(), settings=SETTINGS).put("features", [("SPX", b"a"), ("NDX", b"b")])
            else:
                SqsPublisher(Refusing(), settings=SETTINGS).send("order-intents", [("SPX", "1", b"a"), ("NDX", "2", b"b")])
    assert "2 of 2 entries still failing before its first attempt (last error: AWS call (attempt not started)): " \
           "stopped with 3.00 s of the invocation left" in str(caught.value)
    assert len(caught.value.failing) == 2 and caught.value.__cause__ is refusal


# ---- the stores' own loops ------------------------------------------------------------------


def test_worker_threads_of_put_new_items_keep_to_the_invocations_deadline():
    """put_new_items runs its conditional puts on a thread pool: each sees the deadline."""
    seen: list[float | None] = []
    lock = threading.Lock()

    class Dynamo:
        def put_item(self, **_):
            with lock:
                seen.append(time_left())
            return {}

    store = DynamoKeyValueStore(Dynamo(), settings=SETTINGS)
    rows = [{"pk": "p", "sk": f"s{i}", "v": i} for i in range(4)]
    with invocation_deadline(Context(20.0)):
        store.put_new_items("stage-state", rows)
    assert len(seen) == 4 and all(left is not None and 0 < left <= 20.0 for left in seen)


class Unprocessing:
    """BatchWriteItem leaving every item unprocessed; TransactWriteItems canceled for a conflict."""

    def __init__(self) -> None:
        self.calls = 0

    def batch_write_item(self, RequestItems):  # noqa: N803 - botocore's parameter name
        self.calls += 1
        return {"UnprocessedItems": RequestItems}

    def transact_write_items(self, TransactItems):  # noqa: N803
        from botocore.exceptions import ClientError

        self.calls += 1
        raise ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                           "CancellationReasons": [{"Code": "TransactionConflict"}]}, "TransactWriteItems")


def test_a_stores_retry_loop_makes_its_attempts_without_a_deadline_and_no_back_off_past_one(clock):
    rows = [{"pk": "p", "sk": f"s{i}"} for i in range(3)]
    client = Unprocessing()
    with pytest.raises(InfrastructureError, match="3 items still unprocessed after 5 attempts"):
        DynamoKeyValueStore(client, settings=SETTINGS).put_items("stage-state", rows)
    assert client.calls == 5 and [s for _, s in clock.sleeps] == [0.05, 0.1, 0.2, 0.4]  # as always
    client, clock.sleeps[:] = Unprocessing(), []
    with invocation_deadline(Context(ATTEMPT_S + 0.04), clock=clock):  # the 0.05 s back-off and an attempt do not fit
        with pytest.raises(DeadlineExceededError, match=r"^DynamoDB batch_write_item et-unit-stage-state: 3 items "
                                                        r"still unprocessed after 1 attempt: stopped with 7\.54 s"):
            DynamoKeyValueStore(client, settings=SETTINGS).put_items("stage-state", rows)
    assert client.calls == 1 and clock.sleeps == []


def test_an_orders_transaction_conflict_is_not_retried_past_the_deadline():
    clock = FakeClock()
    client = Unprocessing()
    store = DynamoOrdersStore(client, settings=SETTINGS, sleep=clock.sleep)
    order = Order.model_validate({"client_order_id": "order-0001", "intent_id": "i-1", "strategy_id": "ensemble",
                                  "symbol": "SPX", "side": "BUY", "quantity": 1.0, "created_at": T0.isoformat(),
                                  "updated_at": T0.isoformat()})
    with invocation_deadline(Context(ATTEMPT_S), clock=clock):  # no back-off fits before another attempt
        with pytest.raises(DeadlineExceededError, match="transaction canceled for a conflict 1 time: stopped with"):
            store.create_order(order)
    assert client.calls == 1 and clock.sleeps == []


# ---- the orders batch end and its reserve ------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_the_batch_end_started_with_the_reserve_left_saves_and_publishes_through_throttling(clock, seed):
    """An intent started with MIN_TIME_LEFT_MS left and taking 1.5 s leaves the batch end its
    risk-state save — throttled for its first 2 s, ridden through by botocore's retries — and
    the PutEvents call before it, each attempt starting with a whole attempt's time left."""
    throttled_from: list[float] = []  # the batch end's start: throttled for 2 s from then
    dynamo_answers = Answers(clock, throttled=lambda c: bool(throttled_from) and c.now < throttled_from[0] + 2.0,
                             cost=0.02)
    events_answers = Answers(clock, throttled=lambda c: False, cost=0.02,
                             ok=json.dumps({"FailedEntryCount": 0, "Entries": [{"EventId": "e"}]}).encode())
    store = BatchingOrdersStore(DynamoOrdersStore(_client("dynamodb", dynamo_answers), settings=SETTINGS))
    events = EventBridgePublisher(_client("events", events_answers), settings=SETTINGS, sleep=clock.sleep)
    random.seed(seed)
    store.save_risk_state(store.load_risk_state())  # what the batch's intents changed
    start = clock.now
    throttled_from.append(start)
    with invocation_deadline(Context(MIN_TIME_LEFT_MS / 1000 - 1.5), clock=clock):
        events.publish([Ping(n=1)])  # the batch end, as OrderRouter.batch runs it
        store.flush()
    assert store.unsaved() is None
    assert dynamo_answers.attempts[-1] == "UpdateItem" and events_answers.attempts == ["PutEvents"]
    assert clock.now - start >= 2.0  # it was throttled until then


def _router_batch_end(clock: FakeClock, *, dynamo_throttled, events_throttled):
    """An OrderRouter over a DynamoDB orders store and an EventBridge publisher answered by
    ``Answers``; returns the router and the two answer recorders."""
    from ensemble_trader.runtime.orders import OrderRouter

    dynamo = Answers(clock, throttled=dynamo_throttled, cost=0.02)
    events = Answers(clock, throttled=events_throttled, cost=0.02,
                     ok=json.dumps({"FailedEntryCount": 0, "Entries": [{"EventId": "e"}]}).encode())
    router = OrderRouter(DynamoOrdersStore(_client("dynamodb", dynamo), settings=SETTINGS), broker=None,
                         clock=lambda: T0, reconcile_on_start=False,
                         events=EventBridgePublisher(_client("events", events), settings=SETTINGS, sleep=clock.sleep))
    return router, dynamo, events


@pytest.mark.parametrize("seed", range(4))
def test_a_risk_state_save_refused_at_the_batch_end_does_not_take_its_events_with_it(clock, seed):
    """The batch end started with the reserve left, DynamoDB throttled for longer than the save
    can ride out: the save is refused once less than an attempt is left — which used to leave
    nothing for the PutEvents after it. The events go out first; the refused state is carried."""
    throttled_from: list[float] = []
    router, dynamo, events = _router_batch_end(
        clock, dynamo_throttled=lambda c: bool(throttled_from), events_throttled=lambda c: False)
    random.seed(seed)
    with invocation_deadline(Context(MIN_TIME_LEFT_MS / 1000 - 1.5), clock=clock):
        with pytest.raises(DeadlineExceededError, match="DynamoDB"):
            with router.batch():
                router.store.save_risk_state(router.store.load_risk_state())  # what the intents changed
                router._publish([Ping(n=1)])  # an event of the batch, held for its end
                throttled_from.append(clock.now)
    assert events.attempts == ["PutEvents"] and router._unpublished == []  # the event went out
    assert router._unsaved is not None  # the state waits for the next batch
    assert dynamo.attempts[-1] == "UpdateItem"


def test_an_unpublished_batch_end_still_saves_its_risk_state(clock):
    """EventBridge throttled past its retries: the events wait for the next batch, the save
    after them still runs, and the publish's error is raised."""
    router, dynamo, events = _router_batch_end(clock, dynamo_throttled=lambda c: False,
                                               events_throttled=lambda c: True)
    random.seed(1)
    with pytest.raises(InfrastructureError, match="EventBridge"):
        with router.batch():
            router.store.save_risk_state(router.store.load_risk_state())
            router._publish([Ping(n=1)])
    assert [type(e).__name__ for e in router._unpublished] == ["Ping"]  # sent first by the next batch
    assert router._unsaved is None and dynamo.attempts[-1] == "UpdateItem"  # saved


def test_a_batch_end_out_of_time_makes_no_more_saves_and_keeps_its_state_for_the_next_batch():
    """A save the deadline refused is not tried again (it was tried up to 8 times, each refused
    alike): the router carries the unsaved state to its next batch, as after any failure."""

    class Stalled:
        saves = 0

        def load_risk_state(self) -> RiskState:
            return RiskState()

        def save_risk_state(self, state: RiskState, *, write_kill_switch: bool = False) -> None:
            self.saves += 1
            raise DeadlineExceededError("DynamoDB UpdateItem (attempt not started)", 3.0, ATTEMPT_S)

    inner = Stalled()
    store = BatchingOrdersStore(inner)
    store.save_risk_state(store.load_risk_state())
    with invocation_deadline(Context(20.0)):
        with pytest.raises(DeadlineExceededError, match="DynamoDB UpdateItem"):
            store.flush()
    assert inner.saves == 1 and store.unsaved() is not None


# ---- the Kinesis stage runner out of time ------------------------------------------------------

OUT_OF_TIME = DeadlineExceededError("AWS call (attempt not started)", 2.0, ATTEMPT_S, "one attempt can take")


class Count(Message):
    symbol: str
    timestamp: AwareDatetime
    count: int


class CountStep(BaseSymbolStep[dict, Bar]):
    name = "count"
    input_model = Bar

    def new_state(self, symbol: str) -> dict:
        return {"last": None, "count": 0}

    def load(self, data: bytes) -> dict:
        return json.loads(data)

    def dump(self, state: dict) -> bytes:
        return json.dumps(state).encode()

    def sequence(self, state: dict) -> int | None:
        return state["last"]

    def apply(self, state: dict, bar: Bar):
        new = {"last": int(bar.timestamp.timestamp() * 1e9), "count": state["count"] + 1}
        return new, [Count(symbol=bar.symbol, timestamp=bar.timestamp, count=new["count"])], []


class OutOfTimeStore(MemoryKeyValueStore):
    """Snapshots whose reads (``get_item``) or writes (``put_item``) the deadline refuses once
    ``refuse`` names them; ``calls`` counts the refused calls."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: set[str] = set()
        self.calls = {"get_item": 0, "put_item": 0}

    def get_item(self, table, key):
        if "get_item" in self.refuse:
            self.calls["get_item"] += 1
            raise OUT_OF_TIME
        return super().get_item(table, key)

    def put_item(self, table, item, *, expected_version=None):
        if "put_item" in self.refuse:
            self.calls["put_item"] += 1
            raise OUT_OF_TIME
        return super().put_item(table, item, expected_version=expected_version)


class OutOfTimeStream:
    """A stream publisher the deadline refuses (as KinesisPublisher does when no attempt fits)."""

    def put(self, stream, records):
        raise DeadlineExceededError(f"Kinesis PutRecords to {stream}: {len(records)} of {len(records)} entries still "
                                    "failing before its first attempt", 2.0, ATTEMPT_S, "one attempt can take")


SYMBOLS = ("AAA", "BBB", "CCC", "DDD")


def _batch(first_seq: int = 1000, days: range = range(2)) -> dict:
    records = []
    for day in days:
        for symbol in SYMBOLS:
            close = 100.0 + day
            bar = {"symbol": symbol, "timestamp": (T0 + timedelta(days=day)).isoformat(), "open": close,
                   "high": close + 1, "low": close - 1, "close": close, "volume": 10.0}
            records.append(kinesis_record(json.dumps(bar).encode(), partition_key=symbol,
                                          sequence_number=str(first_seq + len(records)), stream="et-unit-in"))
    return kinesis_event(records)


def _runner(publisher, snapshots) -> KinesisStageRunner:
    return KinesisStageRunner(CountStep(), cache=MemoryCache(), dlq=MemoryDeadLetters(),
                              sink=StreamSink(publisher, "out"), snapshots=snapshots, stats=StageStats())


def _failed(response: dict) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_a_stage_batch_whose_publish_runs_out_of_time_reports_its_records_failed():
    snapshots = OutOfTimeStore()
    response = _runner(OutOfTimeStream(), snapshots).process(_batch())
    assert _failed(response) == [str(1000 + n) for n in range(8)]  # every record, for the mapping's retry
    for symbol in SYMBOLS:  # no state moved past the outputs that did not go out
        assert snapshots.get_item("stage-state", {"pk": "count", "sk": symbol}) is None


def test_a_stage_batch_out_of_time_for_its_snapshots_tries_no_more_of_them(caplog):
    """The first snapshot write the deadline refuses fails every symbol still unwritten at once
    (their writes would be refused alike), with one warning, and reports their records failed."""
    snapshots = OutOfTimeStore()
    snapshots.refuse.add("put_item")
    with caplog.at_level(logging.WARNING, logger="ensemble_trader.runtime.stage"):
        response = _runner(MemoryStreamPublisher(), snapshots).process(_batch())
    assert snapshots.calls["put_item"] == 1  # not one refused call (and warning) per symbol
    assert _failed(response) == [str(1000 + n) for n in range(8)]
    warnings = [r.getMessage() for r in caplog.records if "out of time" in r.getMessage()]
    assert len(warnings) == 1 and "failing 4 symbols (AAA, BBB, CCC, DDD)" in warnings[0]


def test_a_stage_batch_out_of_time_for_its_state_reads_tries_no_more_of_them(caplog):
    snapshots = OutOfTimeStore()
    snapshots.refuse.add("get_item")  # every state is a cache miss read from its snapshot
    publisher = MemoryStreamPublisher()
    with caplog.at_level(logging.WARNING, logger="ensemble_trader.runtime.stage"):
        response = _runner(publisher, snapshots).process(_batch())
    assert snapshots.calls["get_item"] == 1
    assert _failed(response) == [str(1000 + n) for n in range(8)] and publisher.streams.get("out", []) == []
    assert sum("out of time loading states" in r.getMessage() for r in caplog.records) == 1


# ---- the handlers enter the deadline -------------------------------------------------------------


class _Report:
    synced: list = []
    failures: dict = {}
    ok = True

    def as_dict(self) -> dict:
        return {}


def _stub(module, entry: str, seen: list, monkeypatch, seen_end: list | None = None) -> dict:
    """Replace what ``entry``'s handler calls with a recorder of the time left; return its event."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    def note(result):
        def record(*_, **__):
            seen.append(time_left())
            return result
        return record

    if entry in ("features/handler", "regime/handler", "meta_agent/handler"):
        monkeypatch.setattr(module, "runner", lambda: SimpleNamespace(process=note({"batchItemFailures": []})))
        return {"Records": []}
    if entry == "orders/handler":
        @contextmanager
        def batch():  # the batch end (events, risk-state save) must run under the deadline too
            yield
            ended.append(time_left())

        ended: list[float | None] = []
        seen_end[:] = [ended]
        service = SimpleNamespace(idempotency_config=SimpleNamespace(register_lambda_context=lambda context: None),
                                  router=SimpleNamespace(batch=batch))
        monkeypatch.setattr(module, "service", lambda: service)
        monkeypatch.setattr(module, "process_partial_response", note({"batchItemFailures": []}))
        # one SQS record: an empty batch is answered before the deadline is set (nothing to do)
        return {"Records": [{"messageId": "m-1", "eventSource": "aws:sqs", "body": "{}",
                             "attributes": {"MessageGroupId": "SPX"}}]}
    if entry == "orders/reconcile":
        from ensemble_trader.domain.risk import RiskState

        # the run also reads the risk state, under the deadline, to report the switch and breaker
        reads: list[float | None] = []
        seen_end[:] = [reads]
        store = SimpleNamespace(load_risk_state=lambda: reads.append(time_left()) or RiskState())
        monkeypatch.setattr(module, "router", lambda: SimpleNamespace(reconcile=note(_Report()), store=store))
        return {}
    if entry == "orders/kill_switch":
        result = {"active": True, "canceled": [], "applied": True, "trading_state": "ACTIVE", "ignored": ""}
        # the entry reads the router's clock and lead limit to refuse a command dated ahead
        stub = SimpleNamespace(apply_kill_switch=note(result), clock=SimpleNamespace(now=lambda: datetime(2024, 1, 2, tzinfo=UTC)),
                               limits=SimpleNamespace(max_intent_lead_seconds=300.0))
        monkeypatch.setattr(module, "router", lambda: stub)
        return {"version": "0", "id": "ev-1", "detail-type": "KillSwitch", "source": "ensemble-trader.control",
                "account": "123456789012", "time": "2024-01-02T00:00:00Z", "region": "us-east-1", "resources": [],
                "detail": {"active": True, "reason": "test"}}
    assert entry == "regime/refit"
    for target in ("ensemble_trader.adapters.aws.s3.S3ModelStore",
                   "ensemble_trader.adapters.aws.dynamodb.DynamoKeyValueStore",
                   "ensemble_trader.adapters.aws.eventbridge.EventBridgePublisher"):
        monkeypatch.setattr(target, lambda **_: None)
    monkeypatch.setattr(module, "run_refit", note({"published": False, "symbols": {}}))
    return {"time": "2024-01-02T00:00:00Z", "detail": {}}


@pytest.mark.parametrize("entry", ["features/handler", "regime/handler", "meta_agent/handler", "orders/handler",
                                   "orders/reconcile", "orders/kill_switch", "regime/refit"])
def test_every_handler_works_under_its_invocations_deadline(entry, monkeypatch):
    from ensemble_trader.local.events import FakeLambdaContext
    from ensemble_trader.local.functions import load_module

    module = load_module(*entry.split("/"), fresh=True)
    seen: list[float | None] = []
    seen_end: list = []
    event = _stub(module, entry, seen, monkeypatch, seen_end)
    module.lambda_handler(event, FakeLambdaContext(f"et-unit-{entry.replace('/', '-')}", timeout_seconds=12))
    # a deadline is set, and not above the context's 12 s (not a timing: a slow start is fine)
    assert len(seen) == 1 and seen[0] is not None and seen[0] <= 12.0
    if entry in ("orders/handler", "orders/reconcile"):  # its batch end / its state read runs under it too
        assert len(seen_end[0]) == 1 and seen_end[0][0] is not None
    assert time_left() is None  # and only while it runs
