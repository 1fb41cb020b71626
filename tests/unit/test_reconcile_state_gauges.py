"""The scheduled reconciliation reports the kill switch and the breaker as stored, so their
alarms follow the state when no intent is routed.

``KillSwitchOn`` and ``BreakerTripped`` take the maximum of ``kill_switch_active`` and
``account_breaker_state`` and ignore missing data. The orders entry reports both with each routed
intent and the kill_switch entry with each command; with daily bars an OFF after an ON was the
last sample for about a day, sharing its period with the ON's 1. The reconcile entry (every 5
minutes) now reports both from the risk state it reads, under the same names, units and
``service`` as the orders entries, also when the run itself fails.
"""

from __future__ import annotations

import json
import logging

import pytest
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.orders import BrokerUnavailableError
from ensemble_trader.domain.reconcile import ReconciliationReport
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module

from tests.unit.test_kill_switch_order import control_event
from tests.unit.test_kill_switch_retry import latched
from tests.unit.test_orders_router import Rig

SCHEDULED = {"version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-01-05T15:05:00Z", "region": "us-east-1",
             "resources": [], "detail": {}}
GAUGES = ("kill_switch_active", "account_breaker_state")


@pytest.fixture()
def stage(monkeypatch):
    """The kill_switch and reconcile entries over one Rig's router (memory stores, paper broker)."""
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    rig = Rig()
    kill_switch = load_module("orders", "kill_switch", fresh=True)
    reconcile = load_module("orders", "reconcile", fresh=True)
    monkeypatch.setattr(kill_switch, "router", lambda: rig.router)
    monkeypatch.setattr(reconcile, "router", lambda: rig.router)

    class Stage:
        def __init__(self) -> None:
            self.rig = rig

        def switch(self, active: bool, at_minute: int, **detail) -> dict:
            at = rig.clock.now().replace(minute=at_minute, second=0, microsecond=0)
            event = control_event(active, "drill", at, f"cmd-{active}-{at_minute}", **detail)
            return kill_switch.lambda_handler(event, FakeLambdaContext("et-unit-orders-kill-switch"))

        def reconcile(self, event: dict | None = None) -> dict:
            return reconcile.lambda_handler(SCHEDULED if event is None else event,
                                            FakeLambdaContext("et-unit-orders-reconcile"))

    return Stage()


def emitted(capsys) -> list[dict]:
    """The EMF documents printed since the last call, with their metric values as lists."""
    found = []
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' not in line:
            continue
        doc = json.loads(line)
        names = [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
        found.append({"service": doc.get("service"), "units": {m["Name"]: m["Unit"] for d in doc["_aws"]
                      ["CloudWatchMetrics"] for m in d["Metrics"]},
                      **{n: doc[n] if isinstance(doc[n], list) else [doc[n]] for n in names}})
    return found


def gauges(docs: list[dict]) -> dict[str, list[float]]:
    return {name: [v for d in docs for v in d.get(name, [])] for name in GAUGES}


def test_after_an_on_then_off_drill_the_next_run_reports_only_off(stage, capsys):
    stage.switch(True, 1)
    stage.switch(False, 2)
    on_off = gauges(emitted(capsys))
    assert on_off["kill_switch_active"] == [1, 0]  # both in one 5-minute period: its maximum is 1
    assert stage.reconcile()["failures"] == {}
    after = gauges(emitted(capsys))
    assert after == {"kill_switch_active": [0], "account_breaker_state": [0]}


def test_a_run_while_the_switch_is_on_reports_it_on(stage, capsys):
    stage.switch(True, 1)
    capsys.readouterr()
    stage.reconcile()
    assert gauges(emitted(capsys))["kill_switch_active"] == [1]


def test_a_tripped_breaker_is_reported_until_its_reset(stage, capsys):
    latched(stage.rig.store)
    stage.reconcile()
    assert gauges(emitted(capsys))["account_breaker_state"] == [2]  # HALTED, held while no intent flows
    stage.switch(False, 3, reset_breaker=True)
    capsys.readouterr()
    stage.reconcile()
    assert gauges(emitted(capsys)) == {"kill_switch_active": [0], "account_breaker_state": [0]}


def test_the_gauges_carry_the_orders_entries_names_units_and_service(capsys, monkeypatch):
    # deployed, every orders entry has POWERTOOLS_SERVICE_NAME=orders (infra_cdk functions.py):
    # the alarms read the dimension service=orders; the units are the orders entry's
    # (runtime.orders IntentConsumer)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "orders")
    rig = Rig()
    reconcile = load_module("orders", "reconcile", fresh=True)
    monkeypatch.setattr(reconcile, "router", lambda: rig.router)
    reconcile.lambda_handler(SCHEDULED, FakeLambdaContext("et-unit-orders-reconcile"))
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()
              if '"_aws"' in line and "kill_switch_active" in line]
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "EnsembleTrader"
    assert ["service", "stage"] in [sorted(d) for d in directive["Dimensions"]]
    assert line["service"] == "orders"
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units["kill_switch_active"] == "Count" and units["account_breaker_state"] == "None"


