"""``breaker_crossings`` after a ruin: every later day starts from equity 0, and its daily loss
was 0 / 0 (NaN, with ``RuntimeWarning: invalid value encountered in divide`` printed by every
backtest of a ruined ensemble). Such a day has nothing left to lose; the figures are those the
NaN gave (it crossed no limit), and no warning is raised."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.backtest.ensemble import breaker_crossings

pytestmark = pytest.mark.filterwarnings("error")


def test_days_after_a_ruin_raise_no_warning_and_cross_no_daily_limit():
    net = np.array([0.01, -1.0, 0.0, 0.0])
    landed = np.array(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04"], dtype="datetime64[ns]")
    out = breaker_crossings(net, landed)
    assert out["max_drawdown"] == 1.0
    assert out["drawdown_halt_at"] == out["first_daily_loss_halt_at"] == "2020-01-02T00:00:00.000000000"
    assert (out["days"], out["daily_loss_reduce_days"], out["daily_loss_halt_days"]) == (4, 1, 1)


def test_a_ruin_within_a_day_counts_that_day_once_and_no_later_one():
    hours = np.datetime64("2020-01-06T00:00", "ns") + np.arange(48) * np.timedelta64(1, "h")
    net = np.zeros(48)
    net[:10] = 0.001
    net[12] = -1.0  # the account is gone at 12:00 of the first day; later bars earn nothing
    out = breaker_crossings(net, hours)
    assert (out["days"], out["daily_loss_reduce_days"], out["daily_loss_halt_days"]) == (2, 1, 1)
    assert out["first_daily_loss_reduce_at"] == "2020-01-06T12:00:00.000000000"


def test_a_curve_without_ruin_gives_the_same_daily_losses_as_before():
    rng = np.random.default_rng(3)
    net = rng.normal(0.0, 0.02, 300)
    landed = np.datetime64("2021-01-01", "ns") + np.arange(300) * np.timedelta64(6, "h")
    out = breaker_crossings(net, landed)
    equity = np.cumprod(1.0 + net)
    before = np.concatenate(([1.0], equity[:-1]))
    day = landed.astype("datetime64[D]")
    loss = [1.0 - equity[i] / before[np.flatnonzero(day == day[i])[0]] for i in range(300)]
    hit = {str(day[i]) for i in range(300) if loss[i] >= 0.03}
    assert out["daily_loss_reduce_days"] == len(hit) > 0
