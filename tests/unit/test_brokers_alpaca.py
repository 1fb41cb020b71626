"""AlpacaBroker against recorded HTTP responses (tests/fixtures/alpaca) served by a fake transport.

The transport is mounted on alpaca-py's own requests session, so the real client code builds the
requests and parses the responses; nothing reaches the network.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import requests
from ensemble_trader.adapters.brokers.alpaca import AlpacaBroker
from ensemble_trader.domain.models import Order, OrderStatus, Side
from ensemble_trader.domain.orders import (
    BrokerRejectedError,
    BrokerUnavailableError,
    DuplicateClientOrderIdError,
    UnknownOutcomeError,
)
from moto import mock_aws
from requests.adapters import BaseAdapter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alpaca"
COID = "et0123456789abcdef0123456789abcd"
T = datetime(2024, 5, 6, 14, 30, tzinfo=UTC)


class Recorded(BaseAdapter):
    """Serves queued fixtures in order; a queued exception is raised instead (timeouts)."""

    def __init__(self):
        super().__init__()
        self.queue: list[str | Exception] = []
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        assert kwargs.get("timeout") is not None, "every request must carry a timeout"
        item = self.queue.pop(0)
        if isinstance(item, Exception):
            raise item
        fixture = json.loads((FIXTURES / f"{item}.json").read_text())
        path = requests.utils.urlparse(request.url).path
        assert (request.method, path) == (fixture["method"], fixture["path"]), (request.method, path)
        response = requests.Response()
        response.status_code = fixture["status"]
        response._content = b"" if fixture["body"] is None else json.dumps(fixture["body"]).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


@pytest.fixture()
def alpaca():
    broker = AlpacaBroker.from_credentials("PKTEST", "secret", paper=True, timeout=2.5)
    transport = Recorded()
    broker.client._session.mount("https://", transport)
    return broker, transport


def order(side=Side.BUY) -> Order:
    return Order(client_order_id=COID, intent_id="i", strategy_id="s", symbol="SPY", side=side,
                 quantity=10, created_at=T, updated_at=T, decision_time=T, decision_price=512.0)


def test_submit_passes_the_client_order_id_through_to_the_paper_endpoint(alpaca):
    broker, http = alpaca
    http.queue = ["submit_accepted"]
    ack = broker.submit(order())
    sent = http.requests[0]
    assert sent.url.startswith("https://paper-api.alpaca.markets/v2/orders")
    body = json.loads(sent.body)
    assert body["client_order_id"] == COID and body["side"] == "buy" and float(body["qty"]) == 10
    assert body["type"] == "market" and body["time_in_force"] == "day"
    assert sent.headers["APCA-API-KEY-ID"] == "PKTEST"
    assert ack.status is OrderStatus.SUBMITTED and ack.broker_order_id.startswith("61e69015")


def test_lookup_reports_progress_and_not_found_is_none(alpaca):
    broker, http = alpaca
    http.queue = ["get_partially_filled", "get_filled", "get_not_found"]
    part = broker.get_order_by_client_id(COID)
    assert "client_order_id=" + COID in http.requests[0].url
    assert (part.status, part.filled_quantity, part.average_fill_price) == (OrderStatus.PARTIALLY_FILLED, 4, 512.1)
    done = broker.get_order_by_client_id(COID)
    assert done.status is OrderStatus.FILLED and done.filled_quantity == 10
    assert broker.get_order_by_client_id(COID) is None


@pytest.mark.parametrize(
    ("fixture", "error"),
    [
        ("submit_insufficient_buying_power", BrokerRejectedError),
        ("submit_duplicate_client_order_id", DuplicateClientOrderIdError),
        ("submit_internal_error", UnknownOutcomeError),
        ("submit_gateway_timeout", UnknownOutcomeError),
        ("submit_rate_limited", UnknownOutcomeError),  # not a refusal: a redelivery looks it up, resends
        (requests.exceptions.ReadTimeout("read timed out"), UnknownOutcomeError),
        (requests.exceptions.ConnectionError("connection reset by peer"), UnknownOutcomeError),
    ],
)
def test_submit_errors_map_to_domain_errors(alpaca, fixture, error):
    broker, http = alpaca
    http.queue = [fixture] * (4 if fixture == "submit_rate_limited" else 1)  # alpaca-py retries a 429
    with pytest.raises(error) as info:
        broker.submit(order())
    assert info.value.client_order_id == COID
    if fixture == "submit_insufficient_buying_power":
        assert "insufficient buying power" in info.value.reason


def test_failed_lookup_is_unavailable_not_absent(alpaca):
    broker, http = alpaca
    http.queue = [requests.exceptions.ReadTimeout("slow")]
    with pytest.raises(BrokerUnavailableError):
        broker.get_order_by_client_id(COID)


def test_cancel_and_cancel_of_a_filled_order(alpaca):
    broker, http = alpaca
    http.queue = ["get_partially_filled", "cancel_accepted", "get_canceled"]
    assert broker.cancel(COID).status is OrderStatus.CANCELED
    assert http.requests[1].method == "DELETE"
    http.queue = ["get_partially_filled", "cancel_not_cancelable", "get_filled"]
    assert broker.cancel(COID).status is OrderStatus.FILLED
    http.queue = ["get_filled"]
    assert broker.cancel(COID).status is OrderStatus.FILLED  # terminal: no DELETE sent
    http.queue = ["get_not_found"]
    assert broker.cancel(COID) is None


def test_open_orders_and_signed_positions(alpaca):
    broker, http = alpaca
    http.queue = ["list_open_orders", "list_positions"]
    open_orders = broker.list_open_orders()
    assert "status=open" in http.requests[0].url
    assert [(o.symbol, o.side, o.status) for o in open_orders] == [
        ("SPY", Side.BUY, OrderStatus.SUBMITTED), ("AAPL", Side.SELL, OrderStatus.PARTIALLY_FILLED)]
    positions = {p.symbol: p for p in broker.list_positions()}
    assert positions["SPY"].quantity == 10 and positions["AAPL"].quantity == -5
    assert positions["AAPL"].average_price == 181.2


def test_keys_from_secrets_manager(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        sm.create_secret(Name="et-unit-broker-keys", SecretString=json.dumps(
            {"APCA_API_KEY_ID": "PKFROMSECRET", "APCA_API_SECRET_KEY": "s3cr3t"}))
        sm.create_secret(Name="et-unit-bad", SecretString=json.dumps({"user": "x"}))
        broker = AlpacaBroker.from_secret(sm, "et-unit-broker-keys")
        assert broker.client._api_key == "PKFROMSECRET"
        with pytest.raises(BrokerUnavailableError, match="lacks api_key"):
            AlpacaBroker.from_secret(sm, "et-unit-bad")
        with pytest.raises(BrokerUnavailableError, match="cannot read"):
            AlpacaBroker.from_secret(sm, "et-unit-missing")


def test_open_orders_are_read_page_by_page_without_losing_orders_that_share_an_instant(alpaca):
    broker, http = alpaca
    broker.page_size = 2
    # page 1: two orders submitted at 14:30:00.906; page 2 (until that instant + 1 µs): one of
    # them again and an older one; page 3 (until the older one + 1 µs): nothing more
    http.queue = ["list_open_orders", "list_open_orders_page2", "list_open_orders_empty"]
    orders = broker.list_open_orders()
    assert [o.client_order_id for o in orders] == [
        "etaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "manual-order-1", "etbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]
    first, second, third = (requests.utils.urlparse(r.url).query for r in http.requests)
    assert "limit=2" in first and "direction=desc" in first and "until" not in first
    assert "until=2024-05-06T14%3A30%3A00.906001" in second
    assert "until=2024-05-06T14%3A29%3A58.120001" in third


def test_a_full_page_of_orders_at_one_instant_cannot_be_paged(alpaca):
    broker, http = alpaca
    broker.page_size = 2
    http.queue = ["list_open_orders", "list_open_orders"]
    with pytest.raises(BrokerUnavailableError, match="cannot be paged"):
        broker.list_open_orders()
