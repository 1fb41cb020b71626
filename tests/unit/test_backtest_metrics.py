"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ensemble_trader.backtest.metrics import (
    METRIC_NAMES,
    max_drawdown,
    newey_west_lag,
    performance,
    periods_per_year,
    sharpe_margin_se,
    sharpe_margin_se_hac,
)
from ensemble_trader.domain.errors import DataError


def test_hand_computed_case():
    r = np.array([0.10, -0.05, 0.02, 0.0])
    pos = np.array([1.0, 1.0, 0.5, 0.0])
    m = performance(r, pos, periods_per_year=4.0)
    growth = 1.10 * 0.95 * 1.02 * 1.0
    assert m.total_return == pytest.approx(growth - 1)
    assert m.annual_return == pytest.approx(growth ** (4 / 4) - 1)
    std = np.std(r, ddof=1)
    assert m.annual_vol == pytest.approx(std * 2.0)
    assert m.sharpe == pytest.approx(np.mean(r) / std * 2.0)
    downside = math.sqrt(0.05**2 / 4)
    assert m.sortino == pytest.approx(np.mean(r) / downside * 2.0)
    # wealth 1, 1.1, 1.045: drawdown 0.05 from the 1.1 peak
    assert m.max_drawdown == pytest.approx(0.05)
    # in market for 3 periods, 2 of them with a gain
    assert m.win_rate == pytest.approx(2 / 3)
    # trades: 1 (from flat), 0, 0.5, 0.5 -> mean 0.5 per period, x4 per year
    assert m.turnover == pytest.approx(2.0)
    assert set(m.as_dict()) == set(METRIC_NAMES)


def test_cash_is_all_zero():
    m = performance(np.zeros(10), np.zeros(10), 252)
    assert m.as_dict() == dict.fromkeys(METRIC_NAMES, 0.0)


def test_initial_position_avoids_invented_trade():
    m = performance(np.array([0.01, 0.01]), np.array([1.0, 1.0]), 2.0, initial_position=1.0)
    assert m.turnover == 0.0


def test_max_drawdown_positive_fraction():
    assert max_drawdown(np.array([0.5, -0.5, 0.2])) == pytest.approx(0.5)
    assert max_drawdown(np.array([0.01, 0.02])) == 0.0


def test_annual_return_is_geometric():
    r = np.full(252, 0.001)
    m = performance(r, np.ones(252), 252)
    assert m.annual_return == pytest.approx(1.001**252 - 1)


def test_annualising_a_few_hourly_periods_stays_a_float():
    """One hourly period of +9 % compounded over 8,760 hours overflows a float: the annual
    return of such a slice (a regime seen for one bar) cannot be given, reported as NaN (0 read
    as a flat year), and the other metrics are still computed (it used to raise OverflowError
    out of the backtest)."""
    m = performance(np.array([0.09]), np.ones(1), 8760.0)
    assert math.isnan(m.annual_return) and m.total_return == pytest.approx(0.09)
    three = performance(np.full(3, 0.03), np.ones(3), 8760.0)
    assert three.annual_return == pytest.approx(1.03**8760 - 1, rel=1e-9)  # absurd, but a float
    assert performance(np.array([-1.0, 0.5]), np.ones(2), 252).annual_return == -1.0  # a total loss


def test_bad_inputs_name_the_problem():
    with pytest.raises(DataError, match="positions has 1"):
        performance(np.zeros(2), np.zeros(1), 252)
    with pytest.raises(DataError, match=r"returns\[1\]"):
        performance(np.array([0.0, np.nan]), np.zeros(2), 252)
    with pytest.raises(DataError, match="periods_per_year"):
        performance(np.zeros(2), np.zeros(2), 0)


def test_periods_per_year_inference():
    business = np.array(np.busday_offset("2020-01-01", np.arange(300), roll="forward"), dtype="datetime64[ns]")
    assert periods_per_year(business) == 252
    hourly = np.datetime64("2021-01-01T00:00", "ns") + np.arange(500) * np.timedelta64(1, "h")
    assert periods_per_year(hourly) == pytest.approx(24 * 365)
    calendar_daily = np.datetime64("2021-01-01", "ns") + np.arange(100) * np.timedelta64(1, "D")
    assert periods_per_year(calendar_daily) == 365
    weekly = np.datetime64("2021-01-04", "ns") + np.arange(60) * np.timedelta64(7, "D")
    assert periods_per_year(weekly) == 52
    with pytest.raises(DataError):
        periods_per_year(hourly[:1])


