"""Bandit library: convergence, serialisation, weights, forgetting, input checks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from ensemble_trader.domain.bandits import (
    EXP3,
    POLICIES,
    UCB1,
    BanditError,
    BetaThompson,
    DiscountedThompson,
    DiscountedUCB,
    GaussianThompson,
    Hedge,
    SlidingWindowUCB,
    bandit_from_dict,
    make_bandit,
)
from ensemble_trader.domain.errors import StateError

MEANS = np.array([0.0, 0.2, 0.6, 0.1])
BEST = int(MEANS.argmax())


def _play(learner, rounds: int, seed: int, full_information: bool) -> np.ndarray:
    """Run a Gaussian problem (sd 1); return the arm chosen in each round."""
    rng = np.random.default_rng(seed)
    chosen = np.empty(rounds, dtype=int)
    for t in range(rounds):
        arm = learner.select().arm
        chosen[t] = arm
        rewards = MEANS + rng.standard_normal(MEANS.size)
        if full_information:
            learner.update_all(rewards)
        else:
            learner.update(arm, rewards[arm])
    return chosen


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("full_information", [False, True])
def test_converges_to_the_best_arm(policy: str, full_information: bool) -> None:
    params = {"eta": 0.05} if policy == "hedge" else {}
    learner = make_bandit(policy, 4, random_state=7, **params)
    chosen = _play(learner, 1500, seed=11, full_information=full_information)
    share_best = float(np.mean(chosen[-500:] == BEST))
    assert share_best > 0.6, f"{policy}: best arm chosen in only {share_best:.0%} of late rounds"
    assert int(np.argmax(learner.weights())) == BEST


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_state_round_trip_gives_identical_next_selections(policy: str) -> None:
    learner = make_bandit(policy, 4, random_state=3)
    _play(learner, 60, seed=5, full_information=False)
    restored = bandit_from_dict(json.loads(json.dumps(learner.to_dict())))
    assert type(restored) is type(learner)
    rng = np.random.default_rng(9)
    for _ in range(40):
        a, b = learner.select(), restored.select()
        assert a.arm == b.arm
        np.testing.assert_array_equal(a.weights, b.weights)
        reward = float(rng.standard_normal())
        learner.update(a.arm, reward)
        restored.update(b.arm, reward)
    np.testing.assert_array_equal(learner.weights(), restored.weights())


def test_copy_is_independent() -> None:
    learner = GaussianThompson(3, random_state=1)
    twin = learner.copy()
    learner.update(0, 5.0)
    assert twin.s0_.sum() == 0.0
    # identical generator state: identical draws until their histories differ
    fresh = GaussianThompson(3, random_state=1)
    assert [fresh.select().arm for _ in range(10)] == [twin.select().arm for _ in range(10)]


def test_exp3_weights_are_a_valid_distribution_with_exploration_floor() -> None:
    learner = EXP3(4, gamma=0.2, random_state=0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = learner.weights()
        assert p.shape == (4,)
        assert abs(p.sum() - 1.0) < 1e-12
        assert np.all(p >= 0.2 / 4 - 1e-12)
        sel = learner.select()
        learner.update(sel.arm, float(rng.normal(MEANS[sel.arm], 1.0)))


def test_weights_sum_to_one_for_every_policy() -> None:
    for policy in POLICIES:
        learner = make_bandit(policy, 4, random_state=2)
        _play(learner, 30, seed=1, full_information=True)
        w = learner.weights()
        assert abs(w.sum() - 1.0) < 1e-12 and np.all(w >= 0), policy


def _change_point(learner) -> np.ndarray:
    """Arm 0 pays 1 for 500 rounds, then arm 1 pays 1 for 300 rounds (full information)."""
    for _ in range(500):
        learner.update_all(np.array([1.0, 0.0]))
    for _ in range(300):
        learner.update_all(np.array([0.0, 1.0]))
    return learner.weights()


@pytest.mark.parametrize(
    "forgetful",
    [
        DiscountedUCB(2, gamma=0.98),
        SlidingWindowUCB(2, window=100),
        DiscountedThompson(2, gamma=0.98, random_state=0),
        BetaThompson(2, gamma=0.98, random_state=0),
        Hedge(2, eta=0.5, discount=0.9, random_state=0),
        EXP3(2, gamma=0.1, reward_range=(0.0, 1.0), discount=0.99, random_state=0),
    ],
    ids=lambda b: b.name,
)
def test_discounting_forgets_and_stationary_learners_do_not(forgetful) -> None:
    assert _change_point(forgetful)[1] > 0.9
    assert _change_point(UCB1(2))[0] == 1.0  # long memory: still on the old best arm
    stale = _change_point(GaussianThompson(2, random_state=0))
    assert stale[0] > 0.9
    assert _change_point(BetaThompson(2, random_state=0))[0] > 0.9


def test_discounted_estimates_track_the_new_means() -> None:
    ducb = DiscountedUCB(2, gamma=0.98)
    _change_point(ducb)
    means = ducb.select().estimates
    assert means[0] < 0.01 and means[1] > 0.99
    ucb = UCB1(2)
    _change_point(ucb)
    np.testing.assert_allclose(ucb.select().estimates, [500 / 800, 300 / 800])


def test_ucb_plays_every_arm_once_first_and_reports_bonuses() -> None:
    learner = UCB1(3, random_state=0)
    seen = set()
    for _ in range(3):
        sel = learner.select()
        assert np.isinf(sel.bonuses[sel.arm])
        seen.add(sel.arm)
        learner.update(sel.arm, 0.5)
    assert seen == {0, 1, 2}
    sel = learner.select()
    assert np.all(np.isfinite(sel.bonuses))
    json.dumps(sel.as_dict())


def test_thompson_posterior_matches_closed_form() -> None:
    learner = GaussianThompson(1, mu0=0.0, kappa0=1.0, alpha0=1.0, beta0=1.0)
    data = [1.0, 2.0, 3.0]
    for x in data:
        learner.update(0, x)
    mu, kappa, alpha, beta = (v[0] for v in learner.posterior())
    n, xbar = 3, 2.0
    assert kappa == pytest.approx(4.0)
    assert mu == pytest.approx(n * xbar / 4.0)
    assert alpha == pytest.approx(2.5)
    assert beta == pytest.approx(1.0 + 0.5 * 2.0 + 1.0 * n * xbar**2 / (2 * 4.0))
    assert learner.select().samples is not None


def test_beta_thompson_counts_zero_one_rewards_as_bernoulli_observations() -> None:
    """0/1 rewards are the Beta-Bernoulli model itself: the posterior is Beta(a0 + ones, b0 + zeros)."""
    learner = BetaThompson(3, a0=2.0, b0=0.5, random_state=4)
    ones, zeros = np.zeros(3), np.zeros(3)
    rng = np.random.default_rng(1)
    for _ in range(200):
        arm = learner.select().arm
        reward = float(rng.random() < 0.3 + 0.2 * arm)
        learner.update(arm, reward)
        ones[arm] += reward
        zeros[arm] += 1.0 - reward
    learner.update_all(np.array([1.0, 0.0, 1.0]))
    ones += [1, 0, 1]
    zeros += [0, 1, 0]
    a, b = learner.posterior()
    np.testing.assert_array_equal(a, 2.0 + ones)
    np.testing.assert_array_equal(b, 0.5 + zeros)
    np.testing.assert_allclose(learner.select().estimates, a / (a + b))


def test_beta_thompson_counts_a_bounded_reward_as_a_trial_that_succeeds_with_its_mapped_value() -> None:
    """Agrawal & Goyal's trick: reward r in (low, high) succeeds with probability (r - low) / (high - low);
    rewards beyond the range are clipped to its ends, and estimates and samples are on the reward scale."""
    learner = BetaThompson(3, reward_range=(-4.0, 4.0), random_state=0)
    for _ in range(20_000):
        learner.update_all(np.array([-2.0, 9.0, -7.5]))  # mapped: 0.25, clipped to 1 and to 0
    share = learner.successes_ / (learner.successes_ + learner.failures_)
    assert abs(share[0] - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 20_000)
    assert share[1] == 1.0 and share[2] == 0.0
    selection = learner.select()
    a, b = learner.posterior()
    np.testing.assert_allclose(selection.estimates, -4.0 + 8.0 * a / (a + b))
    assert selection.estimates[0] == pytest.approx(-2.0, abs=0.05)
    assert np.all((selection.samples >= -4.0) & (selection.samples <= 4.0))
    assert selection.arm == 1 and selection.bonuses is None


def test_beta_thompson_full_information_ranks_arms_by_their_rewards_not_by_luck() -> None:
    """One uniform draw per round serves every arm: equal rewards give equal counts, and an arm
    rewarded more every round never has fewer successes (independent draws ranked equal agents by luck)."""
    learner = BetaThompson(4, reward_range=(-4.0, 4.0), random_state=0)
    rng = np.random.default_rng(3)
    for _ in range(500):
        x = rng.standard_normal()
        learner.update_all(np.array([x, x, x + 0.1, x - 0.1]))
    assert learner.successes_[0] == learner.successes_[1]
    assert learner.successes_[3] <= learner.successes_[0] <= learner.successes_[2]
    np.testing.assert_allclose(learner.successes_ + learner.failures_, 500.0)


def test_thompson_weights_split_tied_draws_instead_of_favouring_the_first_arm() -> None:
    """Beta draws tie at exactly 0 or 1 under a tiny prior; argmax gave every tie to arm 0."""
    learner = BetaThompson(4, a0=0.02, b0=0.02, n_weight_samples=20_000, random_state=0)
    np.testing.assert_allclose(learner.weights(), 0.25, atol=0.02)
    assert abs(learner.weights().sum() - 1.0) < 1e-12
    certain = BetaThompson(3, a0=1e300, random_state=0)  # every draw is 1.0
    np.testing.assert_allclose(certain.weights(), 1 / 3)


def test_beta_thompson_refuses_bad_hyperparameters() -> None:
    for params, match in [({"reward_range": (1.0, 1.0)}, "high > low"),
                          ({"reward_range": "01"}, "two numbers"),
                          ({"reward_range": (0, True)}, "two numbers"),
                          ({"reward_range": (0.0, 1.0, 2.0)}, "two numbers"),
                          ({"reward_range": None}, "two numbers"),
                          ({"reward_range": (-1e308, 1e308)}, "finite width"),
                          ({"a0": 0.0}, "a0 must be finite and > 0"),
                          ({"b0": -1.0}, "b0 must be finite and > 0"),
                          ({"b0": True}, "b0 must be finite and > 0"),
                          ({"gamma": 0.0}, "gamma"),
                          ({"gamma": True}, "gamma"),
                          ({"n_weight_samples": 0}, "n_weight_samples"),
                          ({"n_weight_samples": True}, "n_weight_samples")]:
        with pytest.raises(BanditError, match=f"^betats: .*{match}"):
            BetaThompson(3, **params)
    with pytest.raises(BanditError, match="^thompson: n_weight_samples must be a positive integer, got True"):
        GaussianThompson(3, n_weight_samples=True)  # one draw per weight estimate, stored as JSON true
    for params, match in [({"kappa0": True}, "kappa0 must be finite and > 0, got True"),
                          ({"alpha0": 0.0}, "alpha0 must be finite and > 0"),
                          ({"beta0": "1"}, "beta0 must be finite and > 0, got '1'"),
                          ({"mu0": np.True_}, "mu0 must be finite, got np.True_"),
                          ({"gamma": False}, "gamma must be in")]:
        with pytest.raises(BanditError, match=f"^thompson: {match}"):
            GaussianThompson(3, **params)
    assert GaussianThompson(3, mu0=np.float32(-0.5), kappa0=np.int64(2)).get_params()["kappa0"] == 2.0
    for make, match in [(lambda: DiscountedUCB(3, gamma=True), "ducb: gamma must be in"),
                        (lambda: EXP3(3, gamma="0.1"), "exp3: gamma must be in"),
                        (lambda: EXP3(3, discount=True), "exp3: discount must be in"),
                        (lambda: Hedge(3, discount=np.True_), "hedge: discount must be in"),
                        (lambda: Hedge(3, discount=1.5), "hedge: discount must be in")]:
        with pytest.raises(BanditError, match=f"^{match} \\(0, 1\\], got "):
            make()  # True was read as 1.0, "0.1" failed with a raw TypeError


def test_ucb_bonuses_are_their_closed_forms() -> None:
    """UCB1: alpha sqrt(2 ln n / n_i); discounted UCB: the same over discounted counts and their
    discounted total; sliding-window UCB: counts of the window and ln min(t, W)."""
    pulls = [0, 1, 0, 2, 0, 1, 0, 0]
    rewards = [0.2, 0.5, 0.1, 0.9, 0.3, 0.4, 0.6, 0.7]
    ucb, ducb, sw = UCB1(3, alpha=0.7), DiscountedUCB(3, gamma=0.9, alpha=0.7), SlidingWindowUCB(3, window=5, alpha=0.7)
    for learner in (ucb, ducb, sw):
        for arm, r in zip(pulls, rewards, strict=True):
            learner.update(arm, r)
    n = np.array([5.0, 2.0, 1.0])
    np.testing.assert_allclose(ucb.select().bonuses, 0.7 * np.sqrt(2 * np.log(8) / n))
    weights = 0.9 ** np.arange(7, -1, -1)  # the weight of each round's reward now
    dn = np.array([weights[[i for i, a in enumerate(pulls) if a == k]].sum() for k in range(3)])
    np.testing.assert_allclose(ducb.select().bonuses, 0.7 * np.sqrt(2 * np.log(dn.sum()) / dn))
    window = pulls[-5:]  # rounds 4-8: arm 0 thrice, arms 1 and 2 once
    wn = np.array([window.count(k) for k in range(3)], dtype=float)
    np.testing.assert_allclose(sw.select().bonuses, 0.7 * np.sqrt(2 * np.log(min(8, 5)) / wn))


def test_thompson_posterior_uses_its_prior_mean_and_strength() -> None:
    learner = GaussianThompson(1, mu0=1.5, kappa0=2.0, alpha0=3.0, beta0=0.5)
    for x in (1.0, 2.0, 4.0):
        learner.update(0, x)
    mu, kappa, alpha, beta = (v[0] for v in learner.posterior())
    n, xbar, ss = 3, 7.0 / 3.0, sum((x - 7.0 / 3.0) ** 2 for x in (1.0, 2.0, 4.0))
    assert kappa == pytest.approx(5.0)
    assert mu == pytest.approx((2.0 * 1.5 + n * xbar) / 5.0)
    assert alpha == pytest.approx(3.0 + n / 2)
    assert beta == pytest.approx(0.5 + ss / 2 + 2.0 * n * (xbar - 1.5) ** 2 / (2 * 5.0))


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_rewards_too_large_for_the_statistics_are_refused_and_change_nothing(policy: str) -> None:
    learner = make_bandit(policy, 2, random_state=0)
    learner.update_all(np.array([0.1, 0.2]))
    before = json.dumps(learner.to_dict())
    with pytest.raises(BanditError, match="at most 1e\\+100"):
        learner.update(0, 2e154)
    with pytest.raises(BanditError, match="at most 1e\\+100"):
        learner.update_all(np.array([0.0, -2e154]))
    assert json.dumps(learner.to_dict()) == before


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_stored_state_with_a_non_finite_statistic_or_negative_round_is_refused(policy: str) -> None:
    learner = make_bandit(policy, 3, random_state=0)
    learner.update_all(np.array([0.1, 0.2, 0.3]))
    data = json.loads(json.dumps(learner.to_dict()))
    first = next(iter(data["arrays"]))
    poisoned = json.loads(json.dumps(data))
    flat = np.asarray(poisoned["arrays"][first], dtype=float)
    flat.flat[0] = np.nan
    poisoned["arrays"][first] = flat.tolist()
    with pytest.raises(StateError, match="not finite"):
        bandit_from_dict(poisoned)
    with pytest.raises(StateError, match="negative"):
        bandit_from_dict({**data, "t": -1})


def test_bad_input_raises_typed_errors() -> None:
    learner = UCB1(3)
    with pytest.raises(BanditError, match="arm"):
        learner.update(3, 1.0)
    with pytest.raises(BanditError, match="finite"):
        learner.update(0, float("nan"))
    with pytest.raises(BanditError, match="shape"):
        learner.update_all(np.zeros(2))
    with pytest.raises(BanditError, match="unknown bandit policy"):
        make_bandit("greedy", 3)
    with pytest.raises(BanditError, match="gamma"):
        DiscountedUCB(3, gamma=1.5)
    with pytest.raises(BanditError, match="n_arms"):
        UCB1(0)
    with pytest.raises(StateError):
        bandit_from_dict({"policy": "ucb"})
    broken = UCB1(3).to_dict()
    broken["arrays"]["counts_"] = [1.0]
    with pytest.raises(StateError, match="shape"):
        bandit_from_dict(broken)


@pytest.mark.parametrize("cls", [Hedge, EXP3])
def test_bandit_feedback_importance_weight_is_the_probability_the_arm_was_played_with(cls) -> None:
    own = cls(3, random_state=0)
    own.update_all(np.array([0.5, 0.0, -0.5]))
    given = own.copy()
    p_own = own.weights()[2]
    own.update(2, 0.4)  # default: this learner's own probability
    given.update(2, 0.4, probability=0.5)  # drawn by another learner with probability 0.5
    gain_own = own.log_weights_[2] - own.log_weights_[1]
    gain_given = given.log_weights_[2] - given.log_weights_[1]
    assert gain_given < gain_own  # 0.5 > p_own: a smaller importance weight
    assert p_own < 0.5
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(BanditError, match=r"probability an arm was played with must be in \(0, 1\]"):
            given.update(0, 0.1, probability=bad)


def test_hedge_refuses_feedback_for_an_arm_it_could_not_have_played() -> None:
    learner = Hedge(2, eta=0.1)
    learner.update_all(np.array([0.0, -8000.0]))  # arm 1's probability underflows to 0
    assert learner.weights()[1] == 0.0
    with pytest.raises(BanditError, match="arm 1 has probability 0 here"):
        learner.update(1, 0.5)
    learner.update(1, 0.5, probability=0.3)
    assert np.all(np.isfinite(learner.weights()))


@pytest.mark.parametrize(
    ("policy", "params"),
    [
        ("hedge", {"eta": float("inf")}),
        ("exp3", {"gamma": 0.1, "reward_range": (-float("inf"), 1.0)}),
        ("ucb", {"alpha": float("inf")}),
        ("thompson", {"mu0": float("nan")}),
        ("betats", {"reward_range": (0.0, float("inf"))}),
        ("betats", {"a0": float("inf")}),
    ],
)
def test_hyperparameters_must_be_finite(policy: str, params: dict) -> None:
    with pytest.raises(BanditError, match="must be finite"):
        make_bandit(policy, 3, **params)


@pytest.mark.parametrize("learner", [Hedge(4, eta=0.1), EXP3(4, gamma=0.1)], ids=["hedge", "exp3"])
def test_an_update_that_would_make_the_weights_non_finite_raises_and_changes_nothing(learner) -> None:
    """Bandit feedback: an importance weight beyond floats (an arm played with probability 1e-310)."""
    learner.update_all(np.array([0.5, 0.1, 0.0, 0.0]))
    before = learner.to_dict()
    with pytest.raises(BanditError, match="probability 1e-310 makes the weights non-finite"):
        learner.update(0, 1.0, probability=1e-310)
    assert learner.to_dict() == before and np.all(np.isfinite(learner.weights()))


def test_a_full_information_update_that_would_make_the_weights_non_finite_raises_and_changes_nothing() -> None:
    """With eta at most MAX_ETA no full-information round from recentred log-weights can overflow
    (test_bandits_hyperparameters); a stored learner whose log-weights span more than the float
    range still can (from_dict accepts any finite log-weights), and the guard keeps it whole."""
    data = Hedge(4, eta=0.1, random_state=3).to_dict()
    data["arrays"]["log_weights_"] = [1e308, -1e308, 0.0, 0.0]
    stored = bandit_from_dict(data)
    with pytest.raises(BanditError, match="^hedge: update with rewards makes the weights non-finite$"):
        stored.update_all(np.array([2.0, 1.0, 0.0, 0.0]))
    assert stored.to_dict() == data


def test_size_bound_covers_a_learner_full_of_long_floats() -> None:
    learner = make_bandit("swucb", 4, window=50, random_state=1)
    rng = np.random.default_rng(0)
    for _ in range(80):
        learner.update_all(rng.standard_normal(4) * 1e-7)
    assert len(json.dumps(learner.to_dict(), separators=(",", ":"))) <= learner.size_bound()
    assert make_bandit("swucb", 4, window=500).size_bound() > 9 * make_bandit("swucb", 4, window=50).size_bound()


@pytest.mark.parametrize(("policy", "array"), [("thompson", "s0_"), ("thompson", "m2_"), ("ucb", "counts_"),
                                               ("dts", "s0_"), ("swucb", "buffer_mask_"),
                                               ("glrts", "history_n_"), ("glrucb", "restarts_"),
                                               ("betats", "successes_"), ("betats", "failures_")])
def test_a_stored_statistic_that_cannot_be_negative_is_refused_at_restore(policy, array):
    """Accepted, a negative count made every later select() fail with numpy's own error."""
    d = make_bandit(policy, 3, random_state=1).to_dict()
    d["arrays"][array] = (-np.abs(np.asarray(d["arrays"][array], dtype=float)) - 5).tolist()
    with pytest.raises(StateError, match=f"{array}.*negative"):
        bandit_from_dict(d)


