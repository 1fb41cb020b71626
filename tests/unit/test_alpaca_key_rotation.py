"""Broker keys rotated while containers are warm: the Alpaca adapter reads its secret again when
Alpaca refuses the keys (401), rebuilds its client with the new pair and makes the call once more.

The orders, reconcile and kill_switch entries each build their router (and its AlpacaBroker) once
per container; the re-read lives in the adapter, so all three pick the new pair up at their next
refused call. As in test_orders_alpaca_flows.py, Alpaca is a stateful fake mounted on alpaca-py's
own requests session; here it also checks the key of every request, answering a revoked one as
Alpaca does (tests/fixtures/alpaca/submit_unauthorized.json).
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.adapters.brokers.alpaca import AlpacaBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore
from ensemble_trader.domain.models import OrderStatus
from ensemble_trader.domain.orders import BrokerRejectedError, BrokerUnavailableError
from ensemble_trader.domain.risk import RiskLimits
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import OrderRouter

from tests.unit.test_brokers_alpaca import FIXTURES, Recorded, order
from tests.unit.test_orders_alpaca_flows import FakeAlpaca
from tests.unit.test_orders_router import WALL, intent

SECRET = "et-prod-broker-keys"
UNAUTHORIZED = json.loads((FIXTURES / "submit_unauthorized.json").read_text())


class KeyCheckingAlpaca(FakeAlpaca):
    """The fake Alpaca, answering 401 to a request whose key pair is not (or no longer) valid."""

    def __init__(self, *valid: tuple[str, str]):
        super().__init__()
        self.valid = set(valid)
        self.keys_seen: list[str] = []

    def send(self, request, **kwargs):
        pair = (request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY"))
        self.keys_seen.append(pair[0])
        if pair not in self.valid:
            self.requests.append((request.method, request.path_url))
            return self.respond(request, UNAUTHORIZED["status"], UNAUTHORIZED["body"])
        return super().send(request, **kwargs)


class FakeSecrets:
    """Secrets Manager's get_secret_value over one secret; counts the reads."""

    def __init__(self, api_key: str, secret_key: str):
        self.value = {"api_key": api_key, "secret_key": secret_key}
        self.reads = 0
        self.fail: Exception | None = None

    def put(self, api_key: str, secret_key: str) -> None:  # put-secret-value
        self.value = {"api_key": api_key, "secret_key": secret_key}

    def get_secret_value(self, SecretId: str) -> dict:  # noqa: N803 - boto3's argument name
        assert SecretId == SECRET
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return {"SecretString": json.dumps(self.value)}


def rig(*valid: tuple[str, str]) -> tuple[OrderRouter, KeyCheckingAlpaca, FakeSecrets, AlpacaBroker]:
    secrets = FakeSecrets("OLDKEY", "OLDSECRET")
    alpaca = KeyCheckingAlpaca(*(valid or [("OLDKEY", "OLDSECRET")]))
    broker = AlpacaBroker.from_secret(secrets, SECRET, paper=True, timeout=2.0)
    broker.client._session.mount("https://", alpaca)
    router = OrderRouter(MemoryOrdersStore(), broker, FixedClock(WALL), events=MemoryEventBus(),
                         limits=RiskLimits(clock="event"), initial_equity=100_000,
                         reconcile_grace_seconds=60, reconcile_on_start=False)
    return router, alpaca, secrets, broker


