"""An intent whose order never reached the broker is delivered again by SQS, and that redelivery
must win: reconciliation does not retire the order while the intent is still being delivered, and
a redelivery that cannot look its own unsent order up fails again rather than completing. Once
the intent is given up (dead-lettered, or refused on a redelivery) nothing sends its order, and
the symbol's next intent must not count it as working although the grace still spares it.

Timeline of the deployed figures: the orders function's timeout T = 30 s, the order-intents
queue's visibility timeout 6 T = 180 s (a failed intent comes back that long after its receive),
the reconciliation grace VT + 2 T = 240 s, measured from the order's last attempt.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from ensemble_trader.constants import function_spec
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.models import OrderStatus, make_intent_id
from ensemble_trader.domain.orders import (
    BrokerAuthenticationError,
    BrokerUnavailableError,
    UnknownOutcomeError,
)
from ensemble_trader.domain.risk import RejectReason
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.orders import (
    IntentConsumer,
    OrderRouter,
    OrdersService,
    OrdersSettings,
    ReconcileGraceError,
    SubmitInFlightError,
    reconcile_grace_seconds_for,
    redelivery_gap_seconds,
    require_grace_past_redelivery,
    visibility_timeout_seconds,
)

from tests.unit.test_orders_handler import fifo_record
from tests.unit.test_orders_router import WALL, BrokerWrapper, Rig, intent

ORDERS = function_spec("orders")
VT = visibility_timeout_seconds(ORDERS)
GRACE = reconcile_grace_seconds_for(ORDERS)


class Outage(BrokerWrapper):
    """The paper broker behind a switch: ``refusing`` answers every call as Alpaca does to
    revoked keys, ``down`` fails every call as an outage (HTTP 503) does; nothing is placed."""

    def __init__(self, inner):
        super().__init__(inner)
        self.refusing = False
        self.down = False
        self.only: str | None = None  # fail only the calls naming this (an order id)

    def _check(self, what: str) -> None:
        if self.only is not None and self.only not in what:
            return
        if self.refusing:
            raise BrokerAuthenticationError(f"{what}: Alpaca refused the API key (HTTP 401)")
        if self.down:
            raise BrokerUnavailableError(f"{what}: HTTP 503: service unavailable")

    def submit(self, order):
        self._check(f"submit of {order.client_order_id}")
        return self.inner.submit(order)

    def get_order_by_client_id(self, client_order_id):
        self._check(f"lookup of {client_order_id}")
        return self.inner.get_order_by_client_id(client_order_id)

    def list_open_orders(self):
        self._check("listing open orders")
        return self.inner.list_open_orders()

    def list_positions(self):
        self._check("listing positions")
        return self.inner.list_positions()

    def cancel(self, client_order_id):
        self._check(f"cancel of {client_order_id}")
        return self.inner.cancel(client_order_id)


def at(seconds: float):
    return WALL + timedelta(seconds=seconds)


def deployed_rig() -> Rig:
    rig = Rig(broker=Outage)
    rig.router.reconcile_grace_seconds = GRACE  # as the stage runs it (the settings' default)
    rig.warm()
    return rig


def container(rig: Rig) -> OrderRouter:
    """A fresh orders container: its router reconciles before its first intent."""
    router = rig.new_router()
    router.reconcile_grace_seconds = GRACE
    return router


def test_the_deployed_grace_is_longer_than_a_failed_intents_redelivery_gap():
    assert (VT, redelivery_gap_seconds(ORDERS), GRACE) == (180, 210, 240)
    assert OrdersSettings().reconcile_grace_seconds == GRACE  # the operator's CLI judges as the stage does
    assert require_grace_past_redelivery(GRACE, ORDERS) == GRACE
    with pytest.raises(ReconcileGraceError, match=r"GRACE_SECONDS=120 is not longer than the redelivery gap "
                                                  r"of the order-intents queue \(210 s.*180 s.*30 s"):
        require_grace_past_redelivery(120, ORDERS)  # the figure deployed before: a refused trade was dropped


def test_a_refused_submit_is_not_retired_by_a_reconciliation_between_its_deliveries():
    """Alpaca refuses the keys at the first delivery and at the redelivery 3 minutes later; the
    new pair is in place at 4 minutes, and the 5-minute schedule reconciles before SQS brings the
    intent back at 6. The order was created 300 s before that reconciliation, past the grace —
    but attempted 120 s before it: it waits for its intent, which then places it, once."""
    rig = deployed_rig()
    it = intent(1, 0.5, 100.0)
    rig.broker.refusing = True
    for delivery in range(2):  # the first delivery, then SQS's redelivery a visibility timeout later
        rig.clock.set(at(delivery * VT))
        with pytest.raises(BrokerAuthenticationError):
            rig.router.handle(it)
    (pending,) = rig.store.list_orders(working_only=True)
    assert pending.status is OrderStatus.PENDING and pending.updated_at == at(VT) > pending.created_at
    rig.broker.refusing = False
    rig.clock.set(at(300))
    report = rig.router.reconcile()  # the scheduled run, with the keys working again
    assert report.not_at_broker == [] and len(report.waiting) == 1
    rig.clock.set(at(2 * VT))
    outcome = rig.router.handle(it)
    assert outcome.resolved_existing == 1 and not outcome.rejections
    assert rig.store.get_order(pending.client_order_id).status is OrderStatus.SUBMITTED
    assert rig.paper.created == 1
    rig.router.handle(it)  # delivered once more: nothing new at the broker
    assert rig.paper.created == 1


def test_a_containers_first_reconciliation_spares_the_order_of_the_intent_it_was_started_for():
    """Each delivery lands in a fresh container whose first reconciliation is refused too (the
    keys): the deliveries still count as attempts, so the container that finally reconciles with
    working keys leaves the order to the intent it was invoked for."""
    rig = deployed_rig()
    it = intent(1, 0.5, 100.0)
    rig.broker.refusing = True
    with pytest.raises(BrokerAuthenticationError):
        rig.router.handle(it)
    for delivery in (1, 2, 3):
        rig.clock.set(at(delivery * VT))
        with pytest.raises(BrokerAuthenticationError, match="listing open orders|lookup of"):
            container(rig).handle(it)  # refused in its first reconciliation, before planning anything
    rig.broker.refusing = False
    rig.clock.set(at(4 * VT))  # 720 s after the order was recorded
    outcome = container(rig).handle(it)
    assert outcome.resolved_existing == 1 and not outcome.rejections
    (placed,) = [o for o in rig.store.list_orders() if o.intent_id == it.intent_id]
    assert placed.status is OrderStatus.SUBMITTED and rig.paper.created == 1


def test_an_order_whose_intent_went_to_the_dead_letter_queue_is_retired_a_grace_after_its_last_attempt():
    rig = deployed_rig()
    it = intent(1, 0.5, 100.0)
    rig.broker.refusing = True
    last = 9 * VT
    for delivery in range(10):  # maxReceiveCount 10, then the queue moves it to orders-dlq.fifo
        rig.clock.set(at(delivery * VT))
        with pytest.raises(BrokerAuthenticationError):
            rig.router.handle(it)
    rig.broker.refusing = False
    rig.clock.set(at(last + GRACE - 1))
    assert rig.router.reconcile().not_at_broker == []
    rig.clock.set(at(last + GRACE))
    (retired,) = rig.router.reconcile().not_at_broker
    assert "240 s after its last attempt" in retired
    (order,) = [o for o in rig.store.list_orders() if o.intent_id == it.intent_id]
    assert order.status is OrderStatus.REJECTED and order.reject_code == RejectReason.NOT_AT_BROKER.value
    assert rig.paper.created == 0


def test_a_redelivery_whose_lookup_of_its_own_unsent_order_fails_fails_again():
    """Not only refused keys: any failed lookup of the intent's own PENDING order fails the intent
    (it was completed with the order never sent, and reconciliation then retired it)."""
    rig = deployed_rig()
    it = intent(1, 0.5, 100.0)
    rig.broker.refusing = True
    with pytest.raises(BrokerAuthenticationError):
        rig.router.handle(it)
    rig.broker.refusing, rig.broker.down = False, True  # the keys work again, Alpaca has an outage
    rig.clock.set(at(VT))
    with pytest.raises(BrokerUnavailableError, match="lookup of .*HTTP 503"):
        rig.router.handle(it)
    (pending,) = rig.store.list_orders(working_only=True)
    assert pending.status is OrderStatus.PENDING and pending.updated_at == at(VT)
    rig.broker.down = False
    rig.clock.set(at(2 * VT))
    assert rig.router.handle(it).resolved_existing == 1
    assert rig.store.get_order(pending.client_order_id).status is OrderStatus.SUBMITTED
    assert rig.paper.created == 1


def test_a_failed_lookup_elsewhere_is_still_left_to_reconciliation():
    """A submit whose outcome is unknown is resolved by a lookup; when that lookup fails too, the
    intent completes (the order is UNKNOWN: the broker may have it) and reconciliation settles it."""

    class LostAnswer(Outage):
        def submit(self, order):
            self.inner.submit(order)
            self.down = True  # the answer is lost, and the broker stays unreachable for the lookup
            raise UnknownOutcomeError(order.client_order_id, "read timeout")

    rig = Rig(broker=LostAnswer)
    rig.router.reconcile_grace_seconds = GRACE
    rig.warm()
    outcome = rig.router.handle(intent(1, 0.5, 100.0))
    (unknown,) = rig.store.list_orders(working_only=True)
    assert unknown.status is OrderStatus.UNKNOWN and outcome.orders
    rig.broker.down = False
    assert rig.router.reconcile().synced
    assert rig.store.get_order(unknown.client_order_id).status is OrderStatus.SUBMITTED


def test_a_deferred_redelivery_still_counts_as_an_attempt():
    class Short:
        def get_remaining_time_in_millis(self) -> int:
            return 1

    rig = deployed_rig()
    it = intent(1, 0.5, 100.0)
    rig.broker.refusing = True
    with pytest.raises(BrokerAuthenticationError):
        rig.router.handle(it)
    consumer = IntentConsumer(rig.router, dead_letters=None)
    rig.clock.set(at(VT))
    with pytest.raises(InfrastructureError, match="left for its next delivery"):
        consumer.process(it.model_dump_json(), None, Short())
    (pending,) = rig.store.list_orders(working_only=True)
    assert pending.updated_at == at(VT)


def test_the_orders_handler_fails_the_record_and_its_symbols_later_intents_and_keeps_the_others(monkeypatch):
    """Through functions/orders/handler.py: the intent whose own unsent order cannot be looked up is
    a batch-item failure, the later intent of its symbol (FIFO group) is failed unprocessed, the
    other symbol's intent is traded and its risk state saved; the redelivered pair then trades once."""
    rig = deployed_rig()
    rig.warm("IXIC", 50.0)
    first, later, other = intent(1, 0.5, 100.0), intent(2, 0.5, 101.0), intent(1, 0.4, 51.0, "IXIC")
    rig.broker.refusing = True
    with pytest.raises(BrokerAuthenticationError):  # its first delivery: the submit is refused
        rig.router.handle(first)
    (pending,) = rig.store.list_orders(working_only=True)
    rig.broker.refusing, rig.broker.down, rig.broker.only = False, True, pending.client_order_id
    handler = load_module("orders", "handler", fresh=True)
    service = OrdersService(router=rig.router, consumer=IntentConsumer(rig.router, dead_letters=None),
                            idempotency_config=IdempotencyConfig())
    monkeypatch.setattr(handler, "service", lambda: service)

    def record(message_id: str, it, seq: int) -> dict:
        return dict(fifo_record(message_id, it.symbol, seq), body=it.model_dump_json())

    rig.clock.set(at(VT))
    event = {"Records": [record("spx-1", first, 1), record("ixic-1", other, 2), record("spx-2", later, 3)]}
    response = handler.lambda_handler(event, FakeLambdaContext("et-dev-orders"))
    assert response == {"batchItemFailures": [{"itemIdentifier": "spx-1"}, {"itemIdentifier": "spx-2"}]}
    spx = [o for o in rig.store.list_orders() if o.symbol == "SPX" and o.status is not OrderStatus.REJECTED]
    assert [(o.intent_id, o.status) for o in spx] == [(first.intent_id, OrderStatus.PENDING)]  # later: not run
    (ixic,) = [o for o in rig.store.list_orders(working_only=True) if o.symbol == "IXIC"]
    assert ixic.status is OrderStatus.SUBMITTED
    marks = rig.store.load_risk_state().marks
    assert marks["IXIC"].price == 51.0 and marks["SPX"].price == 100.0  # the batch's risk state was written

    rig.broker.down = False
    rig.clock.set(at(2 * VT))
    event = {"Records": [record("spx-1", first, 1), record("spx-2", later, 3)]}
    assert handler.lambda_handler(event, FakeLambdaContext("et-dev-orders")) == {"batchItemFailures": []}
    assert rig.store.get_order(spx[0].client_order_id).status is OrderStatus.FILLED  # at the later bar
    sent = [o for o in rig.store.list_orders() if o.status is not OrderStatus.REJECTED]
    assert {o.intent_id for o in sent} == {first.intent_id, later.intent_id, other.intent_id}
    assert rig.paper.created == len(sent) == 3  # one broker order per recorded order: none twice
    assert rig.store.load_risk_state().marks["SPX"].price == 101.0


