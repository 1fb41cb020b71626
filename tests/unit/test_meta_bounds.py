"""Hindsight references of the meta-agent's target (training.meta.bounds): the pure parts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ensemble_trader.backtest.engine import CostModel, strategy_returns

from training.meta.bounds import (
    MIN_REGIME_PERIODS,
    format_table,
    net_returns,
    regime_mix,
    sharpe,
    simplex_grid,
    static_mix,
)

PPY = 252.0


def skilled_agents(m: int, hit_rates: list[float], seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Asset returns and the positions of agents who call each bar's direction right with their
    own probability, independently of each other (so their returns are uncorrelated)."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, m)
    right = rng.random((m, len(hit_rates))) < np.asarray(hit_rates)
    positions = np.where(right, 1.0, -1.0) * np.sign(r)[:, None]
    return r, positions


def test_simplex_grid_is_every_long_only_mix_once():
    grid = simplex_grid(4, 0.25)
    assert grid.shape == (math.comb(4 + 3, 3), 4)
    assert np.allclose(grid.sum(axis=1), 1.0) and (grid >= 0).all()
    assert len({tuple(row) for row in grid}) == len(grid)
    assert [1.0, 0.0, 0.0, 0.0] in grid.tolist() and [0.25, 0.25, 0.25, 0.25] in grid.tolist()
    assert simplex_grid(1, 0.5).tolist() == [[1.0]]


@pytest.mark.parametrize("step", [0.3, 0.0, 2.0])
def test_simplex_grid_refuses_a_step_that_does_not_divide_one(step):
    with pytest.raises(ValueError, match="step"):
        simplex_grid(3, step)


def test_net_returns_are_the_backtests():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, 50)
    p = rng.uniform(-2, 2, (50, 3))
    costs = CostModel()
    expected = strategy_returns(p, r, costs, 0.3)
    assert np.allclose(net_returns(p, r, costs.rate, 0.3), expected)
    r[10] = -0.6  # 2x over it or more is ruin: -1, then flat, in both
    p[10] = [2.5, 1.0, -1.0]
    expected = strategy_returns(p, r, costs, 0.3)
    assert expected[10, 0] == -1.0 and (expected[11:, 0] == 0.0).all()
    np.testing.assert_array_equal(net_returns(p, r, costs.rate, 0.3), expected)


def test_a_ruined_mix_is_never_the_best_one():
    """After ruin an account is flat: its Sharpe, pulled toward 0, beats a steady loser's."""
    rng = np.random.default_rng(2)
    r = rng.normal(-0.002, 0.005, 300)
    r[5] = -0.6
    positions = np.column_stack([np.full(300, 2.0), np.full(300, 1.0)])  # 2x: ruined at the crash; 1x: -60 %
    alone = sharpe(net_returns(positions, r, 0.0, 0.0), PPY)
    assert alone[0] > alone[1]
    best, weights = static_mix(positions, r, 0.0, np.zeros(2), PPY, simplex_grid(2, 0.25))
    assert weights[0] <= 0.5  # 0.75 / 0.25 holds 1.75x over the crash: -105 %, ruin; 0.5 / 0.5 1.5x: -90 %
    mixed = net_returns(positions @ weights[:, None], r, 0.0, 0.0)
    assert mixed.min() > -1.0 and best == pytest.approx(alone[1])  # any long size: the 1x Sharpe


def test_two_independent_equal_agents_mix_half_and_half_for_a_root_two_gain():
    r, positions = skilled_agents(20_000, [0.53, 0.53])
    grid = simplex_grid(2, 0.05)
    alone = sharpe(net_returns(positions, r, 0.0, 0.0), PPY)
    best, weights = static_mix(positions, r, 0.0, np.zeros(2), PPY, grid)
    assert 0.35 <= weights[0] <= 0.65
    assert best == pytest.approx(math.sqrt(2) * alone.max(), rel=0.15)


def test_a_scaled_copy_adds_nothing_to_the_best_agent():
    r, positions = skilled_agents(5_000, [0.55])
    both = np.column_stack([positions[:, 0], 0.5 * positions[:, 0]])
    best, _ = static_mix(both, r, 0.0, np.zeros(2), PPY, simplex_grid(2, 0.1))
    assert best == pytest.approx(sharpe(net_returns(both, r, 0.0, 0.0), PPY).max(), rel=1e-9)