@pytest.mark.parametrize(("step_hours", "expected"), [(12, 730), (48, 182.625), (72, 121.75), (120, 73.05)])
def test_bars_of_any_step_round_the_clock_are_counted_as_they_come(step_hours, expected):
    ts = np.datetime64("2021-01-01", "ns") + np.arange(400) * np.timedelta64(step_hours, "h")
    assert periods_per_year(ts) == pytest.approx(expected, rel=1e-3)


def test_daily_bars_are_trading_days_whatever_utc_weekday_they_fall_on():
    business = np.array(np.busday_offset("2020-01-01", np.arange(300), roll="forward"), dtype="datetime64[ns]")
    tokyo_midnight = business - np.timedelta64(9, "h")  # Monday 00:00 JST is Sunday 15:00 UTC
    assert periods_per_year(tokyo_midnight) == 252
    stray_saturday = np.sort(np.append(business, np.datetime64("2020-03-07", "ns")))
    assert periods_per_year(stray_saturday) == 252


def test_bars_a_few_trading_days_apart_count_their_steps_in_business_days():
    # every third business day: calendar steps of 3 and 5 days (a median of 5, which read as
    # 252 / 5 = 50.4 bars a year), three business days each — the rule counts those: 252 / 3;
    # over 1,200 business days it is within 5 % of the measured 365.25 * 5 / 7 / 3 (no holidays)
    every_third = np.array(np.busday_offset("2015-01-01", np.arange(0, 1200, 3), roll="forward"),
                           dtype="datetime64[ns]")
    assert periods_per_year(every_third[:10]) == pytest.approx(252 / 3)
    assert periods_per_year(every_third) == pytest.approx(252 / 3)
    fortnightly = np.datetime64("2015-01-05", "ns") + np.arange(6) * np.timedelta64(14, "D")
    assert periods_per_year(fortnightly) == pytest.approx(365.25 / 14)  # was 252 / 14 = 18


@pytest.mark.parametrize(("rho", "c"), [(0.0, 1.0), (0.7, 1.2), (0.95, 1.2), (0.5, 0.8)])
def test_sharpe_margin_se_matches_the_spread_of_simulated_margins(rho, c):
    # 4,000 pairs of correlated normal series with daily Sharpe 0.05 and 0.03: the formula's
    # standard error must match the standard deviation of the simulated margins within 6 %
    rng = np.random.default_rng(17)
    n, reps, ppy = 750, 4000, 252.0
    z = rng.standard_normal((reps, 2, n))
    a = 0.05 + z[:, 0]
    b = 0.03 + rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]
    sharpe = lambda x: x.mean(axis=-1) / x.std(axis=-1, ddof=1) * math.sqrt(ppy)  # noqa: E731
    spread = float(np.std(sharpe(a) - c * sharpe(b)))
    se = np.mean([sharpe_margin_se(a[i], b[i], c, ppy) for i in range(0, reps, 40)])
    assert se == pytest.approx(spread, rel=0.06)


def test_sharpe_margin_se_edge_cases():
    rng = np.random.default_rng(3)
    x = rng.normal(0.001, 0.01, 500)
    # a strategy against itself at c = 1: no uncertainty in the difference
    assert sharpe_margin_se(x, x, 1.0, 252) == pytest.approx(0.0, abs=1e-6)
    # cash (constant) against a live series: only the live series' Sharpe varies
    live_only = sharpe_margin_se(x, np.zeros(500), 1.2, 252)
    assert live_only == pytest.approx(math.sqrt((1 + (x.mean() / x.std(ddof=1)) ** 2 / 2) / 500 * 252))
    assert math.isnan(sharpe_margin_se(x[:2], x[:2], 1.0, 252))  # too few periods for an error
    with pytest.raises(DataError, match="periods"):
        sharpe_margin_se(x, x[:10], 1.0, 252)
    with pytest.raises(DataError, match="periods_per_year"):
        sharpe_margin_se(x, x, 1.0, 0.0)


