"""Reconciliation runs overlap (the schedule, a container's first intent, an operator's
``orders reconcile``): a run lifts only a halt that was set, or last confirmed, before it began.

The defect these tests pin down: run A compared a symbol and found it consistent; run B, started
later, found it inconsistent and halted it (or confirmed its halt again); A then applied its halts
and lifted every halt of a symbol not among its own failures — B's newer one included — so the
symbol traded again although the newest look found it inconsistent.
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore
from ensemble_trader.domain.errors import ConcurrencyError
from ensemble_trader.domain.models import Order, Position, Side
from ensemble_trader.domain.orders import BrokerUnavailableError
from ensemble_trader.domain.risk import RejectReason, RiskState, merge_states
from ensemble_trader.runtime.orders import OrderRouter

from tests.unit.test_orders_dynamo import (
    SETTINGS,
    dynamodb,  # noqa: F401 - the moto DynamoDB fixture
)
from tests.unit.test_orders_router import WALL, BrokerWrapper, Rig, intent

DRIFT = "reconciliation failed: position 480 here, 500 at the broker"


class MidRun(BrokerWrapper):
    """The broker of run A: once A has read the store's positions and asks the broker for its
    own, ``meanwhile`` runs (another run, from start to end), then the broker answers."""

    meanwhile = None
    fail_positions = False

    def list_positions(self):
        if self.fail_positions:
            raise BrokerUnavailableError("broker API down: listing positions")
        if self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return self.inner.list_positions()


def holding_500() -> Rig:
    """SPX held 500 here and at the broker; IXIC has a reference price (for intents that trade nothing)."""
    rig = Rig()
    rig.warm()
    rig.warm("IXIC")
    rig.router.handle(intent(1, 0.5, 100.0))
    rig.router.handle(intent(2, 0.5, 100.0))
    assert rig.store.get_position("SPX").quantity == 500 and rig.router.reconcile().ok
    return rig


def run_a(rig: Rig) -> tuple[OrderRouter, MidRun]:
    """Run A's router: the stage's router over the shared store, with the interleaving broker."""
    broker = MidRun(rig.paper)
    router = OrderRouter(rig.store, broker, rig.clock, events=rig.bus, limits=rig.limits,
                         initial_equity=100_000, reconcile_grace_seconds=60)
    return router, broker


def drift(rig: Rig, quantity: float) -> None:
    rig.store.put_position(Position(symbol="SPX", quantity=quantity, average_price=100.0))


def halt_of(store, symbol: str = "SPX") -> str | None:
    return store.load_risk_state().halted_symbols.get(symbol)


def test_a_run_does_not_lift_a_halt_a_run_started_later_set_while_it_compared():
    rig = holding_500()
    a, broker = run_a(rig)

    def run_b():  # the store drifts after A read it; B, started later, sees it and halts SPX
        drift(rig, 480)
        assert rig.new_router().reconcile().failures == {"SPX": ["position 480 here, 500 at the broker"]}

    broker.meanwhile = run_b
    report = a.reconcile()  # A read 500 here before the drift: SPX consistent for A
    assert report.ok and report.cleared_symbols == []
    assert halt_of(rig.store) == DRIFT  # B's newer look stands
    out = rig.router.handle(intent(3, 0.9, 100.0))
    assert [r["reason"] for r in out.rejections] == [RejectReason.SYMBOL_HALTED.value]


@pytest.mark.parametrize("batched", [False, True])
def test_a_run_does_not_lift_a_halt_a_later_run_confirmed_again_with_the_same_reason(batched):
    """SPX was halted before A began; the operator fixed the store, A compares (consistent), and B,
    started later, finds the same drift again: its confirmation is newer than A's look. In a batch
    (A is a container's first reconciliation) A's lift is in the batch's copy, and the write-back's
    merge must see B's confirmation as a change although its reason reads the same."""
    rig = holding_500()
    drift(rig, 480)
    assert not rig.router.reconcile().ok and halt_of(rig.store) == DRIFT
    first = rig.store.load_risk_state().halt_runs["SPX"]
    drift(rig, 500)  # the operator's fix
    a, broker = run_a(rig)

    def run_b():
        drift(rig, 480)  # wrong again
        assert not rig.new_router().reconcile().ok

    broker.meanwhile = run_b
    if batched:
        with a.batch():
            a.handle(intent(5, 0.0, 100.0, "IXIC"))  # the container's first intent reconciles first
    else:
        assert a.reconcile().cleared_symbols == []
    state = rig.store.load_risk_state()
    assert state.halted_symbols == {"SPX": DRIFT} and state.halt_runs["SPX"] != first


@pytest.mark.parametrize("batched", [False, True])
def test_a_halt_set_before_a_run_began_is_lifted_when_that_run_finds_the_symbol_consistent(batched):
    rig = holding_500()
    drift(rig, 480)
    assert not rig.new_router().reconcile().ok  # run B halts SPX
    drift(rig, 500)  # fixed
    a, _ = run_a(rig)  # run A starts after B's halt
    if batched:
        with a.batch():
            a.handle(intent(5, 0.0, 100.0, "IXIC"))
    else:
        assert a.reconcile().cleared_symbols == ["SPX"]
    state = rig.store.load_risk_state()
    assert state.halted_symbols == {} and state.halt_runs == {}
    assert rig.router.handle(intent(6, 0.9, 100.0)).orders  # trades again


def test_a_halt_set_while_a_run_compared_is_lifted_by_the_next_run():
    rig = holding_500()
    a, broker = run_a(rig)

    def run_b():
        drift(rig, 480)
        assert not rig.new_router().reconcile().ok
        drift(rig, 500)  # fixed at once, before A applies its halts

    broker.meanwhile = run_b
    assert a.reconcile().cleared_symbols == []  # kept: set after A began (fail closed)
    assert halt_of(rig.store) == DRIFT
    assert rig.new_router().reconcile().cleared_symbols == ["SPX"]
    assert halt_of(rig.store) is None


def test_each_run_that_finds_a_symbol_inconsistent_confirms_its_halt_anew():
    rig = holding_500()
    drift(rig, 480)
    rig.router.reconcile()
    first = rig.store.load_risk_state()
    rig.router.reconcile()
    second = rig.store.load_risk_state()
    assert first.halted_symbols == second.halted_symbols == {"SPX": DRIFT}
    assert second.halt_runs["SPX"] != first.halt_runs["SPX"] and second.version == first.version + 1


def test_a_run_that_fails_part_way_lifts_nothing_and_marks_what_it_halted():
    rig = holding_500()
    drift(rig, 480)
    rig.router.reconcile()
    drift(rig, 500)  # fixed, but the failing run never gets to compare positions
    rig.paper.submit(Order(client_order_id="foreign-1", intent_id="x", strategy_id="manual", symbol="DJI",
                           side=Side.BUY, quantity=3, created_at=WALL, updated_at=WALL))  # not ours
    a, broker = run_a(rig)
    broker.fail_positions = True  # A finds the foreign order, then cannot list the positions
    before = rig.store.load_risk_state()
    with pytest.raises(BrokerUnavailableError):
        a.reconcile()
    after = rig.store.load_risk_state()
    assert after.halted_symbols["SPX"] == DRIFT and after.halt_runs["SPX"] == before.halt_runs["SPX"]
    assert "foreign-1" in after.halted_symbols["DJI"] and after.halt_runs["DJI"]  # halted by A, marked
    rig.paper.cancel("foreign-1")
    assert sorted(rig.new_router().reconcile().cleared_symbols) == ["DJI", "SPX"]  # the next full run lifts both


def test_a_halt_confirmed_meanwhile_survives_the_retry_of_a_lost_save():
    """``_apply_halts`` retries a lost conditional save on a fresh load: a confirmation saved by
    another run in between is seen on that load and kept."""
    rig = holding_500()
    drift(rig, 480)
    rig.router.reconcile()
    drift(rig, 500)
    a, _ = run_a(rig)
    real = rig.store.save_risk_state
    state = {"raced": False}

    def save(s, **kw):
        if not state["raced"] and s.halted_symbols == {}:  # A's lift: B confirms SPX first
            state["raced"] = True
            drift(rig, 480)
            assert not rig.new_router().reconcile().ok
            drift(rig, 500)
            raise ConcurrencyError("risk state version is stale (another writer saved first)")
        return real(s, **kw)

    rig.store.save_risk_state = save
    assert a.reconcile().cleared_symbols == [] and state["raced"]
    assert halt_of(rig.store) == DRIFT


# -- the merge of a batch's write-back --------------------------------------------------------


def test_the_merge_treats_a_confirmation_as_a_change_of_the_halt():
    base = RiskState(halted_symbols={"A": "recon a", "B": "recon b"}, halt_runs={"A": "run-1", "B": "run-1"})
    ours = base.model_copy(deep=True)  # our run lifted A and B, halted C
    ours.halted_symbols, ours.halt_runs = {"C": "recon c"}, {"C": "run-2"}
    theirs = base.model_copy(deep=True)
    theirs.halt_runs["A"] = "run-3"  # another run confirmed A (same reason) since we loaded
    theirs.version = 1
    merged = merge_states(base, ours, theirs)
    assert merged.halted_symbols == {"A": "recon a", "C": "recon c"}
    assert merged.halt_runs == {"A": "run-3", "C": "run-2"}


def test_a_halt_run_without_its_halt_is_dropped():
    state = RiskState.model_validate({"halted_symbols": {"A": "x"}, "halt_runs": {"A": "r", "B": "r"}})
    assert state.halt_runs == {"A": "r"}


# -- states stored before the field existed -----------------------------------------------------


OLD = json.dumps({"version": 3, "kill_switch": False, "breaker_resets": 0, "halted_symbols": {"SPX": DRIFT}})


def test_a_memory_state_stored_without_halt_runs_loads_and_behaves_as_before():
    rig = holding_500()
    store: MemoryOrdersStore = rig.store
    store._risk_json, store._risk_version = OLD, 3
    state = store.load_risk_state()
    assert state.halted_symbols == {"SPX": DRIFT} and state.halt_runs == {}
    assert rig.new_router().reconcile().cleared_symbols == ["SPX"]  # consistent: lifted, as before
    assert store.load_risk_state().halted_symbols == {}


def test_a_dynamodb_item_stored_without_halt_runs_loads_and_behaves_as_before(dynamodb):  # noqa: F811
    rig = holding_500()
    store = DynamoOrdersStore(dynamodb, settings=SETTINGS)
    for p in rig.store.list_positions():
        store.put_position(p)
    dynamodb.put_item(TableName=SETTINGS.name("risk-state"), Item={
        "pk": {"S": "global"}, "version": {"N": "3"}, "trading_state": {"S": "ACTIVE"}, "state": {"S": OLD},
    })
    assert store.load_risk_state().halt_runs == {}
    router = OrderRouter(store, rig.paper, rig.clock, events=rig.bus, limits=rig.limits,
                         initial_equity=100_000, reconcile_grace_seconds=60)
    assert router.reconcile().cleared_symbols == ["SPX"]
    store.put_position(Position(symbol="SPX", quantity=480, average_price=100.0))
    assert not router.reconcile().ok
    stored = store.load_risk_state()  # the new field round-trips through the item
    assert stored.halted_symbols == {"SPX": DRIFT} and set(stored.halt_runs) == {"SPX"}
