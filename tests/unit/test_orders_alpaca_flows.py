"""OrderRouter over AlpacaBroker and a stateful fake of Alpaca's trading API: the kill switch,
reconciliation and the events of flows Alpaca answers asynchronously (pending_cancel, a rejection
after acceptance, a lost submit response), and orders placed by hand that the adapter cannot map.

As in test_brokers_alpaca.py, the fake is a transport mounted on alpaca-py's own requests session
and answers in the shape of the recorded responses (tests/fixtures/alpaca); nothing reaches the
network.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from ensemble_trader.adapters.brokers.alpaca import AlpacaBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore
from ensemble_trader.domain.models import Order, OrderIntent, OrderStatus, Regime, Side, make_intent_id
from ensemble_trader.domain.orders import BrokerUnavailableError
from ensemble_trader.domain.risk import RejectReason, RiskLimits, TradingState
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import CancelFailedError, OrderRouter
from requests.adapters import BaseAdapter

from tests.unit.test_brokers_alpaca import FIXTURES
from tests.unit.test_orders_router import T0, WALL, intent

FINISHED = {"filled", "canceled", "expired", "rejected"}


class FakeAlpaca(BaseAdapter):
    """Alpaca's order book for one account: orders by client order id (Alpaca's JSON), positions.

    ``answers`` queues a response (``(status, body)``) or an exception for the next request of a
    ``"METHOD /path"`` (a DELETE's path without the order id) instead of the normal answer.
    """

    def __init__(self):
        super().__init__()
        self.template = json.loads((FIXTURES / "submit_accepted.json").read_text())["body"]
        self.orders: dict[str, dict] = {}
        self.positions: dict[str, float] = {}
        self.answers: dict[str, list] = {}
        self.requests: list[tuple[str, str]] = []
        self.lose_submit_response = False

    def add(self, coid: str, symbol: str, side: str, qty: str | None, status: str = "new", **more) -> dict:
        now = datetime.now(UTC).isoformat()
        self.orders[coid] = {**self.template, "id": str(uuid.uuid4()), "client_order_id": coid,
                             "symbol": symbol, "side": side, "qty": qty, "status": status,
                             "created_at": now, "updated_at": now, "submitted_at": now, **more}
        return self.orders[coid]

    def fill(self, coid: str, qty: float, price: float, status: str | None = None) -> None:
        o = self.orders[coid]
        before = float(o["filled_qty"])
        total = before + qty
        o["filled_avg_price"] = str((before * float(o["filled_avg_price"] or 0) + qty * price) / total)
        o["filled_qty"] = str(total)
        o["status"] = status or ("filled" if total >= float(o["qty"]) else "partially_filled")
        o["updated_at"] = datetime.now(UTC).isoformat()
        signed = qty if o["side"] == "buy" else -qty
        self.positions[o["symbol"]] = self.positions.get(o["symbol"], 0.0) + signed

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        path = url.path
        key = f"{request.method} {path.rsplit('/', 1)[0] if request.method == 'DELETE' else path}"
        self.requests.append((request.method, path))
        if self.answers.get(key):
            answer = self.answers[key].pop(0)
            if isinstance(answer, Exception):
                raise answer
            return self.respond(request, *answer)
        if key == "POST /v2/orders":
            body = json.loads(request.body)
            if body["client_order_id"] in self.orders:
                return self.respond(request, 422, {"code": 40010001,
                                                   "message": "client_order_id must be unique"})
            placed = self.add(body["client_order_id"], body["symbol"], body["side"], body["qty"], "accepted")
            if self.lose_submit_response:
                raise requests.exceptions.ReadTimeout("read timed out")
            return self.respond(request, 200, placed)
        if key == "GET /v2/orders:by_client_order_id":
            found = self.orders.get(parse_qs(url.query)["client_order_id"][0])
            if found is None:
                return self.respond(request, 404, {"code": 40410000, "message": "order not found"})
            return self.respond(request, 200, found)
        if key == "GET /v2/orders":
            return self.respond(request, 200, [o for o in self.orders.values() if o["status"] not in FINISHED])
        if key == "DELETE /v2/orders":
            (o,) = [o for o in self.orders.values() if o["id"] == path.rsplit("/", 1)[1]]
            if o["status"] in FINISHED:
                return self.respond(request, 422, {"code": 42210000, "message": "order is not cancelable"})
            o["status"] = "pending_cancel"  # Alpaca cancels asynchronously
            return self.respond(request, 204, None)
        if key == "GET /v2/positions":
            return self.respond(request, 200, [
                {**json.loads((FIXTURES / "list_positions.json").read_text())["body"][0], "symbol": symbol,
                 "qty": str(abs(qty)), "side": "long" if qty > 0 else "short", "avg_entry_price": "100"}
                for symbol, qty in self.positions.items() if qty])
        raise AssertionError(f"unexpected request {key}")

    @staticmethod
    def respond(request, status: int, body) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response._content = b"" if body is None else json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url, response.request = request.url, request
        return response

    def close(self):
        pass

    def deletes(self) -> int:
        return sum(1 for method, _ in self.requests if method == "DELETE")


class AlpacaRig:
    def __init__(self):
        self.alpaca = FakeAlpaca()
        broker = AlpacaBroker.from_credentials("PKTEST", "secret", paper=True, timeout=2.0)
        broker.client._retry_wait = 0
        broker.client._session.mount("https://", self.alpaca)
        self.store = MemoryOrdersStore()
        self.bus = MemoryEventBus()
        self.router = OrderRouter(self.store, broker, FixedClock(WALL), events=self.bus,
                                  limits=RiskLimits(clock="event"), initial_equity=100_000,
                                  reconcile_grace_seconds=60, reconcile_on_start=False)

    def events(self, name: str) -> list:
        return [e for e in self.bus.events if type(e).__name__ == name]

    def working(self, coid: str, symbol: str = "SPX", qty: float = 10) -> Order:
        """An order of ours that Alpaca acknowledged."""
        placed = self.alpaca.add(coid, symbol, "buy", f"{qty:g}")
        order = Order(client_order_id=coid, intent_id="i", strategy_id="ens", symbol=symbol, side=Side.BUY,
                      quantity=qty, status=OrderStatus.SUBMITTED, broker_order_id=placed["id"],
                      created_at=WALL, updated_at=WALL, decision_time=WALL, decision_price=100.0)
        self.store.create_order(order)
        return order

    def traded(self, target: float = 0.5) -> str:
        """SPX warmed up, then an intent that buys; the client order id Alpaca received."""
        self.router.handle(intent(0, 0.0, 100.0))
        self.router.handle(intent(1, target, 100.0))
        (coid,) = self.alpaca.orders
        return coid


def test_a_notional_order_placed_by_hand_halts_its_symbol_and_is_canceled_by_the_kill_switch():
    rig = AlpacaRig()
    ours = rig.working("et" + "a" * 30)
    rig.alpaca.add("manual-notional", "AAPL", "buy", None, notional="500")  # a dollar amount, no quantity
    report = rig.router.reconcile()
    assert list(report.failures) == ["AAPL"] and "manual-notional" in report.failures["AAPL"][0]
    (reason,) = report.failures["AAPL"]
    assert "BUY of unknown quantity" in reason and "nan" not in reason  # was "(BUY nan)"
    assert rig.router.handle(intent(0, 0.0, 100.0, "NDX")).account  # other symbols still trade
    result = rig.router.set_kill_switch(True, "operator: stop")
    assert result["canceled"] == sorted([ours.client_order_id, "manual-notional"])
    assert {o["status"] for o in rig.alpaca.orders.values()} == {"pending_cancel"}


def test_an_order_of_ours_in_a_status_alpaca_py_does_not_know_halts_its_symbol_only():
    """It failed every reconciliation (a lookup error), so no symbol was checked or cleared."""
    rig = AlpacaRig()
    odd = rig.working("et" + "b" * 30, symbol="AAPL")
    fine = rig.working("et" + "c" * 30, symbol="NDX")
    rig.alpaca.orders[odd.client_order_id]["status"] = "some_future_status"
    rig.alpaca.fill(fine.client_order_id, 10, 100.0)
    report = rig.router.reconcile()
    assert list(report.failures) == ["AAPL"]
    assert "some_future_status" in report.failures["AAPL"][0]
    assert rig.store.get_order(fine.client_order_id).status is OrderStatus.FILLED  # the others synced
    assert rig.store.get_order(odd.client_order_id).status is OrderStatus.SUBMITTED  # nothing applied
    assert rig.router.handle(intent(0, 0.0, 100.0, "SPY")).account  # other symbols still trade
    rig.alpaca.orders[odd.client_order_id]["status"] = "new"  # readable again: the halt is lifted
    assert rig.router.reconcile().cleared_symbols == ["AAPL"]


def test_the_kill_switch_tries_every_cancel_and_names_the_failures():
    rig = AlpacaRig()
    coids = [rig.working(f"et{i:030d}", symbol=f"S{i}").client_order_id for i in range(3)]
    rig.alpaca.answers["DELETE /v2/orders"] = [(500, {"code": 50010000, "message": "internal server error"})]
    with pytest.raises(CancelFailedError) as info:
        rig.router.set_kill_switch(True, "operator: stop")
    assert list(info.value.failures) == [coids[0]] and "HTTP 500" in str(info.value)
    assert [rig.alpaca.orders[c]["status"] for c in coids] == ["new", "pending_cancel", "pending_cancel"]
    (changed,) = rig.events("KillSwitchChanged")
    assert changed.active and changed.canceled == coids[1:]
    assert rig.router.set_kill_switch(True, "operator: again")["canceled"] == coids  # the retry gets it


def test_the_kill_switch_counts_a_cancel_alpaca_accepted_and_a_partly_filled_order_stays_so():
    rig = AlpacaRig()
    coid = rig.traded()
    rig.alpaca.fill(coid, 200, 100.5)
    rig.router.reconcile()
    assert rig.router.set_kill_switch(True, "operator: stop")["canceled"] == [coid]  # pending_cancel
    stored = rig.store.get_order(coid)
    assert (stored.status, stored.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 200)
    rig.alpaca.fill(coid, 50, 101.0, status="canceled")  # a last execution, then the cancel took effect
    rig.bus.events.clear()
    assert rig.router.reconcile().ok
    stored = rig.store.get_order(coid)
    assert (stored.status, stored.filled_quantity) == (OrderStatus.CANCELED, 250)
    assert [type(e).__name__ for e in rig.bus.events] == ["OrderFilled", "OrderCanceled"]


def test_reconcile_cancels_a_retired_order_live_at_alpaca_and_books_its_fills():
    """Retired by the kill switch while its submit was under way; the submit landed at Alpaca."""
    rig = AlpacaRig()
    coid = "et" + "b" * 30
    rig.store.create_order(Order(client_order_id=coid, intent_id="i", strategy_id="ens", symbol="SPX",
                                 side=Side.BUY, quantity=10, created_at=WALL, updated_at=WALL))
    rig.router.set_kill_switch(True, "operator: stop")
    assert rig.store.get_order(coid).reject_code == RejectReason.KILL_SWITCH.value
    rig.alpaca.add(coid, "SPX", "buy", "10")
    rig.router.set_kill_switch(False, "operator: resume")
    rig.router.reconcile()
    assert rig.alpaca.orders[coid]["status"] == "pending_cancel"
    rig.alpaca.fill(coid, 10, 101.0)  # it executed before the cancel took effect
    assert rig.router.reconcile().ok
    assert rig.store.get_order(coid).status is OrderStatus.FILLED
    assert rig.store.get_position("SPX").quantity == 10 == rig.alpaca.positions["SPX"]


def test_a_rejection_after_acceptance_is_recorded_broker_rejected_and_published():
    rig = AlpacaRig()
    coid = rig.traded()
    rig.alpaca.orders[coid]["status"] = "rejected"
    rig.bus.events.clear()
    rig.router.reconcile()
    stored = rig.store.get_order(coid)
    assert (stored.status, stored.reject_code) == (OrderStatus.REJECTED, RejectReason.BROKER_REJECTED.value)
    (rejected,) = rig.events("OrderRejected")
    assert rejected.client_order_id == coid and rejected.reason_code == RejectReason.BROKER_REJECTED.value


def test_an_order_found_by_lookup_after_a_lost_response_is_published_submitted_once():
    rig = AlpacaRig()
    rig.router.handle(intent(0, 0.0, 100.0))
    rig.alpaca.lose_submit_response = True  # Alpaca takes the order; its answer is lost
    out = rig.router.handle(intent(1, 0.5, 100.0))
    rig.alpaca.lose_submit_response = False
    assert out.orders[0]["status"] == "SUBMITTED" and len(rig.alpaca.orders) == 1
    for _ in range(2):
        rig.router.handle(intent(1, 0.5, 100.0))
        rig.router.reconcile()
    (submitted,) = rig.events("OrderSubmitted")
    assert submitted.broker_order_id == next(iter(rig.alpaca.orders.values()))["id"]


def test_an_order_in_a_status_alpaca_py_does_not_know_halts_only_its_symbol():
    rig = AlpacaRig()
    rig.alpaca.add("manual-future", "AAPL", "sell", "3", status="some_future_status")
    report = rig.router.reconcile()
    assert list(report.failures) == ["AAPL"]
    assert rig.router.set_kill_switch(True, "operator: stop")["canceled"] == ["manual-future"]
    assert rig.alpaca.deletes() == 1


def test_fractional_quantities_reach_alpaca_without_float_noise():
    rig = AlpacaRig()
    rig.router.quantity_step, rig.router.initial_equity = 0.1, 100.0
    # 70 % of 100 equity at 100 is 0.7 share: 7 steps of 0.1, 0.7000000000000001 as a float
    coid = rig.traded(target=0.7)
    assert rig.store.get_order(coid).quantity == 7 * 0.1 != 0.7
    assert rig.alpaca.orders[coid]["qty"] == "0.7"


def test_a_listing_that_fails_still_cancels_our_working_orders():
    rig = AlpacaRig()
    ours = rig.working("et" + "c" * 30)
    rig.alpaca.answers["GET /v2/orders"] = [requests.exceptions.ConnectionError("connection reset")]
    with pytest.raises(CancelFailedError, match="open orders"):
        rig.router.set_kill_switch(True, "operator: stop")
    assert rig.alpaca.orders[ours.client_order_id]["status"] == "pending_cancel"


def bar(minute: int, target: float, price: float, symbol: str = "SPX") -> OrderIntent:
    """An intent on a minute bar of one trading day (the breaker's day does not roll over)."""
    ts = T0 + timedelta(hours=15, minutes=minute)
    return OrderIntent(intent_id=make_intent_id("ens", symbol, ts, "v1"), strategy_id="ens", symbol=symbol,
                       timestamp=ts, target_position=target, reference_price=price, model_version="v1",
                       regime=Regime.BULL, confidence=0.9)


def filled_at_alpaca(rig: AlpacaRig) -> str:
    """SPX warmed up, a buy of 500 that Alpaca acknowledged, then filled (a market order, within ms)."""
    rig.router.handle(bar(0, 0.0, 100.0))
    rig.router.handle(bar(1, 0.5, 100.0))
    (coid,) = rig.alpaca.orders
    assert rig.store.get_order(coid).status is OrderStatus.SUBMITTED
    rig.alpaca.fill(coid, 500, 100.0)
    return coid


def test_an_alpaca_fill_is_booked_before_the_next_intent_plans():
    """Was booked only by the next reconciliation: equity left out the position's loss (the
    breaker blind), and the order still counted as working."""
    rig = AlpacaRig()
    coid = filled_at_alpaca(rig)
    out = rig.router.handle(bar(2, 0.5, 93.0))  # SPX -7 %: 500 × 7 = 3,500 lost
    assert out.fills == 1 and rig.store.get_order(coid).status is OrderStatus.FILLED
    assert rig.store.get_position("SPX").quantity == 500 == rig.alpaca.positions["SPX"]
    assert out.account["equity"] == 96_500 and out.account["trading_state"] == "REDUCING"
    assert out.orders == []  # no top-up bought against an order counted as still working
    (filled,) = rig.events("OrderFilled")
    assert filled.client_order_id == coid and filled.quantity == 500
    out = rig.router.handle(bar(3, 0.5, 88.0))  # 6 % lost: the daily-loss limit halts
    assert out.account["trading_state"] == "HALTED" and out.orders == []


def test_under_reducing_the_exit_of_a_position_filled_at_alpaca_goes_out():
    """Was refused REDUCING_ONLY: the held position read 0, so selling 500 looked like a new short."""
    rig = AlpacaRig()
    filled_at_alpaca(rig)
    state = rig.store.load_risk_state()
    state.trading_state, state.state_reason = TradingState.REDUCING, "test"
    rig.store.save_risk_state(state)
    out = rig.router.handle(bar(2, 0.0, 100.0))
    assert out.rejections == []
    ((side, quantity),) = [(o["side"], o["quantity"]) for o in out.orders]
    assert (side, quantity) == ("SELL", 500)


def test_a_failed_lookup_of_a_working_alpaca_order_fails_the_intent_and_its_redelivery_books_the_fill():
    rig = AlpacaRig()
    coid = filled_at_alpaca(rig)
    rig.alpaca.answers["GET /v2/orders:by_client_order_id"] = [requests.exceptions.ConnectionError("reset")]
    with pytest.raises(BrokerUnavailableError):
        rig.router.handle(bar(2, 0.0, 100.0))  # never planned on the stale books
    assert len(rig.alpaca.orders) == 1 and rig.store.get_order(coid).status is OrderStatus.SUBMITTED
    out = rig.router.handle(bar(2, 0.0, 100.0))  # SQS delivers it again
    assert out.fills == 1 and rig.store.get_position("SPX").quantity == 500
    ((side, quantity),) = [(o["side"], o["quantity"]) for o in out.orders]
    assert (side, quantity) == ("SELL", 500)


def order_placed_and_filled_while_reconcile_lists_open_orders(rig: AlpacaRig) -> OrderRouter:
    """The orders function (its own router over the same tables and account) places the bar's buy
    of 500, which Alpaca fills within ms, while reconciliation is listing Alpaca's open orders —
    after it looked up our working orders, before it reads the positions."""
    rig.router.handle(bar(0, 0.0, 100.0))
    orders_fn = OrderRouter(rig.store, rig.router.broker, FixedClock(WALL), events=rig.bus,
                            limits=RiskLimits(clock="event"), initial_equity=100_000,
                            reconcile_grace_seconds=60, reconcile_on_start=False)
    fake, send = rig.alpaca, rig.alpaca.send

    def racing_send(request, **kwargs):
        if request.method == "GET" and urlparse(request.url).path == "/v2/orders" and not fake.orders:
            orders_fn.handle(bar(1, 0.5, 100.0))
            (coid,) = fake.orders
            fake.fill(coid, 500, 100.0)
        return send(request, **kwargs)

    fake.send = racing_send
    return orders_fn


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "in-a-batch"])
def test_reconcile_does_not_halt_a_symbol_for_an_order_placed_and_filled_while_it_ran(batched):
    """Was 'position 0 here, 500 at the broker': SPX halted (its exit refused SYMBOL_HALTED) and
    ReconciliationFailed published, until the next run. In a batch (a container's first
    reconciliation) the batch's copies of the orders and positions are read again too."""
    rig = AlpacaRig()
    orders_fn = order_placed_and_filled_while_reconcile_lists_open_orders(rig)
    if batched:
        with rig.router.batch():
            report = rig.router.reconcile()
            assert rig.router.store.get_position("SPX").quantity == 500  # the batch's copy
    else:
        report = rig.router.reconcile()
    assert report.ok and rig.events("ReconciliationFailed") == []
    assert rig.store.load_risk_state().halted_symbols == {}
    (coid,) = rig.alpaca.orders
    assert rig.store.get_order(coid).status is OrderStatus.FILLED
    assert rig.store.get_position("SPX").quantity == 500
    assert orders_fn.handle(bar(2, 0.0, 100.0)).rejections == []  # the exit goes out


