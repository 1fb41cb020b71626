"""Ruin: a period losing 100 % or more of the account (a leveraged position over a crash) ends
it. Wealth stops at 0 — it never turns negative and comes back — and nothing is held, traded or
won afterwards, in every report built on ``strategy_returns`` and ``summarise`` and in
``training.meta.bounds``; a ruined agent is never the best agent the target is measured against."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.backtest.engine import (
    CostModel,
    asset_returns,
    evaluate_agents,
    load_series,
    prepare,
    run_pool,
    strategy_returns,
    summarise,
)
from ensemble_trader.backtest.ensemble import (
    PipelineRun,
    best_agent,
    evaluate,
    first_index,
    run_meta,
    run_pipeline,
)
from ensemble_trader.backtest.metrics import METRIC_NAMES, apply_ruin, max_drawdown, performance
from ensemble_trader.bench import committed_models
from ensemble_trader.cli import main
from ensemble_trader.domain.agents import AgentPool
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.meta_agent import MetaAgentConfig
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.marketdata import write_bars_csv

from training.meta.bounds import simplex_grid, window_bounds

FREE = CostModel(0.0, 0.0)


def test_a_period_losing_more_than_everything_is_ruin_and_nothing_follows():
    close = np.array([100.0, 110.0, 50.0, 60.0, 30.0, 45.0])  # +10 %, -54.5 %, +20 %, -50 %, +50 %
    r = asset_returns(close)
    positions = np.array([1.0, 2.0, 2.0, -1.0, 1.5])  # 2x over the -54.5 % bar: -109 %
    net = strategy_returns(positions, r, FREE)
    np.testing.assert_allclose(net, [0.10, -1.0, 0.0, 0.0, 0.0])
    report = summarise(net, positions, 252.0, np.array(["BULL", "BEAR", "BEAR", "VOLATILE", "VOLATILE"]))
    overall = report["overall"]
    assert overall["total_return"] == -1.0 and overall["max_drawdown"] == 1.0 and overall["annual_return"] == -1.0
    assert overall["win_rate"] == pytest.approx(1 / 2)  # in the market over the first two periods only
    assert overall["turnover"] == pytest.approx((1.0 + 1.0) / 5 * 252)  # the trades before ruin, none after
    after = report["by_regime"]["VOLATILE"]  # periods wholly after the ruin
    assert after == dict.fromkeys(METRIC_NAMES, 0.0)  # no return, no trade, never in the market
    bear = report["by_regime"]["BEAR"]
    assert bear["total_return"] == -1.0 and bear["max_drawdown"] == 1.0 and bear["win_rate"] == 0.0


def test_a_minus_105_percent_period():
    net = np.array([0.02, -1.05, 0.3, -0.2])  # as a caller might hand in: after ruin the account is gone
    positions = np.array([1.0, 2.0, 2.0, 1.0])
    m = performance(net, positions, 252.0)
    assert m.total_return == -1.0 and m.max_drawdown == 1.0
    assert max_drawdown(net) == 1.0
    report = summarise(net, positions, 252.0, np.array(["BULL", "BULL", "BEAR", "BEAR"]))
    assert report["overall"]["total_return"] == -1.0 and report["overall"]["max_drawdown"] == 1.0
    assert report["by_regime"]["BEAR"]["turnover"] == 0.0 and report["by_regime"]["BEAR"]["win_rate"] == 0.0
    assert report["by_regime"]["BEAR"]["total_return"] == 0.0


def test_every_column_is_its_own_account():
    r = np.array([0.1, -0.6, 0.5, 0.1])
    p = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    net = strategy_returns(p, r, FREE)
    np.testing.assert_allclose(net[:, 0], [0.1, -0.6, 0.5, 0.1])
    np.testing.assert_allclose(net[:, 1], [0.2, -1.0, 0.0, 0.0])
    np.testing.assert_array_equal(apply_ruin(net), net)  # applying it again changes nothing


def test_costs_can_tip_a_period_into_ruin():
    r = np.array([-0.999, 0.5])
    net = strategy_returns(np.array([1.0, 1.0]), r, CostModel(10.0, 0.0))  # -99.9 % and a 0.1 % entry cost
    np.testing.assert_allclose(net, [-1.0, 0.0])


def _crash_series(tmp_path: Path) -> tuple[Path, int]:
    """Synthetic daily bars and, after a bar where the Aggressive holds more than 1.05x (L = 2),
    every price divided by 100: the Aggressive's next period loses more than 100 %."""
    data = generate("realistic", 600, 7)
    prepared = prepare(data.series)
    pool = AgentPool.load(None)
    aggressive = run_pool(pool, prepared.features)[:, pool.names.index("aggressive")]
    long = np.flatnonzero(aggressive[:-1] > 1.05)
    assert long.size, "the committed Aggressive never holds more than 1.05x on this path"
    crash_at = prepared.timestamp[long[0]]
    s = data.series
    after = np.asarray(s.timestamp) > crash_at
    scale = np.where(after, 0.01, 1.0)
    crashed = BarSeries(s.symbol, s.timestamp, s.open * scale, s.high * scale, s.low * scale, s.close * scale,
                        s.volume)
    path = tmp_path / "crash.csv"
    write_bars_csv(path, [crashed])
    return path, int(long[0])