def test_a_warm_router_trades_on_with_the_new_pair_after_a_rotation():
    router, alpaca, secrets, broker = rig()
    assert router.reconcile().ok
    # the rotation: the new pair in the secret, then the old one revoked at Alpaca
    secrets.put("NEWKEY", "NEWSECRET")
    alpaca.valid = {("NEWKEY", "NEWSECRET")}
    router.handle(intent(0, 0.0, 100.0))
    outcome = router.handle(intent(1, 0.5, 100.0))  # its submit is refused once, then sent with the new pair
    (placed,) = outcome.orders
    assert placed["status"] == OrderStatus.SUBMITTED.value and placed["client_order_id"] in alpaca.orders
    assert alpaca.keys_seen[-2:] == ["OLDKEY", "NEWKEY"] and secrets.reads == 2
    assert router.reconcile().ok  # reconcile and the kill switch share the rebuilt client
    assert router.set_kill_switch(True, "drill")["canceled"] == [placed["client_order_id"]]
    assert set(alpaca.keys_seen[-5:]) == {"NEWKEY"} and secrets.reads == 2


def test_a_secret_that_still_holds_the_revoked_pair_is_a_typed_error_without_a_second_call():
    router, alpaca, secrets, _ = rig(("NEWKEY", "NEWSECRET"))  # revoked before the secret was updated
    with pytest.raises(BrokerUnavailableError) as info:
        router.reconcile()
    assert type(info.value).__name__ == "BrokerAuthenticationError"
    assert SECRET in str(info.value) and "still holds that key pair" in str(info.value)
    assert "HTTP 401" in str(info.value) and len(alpaca.requests) == 1 and secrets.reads == 2


def test_a_new_pair_alpaca_refuses_too_is_a_typed_error_after_one_more_call():
    router, alpaca, secrets, _ = rig(("OTHERKEY", "OTHERSECRET"))
    secrets.put("TYPOKEY", "NEWSECRET")
    with pytest.raises(BrokerUnavailableError, match="also after reading it again") as info:
        router.reconcile()
    assert type(info.value).__name__ == "BrokerAuthenticationError" and SECRET in str(info.value)
    assert alpaca.keys_seen == ["OLDKEY", "TYPOKEY"] and secrets.reads == 2


def test_a_secret_that_cannot_be_read_again_is_named():
    router, _, secrets, _ = rig(("NEWKEY", "NEWSECRET"))
    secrets.fail = RuntimeError("AccessDeniedException")
    with pytest.raises(BrokerUnavailableError, match="reading them again failed.*AccessDeniedException"):
        router.reconcile()


def test_a_refused_submit_leaves_the_order_unsent_not_rejected():
    """A 401 places nothing: the order stays PENDING and the intent fails (SQS delivers it again),
    instead of being recorded REJECTED as a broker refusal of the order."""
    router, alpaca, _, _ = rig()
    router.handle(intent(0, 0.0, 100.0))
    alpaca.valid = set()
    with pytest.raises(BrokerUnavailableError, match="submit of"):
        router.handle(intent(1, 0.5, 100.0))
    (stored,) = router.store.list_orders()
    assert stored.status is OrderStatus.PENDING and not alpaca.orders


def test_a_403_refusing_the_order_is_still_a_rejection_and_reads_no_secret():
    secrets = FakeSecrets("OLDKEY", "OLDSECRET")
    broker = AlpacaBroker.from_secret(secrets, SECRET)
    http = Recorded()
    broker.client._session.mount("https://", http)
    http.queue = ["submit_insufficient_buying_power"]
    with pytest.raises(BrokerRejectedError, match="insufficient buying power"):
        broker.submit(order())
    assert secrets.reads == 1


def test_a_403_refusing_the_keys_reads_the_secret_again():
    secrets = FakeSecrets("OLDKEY", "OLDSECRET")
    broker = AlpacaBroker.from_secret(secrets, SECRET)
    http = Recorded()
    broker.client._session.mount("https://", http)
    forbidden = {"method": "POST", "path": "/v2/orders", "status": 403, "body": {"message": "forbidden."}}
    secrets.put("NEWKEY", "NEWSECRET")
    http.queue = [forbidden, "submit_accepted"]
    assert broker.submit(order()).status is OrderStatus.SUBMITTED
    assert [r.headers["APCA-API-KEY-ID"] for r in http.requests] == ["OLDKEY", "NEWKEY"]
    assert secrets.reads == 2


