"""A kill-switch command's late announcement under skewed clocks, slow deliveries, ambiguous
writes and retries: its breaker reset goes out once, and its ``KillSwitchChanged`` is not
published again by a later run once a delivery published it.

The defects these tests pin down (a second review's reproductions): the marks' ``saved_at`` and
``claimed_at`` came from the router's clock, which for the operator CLI may be off — 60 s behind,
a reconciliation published the reset a second time; a day ahead, a failed claim held the reset
back for a day —; a delivery still publishing after the wait (slow, not bounded by a Lambda
timeout) published the reset while a reconciliation that had claimed the mark published it too; a
kill-switch save that landed but was reported failed (a retried write whose first answer was
lost) made the delivery take its own mark for another's, publish no reset, and leave it to a run
5 minutes later, which published ``KillSwitchChanged`` again; and a retry inside the wait
published ``KillSwitchChanged`` without settling it, so the reconciliation published it again.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from ensemble_trader.domain.errors import ConcurrencyError
from ensemble_trader.domain.orders import KillSwitchCommand
from ensemble_trader.domain.risk import RiskState, SwitchAnnouncement, TradingState, merge_states
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import KillSwitchNotAnnouncedError

from tests.unit.test_kill_switch_announce_race import RESET, MidPublishBus, failed_reset, resets
from tests.unit.test_kill_switch_retry import Stage, T, dynamo_store, latched, memory_store
from tests.unit.test_orders_dynamo import dynamodb  # noqa: F401 - the moto DynamoDB fixture

LATER = timedelta(seconds=61)


@pytest.fixture(params=[memory_store, dynamo_store], ids=["memory", "dynamodb"])
def stage(request):
    client = request.getfixturevalue("dynamodb") if request.param is dynamo_store else None
    stage = Stage(request.param(client), aws_clock=True)  # the stage's clock is AWS's
    stage.bus = MidPublishBus()
    latched(stage.store)
    return stage


def switches(stage) -> list[bool]:
    return [e.active for e in stage.events("KillSwitchChanged")]


def stage_monotonic(stage):
    """A monotonic clock that follows the stage's (a delivery measures its hold on it)."""
    return lambda: stage.clock.now().timestamp()


def test_an_operator_clock_behind_aws_does_not_let_a_reconciliation_publish_the_reset_too(stage):
    cli = stage.router(FixedClock(T - timedelta(seconds=60)))  # the operator's machine, 60 s behind
    stage.bus.during = lambda: stage.router().reconcile()  # the scheduled run, at AWS's time T
    cli.apply_kill_switch(KillSwitchCommand.from_event(RESET))
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().unannounced is None


def test_an_operator_clock_ahead_of_aws_holds_a_failed_claim_for_the_wait_only(stage):
    failed_reset(stage)
    cli = stage.router(FixedClock(T + timedelta(days=1)))
    stage.clock.set(T + LATER)
    stage.bus.fail = True
    cli.reconcile()  # claims on AWS's clock; its publish fails
    assert stage.store.load_risk_state().unannounced.claimed_at == T + LATER
    stage.clock.set(T + timedelta(minutes=5))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().unannounced is None


def slow_save_answer(stage, then) -> None:
    """The next kill-switch save lands, and its answer comes back 31 s later (the wait is 30 s),
    while ``then`` runs in another container."""
    real = stage.store.save_risk_state

    def save(state, *, write_kill_switch=False):
        real(state, write_kill_switch=write_kill_switch)
        if write_kill_switch:
            stage.store.save_risk_state = real
            stage.clock.set(stage.clock.now() + timedelta(seconds=31))
            then()

    stage.store.save_risk_state = save


def test_a_saving_delivery_past_its_wait_leaves_the_reset_to_a_run_that_claimed_it(stage):
    slow_save_answer(stage, lambda: stage.router().reconcile())  # claims the mark, publishes it
    stage.router(monotonic=stage_monotonic(stage)).apply_kill_switch(KillSwitchCommand.from_event(RESET))
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().unannounced is None


def test_a_saving_delivery_past_its_wait_claims_the_mark_again_when_nobody_did(stage):
    slow_save_answer(stage, lambda: None)
    stage.router(monotonic=stage_monotonic(stage)).apply_kill_switch(KillSwitchCommand.from_event(RESET))
    assert resets(stage) == [("HALTED", "ACTIVE")] and switches(stage) == [False]
    assert stage.store.load_risk_state().unannounced is None
    stage.clock.set(T + timedelta(minutes=5))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")] and switches(stage) == [False]