# ------------------------------------------------------------------------------------------------
# Once the intent is given up (dead-lettered, or refused on a redelivery), nothing sends its
# PENDING order: the symbol's next intent must not count it as working.
# ------------------------------------------------------------------------------------------------


def fresh_intent(seconds: float, target: float, price: float, symbol: str = "SPX"):
    """An intent dated ``seconds`` after WALL (for the intent-age limit, which compares with the wall clock)."""
    ts = at(seconds)
    return intent(0, target, price, symbol).model_copy(
        update={"intent_id": make_intent_id("ens", symbol, ts, "v1"), "timestamp": ts}
    )


def superseded_events(rig: Rig, client_order_id: str) -> list:
    return [e for e in rig.events("OrderRejected") if e.client_order_id == client_order_id]


def test_the_unsent_order_of_a_dead_lettered_intent_is_not_traded_against_by_the_next_intent():
    """A 503 outage through all 10 receives of a buy to 50 %: the 10th delivery recorded an attempt
    on its PENDING order, SQS moves the intent to the DLQ a visibility timeout later and only then
    delivers the symbol's next intent — within the grace, so reconciliation still spares the order.
    The next intent (flat, account flat) counted the dead order's 500 as working and sold 500: the
    account went short. Now it looks the order up, retires it and plans from the position."""
    rig = deployed_rig()
    first = intent(1, 0.5, 100.0)
    rig.broker.down = True
    for delivery in range(10):
        rig.clock.set(at(delivery * VT))
        with pytest.raises(BrokerUnavailableError):
            rig.router.handle(first)
    (dead,) = rig.store.list_orders(working_only=True)
    assert dead.status is OrderStatus.PENDING and dead.side.value == "BUY" and dead.quantity == 500
    rig.broker.down = False
    rig.clock.set(at(10 * VT))  # the 11th receive: moved to orders-dlq.fifo; the next intent comes
    assert rig.router.reconcile().not_at_broker == []  # 180 s after its last attempt: within the grace

    following = intent(2, 0.0, 100.0)
    outcome = rig.router.handle(following)
    assert outcome.orders == [] and outcome.rejections == []  # no SELL 500
    retired = rig.store.get_order(dead.client_order_id)
    assert retired.status is OrderStatus.REJECTED and retired.reject_code == RejectReason.NOT_AT_BROKER.value
    assert f"superseded by intent {following.intent_id}" in retired.reject_reason
    assert [s["client_order_id"] for s in outcome.superseded] == [dead.client_order_id]
    (event,) = superseded_events(rig, dead.client_order_id)
    assert event.reason_code == RejectReason.NOT_AT_BROKER.value
    assert rig.paper.created == 0 and rig.store.get_position("SPX") is None
    assert rig.store.list_orders(working_only=True) == []

    later = rig.router.handle(intent(3, 0.5, 100.0))  # the buy is decided again, from the position
    assert [(o["side"], o["quantity"]) for o in later.orders] == [("BUY", 500.0)]
    assert rig.paper.created == 1