def test_reconcile_still_halts_a_symbol_whose_position_differs_after_the_second_look():
    rig = AlpacaRig()
    coid = rig.traded()
    rig.alpaca.fill(coid, 500, 100.0)
    rig.alpaca.positions["SPX"] = 700  # 200 bought at Alpaca by hand
    report = rig.router.reconcile()
    assert report.failures == {"SPX": ["position 500 here, 700 at the broker"]}
    assert rig.store.get_order(coid).status is OrderStatus.FILLED  # synced by the first pass


def fail_second_position_read(rig: AlpacaRig) -> None:
    """Alpaca answers the run's second read of the positions (the second look's) with HTTP 500."""
    fake, send = rig.alpaca, rig.alpaca.send
    reads = []

    def flaky(request, **kwargs):
        if request.method == "GET" and urlparse(request.url).path == "/v2/positions":
            reads.append(1)
            if len(reads) == 2:
                return fake.respond(request, 500, {"code": 50010000, "message": "internal server error"})
        return send(request, **kwargs)

    fake.send = flaky


def test_a_reconciliation_that_fails_part_way_publishes_the_fills_it_booked():
    """Was lost for good: the first pass booked the fill, the second look's position read failed,
    and reconcile() raised before publishing; the next run found the store up to date."""
    rig = AlpacaRig()
    coid = rig.traded()
    rig.alpaca.fill(coid, 500, 100.0)
    rig.alpaca.positions["SPX"] = 700  # 200 bought at Alpaca by hand: SPX gets a second look
    fail_second_position_read(rig)
    with pytest.raises(BrokerUnavailableError, match="listing positions"):
        rig.router.reconcile()
    assert rig.store.get_order(coid).status is OrderStatus.FILLED
    (filled,) = rig.events("OrderFilled")
    assert (filled.client_order_id, filled.quantity) == (coid, 500)
    # nothing was found not reconcilable before the failure: no halt, nothing lifted
    assert rig.events("ReconciliationFailed") == [] and rig.store.load_risk_state().halted_symbols == {}
    report = rig.router.reconcile()  # the next run halts SPX, and books (publishes) nothing twice
    assert report.failures == {"SPX": ["position 500 here, 700 at the broker"]}
    assert len(rig.events("OrderFilled")) == 1


