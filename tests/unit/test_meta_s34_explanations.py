"""The meta-agent's "why" states the true reason of a choice: exploration when an agent other than
the one with the best estimate was put first (by UCB's bonus or by a posterior draw), an agent
without rewards when UCB's bonus is infinite, and a tie when other agents are level with it."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep

from tests.unit.test_meta_agent import path, run


def _decided(decisions):
    """The decisions of ready bars (a chosen agent), as (detail, why)."""
    out = [(d.intent.explanation_detail, d.intent.explanation_detail["why"]) for d in decisions]
    return [(detail, why) for detail, why in out if detail["chosen"] is not None]


def _best(detail) -> tuple[str, float, bool]:
    """(the agent with the largest estimate, that estimate, whether the chosen agent's is below it)."""
    estimates = {name: a["estimate"] for name, a in detail["agents"].items()}
    best = max(estimates, key=estimates.get)  # the first of a tie, as np.argmax
    top = estimates[best]
    return best, top, estimates[detail["chosen"]] < top - 1e-9 * max(1.0, abs(top))


@pytest.mark.parametrize("policy", ["thompson", "betats"])
def test_a_thompson_choice_made_by_the_draw_against_the_posterior_means_says_it_explores(policy: str) -> None:
    """In select mode a Thompson sampler holds the agent with the largest posterior draw. When
    another agent's posterior mean is higher the draw, not the posterior, chose: the old text said
    the agent "leads the posterior" on those bars too (52 of 400 with ``thompson`` here)."""
    prices, regimes, targets = path(300, seed=1)
    step = MetaAgentStep(MetaAgentConfig.create(policy=policy, mode="select", context="global"))
    _, decisions = run(step, prices, regimes, targets)
    exploring = 0
    for detail, why in _decided(decisions):
        best, top, below = _best(detail)
        chosen = detail["chosen"]
        if below:
            exploring += 1
            draw = detail["agents"][chosen]["sample"]
            assert why.startswith(f"{chosen} has the largest posterior draw ({draw:.3f}; "), why
            assert why.endswith(f", exploring: {best}'s posterior mean is higher ({top:.3f})"), why
            assert "leads the posterior" not in why
        else:
            assert why.startswith(f"{chosen} leads the posterior (mean "), why
            assert "exploring" not in why
    assert exploring > 0


def test_a_ucb_choice_lifted_by_its_bonus_says_it_explores_and_an_agent_without_rewards_says_so() -> None:
    """With bandit feedback UCB's bonuses differ: an agent with a lower estimate but fewer rewards
    can have the highest index (exploration), and an agent never rewarded has an infinite bonus."""
    prices, regimes, targets = path(300, seed=1)
    step = MetaAgentStep(MetaAgentConfig.create(policy="ucb", mode="select", context="global", feedback="bandit"))
    _, decisions = run(step, prices, regimes, targets)
    said = {"exploring": 0, "no reward": 0, "exploiting": 0}
    for detail, why in _decided(decisions):
        chosen = detail["chosen"]
        if detail["agents"][chosen]["bonus"] == "inf":
            said["no reward"] += 1
            assert why.startswith(f"{chosen} has no reward yet in the global learner: its UCB bonus is infinite"), why
            continue
        best, top, below = _best(detail)
        assert why.startswith(f"{chosen} has the highest UCB index (estimate "), why
        if below:
            said["exploring"] += 1
            assert why.endswith(f", exploring: its bonus, for fewer rewards, outweighs {best}'s higher "
                                f"estimate ({top:.3f})"), why
        else:
            said["exploiting"] += 1
            assert "exploring" not in why
    assert min(said.values()) > 0, said


@pytest.mark.parametrize("policy", ["hedge", "exp3", "ucb"])
@pytest.mark.parametrize("mode", ["blend", "select"])
def test_agents_with_identical_rewards_are_said_to_tie(policy: str, mode: str) -> None:
    """Four agents with the same targets earn the same rewards: every weight (or index) ties. The
    leader is then the previous one, or the first by index, and the why names the others as tied
    with it instead of saying it alone has the largest weight."""
    prices, regimes, _ = path(60, seed=2)
    step = MetaAgentStep(MetaAgentConfig.create(policy=policy, mode=mode, context="global"))
    _, decisions = run(step, prices, regimes, np.ones((60, 4)))
    names = step.agent_names
    decided = _decided(decisions)
    assert decided
    for detail, why in decided:
        others = ", ".join(n for n in names if n != detail["chosen"])
        assert why.endswith(f"tied with {others}") or f"tied with {others}," in why, why


@pytest.mark.parametrize("policy", ["thompson", "ucb", "exp3"])
def test_the_same_seed_gives_the_same_explanations(policy: str) -> None:
    prices, regimes, targets = path(120, seed=3)
    config = dict(policy=policy, mode="select", context="global", feedback="bandit")
    runs = [run(MetaAgentStep(MetaAgentConfig.create(**config, random_state=seed)), prices, regimes, targets)[1]
            for seed in (7, 7)]
    assert [d.intent.explanation for d in runs[0]] == [d.intent.explanation for d in runs[1]]
