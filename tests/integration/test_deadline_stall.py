"""A stalled AWS service under an invocation's deadline: real boto3 clients (built by
``adapters/aws/clients.client``) against a black-hole socket on 127.0.0.1 that accepts every
connection and never answers. Each connection is one attempt, so the tests count attempts;
the clients' timeouts are short to keep the tests short (the production figures are measured,
not tested: see the commit that added this file)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from ensemble_trader.adapters.aws.clients import attempt_seconds, client
from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
from ensemble_trader.runtime.deadline import DeadlineExceededError, invocation_deadline
from ensemble_trader.runtime.settings import Settings

SHORT = Config(connect_timeout=0.2, read_timeout=0.3, retries={"max_attempts": 5, "mode": "standard"})
"""6 attempts of 0.3 s each (a black hole accepts at once and never answers) and botocore's
back-offs: one call runs ~2 s without a deadline; one attempt may take 1.0 s (0.5 s margin)."""
DEADLINE_S = 1.6


class BlackHole:
    """A listening socket that accepts connections, keeps them open and never answers."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(128)
        self.server.settimeout(0.1)
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.connections:
            conn.close()
        self.server.close()


class Context:
    """Lambda's context object with ``left_s`` seconds left when it was made."""

    def __init__(self, left_s: float) -> None:
        self.deadline = time.monotonic() + left_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@pytest.fixture()
def hole(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    found = BlackHole()
    yield found
    found.close()


def _settings(hole: BlackHole) -> Settings:
    return Settings(stage="stall", aws_endpoint_url=hole.url, redis_url="redis://unused")


def test_outside_an_invocation_a_stalled_call_makes_all_its_attempts(hole):
    dynamodb = client("dynamodb", _settings(hole), config=SHORT)
    with pytest.raises(ReadTimeoutError):
        dynamodb.get_item(TableName="t", Key={"k": {"S": "a"}})
    assert len(hole.connections) == 6  # nothing changes without a deadline


def test_under_a_deadline_a_stalled_call_stops_before_the_deadline(hole):
    dynamodb = client("dynamodb", _settings(hole), config=SHORT)
    assert attempt_seconds(dynamodb) == pytest.approx(1.0)
    with invocation_deadline(Context(DEADLINE_S)):
        with pytest.raises(DeadlineExceededError, match=r"^DynamoDB GetItem: not retried after attempt \d "
                                                        r"\(ReadTimeoutError: .*s of the invocation left"):
            dynamodb.get_item(TableName="t", Key={"k": {"S": "a"}})
    assert 1 <= len(hole.connections) < 6  # not its whole retry chain


def test_under_a_deadline_a_publishers_retries_and_botocores_do_not_multiply(hole):
    """The Kinesis publisher makes 6 calls of 6 botocore attempts each without a deadline (36
    attempts, ~12 s here); under a 1.6 s deadline it stops inside it, naming what still fails."""
    kinesis = client("kinesis", _settings(hole), config=SHORT)
    publisher = KinesisPublisher(kinesis, settings=_settings(hole))
    with invocation_deadline(Context(DEADLINE_S)):
        with pytest.raises(DeadlineExceededError) as caught:
            publisher.put("features", [("SPX", b"bar")])
    assert str(caught.value).startswith("Kinesis PutRecords to et-stall-features: 1 of 1 entries still failing after ")
    assert "ReadTimeoutError" in str(caught.value) and len(caught.value.failing) == 1
    assert 1 <= len(hole.connections) < 6  # fewer than one call makes alone, where 36 are made without a deadline
