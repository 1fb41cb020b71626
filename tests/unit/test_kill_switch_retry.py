"""A kill-switch "off" with ``reset_breaker`` delivered more than once publishes the breaker's
reset (``CircuitBreakerTripped``) once.

EventBridge delivers a control event at least once and Lambda retries a failed invocation, so the
same command (same id) can arrive twice — one after the other, or two invocations at once. The
defect these tests pin down: when two deliveries ran at once, the one whose conditional save lost
to its twin's decided again on the stored state, found its own command there (a retry), and still
published the reset it had computed on its first attempt — a second ``CircuitBreakerTripped``
HALTED → ACTIVE although the state did not change again.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore, MemoryPaperLedger
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.orders import KillSwitchCommand
from ensemble_trader.domain.risk import RiskLimits, TradingState
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import OrderRouter

from tests.unit.test_kill_switch_order import control_event
from tests.unit.test_kill_switch_order import entry as entry  # noqa: F401 - the kill_switch entry fixture
from tests.unit.test_orders_dynamo import (
    SETTINGS,
    dynamodb,  # noqa: F401 - the moto DynamoDB fixture
)
from tests.unit.test_orders_router import Rig, intent

T = datetime(2026, 1, 5, 15, tzinfo=UTC)
RESET = control_event(False, "reviewed: resume", T, "ev-reset", reset_breaker=True)


def latched(store) -> None:
    """A latched drawdown halt, as the breaker leaves it (seeded directly)."""
    state = store.load_risk_state()
    state.trading_state, state.breaker_latched = TradingState.HALTED, True
    state.state_reason = "drawdown 15.00% >= 10.00% (latched)"
    state.equity, state.peak_equity, state.day_start_equity = 85_000.0, 100_000.0, 100_000.0
    state.day = T.date()
    store.save_risk_state(state)


class Stage:
    """Two containers' routers (a delivery and its twin) over one store, one event bus.

    The stage's clock is also AWS's: a store with a server clock (DynamoDB's ``Date``; moto's is
    the machine's) reads it in whole seconds, and ``aws_clock`` gives the in-memory store one."""

    def __init__(self, store, aws_clock: bool = False):
        self.store = store
        self.clock = FixedClock(T)
        if aws_clock or hasattr(store, "server_time"):
            store.server_time = lambda: self.clock.now().replace(microsecond=0)
        self.bus = MemoryEventBus()
        self.paper = PaperBroker(MemoryPaperLedger(), self.clock, slippage_bps=0, fee_bps=0)

    def router(self, clock=None, **options) -> OrderRouter:
        """A router of the stage (another container), on ``clock`` (the stage's by default)."""
        return OrderRouter(self.store, self.paper, clock or self.clock, events=self.bus,
                           limits=RiskLimits(clock="event"), initial_equity=100_000, reconcile_on_start=False,
                           **options)

    def events(self, name: str) -> list:
        return [e for e in self.bus.events if type(e).__name__ == name]


def memory_store(_client):
    return MemoryOrdersStore()


def dynamo_store(client):
    return DynamoOrdersStore(client, settings=SETTINGS)


@pytest.fixture(params=[memory_store, dynamo_store], ids=["memory", "dynamodb"])
def stage(request):
    client = request.getfixturevalue("dynamodb") if request.param is dynamo_store else None
    stage = Stage(request.param(client))
    latched(stage.store)
    return stage


def twin_saves_first(stage: Stage, command: KillSwitchCommand) -> dict:
    """Make the next kill-switch save lose to a twin delivery of ``command`` (another container
    that loaded the same state, decided the same and saved first); the twin's result."""
    real, twin = stage.store.save_risk_state, {}

    def save(state, *, write_kill_switch=False):
        if write_kill_switch and "started" not in twin:
            twin["started"] = True  # the twin's own save goes straight through
            twin["result"] = stage.router().apply_kill_switch(command)
        return real(state, write_kill_switch=write_kill_switch)

    stage.store.save_risk_state = save
    return twin


def test_two_deliveries_at_once_publish_the_reset_once(stage):
    command = KillSwitchCommand.from_event(RESET)
    twin = twin_saves_first(stage, command)
    result = stage.router().apply_kill_switch(command)  # lost the save to its twin: a retry
    assert twin["result"]["applied"] and not twin["result"]["retry"]
    assert result["applied"] and result["retry"] and result["trading_state"] == "ACTIVE"
    state = stage.store.load_risk_state()
    assert (state.trading_state, state.breaker_latched, state.breaker_resets) == (TradingState.ACTIVE, False, 1)
    assert [(e.previous, e.current) for e in stage.events("CircuitBreakerTripped")] == [("HALTED", "ACTIVE")]
    assert [e.active for e in stage.events("KillSwitchChanged")] == [False, False]  # redone by a retry (documented)


def test_a_delivery_after_the_first_one_finished_publishes_no_reset(stage):
    command = KillSwitchCommand.from_event(RESET)
    router = stage.router()
    assert not router.apply_kill_switch(command)["retry"]
    version = stage.store.load_risk_state().version
    again = stage.router().apply_kill_switch(command)  # EventBridge's second delivery, another container
    assert again["retry"] and again["trading_state"] == "ACTIVE"
    assert stage.store.load_risk_state().version == version  # nothing written
    assert len(stage.events("CircuitBreakerTripped")) == 1


def test_a_save_lost_to_another_writer_still_resets_once_and_says_so_once(stage):
    """Not a twin: a batch's routine save lands between the load and the kill-switch save. The
    command is decided again on the newer state (still its first application) and resets once."""
    command = KillSwitchCommand.from_event(RESET)
    real, raced = stage.store.save_risk_state, []

    def save(state, *, write_kill_switch=False):
        if write_kill_switch and not raced:
            raced.append(True)
            other = stage.store.load_risk_state()
            other.marks = {}  # another writer's routine save: bumps the version only
            real(other)
        return real(state, write_kill_switch=write_kill_switch)

    stage.store.save_risk_state = save
    result = stage.router().apply_kill_switch(command)
    assert raced and result["applied"] and not result["retry"]
    assert stage.store.load_risk_state().breaker_resets == 1
    assert [(e.previous, e.current) for e in stage.events("CircuitBreakerTripped")] == [("HALTED", "ACTIVE")]


def test_through_the_router_that_tripped_the_breaker_the_twin_publishes_one_reset():
    """The same race on a breaker the router itself latched (a -15 % drawdown), not a seeded one."""
    rig = Rig(drawdown_reduce=0.05, drawdown_halt=0.1)
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))
    rig.router.handle(intent(2, 1.0, 100.0))
    rig.router.handle(intent(3, 1.0, 85.0))
    assert rig.store.load_risk_state().breaker_latched
    tripped = len(rig.events("CircuitBreakerTripped"))
    command = KillSwitchCommand.from_event(RESET)
    real, twin = rig.store.save_risk_state, []

    def save(state, *, write_kill_switch=False):
        if write_kill_switch and not twin:
            twin.append("started")  # the twin's own save goes straight through
            twin.append(rig.new_router().apply_kill_switch(command))
        return real(state, write_kill_switch=write_kill_switch)

    rig.store.save_risk_state = save
    assert rig.router.apply_kill_switch(command)["retry"]
    resets = rig.events("CircuitBreakerTripped")[tripped:]
    assert [(e.previous, e.current) for e in resets] == [("HALTED", "ACTIVE")]
    assert rig.store.load_risk_state().breaker_resets == 1