def test_a_redelivery_refused_as_stale_retires_its_unsent_order():
    """Keys refused for 4 deliveries; the 5th is older than max_intent_age and refused STALE_INTENT.
    Its PENDING order (touched by that delivery) was left for the grace, and the next intent with
    the same target 0.5 on a flat account counted it as working and sold 5. Now the refused
    delivery retires it (looked up first) and the next intent buys to its target."""
    rig = Rig(broker=Outage, max_intent_age_seconds=600)
    rig.router.reconcile_grace_seconds = GRACE
    assert not rig.router.handle(fresh_intent(-120, 0.0, 100.0)).orders  # a reference price
    first = fresh_intent(-60, 0.5, 100.0)
    rig.broker.refusing = True
    for delivery in range(4):
        rig.clock.set(at(delivery * VT))
        with pytest.raises(BrokerAuthenticationError):
            rig.router.handle(first)
    (pending,) = rig.store.list_orders(working_only=True)
    rig.broker.refusing = False
    rig.clock.set(at(4 * VT))  # 780 s old now
    refused = rig.router.handle(first)
    assert [r["reason"] for r in refused.rejections] == [RejectReason.STALE_INTENT.value,
                                                         RejectReason.NOT_AT_BROKER.value]
    retired = rig.store.get_order(pending.client_order_id)
    assert retired.status is OrderStatus.REJECTED and retired.reject_code == RejectReason.NOT_AT_BROKER.value
    assert "its intent was refused (STALE_INTENT: intent is 780 s old" in retired.reject_reason
    assert len(superseded_events(rig, pending.client_order_id)) == 1
    assert rig.paper.created == 0

    following = rig.router.handle(fresh_intent(4 * VT - 30, 0.5, 101.0))
    assert [(o["side"], o["quantity"]) for o in following.orders] == [("BUY", 495.0)]  # not SELL 5
    assert following.superseded == [] and rig.paper.created == 1