class ForbiddingOrders(KeyCheckingAlpaca):
    """Alpaca refusing every order with ``403 forbidden.`` while the keys are fine (as it answers an
    order over the day-trading buying power)."""

    def send(self, request, **kwargs):
        pair = (request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY"))
        if pair in self.valid and request.method == "POST" and request.path_url.startswith("/v2/orders"):
            self.keys_seen.append(pair[0])
            self.requests.append((request.method, request.path_url))
            return self.respond(request, 403, {"message": "forbidden."})
        return super().send(request, **kwargs)


def test_a_forbidden_order_with_the_keys_the_secret_holds_is_rejected_and_the_intent_completes():
    """``403 forbidden.`` with the pair the secret still holds refuses the order, not the keys: the
    order is REJECTED (BROKER_REJECTED) and the intent done — not PENDING with the intent failing
    (and the symbol's FIFO group blocked) on every delivery until the DLQ."""
    router, alpaca, secrets, _ = rig()
    alpaca.__class__ = ForbiddingOrders
    router.handle(intent(0, 0.0, 100.0))
    it = intent(1, 0.5, 100.0)
    (placed,) = router.handle(it).orders
    assert (placed["status"], placed["reject_code"]) == ("REJECTED", "BROKER_REJECTED")
    (stored,) = router.store.list_orders()
    assert stored.status is OrderStatus.REJECTED and "HTTP 403: forbidden." in stored.reject_reason
    assert router.handle(it).orders == []  # a redelivery sends nothing again
    assert sum(m == "POST" for m, _ in alpaca.requests) == 1 and secrets.reads == 2


def test_a_403_again_after_new_keys_were_read_is_refused_keys():
    router, alpaca, secrets, _ = rig(("OTHERKEY", "OTHERSECRET"))
    alpaca.__class__ = ForbiddingOrders

    def forbid_all(request, **kwargs):  # every request answered 403 forbidden., whatever the keys
        alpaca.keys_seen.append(request.headers.get("APCA-API-KEY-ID"))
        return alpaca.respond(request, 403, {"message": "forbidden."})

    alpaca.send = forbid_all
    secrets.put("NEWKEY", "NEWSECRET")
    with pytest.raises(BrokerUnavailableError, match="also after reading it again") as info:
        router.broker.submit(order())
    assert type(info.value).__name__ == "BrokerAuthenticationError"
    assert alpaca.keys_seen == ["OLDKEY", "NEWKEY"] and secrets.reads == 2


def test_a_redelivered_intent_fails_again_while_the_keys_are_refused_and_trades_once_they_work():
    """Its order stays PENDING and unsent while the keys are refused: the redelivery's lookup of it
    is refused too, and the intent must fail again (SQS keeps it) rather than complete with the
    trade never made. Once the keys work, the next delivery places it once, under the same id."""
    router, alpaca, secrets, _ = rig()
    router.handle(intent(0, 0.0, 100.0))
    alpaca.valid = set()  # the pair is revoked, the secret not updated yet
    it = intent(1, 0.5, 100.0)
    for _ in range(2):  # the first delivery, then SQS's redelivery
        with pytest.raises(BrokerUnavailableError) as info:
            router.handle(it)
        assert type(info.value).__name__ == "BrokerAuthenticationError"
    (stored,) = router.store.list_orders()
    assert stored.status is OrderStatus.PENDING and not alpaca.orders
    secrets.put("NEWKEY", "NEWSECRET")
    alpaca.valid = {("NEWKEY", "NEWSECRET")}
    outcome = router.handle(it)
    assert outcome.resolved_existing == 1
    assert list(alpaca.orders) == [stored.client_order_id]
    assert router.store.get_order(stored.client_order_id).status is OrderStatus.SUBMITTED
    router.handle(it)  # delivered once more: nothing new at Alpaca
    assert list(alpaca.orders) == [stored.client_order_id]