def test_the_entry_given_the_same_event_twice_publishes_one_reset(entry):
    """EventBridge's at-least-once delivery through the Lambda entry, one delivery after the other."""
    rig, invoke = entry
    latched(rig.store)
    first, second = invoke(RESET), invoke(RESET)
    assert first["applied"] and not first["retry"] and second["retry"]
    assert first["trading_state"] == second["trading_state"] == "ACTIVE"
    assert [(e.previous, e.current) for e in rig.events("CircuitBreakerTripped")] == [("HALTED", "ACTIVE")]


def test_a_retry_after_the_first_publish_failed_publishes_no_reset_either(entry):
    """A retry that comes while the delivery that saved the reset may still be running (within
    ``announce_after_seconds`` of the save) publishes KillSwitchChanged (as every retry does) but
    no reset: the saving delivery may yet publish it, and a reset must not go out twice. The
    command stays marked as not announced, and a later retry, reconciliation or command publishes
    the reset once (tests/unit/test_orders_kill_switch_announce.py)."""
    rig, invoke = entry
    latched(rig.store)
    rig.bus.fail = 1
    with pytest.raises(InfrastructureError):
        invoke(RESET)
    assert invoke(RESET)["retry"]
    assert rig.events("CircuitBreakerTripped") == []
    assert [e.reason for e in rig.events("KillSwitchChanged")] == ["reviewed: resume"]
    assert rig.store.load_risk_state().trading_state is TradingState.ACTIVE
