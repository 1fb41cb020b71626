"""Concurrent batches of different symbols merge their risk states at the write-back: the merged
equity, peak, day figures and breaker state must follow from the merged marks and the stored
positions, not from either batch's view, in which the other batch's symbols kept the prices it
loaded (docs/orders-and-risk.md, "The Lambda" and "Limits of what is here")."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore, MemoryPaperLedger
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.models import OrderIntent, Position, Regime, make_intent_id
from ensemble_trader.domain.risk import (
    BreakerTransition,
    Mark,
    Revaluation,
    RiskEngine,
    RiskLimits,
    RiskState,
    TradingState,
    account_equity,
    merge_corrections,
    merge_states,
)
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import OrderRouter
from pydantic import ValidationError

DAY = date(2024, 3, 5)
OPEN = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)  # the bar both batches trade
LOADED = OPEN - timedelta(minutes=1)  # the bar whose prices both batches loaded
WALL = OPEN + timedelta(seconds=5)
LIMITS = RiskLimits(clock="event", daily_loss_reduce=0.03, daily_loss_halt=0.06,
                    drawdown_reduce=0.15, drawdown_halt=0.25)


def bar_intent(symbol: str, price: float, at: datetime = OPEN, target: float = 0.5) -> OrderIntent:
    return OrderIntent(
        intent_id=make_intent_id("ens", symbol, at, "v1"), strategy_id="ens", symbol=symbol, timestamp=at,
        target_position=target, reference_price=price, model_version="v1", regime=Regime.BULL, confidence=0.9,
    )


class Account:
    """The documented example: 500 SPX and 500 IXIC bought at 100 with 100,000 of equity, the
    stored risk state marking both at 100; two routers (two containers) over the same stores."""

    def __init__(self) -> None:
        self.clock = FixedClock(WALL)
        self.store = MemoryOrdersStore()
        self.broker = PaperBroker(MemoryPaperLedger(), self.clock, slippage_bps=0, fee_bps=0)
        self.bus = MemoryEventBus()
        for symbol in ("SPX", "IXIC"):
            self.store.put_position(Position(symbol=symbol, quantity=500.0, average_price=100.0))
        state = self.store.load_risk_state()
        state.marks = {s: Mark(price=100.0, timestamp=LOADED) for s in ("SPX", "IXIC")}
        state.day, state.day_start_equity, state.peak_equity, state.equity = DAY, 100_000.0, 100_000.0, 100_000.0
        self.store.save_risk_state(state)

    def router(self) -> OrderRouter:
        # a no-trade band wide enough that the intents below plan nothing: only marks and breaker move
        return OrderRouter(self.store, self.broker, self.clock, events=self.bus, limits=LIMITS,
                           initial_equity=100_000.0, min_trade_fraction=0.2, reconcile_on_start=False)

    def trips(self) -> list[tuple[str, str, bool]]:
        return [(e.previous, e.current, e.latched) for e in self.bus.events
                if type(e).__name__ == "CircuitBreakerTripped"]


def run_concurrently(account: Account, first: tuple[str, float], second: tuple[str, float],
                     second_saves_first: bool) -> None:
    """Two containers load the same risk state, each routes its symbol's intent, and the batches
    end in the given order: the one that saves last loses the versioned write and merges."""
    a, b = account.router(), account.router()
    batch_a, batch_b = a.batch(), b.batch()
    batch_a.__enter__()
    batch_b.__enter__()
    a.handle(bar_intent(*first))
    b.handle(bar_intent(*second))
    for batch in ((batch_b, batch_a) if second_saves_first else (batch_a, batch_b)):
        batch.__exit__(None, None, None)


@pytest.mark.parametrize("ixic_saves_first", [False, True])
def test_the_documented_example_merges_to_the_true_equity(ixic_saves_first):
    """SPX to 109 in one container, IXIC to 91 in the other: the true equity is unchanged. One
    container saw 104,500, the other 95,500 (4.5 % down on the day: REDUCING). The merge kept
    REDUCING and a peak of 104,500, a level the account never reached."""
    account = Account()
    run_concurrently(account, ("SPX", 109.0), ("IXIC", 91.0), ixic_saves_first)
    stored = account.store.load_risk_state()
    assert stored.equity == pytest.approx(100_000.0)
    assert stored.peak_equity == pytest.approx(100_000.0)
    assert stored.day == DAY and stored.day_start_equity == pytest.approx(100_000.0)
    assert stored.trading_state is TradingState.ACTIVE and not stored.breaker_latched
    assert {s: m.price for s, m in stored.marks.items()} == {"SPX": 109.0, "IXIC": 91.0}
    # the REDUCING the IXIC container published is taken back once the merge is saved
    assert account.trips() == [("ACTIVE", "REDUCING", False), ("REDUCING", "ACTIVE", False)]
    (correction,) = [e for e in account.bus.events if type(e).__name__ == "CircuitBreakerTripped"][1:]
    assert correction.equity == pytest.approx(100_000.0) and correction.daily_loss == 0.0
    assert correction.reason.startswith("merge of concurrent saves")
    # the next intent of either symbol measures from the true figures: nothing trips
    with account.router().batch() as router:
        out = router.handle(bar_intent("SPX", 109.0, OPEN + timedelta(minutes=1)))
    assert out.account["equity"] == pytest.approx(100_000.0) and out.account["trading_state"] == "ACTIVE"
    assert len(account.trips()) == 2


def test_a_move_the_true_equity_calls_for_is_made_by_the_next_intent_not_by_the_merge():
    """Both symbols fall: each container sees less than 3 % down (ACTIVE), the account is 3.5 %
    down. The merge stores the true figures but publishes no move of its own; the next intent
    trips the breaker and publishes it."""
    account = Account()
    run_concurrently(account, ("SPX", 97.0), ("IXIC", 96.0), second_saves_first=True)
    stored = account.store.load_risk_state()
    assert stored.equity == pytest.approx(96_500.0) and stored.trading_state is TradingState.ACTIVE
    assert account.trips() == []
    with account.router().batch() as router:
        out = router.handle(bar_intent("IXIC", 96.0, OPEN + timedelta(minutes=1)))
    assert out.account["trading_state"] == "REDUCING"
    assert account.trips() == [("ACTIVE", "REDUCING", False)]


class DownBus:
    def publish(self, events):
        raise InfrastructureError("EventBridge down")


def merge_while_eventbridge_is_down(account: Account):
    """Two containers each route a symbol; A's save lands first, so B's write-back merges, and
    B's EventBridge is down at its batch's end: B's events wait for its next batch. Returns B."""
    a, b = account.router(), account.router()
    b.events = DownBus()
    with a.batch():
        a.handle(bar_intent("SPX", 109.0))
        with pytest.raises(InfrastructureError, match="EventBridge down"):
            with b.batch():
                b.handle(bar_intent("IXIC", 91.0))
                a.store.flush()  # A's save lands first: B's write-back merges
    return b


