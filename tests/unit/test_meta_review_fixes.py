"""Meta-agent defects found by review (2026-11-29): each test fails on the code before its fix."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from ensemble_trader.domain.bandits import BanditError, make_bandit
from ensemble_trader.domain.errors import InvalidMessageError, StateError
from ensemble_trader.domain.meta_agent import (
    MAX_HALFLIFE,
    MAX_RAMP_BARS,
    MetaAgentConfig,
    MetaAgentState,
    MetaAgentStep,
)
from ensemble_trader.domain.models import Regime
from test_meta_agent import path, run

# ---- 1. half-lives and ramp_bars beyond float64's reach are refused when the config is built -----


@pytest.mark.parametrize(("option", "value"), [
    ("vol_halflife", 1e17), ("vol_target_halflife", 1e17), ("vol_target_long_halflife", 1e17),
    ("vol_target_halflife", MAX_HALFLIFE * 1.5), ("ramp_bars", MAX_RAMP_BARS + 1),
    pytest.param("ramp_bars", 10**400, id="ramp_bars-10**400"),
])
def test_half_lives_and_ramps_too_long_for_float64_are_refused_by_name(option: str, value: float) -> None:
    with pytest.raises(InvalidMessageError, match=rf"{option}=.*: Input should be less than or equal to"):
        MetaAgentConfig.create(**{option: value})


@pytest.mark.parametrize("option", ["vol_halflife", "vol_target_halflife", "vol_target_long_halflife"])
def test_the_longest_half_life_allowed_still_gives_finite_targets(option: str) -> None:
    """At the bound the decay is still below 1, so the bias correction never divides 0 by 0."""
    step = MetaAgentStep(MetaAgentConfig.create(**{option: MAX_HALFLIFE}))
    prices, regimes, targets = path(60)
    state, decisions = run(step, prices, regimes, targets)
    assert all(math.isfinite(d.intent.target_position) for d in decisions)
    assert state.vol_scale is None or math.isfinite(state.vol_scale)


def test_the_longest_ramp_allowed_runs_through_changes_of_leader() -> None:
    step = MetaAgentStep(MetaAgentConfig.create(ramp_bars=MAX_RAMP_BARS, policy="ucb", mode="select",
                                                context="global"))
    prices, regimes, targets = path(200, seed=2)
    _, decisions = run(step, prices, regimes, targets)
    assert sum(len(d.events) for d in decisions) > 0  # the leader changed, and the ramp was entered
    assert all(math.isfinite(d.intent.target_position) for d in decisions)



# ---- 2. the leader with few Thompson posterior draws --------------------------------------------


@pytest.mark.parametrize("draws", [1, 4, 9])
def test_in_select_mode_the_leader_is_the_agent_held_whatever_the_number_of_draws(draws: int) -> None:
    """Thompson's weights noise 3/sqrt(n) is >= 1 for n <= 9: it kept one leader for ever while
    the step held another agent on most bars, and no AgentSwitched was sent."""
    step = MetaAgentStep(MetaAgentConfig.create(policy="thompson", mode="select", min_regime_rounds=5,
                                                policy_params={"n_weight_samples": draws}))
    _, decisions = run(step, *path(200, seed=2))
    held = [max(d.intent.agent_weights, key=d.intent.agent_weights.get) for d in decisions]
    assert [d.intent.explanation_detail["chosen"] for d in decisions] == held
    changes = sum(a != b for a, b in zip(held, held[1:], strict=False))
    assert changes > 0 and sum(len(d.events) for d in decisions) == changes


@pytest.mark.parametrize("draws", [1, 9, 16, 64])
def test_in_blend_mode_the_leader_trails_the_largest_weight_by_at_most_one_over_n(draws: int) -> None:
    step = MetaAgentStep(MetaAgentConfig.create(policy="thompson", min_regime_rounds=5,
                                                policy_params={"n_weight_samples": draws}))
    _, decisions = run(step, *path(200, seed=2))
    for d in decisions:
        weights = d.intent.agent_weights
        chosen = weights[d.intent.explanation_detail["chosen"]]
        assert chosen > 0.0 and chosen >= max(weights.values()) - 1.0 / len(weights)


def test_thompson_leader_switches_when_the_weights_really_moved() -> None:
    """Companion of test_thompson_weights_noise_alone_does_not_switch_the_leader: the tolerance
    for sampling noise must not keep a leader once another agent has clearly overtaken it."""
    prices, _, _ = path(300, seed=5)  # rising for 150 bars, then falling
    twins = np.column_stack([np.ones(300), np.ones(300), -np.ones(300), -np.ones(300)])
    for draws in (9, 256):
        step = MetaAgentStep(MetaAgentConfig.create(policy="thompson", context="global",
                                                    policy_params={"n_weight_samples": draws}))
        _, decisions = run(step, prices, [Regime.BULL] * 300, twins)
        chosen = [d.intent.explanation_detail["chosen"] for d in decisions]
        assert chosen[140] in ("conservative", "aggressive")  # the long agents led the rise
        assert chosen[-1] in ("balanced", "contrarian")  # the short agents lead after the fall


# ---- 3. malformed stored states are StateErrors naming the field ---------------------------------


def _stored(**changes: object) -> dict:
    state, _ = run(MetaAgentStep(), *path(30))
    return json.loads(state.to_bytes()) | changes


@pytest.mark.parametrize(("changes", "named"), [
    ({"learners": []}, "learners must be a JSON object"),
    ({"regret": []}, "regret must be a JSON object"),
    ({"regret": {"agent_rewards": [1], "meta_reward": {}, "bars": {}}}, "regret.agent_rewards must be a JSON object"),
    ({"regret": {"agent_rewards": {"BULL": ["0"] * 4}, "meta_reward": {"BULL": 0.0}, "bars": {"BULL": 1}}},
     "regret.agent_rewards.BULL must be a list of numbers"),
    ({"regret": {"agent_rewards": {"BULL": [0.0] * 4}, "meta_reward": {"BULL": True}, "bars": {"BULL": 1}}},
     "regret.meta_reward.BULL must be a finite number"),
    ({"regret": {"agent_rewards": {"BULL": [0.0] * 4}, "meta_reward": {"BULL": 0.0}, "bars": {"BULL": 1.5}}},
     "regret.bars.BULL must be an integer"),
    ({"version": "5"}, "version must be an integer"),
    ({"version": 2.9}, "version must be an integer"),
    ({"version": True}, "version must be an integer"),
    ({"ramp_left": "5"}, "ramp_left must be an integer"),
    ({"ramp_left": 2.9}, "ramp_left must be an integer"),
    ({"last_price": True}, "last_price must be a finite number"),
    ({"position": "0.5"}, "position must be a finite number"),
    ({"variance": False}, "variance must be a finite number"),
    ({"weights": [True, 0, 0, 0]}, "weights must be a list of numbers"),
    ({"agent_costs": "0000"}, "agent_costs must be a list of numbers"),
    ({"symbol": 5}, "symbol must be a string"),
])
def test_a_stored_state_of_the_wrong_types_is_a_state_error_naming_the_field(changes: dict, named: str) -> None:
    with pytest.raises(StateError, match=re.escape(named)):
        MetaAgentState.from_bytes(json.dumps(_stored(**changes)).encode())


def test_a_well_formed_stored_state_still_loads_and_round_trips() -> None:
    data = _stored()
    assert MetaAgentState.from_bytes(json.dumps(data).encode()).to_dict() == data


# ---- 4. a zero reward at a tiny draw probability ------------------------------------------------


@pytest.mark.parametrize(("policy", "params", "zero"), [
    ("hedge", {"eta": 0.1}, 0.0), ("hedge", {"eta": 0.1, "discount": 0.9}, 0.0),
    ("exp3", {"gamma": 0.1}, -3.0),  # EXP3 maps its reward range's low end, -3, to 0
])
def test_a_zero_reward_at_a_tiny_probability_adds_nothing(policy: str, params: dict, zero: float) -> None:
    """eta / 1e-320 is infinite and infinity × 0 is NaN: the update was refused as non-finite."""
    tiny, usual = make_bandit(policy, 4, random_state=0, **params), make_bandit(policy, 4, random_state=0, **params)
    for learner in (tiny, usual):
        learner.update_all(np.array([0.3, -0.2, 0.1, 0.0]))
    tiny.update(0, zero, 1e-320)
    usual.update(0, zero, 0.5)  # the same update at an ordinary probability: it too adds nothing
    assert tiny.to_dict() == usual.to_dict()
    assert np.all(np.isfinite(tiny.weights()))


@pytest.mark.parametrize("policy", ["hedge", "exp3"])
def test_a_non_zero_reward_at_a_tiny_probability_is_still_refused(policy: str) -> None:
    learner = make_bandit(policy, 4, random_state=0)
    before = learner.to_dict()
    with pytest.raises(BanditError, match="makes the weights non-finite"):
        learner.update(0, 1.0, 1e-320)
    assert learner.to_dict() == before
