"""Combining an agent's seeds: one seed as it is, the best on validation, or their bagged mean."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.agents.train import TrainConfig, TrainedAgent, combine_seeds


def trained(seed: int, score: float) -> TrainedAgent:
    return TrainedAgent(name="balanced", seed=seed, leverage=1.0, policy=None, reward_params={},
                        validation={"score": score, "selected_at": 0}, history=[], timesteps=10, seconds=1.0)


def test_one_seed_is_returned_as_it_is():
    only = trained(9, 0.5)
    assert combine_seeds([only], [], TrainConfig()) is only
    assert "seed_scores" not in only.validation


def test_best_keeps_the_seed_with_the_best_validation_score_first_on_a_tie():
    seeds = [trained(9, 0.2), trained(109, 0.7), trained(209, 0.7)]
    best = combine_seeds(seeds, [], TrainConfig(), mode="best")
    assert best is seeds[1]
    assert best.validation["seed_scores"] == {"9": 0.2, "109": 0.7, "209": 0.7}


def test_bagging_is_the_default_and_the_mode_is_checked():
    assert TrainConfig().combine_seeds == "mean"
    with pytest.raises(ValidationError):
        TrainConfig(combine_seeds="median")


def test_seeds_and_selection_can_differ_per_agent():
    config = TrainConfig(
        n_seeds=3,
        agent_overrides={"aggressive": {"n_seeds": 1, "combine_seeds": "best"}, "balanced": {"selection": "per_series"}},
    )
    assert config.for_agent("aggressive").n_seeds == 1
    assert config.for_agent("aggressive").combine_seeds == "best"
    assert config.for_agent("balanced").n_seeds == 3
    assert config.for_agent("balanced").selection == "per_series"
    assert config.for_agent("aggressive").selection == "pooled"
