"""The reconcile entry runs for its schedule's event and an operator's ``{}`` only.

It ran a reconciliation for any event at all — a KillSwitch control event, an SQS batch, ``null``,
a scheduled event carrying options it would ignore — each time reading the broker and writing the
order book. Now anything but those two shapes is an InvalidMessageError naming what was wrong,
raised before the router (broker, store) is even built.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.reconcile_event import reconcile_trigger

EVENTS = Path(__file__).resolve().parents[2] / "events"
SCHEDULED = json.loads((EVENTS / "eventbridge-reconcile.json").read_text())
KILL_SWITCH = json.loads((EVENTS / "eventbridge-kill-switch-on.json").read_text())
SQS_BATCH = json.loads((EVENTS / "sqs-order-intent.json").read_text())


class Report:
    synced: list = []
    failures: dict = {}
    ok = True

    def as_dict(self) -> dict:
        return {"synced": [], "failures": {}}


class Router:
    def __init__(self) -> None:
        self.runs = 0
        self.store = MemoryOrdersStore()  # the entry reports the stored kill switch and breaker

    def reconcile(self) -> Report:
        self.runs += 1
        return Report()


@pytest.fixture
def entry(monkeypatch):
    module = load_module("orders", "reconcile")
    built: list[Router] = []

    def router() -> Router:
        built.append(Router())
        return built[-1]

    monkeypatch.setattr(module, "router", router)
    return module.lambda_handler, built


def run(handler, event):
    return handler(event, FakeLambdaContext(function_name="et-unit-orders-reconcile"))


@pytest.mark.parametrize("event", [SCHEDULED, {}], ids=["schedule", "operator"])
def test_the_schedule_and_an_operators_empty_payload_reconcile(entry, event):
    handler, built = entry
    assert run(handler, event) == {"synced": [], "failures": {}}
    assert [r.runs for r in built] == [1]


@pytest.mark.parametrize(("event", "trigger"), [(SCHEDULED, "schedule"), ({}, "operator")],
                         ids=["schedule", "operator"])
def test_each_run_logs_one_line_naming_its_trigger(entry, event, trigger, caplog):
    handler, _ = entry
    logger = load_module("orders", "reconcile").logger  # the entry's Powertools logger (the same module)
    with caplog.at_level(logging.INFO, logger=logger.name):
        run(handler, event)
    [started] = [r for r in caplog.records if r.getMessage() == "reconciliation started"]
    assert json.loads(logger.registered_formatter.format(started))["trigger"] == trigger


BAD = {
    "kill switch event": (KILL_SWITCH, ["source='ensemble-trader.control'", "detail-type='KillSwitch'", "detail="]),
    "sqs batch": (SQS_BATCH, ["source: missing", "detail-type: missing", "detail: missing"]),
    "null": (None, ["<message>=None: is not an object"]),
    "list": ([SCHEDULED], ["<message>=[{"]),
    "text": ("{}", ["<message>='{}': is not an object"]),
    "options": ({**SCHEDULED, "detail": {"symbols": ["SPX"]}}, ["detail={'symbols': ['SPX']}: must be {}"]),
    "detail not an object": ({**SCHEDULED, "detail": "now"}, ["detail='now': must be {}"]),
    "no detail": ({k: v for k, v in SCHEDULED.items() if k != "detail"}, ["detail: missing"]),
    "other source": ({**SCHEDULED, "source": "ensemble-trader"}, ["source='ensemble-trader': must be 'aws.events'"]),
    "other detail-type": ({**SCHEDULED, "detail-type": "scheduled event"}, ["detail-type='scheduled event'"]),
}


@pytest.mark.parametrize("event,named", BAD.values(), ids=BAD.keys())
def test_any_other_event_is_refused_naming_the_field_before_the_router_is_built(entry, event, named):
    handler, built = entry
    with pytest.raises(InvalidMessageError) as info:
        run(handler, event)
    assert str(info.value).startswith("invalid reconcile event: ")
    assert all(n in str(info.value) for n in named), str(info.value)
    assert built == []  # neither the broker nor the order book was touched


def test_the_trigger_says_which_shape_came():
    assert reconcile_trigger(SCHEDULED) == "schedule"
    assert reconcile_trigger({}) == "operator"
