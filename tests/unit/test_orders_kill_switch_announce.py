"""A kill-switch command whose events could not be published is announced later, once.

The command's save applies it (the switch, a breaker reset); its ``KillSwitchChanged`` and the
reset's ``CircuitBreakerTripped`` go out after the save. The defect these tests pin down: when that
publish failed (EventBridge down past its retries), nothing ever published the reset — Lambda's
retry of the control event found its command stored and published ``KillSwitchChanged`` only, an
operator repeating the command reset nothing (the breaker was already reset), and subscribers kept
a HALTED breaker although trading had resumed. Now the risk state records the announcement as not
made until its events went out; a later delivery of the command, the next scheduled
reconciliation or the next command publishes it — not before the delivery that saved it has ended
(the orders functions' timeout), so that a twin delivery running at the same time still publishes
no second reset.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.orders import KillSwitchCommand
from ensemble_trader.domain.risk import RiskState, SwitchAnnouncement, TradingState, merge_states
from ensemble_trader.runtime.orders import KillSwitchNotAnnouncedError, OrderRouter

from tests.unit.test_kill_switch_order import FlakyBus, control_event
from tests.unit.test_kill_switch_retry import Stage, T, dynamo_store, latched, memory_store
from tests.unit.test_orders_dynamo import dynamodb  # noqa: F401 - the moto DynamoDB fixture
from tests.unit.test_orders_router import Rig, intent

RESET = control_event(False, "reviewed: resume", T, "ev-reset", reset_breaker=True)
LATER = timedelta(seconds=61)  # Lambda retries a failed asynchronous invocation a minute later, at the earliest


@pytest.fixture(params=[memory_store, dynamo_store], ids=["memory", "dynamodb"])
def stage(request):
    client = request.getfixturevalue("dynamodb") if request.param is dynamo_store else None
    stage = Stage(request.param(client))
    stage.bus = FlakyBus()
    latched(stage.store)
    return stage


def resets(stage) -> list[tuple[str, str]]:
    return [(e.previous, e.current) for e in stage.events("CircuitBreakerTripped")]


def failed_reset(stage) -> None:
    """The reset is saved, its publish fails."""
    stage.bus.fail = 1
    with pytest.raises(KillSwitchNotAnnouncedError) as failure:
        stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    assert isinstance(failure.value, InfrastructureError)  # Lambda retries the invocation
    assert "CircuitBreakerTripped (HALTED -> ACTIVE" in str(failure.value)
    assert "Repeating the command is safe" in str(failure.value)
    state = stage.store.load_risk_state()
    assert state.trading_state is TradingState.ACTIVE and state.unannounced is not None
    assert stage.bus.events == []


def test_lambdas_retry_publishes_the_reset_its_first_delivery_could_not(stage):
    failed_reset(stage)
    stage.clock.set(T + LATER)
    result = stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    assert result["retry"] and result["trading_state"] == "ACTIVE"
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert [e.active for e in stage.events("KillSwitchChanged")] == [False]
    assert stage.store.load_risk_state().unannounced is None
    stage.clock.set(T + 2 * LATER)  # EventBridge's duplicate, later still: announced already
    assert stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))["retry"]
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().breaker_resets == 1


def test_a_retry_while_the_saving_delivery_may_still_run_leaves_the_reset_to_it(stage):
    failed_reset(stage)
    stage.clock.set(T + timedelta(seconds=5))  # a twin delivery: the first one may still be publishing
    assert stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))["retry"]
    assert resets(stage) == []
    assert stage.store.load_risk_state().unannounced is not None  # left for a later delivery or run


def test_the_next_scheduled_reconciliation_announces_it_when_every_retry_failed(stage):
    failed_reset(stage)
    stage.clock.set(T + LATER)
    stage.bus.fail = 1  # Lambda's retries fail too
    with pytest.raises(KillSwitchNotAnnouncedError):
        stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    stage.clock.set(T + timedelta(minutes=5))
    assert stage.router().reconcile().ok
    assert resets(stage) == [("HALTED", "ACTIVE")]
    (changed,) = stage.events("KillSwitchChanged")
    assert (changed.active, changed.reason, changed.canceled) == (False, "reviewed: resume", [])
    assert stage.store.load_risk_state().unannounced is None
    stage.clock.set(T + timedelta(minutes=10))
    assert stage.router().reconcile().ok
    assert resets(stage) == [("HALTED", "ACTIVE")] and len(stage.events("KillSwitchChanged")) == 1


def test_a_run_whose_publish_fails_leaves_the_announcement_to_the_next_run(stage):
    failed_reset(stage)
    stage.clock.set(T + timedelta(minutes=5))
    stage.bus.fail = 1
    stage.router().reconcile()
    assert resets(stage) == [] and stage.store.load_risk_state().unannounced is not None
    stage.clock.set(T + timedelta(minutes=10))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")]


def repeat_at(seconds: int) -> KillSwitchCommand:
    """The CLI's repeat: a new command (a new id and time) that resets nothing itself (the breaker
    is already reset) and carries the reset still to announce."""
    return KillSwitchCommand.from_event(control_event(
        False, "reviewed: resume", T + timedelta(seconds=seconds), f"cli-repeat-{seconds}", reset_breaker=True))


def test_an_operator_repeating_the_command_after_the_wait_announces_the_reset_with_it(stage):
    failed_reset(stage)
    stage.clock.set(T + timedelta(seconds=30))  # the failed delivery has ended (announce_after_seconds)
    result = stage.router().apply_kill_switch(repeat_at(30))
    assert result["applied"] and not result["retry"]
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().unannounced is None


def test_an_operator_repeating_the_command_within_the_wait_leaves_the_reset_for_later(stage):
    """The delivery that saved the reset may still be publishing it: the repeat announces its own
    switch only and keeps the reset marked; a run once the repeat's own wait is over publishes it."""
    failed_reset(stage)
    stage.clock.set(T + timedelta(seconds=29))
    result = stage.router().apply_kill_switch(repeat_at(29))
    assert result["applied"] and not result["retry"]
    assert resets(stage) == [] and len(stage.events("KillSwitchChanged")) == 1
    left = stage.store.load_risk_state().unannounced
    assert left is not None and left.switch_announced and left.reset() is not None
    assert left.command_id == "cli-repeat-29"
    stage.clock.set(T + timedelta(seconds=29 + 29))  # within the repeat's own wait: nobody publishes
    stage.router().reconcile()
    assert resets(stage) == []
    stage.clock.set(T + timedelta(seconds=29 + 30))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert len(stage.events("KillSwitchChanged")) == 1  # the repeat's switch was announced already
    assert stage.store.load_risk_state().unannounced is None