def test_a_numpy_integer_seed_is_stored_as_a_plain_integer():
    bandit = make_bandit("thompson", 3, random_state=np.int64(7))
    stored = json.dumps(bandit.to_dict())  # raised TypeError: int64 is not JSON serializable
    assert bandit_from_dict(json.loads(stored)).get_params()["random_state"] == 7
    with pytest.raises(BanditError, match="random_state"):
        make_bandit("thompson", 3, random_state=1.5)


NOT_REAL_NUMBERS = [None, "x", "0.5", np.array([0.5]), [0.5], 1j, True, np.True_]


@pytest.mark.parametrize("cls", list(POLICIES.values()), ids=list(POLICIES))
@pytest.mark.parametrize("reward", NOT_REAL_NUMBERS, ids=repr)
def test_a_reward_that_is_not_a_real_number_is_refused_by_name_and_changes_nothing(cls, reward) -> None:
    learner = cls(3, random_state=0)
    learner.update_all([0.1, 0.2, 0.3])
    before = json.dumps(learner.to_dict())
    with pytest.raises(BanditError, match=f"^{cls.name}: reward must be a real number, got ") as caught:
        learner.update(0, reward)
    assert str(caught.value).endswith(f"got {reward!r}")
    with pytest.raises(BanditError, match=f"^{cls.name}: reward of arm 1 must be a real number, got ") as caught:
        learner.update_all([0.1, reward, 0.3])
    assert str(caught.value).endswith(f"got {reward!r}")
    assert json.dumps(learner.to_dict()) == before