def test_a_refused_redelivery_whose_lookup_fails_leaves_the_order_to_the_next_intent():
    """Never retire an order the broker may have: the refused intent completes with its order
    PENDING; the next intent fails while the lookup fails, then settles it and trades."""
    rig = Rig(broker=Outage, max_intent_age_seconds=600)
    rig.router.reconcile_grace_seconds = GRACE
    rig.router.handle(fresh_intent(-120, 0.0, 100.0))
    first = fresh_intent(-60, 0.5, 100.0)
    rig.broker.refusing = True
    with pytest.raises(BrokerAuthenticationError):
        rig.router.handle(first)
    (pending,) = rig.store.list_orders(working_only=True)
    rig.broker.refusing, rig.broker.down = False, True
    rig.clock.set(at(4 * VT))
    refused = rig.router.handle(first)  # refused STALE_INTENT; the lookup fails: the order is left
    assert [r["reason"] for r in refused.rejections] == [RejectReason.STALE_INTENT.value]
    assert rig.store.get_order(pending.client_order_id).status is OrderStatus.PENDING
    following = fresh_intent(4 * VT - 30, 0.5, 101.0)
    with pytest.raises(BrokerUnavailableError, match=f"lookup of {pending.client_order_id}"):
        rig.router.handle(following)  # fails and is delivered again: nothing planned around it
    assert rig.store.get_order(pending.client_order_id).status is OrderStatus.PENDING
    assert rig.paper.created == 0
    rig.broker.down = False
    rig.clock.set(at(5 * VT))
    outcome = rig.router.handle(following)
    assert rig.store.get_order(pending.client_order_id).reject_code == RejectReason.NOT_AT_BROKER.value
    assert [(o["side"], o["quantity"]) for o in outcome.orders] == [("BUY", 495.0)]
    assert rig.paper.created == 1