def test_a_reset_a_later_breaker_move_announced_over_is_not_announced_again():
    """A breaker event after the unannounced reset (the breaker tripped again) said how the breaker
    stands: the old reset, published after it, would announce ACTIVE over a HALTED breaker."""
    rig = Rig(drawdown_reduce=0.05, drawdown_halt=0.1)
    rig.bus = rig.router.events = FlakyBus()
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))
    rig.router.handle(intent(2, 1.0, 100.0))
    rig.router.handle(intent(3, 1.0, 85.0))  # -15 %: a latched drawdown halt
    tripped = len(rig.events("CircuitBreakerTripped"))
    rig.bus.fail = 1
    with pytest.raises(KillSwitchNotAnnouncedError):
        rig.router.apply_kill_switch(KillSwitchCommand.from_event(RESET))
    rig.router.handle(intent(4, 1.0, 70.0))  # a further fall from the rebased peak: halted again, published
    assert rig.store.load_risk_state().trading_state is TradingState.HALTED
    after = rig.events("CircuitBreakerTripped")[tripped:]
    assert [(e.previous, e.current) for e in after] == [("ACTIVE", "HALTED")]
    rig.clock.set(rig.clock.now() + timedelta(minutes=5))
    rig.router.reconcile()
    assert [(e.previous, e.current) for e in rig.events("CircuitBreakerTripped")[tripped:]] == [("ACTIVE", "HALTED")]
    assert [e.active for e in rig.events("KillSwitchChanged")] == [False]  # the switch is still as it set it
    assert rig.store.load_risk_state().unannounced is None


def test_a_merge_keeps_the_side_that_changed_the_announcement():
    mark = SwitchAnnouncement(command_id="ev-1", active=True, reason="incident", saved_at=T, breaker_events=0)
    base, marked = RiskState(), RiskState(unannounced=mark)
    # a batch loaded the state before the kill switch saved its command: its save keeps the mark
    assert merge_states(base, RiskState(), marked).unannounced == mark
    # the kill-switch entry removed the mark (announced) after a batch loaded it: it stays removed
    assert merge_states(marked, marked.model_copy(), RiskState()).unannounced is None
    # a writer that announced it removes it from a stored state that still holds it
    assert merge_states(marked, RiskState(), marked.model_copy()).unannounced is None


def test_a_risk_state_stored_without_the_field_has_nothing_to_announce():
    assert RiskState.model_validate_json('{"version": 3, "kill_switch": true}').unannounced is None


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan"), True, "30"])
def test_the_wait_before_another_delivery_announces_must_be_a_finite_number_of_seconds(bad):
    stage = Stage(memory_store(None))
    with pytest.raises(ValueError, match="announce_after_seconds must be a finite number of seconds"):
        OrderRouter(stage.store, stage.paper, stage.clock, announce_after_seconds=bad)
