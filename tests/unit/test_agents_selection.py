"""Validation score of the Balanced: pooled Sharpe ratio, or the mean of the per-series ones."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ensemble_trader.backtest.engine import CostModel, evaluate_agents, prepare  # noqa: E402
from ensemble_trader.domain.synthetic import generate  # noqa: E402

from training.agents.train import TrainConfig, validate  # noqa: E402


def test_mean_sharpe_is_the_mean_of_each_series_sharpe_in_the_backtester():
    series = [prepare(generate("realistic", 400, seed=1).series), prepare(generate("hard", 300, seed=2).series)]

    def always_long(obs):
        return torch.ones((obs.shape[0], 1))

    costs = CostModel(1.0, 2.0)
    each = [
        evaluate_agents(s, {"long": np.ones(len(s.close))}, costs)["agents"]["long"]["overall"]["sharpe"]
        for s in series
    ]
    mean = validate(always_long, "balanced", series, TrainConfig(balanced_selection="mean_sharpe"))
    pooled = validate(always_long, "balanced", series, TrainConfig())
    assert mean["score"] == pytest.approx(np.mean(each), abs=1e-9)
    assert pooled["score"] == pytest.approx(pooled["sharpe"]) and pooled["score"] != pytest.approx(mean["score"])
    # other agents are scored by their mean reward either way
    other = validate(always_long, "aggressive", series, TrainConfig(balanced_selection="mean_sharpe"))
    assert other["score"] == other["mean_reward"]