def test_a_reconciliation_failing_part_way_reports_the_brokers_error_when_publishing_fails_too():
    """Was the bus's InfrastructureError, with the broker's error only as its context: the
    scheduled reconciliation's alarm and retry named EventBridge, not the broker."""
    rig = AlpacaRig()
    coid = rig.traded()
    rig.alpaca.fill(coid, 500, 100.0)
    rig.alpaca.positions["SPX"] = 700
    fail_second_position_read(rig)
    rig.bus.failures.fail("publish")
    with pytest.raises(BrokerUnavailableError, match="listing positions"):
        rig.router.reconcile()
    assert rig.store.get_order(coid).status is OrderStatus.FILLED


def test_a_reconciliation_that_fails_part_way_halts_what_it_found_and_lifts_nothing():
    rig = AlpacaRig()
    state = rig.store.load_risk_state()
    state.halted_symbols = {"NDX": "reconciliation failed: position 5 here, 0 at the broker"}
    rig.store.save_risk_state(state)
    rig.alpaca.add("manual-1", "AAPL", "buy", "3")  # an open order we never placed
    rig.alpaca.answers["GET /v2/positions"] = [(500, {"code": 50010000, "message": "internal server error"})]
    with pytest.raises(BrokerUnavailableError, match="listing positions"):
        rig.router.reconcile()
    halted = rig.store.load_risk_state().halted_symbols
    assert sorted(halted) == ["AAPL", "NDX"] and "manual-1" in halted["AAPL"]  # NDX was never compared
    (failed,) = rig.events("ReconciliationFailed")
    assert failed.symbol == "AAPL"


