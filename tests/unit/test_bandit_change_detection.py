"""Change-detecting bandits (GLR-UCB, GLR Thompson): the test statistic, restarts, forced
exploration, state, and what the meta-agent says when a learner restarts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ensemble_trader.cli.backtest import POLICY_CHOICES
from ensemble_trader.domain.bandits import (
    GLRUCB,
    POLICIES,
    BanditError,
    GLRThompson,
    bandit_from_dict,
    glr_statistics,
    glr_threshold,
    make_bandit,
)
from ensemble_trader.domain.errors import StateError
from ensemble_trader.domain.meta_agent import GLOBAL, MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.models import Regime

from tests.unit.test_meta_agent import market

MEANS = np.array([0.0, 0.2, 0.6, 0.1])
DETECTING = ["glrucb", "glrts"]


def test_glr_statistic_and_threshold_on_hand_computed_cases() -> None:
    # [0, 0, 1, 1]: splits after 1, 2, 3 samples give s(n-s)/n (m1-m2)^2 / 2 = 1/6, 1/2, 1/6
    assert glr_statistics(np.array([[0.0], [0.0], [1.0], [1.0]]), sigma=1.0)[0] == pytest.approx(0.5)
    # sigma halves -> the statistic is four times larger; a constant column has none
    stats = glr_statistics(np.array([[0.0, 3.0], [0.0, 3.0], [1.0, 3.0], [1.0, 3.0]]), sigma=0.5)
    assert stats == pytest.approx([2.0, 0.0])
    assert glr_threshold(100, 0.01) == pytest.approx(math.log(3.0 * 1000.0 / 0.01))
    # with two samples on each side only the middle split counts; with three there is no split
    column = np.array([[0.0], [0.0], [1.0], [1.0]])
    assert glr_statistics(column, sigma=1.0, min_segment=2) == pytest.approx([0.5])
    late = np.array([[0.0], [0.0], [0.0], [1.0]])  # the best split leaves one sample after it: 3/4 * 1/2
    assert glr_statistics(late, sigma=1.0) == pytest.approx([0.375])
    assert glr_statistics(late, sigma=1.0, min_segment=2) == pytest.approx([0.125])  # 2 * 2/4 * 0.5^2 / 2
    assert glr_statistics(column, sigma=1.0, min_segment=3) == pytest.approx([0.0])


def test_one_large_reward_at_the_end_of_the_history_is_not_a_change() -> None:
    rewards = list(np.random.default_rng(5).standard_normal(200)) + [8.0]  # a fat-tailed day
    every_split = make_bandit("glrts", 1, min_segment=1)
    robust = make_bandit("glrts", 1)  # 20 rewards on each side of a split
    for reward in rewards:
        every_split.update(0, reward)
        robust.update(0, reward)
    assert every_split.restarts == 1 and robust.restarts == 0


def test_fat_tailed_stationary_rewards_rarely_restart() -> None:
    """Student-t rewards (4 degrees of freedom, unit variance): with every split the test read
    about one outlier in a hundred rounds as a change (22 restarts a stream of 2,300 rounds)."""
    restarts = 0
    for seed in range(4):
        learner = make_bandit("glrts", 4, random_state=seed)
        rng = np.random.default_rng(700 + seed)
        for _ in range(1500):
            learner.update_all(MEANS + rng.standard_t(4, 4) / math.sqrt(2.0))
        restarts += learner.restarts
    assert restarts <= 1


@pytest.mark.parametrize("policy", DETECTING)
def test_a_change_of_mean_restarts_the_learner_soon_after_it_and_only_once(policy: str) -> None:
    learner = make_bandit(policy, 4, random_state=3)
    rng = np.random.default_rng(4)
    for t in range(600):
        means = MEANS if t < 300 else 2.0 * MEANS[::-1]  # the best arm moves from 2 to 1
        learner.update_all(means + rng.standard_normal(4))
        if t < 300:
            assert learner.restarts == 0, f"false alarm at round {t}"
    assert learner.restarts == 1
    assert 600 - 300 - 60 <= learner.rounds_since_restart < 300  # detected within 60 rounds of the change
    # after the restart the statistics hold post-change rewards only: the new best arm leads
    assert int(np.argmax(learner.weights())) == 1
    assert learner.t_ == 600  # the round count is not reset


@pytest.mark.parametrize("policy", DETECTING)
def test_stationary_rewards_rarely_restart(policy: str) -> None:
    restarts = 0
    for seed in range(10):
        learner = make_bandit(policy, 4, random_state=seed)
        rng = np.random.default_rng(50 + seed)
        for _ in range(1000):
            arm = learner.select().arm
            rewards = MEANS + rng.standard_normal(4)
            learner.update(arm, rewards[arm])
        restarts += learner.restarts
    assert restarts <= 2  # measured: 1 in 40 such streams of 1,500 rounds per policy


def test_forced_exploration_plays_every_arm_in_turn_on_its_schedule() -> None:
    learner = GLRUCB(4, explore=0.4, random_state=0)  # period floor(4 / 0.4) = 10 rounds
    forced = []
    for _ in range(30):
        selection = learner.select()
        forced.append(selection.arm if selection.forced else None)
        assert selection.as_dict().get("forced", False) is selection.forced
        learner.update(selection.arm, 0.0)
    assert forced[:4] == [0, 1, 2, 3] and forced[10:14] == [0, 1, 2, 3] and forced[20:24] == [0, 1, 2, 3]
    assert all(f is None for i, f in enumerate(forced) if i % 10 >= 4)


def test_without_forced_exploration_no_round_is_forced() -> None:
    learner = GLRThompson(3, random_state=0)
    for _ in range(20):
        selection = learner.select()
        assert not selection.forced
        learner.update(selection.arm, 1.0)


@pytest.mark.parametrize("policy", DETECTING)
def test_state_round_trip_keeps_history_and_restarts(policy: str) -> None:
    learner = make_bandit(policy, 3, random_state=1, history=20, explore=0.3, min_segment=5)
    rng = np.random.default_rng(2)
    for t in range(120):  # wraps the ring buffer; the jump at 60 is detected
        arm = learner.select().arm
        learner.update(arm, (0.0 if t < 60 else 5.0) + rng.standard_normal())
    restored = bandit_from_dict(json.loads(json.dumps(learner.to_dict())))
    assert restored.restarts == learner.restarts >= 1
    for _ in range(40):
        a, b = learner.select(), restored.select()
        assert (a.arm, a.forced) == (b.arm, b.forced)
        reward = rng.standard_normal()
        learner.update(a.arm, reward)
        restored.update(b.arm, reward)
    assert restored.to_dict() == learner.to_dict()


def test_the_threshold_counts_every_reward_since_the_restart_not_only_the_history() -> None:
    """Re-testing the last ``history`` rewards at the threshold of ``history`` samples for ever let
    false alarms pile up on a long-running learner; the threshold now grows with all it kept."""
    blip = [0.0] * 5 + [3.0] * 5  # GLR 1.25 * 9 = 11.25: above ln(3 * 10^1.5 / 0.01) = 9.16
    fresh = make_bandit("glrts", 1, history=10, min_segment=5)
    for reward in blip:
        fresh.update(0, reward)
    assert fresh.restarts == 1
    seasoned = make_bandit("glrts", 1, history=10, min_segment=5)
    for reward in [0.0] * 990 + blip:  # the same last ten rewards, 1,000 since the restart: threshold 16.07
        seasoned.update(0, reward)
    assert seasoned.restarts == 0


def test_a_stored_count_above_the_rounds_seen_is_refused() -> None:
    learner = make_bandit("glrucb", 3, random_state=1)
    for _ in range(30):
        learner.update(0, 0.5)
    data = learner.to_dict()
    data["arrays"]["history_n_"][0] = 1e19  # stopped advancing and overwrote one slot for ever
    with pytest.raises(StateError, match="count more than the 30 rounds seen"):
        bandit_from_dict(data)
    data = learner.to_dict()
    data["arrays"]["restarts_"][1] = 31.0
    with pytest.raises(StateError, match="count more than the 30 rounds seen"):
        bandit_from_dict(data)


@pytest.mark.parametrize("array", ["history_n_", "restarts_"])
def test_a_stored_count_that_is_not_whole_is_refused(array: str) -> None:
    data = make_bandit("glrts", 3, random_state=1).to_dict()
    data["arrays"][array][0] = 0.5
    with pytest.raises(StateError, match="whole numbers"):
        bandit_from_dict(data)


@pytest.mark.parametrize(("param", "value"), [("sigma", 0.0), ("delta", 1.0), ("delta", 0.0), ("history", 1),
                                              ("history", True), ("explore", 1.0), ("explore", -0.1),
                                              ("explore", 1e-12),  # a period of 4e12 rounds: overflowed at 1e-308
                                              ("min_segment", 0), ("min_segment", 126), ("min_segment", 2.0)])
def test_bad_detector_parameters_are_refused_by_name(param: str, value: object) -> None:
    for policy in DETECTING:
        with pytest.raises(BanditError, match=f"^{policy}: {param} must be"):
            make_bandit(policy, 3, **{param: value})


def test_a_history_too_long_for_the_state_item_is_refused_by_its_name() -> None:
    params = {"sigma": 1.0, "delta": 0.01, "history": 600, "explore": 0.0, "min_segment": 20}
    with pytest.raises(Exception, match="use a smaller history"):
        MetaAgentConfig.create(policy="glrts", policy_params=params)
    MetaAgentConfig.create(policy="glrts", policy_params=params | {"history": 570})


def test_the_backtest_offers_every_policy_of_the_library() -> None:
    assert set(POLICY_CHOICES) == set(POLICIES)


def _agent_rewards_flip(n: int, flip: int) -> tuple[np.ndarray, np.ndarray]:
    """Prices trending up, then down from ``flip``; agents 0-1 are long, 2-3 short throughout."""
    rng = np.random.default_rng(9)
    drift = np.where(np.arange(n) < flip, 0.006, -0.006)
    prices = 100.0 * np.cumprod(1.0 + drift + 0.005 * rng.standard_normal(n))
    targets = np.tile([1.0, 0.2, -0.2, -1.0], (n, 1))
    return prices, targets


@pytest.mark.parametrize("policy", DETECTING)
def test_the_meta_agent_names_the_restart_in_its_explanations(policy: str) -> None:
    step = MetaAgentStep(MetaAgentConfig.create(policy=policy, context="global", mode="select"))
    prices, targets = _agent_rewards_flip(300, flip=150)
    state, restarts = None, []
    for i, price in enumerate(prices):
        state, decision = step.decide(state, market(i, price, Regime.BULL), targets[i])
        detail = decision.intent.explanation_detail
        if detail["change_detected"]:
            restarts.append((i, detail["change_detected"], decision.intent.explanation))
    assert restarts, "the reversal of every agent's reward was not detected"
    first_bar, keys, line = restarts[0]
    assert 150 < first_bar < 230
    assert keys == [GLOBAL]
    assert f"change detected in the agents' rewards, restarted the {GLOBAL} learner" in line
    assert state.learners[GLOBAL].restarts == len(restarts)
    assert decision.intent.target_position < 0.0  # a short agent leads at the end


def test_policies_without_change_detection_add_no_change_entry() -> None:
    step = MetaAgentStep(MetaAgentConfig.create(policy="ucb", context="global", mode="select"))
    prices, targets = _agent_rewards_flip(5, flip=3)
    state = None
    for i, price in enumerate(prices):
        state, decision = step.decide(state, market(i, price), targets[i])
    assert "change_detected" not in decision.intent.explanation_detail


def test_a_forced_exploration_round_is_explained_as_such() -> None:
    params = {"alpha": 1.0, "sigma": 1.0, "delta": 0.01, "history": 250, "explore": 0.4, "min_segment": 20}
    step = MetaAgentStep(MetaAgentConfig.create(policy="glrucb", policy_params=params, context="global",
                                                mode="select", feedback="bandit"))
    prices, targets = _agent_rewards_flip(40, flip=40)
    state, whys = None, []
    for i, price in enumerate(prices):
        state, decision = step.decide(state, market(i, price), targets[i])
        whys.append(decision.intent.explanation_detail["why"])
    forced = [w for w in whys if "forced exploration" in w]
    # one round per agent in every 10 of the learner's, from its first update on
    assert len(forced) >= 12
    assert forced[0].startswith("conservative is played for forced exploration in the global learner")


def test_a_regime_learner_just_restarted_is_cold_again() -> None:
    """Its statistics are gone: the decisions fall back to the global learner until it has
    ``min_regime_rounds`` rounds again (it was still used, with its shrinkage weight, as if warm)."""
    step = MetaAgentStep(MetaAgentConfig.create(policy="glrts", context="regime", mode="blend",
                                                regime_prior_rounds=150.0, min_regime_rounds=20))
    prices, targets = _agent_rewards_flip(300, flip=150)
    state, learners, restart = None, [], None
    for i, price in enumerate(prices):
        state, decision = step.decide(state, market(i, price, Regime.BULL), targets[i])
        detail = decision.intent.explanation_detail
        learners.append((detail["learner"], detail["learner_rounds"]))
        if restart is None and "BULL" in detail["change_detected"]:
            restart = i
    assert restart is not None
    assert learners[restart - 1][0] == "BULL"  # warm before the change
    after = learners[restart + 1: restart + 20]
    assert after and all(key == GLOBAL for key, _ in after)  # cold for min_regime_rounds bars
    assert learners[restart + 21][0] == "BULL"