@pytest.mark.parametrize("cls", list(POLICIES.values()), ids=list(POLICIES))
def test_update_all_names_the_rewards_as_given(cls) -> None:
    learner = cls(3, random_state=0)
    with pytest.raises(BanditError, match=r"reward of arm 0 must be a real number, got None$"):
        learner.update_all([None, None, None])
    with pytest.raises(BanditError, match=r"reward of arm 2 must be a real number, got 'x'$"):
        learner.update_all([0.5, 1, "x"])  # NumPy alone would make strings of all three
    with pytest.raises(BanditError, match=r"reward of arm 0 must be a real number, got np\.False_$"):
        learner.update_all(np.array([False, True, True]))
    with pytest.raises(BanditError, match=r"reward of arm 1 must be finite and at most 1e\+100 in size, got nan$"):
        learner.update_all([0.0, float("nan"), 0.0])
    with pytest.raises(BanditError, match=r"reward of arm 0 must be finite .* got 1000000"):
        learner.update_all([10**400, 0, 0])  # too large for a float
    with pytest.raises(BanditError, match=r"reward of arm 0 must be a real number, got \[0\.1\]$"):
        learner.update_all([[0.1], [0.2, 0.3], 0.4])  # ragged
    with pytest.raises(BanditError, match=r"rewards must have shape \(3,\)"):
        learner.update_all(None)
    assert learner.t_ == 0


