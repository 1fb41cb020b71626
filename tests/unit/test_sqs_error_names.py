"""A failed SQS queue lookup says what SQS answered and names the queue.

It read ``SQS queue X not reachable: ...`` whatever the cause, also for AccessDenied or a queue
that does not exist. It now reads ``SQS get_queue_url <queue>: <botocore's text>``, which carries
the error code (``clients.call_error``, as S3 and DynamoDB do); the type stays InfrastructureError
(a deadline refusal stays a DeadlineExceededError: test_deadline_refusal_flag).
Real botocore clients answered by a Stubber: no network.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from ensemble_trader.adapters.aws.sqs import SqsDeadLetterWriter, SqsPublisher
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.deadline import DeadlineExceededError
from ensemble_trader.runtime.settings import Settings

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused", region="us-east-1")
QUEUE = "et-unit-order-intents.fifo"


def _client():
    return boto3.client("sqs", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")  # noqa: S106 - a stubbed client's dummy keys


@pytest.mark.parametrize(("code", "service_message"), [
    ("AccessDenied", "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: sqs:getqueueurl"),
    ("AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist."),
])
def test_a_refused_queue_lookup_names_the_queue_and_what_sqs_said(code, service_message):
    client = _client()
    publisher = SqsPublisher(client, settings=SETTINGS)
    with Stubber(client) as stub:
        stub.add_client_error("get_queue_url", service_error_code=code, service_message=service_message,
                              http_status_code=400, expected_params={"QueueName": QUEUE})
        with pytest.raises(InfrastructureError) as caught:
            publisher.send("order-intents", [("SPX", "1", b"a")])
    assert type(caught.value) is InfrastructureError and not isinstance(caught.value, DeadlineExceededError)
    assert str(caught.value) == (f"SQS get_queue_url {QUEUE}: An error occurred ({code}) when calling the "
                                 f"GetQueueUrl operation: {service_message}")
    assert "not reachable" not in str(caught.value)


def test_a_connection_failure_names_the_queue_too():
    client = _client()
    error = EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com/")

    def refuse(**_):
        raise error

    client.get_queue_url = refuse
    with pytest.raises(InfrastructureError) as caught:
        SqsPublisher(client, settings=SETTINGS).queue_url("order-intents")
    assert str(caught.value) == f"SQS get_queue_url {QUEUE}: {error}" and caught.value.__cause__ is error


def test_the_dead_letter_writer_s_lookup_names_its_queue():
    client = _client()
    writer = SqsDeadLetterWriter("orders-dlq", client, settings=SETTINGS)
    with Stubber(client) as stub:
        stub.add_client_error("get_queue_url", service_error_code="AccessDenied", service_message="denied")
        with pytest.raises(InfrastructureError, match=r"^SQS get_queue_url et-unit-orders-dlq\.fifo: .*\(AccessDenied\)"):
            writer.send({"k": 1}, "bad record")


def test_a_found_queue_is_looked_up_once():
    client = _client()
    publisher = SqsPublisher(client, settings=SETTINGS)
    url = f"https://sqs.us-east-1.amazonaws.com/123456789012/{QUEUE}"
    with Stubber(client) as stub:
        stub.add_response("get_queue_url", {"QueueUrl": url}, {"QueueName": QUEUE})
        assert publisher.queue_url("order-intents") == url
        assert publisher.queue_url("order-intents") == url
        stub.assert_no_pending_responses()
