"""Races of concurrent risk-state saves that a review found the revaluing merge got wrong, each
run as it happens (two or three routers over one store, a save refused by the deadline) or at
the merge itself, and random two-container races checking the merge's properties at once
(docs/orders-and-risk.md, "The Lambda" and "Limits of what is here", first bullet).

The stream of ``CircuitBreakerTripped`` events must end on the stored breaker state: a move the
merge makes itself (a day roll evaluated again) is announced, and so is a stored state that
differs from the last move a batch published, whatever it published before."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta

import pytest
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore, MemoryPaperLedger
from ensemble_trader.domain.models import Position
from ensemble_trader.domain.risk import (
    _SEVERITY,
    Mark,
    Revaluation,
    RiskEngine,
    RiskLimits,
    RiskState,
    TradingState,
    _agrees,
    account_equity,
    merge_states,
)
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.deadline import DeadlineExceededError
from ensemble_trader.runtime.orders import BatchingOrdersStore, OrderRouter

from tests.unit.test_risk_merge_equity import DAY, LIMITS, LOADED, OPEN, bar_intent, saved
from tests.unit.test_risk_merge_equity import routed as routed_over

NEXT_DAY = date(2024, 3, 6)
NEXT_OPEN = OPEN + timedelta(days=1)


def positions(*symbols: str, quantity: float = 500.0) -> tuple[Position, ...]:
    return tuple(Position(symbol=s, quantity=quantity, average_price=100.0) for s in symbols)


class Desk:
    """500 of each symbol bought at 100 with 100,000 of equity, the stored risk state marking
    them at 100 (or as ``figures`` say), and routers (containers) over the same stores."""

    def __init__(self, symbols: tuple[str, ...] = ("SPX", "IXIC"), limits: RiskLimits = LIMITS,
                 wall: datetime = OPEN + timedelta(seconds=5), **figures: float) -> None:
        self.limits = limits
        self.clock = FixedClock(wall)
        self.store = MemoryOrdersStore()
        self.broker = PaperBroker(MemoryPaperLedger(), self.clock, slippage_bps=0, fee_bps=0)
        self.bus = MemoryEventBus()
        for position in positions(*symbols):
            self.store.put_position(position)
        state = self.store.load_risk_state()
        state.marks = {s: Mark(price=100.0, timestamp=LOADED) for s in symbols}
        state.day, state.day_start_equity, state.peak_equity, state.equity = DAY, 100_000.0, 100_000.0, 100_000.0
        for name, value in figures.items():
            setattr(state, name, value)
        self.store.save_risk_state(state)

    def router(self, store=None) -> OrderRouter:
        # a no-trade band wide enough that the intents plan nothing: only marks and breaker move
        return OrderRouter(store or self.store, self.broker, self.clock, events=self.bus, limits=self.limits,
                           initial_equity=100_000.0, min_trade_fraction=0.2, reconcile_on_start=False)

    def trips(self) -> list[tuple[str, str, bool]]:
        return [(e.previous, e.current, e.latched) for e in self.bus.events
                if type(e).__name__ == "CircuitBreakerTripped"]

    def last_word_is_stored(self) -> bool:
        stored = self.store.load_risk_state()
        _, current, latched = self.trips()[-1]
        return (current, latched) == (stored.trading_state.value, stored.breaker_latched)


class DeadlineOnSave:
    """The shared store, with the risk-state saves numbered in ``refused`` (from 1) refused by
    the invocation's deadline."""

    def __init__(self, inner: MemoryOrdersStore, refused: set[int]) -> None:
        self.inner, self.refused, self.saves = inner, refused, 0

    def save_risk_state(self, state: RiskState, **kwargs) -> None:
        self.saves += 1
        if self.saves in self.refused:
            raise DeadlineExceededError("DynamoDB PutItem", 1.0, 7.5)
        self.inner.save_risk_state(state, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class ThenOnLoad:
    """The shared store, running ``then`` right after its ``n``-th risk-state read."""

    def __init__(self, inner: MemoryOrdersStore, n: int, then) -> None:
        self.inner, self.n, self.then, self.loads = inner, n, then, 0

    def load_risk_state(self) -> RiskState:
        state = self.inner.load_risk_state()
        self.loads += 1
        if self.loads == self.n:
            self.then()
        return state

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def routed(base: RiskState, pos: tuple[Position, ...], *bars: tuple[str, float],
           day: date = DAY, at: datetime = OPEN) -> RiskState:
    """:func:`tests.unit.test_risk_merge_equity.routed` over the positions ``pos``."""
    return routed_over(base, *bars, day=day, at=at, positions=pos)


def revaluation(pos: tuple[Position, ...]) -> Revaluation:
    return Revaluation(limits=LIMITS, initial_equity=100_000.0, positions=pos)


def stored_state(symbols: tuple[str, ...] = ("SPX", "IXIC"), price: float = 100.0, **figures) -> RiskState:
    state = RiskState(version=5, marks={s: Mark(price=price, timestamp=LOADED) for s in symbols},
                      day=DAY, day_start_equity=100_000.0, peak_equity=100_000.0, equity=100_000.0)
    return state.model_copy(update=figures)


# -- announcements -------------------------------------------------------------------------------

@pytest.mark.parametrize(("limits", "stored"), [
    (LIMITS, ("REDUCING", False)),
    (RiskLimits(clock="event", drawdown_reduce=0.14, drawdown_halt=0.155), ("HALTED", True)),
])
def test_a_day_roll_the_merge_evaluates_again_is_announced(limits, stored):
    """Both containers roll into the next day, each 2.9 % down in its own view (ACTIVE: neither
    publishes); the account is 5.8 % down on the day and 15.9 % from its peak. The merge
    evaluates the day roll again and stores REDUCING (a latched HALTED under a 15.5 % drawdown
    halt). Nothing announced it, and the next intent (REDUCING already, or latched) published
    nothing either."""
    desk = Desk(limits=limits, wall=NEXT_OPEN + timedelta(seconds=5), peak_equity=112_000.0)
    a, b = desk.router(), desk.router()
    batch_a, batch_b = a.batch(), b.batch()
    batch_a.__enter__()
    batch_b.__enter__()
    assert a.handle(bar_intent("SPX", 94.2, NEXT_OPEN)).account["trading_state"] == "ACTIVE"
    assert b.handle(bar_intent("IXIC", 94.2, NEXT_OPEN)).account["trading_state"] == "ACTIVE"
    batch_a.__exit__(None, None, None)
    batch_b.__exit__(None, None, None)
    state = desk.store.load_risk_state()
    assert (state.equity, state.day_start_equity) == (pytest.approx(94_200.0), pytest.approx(100_000.0))
    assert (state.trading_state.value, state.breaker_latched) == stored
    assert desk.trips() == [("ACTIVE", *stored)]
    assert [e for e in desk.bus.events if type(e).__name__ == "CircuitBreakerTripped"][0].reason.startswith(
        "merge of concurrent saves")
    with desk.router().batch() as router:
        router.handle(bar_intent("SPX", 94.2, NEXT_OPEN + timedelta(minutes=1)))
    assert desk.trips() == [("ACTIVE", *stored)] and desk.last_word_is_stored()


def test_a_round_trip_published_in_one_batch_is_corrected_when_the_merge_keeps_another_state():
    """Our batch publishes ACTIVE -> REDUCING on day 1 and REDUCING -> ACTIVE at the roll into
    day 2 (ending where it began); the other container, saving first, published a latched
    HALTED that the merged figures support. The last event said ACTIVE, the store HALTED."""
    desk = Desk(wall=NEXT_OPEN + timedelta(seconds=5))
    ours, theirs = desk.router(), desk.router()
    batch_ours, batch_theirs = ours.batch(), theirs.batch()
    batch_ours.__enter__()
    batch_theirs.__enter__()
    assert ours.handle(bar_intent("SPX", 93.0, OPEN)).account["trading_state"] == "REDUCING"
    assert ours.handle(bar_intent("SPX", 93.0, NEXT_OPEN)).account["trading_state"] == "ACTIVE"
    assert theirs.handle(bar_intent("IXIC", 48.0, OPEN + timedelta(minutes=1))).account["trading_state"] == "HALTED"
    batch_theirs.__exit__(None, None, None)
    batch_ours.__exit__(None, None, None)
    state = desk.store.load_risk_state()
    assert state.trading_state is TradingState.HALTED and state.breaker_latched
    assert desk.trips()[-1] == ("ACTIVE", "HALTED", True) and desk.last_word_is_stored()


def test_the_stored_writers_round_trip_is_corrected_too():
    """The mirror: the writer that saved first published REDUCING then ACTIVE (a round trip to
    the state it loaded), ours a latched HALTED that stands; ours' events went out first, so the
    stream ended on theirs' ACTIVE. Without a count of theirs' events nothing told the merge
    that theirs had published anything."""
    pos = positions("SPX", "IXIC")
    store = MemoryOrdersStore()
    for position in pos:
        store.put_position(position)
    state = store.load_risk_state()
    state.marks = stored_state().marks
    state.day, state.day_start_equity, state.peak_equity, state.equity = DAY, 100_000.0, 100_000.0, 100_000.0
    store.save_risk_state(state)
    streams: dict[str, list[tuple[TradingState, bool]]] = {}
    batches = {}
    for name, bars in (("ours", [("SPX", 48.0, DAY, OPEN)]),
                       ("theirs", [("IXIC", 93.0, DAY, OPEN), ("IXIC", 93.0, NEXT_DAY, NEXT_OPEN)])):
        batch = BatchingOrdersStore(store, limits=LIMITS, initial_equity=100_000.0)
        copy = batch.load_risk_state()
        streams[name] = []
        for symbol, price, day, at in bars:
            copy.marks[symbol] = Mark(price=price, timestamp=at)
            move = RiskEngine(LIMITS).update_breaker(copy, account_equity(100_000.0, pos, copy.marks), day)
            if move is not None:
                streams[name].append((move.current, move.latched))
        batch.save_risk_state(copy)
        batches[name] = batch
    assert streams == {"ours": [(TradingState.HALTED, True)],
                       "theirs": [(TradingState.REDUCING, False), (TradingState.ACTIVE, False)]}
    batches["theirs"].flush()
    batches["ours"].flush()  # loses the race and merges
    stored = store.load_risk_state()
    assert (stored.trading_state, stored.breaker_latched) == (TradingState.HALTED, True)
    corrections = [(c.previous, c.current, c.latched) for c in batches["ours"].take_corrections()]
    assert corrections == [(TradingState.ACTIVE, TradingState.HALTED, True)]


def test_corrections_noted_by_a_merge_whose_save_failed_go_out_with_the_carried_state():
    """B published REDUCING (its stale view), lost the race and merged to ACTIVE, and the save of
    the merge was refused by the deadline: its next batch writes the carried merge. The REDUCING
    it published was never corrected."""
    desk = Desk()
    a, b = desk.router(), desk.router(DeadlineOnSave(desk.store, refused={2}))
    batch_a, batch_b = a.batch(), b.batch()
    batch_a.__enter__()
    batch_b.__enter__()
    a.handle(bar_intent("SPX", 109.0))
    b.handle(bar_intent("IXIC", 91.0))
    batch_a.__exit__(None, None, None)
    with pytest.raises(DeadlineExceededError):
        batch_b.__exit__(None, None, None)
    assert desk.trips() == [("ACTIVE", "REDUCING", False)]
    with b.batch():
        pass  # the container's next batch routes nothing and writes the carried state
    assert desk.store.load_risk_state().trading_state is TradingState.ACTIVE
    assert desk.trips() == [("ACTIVE", "REDUCING", False), ("REDUCING", "ACTIVE", False)]


# -- figures -------------------------------------------------------------------------------------

def test_a_carried_state_merged_after_a_day_roll_starts_the_day_where_the_account_was():
    """X marked SPX 110 and its save failed; Y then marked SPX back to 100 and rolled into the
    next day. X's change of SPX was superseded before the roll, yet it was added to the day's
    start: 105,000 for an account worth 100,000 all along, and the next intent went REDUCING."""
    base = stored_state()
    pos = positions("SPX", "IXIC")
    ours = routed(base, pos, ("SPX", 110.0))
    theirs = saved(routed(routed(base, pos, ("SPX", 100.0), at=OPEN + timedelta(minutes=5)),
                          pos, ("SPX", 100.0), day=NEXT_DAY, at=NEXT_OPEN))
    merged = merge_states(base, ours, theirs, revaluation(pos))
    assert (merged.day, merged.equity, merged.day_start_equity) == (NEXT_DAY, 100_000.0, 100_000.0)

    desk = Desk(wall=NEXT_OPEN + timedelta(seconds=5))
    failing = DeadlineOnSave(desk.store, refused={1})
    x, y = desk.router(failing), desk.router()
    with pytest.raises(DeadlineExceededError), x.batch():
        x.handle(bar_intent("SPX", 110.0))
    with y.batch():
        y.handle(bar_intent("SPX", 100.0, OPEN + timedelta(minutes=5)))
    with y.batch():
        y.handle(bar_intent("SPX", 100.0, NEXT_OPEN))
    with x.batch():
        pass  # writes the carried state
    stored = desk.store.load_risk_state()
    assert (stored.day, stored.equity, stored.day_start_equity) == (NEXT_DAY, 100_000.0, 100_000.0)
    with y.batch():
        out = y.handle(bar_intent("IXIC", 100.0, NEXT_OPEN + timedelta(minutes=1)))
    assert out.account["daily_loss"] == 0.0 and out.account["trading_state"] == "ACTIVE" and desk.trips() == []


def test_a_reset_saved_meanwhile_does_not_raise_the_peak_to_our_stale_equity():
    """An operator reset the stored state while our batch, seeing SPX at 109 and IXIC still at
    the loaded 100, valued the account at 104,500; at the merged marks it is worth 100,000."""
    base = stored_state()
    pos = positions("SPX", "IXIC")
    ours = routed(base, pos, ("SPX", 109.0))
    theirs = saved(routed(base, pos, ("IXIC", 91.0)), 7)
    RiskEngine.reset_breaker(theirs, "operator reviewed")
    merged = merge_states(base, ours, theirs, revaluation(pos))
    assert (merged.equity, merged.peak_equity, merged.day_start_equity) == (100_000.0, 100_000.0, 95_500.0)
    assert merged.state_reason == "reset: operator reviewed" and merged.losses() == (0.0, 0.0)


def test_a_merge_retried_keeps_the_peak_the_first_merge_lowered():
    """A saved alone (its view: a peak of 104,500 the account never reached); C's merge lowered
    it, lost the race again to D (which had loaded A's save), and merged once more: the stale
    peak came back. One merge of the same marks gives the true 100,500."""
    symbols = ("SPX", "IXIC", "QQQ")
    pos = positions(*symbols)
    base = stored_state(symbols)
    a = saved(routed(base, pos, ("SPX", 109.0)))
    c = routed(base, pos, ("IXIC", 91.0))
    first = merge_states(base, c, a, revaluation(pos))
    assert first.peak_equity == pytest.approx(100_000.0)
    d = saved(routed(a, pos, ("QQQ", 101.0)), 7)
    second = merge_states(a, first, d, revaluation(pos))
    assert (second.equity, second.peak_equity) == (pytest.approx(100_500.0), pytest.approx(100_500.0))

    desk = Desk(symbols)
    a, d = desk.router(), desk.router()
    batch_d = d.batch()
    # C's second read of the risk state (its write-back's, after the first refused save) lets D save first
    c = desk.router(ThenOnLoad(desk.store, 2, lambda: batch_d.__exit__(None, None, None)))
    batch_a, batch_c = a.batch(), c.batch()
    batch_a.__enter__()
    batch_c.__enter__()
    a.handle(bar_intent("SPX", 109.0))
    c.handle(bar_intent("IXIC", 91.0))
    batch_a.__exit__(None, None, None)
    batch_d.__enter__()
    d.handle(bar_intent("QQQ", 101.0))
    batch_c.__exit__(None, None, None)
    stored = desk.store.load_risk_state()
    assert stored.version == 4  # the setup's save, A, D, C's merge
    assert (stored.equity, stored.peak_equity) == (pytest.approx(100_500.0), pytest.approx(100_500.0))


def test_a_side_that_changed_nothing_since_a_stale_lone_save_does_not_bring_it_back():
    """A's lone save holds its view (104,500: IXIC at the loaded 100) until C's merge replaces
    it. A third batch loaded A's save and marked only a symbol the account does not hold: having
    changed no figure, it counted as agreeing with the recomputation, and the merge of the two
    took its stale figures (the peak of 104,500 back, and, when it saved last, an equity of
    104,500 for an account the marks value at 100,000)."""
    pos = positions("SPX", "IXIC")
    base = stored_state()
    lone = saved(routed(base, pos, ("SPX", 109.0)))
    merge = merge_states(base, routed(base, pos, ("IXIC", 91.0)), lone, revaluation(pos))
    unheld = routed(lone, pos, ("NDX", 300.0), at=OPEN + timedelta(minutes=1))
    assert (unheld.equity, unheld.peak_equity) == (104_500.0, 104_500.0)
    for ours, theirs in ((merge, saved(unheld, 7)), (unheld, saved(merge, 7))):
        merged = merge_states(lone, ours, theirs, revaluation(pos))
        assert (merged.equity, merged.peak_equity, merged.day_start_equity) == (100_000.0, 100_000.0, 100_000.0)
        assert merged.marks["NDX"].price == 300.0


@pytest.mark.parametrize("stale_positive_saves_last", [False, True])
def test_exits_only_lasts_while_the_merged_equity_is_at_or_below_zero(stale_positive_saves_last):
    """An operator reset the breaker at -1,000 (exits only). One container's view went positive
    (+1,500: the other symbol at the price it loaded), the other's stayed below zero; at the
    merged marks the account is worth 0. The merge dropped the exits-only mode, so the next
    intent latched HALTED again, and the day's start depended on the save order."""
    pos = positions("SPX", "IXIC", quantity=2_000.0)
    base = stored_state(price=74.75, day_start_equity=None, peak_equity=None, equity=-1_000.0,
                        trading_state=TradingState.HALTED, breaker_latched=True)
    RiskEngine.reset_breaker(base, "operator: exits only")
    assert base.exits_only_below_zero and base.trading_state is TradingState.REDUCING
    up, down = routed(base, pos, ("SPX", 76.0)), routed(base, pos, ("IXIC", 74.0))
    assert (up.equity, up.exits_only_below_zero, down.equity) == (1_500.0, False, -2_500.0)
    ours, theirs = (up, down) if stale_positive_saves_last else (down, up)
    merged = merge_states(base, ours, saved(theirs), revaluation(pos))
    assert (merged.equity, merged.day_start_equity, merged.peak_equity) == (0.0, None, None)
    assert merged.exits_only_below_zero and merged.trading_state is TradingState.REDUCING
    assert RiskEngine(LIMITS).update_breaker(merged, 0.0, DAY) is None  # still exits only
    merged.marks["SPX"] = Mark(price=76.25, timestamp=OPEN + timedelta(minutes=1))
    assert RiskEngine(LIMITS).update_breaker(merged, account_equity(100_000.0, pos, merged.marks), DAY) is None
    assert merged.day_start_equity == 500.0  # the first positive equity is the baseline


def test_an_empty_base_starts_the_day_alike_whichever_side_saves_first():
    """A fresh stage: both containers' first batches, each valuing the other's symbol at its
    average price. The day's start was whichever side's view saved first (95,500 or 104,500)."""
    pos = positions("SPX", "IXIC")
    base = RiskState()
    spx, ixic = routed(base, pos, ("SPX", 109.0)), routed(base, pos, ("IXIC", 91.0))
    for ours, theirs in ((spx, ixic), (ixic, spx)):
        merged = merge_states(base, ours, saved(theirs, 1), revaluation(pos))
        assert (merged.day, merged.equity, merged.day_start_equity, merged.peak_equity) == (
            DAY, 100_000.0, 100_000.0, 100_000.0)
        assert merged.trading_state is TradingState.ACTIVE


def test_breaker_events_count_every_announced_change():
    state = stored_state()
    engine = RiskEngine(LIMITS)
    engine.update_breaker(state, 96_000.0, DAY)  # REDUCING
    engine.update_breaker(state, 95_000.0, DAY)  # no move
    engine.update_breaker(state, 70_000.0, DAY)  # HALTED, latched
    assert (state.trading_state, state.breaker_latched, state.breaker_events) == (TradingState.HALTED, True, 2)
    RiskEngine.reset_breaker(state, "reviewed")
    assert state.breaker_events == 3
    base = stored_state()
    ours = routed(base, positions("SPX", "IXIC"), ("IXIC", 91.0))  # one move
    theirs = saved(base.model_copy(update={"breaker_events": 4}))
    assert merge_states(base, ours, theirs).breaker_events == 5


# -- random races --------------------------------------------------------------------------------

RACES = 1_000


def test_random_races_keep_the_merges_properties():
    """Two containers mark disjoint symbols of a small portfolio (some of their intents on the
    next day), save in turn through their batch stores, and the second merges. Checked for
    every race: the stored equity is the positions at the newest marks; the merged figures and
    breaker state do not depend on which side saved first; when neither side's view agrees
    with the recomputation, the breaker is no more severe than the merged figures call for (or
    than base's state on base's day) and latched only if they call for it or base was; and
    whichever order the two containers published in, the last ``CircuitBreakerTripped``
    (corrections included) announces the stored state."""
    rng = random.Random(20240305)
    engine = RiskEngine(LIMITS)
    failures: list[str] = []
    for race in range(RACES):
        symbols = [f"S{k}" for k in range(rng.randint(2, 4))]
        pos = tuple(Position(symbol=s, quantity=rng.choice([100.0, 300.0, 500.0, -200.0]), average_price=100.0)
                    for s in symbols)
        loaded = {s: Mark(price=rng.uniform(80, 120), timestamp=LOADED) for s in symbols}
        equity = account_equity(100_000.0, pos, loaded)
        store = MemoryOrdersStore()
        for position in pos:
            store.put_position(position)
        base = store.load_risk_state()
        base.marks, base.day, base.equity = loaded, DAY, equity
        base.day_start_equity = equity * rng.choice([1.0, 1.02, 0.98, 1.04, 1.07])
        base.peak_equity = equity * rng.choice([1.0, 1.05, 1.12, 1.2, 1.3])
        engine.update_breaker(base, equity, DAY)  # a breaker state that fits the figures
        store.save_risk_state(base)
        base = store.load_risk_state()
        split = rng.randint(1, len(symbols) - 1)
        sides = []
        for own in (symbols[:split], symbols[split:]):
            batch = BatchingOrdersStore(store, limits=LIMITS, initial_equity=100_000.0)
            state = batch.load_risk_state()
            published = []
            bars = sorted((rng.random() < 0.4, k, rng.choice(own)) for k in range(rng.randint(1, 3)))
            for next_day, k, symbol in bars:  # a container's days never go back
                at = (NEXT_OPEN if next_day else OPEN) + timedelta(seconds=k)
                state.marks[symbol] = Mark(price=loaded[symbol].price * rng.uniform(0.6, 1.4), timestamp=at)
                move = engine.update_breaker(state, account_equity(100_000.0, pos, state.marks),
                                             NEXT_DAY if next_day else DAY)
                if move is not None:
                    published.append((move.current, move.latched))
            batch.save_risk_state(state)
            sides.append((batch, state.model_copy(deep=True), published))
        (first, a, a_published), (second, b, b_published) = sides
        first.flush()
        second.flush()  # loses the race and merges
        stored = store.load_risk_state()
        now = (stored.trading_state, stored.breaker_latched)
        corrections = [(c.current, c.latched) for c in second.take_corrections()]
        for stream in (a_published + b_published, b_published + a_published):
            last = (stream + corrections or [(base.trading_state, base.breaker_latched)])[-1]
            if last != now:
                failures.append(f"race {race}: the last event announces {last}, the store holds {now}")
        if not math.isclose(stored.equity, account_equity(100_000.0, pos, stored.marks), rel_tol=1e-9):
            failures.append(f"race {race}: stored equity {stored.equity} is not the positions at the marks")
        revalued = Revaluation(limits=LIMITS, initial_equity=100_000.0, positions=pos)
        one_way = merge_states(base, b, saved(a, base.version + 1), revalued)
        other_way = merge_states(base, a, saved(b, base.version + 1), revalued)
        for merged in (one_way, other_way):
            figures = (merged.day, merged.equity, merged.peak_equity, merged.day_start_equity)
            if not all(x == y or (isinstance(x, float) and math.isclose(x, y, rel_tol=1e-9))
                       for x, y in zip(figures, (stored.day, stored.equity, stored.peak_equity,
                                                 stored.day_start_equity), strict=True)):
                failures.append(f"race {race}: figures {figures} depend on the save order")
            if (merged.trading_state, merged.breaker_latched) != now:
                failures.append(f"race {race}: breaker {merged.trading_state} depends on the save order")
            held = revalued.held()
            if _agrees(a, base, merged.marks, held, merged.equity) or _agrees(b, base, merged.marks, held,
                                                                                merged.equity):
                continue
            daily_loss, drawdown = merged.losses()
            called, _, latch = engine.desired_state(merged.equity, daily_loss, drawdown, merged.exits_only_below_zero)
            allowed = max(_SEVERITY[called], _SEVERITY[base.trading_state] if merged.day == base.day else 0)
            if _SEVERITY[merged.trading_state] > allowed:
                failures.append(f"race {race}: {merged.trading_state} is more than the figures call for")
            if merged.breaker_latched and not (latch or base.breaker_latched):
                failures.append(f"race {race}: a latch the figures do not call for")
    assert failures == []