@pytest.mark.parametrize("cls", list(POLICIES.values()), ids=list(POLICIES))
def test_real_rewards_of_any_numeric_type_are_accepted(cls) -> None:
    learner = cls(3, random_state=0)
    for reward in (1, 0.25, np.float32(0.5), np.int64(-1), np.array(0.75)):
        learner.update(0, reward)
    learner.update_all([1, np.float64(0.5), np.int8(-1)])
    learner.update_all(np.array([1, 2, 3], dtype=np.int32))
    learner.update_all(np.array([0.1, 0.2, 0.3], dtype=object))
    assert learner.t_ == 8


@pytest.mark.parametrize("cls", list(POLICIES.values()), ids=list(POLICIES))
@pytest.mark.parametrize("arm", [True, False, np.True_, 1.0, "1", None])
def test_an_arm_that_is_not_an_integer_is_refused_and_changes_nothing(cls, arm) -> None:
    learner = cls(2, random_state=0)
    before = json.dumps(learner.to_dict())
    with pytest.raises(BanditError, match=f"^{cls.name}: arm must be an integer in \\[0, 2\\), got {arm!r}$"):
        learner.update(arm, 1.0)
    assert json.dumps(learner.to_dict()) == before
    learner.update(np.int64(1), 1.0)  # NumPy integers are arms
    assert learner.t_ == 1


@pytest.mark.parametrize("probability", ["x", True, np.array([0.5])])
def test_a_probability_that_is_not_a_real_number_is_refused(probability) -> None:
    with pytest.raises(BanditError, match=f"probability an arm was played with .* got {re.escape(repr(probability))}$"):
        EXP3(3).update(0, 0.1, probability=probability)