def test_evaluate_agents_on_a_crash_reports_the_leveraged_agent_ruined(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _crash_series(tmp_path)
    assert main(["evaluate", "agents", "--bars", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    aggressive = report["agents"]["aggressive"]["overall"]
    assert aggressive["total_return"] == -1.0 and aggressive["max_drawdown"] == 1.0
    for group in ("agents", "baselines"):
        for block in report[group].values():
            for m in (block["overall"], *block["by_regime"].values()):
                assert m["total_return"] >= -1.0 and 0.0 <= m["max_drawdown"] <= 1.0
    assert main(["evaluate", "agents", "--bars", str(path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("aggressive"))
    assert row.split()[1:3] == ["-100.0%", "-100.0%"]


def test_the_report_builder_zeroes_everything_after_the_ruin(tmp_path: Path) -> None:
    data = generate("realistic", 300, 3)
    prepared = prepare(data.series, data.regimes)
    n = len(prepared.close)
    r = asset_returns(prepared.close)
    k = int(np.argmin(r[: len(r) // 2]))  # the worst bar of the first half: 1.01 / |r_k| over it loses 101 %
    assert r[k] < 0
    path = np.zeros(n)
    path[: k + 1] = 1.01 / abs(r[k])
    path[k + 1:] = 1.0  # what the policy would still have asked for
    report = evaluate_agents(prepared, {"levered": path}, FREE)
    overall = report["agents"]["levered"]["overall"]
    assert overall["total_return"] == -1.0 and overall["max_drawdown"] == 1.0
    labels = prepared.regimes.copy()
    labels[k + 1:] = "VOLATILE"  # every period after the ruin in a regime of its own
    labels[: k + 1] = np.where(labels[: k + 1] == "VOLATILE", "BEAR", labels[: k + 1])
    relabelled = evaluate_agents(replace(prepared, regimes=labels), {"levered": path}, FREE)
    assert relabelled["agents"]["levered"]["by_regime"]["VOLATILE"] == dict.fromkeys(METRIC_NAMES, 0.0)
    assert relabelled["baselines"]["buy_and_hold"]["by_regime"]["VOLATILE"]["win_rate"] > 0.0  # not ruined: still in


def test_the_backtest_never_reports_wealth_below_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _crash_series(tmp_path)
    assert main(["backtest", "--bars", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    blocks = [result["ensemble"], result["buy_and_hold"], *result["agents"].values()]
    blocks += [m for side in result["by_regime"].values() for m in side.values() if "total_return" in m]
    blocks += [m for per in result["by_regime"]["agents"].values() for m in per.values()]
    for m in blocks:
        assert m["total_return"] >= -1.0 and 0.0 <= m["max_drawdown"] <= 1.0


def _ruined_leader(n: int = 400) -> tuple[PipelineRun, int]:
    """A pipeline run (the committed models on synthetic bars) given prices and agent targets
    where, in the evaluated window, the first agent holds 2x over a -60 % bar on its sixth period
    (ruin) and the others hold long, most of the time, through a steady fall: the ruined agent,
    flat after the crash, has the highest Sharpe. Returns the run and the first evaluated bar."""
    pool, regime = committed_models()
    pipeline = run_pipeline(generate("realistic", n, 3).series, pool, regime)
    i0 = first_index(pipeline, None)
    r = np.random.default_rng(0).normal(-0.002, 0.005, n - 1)
    r[i0 + 5] = -0.6
    close = 100.0 * np.concatenate(([1.0], np.cumprod(1.0 + r)))
    targets = np.zeros_like(pipeline.agent_targets)
    for k in range(1, targets.shape[1]):  # the others: long, flat every (k + 2)th bar (Sharpe ratios apart)
        targets[i0:, k] = 1.0
        targets[i0::k + 2, k] = 0.0
    targets[i0:, 0] = 2.0
    return replace(pipeline, close=close, agent_targets=targets), i0


def test_a_ruined_agent_is_never_the_best_agent_of_the_target():
    pipeline, _ = _ruined_leader()
    result = evaluate(run_meta(pipeline, MetaAgentConfig()), CostModel())
    names = pipeline.agent_names
    ruined = result["agents"][names[0]]["overall"]
    others = {n: result["agents"][n]["overall"] for n in names[1:]}
    assert ruined["total_return"] == -1.0 and ruined["max_drawdown"] == 1.0
    assert ruined["sharpe"] > max(m["sharpe"] for m in others.values())  # by Sharpe alone it would lead
    target = result["target"]
    best = max(others, key=lambda n: others[n]["sharpe"])
    assert target["best_agent"] == best  # was the ruined agent: its 100 % drawdown made drawdown_met trivial
    assert target["best_sharpe"] == others[best]["sharpe"] and target["best_max_drawdown"] < 1.0
    assert target["drawdown_met"] == (result["ensemble"]["overall"]["max_drawdown"] <= target["best_max_drawdown"] + 1e-12)
    assert best_agent(["a", "b"], [-0.5, -2.0], [True, False]) == 1
    assert best_agent(["a", "b"], [-0.5, -2.0], [True, True]) == 0  # every agent ruined: by Sharpe
    assert best_agent(["a", "b"], [1.0, 1.0], [False, False]) == 0  # a tie: the first


def test_window_bounds_rank_a_ruined_agent_as_evaluate_does():
    pipeline, _ = _ruined_leader()
    costs = CostModel()
    target = evaluate(run_meta(pipeline, MetaAgentConfig()), costs)["target"]
    bounds = window_bounds(pipeline, costs, None, simplex_grid(len(pipeline.agent_names), 0.25))
    assert bounds["best_agent"] == target["best_agent"] and bounds["best_sharpe"] == pytest.approx(target["best_sharpe"])
    assert bounds["sharpe_goal"] == pytest.approx(target["sharpe_goal"])
    assert bounds["static"]["weights"][pipeline.agent_names[0]] < 0.5  # no mix that is ruined too (2x w + 1x (1 - w))


def test_window_bounds_agent_sharpes_are_the_backtests_on_a_crash(tmp_path: Path) -> None:
    path, _ = _crash_series(tmp_path)
    series, _ = load_series(str(path))
    pool, regime = committed_models()
    pipeline = run_pipeline(series, pool, regime)
    costs = CostModel(1.0, 2.0)
    result = evaluate(run_meta(pipeline, MetaAgentConfig.create(cost_bps=3.0)), costs)
    assert result["agents"]["aggressive"]["overall"]["total_return"] == -1.0
    bounds = window_bounds(pipeline, costs, None, simplex_grid(len(pool.names), 0.25))
    for name in pool.names:  # the Aggressive's was -0.729 against the backtest's -0.925: no ruin in bounds
        assert bounds["agents"][name] == pytest.approx(result["agents"][name]["overall"]["sharpe"], rel=1e-9, abs=1e-12)
    assert bounds["best_agent"] == result["target"]["best_agent"]
    assert bounds["sharpe_goal"] == pytest.approx(result["target"]["sharpe_goal"])