def test_corrections_wait_behind_the_batchs_events_when_eventbridge_is_down():
    account = Account()
    b = merge_while_eventbridge_is_down(account)
    held = [(e.previous, e.current) for e in b._unpublished]
    assert held == [("ACTIVE", "REDUCING"), ("REDUCING", "ACTIVE")]  # in the order they happened
    assert account.store.load_risk_state().trading_state is TradingState.ACTIVE


# -- merge_states with a revaluation, state by state --------------------------------------------

POSITIONS = (Position(symbol="SPX", quantity=500.0, average_price=100.0),
             Position(symbol="IXIC", quantity=500.0, average_price=100.0))
REVALUATION = Revaluation(limits=LIMITS, initial_equity=100_000.0, positions=POSITIONS)


def stored_state(version: int = 5, **figures) -> RiskState:
    state = RiskState(version=version, marks={s: Mark(price=100.0, timestamp=LOADED) for s in ("SPX", "IXIC")},
                      day=DAY, day_start_equity=100_000.0, peak_equity=100_000.0, equity=100_000.0)
    return state.model_copy(update=figures)


def routed(base: RiskState, *bars: tuple[str, float], day: date = DAY, at: datetime = OPEN,
           positions: tuple[Position, ...] = POSITIONS) -> RiskState:
    """A batch's copy of ``base`` after intents marking ``bars`` in turn, the breaker fed with the
    equity this copy sees (the other symbols at the prices it loaded)."""
    side = base.model_copy(deep=True)
    for symbol, price in bars:
        side.marks[symbol] = Mark(price=price, timestamp=at)
        RiskEngine(LIMITS).update_breaker(side, account_equity(100_000.0, positions, side.marks), day)
    return side


