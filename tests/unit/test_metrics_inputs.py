"""Inputs of the backtest metrics a caller can get wrong: each is refused with a DataError that
names the parameter and the value, never a raw TypeError nor a silent conversion."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from ensemble_trader.backtest.engine import CostModel, summarise
from ensemble_trader.backtest.metrics import (
    checked_periods_per_year,
    performance,
    sharpe_margin_se,
    sharpe_margin_se_hac,
)
from ensemble_trader.domain.errors import DataError

RNG = np.random.default_rng(7)
A, B = RNG.normal(0.001, 0.01, 50), RNG.normal(0.0005, 0.01, 50)


@pytest.mark.parametrize("field", ["cost_bps", "slippage_bps"])
@pytest.mark.parametrize(("value", "shown"), [
    (True, "True (a bool)"), ("1", "'1' (a str)"), (None, "None"), (float("nan"), "nan"),
    (float("inf"), "inf"), (-0.5, "-0.5"), (np.bool_(True), "np.True_ (a bool)"),
])
def test_a_cost_that_is_not_a_finite_number_at_least_zero_is_refused(field, value, shown):
    with pytest.raises(DataError, match=re.escape(f"CostModel.{field} must be a finite number >= 0, got {shown}")):
        CostModel(**{field: value})


def test_costs_of_any_real_number_type_are_accepted_as_before():
    assert CostModel(1, np.float32(2.0)).rate == pytest.approx(3e-4)
    assert CostModel(np.int64(0), 0.0).rate == 0.0


@pytest.mark.parametrize(("value", "shown"), [
    (None, "None"), ("252", "'252' (a str)"), (True, "True (a bool)"), (0, "0"), (-252.0, "-252.0"),
    (float("nan"), "nan"), (float("inf"), "inf"), (10**400, str(10**400)),
])
def test_periods_per_year_that_is_not_a_finite_number_above_zero_is_refused(value, shown):
    message = re.escape(f"periods_per_year must be a finite number > 0, got {shown}")
    with pytest.raises(DataError, match=message):
        performance(A, np.ones(A.size), value)
    with pytest.raises(DataError, match=message):
        sharpe_margin_se(A, B, 1.2, value)
    with pytest.raises(DataError, match=message):
        sharpe_margin_se_hac(A, B, 1.2, value)
    with pytest.raises(DataError, match=message):
        summarise(A, np.ones(A.size), value)


def test_periods_per_year_of_any_real_number_type_give_the_same_figures():
    as_float = performance(A, np.ones(A.size), 252.0)
    assert performance(A, np.ones(A.size), 252) == as_float
    assert performance(A, np.ones(A.size), np.int64(252)) == as_float
    assert sharpe_margin_se(A, B, 1.2, np.float64(252.0)) == sharpe_margin_se(A, B, 1.2, 252.0)


def test_bars_per_year_read_from_text_but_never_from_a_bool():
    assert checked_periods_per_year("252") == 252.0  # a command's --bars-per-year
    with pytest.raises(DataError, match=r"bars per year must be a finite number > 0, got True \(a bool\)"):
        checked_periods_per_year(True)


@pytest.mark.parametrize("c", [None, "1.2", True, float("nan"), float("inf")])
def test_the_goal_factor_of_a_margin_must_be_a_finite_number(c):
    with pytest.raises(DataError, match="c must be a finite number, got"):
        sharpe_margin_se(A, B, c, 252)
    with pytest.raises(DataError, match="c must be a finite number, got"):
        sharpe_margin_se_hac(A, B, c, 252)


@pytest.mark.parametrize("lag", [-1, 1.5, True, "3"])
def test_the_newey_west_lag_must_be_an_integer_at_least_zero(lag):
    with pytest.raises(DataError, match=r"lag must be None or an integer >= 0, got"):
        sharpe_margin_se_hac(A, B, 1.2, 252, lag=lag)
    assert sharpe_margin_se_hac(A, B, 1.2, 252, lag=np.int64(3)) == sharpe_margin_se_hac(A, B, 1.2, 252, lag=3)


@pytest.mark.parametrize(("labels", "unknown"), [
    (["bull", "BULL", "bear", "bull"], "['bear', 'bull']"),
    (["BULL", "", "BEAR", "BEAR"], "['']"),
    ([0, 0, 1, 3], "['0', '1', '3']"),
])
def test_summarise_refuses_regime_labels_it_does_not_know(labels, unknown):
    # they used to be left out of every regime's metrics without a word ("bull": no BULL table)
    message = re.escape(f"unknown regime labels {unknown}; expected ['BULL', 'BEAR', 'SIDEWAYS', 'VOLATILE']")
    with pytest.raises(DataError, match=message):
        summarise(A[:4], np.ones(4), 252, np.array(labels))


def test_summarise_takes_the_four_regimes_as_strings_or_regime_members():
    from ensemble_trader.domain.models import Regime

    names = np.array(["BULL", "BEAR", "BULL", "VOLATILE"])
    out = summarise(A[:4], np.ones(4), 252, names)
    assert list(out["by_regime"]) == ["BULL", "BEAR", "VOLATILE"]
    assert summarise(A[:4], np.ones(4), 252, [Regime(n) for n in names]) == out


@pytest.mark.parametrize("n", [0, 1, 2])
def test_a_margin_over_fewer_than_three_periods_has_no_standard_error(n):
    # NaN, not 0.0: 0.0 read as a margin known exactly (a 2-period window of the backtest had
    # margin_se 0.0 beside Sharpe ratios of 10 and 16)
    a, b = np.array([0.012, -0.004])[:n], np.array([0.006, 0.001])[:n]
    assert math.isnan(sharpe_margin_se(a, b, 1.2, 252))
    assert math.isnan(sharpe_margin_se_hac(a, b, 1.2, 252))
    assert math.isnan(sharpe_margin_se_hac(a, b, 1.2, 252, lag=0))


def test_three_periods_are_enough_for_a_standard_error():
    a, b = np.array([0.01, -0.02, 0.03]), np.array([0.0, 0.01, 0.02])
    assert 0.0 < sharpe_margin_se(a, b, 1.2, 252) < math.inf
    assert 0.0 < sharpe_margin_se_hac(a, b, 1.2, 252) < math.inf


def test_an_annual_return_beyond_a_float_is_nan_not_a_flat_year():
    # +9 % in one hourly period, or +20 % over two, compounded over 8,760 hours a year
    for returns in (np.array([0.09]), np.array([0.1, 0.0909])):
        m = performance(returns, np.ones(returns.size), 8760.0)
        assert math.isnan(m.annual_return)
        assert m.total_return == pytest.approx(np.prod(1 + returns) - 1)
        # it earned and never lost: unbounded, not given either (one period has no ratio: 0, as its Sharpe)
        assert m.sortino == 0.0 if returns.size == 1 else math.isnan(m.sortino)
        assert all(math.isfinite(v) for k, v in m.as_dict().items() if k not in ("annual_return", "sortino"))
    # within a float it is still the figure, however large, and a total loss is -100 %
    assert performance(np.array([0.1, 0.0909]), np.ones(2), 7008.0).annual_return == pytest.approx(
        1.19999 ** 3504 - 1, rel=1e-9)
    assert performance(np.array([-0.1, -0.0909]), np.ones(2), 8760.0).annual_return == -1.0


def test_summarise_reports_the_regime_whose_annual_return_overflows_as_nan():
    # one BULL hour of +9 % among VOLATILE ones: BULL's annual return cannot be given
    out = summarise(np.array([0.001, 0.09, -0.001]), np.ones(3), 8760.0, np.array(["VOLATILE", "BULL", "VOLATILE"]))
    assert math.isnan(out["by_regime"]["BULL"]["annual_return"])
    assert out["by_regime"]["BULL"]["total_return"] == pytest.approx(0.09)
    assert math.isfinite(out["by_regime"]["VOLATILE"]["annual_return"])
    assert math.isfinite(out["overall"]["annual_return"])


@pytest.mark.parametrize(("value", "shown"), [(float("nan"), "nan"), (True, "True (a bool)"), ("1", "'1' (a str)")])
def test_an_initial_position_that_is_not_a_finite_number_is_refused(value, shown):
    # a NaN start made the first trade, and so the whole turnover, NaN
    with pytest.raises(DataError, match=re.escape(f"initial_position must be a finite number, got {shown}")):
        performance(A, np.ones(A.size), 252.0, initial_position=value)
    assert performance(A, np.ones(A.size), 252.0, initial_position=np.float32(0.5)).turnover == pytest.approx(
        0.5 / A.size * 252.0)


def test_given_trades_must_be_finite_sizes():
    with pytest.raises(DataError, match=re.escape("trades[3] is nan; every value must be finite")):
        performance(A, np.ones(A.size), 252.0, trades=np.where(np.arange(A.size) == 3, np.nan, 0.0))
    with pytest.raises(DataError, match="trades must be sizes of position changes"):
        performance(A, np.ones(A.size), 252.0, trades=-np.ones(A.size))