def test_an_earlier_intents_pending_order_the_broker_has_is_synced_not_retired():
    """The submit reached the broker but the process died before recording it (PENDING here):
    the next intent finds it at the broker, books it and does not buy again."""

    class DiesAfterSubmit(Outage):
        def submit(self, order):
            self.inner.submit(order)
            raise SystemExit("process killed after the broker accepted")

    rig = Rig(broker=DiesAfterSubmit)
    rig.router.reconcile_grace_seconds = GRACE
    rig.warm()
    with pytest.raises(SystemExit):
        rig.router.handle(intent(1, 0.5, 100.0))
    (pending,) = rig.store.list_orders(working_only=True)
    assert pending.status is OrderStatus.PENDING
    rig.clock.set(at(10 * VT))
    outcome = rig.router.handle(intent(2, 0.5, 100.0))
    assert outcome.orders == [] and outcome.superseded == []
    assert rig.store.get_order(pending.client_order_id).status is OrderStatus.FILLED
    assert rig.store.get_position("SPX").quantity == 500
    assert rig.paper.created == 1


# ------------------------------------------------------------------------------------------------
# An earlier intent's UNKNOWN order (its submit timed out; the lookup right after did not find it)
# is settled the same way before the symbol's next intent plans: the grace keeps reconciliation
# off it for 240 s, and on minute bars the next intent comes 60 s later.
# ------------------------------------------------------------------------------------------------


