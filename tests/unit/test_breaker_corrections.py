"""A merged risk-state save's corrections are marked ``correction: true`` on the
``CircuitBreakerTripped`` that carries them; every other breaker event says false.

The CloudWatch metric ``breaker_transitions`` counted every ``CircuitBreakerTripped`` into
REDUCING or HALTED, so a correction re-announcing a stored HALTED (after the other container had
published that halt itself) counted as a second transition. The flag lets the metric filter
leave corrections out (tests/infrastructure/test_infra_breaker_corrections.py). The races are the
ones of tests/unit/test_risk_merge_equity.py and tests/unit/test_risk_merge_races.py, run
through two routers over one store (docs/orders-and-risk.md, "The Lambda")."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from ensemble_trader.adapters.limits import checked_entries
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.orders import CircuitBreakerTripped

from tests.unit.test_risk_merge_equity import (
    OPEN,
    Account,
    bar_intent,
    merge_while_eventbridge_is_down,
    run_concurrently,
)
from tests.unit.test_risk_merge_races import NEXT_OPEN, Desk


def _trips(bus) -> list[tuple[str, str, bool, bool]]:
    return [(e.previous, e.current, e.latched, e.correction) for e in bus.events
            if isinstance(e, CircuitBreakerTripped)]


@pytest.mark.parametrize("ixic_saves_first", [False, True])
def test_the_merge_taking_back_a_published_reducing_is_a_correction(ixic_saves_first):
    """SPX to 109 in one container, IXIC to 91 in the other: the IXIC container's REDUCING is an
    ordinary transition; the merge stores ACTIVE and takes it back with a correction."""
    account = Account()
    run_concurrently(account, ("SPX", 109.0), ("IXIC", 91.0), ixic_saves_first)
    assert _trips(account.bus) == [("ACTIVE", "REDUCING", False, False), ("REDUCING", "ACTIVE", False, True)]


def test_a_stored_halt_the_other_side_published_is_re_announced_as_a_correction():
    """Our batch publishes ACTIVE -> REDUCING and REDUCING -> ACTIVE (the roll into day 2); the
    other container, saving first, published a latched HALTED. Our merged save stores that HALTED
    and announces it again from our ACTIVE: the account halted once, and only the other side's
    event is a transition."""
    desk = Desk(wall=NEXT_OPEN + timedelta(seconds=5))
    ours, theirs = desk.router(), desk.router()
    batch_ours, batch_theirs = ours.batch(), theirs.batch()
    batch_ours.__enter__()
    batch_theirs.__enter__()
    ours.handle(bar_intent("SPX", 93.0, OPEN))
    ours.handle(bar_intent("SPX", 93.0, NEXT_OPEN))
    theirs.handle(bar_intent("IXIC", 48.0, OPEN + timedelta(minutes=1)))
    batch_theirs.__exit__(None, None, None)
    batch_ours.__exit__(None, None, None)
    trips = _trips(desk.bus)
    assert trips[-1] == ("ACTIVE", "HALTED", True, True)
    assert [t for t in trips if t[1] == "HALTED" and not t[3]] == [("ACTIVE", "HALTED", True, False)]
    assert [t[3] for t in trips].count(True) == 1
    assert desk.last_word_is_stored()


def test_a_day_roll_the_merge_evaluates_again_is_announced_as_a_move():
    """Both containers roll into the next day 2.9 % down each (ACTIVE, nothing published); the
    merge evaluates the roll again and stores REDUCING. No event announced that trip, so the
    merge's event about it is a move, not a correction, and the ``breaker_transitions`` metric
    counts it (docs/deployment.md); until 2026-11-29 it went out as a correction, uncounted."""
    desk = Desk(wall=NEXT_OPEN + timedelta(seconds=5), peak_equity=112_000.0)
    a, b = desk.router(), desk.router()
    batch_a, batch_b = a.batch(), b.batch()
    batch_a.__enter__()
    batch_b.__enter__()
    a.handle(bar_intent("SPX", 94.2, NEXT_OPEN))
    b.handle(bar_intent("IXIC", 94.2, NEXT_OPEN))
    batch_a.__exit__(None, None, None)
    batch_b.__exit__(None, None, None)
    assert _trips(desk.bus) == [("ACTIVE", "REDUCING", False, False)]
    assert desk.last_word_is_stored()


def test_corrections_held_for_the_next_batch_keep_the_flag():
    """EventBridge down at the merging batch's end: its own REDUCING and the correction wait for
    the next batch, each with its flag, and go out so when the bus is back."""
    account = Account()
    b = merge_while_eventbridge_is_down(account)
    held = [(e.previous, e.current, e.correction) for e in b._unpublished]
    assert held == [("ACTIVE", "REDUCING", False), ("REDUCING", "ACTIVE", True)]
    b.events = account.bus
    with b.batch() as router:
        router.handle(bar_intent("IXIC", 100.0, OPEN + timedelta(minutes=1)))
    assert _trips(account.bus)[-2:] == [("ACTIVE", "REDUCING", False, False), ("REDUCING", "ACTIVE", False, True)]


def test_the_published_detail_carries_the_flag_as_a_json_boolean():
    """The metric filter reads ``$.detail.correction``: the entry's Detail always has it, true or
    false (never omitted as a default)."""
    base = {"previous": "ACTIVE", "current": "HALTED", "reason": "r", "equity": 1.0, "daily_loss": 0.07,
            "drawdown": 0.0, "timestamp": "2024-03-05T14:30:00Z"}
    ordinary, correction = CircuitBreakerTripped.parse(base), CircuitBreakerTripped.parse(base | {"correction": True})
    details = [json.loads(entry["Detail"]) for entry, _ in checked_entries([ordinary, correction], "memory")]
    assert [d["correction"] for d in details] == [False, True]


def test_an_event_stored_before_the_field_existed_parses_as_no_correction():
    archived = ('{"previous":"ACTIVE","current":"REDUCING","reason":"r","equity":95500.0,"daily_loss":0.045,'
                '"drawdown":0.045,"timestamp":"2024-03-05T14:30:00Z","latched":false}')
    assert CircuitBreakerTripped.parse(archived).correction is False


def test_a_flag_that_is_not_a_boolean_is_refused_naming_the_field():
    base = {"previous": "ACTIVE", "current": "HALTED", "reason": "r", "equity": 1.0, "daily_loss": 0.07,
            "drawdown": 0.0, "timestamp": "2024-03-05T14:30:00Z"}
    with pytest.raises(InvalidMessageError, match="correction"):
        CircuitBreakerTripped.parse(base | {"correction": "maybe"})
