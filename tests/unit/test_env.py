"""Trading environment invariants: costs on position changes, no look-ahead, gymnasium API."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ensemble_trader.backtest.engine import (
    CostModel,
    PreparedSeries,
    asset_returns,
    prepare,
    strategy_returns,
)
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import FEATURE_NAMES
from ensemble_trader.domain.synthetic import generate
from gymnasium.utils.env_checker import check_env

from training.agents.env import TradingEnv
from training.agents.rewards import AggressiveReward, StepOutcome


class RecordingReward:
    """Reward = the net return; keeps every outcome for inspection."""

    name = "recording"

    def __init__(self):
        self.outcomes: list[StepOutcome] = []

    def reset(self) -> None:
        self.outcomes = []

    def __call__(self, o: StepOutcome) -> float:
        self.outcomes.append(o)
        return o.net_return

    def params(self):
        return {}


@pytest.fixture(scope="module")
def series() -> PreparedSeries:
    return prepare(generate("realistic", 400, seed=3).series)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gymnasium_api(series):
    env = TradingEnv([series], AggressiveReward(), leverage=2.0, episode_length=50, random_state=0)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (len(FEATURE_NAMES) + 1,)
    assert env.action_space.high[0] == 2.0


def test_costs_are_charged_on_position_changes_only(series):
    flat = dataclasses.replace(series, close=np.full_like(series.close, 100.0))
    rew = RecordingReward()
    env = TradingEnv([flat], rew, costs=CostModel(cost_bps=1.0, slippage_bps=2.0), episode_length=10)
    env.reset(options={"series": 0, "start": 0, "length": 4})
    rewards = [env.step(np.array([a]))[1] for a in (0.5, 0.5, -1.0, -1.0)]
    assert rewards == pytest.approx([-3e-4 * 0.5, 0.0, -3e-4 * 1.5, 0.0])
    assert [o.cost for o in rew.outcomes] == pytest.approx([1.5e-4, 0.0, 4.5e-4, 0.0])


def test_no_trade_band_executes_actions_as_the_served_pool_does(series):
    """With a band the position moves only when the action leaves it, and then to the band's
    near edge; costs are charged on the executed change only."""
    flat = dataclasses.replace(series, close=np.full_like(series.close, 100.0))
    rew = RecordingReward()
    env = TradingEnv([flat], rew, costs=CostModel(cost_bps=1.0, slippage_bps=2.0), no_trade_band=0.2)
    env.reset(options={"series": 0, "start": 0, "length": 5})
    positions = []
    for a in (0.5, 0.6, 0.35, -1.0, 5.0):
        obs, *_ = env.step(np.array([a]))
        positions.append(env.position)
        assert obs[-1] == pytest.approx(env.position)
    # 0 → 0.3 (edge of 0.5 ± 0.2); 0.6: 0.3 is outside [0.4, 0.8] → 0.4; 0.35: 0.4 inside → hold;
    # -1 → -0.8; 5 is clipped to L = 1 first → 0.8
    assert positions == pytest.approx([0.3, 0.4, 0.4, -0.8, 0.8])
    assert [o.cost for o in rew.outcomes] == pytest.approx([3e-4 * d for d in (0.3, 0.1, 0.0, 1.2, 1.6)])
    with pytest.raises(DataError, match="no_trade_band"):
        TradingEnv([series], RecordingReward(), no_trade_band=-0.1)


def test_actions_are_clipped_to_the_leverage_limit(series):
    env = TradingEnv([series], RecordingReward(), leverage=1.0)
    env.reset(options={"series": 0, "start": 0, "length": 2})
    obs, *_ = env.step(np.array([5.0]))
    assert env.position == 1.0 and obs[-1] == 1.0


def test_reward_uses_the_return_after_the_action(series):
    rew = RecordingReward()
    env = TradingEnv([series], rew, costs=CostModel(0.0, 0.0))
    obs0, _ = env.reset(options={"series": 0, "start": 10, "length": 3})
    np.testing.assert_array_equal(obs0[:-1], series.features[10].astype(np.float32))
    _, r, *_ = env.step(np.array([1.0]))
    assert r == pytest.approx(series.close[11] / series.close[10] - 1.0)


def test_no_look_ahead_future_prices_do_not_change_past_steps(series):
    """Rewards and observations up to step t are identical when prices after t+1 change."""

    def run(s: PreparedSeries, actions) -> tuple[list, list]:
        rew = RecordingReward()
        env = TradingEnv([s], rew)
        obs, _ = env.reset(options={"series": 0, "start": 0, "length": len(actions)})
        seen, got = [obs], []
        for a in actions:
            obs, r, *_ = env.step(np.array([a]))
            seen.append(obs)
            got.append(r)
        return seen, got

    actions = [0.3, -0.7, 1.0, 0.0, 0.5]
    base_obs, base_rew = run(series, actions)
    shocked_close = series.close.copy()
    shocked_close[3:] *= 1.5  # a jump between bars 2 and 3
    shocked = dataclasses.replace(series, close=shocked_close)
    obs, rew = run(shocked, actions)
    # the action at t=0 and t=1 earn returns 0->1 and 1->2: unaffected by the jump at 3
    assert rew[:2] == base_rew[:2]
    # the action at t=2 earns the jump 2->3
    assert rew[2] != base_rew[2]
    for a, b in zip(obs[:3], base_obs[:3], strict=True):
        np.testing.assert_array_equal(a, b)


def test_each_observation_holds_the_features_of_its_own_bar(series):
    """After every step the observation is the features of the bar the episode has reached (and
    the position just taken), never a later bar's."""
    env = TradingEnv([series], RecordingReward())
    start = 20
    obs, _ = env.reset(options={"series": 0, "start": start, "length": 12})
    np.testing.assert_array_equal(obs[:-1], series.features[start].astype(np.float32))
    for k, a in enumerate(np.linspace(-1, 1, 12), start=1):
        obs, _, terminated, truncated, _ = env.step(np.array([a]))
        np.testing.assert_array_equal(obs[:-1], series.features[start + k].astype(np.float32))
        assert obs[-1] == np.float32(env.position)
        if terminated or truncated:
            break