class LostSubmit(Outage):
    """A submit that times out: ``reached`` says whether the broker got the order first."""

    def __init__(self, inner):
        super().__init__(inner)
        self.lose = True
        self.reached = False

    def submit(self, order):
        if not self.lose:
            return super().submit(order)
        if self.reached:
            self.inner.submit(order)
            self.down, self.only = True, order.client_order_id  # and the lookup right after fails
        raise UnknownOutcomeError(order.client_order_id, "read timeout after 5 s")


def minute(n: float, target: float, price: float = 100.0):
    """The symbol's intent of the bar ``n`` minutes after WALL, handled at its bar time."""
    return fresh_intent(60 * n, target, price)


def timed_out_rig(reached: bool = False) -> tuple[Rig, object]:
    """A buy to 50 % at minute 0 whose submit timed out: UNKNOWN here, not found by the lookup."""
    rig = Rig(broker=LostSubmit)
    rig.router.reconcile_grace_seconds = GRACE
    rig.router.handle(minute(-1, 0.0))  # a reference price
    rig.broker.reached = reached
    first = rig.router.handle(minute(0, 0.5))
    (unknown,) = rig.store.list_orders(working_only=True)
    assert unknown.status is OrderStatus.UNKNOWN and unknown.quantity == 500 and first.orders
    assert rig.paper.created == (1 if reached else 0)  # reached: landed, but the lookup missed it
    rig.broker.lose, rig.broker.down = False, False
    return rig, unknown


@pytest.mark.parametrize(("target", "expected"), [(0.0, []), (0.5, [("BUY", 500.0)])])
def test_an_unknown_order_that_never_reached_the_broker_is_not_traded_against_by_the_next_intent(target, expected):
    """The next intent, a minute later (within the grace: reconciliation still waits), counted the
    phantom BUY 500 as working: a flat target sold 500 (short), the same target sent nothing. Now it
    looks the order up, retires it NOT_AT_BROKER and plans from the position."""
    rig, unknown = timed_out_rig()
    rig.clock.set(at(60))
    assert rig.router.reconcile().not_at_broker == []  # within the grace
    following = minute(1, target)
    outcome = rig.router.handle(following)
    assert [(o["side"], o["quantity"]) for o in outcome.orders] == expected
    retired = rig.store.get_order(unknown.client_order_id)
    assert retired.status is OrderStatus.REJECTED and retired.reject_code == RejectReason.NOT_AT_BROKER.value
    assert "unknown submit outcome" in retired.reject_reason
    assert f"superseded by intent {following.intent_id}" in retired.reject_reason
    assert [s["client_order_id"] for s in outcome.superseded] == [unknown.client_order_id]
    (event,) = superseded_events(rig, unknown.client_order_id)
    assert event.reason_code == RejectReason.NOT_AT_BROKER.value
    rig.clock.set(at(120))
    rig.router.handle(minute(2, target))  # the next bar fills what was sent: nothing else
    position = rig.store.get_position("SPX")
    assert (position.quantity if position else 0.0) == 1000 * target  # 50 % of 100,000 at 100: 500
    assert rig.paper.created == len(expected)


def test_an_earlier_intents_unknown_order_the_broker_has_is_synced_not_retired():
    """The usual case: the submit did land (its answer was lost, the lookup right after missed it).
    The next intent finds it, books it and does not buy again."""
    rig, unknown = timed_out_rig(reached=True)
    rig.clock.set(at(60))
    outcome = rig.router.handle(minute(1, 0.5))
    assert outcome.orders == [] and outcome.superseded == []
    assert rig.store.get_order(unknown.client_order_id).status is OrderStatus.FILLED
    assert rig.store.get_position("SPX").quantity == 500
    assert rig.paper.created == 1


