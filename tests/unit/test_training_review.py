"""Defects found by a review of the agents' training code (environment, rewards, training job):
each test failed on the code before its fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ensemble_trader.backtest.engine import PreparedSeries, prepare
from ensemble_trader.domain.errors import DataError, EnsembleTraderError
from ensemble_trader.domain.synthetic import generate

from training.agents.env import TradingEnv
from training.agents.rewards import (
    REWARDS,
    AggressiveReward,
    BalancedReward,
    ConservativeReward,
    ContrarianReward,
    StepOutcome,
    make_reward,
)


@pytest.fixture(scope="module")
def series() -> PreparedSeries:
    return prepare(generate("realistic", 300, seed=3).series)


def outcome(**kw) -> StepOutcome:
    base = dict(position=1.0, previous_position=0.0, asset_return=0.0, cost=0.0, net_return=0.0, wealth=1.0,
                peak_wealth=1.0, previous_drawdown=0.0, volatility=0.01, excursion=0.0)
    base.update(kw)
    return StepOutcome(**base)


# -- 1. a non-finite action or reward ------------------------------------------------------------


@pytest.mark.parametrize("reward", sorted(REWARDS))
@pytest.mark.parametrize("action", [math.nan, math.inf, -math.inf])
def test_a_non_finite_action_is_a_typed_error_and_changes_nothing(series, reward, action):
    """NaN once earned the maximum reward (10) and left position and wealth NaN for good, so
    ruin never ended the episode. PPO and SAC never emit a non-finite action from a finite
    network; one that does has diverged."""
    env = TradingEnv([series], make_reward(reward), leverage=1.0)
    env.reset(options={"series": 0, "start": 0, "length": 5})
    with pytest.raises(DataError, match=r"action .*(nan|inf)") as info:
        env.step(np.array([action], dtype=np.float32))
    assert type(info.value).__name__ == "InvalidActionError"
    assert env.position == 0.0 and env.wealth == 1.0  # the episode is untouched
    obs, r, terminated, truncated, _ = env.step(np.array([0.5], dtype=np.float32))
    assert math.isfinite(r) and math.isfinite(env.wealth) and env.position == 0.5
    assert np.all(np.isfinite(obs))


def test_an_action_of_the_wrong_size_is_a_typed_error(series):
    env = TradingEnv([series], make_reward("aggressive"), leverage=2.0)
    env.reset(options={"series": 0, "start": 0})
    with pytest.raises(DataError, match="one number"):
        env.step(np.array([], dtype=np.float32))
    with pytest.raises(DataError, match="one number"):
        env.step(np.array([0.1, 0.2], dtype=np.float32))


@pytest.mark.parametrize(
    ("cls", "field", "position", "excursion"),
    [(ConservativeReward, "net_return", 1.0, 0.0), (ConservativeReward, "volatility", 1.0, 0.0),
     (AggressiveReward, "net_return", 1.0, 0.0), (BalancedReward, "net_return", 1.0, 0.0),
     (ContrarianReward, "net_return", -1.0, 1.0), (ContrarianReward, "volatility", 1.0, 1.0)],
)
def test_a_nan_reward_is_an_error_not_the_clip(cls, field, position, excursion):
    """_clip turned NaN into +clip (min(10, nan) is 10): a broken step was the best reward."""
    reward = cls()
    assert math.isfinite(reward(outcome(position=position, excursion=excursion, net_return=0.001)))
    with pytest.raises(EnsembleTraderError, match=rf"{reward.name} reward.*nan") as info:
        reward(outcome(position=position, excursion=excursion, **{field: math.nan}))
    assert isinstance(info.value, ValueError) and type(info.value).__name__ == "RewardError"


@pytest.mark.parametrize("column", ["close", "features"])
def test_non_finite_prices_or_features_are_refused_when_the_environment_is_built(series, column):
    """They would make NaN returns and rewards (a NaN excursion even a finite Contrarian reward)."""
    import dataclasses

    values = np.array(getattr(series, column), dtype=np.float64, copy=True)
    values[5] = math.nan
    with pytest.raises(DataError, match=rf"{series.symbol}: .*{column}.* row 5"):
        TradingEnv([dataclasses.replace(series, **{column: values})], make_reward("contrarian"))


# -- 6. reward parameters out of range ------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "params", "parameter"),
    [
        ("aggressive", {"clip": -10}, "clip"),  # every reward was the constant 10
        ("conservative", {"clip": 0}, "clip"),
        ("balanced", {"variance_floor": 0, "initial_second_moment": 0}, "variance_floor"),  # ZeroDivisionError
        ("balanced", {"initial_second_moment": -1e-4}, "initial_second_moment"),
        ("balanced", {"scale": 0}, "scale"),
        ("contrarian", {"scale": -100}, "scale"),
        ("conservative", {"drawdown_penalty": -0.1}, "drawdown_penalty"),
        ("conservative", {"vol_penalty": -1}, "vol_penalty"),
        ("contrarian", {"trend_penalty": -0.2}, "trend_penalty"),
        ("contrarian", {"contrarian_bonus": -0.5}, "contrarian_bonus"),
        ("conservative", {"drawdown_penalty": math.nan}, "drawdown_penalty"),
        ("aggressive", {"scale": math.inf}, "scale"),
        ("balanced", {"eta": math.nan}, "eta"),
        ("aggressive", {"clip": "10"}, "clip"),
        ("aggressive", {"clip": True}, "clip"),
    ],
)
def test_reward_parameters_out_of_range_are_refused_naming_agent_and_parameter(agent, params, parameter):
    with pytest.raises(EnsembleTraderError, match=rf"{agent} reward.*{parameter}") as info:
        make_reward(agent, **params)
    assert isinstance(info.value, ValueError) and type(info.value).__name__ == "RewardError"
    with pytest.raises(EnsembleTraderError, match=rf"{parameter}"):
        REWARDS[agent](**params)


def test_bad_reward_parameters_fail_the_configuration_before_any_agent_trains():
    from pydantic import ValidationError

    from training.agents.train import TrainConfig

    rewards = '{"aggressive": {"clip": -10}}'
    with pytest.raises(ValidationError, match=r"rewards\[aggressive\]: .*clip must be finite and > 0"):
        TrainConfig.model_validate({"rewards": rewards})
    with pytest.raises(ValidationError, match=r"rewards\[balanced\]: .*variance_floor must be finite and > 0"):
        TrainConfig.model_validate({"rewards": {"balanced": {"variance_floor": 0, "initial_second_moment": 0}}})


def test_the_default_and_edge_reward_parameters_are_still_accepted():
    for agent in REWARDS:
        assert make_reward(agent).params() == REWARDS[agent]().params()
    assert make_reward("balanced", initial_second_moment=0.0, variance_floor=1e-6).initial_second_moment == 0.0
    assert make_reward("conservative", drawdown_penalty=0, vol_penalty=0).vol_penalty == 0
    assert make_reward("contrarian", contrarian_bonus=0, trend_penalty=0).trend_penalty == 0
    assert make_reward("aggressive", clip=1e9, scale=1).clip == 1e9


# -- 4, 5, 7: the job's settings are checked before anything trains ------------------------------


def _problems(**settings) -> str:
    from pydantic import ValidationError

    from training.agents.train import TrainConfig

    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(settings)
    return str(info.value)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"cost_bps": "inf"}, "cost_bps"),
        ({"slippage_bps": "nan"}, "slippage_bps"),
        ({"learning_rate": "inf"}, "learning_rate"),
        ({"log_std_init": "nan"}, "log_std_init"),
        ({"clip_range": "inf"}, "clip_range"),
        ({"rewards": '{"conservative": {"drawdown_penalty": NaN}}'}, "conservative"),
        ({"rewards": {"aggressive": {"scale": float("inf")}}}, "aggressive"),
    ],
)
def test_non_finite_hyperparameters_are_refused(settings, field):
    assert field in _problems(**settings)


@pytest.mark.parametrize(
    "override",
    [{"cost_bps": "inf"}, {"slippage_bps": float("nan")}, {"learning_rate": "inf"}, {"log_std_init": "-inf"}],
)
def test_a_non_finite_override_of_a_later_agent_is_refused_before_the_first_trains(override):
    """agent_overrides={"contrarian": {"cost_bps": "inf"}} failed only after the Conservative had trained."""
    message = _problems(agents="conservative,contrarian", agent_overrides={"contrarian": override})
    assert f"agent_overrides[contrarian]: {next(iter(override))}" in message


def test_every_agents_cost_model_is_built_by_the_up_front_check(monkeypatch):
    """The check builds each agent's cost model, so whatever CostModel refuses is refused now."""
    import training.agents.train as train

    built: list[tuple[float, float]] = []
    original = train.CostModel

    def recording(cost_bps=1.0, slippage_bps=2.0):
        built.append((cost_bps, slippage_bps))
        return original(cost_bps, slippage_bps)

    monkeypatch.setattr(train, "CostModel", recording)
    train.TrainConfig(agent_overrides={"contrarian": {"slippage_bps": 16.0}, "balanced": {"cost_bps": 3.0}})
    assert {(1.0, 2.0), (1.0, 16.0), (3.0, 2.0)} <= set(built)