def saved(state: RiskState, version: int = 6) -> RiskState:
    return state.model_copy(update={"version": version})


def without_version(state: RiskState) -> dict:
    return state.model_dump(exclude={"version"})


def test_the_documented_example_at_the_merge_either_side_saving_first():
    base = stored_state()
    spx, ixic = routed(base, ("SPX", 109.0)), routed(base, ("IXIC", 91.0))
    assert (spx.equity, spx.peak_equity, ixic.equity, ixic.trading_state) == (
        104_500.0, 104_500.0, 95_500.0, TradingState.REDUCING)
    for ours, theirs in ((spx, ixic), (ixic, spx)):
        old = merge_states(base, ours, saved(theirs))  # without a revaluation: as before
        assert old.trading_state is TradingState.REDUCING and old.peak_equity == 104_500.0
        merged = merge_states(base, ours, saved(theirs), REVALUATION)
        assert (merged.equity, merged.peak_equity, merged.day_start_equity) == (100_000.0, 100_000.0, 100_000.0)
        assert merged.trading_state is TradingState.ACTIVE and merged.state_reason == base.state_reason
        assert merged.version == 6 and {s: m.price for s, m in merged.marks.items()} == {"SPX": 109.0, "IXIC": 91.0}


def test_a_move_the_recomputed_figures_support_is_kept():
    """SPX -5 % in one batch (2.5 % on the account: ACTIVE), IXIC -6 % in the other (3 %:
    REDUCING). The account is 5.5 % down: the REDUCING stands (with its own reason), and the
    merge does not go further than the move made (HALTED would need 6 %)."""
    base = stored_state()
    spx, ixic = routed(base, ("SPX", 95.0)), routed(base, ("IXIC", 94.0))
    assert spx.trading_state is TradingState.ACTIVE and ixic.trading_state is TradingState.REDUCING
    for ours, theirs in ((spx, ixic), (ixic, spx)):
        merged = merge_states(base, ours, saved(theirs), REVALUATION)
        assert merged.equity == pytest.approx(94_500.0)
        assert merged.trading_state is TradingState.REDUCING and merged.state_reason == ixic.state_reason
    # the recomputed figures call for HALTED: the merge keeps the REDUCING that was published,
    # and the next update, on the merged figures, halts and says so
    spx, ixic = routed(base, ("SPX", 93.0)), routed(base, ("IXIC", 94.0))
    merged = merge_states(base, spx, saved(ixic), REVALUATION)
    assert merged.equity == pytest.approx(93_500.0) and merged.trading_state is TradingState.REDUCING
    move = RiskEngine(LIMITS).update_breaker(merged, merged.equity, DAY)
    assert move is not None and (move.previous, move.current) == (TradingState.REDUCING, TradingState.HALTED)