def test_a_just_created_unknown_order_fails_the_next_intent_until_its_submit_cannot_be_in_flight():
    """The next intent comes within the broker client's request timeout of the timed-out submit
    (the same batch): the request may still be landing, so the order is neither retired nor planned
    around — the intent fails. Its redelivery finds the order that landed meanwhile: one BUY 500."""
    rig, unknown = timed_out_rig()
    assert rig.router.submit_in_flight_seconds == 5.0
    following = fresh_intent(3, 0.5, 100.0)
    rig.clock.set(at(4))
    with pytest.raises(SubmitInFlightError, match=f"outcome of {unknown.client_order_id} unknown: its submit gave "
                                                  r"up 4\.0 s ago, within the broker request timeout of 5 s"):
        rig.router.handle(following)
    assert rig.store.get_order(unknown.client_order_id).status is OrderStatus.UNKNOWN
    assert rig.paper.created == 0 and [o.intent_id for o in rig.store.list_orders(working_only=True)] == [
        unknown.intent_id]
    rig.paper.submit(unknown.model_copy(update={"status": OrderStatus.PENDING}))  # the request landed after all
    rig.clock.set(at(VT))  # SQS delivers the intent again
    outcome = rig.router.handle(following)
    assert outcome.orders == [] and outcome.superseded == []
    assert rig.store.get_position("SPX").quantity == 500 and rig.paper.created == 1


def test_an_unknown_order_absent_past_the_request_timeout_is_retired():
    """At the request timeout after the submit gave up, absent means never landed: retired, and a
    flat target a few seconds later sells nothing."""
    rig, unknown = timed_out_rig()
    rig.clock.set(at(5))
    outcome = rig.router.handle(fresh_intent(3, 0.0, 100.0))
    assert [s["client_order_id"] for s in outcome.superseded] == [unknown.client_order_id]
    assert outcome.orders == [] and rig.paper.created == 0


def test_the_lookup_of_an_earlier_intents_unknown_order_failing_fails_the_next_intent():
    rig, unknown = timed_out_rig()
    rig.broker.down, rig.broker.only = True, unknown.client_order_id
    rig.clock.set(at(60))
    following = minute(1, 0.0)
    with pytest.raises(BrokerUnavailableError, match=f"lookup of {unknown.client_order_id}"):
        rig.router.handle(following)  # no SELL 500 against an order the broker may hold
    assert rig.store.get_order(unknown.client_order_id).status is OrderStatus.UNKNOWN
    assert rig.paper.created == 0 and rig.store.get_position("SPX") is None
    rig.broker.down = False
    rig.clock.set(at(60 + VT))
    assert rig.router.handle(following).orders == []
    assert rig.store.get_order(unknown.client_order_id).reject_code == RejectReason.NOT_AT_BROKER.value


def test_a_superseded_unknown_order_whose_submit_lands_later_is_canceled_at_the_broker():
    """Retired NOT_AT_BROKER (a never-sent code), then the submit lands after all: reconciliation's
    sync cancels it at the broker instead of reopening it here, and nothing is booked."""
    rig, unknown = timed_out_rig()
    rig.clock.set(at(60))
    rig.router.handle(minute(1, 0.0))
    assert rig.store.get_order(unknown.client_order_id).reject_code == RejectReason.NOT_AT_BROKER.value
    rig.paper.submit(unknown.model_copy(update={"status": OrderStatus.PENDING}))  # the late landing
    assert [o.client_order_id for o in rig.paper.list_open_orders()] == [unknown.client_order_id]
    rig.clock.set(at(90))
    report = rig.router.reconcile()
    assert report.ok and rig.paper.list_open_orders() == []
    assert rig.paper.get_order_by_client_id(unknown.client_order_id).status is OrderStatus.CANCELED
    assert rig.store.get_position("SPX") is None
    assert rig.store.get_order(unknown.client_order_id).status in (OrderStatus.REJECTED, OrderStatus.CANCELED)
    assert rig.store.list_orders(working_only=True) == []


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), "5", True])
def test_the_in_flight_window_must_be_a_finite_number_of_seconds(bad):
    rig = Rig()
    with pytest.raises(ValueError, match="submit_in_flight_seconds must be a finite number of seconds >= 0"):
        OrderRouter(rig.store, rig.broker, rig.clock, submit_in_flight_seconds=bad)
