"""Two deliveries at once publish a kill-switch command's breaker reset once.

The defects these tests pin down (a review's reproductions): a newer command saved while the
reset's own delivery was still publishing carried the reset into its mark and published it again
at once; and two deliveries that found the same unannounced mark at the same time — Lambda's retry
of the command and a scheduled reconciliation — both published it (each checked the mark, published,
then removed it, and nothing claimed it first). Now a delivery other than the one whose save made
the mark publishes it only after claiming it with a conditional save of the risk state, once the
last claim lapsed; a carried reset waits for the same rule.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.orders import KillSwitchCommand
from ensemble_trader.domain.risk import RiskState, SwitchAnnouncement, TradingState, merge_states
from ensemble_trader.runtime.orders import KillSwitchNotAnnouncedError

from tests.unit.test_kill_switch_order import control_event
from tests.unit.test_kill_switch_retry import Stage, T, dynamo_store, latched, memory_store
from tests.unit.test_orders_dynamo import dynamodb  # noqa: F401 - the moto DynamoDB fixture
from tests.unit.test_orders_kill_switch_announce import resets

RESET = control_event(False, "reviewed: resume", T, "ev-reset", reset_breaker=True)
LATER = timedelta(seconds=61)  # Lambda's retry of a failed asynchronous invocation, at the earliest


class MidPublishBus(MemoryEventBus):
    """An event bus on which something else happens while a publish is under way (``during``: run
    once at the start of the next publish), or the next publish fails (``fail``)."""

    during = None
    fail = False

    def publish(self, events):
        during, self.during = self.during, None
        if during is not None:
            during()  # another container acts while this publish is under way
        if self.fail:
            self.fail = False
            raise InfrastructureError("EventBridge PutEvents: ServiceUnavailable")
        return super().publish(events)


@pytest.fixture(params=[memory_store, dynamo_store], ids=["memory", "dynamodb"])
def stage(request):
    client = request.getfixturevalue("dynamodb") if request.param is dynamo_store else None
    stage = Stage(request.param(client))
    stage.bus = MidPublishBus()
    latched(stage.store)
    return stage


def failed_reset(stage) -> None:
    stage.bus.fail = True
    with pytest.raises(KillSwitchNotAnnouncedError):
        stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    assert stage.store.load_risk_state().unannounced is not None and resets(stage) == []


def test_a_command_saved_while_the_reset_is_being_published_does_not_publish_it_again(stage):
    later = T + timedelta(seconds=2)
    on = KillSwitchCommand.from_event(control_event(True, "incident", later, "ev-on"))

    def other_container():
        stage.clock.set(later)
        assert stage.router().apply_kill_switch(on)["applied"]

    stage.bus.during = other_container
    stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert [e.active for e in stage.events("KillSwitchChanged")] == [True, False]
    # the reset's delivery removed its reset from the mark the newer command carried it in
    assert stage.store.load_risk_state().unannounced is None
    stage.clock.set(T + timedelta(minutes=5))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")]


def test_a_retry_and_a_reconciliation_at_once_publish_the_reset_once(stage):
    failed_reset(stage)
    stage.clock.set(T + LATER)
    stage.bus.during = lambda: stage.router().reconcile()  # the schedule's run, another container
    assert stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))["retry"]  # Lambda's retry
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().unannounced is None


def test_a_reconciliation_holding_the_claim_leaves_the_reset_to_it(stage):
    """The other order: the run claimed it first, the retry finds the claim and publishes its
    KillSwitchChanged only (a retry redoes that), not the reset."""
    failed_reset(stage)
    stage.clock.set(T + LATER)
    stage.bus.during = lambda: stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().unannounced is None


def test_a_claim_whose_publish_failed_lapses_after_the_wait(stage):
    failed_reset(stage)
    stage.clock.set(T + LATER)
    stage.bus.fail = True
    with pytest.raises(KillSwitchNotAnnouncedError):  # the retry claimed it, its publish failed
        stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    claimed = stage.store.load_risk_state().unannounced
    assert claimed is not None and claimed.claimed_at == T + LATER
    stage.clock.set(T + LATER + timedelta(seconds=29))  # the claimer may still be running
    stage.router().reconcile()
    assert resets(stage) == []
    stage.clock.set(T + LATER + timedelta(seconds=30))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().unannounced is None


def test_a_newer_command_after_the_wait_publishes_the_carried_reset_once(stage):
    failed_reset(stage)
    later = T + timedelta(seconds=45)
    stage.clock.set(later)
    on = KillSwitchCommand.from_event(control_event(True, "incident", later, "ev-on"))
    stage.bus.during = lambda: stage.router().reconcile()  # a run while the command publishes
    assert stage.router().apply_kill_switch(on)["applied"]
    assert resets(stage) == [("HALTED", "ACTIVE")]
    state = stage.store.load_risk_state()
    assert state.unannounced is None and state.kill_switch and state.trading_state is TradingState.ACTIVE


MARK = SwitchAnnouncement(command_id="ev-1", active=False, reason="resume", saved_at=T, breaker_events=3,
                          reset_previous=TradingState.HALTED, reset_current=TradingState.ACTIVE)


def test_a_mark_stored_before_claims_reads_as_unclaimed_and_not_announced():
    stored = ('{"unannounced": {"command_id": "ev-1", "active": false, "reason": "resume", '
              f'"saved_at": "{T.isoformat()}", "breaker_events": 3, '
              '"reset_previous": "HALTED", "reset_current": "ACTIVE"}}')
    mark = RiskState.model_validate_json(stored).unannounced
    assert mark == MARK and mark.claimed_at is None and not mark.switch_announced
    assert mark.claimed_until(30) == T + timedelta(seconds=30)
    assert mark.claimed(T + LATER).claimed_until(30) == T + LATER + timedelta(seconds=30)


def test_settling_removes_only_what_names_the_same_save_or_reset():
    newer = SwitchAnnouncement(command_id="ev-2", active=True, reason="incident", saved_at=T + LATER,
                               breaker_events=3, reset_previous=TradingState.HALTED,
                               reset_current=TradingState.ACTIVE)  # carries MARK's reset
    assert MARK.settled(MARK, switch=True, reset=True) is None
    kept = newer.settled(MARK, switch=True, reset=True)  # the older delivery: its reset only
    assert kept is not None and kept.reset() is None and not kept.switch_announced
    left = newer.settled(newer, switch=True, reset=False)  # the reset it carries is left
    assert left is not None and left.switch_announced and left.reset() is not None
    assert left.settled(MARK, switch=True, reset=True) is None
    other_reset = MARK.model_copy(update={"breaker_events": 5})  # a later reset: not MARK's
    assert other_reset.settled(MARK, switch=False, reset=True) == other_reset


def test_a_merge_keeps_a_claim_another_writer_saved():
    base, claimed = RiskState(unannounced=MARK), RiskState(unannounced=MARK.claimed(T + LATER))
    assert merge_states(base, base.model_copy(deep=True), claimed).unannounced == MARK.claimed(T + LATER)
    assert merge_states(base, claimed, base.model_copy(deep=True)).unannounced == MARK.claimed(T + LATER)
