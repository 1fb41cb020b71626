"""How long a stalled AWS service can hold a call: bounded well inside the functions' timeouts.

The figures are computed here from the clients and publishers as built (their botocore config
and retry settings), with a formula of the test's own, and held against the timeouts the CDK
app deploys (``constants.FUNCTIONS``); a black-hole endpoint (accepts connections, never
answers) then checks that the attempts counted are the attempts made.
"""

from __future__ import annotations

import socket

import pytest
from ensemble_trader import constants
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.settings import Settings
from pydantic import BaseModel

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused", AWS_REGION="us-east-1")
STALL_SHARE = 0.5
"""One call of a publisher or a store, stalled, may take at most this share of the function's
timeout: the invocation still has the rest to report its partial batch and flush its metrics."""


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    from ensemble_trader.adapters.aws.clients import clear_client_cache

    clear_client_cache()
    yield
    clear_client_cache()


def _call_seconds(client) -> float:
    """The longest one botocore call can take: each attempt its connect and read timeouts, and
    botocore's standard-mode back-off between them at its longest (a throttled answer's:
    min(2 ** i, 20) s, plus up to 5 s an ``x-amz-retry-after`` header may add)."""
    config = client.meta.config
    attempts = config.retries["total_max_attempts"]
    backoffs = sum(min(2**i, 20) + 5 for i in range(attempts - 1))
    return attempts * (config.connect_timeout + config.read_timeout) + backoffs


def _publisher_seconds(publisher) -> float:
    """``max_attempts`` calls and the jittered back-offs (at most their full value) between them."""
    cap = getattr(publisher, "max_delay_s", float("inf"))
    sleeps = sum(min(cap, publisher.base_delay_s * 2 ** (a - 1)) for a in range(1, publisher.max_attempts))
    return publisher.max_attempts * _call_seconds(publisher._client) + sleeps


def _publishers():
    from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
    from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    return {
        "kinesis": KinesisPublisher(settings=SETTINGS),
        "sqs": SqsPublisher(settings=SETTINGS),
        "events": EventBridgePublisher(settings=SETTINGS),
    }


@pytest.mark.parametrize("spec", constants.FUNCTIONS, ids=lambda s: s.logical)
def test_a_stalled_call_fails_well_inside_the_functions_timeout(spec):
    from ensemble_trader.adapters.aws.clients import client

    budget = STALL_SHARE * spec.timeout_seconds
    figures = {f"{name} publisher": _publisher_seconds(p) for name, p in _publishers().items()}
    # SQS: the queue's GetQueueUrl goes before the first batch of a publisher
    figures["sqs publisher"] += _call_seconds(client("sqs", SETTINGS))
    for service in ("dynamodb", "s3", "secretsmanager"):
        figures[f"one {service} call"] = _call_seconds(client(service, SETTINGS))
    over = {what: round(s, 2) for what, s in figures.items() if s > budget}
    assert not over, f"{spec.logical} ({spec.timeout_seconds} s): stalled calls over {budget} s: {over}"


def test_the_published_figures_are_the_clients_and_publishers_own():
    from ensemble_trader.adapters.aws import dynamodb, eventbridge, kinesis, sqs
    from ensemble_trader.adapters.aws.clients import client, worst_call_seconds

    publishers = _publishers()
    assert kinesis.WORST_CASE_S == pytest.approx(_publisher_seconds(publishers["kinesis"])) == pytest.approx(13.4)
    assert eventbridge.WORST_CASE_S == pytest.approx(_publisher_seconds(publishers["events"])) == pytest.approx(9.15)
    sqs_figure = _publisher_seconds(publishers["sqs"]) + _call_seconds(client("sqs", SETTINGS))
    assert sqs.WORST_CASE_S == pytest.approx(sqs_figure) == pytest.approx(12.15)
    assert dynamodb.WORST_CALL_S == pytest.approx(_call_seconds(client("dynamodb", SETTINGS))) == pytest.approx(12.0)
    for service in ("kinesis", "sqs", "events", "dynamodb", "s3"):
        assert worst_call_seconds(service) == pytest.approx(_call_seconds(client(service, SETTINGS)))


def test_botocores_retry_after_allowance_is_within_the_figures():
    from botocore.retries import standard
    from ensemble_trader.adapters.aws import clients

    assert getattr(standard.ExponentialBackoff, "_RETRY_AFTER_MAX_ADDITIONAL", 0) <= clients.RETRY_AFTER_ALLOWANCE_S
    assert standard.ExponentialBackoff._MAX_BACKOFF <= clients.BOTOCORE_MAX_BACKOFF_S