def test_an_unsupported_latched_drawdown_halt_is_dropped_and_a_supported_one_kept():
    base = stored_state()
    crash, rally = routed(base, ("SPX", 48.0)), routed(base, ("IXIC", 152.0))  # 26 % down / 26 % up
    assert crash.trading_state is TradingState.HALTED and crash.breaker_latched
    for ours, theirs in ((crash, rally), (rally, crash)):
        merged = merge_states(base, ours, saved(theirs), REVALUATION)
        assert merged.equity == pytest.approx(100_000.0) and merged.peak_equity == pytest.approx(100_000.0)
        assert merged.trading_state is TradingState.ACTIVE and not merged.breaker_latched
    # both fall: the account is 26 % down, the latched halt stands
    crash2 = routed(base, ("IXIC", 74.0))  # 13 % on the account in this batch: ACTIVE
    merged = merge_states(base, crash2, saved(crash), REVALUATION)
    assert merged.equity == pytest.approx(61_000.0)
    assert merged.trading_state is TradingState.HALTED and merged.breaker_latched


def test_the_peak_is_never_raised_to_a_level_the_recomputed_equity_did_not_reach():
    base = stored_state()
    # each batch rose (its view: 104,500 / 103,000), then fell back within the batch
    ours = routed(base, ("SPX", 109.0), ("SPX", 101.0))
    theirs = routed(base, ("IXIC", 106.0), ("IXIC", 99.0))
    assert (ours.peak_equity, theirs.peak_equity) == (104_500.0, 103_000.0)
    merged = merge_states(base, ours, saved(theirs), REVALUATION)
    assert merged.equity == pytest.approx(100_000.0) and merged.peak_equity == pytest.approx(100_000.0)
    # a peak the recomputed equity reaches is taken
    merged = merge_states(base, routed(base, ("SPX", 110.0)), saved(routed(base, ("IXIC", 104.0))), REVALUATION)
    assert merged.peak_equity == pytest.approx(107_000.0) == merged.equity
    # a peak a merge lowered stays lowered when the batch that raised it saves again
    lone = routed(base, ("SPX", 109.0))  # its save landed alone: peak 104,500 stored
    corrected = merge_states(base, routed(base, ("IXIC", 91.0)), saved(lone), REVALUATION)
    assert corrected.peak_equity == pytest.approx(100_000.0)
    later = routed(saved(lone), ("SPX", 108.0), at=OPEN + timedelta(minutes=1))  # loaded its own save
    merged = merge_states(saved(lone), later, saved(corrected, 7), REVALUATION)
    assert merged.equity == pytest.approx(99_500.0) and merged.peak_equity == pytest.approx(100_000.0)


def test_a_batch_whose_view_agrees_keeps_its_own_figures():
    """The other writer changed no held symbol's mark (a kill switch, a symbol not held): the
    batch saw the true equity at every intent, so its peak and breaker move stand as they are."""
    base = stored_state()
    ours = routed(base, ("SPX", 112.0), ("SPX", 80.0))  # peak 106,000, then 90,000: 15.1 % drawdown
    assert ours.trading_state is TradingState.HALTED and "daily loss" in ours.state_reason
    theirs = saved(base)
    theirs.marks["NDX"] = Mark(price=300.0, timestamp=OPEN)
    merged = merge_states(base, ours, theirs, REVALUATION)
    assert merged.peak_equity == 106_000.0 and merged.equity == pytest.approx(90_000.0)
    assert (merged.trading_state, merged.state_reason) == (ours.trading_state, ours.state_reason)
    assert merged.marks["NDX"].price == 300.0
    # the other writer rolled into the next day (figures changed, marks of held symbols stale):
    # ours' peak still stands, its daily halt ends with its day, and the next day starts where
    # ours left the account
    rolled = saved(routed(base, ("NDX", 301.0), day=date(2024, 3, 6), at=OPEN + timedelta(days=1)))
    merged = merge_states(base, ours, rolled, REVALUATION)
    assert (merged.day, merged.peak_equity, merged.day_start_equity) == (date(2024, 3, 6), 106_000.0, 90_000.0)
    assert merged.trading_state is TradingState.REDUCING and "drawdown 15.09%" in merged.state_reason