def test_a_bad_rewards_entry_is_blamed_on_rewards_only():
    """It was reported as agent_overrides[conservative]: ... rewards[contrarian]: ..."""
    message = _problems(rewards='{"contrarian": {"eta": 0.1}}')
    assert "rewards[contrarian]: bad parameters for the contrarian reward" in message
    assert "agent_overrides" not in message


@pytest.mark.parametrize("seed", [-1, "-1"])
def test_a_negative_seed_is_refused(seed):
    assert "seed" in _problems(seed=seed)


def test_a_seed_is_refused_when_a_derived_seed_would_reach_2_to_the_32():
    """Seed k of an agent is seed + index of the agent + 100 k; numpy (np.random.seed, which
    PPO calls) takes seeds below 2**32. --seed 4294967295 crashed in the second agent."""
    from training.agents.train import TrainConfig

    # the Balanced (index 2) bags five seeds: its last is seed + 402, the job's largest
    limit = 2**32 - 1 - 402
    assert TrainConfig(seed=limit).seed == limit
    message = _problems(seed=limit + 1)
    assert "2**32" in message and f"at most {limit}" in message and "balanced" in message
    assert "4294967295" in _problems(seed=2**32 - 1)
    # the limit follows the agents trained and their n_seeds
    one = {"agents": "conservative", "n_seeds": 1}
    assert TrainConfig(seed=2**32 - 1, **one).seed == 2**32 - 1
    assert f"at most {2**32 - 1 - 100}" in _problems(seed=2**32 - 1, agents="conservative", n_seeds=2)
    assert "at most" in _problems(seed=0, agents="balanced", n_seeds=1, agent_overrides={"balanced": {"n_seeds": 10**8}})


