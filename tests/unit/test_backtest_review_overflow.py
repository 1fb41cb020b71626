"""Wealth beyond a float: a long winning run made ``prod(1 + r)`` overflow, so ``max_drawdown``
was NaN (inf / inf), ``total_return`` inf even when the run ended far below a float's limit and
``annual_return`` NaN; a run that overflowed and then was ruined gave NaN (inf * 0). Those figures
now come from ``log(1 + r)`` when the product leaves the float range, and every figure of
ordinary data is the product's, unchanged to the last bit. No warning is raised on the way."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ensemble_trader.backtest.engine import summarise
from ensemble_trader.backtest.metrics import max_drawdown, performance

pytestmark = pytest.mark.filterwarnings("error")


def _metrics(r: np.ndarray, ppy: float = 252.0):
    return performance(r, np.ones(r.size), ppy)


def test_a_run_beyond_a_float_has_a_drawdown_and_an_annual_return():
    r = np.full(5000, 0.2)  # log-wealth 911.6, past a float's 709.8
    m = _metrics(r)
    assert m.total_return == math.inf  # the growth itself is beyond a float
    assert m.annual_return == pytest.approx(1.2**252 - 1.0, rel=1e-9)
    assert m.max_drawdown == 0.0 and math.copysign(1.0, m.max_drawdown) == 1.0
    assert max_drawdown(r) == 0.0


def test_a_fall_after_wealth_overflowed_is_measured():
    r = np.concatenate((np.full(5000, 0.2), [-0.1, -0.1], np.full(10, 0.01)))
    assert max_drawdown(r) == pytest.approx(1.0 - 0.9 * 0.9, abs=1e-9)
    report = summarise(r, np.ones(r.size), 252.0)["overall"]
    assert report["max_drawdown"] == pytest.approx(0.19, abs=1e-9)
    assert math.isfinite(report["annual_return"])


def test_a_run_that_overflows_on_the_way_but_ends_within_a_float_has_its_total_return():
    r = np.concatenate((np.full(3000, 0.5), np.full(3000, -1.0 / 3.0)))  # up to 1.5**3000, back to 1
    m = _metrics(r)
    assert m.total_return == pytest.approx(0.0, abs=1e-6)
    assert m.annual_return == pytest.approx(0.0, abs=1e-6)
    assert m.max_drawdown == pytest.approx(1.0)  # (2/3)**3000 of the peak is left


def test_a_ruin_after_wealth_overflowed_is_a_total_loss_not_nan():
    r = np.concatenate((np.full(5000, 0.2), [-1.0], np.zeros(3)))
    m = _metrics(r)
    assert (m.total_return, m.annual_return, m.max_drawdown) == (-1.0, -1.0, 1.0)


def test_a_growth_that_underflows_without_a_ruin_is_annualised_from_its_log():
    r = np.full(100_000, -0.0075)  # log-growth -752.8: the product is 0.0, the account is not gone
    m = _metrics(r)
    assert m.annual_return == pytest.approx(math.expm1(252.0 * math.log1p(-0.0075)), rel=1e-9)
    assert m.annual_return > -0.9  # it read -1.0, a total loss every year
    assert m.total_return == -1.0 and m.max_drawdown == 1.0  # 1 - e^-752.8 rounds to 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ordinary_figures_are_the_products_to_the_last_bit(seed):
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0005, 0.02, 2000)
    r[rng.integers(0, 2000, 5)] = -0.3
    m = _metrics(r)
    growth = float(np.prod(1.0 + r))
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    assert m.total_return == growth - 1.0
    assert m.annual_return == float(np.expm1(252.0 / r.size * float(np.log(growth))))
    assert m.max_drawdown == float(np.max(1.0 - wealth / np.maximum.accumulate(wealth)))
    ruined = np.concatenate((r[:100], [-1.2], r[100:]))
    assert (_metrics(ruined).total_return, _metrics(ruined).annual_return) == (-1.0, -1.0)