def test_observations_are_causal_when_the_features_are_rebuilt_from_shocked_bars():
    """Features recomputed from bars changed after bar t leave every observation up to t as it was."""
    data = generate("realistic", 400, seed=3).series
    scale = np.where(np.arange(len(data)) >= 300, 1.5, 1.0)  # every price from bar 300 on
    shocked = dataclasses.replace(data, open=data.open * scale, high=data.high * scale, low=data.low * scale,
                                  close=data.close * scale)
    a, b = prepare(data), prepare(shocked)
    cut = int(np.searchsorted(a.timestamp, data.timestamp[300]))
    observed = []
    for s in (a, b):
        env = TradingEnv([s], RecordingReward())
        obs, _ = env.reset(options={"series": 0, "start": cut - 10, "length": 15})
        seen = [obs]
        for _ in range(14):
            seen.append(env.step(np.array([0.5]))[0])
        observed.append(np.array(seen))
    np.testing.assert_array_equal(observed[0][:10], observed[1][:10])  # bars before the change
    assert not np.array_equal(observed[0][10:], observed[1][10:])  # from the changed bar on


def test_env_matches_the_backtester(series):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=30)
    rew = RecordingReward()
    costs = CostModel(1.0, 2.0)
    env = TradingEnv([series], rew, costs=costs)
    env.reset(options={"series": 0, "start": 0, "length": 30})
    got = [env.step(np.array([a]))[1] for a in actions]
    expected = strategy_returns(actions, asset_returns(series.close)[:30], costs)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert env.wealth == pytest.approx(np.prod(1 + expected))


def test_episode_truncates_at_the_window_and_the_series_end(series):
    env = TradingEnv([series], RecordingReward(), episode_length=5, random_state=0)
    env.reset()
    flags = [env.step(np.array([0.0]))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]
    env.reset(options={"series": 0, "start": len(series.close) - 3})
    assert env.step(np.array([0.0]))[3] is False
    assert env.step(np.array([0.0]))[3] is True


def test_bad_configuration_is_a_typed_error(series):
    with pytest.raises(DataError):
        TradingEnv([], RecordingReward())
    with pytest.raises(DataError, match="leverage"):
        TradingEnv([series], RecordingReward(), leverage=0.0)