def test_kill_switch_and_reset_keep_their_merge_semantics():
    base = stored_state()
    ixic = routed(base, ("IXIC", 91.0))  # a stale REDUCING
    spx = saved(routed(base, ("SPX", 109.0)))
    on = spx.model_copy(update={"kill_switch": True, "kill_switch_reason": "operator",
                                "kill_switch_at": OPEN, "kill_switch_command_id": "cmd-1"})
    merged = merge_states(base, ixic, on, REVALUATION)
    assert merged.kill_switch and merged.kill_switch_command_id == "cmd-1"
    assert merged.trading_state is TradingState.ACTIVE and merged.equity == pytest.approx(100_000.0)
    # ours turned it off (a newer command) while theirs traded: the off stands
    base_on = on.model_copy(update={"version": 5})
    off = base_on.model_copy(update={"kill_switch": False, "kill_switch_reason": "drill over",
                                     "kill_switch_at": OPEN + timedelta(minutes=1), "kill_switch_command_id": "cmd-2"})
    merged = merge_states(base_on, off, saved(routed(base_on, ("IXIC", 91.0))), REVALUATION)
    assert not merged.kill_switch and merged.kill_switch_command_id == "cmd-2"
    # an operator's reset saved meanwhile: its breaker wins, the equity is the recomputed one
    halted = stored_state(trading_state=TradingState.HALTED, breaker_latched=True, state_reason="drawdown",
                          peak_equity=140_000.0)
    reset = saved(halted)
    RiskEngine.reset_breaker(reset, "reviewed")
    merged = merge_states(halted, routed(halted, ("IXIC", 91.0)), reset, REVALUATION)
    assert merged.trading_state is TradingState.ACTIVE and not merged.breaker_latched
    assert merged.breaker_resets == 1 and merged.state_reason == "reset: reviewed"
    assert merged.equity == pytest.approx(95_500.0) and merged.peak_equity == pytest.approx(100_000.0)


def test_a_merge_of_identical_states_is_the_identity():
    for state in (stored_state(), routed(stored_state(), ("SPX", 91.0))):
        assert merge_states(state, state, state, REVALUATION) == state
    # a state whose equity is not the positions at its marks (123 for 100,000) is not taken as it
    # is: a side that changed nothing agrees only as far as the state it loaded does, and that may
    # be a writer's stale view. The equity is recomputed, nothing else changes
    state = stored_state(equity=123.0, trading_state=TradingState.REDUCING, state_reason="x")
    merged = merge_states(state, state, state, REVALUATION)
    assert merged == state.model_copy(update={"equity": 100_000.0})


def test_a_merge_into_an_unchanged_stored_state_keeps_ours_when_it_agrees():
    """Base == theirs: a state carried from a failed save, nothing stored meanwhile."""
    base = stored_state()
    ours = routed(base, ("SPX", 91.0), ("IXIC", 96.0))  # 6.5 % down: HALTED, true figures
    merged = merge_states(base, ours, saved(base), REVALUATION)
    assert without_version(merged) == without_version(ours) and merged.version == 6
    assert (ours.trading_state, ours.equity) == (TradingState.HALTED, 93_500.0)
    # a fill booked meanwhile (reconciliation sold SPX at 94) changed the positions: the figures
    # are recomputed, and the HALTED stands as far as they support it
    sold = Revaluation(limits=LIMITS, initial_equity=100_000.0, positions=(
        Position(symbol="SPX", quantity=0.0, average_price=0.0, realized_pnl=-3_000.0), POSITIONS[1]))
    merged = merge_states(base, ours, saved(base), sold)
    assert merged.equity == pytest.approx(95_000.0)  # -3,000 realised, -2,000 on IXIC: 5 % down
    assert merged.trading_state is TradingState.REDUCING and merged.state_reason == "daily loss 5.00% >= 3.00%"
    (correction,) = merge_corrections([(TradingState.HALTED, False)], merged)
    assert (correction.previous, correction.current) == (TradingState.HALTED, TradingState.REDUCING)


