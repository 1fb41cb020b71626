"""Times the order stage took without a bound.

A KillSwitch control event's ``time`` is set by whoever puts the event (``PutEvents`` takes a
``Time``): an "off" dated 2100-01-01 was applied and stored, and every genuine "on" after it was
judged stale and ignored. The kill_switch entry now refuses a ``time`` more than
``max_intent_lead_seconds`` ahead of its clock, with an :class:`InvalidMessageError` naming
``time`` and the value, before anything is read or stored.

An ``OrderIntent`` dated outside the times bars keep (``0001-01-01T00:00:00+14:00``) raised a
bare ``OverflowError`` while routing, and one with digits past the microsecond was truncated.
Both are refused as a bar's are, so the consumer dead-letters them ``MALFORMED_INTENT`` with the
reason.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.fakes import MemoryDeadLetters
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.domain.orders import KillSwitchChanged, KillSwitchCommand
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.orders import IntentConsumer

from tests.unit.test_kill_switch_order import T, control_event
from tests.unit.test_kill_switch_order import entry as entry  # noqa: F401 - the kill_switch entry fixture
from tests.unit.test_orders_router import Rig, intent

FAR = "2100-01-01T00:00:00Z"


def test_an_off_dated_far_ahead_is_refused_and_the_switch_stays_on(entry):
    rig, invoke = entry
    assert invoke(control_event(True, "incident", T - timedelta(minutes=1), "ev-on-1"))["applied"]
    before = rig.store.load_risk_state()
    published = len(rig.bus.events)
    with pytest.raises(InvalidMessageError, match="KillSwitch EventBridge event") as info:
        invoke(control_event(False, "resume", T, "ev-off-far") | {"time": FAR})
    [problem] = info.value.problems
    assert (problem.field, problem.value) == ("time", FAR)
    assert "ahead of the clock" in problem.message and "300 s" in problem.message
    after = rig.store.load_risk_state()
    assert after.kill_switch and after.kill_switch_reason == "incident"
    assert (after.kill_switch_at, after.kill_switch_command_id) == (before.kill_switch_at, "ev-on-1")
    assert len(rig.bus.events) == published  # nothing announced
    # a genuine command after it still applies
    assert invoke(control_event(False, "resolved", T, "ev-off-1"))["applied"]
    assert not rig.store.load_risk_state().kill_switch


def test_an_on_after_a_refused_far_off_applies(entry):
    """The reviewer's sequence: the far "off" first, then an operator's "on" now."""
    rig, invoke = entry
    with pytest.raises(InvalidMessageError, match="time="):
        invoke(control_event(False, "resume", T, "ev-off-far") | {"time": FAR})
    assert rig.store.load_risk_state().kill_switch_at is None
    result = invoke(control_event(True, "halt now", T, "ev-on-1"))
    assert result["applied"] and result["active"] and rig.store.load_risk_state().kill_switch


@pytest.mark.parametrize("lead", [timedelta(seconds=5), timedelta(seconds=300)])
def test_a_command_a_little_ahead_of_the_clock_still_applies(entry, lead):
    """Clocks differ by seconds: up to max_intent_lead_seconds (300 s) ahead is taken."""
    rig, invoke = entry
    result = invoke(control_event(True, "halt", T + lead, "ev-on-1"))
    assert result["applied"] and rig.store.load_risk_state().kill_switch_at == T + lead
    assert any(isinstance(e, KillSwitchChanged) for e in rig.bus.events)


def test_a_command_just_past_the_lead_is_refused(entry):
    rig, invoke = entry
    with pytest.raises(InvalidMessageError, match="301 s ahead"):
        invoke(control_event(True, "halt", T + timedelta(seconds=301), "ev-on-1"))
    assert not rig.store.load_risk_state().kill_switch


def test_the_lead_follows_the_router_s_limit(monkeypatch):
    rig = Rig(max_intent_lead_seconds=10)
    module = load_module("orders", "kill_switch", fresh=True)
    monkeypatch.setattr(module, "router", lambda: rig.router)
    with pytest.raises(InvalidMessageError, match="at most 10 s ahead"):
        module.lambda_handler(control_event(True, "halt", T + timedelta(seconds=11), "ev-on-1"),
                              FakeLambdaContext("et-unit-orders-kill-switch"))
    assert not rig.store.load_risk_state().kill_switch


def test_from_event_wants_the_clock_and_the_lead_together():
    event = control_event(True, "halt", T, "ev-on-1")
    with pytest.raises(ValueError, match="together"):
        KillSwitchCommand.from_event(event, now=T)
    with pytest.raises(ValueError, match="together"):
        KillSwitchCommand.from_event(event, max_lead_seconds=300)
    assert KillSwitchCommand.from_event(event, now=T, max_lead_seconds=300).issued_at == T


# ---- OrderIntent.timestamp ---------------------------------------------------------------------


def _consume(timestamp: str) -> tuple[Rig, dict, MemoryDeadLetters]:
    rig = Rig()
    rig.bus = rig.router.events = MemoryEventBus()
    letters = MemoryDeadLetters()
    body = intent(1, 0.5, 100.0).model_dump(mode="json") | {"timestamp": timestamp}
    result = IntentConsumer(rig.router, letters).process(json.dumps(body))
    return rig, result, letters


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                       "1600-01-01T00:00:00Z", "2262-04-11T00:00:00Z"])
def test_an_intent_outside_the_times_kept_is_dead_lettered_as_malformed(timestamp):
    rig, result, letters = _consume(timestamp)
    assert result["dead_lettered"] and result["reason"] == "MALFORMED_INTENT"
    assert f"timestamp='{timestamp}'" in letters.reasons[0]
    assert "outside the times kept" in letters.reasons[0]
    assert rig.store.list_orders() == [] and rig.paper.list_open_orders() == []


def test_an_intent_with_nanoseconds_is_dead_lettered_as_malformed():
    rig, result, letters = _consume("2021-03-02T00:00:00.000000001Z")
    assert result["dead_lettered"] and result["reason"] == "MALFORMED_INTENT"
    assert "sub-microsecond digits" in letters.reasons[0]
    assert rig.store.list_orders() == []


@pytest.mark.parametrize("timestamp", ["2021-03-02T00:00:00.000001000Z", "2021-03-02T00:00:00.5+14:00"])
def test_intent_times_to_the_microsecond_are_taken(timestamp):
    assert OrderIntent.parse(intent(1, 0.5, 100.0).model_dump(mode="json") | {"timestamp": timestamp})