def test_sharpe_is_the_backtests():
    from ensemble_trader.backtest.metrics import performance

    rng = np.random.default_rng(4)
    net = rng.normal(3e-4, 0.01, (300, 2))
    ours = sharpe(net, PPY)
    for k in range(2):
        assert ours[k] == pytest.approx(performance(net[:, k], np.ones(300), PPY).sharpe, rel=1e-12)
    assert sharpe(np.zeros((10, 1)), PPY)[0] == 0.0


def test_costs_are_charged_on_the_mixed_position_not_on_each_agent():
    # two agents trading against each other every bar: their half-and-half mix never trades
    m = 500
    rng = np.random.default_rng(2)
    r = rng.normal(0.0005, 0.01, m)
    flip = np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
    positions = np.column_stack([1.0 + flip, 1.0 - flip])
    rate = CostModel().rate
    best, weights = static_mix(positions, r, rate, np.array([1.0, 1.0]), PPY, simplex_grid(2, 0.5))
    assert weights.tolist() == [0.5, 0.5]
    held = positions @ weights
    expected = strategy_returns(held, r, CostModel(), 1.0)
    assert np.allclose(expected, held * r)  # no trades at all
    assert best == pytest.approx(sharpe(expected[:, None], PPY)[0])


def test_the_grid_is_scored_in_chunks_with_the_same_answer(monkeypatch):
    import training.meta.bounds as bounds

    r, positions = skilled_agents(1_000, [0.54, 0.53, 0.52])
    labels = np.where(np.arange(1_000) < 500, "BULL", "BEAR")
    grid = simplex_grid(3, 0.05)
    whole = regime_mix(positions, r, labels, 3e-4, np.zeros(3), PPY, grid)
    monkeypatch.setattr(bounds, "CHUNK", 7)
    chunked = regime_mix(positions, r, labels, 3e-4, np.zeros(3), PPY, grid)
    assert chunked[0] == whole[0]
    assert {g: c["weights"].tolist() for g, c in chunked[1].items()} == {
        g: c["weights"].tolist() for g, c in whole[1].items()
    }
    chunked_static = static_mix(positions, r, 3e-4, np.zeros(3), PPY, grid)  # still CHUNK = 7
    monkeypatch.setattr(bounds, "CHUNK", 10_000)
    whole_static = static_mix(positions, r, 3e-4, np.zeros(3), PPY, grid)
    assert chunked_static[0] == whole_static[0]
    assert chunked_static[1].tolist() == whole_static[1].tolist()


def test_the_per_regime_reference_holds_each_regimes_specialist():
    # agent 0 is right in regime X and wrong in Y, agent 1 the other way round
    m = 4_000
    r, right = skilled_agents(m, [0.6, 0.6])
    labels = np.where(np.arange(m) % 200 < 100, "BULL", "BEAR")
    wrong = -right
    positions = np.column_stack([
        np.where(labels == "BULL", right[:, 0], wrong[:, 0]),
        np.where(labels == "BEAR", right[:, 1], wrong[:, 1]),
    ])
    grid = simplex_grid(2, 0.1)
    static, _ = static_mix(positions, r, 0.0, np.zeros(2), PPY, grid)
    score, choice, path = regime_mix(positions, r, labels, 0.0, np.zeros(2), PPY, grid)
    assert choice["BULL"]["weights"].tolist() == [1.0, 0.0]
    assert choice["BEAR"]["weights"].tolist() == [0.0, 1.0]
    assert max(c["exposure"] for c in choice.values()) == 1.0
    assert all(0.0 <= c["exposure"] <= 1.0 for c in choice.values())
    # exposure ∝ max(mean, 0) / variance of the chosen mix in the regime
    kelly = {}
    for g in ("BULL", "BEAR"):
        x = net_returns(positions @ choice[g]["weights"][:, None], r, 0.0, 0.0)[labels == g, 0]
        kelly[g] = max(x.mean(), 0.0) / x.var(ddof=1)
    assert choice["BULL"]["exposure"] / choice["BEAR"]["exposure"] == pytest.approx(kelly["BULL"] / kelly["BEAR"])
    assert score > static + 2.0
    assert score == pytest.approx(sharpe(net_returns(path[:, None], r, 0.0, 0.0), PPY)[0])


