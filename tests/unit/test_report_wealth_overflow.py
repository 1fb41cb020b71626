"""The report's equity and drawdown figures with wealth beyond a float: ``_wealth`` took
``cumprod(1 + r)``, inf after 5,000 periods of +20 % (log-wealth 911.6; a float ends at 709.8) and
NaN after a later ruin, so the curve vanished from the plot there and its drawdown read NaN.
Now the equity figure shows every curve as log10 wealth on a linear axis, labelled so, when any
curve is beyond a float, and the drawdowns come from ``metrics.drawdowns`` (log space there).
Ordinary curves are drawn exactly as before: the product, to the last bit, on a log-scale axis."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from ensemble_trader.backtest import report

pytestmark = pytest.mark.filterwarnings("error")

N = 5003


def _overflowing_curves() -> dict[str, np.ndarray]:
    up = np.full(N, 0.2)
    up[5000:] = (-0.5, 0.1, 0.1)  # a fall of 50 % after the overflow
    ruined = np.full(N, 0.2)
    ruined[5000:] = (-1.0, 0.0, 0.0)
    return {"ensemble": up, "balanced": ruined, "buy_and_hold": np.full(N, 0.0001)}


def _run(curves: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    monkeypatch.setattr(report, "_curves", lambda run, costs, i0: curves)
    monkeypatch.setattr(report, "_png", lambda fig: fig)  # the figure itself, to read what it draws
    times = np.datetime64("2000-01-03", "ns") + np.arange(N + 1) * np.timedelta64(1, "D")
    pipeline = SimpleNamespace(timestamp=times, regimes=np.full(N + 1, "BULL"), confidence=np.ones(N + 1))
    return SimpleNamespace(pipeline=pipeline, regret_curve=lambda i0: np.zeros(N + 1),
                           config=SimpleNamespace(risk_adjustment="none"))


def test_equity_beyond_a_float_is_drawn_as_log10_wealth(monkeypatch):
    fig = report.plot_equity(_run(_overflowing_curves(), monkeypatch), None, 0)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "log10 wealth (wealth beyond a float)"
    lines = {line.get_label(): np.asarray(line.get_ydata()) for line in ax.get_lines()}
    assert lines["ensemble"][5000] == pytest.approx(5000 * math.log10(1.2), rel=1e-12)  # 395.9
    assert lines["ensemble"][5001] == pytest.approx(lines["ensemble"][5000] + math.log10(0.5), rel=1e-12)
    assert np.isfinite(lines["ensemble"]).all()
    assert np.isfinite(lines["balanced"][:5001]).all() and (lines["balanced"][5001:] == -math.inf).all()
    assert not any(np.isnan(y).any() for y in lines.values())
    assert lines["buy_and_hold"][-1] == pytest.approx(N * math.log10(1.0001), rel=1e-9)


def test_drawdowns_beyond_a_float_are_measured(monkeypatch):
    fig = report.plot_drawdowns_and_regret(_run(_overflowing_curves(), monkeypatch), None, 0, "balanced")
    lines = {line.get_label(): np.asarray(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert lines["ensemble"][5001] == pytest.approx(-0.5, abs=1e-12)
    assert lines["ensemble"].min() == pytest.approx(-0.5, abs=1e-12)
    assert lines["balanced (best agent)"][-1] == -1.0
    assert not any(np.isnan(y).any() for y in lines.values())


@pytest.mark.parametrize("seed", [0, 1])
def test_ordinary_curves_are_drawn_as_before_to_the_last_bit(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    curves = {name: rng.normal(0.0004, 0.02, N) for name in ("ensemble", "balanced", "buy_and_hold")}
    curves["balanced"][rng.integers(0, N, 5)] = -0.25
    run = _run(curves, monkeypatch)
    equity = report.plot_equity(run, None, 0).axes[0]
    assert equity.get_yscale() == "log" and equity.get_ylabel() == "wealth (log scale)"
    drawn = {line.get_label(): np.asarray(line.get_ydata()) for line in equity.get_lines()}
    falls = {line.get_label(): np.asarray(line.get_ydata())
             for line in report.plot_drawdowns_and_regret(run, None, 0, "balanced").axes[0].get_lines()}
    for name, r in curves.items():
        wealth = np.concatenate(([1.0], np.cumprod(1.0 + r)))  # the old figures
        np.testing.assert_array_equal(drawn[name], wealth)
        fall = falls[name + (" (best agent)" if name == "balanced" else "")]
        old = wealth / np.maximum.accumulate(wealth) - 1.0
        np.testing.assert_array_equal(fall, old)
        assert (np.signbit(fall) == np.signbit(old)).all()