def test_the_container_job_reports_a_bad_seed_instead_of_crashing(tmp_path, monkeypatch, capsys):
    import json

    from training.agents.train import sagemaker_main

    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_CHANNEL_VALIDATION", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    for seed in ("-1", "4294967295"):
        monkeypatch.setenv("SM_HPS", json.dumps({"seed": seed, "quick": "true", "bars": "synth:realistic:11:600"}))
        assert sagemaker_main([]) == 1
        assert "seed" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("agents", ["", " , ", []])
def test_no_agent_to_train_is_refused(agents):
    """agents="" was accepted and the job failed after loading its data, writing the manifest."""
    assert "agents" in _problems(agents=agents)


# -- 2, 3 and stale files: what run_job refuses before the first agent trains ------------------------


class Trained(Exception):
    """Raised by the stand-in for train_agent: the job got as far as training an agent."""


@pytest.fixture
def no_training(monkeypatch):
    import training.agents.train as train

    calls: list[str] = []

    def stand_in(agent, *args, **kwargs):
        calls.append(agent)
        raise Trained(agent)

    monkeypatch.setattr(train, "train_agent", stand_in)
    return calls


def _real_series(tmp_path):
    """Two real (dated) series: ``early.csv``, and ``after.csv`` beginning after the calendar
    test cut, so it has test bars only."""
    import dataclasses

    from ensemble_trader.marketdata import write_bars_csv

    early, after = tmp_path / "early.csv", tmp_path / "after.csv"
    first = generate("realistic", 1000, seed=1, symbol="EARLY").series
    write_bars_csv(early, first)
    later = generate("realistic", 600, seed=2, symbol="AFTER").series
    write_bars_csv(after, dataclasses.replace(later, timestamp=later.timestamp + (first.timestamp[-50] - later.timestamp[0])))
    return str(early), str(after)