def lookups(rig: AlpacaRig, since: int) -> int:
    return sum(1 for request in rig.alpaca.requests[since:] if request == ("GET", "/v2/orders:by_client_order_id"))


def test_an_unknown_order_settled_before_an_intent_is_not_looked_up_again():
    """Was two lookups of one order (Alpaca limits requests per minute): the settling of the
    UNKNOWN order synced it SUBMITTED, then the booking of the symbol's working orders looked it up."""
    rig = AlpacaRig()
    rig.router.submit_in_flight_seconds = 0.0
    rig.router.handle(bar(0, 0.0, 100.0))
    rig.alpaca.lose_submit_response = True
    rig.alpaca.answers["GET /v2/orders:by_client_order_id"] = [requests.exceptions.ConnectionError("reset")]
    rig.router.handle(bar(1, 0.5, 100.0))
    rig.alpaca.lose_submit_response = False
    (coid,) = rig.alpaca.orders
    assert rig.store.get_order(coid).status is OrderStatus.UNKNOWN
    n = len(rig.alpaca.requests)
    out = rig.router.handle(bar(2, 0.5, 100.0))
    assert rig.alpaca.requests[n:] == [("GET", "/v2/orders:by_client_order_id")]
    assert rig.store.get_order(coid).status is OrderStatus.SUBMITTED and out.orders == []


