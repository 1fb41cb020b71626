"""A configuration error says which kind it is: a stream, queue or table that does not exist (a
misspelt ``--stream``, a stage not deployed), credentials or permissions refused, or the client's
own settings. Before, all three read "AWS client misconfigured", which sent a user with a
misspelt stream name to check the client."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError
from ensemble_trader.adapters.aws._retry import configuration_problem, resend_failed
from ensemble_trader.domain.errors import InfrastructureError


def _client_error(code: str, query_code: str | None = None) -> ClientError:
    error = {"Code": code, "Message": "m"}
    if query_code:
        error["QueryErrorCode"] = query_code
    return ClientError({"Error": error}, "Op")


@pytest.mark.parametrize("exc, words", [
    (_client_error("ResourceNotFoundException"), "no such resource"),
    (_client_error("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"), "no such resource"),
    (_client_error("QueueDoesNotExist"), "no such resource"),
    (_client_error("AccessDeniedException"), "credentials or permissions refused"),
    (_client_error("UnrecognizedClientException"), "credentials or permissions refused"),
    (NoCredentialsError(), "AWS client misconfigured"),
    (NoRegionError(), "AWS client misconfigured"),
])
def test_each_kind_of_configuration_error_is_named(exc, words):
    assert configuration_problem(exc).startswith(words)


def test_a_missing_stream_is_named_as_missing_in_the_error():
    def send(pending):
        raise _client_error("ResourceNotFoundException")

    with pytest.raises(InfrastructureError) as caught:
        resend_failed(send, [1], max_attempts=3, base_delay_s=0.0, sleep=lambda s: None,
                      what="Kinesis PutRecords to et-local-market_data")
    assert str(caught.value).startswith(
        "Kinesis PutRecords to et-local-market_data: no such resource (is the name right, and is the stage "
        "deployed or the local stack up?), not retried (ClientError: ")
