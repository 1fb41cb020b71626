"""Gaussian Thompson sampling keeps each arm's mean and squared deviations (Welford), not sums of
rewards and of their squares: the posterior is the closed form's, rewards far from zero keep their
spread, and states stored as sums before 2026-11-29 are read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ensemble_trader.domain.bandits import GaussianThompson, bandit_from_dict, make_bandit
from ensemble_trader.domain.errors import StateError


def _closed_form(rewards: np.ndarray, gamma: float, mu0: float, kappa0: float, alpha0: float, beta0: float):
    """The Normal-Gamma posterior of one arm from its rewards, in two passes (weights gamma^age)."""
    w = gamma ** np.arange(rewards.size)[::-1]
    n = w.sum()
    mean = (w * rewards).sum() / n
    scatter = (w * (rewards - mean) ** 2).sum()
    kappa = kappa0 + n
    mu = (kappa0 * mu0 + n * mean) / kappa
    beta = beta0 + 0.5 * scatter + kappa0 * n * (mean - mu0) ** 2 / (2 * kappa)
    return mu, kappa, alpha0 + 0.5 * n, beta


@pytest.mark.parametrize("gamma", [1.0, 0.98])
@pytest.mark.parametrize("level", [0.0, 3.0, 1e8, -1e10])
@pytest.mark.parametrize("full_information", [False, True])
def test_the_posterior_is_the_closed_form_at_any_reward_level(gamma, level, full_information):
    rng = np.random.default_rng(4)
    rewards = level + rng.standard_normal((400, 2)) * np.array([1.0, 0.25])
    prior = {"mu0": level, "kappa0": 0.5, "alpha0": 2.0, "beta0": 0.1}
    learner = GaussianThompson(2, gamma=gamma, **prior)
    for row in rewards:
        if full_information:
            learner.update_all(row)
        else:  # arm 0 only; arm 1's weight still decays
            learner.update(0, float(row[0]))
    mu, kappa, alpha, beta = learner.posterior()
    want = _closed_form(rewards[:, 0], gamma, **prior)
    np.testing.assert_allclose([mu[0], kappa[0], alpha[0]], want[:3], rtol=1e-12, atol=1e-9)
    # beta holds the scatter: with sums of squares it was 0 (clipped) at 1e8, a spread of 0 instead of 1
    np.testing.assert_allclose(beta[0], want[3], rtol=1e-5)  # 4e-7 at 1e10: both sides round
    spread = np.sqrt(2 * (beta[0] - prior["beta0"]) / kappa[0])
    assert 0.8 < spread < 1.2


def _as_sums(data: dict) -> dict:
    """``data`` as code before 2026-11-29 stored it: weight, sum and sum of squares."""
    arrays = dict(data["arrays"])
    s0, mean, m2 = (np.asarray(arrays.pop(a)) for a in ("s0_", "mean_", "m2_"))
    s1 = s0 * mean
    return {**data, "arrays": arrays | {"s0_": s0.tolist(), "s1_": s1.tolist(), "s2_": (m2 + s1 * mean).tolist()}}


@pytest.mark.parametrize("policy", ["thompson", "dts", "glrts"])
def test_a_state_stored_as_sums_is_read_and_decides_the_same(policy):
    learner = make_bandit(policy, 4, random_state=3)
    rng = np.random.default_rng(8)
    learner.update(1, 0.0)  # an arm with a weight, one without: the mean of arm 0 stays 0
    for _ in range(120):
        arm = learner.select().arm
        learner.update(arm, float(rng.normal([0.1, 0.4, -0.2, 0.0][arm], 1.0)))
    stored = json.loads(json.dumps(learner.to_dict()))
    old = bandit_from_dict(_as_sums(stored))
    new = bandit_from_dict(stored)
    for got, want in zip(old.posterior(), new.posterior(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert set(old.to_dict()["arrays"]) >= {"s0_", "mean_", "m2_"}
    assert "s1_" not in old.to_dict()["arrays"]
    assert [old.select().arm for _ in range(50)] == [new.select().arm for _ in range(50)]


def test_a_state_stored_as_sums_with_a_bad_statistic_is_refused():
    data = _as_sums(make_bandit("thompson", 3, random_state=1).update(0, 1.0).to_dict())
    data["arrays"]["s1_"] = [float("nan"), 0.0, 0.0]
    with pytest.raises(StateError, match="mean_.*not finite"):
        bandit_from_dict(data)
    data["arrays"]["s1_"] = [1.0, 0.0]
    with pytest.raises(StateError, match="cannot restore bandit state"):
        bandit_from_dict(data)
