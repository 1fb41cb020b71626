"""The starting position and the positions on the path every backtest report takes
(``strategy_returns`` → ``summarise``, and ``evaluate_agents`` over both): a bool, text, None or a
non-finite value is refused with a DataError naming the input, as ``performance`` refuses it,
never taken as a number nor left to fail as a TypeError or as a NaN return."""

from __future__ import annotations

import re

import numpy as np
import pytest
from ensemble_trader.backtest.engine import (
    CostModel,
    PreparedSeries,
    evaluate_agents,
    strategy_returns,
    summarise,
)
from ensemble_trader.domain.errors import DataError

R = np.array([0.01, 0.02, -0.01])
HELD = np.ones(3)
BAD_STARTS = [
    (True, "True (a bool)"), (np.bool_(True), "np.True_ (a bool)"), ("1", "'1' (a str)"), (None, "None"),
    (float("nan"), "nan"), (float("inf"), "inf"),
]


def _prepared() -> PreparedSeries:
    n = 6
    ts = np.datetime64("2020-01-01") + np.arange(n) * np.timedelta64(1, "D")
    close = np.array([100.0, 101.0, 102.0, 101.0, 103.0, 104.0])
    return PreparedSeries("X", ts, close, np.zeros((n, 3)), None, 252.0)


@pytest.mark.parametrize(("value", "shown"), BAD_STARTS)
def test_summarise_refuses_a_starting_position_that_is_not_a_finite_number(value, shown):
    with pytest.raises(DataError, match=re.escape(f"initial_position must be a finite number, got {shown}")):
        summarise(R, HELD, 252.0, None, value)


@pytest.mark.parametrize(("value", "shown"), BAD_STARTS)
def test_strategy_returns_refuses_a_starting_position_that_is_not_a_finite_number(value, shown):
    with pytest.raises(DataError, match=re.escape(f"initial_position must be a finite number, got {shown}")):
        strategy_returns(HELD, R, CostModel(), value)


@pytest.mark.parametrize(("value", "shown"), BAD_STARTS)
@pytest.mark.parametrize("name", ["a", "buy_and_hold"])
def test_evaluate_agents_names_the_starting_position_it_refuses(name, value, shown):
    message = f"initial_positions[{name!r}] must be a finite number, got {shown}"
    with pytest.raises(DataError, match=re.escape(message)):
        evaluate_agents(_prepared(), {"a": np.ones(6)}, CostModel(), {name: value})


def test_a_non_finite_position_is_named_as_a_position_not_as_a_return():
    path = np.array([1.0, np.nan, 1.0])
    with pytest.raises(DataError, match=re.escape("positions[1] is nan; every position must be finite")):
        strategy_returns(path, R, CostModel())
    with pytest.raises(DataError, match=re.escape("positions[1] is nan")):
        evaluate_agents(_prepared(), {"a": np.array([1.0, np.nan, 1.0, 1.0, 1.0, 1.0])}, CostModel())
    two = np.array([[1.0, 0.0], [1.0, -np.inf], [0.0, 0.0]])
    with pytest.raises(DataError, match=re.escape("positions[1, 1] is -inf")):
        strategy_returns(two, R, CostModel())


def test_numeric_starting_positions_of_any_real_type_give_the_figures_of_a_float():
    as_float = summarise(strategy_returns(HELD, R, CostModel(), 1.0), HELD, 252.0, None, 1.0)
    for start in (1, np.int64(1), np.float32(1.0)):
        net = strategy_returns(HELD, R, CostModel(), start)
        assert summarise(net, HELD, 252.0, None, start) == as_float
    # the start counts: entering from flat is a trade the held book does not make
    flat = summarise(strategy_returns(HELD, R, CostModel()), HELD, 252.0)
    assert flat["overall"]["turnover"] == pytest.approx(252.0 / 3)
    assert as_float["overall"]["turnover"] == 0.0
    report = evaluate_agents(_prepared(), {"a": np.ones(6)}, CostModel(), {"a": np.float64(1.0), "buy_and_hold": 1})
    assert report["agents"]["a"] == report["baselines"]["buy_and_hold"]
