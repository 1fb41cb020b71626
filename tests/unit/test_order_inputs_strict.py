"""The order stage's remaining loose inputs take the messages' strict types.

``KillSwitchCommand.issued_at`` (an operator's input) and the control event's ``time`` read as
plain ``AwareDatetime`` took a number as a Unix time: ``"issued_at": 1704187800`` became
2024-01-02T09:30:00Z. Both are ``Timestamp`` now, so a number is an :class:`InvalidMessageError`
naming the field, as for every other message; the kill_switch entry raises it (EventBridge's
asynchronous invocation ends in the events DLQ with it) and nothing changes.

``OrderRejected.symbol`` is ``Symbol | None``: every producer passes a checked symbol or None,
and a rejection of an intent too malformed to parse (a bad symbol among them) is still
published, with ``symbol`` None and the bad text in ``message``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.fakes import MemoryDeadLetters
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.orders import KillSwitchCommand, OrderRejected
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.orders import IntentConsumer

from tests.unit.test_kill_switch_order import control_event
from tests.unit.test_orders_router import Rig, intent

T = datetime(2024, 1, 2, 9, 30, tzinfo=UTC)
UNIX_T = 1704187800  # T as a Unix time
NUMBERS = [UNIX_T, float(UNIX_T), str(UNIX_T), True]


def _only_problem(info: pytest.ExceptionInfo[InvalidMessageError], field: str, value: object) -> str:
    assert [(p.field, p.value) for p in info.value.problems] == [(field, value)]
    return info.value.problems[0].message


@pytest.mark.parametrize("value", NUMBERS)
def test_a_command_s_issued_at_refuses_a_number(value):
    with pytest.raises(InvalidMessageError, match="KillSwitchCommand") as info:
        KillSwitchCommand.parse({"active": True, "reason": "operator: stop", "issued_at": value})
    message = _only_problem(info, "issued_at", value)
    assert "issued_at must be ISO-8601" in message


def test_a_command_s_issued_at_still_takes_iso_text_and_datetimes_in_whole_seconds():
    for value in ("2024-01-02T09:30:00.7Z", "2024-01-02T04:30:00-05:00", T, None):
        command = KillSwitchCommand.parse({"active": False, "reason": "resolved", "issued_at": value})
        assert command.issued_at == (None if value is None else T)


@pytest.mark.parametrize("value", NUMBERS)
def test_a_control_event_whose_time_is_a_number_is_refused(value):
    event = control_event(True, "operator: stop", T, "ev-1")
    assert KillSwitchCommand.from_event(event).issued_at == T  # as EventBridge stamps it
    with pytest.raises(InvalidMessageError, match="KillSwitch EventBridge event") as info:
        KillSwitchCommand.from_event({**event, "time": value})
    assert "ISO-8601" in _only_problem(info, "time", value)


def test_the_kill_switch_entry_raises_for_a_number_time_and_changes_nothing(monkeypatch):
    """EventBridge invokes the entry asynchronously: the raised error is what Lambda retries and
    then sends to the on-failure destination (the events DLQ), as for any invalid command."""
    rig = Rig()
    module = load_module("orders", "kill_switch", fresh=True)
    monkeypatch.setattr(module, "router", lambda: rig.router)
    event = control_event(True, "operator: stop", T, "ev-1") | {"time": UNIX_T}
    with pytest.raises(InvalidMessageError, match="time=1704187800"):
        module.lambda_handler(event, FakeLambdaContext("et-unit-orders-kill-switch"))
    state = rig.store.load_risk_state()
    assert not state.kill_switch and state.kill_switch_at is None and rig.bus.events == []
    # the same command as EventBridge stamps it applies
    result = module.lambda_handler(control_event(True, "operator: stop", T, "ev-1"),
                                   FakeLambdaContext("et-unit-orders-kill-switch"))
    assert result["applied"] and rig.store.load_risk_state().kill_switch_at == T


def test_set_kill_switch_refuses_a_number_as_issued_at_and_changes_nothing():
    rig = Rig()
    with pytest.raises(InvalidMessageError, match="issued_at=1704187800"):
        rig.router.set_kill_switch(True, "operator: stop", issued_at=UNIX_T)  # type: ignore[arg-type]
    assert not rig.store.load_risk_state().kill_switch
    assert rig.router.set_kill_switch(True, "operator: stop", issued_at=T, command_id="cli-1")["applied"]


# ---- OrderRejected.symbol ----------------------------------------------------------------------

REJECTED = {"client_order_id": None, "intent_id": "i1", "reason_code": "MALFORMED_INTENT", "message": "m",
            "timestamp": "2024-01-02T09:30:00Z"}


@pytest.mark.parametrize("symbol", ["spx", "NOT A SYMBOL", "", "X" * 500, 5])
def test_order_rejected_refuses_what_is_not_a_symbol(symbol):
    with pytest.raises(InvalidMessageError, match="OrderRejected") as info:
        OrderRejected.parse(REJECTED | {"symbol": symbol})
    _only_problem(info, "symbol", symbol)


@pytest.mark.parametrize("symbol", [None, "SPX", "BRK.B", "^GSPC", "EUR/USD"])
def test_order_rejected_takes_none_and_symbols(symbol):
    assert OrderRejected.parse(REJECTED | {"symbol": symbol}).symbol == symbol


def test_an_intent_with_a_bad_symbol_is_still_rejected_with_its_text_in_the_message():
    """The rejection produced because the input was bad is not lost to the stricter event: the
    symbol field is None and the message (and the dead letter) carry the text as received."""
    rig = Rig()
    rig.bus = rig.router.events = MemoryEventBus()
    letters = MemoryDeadLetters()
    body = intent(1, 0.5, 100.0).model_dump(mode="json") | {"symbol": "bad sym!"}
    result = IntentConsumer(rig.router, letters).process(json.dumps(body))
    assert result["dead_lettered"] and result["reason"] == "MALFORMED_INTENT"
    [event] = rig.bus.events
    assert isinstance(event, OrderRejected) and event.symbol is None and event.intent_id is None
    assert "symbol='bad sym!'" in event.message
    assert "symbol='bad sym!'" in letters.reasons[0]
    assert OrderRejected.parse(event.model_dump_json()) == event  # the published JSON reads back


def test_a_refused_valid_intent_s_rejection_carries_its_symbol():
    rig = Rig()
    rig.router.set_kill_switch(True, "operator: stop", issued_at=T)
    rig.router.handle(intent(1, 0.5, 100.0, "BRK.B"))
    [event] = [e for e in rig.bus.events if isinstance(e, OrderRejected)]
    assert (event.symbol, event.reason_code) == ("BRK.B", "KILL_SWITCH")