def test_a_rare_regime_keeps_the_static_mix():
    r, positions = skilled_agents(1_000, [0.56, 0.52])
    labels = np.array(["BULL"] * 1_000, dtype="<U8")
    labels[: MIN_REGIME_PERIODS - 1] = "VOLATILE"
    grid = simplex_grid(2, 0.1)
    _, weights = static_mix(positions, r, 0.0, np.zeros(2), PPY, grid)
    _, choice, _ = regime_mix(positions, r, labels, 0.0, np.zeros(2), PPY, grid)
    assert choice["VOLATILE"]["weights"].tolist() == weights.tolist()
    assert choice["VOLATILE"]["periods"] == MIN_REGIME_PERIODS - 1


def test_table_names_every_set_and_counts_the_goals():
    entry = {
        "best_agent": "balanced", "best_sharpe": 1.0, "sharpe_goal": 1.2,
        "static": {"sharpe": 1.02, "weights": {"balanced": 0.8, "contrarian": 0.2, "aggressive": 0.0}},
        "per_regime": {"sharpe": 1.5}, "ensemble_sharpe": 0.9,
    }
    text = format_table({"set A": entry, "set B": entry | {"per_regime": {"sharpe": 1.1}}})
    assert "set A" in text and "set B" in text and "bala 0.80 cont 0.20" in text
    assert "aggr" not in text
    assert "+0.02 … +0.02" in text and "goal on 0 of 2, the per-regime reference on 1" in text


def test_cli_refuses_a_bad_step_before_running(capsys):
    from training.meta.bounds import main

    with pytest.raises(SystemExit) as exc:
        main(["--step", "0.3"])
    assert exc.value.code == 2
    assert "step must divide 1" in capsys.readouterr().err


def test_plot_writes_a_png(tmp_path):
    from training.meta.bounds import plot

    entry = {
        "best_agent": "balanced", "best_sharpe": 1.0, "sharpe_goal": 1.2, "ensemble_sharpe": 0.9,
        "static": {"sharpe": 1.02, "weights": {"balanced": 1.0}}, "per_regime": {"sharpe": 1.5},
    }
    path = plot({"set A": entry, "set B": entry}, "title", tmp_path / "img" / "bounds.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_true_regimes_replace_the_detected_ones_and_nothing_else():
    from ensemble_trader.backtest.engine import load_series
    from ensemble_trader.backtest.ensemble import run_pipeline
    from ensemble_trader.domain.agents import AgentPool
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.domain.regime_model import RegimeModel
    from ensemble_trader.runtime.settings import Settings

    from training.meta.bounds import with_true_regimes

    series, truth = load_series("synth:realistic:5:200")
    regime = RegimeStep(RegimeModel.load(Settings().models_dir / "regime"))
    pipeline = run_pipeline(series, AgentPool.load(None), regime)
    perfect = with_true_regimes(pipeline, truth)
    assert perfect.regimes.tolist() == list(truth)
    assert set(perfect.confidence.tolist()) == {1.0}
    assert np.all(perfect.probabilities.sum(axis=1) == 1.0) and np.all(perfect.probabilities.max(axis=1) == 1.0)
    runs = [m.regime.bars_in_regime for m in perfect.market_states]
    changes = np.flatnonzero(np.asarray(truth[1:]) != np.asarray(truth[:-1])) + 1
    assert all(runs[i] == 0 for i in changes) and runs[1] == (runs[0] + 1 if truth[1] == truth[0] else 0)
    np.testing.assert_array_equal(perfect.agent_targets, pipeline.agent_targets)
    assert [m.features for m in perfect.market_states] == [m.features for m in pipeline.market_states]
    with pytest.raises(ValueError, match="true regimes for"):
        with_true_regimes(pipeline, truth[:-1])


def test_a_grid_too_fine_for_memory_is_refused_by_its_size():
    from training.meta.bounds import MAX_GRID_ROWS, grid_size, main

    assert grid_size(4, 0.01) == math.comb(103, 3) <= MAX_GRID_ROWS
    with pytest.raises(ValueError, match="1,373,701 mixes of 4 agents"):
        simplex_grid(4, 0.005)
    assert grid_size(2, 0.001) == 1001  # two agents at that step are few
    with pytest.raises(SystemExit) as exc:  # the CLI counts the agent set's four agents, before running
        main(["--step", "0.001"])
    assert exc.value.code == 2
