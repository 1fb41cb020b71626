"""A batch call refused for the client's configuration names the call and its stream, bus or queue.

``resend_failed`` raised ``AWS client misconfigured, not retried (...)`` with no word of which
call failed. The message now leads with the caller's ``what`` -- the same text its deadline
refusals start with (``Kinesis PutRecords to <stream>``, ``EventBridge PutEvents to <bus>``,
``SQS SendMessageBatch to <queue>``); the type stays InfrastructureError and nothing is retried.
Real botocore clients answered by a Stubber: no network.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import NoCredentialsError
from botocore.stub import Stubber
from ensemble_trader.adapters.aws._retry import resend_failed
from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
from ensemble_trader.adapters.aws.sqs import SqsPublisher
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.deadline import DeadlineExceededError
from ensemble_trader.runtime.settings import Settings
from pydantic import BaseModel

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused", region="us-east-1")
QUEUE = "et-unit-order-intents.fifo"
QUEUE_URL = f"https://sqs.us-east-1.amazonaws.com/123456789012/{QUEUE}"


def _client(service: str):
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")  # noqa: S106 - a stubbed client's dummy keys


class Evt(BaseModel):
    symbol: str


def _kinesis(client, sleep):
    KinesisPublisher(client, settings=SETTINGS, sleep=sleep).put("features", [("SPX", b"0")])


def _eventbridge(client, sleep):
    EventBridgePublisher(client, settings=SETTINGS, sleep=sleep).publish([Evt(symbol="SPX")])


def _sqs(client, sleep):
    SqsPublisher(client, settings=SETTINGS, sleep=sleep).send("order-intents", [("SPX", "1", b"a")])


CALLS = {  # service, operation, how the adapter makes it, how its error must start
    "kinesis": ("kinesis", "put_records", "PutRecords", _kinesis, "Kinesis PutRecords to et-unit-features"),
    "eventbridge": ("events", "put_events", "PutEvents", _eventbridge, "EventBridge PutEvents to et-unit-events"),
    "sqs": ("sqs", "send_message_batch", "SendMessageBatch", _sqs, f"SQS SendMessageBatch to {QUEUE}"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(("code", "service_message"), [
    ("AccessDenied", "User: arn:aws:iam::123456789012:user/ci is not authorized"),
    ("ResourceNotFoundException", "not found"),
])
def test_a_configuration_error_names_the_call_and_its_resource(call, code, service_message):
    service, operation, op_name, make_call, what = CALLS[call]
    client, sleeps = _client(service), []
    with Stubber(client) as stub:
        if service == "sqs":
            stub.add_response("get_queue_url", {"QueueUrl": QUEUE_URL}, {"QueueName": QUEUE})
        stub.add_client_error(operation, service_error_code=code, service_message=service_message,
                              http_status_code=400)
        with pytest.raises(InfrastructureError) as caught:
            make_call(client, sleeps.append)
        stub.assert_no_pending_responses()  # called once: not retried
    assert type(caught.value) is InfrastructureError and not isinstance(caught.value, DeadlineExceededError)
    cause = caught.value.__cause__  # botocore's ClientError (a modelled subclass for some codes)
    assert str(cause) == f"An error occurred ({code}) when calling the {op_name} operation: {service_message}"
    problem = ("no such resource (is the name right, and is the stage deployed or the local stack up?)"
               if code == "ResourceNotFoundException" else "credentials or permissions refused")
    assert str(caught.value) == f"{what}: {problem}, not retried ({type(cause).__name__}: {cause})"
    assert sleeps == []


@pytest.mark.parametrize("call", sorted(CALLS))
def test_missing_credentials_name_the_call_and_its_resource(call):
    service, operation, _, make_call, what = CALLS[call]
    client, calls = _client(service), []

    def refuse(**params):
        calls.append(params)
        raise NoCredentialsError()

    setattr(client, operation, refuse)
    if service == "sqs":
        client.get_queue_url = lambda **_: {"QueueUrl": QUEUE_URL}
    with pytest.raises(InfrastructureError) as caught:
        make_call(client, lambda s: None)
    assert str(caught.value) == f"{what}: AWS client misconfigured, not retried (NoCredentialsError: {NoCredentialsError()})"
    assert len(calls) == 1 and isinstance(caught.value.__cause__, NoCredentialsError)


def test_resend_failed_leads_with_what_it_was_given():
    def send(pending):
        raise NoCredentialsError()

    with pytest.raises(InfrastructureError, match=r"^Kinesis PutRecords to s: AWS client misconfigured, not retried "):
        resend_failed(send, [1], max_attempts=3, base_delay_s=0.0, sleep=lambda s: None,
                      what="Kinesis PutRecords to s")
