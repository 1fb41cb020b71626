"""Reward formulas on hand-computed cases."""

from __future__ import annotations

import math

import pytest
from ensemble_trader.domain.errors import EnsembleTraderError

from training.agents.rewards import (
    AggressiveReward,
    BalancedReward,
    ConservativeReward,
    ContrarianReward,
    StepOutcome,
    make_reward,
)


def outcome(**kw) -> StepOutcome:
    base = dict(
        position=1.0,
        previous_position=1.0,
        asset_return=0.0,
        cost=0.0,
        net_return=0.0,
        wealth=1.0,
        peak_wealth=1.0,
        previous_drawdown=0.0,
        volatility=0.01,
        excursion=0.0,
    )
    base.update(kw)
    return StepOutcome(**base)


def test_conservative_penalises_drawdown_increase_and_exposure():
    rew = ConservativeReward(drawdown_penalty=1.0, vol_penalty=2.0, scale=100.0)
    # wealth falls from the peak 1.0 to 0.98: drawdown goes 0 -> 0.02
    o = outcome(position=0.5, net_return=-0.02, wealth=0.98, peak_wealth=1.0, volatility=0.02)
    expected = 100 * (-0.02 - 1.0 * 0.02 - 2.0 * (0.5 * 0.02) ** 2)
    assert rew(o) == pytest.approx(expected)
    # recovering (drawdown shrinks) is not penalised; only the exposure term remains
    o = outcome(position=1.0, net_return=0.01, wealth=0.99, peak_wealth=1.0, previous_drawdown=0.02)
    assert rew(o) == pytest.approx(100 * (0.01 - 2.0 * 0.01**2))


def test_conservative_prefers_flat_in_high_volatility():
    rew = ConservativeReward()
    flat = rew(outcome(position=0.0, volatility=0.05))
    long = rew(outcome(position=1.0, net_return=0.001, wealth=1.001, peak_wealth=1.001, volatility=0.05))
    assert long < flat == 0.0


def test_aggressive_is_log_growth():
    rew = AggressiveReward(scale=100.0, clip=1e9)
    assert rew(outcome(net_return=0.05)) == pytest.approx(100 * math.log(1.05))
    # the episode's sum is the log of final wealth
    total = sum(rew(outcome(net_return=r)) for r in (0.1, -0.2, 0.05))
    assert total == pytest.approx(100 * math.log(1.1 * 0.8 * 1.05))
    assert rew(outcome(net_return=-1.5)) == pytest.approx(100 * math.log(1e-6))  # ruin floor


def test_aggressive_clip():
    assert AggressiveReward(clip=10.0)(outcome(net_return=-0.5)) == -10.0


def test_balanced_differential_sharpe_hand_computed():
    rew = BalancedReward(eta=0.1, initial_second_moment=1e-4, variance_floor=1e-8, clip=1e9)
    # step 1: A=0, B=1e-4, R=0.01 -> dA=0.01, dB=0 ; D = B*dA / B^1.5 = 0.01 / 0.01 = 1
    assert rew(outcome(net_return=0.01)) == pytest.approx(1.0)
    assert rew.mean_ == pytest.approx(0.001)
    assert rew.second_moment_ == pytest.approx(1e-4)
    # step 2: A=0.001, B=1e-4, R=-0.02: dA=-0.021, dB=4e-4-1e-4=3e-4
    a, b = 0.001, 1e-4
    expected = (b * -0.021 - 0.5 * a * 3e-4) / (b - a * a) ** 1.5
    assert rew(outcome(net_return=-0.02)) == pytest.approx(expected)
    assert rew.mean_ == pytest.approx(0.001 + 0.1 * -0.021)
    rew.reset()
    assert (rew.mean_, rew.second_moment_) == (0.0, 1e-4)


def test_balanced_variance_floor_keeps_it_finite():
    rew = BalancedReward(eta=0.5, initial_second_moment=0.0, variance_floor=1e-6, clip=1e9)
    value = rew(outcome(net_return=0.001))
    assert value == pytest.approx(0.0)  # B=0 makes the numerator 0; the floor avoids 0/0
    assert math.isfinite(rew(outcome(net_return=0.001)))


def test_contrarian_weights_leaning_against_the_excursion():
    rew = ContrarianReward(contrarian_bonus=0.5, trend_penalty=0.2, scale=100.0)
    # short while the price is 2 sd above its mean: contrarian, pnl counts 1.5x
    assert rew(outcome(position=-1.0, excursion=2.0, net_return=0.01)) == pytest.approx(100 * 0.015)
    assert rew(outcome(position=-1.0, excursion=2.0, net_return=-0.01)) == pytest.approx(-100 * 0.015)
    # long while 2 sd above: trend following, penalised by 0.2 * (1*2) * sigma
    o = outcome(position=1.0, excursion=2.0, net_return=0.01, volatility=0.01)
    assert rew(o) == pytest.approx(100 * (0.01 - 0.2 * 2.0 * 0.01))


def test_make_reward_errors():
    assert make_reward("balanced", eta=0.05).eta == 0.05
    with pytest.raises(EnsembleTraderError, match="no reward for agent"):
        make_reward("timid")
    with pytest.raises(EnsembleTraderError, match="bad parameters"):
        make_reward("aggressive", eta=0.1)
    with pytest.raises(EnsembleTraderError, match="eta"):
        BalancedReward(eta=1.5)


def test_aggressive_defaults_sum_to_log_wealth_only_while_no_step_is_clipped():
    """The served defaults (k = 100, clip 10): an episode of ordinary bars sums to k·log W_T; a
    bar moving more than about 5 % at the full 2x leverage is clipped (a -6 % bar, -12 % net,
    would be 100·log(0.88) = -12.8), so the sum then overstates the episode's log wealth."""
    rew = make_reward("aggressive")
    assert (rew.params()["scale"], rew.params()["clip"]) == (100.0, 10.0)
    bars = (0.01, -0.03, 0.04, -0.045, 0.05)  # asset returns, each under the clip at 2x
    total = sum(rew(outcome(position=2.0, asset_return=r, net_return=2 * r)) for r in bars)
    assert total == pytest.approx(100 * math.log(math.prod(1 + 2 * r for r in bars)))
    crash = rew(outcome(position=2.0, asset_return=-0.06, net_return=-0.12))
    assert crash == -10.0 and 100 * math.log(0.88) < -12.7
    # where it binds: a net return below -9.5 % (e^-0.1 - 1) or above +10.5 % (e^0.1 - 1)
    assert rew(outcome(net_return=-0.095)) > -10.0 and rew(outcome(net_return=-0.096)) == -10.0
    assert rew(outcome(net_return=0.105)) < 10.0 and rew(outcome(net_return=0.106)) == 10.0
    episode = (*bars, -0.06)
    clipped = sum(rew(outcome(position=2.0, asset_return=r, net_return=2 * r)) for r in episode)
    assert clipped > 100 * math.log(math.prod(1 + 2 * r for r in episode)) + 2.7