def test_a_claim_held_past_the_wait_is_claimed_again_before_publishing(stage):
    """A reconciliation whose claim's answer comes back late publishes the reset once, having
    claimed the mark again (nobody else had)."""
    failed_reset(stage)
    stage.clock.set(T + LATER)
    real = stage.store.save_risk_state

    def save(state, *, write_kill_switch=False):
        real(state, write_kill_switch=write_kill_switch)
        if state.unannounced is not None and state.unannounced.claimed_at == T + LATER:
            stage.clock.set(T + LATER + timedelta(seconds=31))

    stage.store.save_risk_state = save
    stage.router(monotonic=stage_monotonic(stage)).reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")]
    assert stage.store.load_risk_state().unannounced is None


def ambiguous(stage, which) -> None:
    """The next save ``which`` selects lands, but the store reports it failed (botocore retried a
    write whose answer was lost; the retry failed its condition)."""
    real, done = stage.store.save_risk_state, []

    def save(state, *, write_kill_switch=False):
        real(state, write_kill_switch=write_kill_switch)
        if not done and which(state, write_kill_switch):
            done.append(True)
            raise ConcurrencyError("risk state version is stale")

    stage.store.save_risk_state = save


def test_a_kill_switch_save_reported_failed_that_landed_is_announced_by_its_delivery(stage):
    ambiguous(stage, lambda _state, kill_switch: kill_switch)
    result = stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    assert result["applied"] and not result["retry"] and result["trading_state"] == "ACTIVE"
    assert resets(stage) == [("HALTED", "ACTIVE")] and switches(stage) == [False]
    state = stage.store.load_risk_state()
    assert state.unannounced is None and state.breaker_resets == 1
    stage.clock.set(T + timedelta(minutes=5))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")] and switches(stage) == [False]


def test_a_claim_reported_failed_that_landed_is_published_by_its_claimant(stage):
    failed_reset(stage)
    stage.clock.set(T + LATER)
    ambiguous(stage, lambda state, kill_switch: not kill_switch and state.unannounced is not None
              and state.unannounced.claimed_at is not None)
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")] and switches(stage) == [False]
    assert stage.store.load_risk_state().unannounced is None


def test_a_retry_within_the_wait_settles_the_switch_it_published(stage):
    stage.bus.fail = True
    with pytest.raises(KillSwitchNotAnnouncedError):
        stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))
    stage.clock.set(T + timedelta(seconds=5))  # EventBridge's second delivery, within the wait
    assert stage.router().apply_kill_switch(KillSwitchCommand.from_event(RESET))["retry"]
    assert switches(stage) == [False] and resets(stage) == []
    mark = stage.store.load_risk_state().unannounced
    assert mark is not None and mark.switch_announced and mark.reset() is not None  # the reset is left
    stage.clock.set(T + timedelta(minutes=5))
    stage.router().reconcile()
    assert resets(stage) == [("HALTED", "ACTIVE")] and switches(stage) == [False]
    assert stage.store.load_risk_state().unannounced is None


MARK = SwitchAnnouncement(command_id="ev-1", active=False, reason="resume", saved_at=T, breaker_events=3,
                          reset_previous=TradingState.HALTED, reset_current=TradingState.ACTIVE)


def test_a_mark_stored_without_a_token_reads_as_held_by_nobody():
    stored = ('{"unannounced": {"command_id": "ev-1", "active": false, "reason": "resume", '
              f'"saved_at": "{T.isoformat()}", "breaker_events": 3, "reset_previous": "HALTED", '
              f'"reset_current": "ACTIVE", "claimed_at": "{(T + LATER).isoformat()}", "switch_announced": false}}}}')
    mark = RiskState.model_validate_json(stored).unannounced
    assert mark.token == "" and mark == MARK.claimed(T + LATER)
    claimed = mark.claimed(T + 2 * LATER, "abc")
    assert RiskState.model_validate_json(RiskState(unannounced=claimed).model_dump_json()).unannounced == claimed


def test_a_merge_keeps_the_stored_mark_when_only_the_other_writer_changed_it():
    with_mark, without = RiskState(unannounced=MARK), RiskState()
    assert merge_states(with_mark, with_mark.model_copy(deep=True), without).unannounced is None  # settled meanwhile
    assert merge_states(without, without.model_copy(deep=True), with_mark).unannounced == MARK  # saved meanwhile
    announced = MARK.model_copy(update={"switch_announced": True})
    assert merge_states(with_mark, with_mark.model_copy(deep=True),
                        RiskState(unannounced=announced)).unannounced == announced