def test_a_daily_state_of_the_day_before_is_not_carried_into_the_merged_day():
    base = stored_state()
    halted = routed(base, ("SPX", 86.0))  # 7 % on the account in this view: HALTED (daily)
    next_day = routed(base, ("IXIC", 101.0), day=date(2024, 3, 6), at=OPEN + timedelta(days=1))
    for ours, theirs in ((halted, next_day), (next_day, halted)):
        merged = merge_states(base, ours, saved(theirs), REVALUATION)
        assert merged.day == date(2024, 3, 6) and merged.equity == pytest.approx(93_500.0)
        # the new day starts where the day before ended (SPX 86, IXIC 100), not at the stale
        # 100,000 either batch started it from (a 6.5 % loss the account did not make on the 6th)
        assert merged.day_start_equity == pytest.approx(93_000.0)
        assert merged.trading_state is TradingState.ACTIVE and not merged.breaker_latched
        assert RiskEngine(LIMITS).update_breaker(merged, merged.equity, date(2024, 3, 6)) is None


def test_merge_corrections_name_each_published_state_the_save_did_not_keep():
    stored = stored_state(trading_state=TradingState.REDUCING, state_reason="daily loss 3.50% >= 3.00%",
                          equity=96_500.0)
    published = [(TradingState.HALTED, False), (TradingState.REDUCING, False), (TradingState.HALTED, False),
                 (TradingState.HALTED, True)]
    corrections = merge_corrections(published, stored)
    assert [(c.previous, c.current, c.latched) for c in corrections] == [
        (TradingState.HALTED, TradingState.REDUCING, False), (TradingState.HALTED, TradingState.REDUCING, False)]
    assert all(isinstance(c, BreakerTransition) and c.equity == 96_500.0 for c in corrections)
    assert corrections[0].daily_loss == pytest.approx(0.035) and "HALTED (latched) published before" in corrections[1].reason
    assert merge_corrections([(TradingState.REDUCING, False)], stored) == []
    assert all(c.correction for c in corrections)  # REDUCING was published: a re-announcement


def test_a_saved_state_more_severe_than_every_published_one_is_announced_as_one_move():
    """A trip no event announced (the merge's own evaluation of a day roll) goes out as a move
    from the first published state, the rest as corrections; a saved state that any published
    one matches or outranks is announced by corrections only."""
    stored = stored_state(trading_state=TradingState.REDUCING, state_reason="daily loss 5.80% >= 3.00%",
                          equity=94_200.0)
    active, reducing, halted = ((s, False) for s in TradingState)
    moves = merge_corrections([active], stored)
    assert [(c.previous, c.current, c.correction) for c in moves] == [
        (TradingState.ACTIVE, TradingState.REDUCING, False)]
    halted_latched = stored.model_copy(update={"trading_state": TradingState.HALTED, "breaker_latched": True})
    moves = merge_corrections([active, halted, active], halted_latched)  # a latch is more severe too
    assert [(c.previous, c.latched, c.correction) for c in moves] == [
        (TradingState.ACTIVE, True, False), (TradingState.HALTED, True, True)]
    assert [c.correction for c in merge_corrections([active, (TradingState.HALTED, False)], stored)] == [True, True]
    dropped = stored.model_copy(update={"trading_state": TradingState.ACTIVE, "state_reason": None})
    assert [c.correction for c in merge_corrections([reducing, halted], dropped)] == [True, True]


def test_a_revaluation_refuses_what_cannot_value_the_account():
    with pytest.raises(ValidationError, match="initial_equity"):
        Revaluation(limits=LIMITS, initial_equity=float("inf"), positions=POSITIONS)
    bad = stored_state()
    bad.marks["SPX"] = Mark(price=float("nan"), timestamp=OPEN)
    with pytest.raises(ValueError, match="marks of SPX are not finite"):
        merge_states(stored_state(), bad, saved(stored_state()), REVALUATION)
