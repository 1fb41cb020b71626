"""A number hyperparameter of the agents' job given as JSON true or false is refused, naming it.

pydantic's lax mode took a boolean for a number: ``$SM_HPS`` ``{"seed": true}`` trained with
seed 1, ``agent_overrides`` ``{"aggressive": {"gamma": true}}`` with gamma 1.0 and ``rewards``
``{"balanced": {"scale": true}}`` with a scale of 1 — where the regime job refuses ``true`` for a
whole number and the environment and the cost model refuse it for theirs. The flags (``quick``,
``band_in_training``) still take booleans, and numbers as text still convert. Each test of a
refusal fails on the code before.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

import training.agents.train as train
from training import sagemaker
from training.agents.train import TrainConfig


@pytest.mark.parametrize("field", ["seed", "n_seeds", "total_timesteps", "eval_every", "train_fraction",
                                   "cost_bps", "learning_rate", "gamma", "ent_coef", "no_trade_band"])
@pytest.mark.parametrize("flag", [True, False])
def test_a_number_field_refuses_a_boolean(field, flag):
    with pytest.raises(ValidationError, match=rf"{field}={flag}: expected a number, got a boolean"):
        TrainConfig.model_validate({field: flag})


def test_an_agents_override_refuses_a_boolean_for_a_number():
    with pytest.raises(ValidationError, match=r"agent_overrides\[aggressive\]: gamma: gamma=True: expected a number"):
        TrainConfig.model_validate({"agent_overrides": {"aggressive": {"gamma": True}}})


@pytest.mark.parametrize("rewards", [{"balanced": {"scale": True}},
                                     json.dumps({"contrarian": {"trend_penalty": 0.1, "contrarian_bonus": False}})])
def test_a_reward_parameter_refuses_a_boolean(rewards):
    with pytest.raises(ValidationError, match=r"rewards\[(balanced|contrarian)\]\.(scale|contrarian_bonus)=(True|False): "
                                              r"expected a number, got a boolean"):
        TrainConfig.model_validate({"rewards": rewards})


def test_flags_take_booleans_and_numbers_as_text_still_convert():
    config = TrainConfig.model_validate({
        "quick": True, "band_in_training": False, "seed": "11", "gamma": "0.95", "total_timesteps": 2048,
        "rewards": json.dumps({"balanced": {"eta": "0.02", "scale": 2}}),
        "agent_overrides": {"aggressive": {"band_in_training": True, "gamma": "0.9"}},
    })
    assert (config.quick, config.band_in_training, config.seed, config.gamma) == (True, False, 11, 0.95)
    assert config.rewards == {"balanced": {"eta": 0.02, "scale": 2.0}}
    assert config.for_agent("aggressive").gamma == 0.9 and config.for_agent("aggressive").band_in_training


def test_the_container_job_fails_naming_the_boolean(tmp_path, monkeypatch):
    failure = tmp_path / "failure"
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_CHANNEL_VALIDATION", raising=False)
    monkeypatch.setattr(train, "SM_HYPERPARAMETERS", tmp_path / "absent.json")
    monkeypatch.setenv("SM_HPS", json.dumps({"bars": "synth:realistic:11:1200", "seed": True}))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setattr(train, "report_failure", lambda name, exc: sagemaker.report_failure(name, exc, failure))
    monkeypatch.setattr(train, "run_job", lambda *a, **k: pytest.fail("the job ran"))
    assert train.sagemaker_main([]) == 1
    assert failure.read_text(encoding="utf-8") == "bad hyperparameters: seed=True: expected a number, got a boolean"