def test_an_agent_whose_data_hold_no_training_window_fails_the_job_before_any_agent_trains(tmp_path, no_training):
    """It crashed in observation_stats (np.concatenate of nothing) after the agents before it had trained."""
    from training.agents.train import TrainConfig, run_job

    early, after = _real_series(tmp_path)
    config = TrainConfig(bars=[early, after], agents=["balanced", "contrarian"], agent_data={"contrarian": ["after"]},
                         quick=True)
    with pytest.raises(DataError, match=r"contrarian.*after\.csv.*no training window"):
        run_job(config, tmp_path / "out", progress=False)
    assert no_training == []
    assert not (tmp_path / "out").exists()


def test_an_agent_without_a_validation_window_fails_the_job_before_any_agent_trains(tmp_path, no_training):
    """With validation_fraction=0 the checkpoints were chosen on the training data and reported
    as the validation score."""
    from training.agents.train import TrainConfig, run_job

    config = TrainConfig(bars=["synth:realistic:11:600"], agents=["conservative"], validation_fraction=0, quick=True)
    with pytest.raises(DataError, match=r"conservative.*synth:realistic:11:600.*no validation window.*validation_fraction"):
        run_job(config, tmp_path / "out", progress=False)
    assert no_training == []
    # the walk-forward default still gets that far
    with pytest.raises(Trained):
        run_job(TrainConfig(bars=["synth:realistic:11:600"], agents=["conservative"], quick=True), tmp_path / "ok",
                progress=False)


def test_train_agent_refuses_to_select_checkpoints_without_validation_data(series):
    from training.agents.train import TrainConfig, train_agent

    with pytest.raises(DataError, match="no validation data"):
        train_agent("conservative", [series], [], TrainConfig(quick=True), seed=7, progress=False)


def test_a_folder_holding_model_files_the_new_set_would_not_replace_is_refused(tmp_path, no_training):
    """Training one agent into a folder of a four-agent set left the other three .onnx files
    beside a manifest that no longer named them."""
    from training.agents.train import TrainConfig, run_job

    config = TrainConfig(bars=["synth:realistic:11:600"], agents=["conservative"], quick=True)
    out = tmp_path / "set"
    out.mkdir()
    for name in ("conservative.onnx", "aggressive.onnx", "pool.onnx", "manifest.json", "notes.txt"):
        (out / name).write_text("old")
    with pytest.raises(DataError, match=r"aggressive\.onnx, pool\.onnx"):
        run_job(config, out, progress=False)
    assert no_training == []
    assert sorted(p.name for p in out.iterdir()) == [
        "aggressive.onnx", "conservative.onnx", "manifest.json", "notes.txt", "pool.onnx"]
    # the files this job writes, and files that are no model, are no obstacle
    (out / "aggressive.onnx").unlink()
    (out / "pool.onnx").unlink()
    with pytest.raises(Trained):
        run_job(config, out, progress=False)