def test_a_failed_run_still_reports_the_state_and_fails(stage, capsys, monkeypatch):
    stage.switch(True, 1)
    capsys.readouterr()

    def unreachable():
        raise BrokerUnavailableError("listing open orders: connection refused")

    monkeypatch.setattr(stage.rig.broker, "list_open_orders", unreachable)
    with pytest.raises(BrokerUnavailableError):
        stage.reconcile()
    assert gauges(emitted(capsys))["kill_switch_active"] == [1]


def test_a_state_that_cannot_be_read_is_not_reported_and_fails_nothing(stage, capsys, monkeypatch, caplog):
    monkeypatch.setattr(stage.rig.router, "reconcile", lambda: ReconciliationReport())

    def down():
        raise InfrastructureError("DynamoDB GetItem: throttled")

    monkeypatch.setattr(stage.rig.store, "load_risk_state", down)
    with caplog.at_level(logging.WARNING):
        assert stage.reconcile()["failures"] == {}
    assert gauges(emitted(capsys)) == {"kill_switch_active": [], "account_breaker_state": []}
    assert "kill switch and breaker state not reported" in caplog.text


def test_an_event_the_reconciliation_refuses_reports_nothing(stage, capsys):
    with pytest.raises(Exception, match="invalid reconcile event"):
        stage.reconcile({"detail-type": "KillSwitch"})
    assert gauges(emitted(capsys)) == {"kill_switch_active": [], "account_breaker_state": []}


def test_a_run_that_builds_its_router_reports_no_missing_keys(stage, capsys, monkeypatch):
    """``BrokerKeysMissing`` ignores missing data: a run that got its router (the keys stored, or
    not needed) says 0, so the alarm clears at it; also when the run then fails."""
    stage.reconcile()
    assert [v for d in emitted(capsys) for v in d.get("broker_keys_missing", [])] == [0]

    def unreachable():
        raise BrokerUnavailableError("listing open orders: connection refused")

    monkeypatch.setattr(stage.rig.broker, "list_open_orders", unreachable)
    with pytest.raises(BrokerUnavailableError):
        stage.reconcile()
    assert [v for d in emitted(capsys) for v in d.get("broker_keys_missing", [])] == [0]


def test_a_run_whose_router_cannot_be_built_reports_nothing(stage, capsys, monkeypatch):
    """Not the placeholder keys (another cause): the run fails and leaves the alarms their state."""
    reconcile = load_module("orders", "reconcile", fresh=False)

    def unbuildable():
        raise BrokerUnavailableError("Alpaca keys: half a pair")

    monkeypatch.setattr(reconcile, "router", unbuildable)
    monkeypatch.setattr(reconcile, "unstored_keys_secret", lambda: None)
    with pytest.raises(BrokerUnavailableError):
        reconcile.lambda_handler(SCHEDULED, FakeLambdaContext("et-unit-orders-reconcile"))
    docs = emitted(capsys)
    assert not [d for d in docs if "broker_keys_missing" in d]
    assert gauges(docs) == {"kill_switch_active": [], "account_breaker_state": []}
