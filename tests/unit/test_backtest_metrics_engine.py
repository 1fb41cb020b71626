"""Backtest engine building blocks: positions → returns with costs, regimes, report shape."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.backtest.engine import (
    CostModel,
    PreparedSeries,
    align_truth,
    asset_returns,
    evaluate_agents,
    evaluated_bars,
    period_regimes,
    prepare,
    run_policy,
    scored_bars,
    strategy_returns,
    summarise,
)
from ensemble_trader.backtest.metrics import METRIC_NAMES
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.synthetic import generate


def test_strategy_returns_hand_computed():
    r = asset_returns(np.array([100.0, 110.0, 99.0, 99.0]))
    np.testing.assert_allclose(r, [0.10, -0.10, 0.0])
    costs = CostModel(cost_bps=10.0, slippage_bps=0.0)  # 0.1 % of the traded notional
    net = strategy_returns(np.array([1.0, -0.5, -0.5]), r, costs)
    np.testing.assert_allclose(net, [0.10 - 0.001, 0.05 - 0.0015, 0.0])
    two = strategy_returns(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), r, costs)
    np.testing.assert_allclose(two[:, 0], [0.099, -0.10, -0.001])
    np.testing.assert_allclose(two[:, 1], 0.0)


def test_cost_model_validates():
    with pytest.raises(DataError, match="slippage_bps"):
        CostModel(1.0, -1.0)


def test_period_regimes_use_the_label_known_when_the_position_is_taken():
    assert period_regimes(np.array(["BULL", "BEAR", "BEAR"])).tolist() == ["BULL", "BEAR"]
    with pytest.raises(DataError, match="unknown regime"):
        period_regimes(np.array(["UP", "BULL"]))
    # the last bar's label labels no period: a truth file need not cover it
    assert period_regimes(np.array(["BULL", "BEAR", ""])).tolist() == ["BULL", "BEAR"]


def test_summarise_per_regime_counts_real_trades():
    r = np.array([0.01, 0.02, -0.01, 0.03])
    p = np.array([1.0, 1.0, 0.0, 1.0])
    regimes = np.array(["BULL", "BULL", "BEAR", "BULL"])
    out = summarise(r, p, 4.0, regimes)
    assert set(out["by_regime"]) == {"BULL", "BEAR"}
    bull = out["by_regime"]["BULL"]
    assert bull["total_return"] == pytest.approx(1.01 * 1.02 * 1.03 - 1)
    # trades made in BULL periods: 1 (entry), 0, and 1 (re-entry after BEAR): mean 2/3 per period
    assert bull["turnover"] == pytest.approx(2 / 3 * 4.0)


def test_summarise_of_a_slice_counts_trades_from_the_position_held_before_it():
    r = np.array([0.01, 0.02])
    p = np.array([1.0, 1.0])
    fresh = summarise(r, p, 2.0, np.array(["BULL", "BULL"]))
    held = summarise(r, p, 2.0, np.array(["BULL", "BULL"]), initial_position=1.0)
    assert fresh["overall"]["turnover"] == pytest.approx(0.5 * 2.0)  # the entry trade
    assert held["overall"]["turnover"] == 0.0 == held["by_regime"]["BULL"]["turnover"]


def test_run_policy_feeds_each_agent_its_own_position():
    seen = []

    def act(features, positions):
        seen.append(positions.copy())
        return positions + np.array([1.0, -1.0])

    out = run_policy(act, np.zeros((3, 2)), 2)
    np.testing.assert_array_equal(out, [[1, -1], [2, -2], [3, -3]])
    np.testing.assert_array_equal(seen[2], [2, -2])


def test_evaluate_agents_report_shape():
    data = generate("realistic", 300, seed=4)
    prepared = prepare(data.series, data.regimes)
    assert isinstance(prepared, PreparedSeries) and prepared.regimes is not None
    n = len(prepared.close)
    report = evaluate_agents(prepared, {"balanced": np.full(n, 0.5)}, CostModel())
    half = report["agents"]["balanced"]["overall"]
    hold = report["baselines"]["buy_and_hold"]["overall"]
    assert set(half) == set(METRIC_NAMES)
    assert half["annual_vol"] == pytest.approx(hold["annual_vol"] / 2, rel=1e-6)
    assert report["baselines"]["cash"]["overall"] == dict.fromkeys(METRIC_NAMES, 0.0)
    assert set(report["agents"]["balanced"]["by_regime"]) <= {"BULL", "BEAR", "SIDEWAYS", "VOLATILE"}


def test_prepare_skips_warmup_and_windows_by_date():
    data = generate("easy", 400, seed=1)
    full = prepare(data.series)
    assert len(full.close) == 400 - (WARMUP_BARS - 1)  # bar WARMUP_BARS (index WARMUP_BARS - 1) is the first warm one
    cut = prepare(data.series, start=str(data.series.timestamp[200])[:10])
    assert cut.timestamp[0] == data.series.timestamp[200]
    np.testing.assert_array_equal(cut.features[0], full.features[200 - (WARMUP_BARS - 1)])


def test_align_truth_names_missing_bars():
    data = generate("easy", 100, seed=1)
    labels = align_truth(data.series, data.series.timestamp, data.regimes)
    assert labels.tolist() == data.regimes.tolist()
    with pytest.raises(DataError, match="no regime in the truth file"):
        align_truth(data.series, data.series.timestamp[:50], data.regimes[:50])


def test_a_truth_file_needs_labels_only_for_the_scored_bars():
    """Warm-up bars and bars outside [start, end) are never scored: a truth file covering the
    evaluated window is enough (it was refused for every bar it left out), and the error names
    the first evaluated bar it misses."""
    data = generate("easy", 400, seed=1)
    ts = data.series.timestamp
    start, end = str(ts[200])[:10], str(ts[300])[:10]
    evaluated = evaluated_bars(data.series, start, end)
    assert np.flatnonzero(evaluated).tolist() == list(range(200, 300))
    scored = scored_bars(evaluated)
    assert np.flatnonzero(scored).tolist() == list(range(200, 299))  # bar 299's period runs past the window
    labels = align_truth(data.series, ts[200:299], data.regimes[200:299], needed=scored)
    assert labels[200:299].tolist() == data.regimes[200:299].tolist() and set(labels[:200]) == {""}
    prepared = prepare(data.series, labels, start, end)
    full = prepare(data.series, data.regimes, start, end)
    np.testing.assert_array_equal(period_regimes(prepared.regimes), period_regimes(full.regimes))
    with pytest.raises(DataError, match=r"1 evaluated bar\(s\) have no regime in the truth file; first at 2000-07-21T00:00:00"):
        align_truth(data.series, ts[201:299], data.regimes[201:299], needed=scored)


def test_a_window_without_two_warm_bars_names_the_whole_series_and_open_bounds():
    data = generate("easy", 300, seed=1)
    span = "its bars run from 2000-01-03T00:00:00 to 2000-10-28T00:00:00"
    with pytest.raises(DataError, match=rf"fewer than two warm bars in \[2001-01-01, …\): {span}"):
        prepare(data.series, start="2001-01-01")
    with pytest.raises(DataError, match=rf"fewer than two warm bars in \[…, 2000-02-01\): {span}"):
        evaluated_bars(data.series, end="2000-02-01")