def _ar1(rng: np.random.Generator, phi: float, shape: tuple[int, ...]) -> np.ndarray:
    """AR(1) noise with unit innovations along the last axis (vectorised over the others)."""
    e = rng.standard_normal(shape)
    out = np.empty(shape)
    out[..., 0] = e[..., 0] / math.sqrt(1 - phi**2)
    for t in range(1, shape[-1]):
        out[..., t] = phi * out[..., t - 1] + e[..., t]
    return out


def test_the_hac_error_follows_autocorrelated_returns_where_the_iid_one_understates_them():
    # returns with first-order autocorrelation 0.4: the i.i.d. formula's error falls far short
    # of the simulated spread of the margin; Newey-West's comes within 15 %
    rng = np.random.default_rng(5)
    n, reps, ppy, c = 1000, 1500, 252.0, 1.0
    a = 0.06 + _ar1(rng, 0.4, (reps, n))
    b = 0.03 + _ar1(rng, 0.4, (reps, n))
    sharpe = lambda x: x.mean(axis=-1) / x.std(axis=-1, ddof=1) * math.sqrt(ppy)  # noqa: E731
    spread = float(np.std(sharpe(a) - c * sharpe(b)))
    iid = np.mean([sharpe_margin_se(a[i], b[i], c, ppy) for i in range(0, reps, 15)])
    hac = np.mean([sharpe_margin_se_hac(a[i], b[i], c, ppy) for i in range(0, reps, 15)])
    assert iid < 0.8 * spread
    assert hac == pytest.approx(spread, rel=0.15)


def test_the_hac_error_agrees_with_the_iid_one_on_iid_normal_returns():
    rng = np.random.default_rng(11)
    x = rng.normal(0.0005, 0.01, 3000)
    y = 0.7 * x + rng.normal(0.0003, 0.007, 3000)
    iid = sharpe_margin_se(x, y, 1.2, 252)
    assert sharpe_margin_se_hac(x, y, 1.2, 252, lag=0) == pytest.approx(iid, rel=0.03)
    assert sharpe_margin_se_hac(x, y, 1.2, 252) == pytest.approx(iid, rel=0.1)  # its own estimation noise


def test_the_hac_error_edge_cases():
    rng = np.random.default_rng(3)
    x = rng.normal(0.001, 0.01, 500)
    assert sharpe_margin_se_hac(x, x, 1.0, 252) == pytest.approx(0.0, abs=1e-6)
    s = x.mean() / x.std()
    kurt = float(np.mean((x - x.mean()) ** 4) / x.var() ** 2)
    # cash against a live series: the distribution-free variance of one Sharpe ratio
    # (1 + s^2 (kurtosis - 1) / 4 - s * skew ...) reduces to the live series' own terms
    live_only = sharpe_margin_se_hac(x, np.zeros(500), 1.2, 252, lag=0)
    skew = float(np.mean((x - x.mean()) ** 3) / x.std() ** 3)
    assert live_only == pytest.approx(math.sqrt((1 - s * skew + s**2 * (kurt - 1) / 4) / 500 * 252), rel=1e-9)
    assert math.isnan(sharpe_margin_se_hac(x[:2], x[:2], 1.0, 252))  # too few periods for an error
    assert newey_west_lag(1000) == 6 and newey_west_lag(3000) == 8 and newey_west_lag(0) == 0
    with pytest.raises(DataError, match="lag"):
        sharpe_margin_se_hac(x, x, 1.0, 252, lag=-1)
    with pytest.raises(DataError, match="periods"):
        sharpe_margin_se_hac(x, x[:10], 1.0, 252)


def test_a_long_series_is_measured_when_no_convention_fits():
    # three business days of every four: a median step of one day says 252, the data say ~196
    days = np.array(np.busday_offset("2015-01-01", np.arange(1200), roll="forward"), dtype="datetime64[ns]")
    three_of_four = days[np.arange(days.size) % 4 != 3]
    assert periods_per_year(three_of_four) == pytest.approx(365.25 * 5 / 7 * 0.75, rel=1e-2)


def test_one_period_has_no_ratios():
    """Sortino was -sqrt(periods a year) for any single loss (Sharpe 0: no spread to divide by)."""
    m = performance(np.array([-0.01]), np.array([1.0]), 252)
    assert (m.sharpe, m.sortino) == (0.0, 0.0) and m.total_return == pytest.approx(-0.01)
