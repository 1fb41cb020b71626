"""Equity beyond a float outside the metrics: ``breaker_crossings`` (the circuit-breaker replay of
the backtest) took its drawdown and daily losses from ``cumprod(1 + r)``, which overflows after
5,000 periods of +20 % (log-wealth 911.6, a float ends at 709.8): its drawdown was NaN (inf / inf)
from there, a fall after it was missed, and a ruin after it NaN (inf * 0). It now follows equity
in log space (``metrics.drawdowns`` and ``metrics.log_wealth``, the pieces ``max_drawdown`` uses
since bddc66b) when the product leaves the float range; ordinary curves keep the product, to the
last bit. No warning is raised on the way."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ensemble_trader.backtest.ensemble import breaker_crossings
from ensemble_trader.backtest.metrics import drawdowns, log_wealth, max_drawdown

pytestmark = pytest.mark.filterwarnings("error")

DAY = np.timedelta64(1, "D")


def _days(n: int) -> np.ndarray:
    return np.datetime64("2000-01-03", "ns") + np.arange(n) * DAY


def test_a_fall_after_equity_overflowed_crosses_the_breakers_limits():
    net = np.concatenate((np.full(5000, 0.2), [-0.1, -0.1], np.full(5, 0.01)))
    landed = _days(net.size)
    out = breaker_crossings(net, landed)
    assert out["max_drawdown"] == pytest.approx(0.19, abs=1e-9)
    assert out["drawdown_reduce_at"] == str(landed[5001])  # 19 % >= 15 %, on the second fall
    assert out["drawdown_halt_at"] is None
    assert (out["daily_loss_reduce_days"], out["daily_loss_halt_days"]) == (2, 2)  # each day lost 10 %
    assert out["first_daily_loss_halt_at"] == str(landed[5000])


def test_a_fall_within_a_day_after_equity_overflowed_is_measured_from_the_days_start():
    net = np.concatenate((np.full(5000, 0.2), [-0.02, -0.02, 0.0]))
    landed = np.concatenate((_days(5000), np.full(3, _days(5001)[-1])))  # the last three bars land on one day
    out = breaker_crossings(net, landed)
    assert out["daily_loss_reduce_days"] == 1  # 1 - 0.98 ** 2 = 3.96 % >= 3 %
    assert out["first_daily_loss_reduce_at"] == str(landed[5001])
    assert out["daily_loss_halt_days"] == 0


def test_a_ruin_after_equity_overflowed_is_a_total_loss_not_nan():
    net = np.concatenate((np.full(5000, 0.2), [-1.0], np.zeros(3)))
    landed = _days(net.size)
    out = breaker_crossings(net, landed)
    assert out["max_drawdown"] == 1.0
    assert out["drawdown_halt_at"] == out["first_daily_loss_halt_at"] == str(landed[5000])
    assert (out["days"], out["daily_loss_reduce_days"], out["daily_loss_halt_days"]) == (5004, 1, 1)


def test_a_run_beyond_a_float_without_a_fall_crosses_nothing():
    out = breaker_crossings(np.full(5000, 0.2), _days(5000))
    assert out["max_drawdown"] == 0.0 and math.copysign(1.0, out["max_drawdown"]) == 1.0
    assert out["drawdown_reduce_at"] is None and out["daily_loss_reduce_days"] == 0


def _old_breaker(net: np.ndarray, landed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The product path as it was before: drawdown and daily loss of every bar."""
    equity = np.cumprod(1.0 + net)
    drawdown = 1.0 - equity / np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    before = np.concatenate(([1.0], equity[:-1]))
    day = landed.astype("datetime64[D]")
    new_day = np.concatenate(([True], day[1:] != day[:-1]))
    day_start = before[new_day][np.cumsum(new_day) - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(day_start != 0.0, 1.0 - equity / np.where(day_start != 0.0, day_start, 1.0), 0.0)
    return drawdown, loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ordinary_curves_give_the_products_figures_to_the_last_bit(seed):
    rng = np.random.default_rng(seed)
    net = rng.normal(0.0003, 0.015, 1500)
    net[rng.integers(0, 1500, 4)] = -0.12
    landed = np.datetime64("2019-01-01", "ns") + np.arange(1500) * np.timedelta64(4, "h")
    drawdown, loss = _old_breaker(net, landed)
    np.testing.assert_array_equal(drawdowns(net)[1:], drawdown)
    out = breaker_crossings(net, landed)
    assert out["max_drawdown"] == float(drawdown.max())
    day = landed.astype("datetime64[D]")
    assert out["daily_loss_reduce_days"] == len(np.unique(day[loss >= 0.03])) > 0
    assert out["first_daily_loss_reduce_at"] == str(landed[np.argmax(loss >= 0.03)])
    assert out["drawdown_reduce_at"] == (str(landed[np.argmax(drawdown >= 0.15)]) if (drawdown >= 0.15).any() else None)


def test_drawdowns_and_log_wealth_of_a_curve_beyond_a_float():
    r = np.concatenate((np.full(5000, 0.2), [-0.5], [-1.0], [0.3]))
    logs = log_wealth(r)
    assert logs.shape == (r.size + 1,) and logs[0] == 0.0
    assert logs[5000] == pytest.approx(5000 * math.log1p(0.2), rel=1e-12)
    assert logs[-2] == logs[-1] == -math.inf  # ruin applied: the 0.3 after it earns nothing
    dd = drawdowns(r)
    assert dd[5000] == 0.0 and dd[5001] == pytest.approx(0.5, abs=1e-9) and dd[-1] == 1.0
    assert not np.isnan(dd).any()
    assert max_drawdown(r) == float(dd.max())