def test_the_kill_switch_does_not_look_up_an_order_its_cancel_just_read():
    """Was five requests: the cancel's lookup, DELETE and lookup after it, then one more lookup."""
    rig = AlpacaRig()
    rig.router.handle(bar(0, 0.0, 100.0))
    rig.router.handle(bar(1, 0.5, 100.0))
    (coid,) = rig.alpaca.orders
    state = rig.store.load_risk_state()
    state.kill_switch, state.kill_switch_reason = True, "operator: stop"
    rig.store.save_risk_state(state, write_kill_switch=True)  # this container missed the event
    n = len(rig.alpaca.requests)
    out = rig.router.handle(bar(2, 0.5, 100.0))
    assert [method for method, _ in rig.alpaca.requests[n:]] == ["GET", "GET", "DELETE", "GET"]
    assert lookups(rig, n) == 2  # the cancel's own, before and after its DELETE
    assert rig.alpaca.orders[coid]["status"] == "pending_cancel" and out.orders == []


def test_a_redelivery_does_not_look_up_its_own_working_order_twice():
    """Was two lookups: one booking the symbol's working orders, one resolving the intent's own leg."""
    rig = AlpacaRig()
    rig.router.handle(bar(0, 0.0, 100.0))
    first = bar(1, 0.5, 100.0)
    rig.router.handle(first)
    (coid,) = rig.alpaca.orders
    rig.alpaca.fill(coid, 250, 80.0)  # equity is now 105,000: the replan collides with the recorded leg
    n = len(rig.alpaca.requests)
    out = rig.router.handle(first)  # SQS delivers it again
    assert out.resolved_existing == 1 and out.fills == 1 and out.orders == []
    assert rig.alpaca.requests[n:] == [("GET", "/v2/orders:by_client_order_id")]
    stored = rig.store.get_order(coid)
    assert (stored.status, stored.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 250)
