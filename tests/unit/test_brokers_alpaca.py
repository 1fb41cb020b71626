"""AlpacaBroker against recorded HTTP responses (tests/fixtures/alpaca) served by a fake transport.

The transport is mounted on alpaca-py's own requests session, so the real client code builds the
requests and parses the responses; nothing reaches the network.
"""

from __future__ import annotations

import json
import math
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


def recorded(name: str, **changes) -> dict:
    """A fixture as a queueable response, its body (or each order of a list) changed by ``changes``."""
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    body = fixture["body"]
    fixture["body"] = [{**o, **changes} for o in body] if isinstance(body, list) else {**body, **changes}
    return fixture


class Recorded(BaseAdapter):
    """Serves queued fixtures in order (by name, or as changed by :func:`recorded`); a queued
    exception is raised instead (timeouts)."""

    def __init__(self):
        super().__init__()
        self.queue: list[str | dict | Exception] = []
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        assert kwargs.get("timeout") is not None, "every request must carry a timeout"
        item = self.queue.pop(0)
        if isinstance(item, Exception):
            raise item
        fixture = item if isinstance(item, dict) else json.loads((FIXTURES / f"{item}.json").read_text())
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
    broker.client._retry_wait = 0  # the configured one retry of a 429, without its 1 s pause
    http.queue = [fixture] * (4 if fixture == "submit_rate_limited" else 1)  # alpaca-py retries a 429
    with pytest.raises(error) as info:
        broker.submit(order())
    assert info.value.client_order_id == COID
    # a 429 is sent again once; nothing else is (a 504 or a timeout is resolved by lookup)
    assert len(http.requests) == (2 if fixture == "submit_rate_limited" else 1)
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


@pytest.mark.parametrize(("quantity", "wire"), [(10, "10"), (7 * 0.1, "0.7"), (0.1 + 0.2, "0.3"),
                                                (1.123456789123, "1.123456789")])
def test_quantities_go_on_the_wire_as_decimal_strings_of_at_most_9_decimals(alpaca, quantity, wire):
    broker, http = alpaca
    http.queue = ["submit_accepted"]
    broker.submit(order().model_copy(update={"quantity": quantity}))
    assert json.loads(http.requests[0].body)["qty"] == wire


def test_a_quantity_with_nothing_left_at_9_decimals_is_refused_before_it_is_sent(alpaca):
    broker, http = alpaca
    with pytest.raises(BrokerRejectedError, match="cannot be sent to Alpaca"):
        broker.submit(order().model_copy(update={"quantity": 4e-10}))
    assert http.requests == []


def test_pending_cancel_after_a_partial_fill_stays_partially_filled(alpaca):
    broker, http = alpaca
    http.queue = [recorded("get_partially_filled", status="pending_cancel")]
    report = broker.get_order_by_client_id(COID)
    assert (report.status, report.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 4)


def test_a_notional_order_is_listed_with_what_is_known_and_canceled_by_its_id(alpaca):
    """A dollar-amount order placed by hand has no quantity: listed and canceled all the same."""
    broker, http = alpaca
    notional = {"client_order_id": "manual-notional", "qty": None, "notional": "500", "filled_qty": "0"}
    http.queue = [recorded("list_open_orders", **notional)]
    listed = broker.list_open_orders()
    assert [(o.client_order_id, o.symbol, o.side, o.status) for o in listed] == [
        ("manual-notional", "SPY", Side.BUY, OrderStatus.UNKNOWN),
        ("manual-notional", "AAPL", Side.SELL, OrderStatus.UNKNOWN)]
    assert listed[0].broker_order_id.startswith("0b5a3e34") and math.isnan(listed[0].quantity)
    assert "no quantity" in listed[0].reject_reason
    http.queue = [recorded("get_partially_filled", **notional), "cancel_accepted",
                  recorded("get_partially_filled", **notional, status="pending_cancel")]
    after = broker.cancel("manual-notional")
    delete = http.requests[-2]
    assert delete.method == "DELETE" and delete.url.endswith("/v2/orders/" + after.broker_order_id)
    assert after.status is OrderStatus.UNKNOWN
    http.queue = [recorded("get_partially_filled", **notional)]
    looked_up = broker.get_order_by_client_id("manual-notional")
    assert looked_up.status is OrderStatus.UNKNOWN and "no quantity" in looked_up.reject_reason


def test_a_status_alpaca_py_does_not_know_is_an_unknown_outcome_or_an_unknown_report(alpaca):
    broker, http = alpaca
    future = {"status": "some_future_status"}
    http.queue = [recorded("submit_accepted", **future)]
    with pytest.raises(UnknownOutcomeError, match="some_future_status"):  # resolved by lookup
        broker.submit(order())
    http.queue = [recorded("get_partially_filled", **future)]
    looked_up = broker.get_order_by_client_id(COID)  # nothing applied; reconciliation halts its symbol
    assert looked_up.status is OrderStatus.UNKNOWN and "some_future_status" in looked_up.reject_reason
    http.queue = [recorded("list_open_orders", **future)]
    listed = broker.list_open_orders()
    assert [(o.symbol, o.quantity, o.status) for o in listed] == [
        ("SPY", 10, OrderStatus.UNKNOWN), ("AAPL", 7, OrderStatus.UNKNOWN)]


def test_an_open_order_without_a_symbol_cannot_be_accounted_for(alpaca):
    broker, http = alpaca
    http.queue = [recorded("list_open_orders", symbol="", side="", qty=None, order_class="mleg")]
    with pytest.raises(BrokerUnavailableError, match="names no symbol or side"):
        broker.list_open_orders()


def test_positions_alpaca_py_cannot_read_are_a_typed_error(alpaca):
    broker, http = alpaca
    http.queue = [recorded("list_positions", side="some_future_side")]
    with pytest.raises(BrokerUnavailableError, match="listing positions"):
        broker.list_positions()
