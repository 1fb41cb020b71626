"""A deadline refusal says in a flag, not in its text, whether the attempt it refused was sent.

The AWS clients' guard (:mod:`ensemble_trader.adapters.aws.clients`) sets
``DeadlineExceededError.attempt_started`` False when ``before-send`` refuses an attempt (its
message still ends in ``(attempt not started)``, for people); the publishers' retry loop counts
attempts by the flag, and every re-wrapping, copy and pickle keeps it. The S3 and SQS adapters
lead the guard's refusal with the object or queue and the operation, as the DynamoDB stores do.
Real botocore clients answered without a network, on a fake clock (test_invocation_deadline's).
"""

from __future__ import annotations

import copy
import pickle

import pytest
from ensemble_trader.adapters.aws._retry import resend_failed
from ensemble_trader.adapters.aws.clients import DEFAULT_CONFIG, attempt_seconds
from ensemble_trader.adapters.aws.dynamodb import translate
from ensemble_trader.adapters.aws.s3 import S3ModelStore
from ensemble_trader.adapters.aws.sqs import SqsPublisher
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.deadline import DeadlineExceededError, invocation_deadline
from ensemble_trader.runtime.settings import Settings

from tests.unit import test_invocation_deadline as fake_aws
from tests.unit.test_invocation_deadline import Answers, Context

clock = fake_aws.clock  # the fake clock fixture, which botocore's retry sleep advances

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused", region="us-east-1")
ATTEMPT_S = attempt_seconds(DEFAULT_CONFIG)  # 7.5 s
REFUSED = ("stopped with 7.40 s of the invocation left, under the 7.50 s one attempt can take "
           "(connect 2 s + read 5 s + 0.5 s)")


# ---- the guard sets the flag -------------------------------------------------------------------


def test_the_guard_flags_an_attempt_it_refused_before_sending_it(clock):
    answers = Answers(clock, lambda c: False)
    client = fake_aws._client("dynamodb", answers)
    with invocation_deadline(Context(ATTEMPT_S - 0.1), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            client.put_item(TableName="t", Item={"k": {"S": "a"}})
    assert answers.attempts == []
    assert caught.value.attempt_started is False
    assert caught.value.what == "DynamoDB PutItem (attempt not started)"  # the text stays, for people


def test_the_guard_flags_a_retry_it_refused_after_an_attempt_as_started(clock):
    answers = Answers(clock, lambda c: True, cost=3.0)
    client = fake_aws._client("dynamodb", answers)
    with invocation_deadline(Context(9.0), clock=clock):
        with pytest.raises(DeadlineExceededError, match="not retried after attempt 1") as caught:
            client.put_item(TableName="t", Item={"k": {"S": "a"}})
    assert answers.attempts == ["PutItem"]
    assert caught.value.attempt_started is True


# ---- the retry loop counts by the flag, whatever the text says ---------------------------------


def _loop_error(refusal: DeadlineExceededError) -> DeadlineExceededError:
    def send(pending):
        raise refusal

    with pytest.raises(DeadlineExceededError) as caught:
        resend_failed(send, ["x", "y"], max_attempts=3, base_delay_s=0.01, sleep=lambda s: None, what="Batch to t")
    return caught.value


def test_the_retry_loop_counts_no_attempt_for_a_flagged_refusal_whatever_its_text():
    reworded = DeadlineExceededError("SQS SendMessageBatch refused before sending [guard]", 3.0, ATTEMPT_S,
                                     "one attempt can take", attempt_started=False)
    error = _loop_error(reworded)
    assert error.what == ("Batch to t: 2 of 2 entries still failing before its first attempt "
                          "(last error: SQS SendMessageBatch refused before sending [guard])")
    assert error.attempt_started is False and error.failing == ["x", "y"]


def test_the_retry_loop_counts_an_attempt_for_an_unflagged_refusal_even_with_the_old_marker():
    started = DeadlineExceededError("Kinesis PutRecords (attempt not started)", 3.0, ATTEMPT_S,
                                    "one attempt can take", attempt_started=True)
    error = _loop_error(started)
    assert error.what.startswith("Batch to t: 2 of 2 entries still failing after 1 attempt ")
    assert error.attempt_started is True


def test_the_retry_loops_own_refusal_before_an_attempt_says_it_was_not_started():
    """The loop checks the time left before each call it sends; refusing there sends nothing
    (the error carried the default, True, while its text said "before its first attempt")."""
    sent = []
    with invocation_deadline(Context(ATTEMPT_S - 1.0)):
        with pytest.raises(DeadlineExceededError) as caught:
            resend_failed(lambda pending: sent.append(pending) or ([], ""), ["x"], max_attempts=3,
                          base_delay_s=0.0, sleep=lambda s: None, what="Batch to t", attempt_s=ATTEMPT_S)
    assert sent == [] and caught.value.attempt_started is False
    assert caught.value.what == "Batch to t: 1 of 1 entries still failing before its first attempt"


# ---- re-wrapping, copies and pickles keep it ---------------------------------------------------


def _refusal() -> DeadlineExceededError:
    return DeadlineExceededError("DynamoDB BatchWriteItem (attempt not started)", 1.25, ATTEMPT_S,
                                 "one attempt can take", failing=["a", "b"], attempt_started=False)


def _fields(error: DeadlineExceededError) -> tuple:
    return (type(error), str(error), error.what, error.left_s, error.needed_s, error.needed_for, error.failing,
            error.attempt_started)


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e))],
                         ids=["copy", "deepcopy", "pickle"])
