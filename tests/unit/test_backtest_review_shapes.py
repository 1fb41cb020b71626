"""Shapes on the path every backtest report takes: ``summarise`` takes one strategy, (m,) returns
and positions; ``strategy_returns`` takes positions (m,) or (m, k) over (m,) asset returns. Any
other shape is a DataError naming the argument and its shape, not numpy's bare ValueError
(concatenating a 2-D block) or an IndexError (the length of a single number)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from ensemble_trader.backtest.engine import CostModel, strategy_returns, summarise
from ensemble_trader.domain.errors import DataError

R = np.array([0.01, 0.02, -0.01])
COSTS = CostModel()


@pytest.mark.parametrize("positions", [np.ones((3, 2)), np.ones((3, 1)), np.float64(1.0), 1.0, np.ones((3, 2, 1))])
def test_summarise_refuses_positions_that_are_not_one_series(positions):
    shape = np.shape(positions)
    with pytest.raises(DataError, match=re.escape(f"positions must have shape (m,), one value per period, got shape {shape}")):
        summarise(R, positions, 252.0)


@pytest.mark.parametrize("returns", [np.zeros((3, 2)), 0.0])
def test_summarise_refuses_returns_that_are_not_one_series(returns):
    shape = np.shape(returns)
    with pytest.raises(DataError, match=re.escape(f"returns must have shape (m,), one value per period, got shape {shape}")):
        summarise(returns, np.ones(3), 252.0)


def test_summarise_of_one_series_is_unchanged():
    report = summarise(R, np.ones(3), 252.0, np.array(["BULL", "BEAR", "BULL"]), 1.0)
    assert report["overall"]["total_return"] == pytest.approx(1.01 * 1.02 * 0.99 - 1.0, rel=1e-12)
    assert report["overall"]["turnover"] == 0.0
    assert set(report["by_regime"]) == {"BULL", "BEAR"}


@pytest.mark.parametrize("positions", [1.0, np.float64(0.5), np.array(2.0), np.ones((3, 2, 1))])
def test_strategy_returns_refuses_positions_that_are_neither_a_path_nor_a_block(positions):
    shape = np.shape(positions)
    with pytest.raises(DataError, match=re.escape(f"positions must have shape (m,) or (m, k), one row per period, got shape {shape}")):
        strategy_returns(positions, R, COSTS)


@pytest.mark.parametrize("returns", [0.01, np.zeros((3, 1)), np.zeros((3, 2))])
def test_strategy_returns_refuses_returns_that_are_not_one_series(returns):
    shape = np.shape(returns)
    with pytest.raises(DataError, match=re.escape(f"returns must have shape (m,), one asset return per period, got shape {shape}")):
        strategy_returns(np.ones(3), returns, COSTS)


def test_strategy_returns_keeps_a_path_and_a_block_of_paths():
    path = np.array([1.0, 0.5, -1.0])
    one = strategy_returns(path, R, COSTS, 0.25)
    block = strategy_returns(np.column_stack((path, np.zeros(3))), R, COSTS, 0.25)
    expected = path * R - COSTS.rate * np.abs(path - np.array([0.25, 1.0, 0.5]))
    np.testing.assert_array_equal(one, expected)
    np.testing.assert_array_equal(block[:, 0], expected)
    np.testing.assert_array_equal(block[:, 1], -COSTS.rate * np.array([0.25, 0.0, 0.0]))