def test_the_orders_batch_end_fits_the_time_an_intent_leaves_it():
    """The batch end (one risk-state save, one PutEvents request when nothing answers) fits the
    reserve of ``MIN_TIME_LEFT_MS``, and the reserve leaves the invocation time for intents."""
    from ensemble_trader.adapters.aws.clients import client
    from ensemble_trader.runtime.orders import MIN_TIME_LEFT_MS

    timeout_ms = constants.function_spec("orders").timeout_seconds * 1000
    batch_end_s = _call_seconds(client("dynamodb", SETTINGS)) + _publisher_seconds(_publishers()["events"])
    assert batch_end_s * 1000 <= MIN_TIME_LEFT_MS < timeout_ms, (batch_end_s, MIN_TIME_LEFT_MS, timeout_ms)


def test_a_stalled_risk_state_save_ends_the_batch_within_the_reserve(monkeypatch):
    from ensemble_trader.adapters.aws.clients import client
    from ensemble_trader.domain.risk import RiskState
    from ensemble_trader.runtime import orders

    class Stalled:
        saves = 0

        def load_risk_state(self):
            return RiskState()

        def save_risk_state(self, state, *, write_kill_switch=False):
            Stalled.saves += 1
            raise InfrastructureError("DynamoDB update risk state: ReadTimeoutError")

    monkeypatch.setattr(orders, "_backoff", lambda attempt: None)
    store = orders.BatchingOrdersStore(Stalled())
    store.save_risk_state(store.load_risk_state())
    with pytest.raises(InfrastructureError):
        store.flush()
    batch_end_s = Stalled.saves * _call_seconds(client("dynamodb", SETTINGS)) + _publisher_seconds(
        _publishers()["events"])
    assert batch_end_s * 1000 <= orders.MIN_TIME_LEFT_MS, (Stalled.saves, batch_end_s)


# ---- a black-hole endpoint: the attempts counted are the attempts made --------------------------


@pytest.fixture()
def black_hole(monkeypatch):
    """Settings pointing at a socket that accepts connections (the kernel completes them into the
    backlog) and never answers; ``connections()`` accepts and counts what arrived. The clients
    keep their attempts and are given short timeouts so the test does not wait seconds."""
    from ensemble_trader.adapters.aws import clients

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    monkeypatch.setattr(clients, "CONNECT_TIMEOUT_S", 0.5)
    monkeypatch.setattr(clients, "READ_TIMEOUT_S", 0.1)
    accepted: list[socket.socket] = []

    def connections() -> int:
        server.setblocking(False)
        while True:
            try:
                accepted.append(server.accept()[0])
            except BlockingIOError:
                return len(accepted)

    settings = Settings(stage="unit", aws_endpoint_url=f"http://127.0.0.1:{server.getsockname()[1]}",
                        redis_url="redis://unused", AWS_REGION="us-east-1")
    yield settings, connections
    for conn in accepted:
        conn.close()
    server.close()


class Ping(BaseModel):
    n: int = 1


@pytest.mark.parametrize("service", ["kinesis", "events", "sqs"])
def test_a_publisher_facing_a_silent_endpoint_raises_after_its_counted_attempts(black_hole, service):
    from ensemble_trader.adapters.aws.clients import call_attempts
    from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
    from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    settings, connections = black_hole
    no_sleep = {"sleep": lambda s: None}
    if service == "kinesis":
        publisher = KinesisPublisher(settings=settings, **no_sleep)
        call, match = lambda: publisher.put("features", [("SPY", b"{}")]), "Kinesis PutRecords .* after 4 attempts.*Read timeout"
    elif service == "events":
        publisher = EventBridgePublisher(settings=settings, **no_sleep)
        call, match = lambda: publisher.publish([Ping()]), "EventBridge PutEvents .* after 3 attempts.*Read timeout"
    else:
        publisher = SqsPublisher(settings=settings, **no_sleep)
        publisher._urls[settings.name("order-intents")] = settings.aws_endpoint_url + "/q"  # GetQueueUrl done
        call = lambda: publisher.send("order-intents", [("SPY", "i-1", b"{}")])  # noqa: E731
        match = "SQS SendMessageBatch .* after 3 attempts.*Read timeout"
    with pytest.raises(InfrastructureError, match=match):
        call()
    assert call_attempts(service) == publisher._client.meta.config.retries["total_max_attempts"] == 1
    assert connections() == publisher.max_attempts * call_attempts(service)


def test_a_dynamodb_call_facing_a_silent_endpoint_raises_after_botocores_attempts(black_hole):
    from ensemble_trader.adapters.aws.clients import CALL_ATTEMPTS, call_attempts
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore

    settings, connections = black_hole
    store = DynamoKeyValueStore(settings=settings)
    with pytest.raises(InfrastructureError, match="Read timeout"):
        store.put_item("risk-state", {"pk": "global", "version": 2}, expected_version=1)
    assert connections() == call_attempts("dynamodb") == CALL_ATTEMPTS == 2


def test_the_sqs_queue_lookup_facing_a_silent_endpoint_is_one_attempt(black_hole):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    settings, connections = black_hole
    with pytest.raises(InfrastructureError, match="not reachable.*Read timeout"):
        SqsPublisher(settings=settings).queue_url("order-intents")
    assert connections() == 1