def test_copies_and_pickles_keep_every_attribute_and_the_flag(duplicate):
    refusal = _refusal()
    assert _fields(duplicate(refusal)) == _fields(refusal)


def test_translate_keeps_the_flag():
    named = translate(_refusal(), "DynamoDB batch_write_item et-unit-regimes")
    assert type(named) is DeadlineExceededError and named.attempt_started is False
    assert named.what == "DynamoDB batch_write_item et-unit-regimes: DynamoDB BatchWriteItem (attempt not started)"


# ---- S3 and SQS name the object or queue -------------------------------------------------------

S3_CASES = {
    "read": (lambda s: s.read("conservative.onnx"), "S3 get s3://models/agents/conservative.onnx", "GetObject"),
    "write": (lambda s: s.write("conservative.onnx", b"x"), "S3 put s3://models/agents/conservative.onnx",
              "PutObject"),
    "replace": (lambda s: s.replace("manifest.json", b"new", b"old"), "S3 get s3://models/agents/manifest.json",
                "GetObject"),
    "list": (lambda s: s.list("v1/"), "S3 list s3://models/agents/v1/", "ListObjectsV2"),
}


@pytest.mark.parametrize("name", list(S3_CASES))
def test_an_s3_call_the_guard_refused_names_the_object_and_the_operation(clock, name):
    call, what, operation = S3_CASES[name]
    answers = Answers(clock, lambda c: False)
    store = S3ModelStore(fake_aws._client("s3", answers), settings=SETTINGS, bucket="models", prefix="agents")
    with invocation_deadline(Context(ATTEMPT_S - 0.1), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            call(store)
    assert answers.attempts == []
    assert str(caught.value) == f"{what}: S3 {operation} (attempt not started): {REFUSED}"
    refusal = caught.value.__cause__
    assert isinstance(refusal, DeadlineExceededError) and isinstance(caught.value, InfrastructureError)
    assert (caught.value.left_s, caught.value.needed_s, caught.value.needed_for, caught.value.attempt_started) == (
        refusal.left_s, refusal.needed_s, refusal.needed_for, False)


def test_an_sqs_queue_lookup_the_guard_refused_names_the_queue_and_the_operation(clock):
    answers = Answers(clock, lambda c: False)
    publisher = SqsPublisher(fake_aws._client("sqs", answers), settings=SETTINGS)
    with invocation_deadline(Context(ATTEMPT_S - 0.1), clock=clock):
        with pytest.raises(DeadlineExceededError) as caught:
            publisher.send("order-intents", [("SPX", "1", b"a")])
    assert answers.attempts == []
    assert str(caught.value) == (f"SQS get_queue_url et-unit-order-intents.fifo: SQS GetQueueUrl (attempt not started): "
                                 f"{REFUSED}")
    assert caught.value.attempt_started is False and isinstance(caught.value.__cause__, DeadlineExceededError)
