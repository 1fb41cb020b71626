"""``evaluate agents``' equity chart with wealth beyond a float draws log10 wealth, as the
backtest report's does (``backtest.report.wealth_curves``); it plotted ``cumprod(1 + r)``, inf
from the overflow on, so the curves stopped there. Ordinary charts are drawn as before."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
from ensemble_trader.backtest.engine import CostModel, strategy_returns
from ensemble_trader.cli import evaluate

matplotlib.use("Agg")


def _prepared(close: np.ndarray) -> SimpleNamespace:
    times = np.datetime64("2000-01-03") + np.arange(close.size)
    return SimpleNamespace(close=close, timestamp=times, regimes=None, symbol="SYN")


def _draw(close: np.ndarray, paths: np.ndarray, monkeypatch) -> list:
    import matplotlib.pyplot as plt

    drawn = {}
    monkeypatch.setattr("ensemble_trader.marketdata.save_figure", lambda fig, path: drawn.setdefault("fig", fig))
    monkeypatch.setattr(plt, "close", lambda fig: None)
    evaluate.plot_equity(_prepared(close), paths, ("balanced",), CostModel(), "unused.png")
    return drawn["fig"].axes[0]


def test_wealth_beyond_a_float_is_drawn_as_log10_wealth(monkeypatch):
    close = np.where(np.arange(5_001) % 2 == 0, 100.0, 120.0)  # +20 %, -16.7 %, ...
    paths = np.where(np.arange(5_001) % 2 == 0, 1.0, -1.0)[:, None]  # long into each rise, short into each fall
    ax = _draw(close, paths, monkeypatch)
    assert ax.get_ylabel() == "log10 wealth (wealth beyond a float)"
    agent, hold = (np.asarray(line.get_ydata()) for line in ax.get_lines())
    assert np.all(np.isfinite(agent)) and agent[-1] > 308  # beyond a float (1.8e308)
    r = close[1:] / close[:-1] - 1.0
    expected = np.cumsum(np.log1p(strategy_returns(paths[:-1, 0], r, CostModel()))) / np.log(10.0)
    np.testing.assert_allclose(agent, expected, rtol=1e-9)
    assert abs(hold[-1]) < 1  # buy-and-hold ends near where it began


def test_an_ordinary_chart_is_the_product_on_a_log_axis(monkeypatch):
    rng = np.random.default_rng(3)
    close = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, 300))
    paths = rng.uniform(-1.0, 1.0, (300, 1))
    ax = _draw(close, paths, monkeypatch)
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "wealth (log scale)"
    r = close[1:] / close[:-1] - 1.0
    [agent, hold] = ax.get_lines()
    np.testing.assert_array_equal(agent.get_ydata(), np.cumprod(1 + strategy_returns(paths[:-1, 0], r, CostModel())))
    np.testing.assert_array_equal(hold.get_ydata(), np.cumprod(1 + strategy_returns(np.ones_like(r), r, CostModel())))
