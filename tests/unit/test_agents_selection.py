"""Validation scores: pooled over every validation step, or the mean of the per-series scores."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ensemble_trader.backtest.engine import CostModel, evaluate_agents, prepare  # noqa: E402
from ensemble_trader.domain.synthetic import generate  # noqa: E402

from training.agents.train import TrainConfig, validate  # noqa: E402


def test_per_series_score_is_the_mean_of_each_series_score():
    series = [prepare(generate("realistic", 400, seed=1).series), prepare(generate("hard", 300, seed=2).series)]

    def always_long(obs):
        return torch.ones((obs.shape[0], 1))

    costs = CostModel(1.0, 2.0)
    each = [
        evaluate_agents(s, {"long": np.ones(len(s.close))}, costs)["agents"]["long"]["overall"]["sharpe"]
        for s in series
    ]
    mean = validate(always_long, "balanced", series, TrainConfig(selection="per_series"))
    pooled = validate(always_long, "balanced", series, TrainConfig())
    assert mean["score"] == pytest.approx(np.mean(each), abs=1e-9)
    assert pooled["score"] == pytest.approx(pooled["sharpe"]) and pooled["score"] != pytest.approx(mean["score"])
    # the other agents: mean reward per step, pooled or the mean of each series' mean
    pooled = validate(always_long, "aggressive", series, TrainConfig())
    each = [validate(always_long, "aggressive", [s], TrainConfig())["score"] for s in series]
    mean = validate(always_long, "aggressive", series, TrainConfig(selection="per_series"))
    assert pooled["score"] == pooled["mean_reward"]
    assert mean["score"] == pytest.approx(np.mean(each), abs=1e-12) and mean["score"] != pytest.approx(pooled["score"])
