"""Where the orders stage's circuit breaker would have acted on a backtest's equity curve
(``breaker_crossings``): the backtest does not apply it, the report says where it would have."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.backtest.ensemble import breaker_crossings
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.risk import RiskLimits


def times(*stamps: str) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[ns]")


def test_daily_bars_hand_computed():
    # equity 1.10, 1.045 (-5 % on the day: reduce, drawdown 5 %), 0.9405 (-10 %: halt; drawdown
    # 14.5 %), 0.9311 (drawdown 15.4 %: reduce), 1.0242
    net = np.array([0.10, -0.05, -0.10, -0.01, 0.10])
    landed = times("2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08")
    risk = breaker_crossings(net, landed)
    assert risk["max_drawdown"] == pytest.approx(1 - 1.10 * 0.95 * 0.90 * 0.99 / 1.10)
    assert risk["drawdown_reduce_at"] == "2024-01-05T00:00:00.000000000"
    assert risk["drawdown_halt_at"] is None
    assert (risk["days"], risk["daily_loss_reduce_days"], risk["daily_loss_halt_days"]) == (5, 2, 1)
    assert risk["first_daily_loss_reduce_at"].startswith("2024-01-03")
    assert risk["first_daily_loss_halt_at"].startswith("2024-01-04")
    assert risk["limits"] == {"drawdown_reduce": 0.15, "drawdown_halt": 0.25, "daily_loss_reduce": 0.03,
                              "daily_loss_halt": 0.06}


def test_a_days_loss_runs_from_the_previous_days_last_bar_over_its_hours():
    # three hourly losses of 2 % in one UTC day: -2 %, -3.96 %, -5.88 % from the day's start (one
    # reduce day, no halt day), then a new day starting from there; no single bar lost 3 %
    net = np.array([0.01, -0.02, -0.02, -0.02, -0.02])
    landed = times("2024-01-01T23:00", "2024-01-02T01:00", "2024-01-02T02:00", "2024-01-02T03:00",
                   "2024-01-03T00:00")
    risk = breaker_crossings(net, landed)
    assert (risk["days"], risk["daily_loss_reduce_days"], risk["daily_loss_halt_days"]) == (3, 1, 0)
    assert risk["first_daily_loss_reduce_at"].startswith("2024-01-02T02:00")
    tight = breaker_crossings(net, landed, RiskLimits(daily_loss_reduce=0.01, daily_loss_halt=0.05))
    assert (tight["daily_loss_reduce_days"], tight["daily_loss_halt_days"]) == (2, 1)


def test_a_flat_or_rising_curve_never_trips():
    risk = breaker_crossings(np.full(4, 0.01), times("2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"))
    assert risk["max_drawdown"] == 0.0 and risk["drawdown_reduce_at"] is None
    assert risk["daily_loss_reduce_days"] == 0 and risk["first_daily_loss_reduce_at"] is None


def test_returns_and_times_must_match():
    with pytest.raises(DataError, match="breaker crossings"):
        breaker_crossings(np.zeros(3), times("2024-01-01", "2024-01-02"))


def test_the_backtest_report_carries_it(capsys):
    import json

    from ensemble_trader.cli import main

    assert main(["backtest", "--bars", "synth:realistic:7:400", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    risk = result["risk"]
    assert risk["days"] == result["run"]["periods"]  # daily synthetic bars: one period a day
    assert risk["max_drawdown"] == pytest.approx(result["ensemble"]["max_drawdown"])
    assert main(["backtest", "--bars", "synth:realistic:7:400"]) == 0
    assert "breaker (orders stage, not applied in the backtest): drawdown >= 15%" in capsys.readouterr().out
