"""Bandit hyperparameters: every parameter of every learner is checked by the constructor, by
bandit_from_dict for a stored learner, and by the meta-agent's configuration. A bool is never
read as 1 or 1.0, a string or None is a BanditError naming the parameter (never a raw
TypeError), and NaN, infinities and values out of range are refused; the values at the edges of
each range are accepted and stored as plain JSON numbers."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from ensemble_trader.domain.bandits import (
    MAX_ETA,
    MAX_REWARD,
    MAX_WEIGHT_SAMPLES,
    MAX_WINDOW,
    MIN_EXPLORE,
    POLICIES,
    BanditError,
    Hedge,
    bandit_from_dict,
    make_bandit,
)
from ensemble_trader.domain.errors import InvalidMessageError, StateError
from ensemble_trader.domain.meta_agent import MetaAgentConfig

NAN, INF = float("nan"), float("inf")

POSITIVE = [True, np.True_, "1", None, NAN, INF, -INF, 0.0, -1.0]
RATE = [True, False, np.True_, "0.5", None, NAN, INF, 0.0, -0.1, 1.5]  # (0, 1]
REWARD_RANGE = [True, "(0, 1)", (True, 1.0), (0.0, NAN), (1.0, 0.0), (0.0, INF), (0.0,), (0.0, 1.0, 2.0)]

BAD: dict[str, list] = {
    "alpha": POSITIVE,
    "sigma": POSITIVE,
    "kappa0": POSITIVE,
    "alpha0": POSITIVE,
    "beta0": POSITIVE,
    "a0": POSITIVE,
    "b0": POSITIVE,
    "mu0": [True, np.True_, "0", None, NAN, INF],
    "eta": POSITIVE + [MAX_ETA * (1.0 + 1e-9), 1e308],
    "gamma": RATE,
    "discount": RATE,
    "delta": [True, False, "0.01", None, NAN, 0.0, 1.0, -0.5],
    "explore": [True, False, np.False_, "0", None, NAN, INF, 1.0, MIN_EXPLORE / 2, -0.1],
    "window": [True, np.True_, "10", 10.0, None, 0, -1, MAX_WINDOW + 1],
    "history": [True, "250", 250.0, None, 1, MAX_WINDOW + 1],
    "min_segment": [True, "20", 20.0, None, 0, 126],  # the default history of 250 allows at most 125
    "n_weight_samples": [True, "256", 256.0, None, 0, MAX_WEIGHT_SAMPLES + 1],
    "reward_range": REWARD_RANGE,
}
"""Refused values of every hyperparameter: bools, strings, None, NaN, infinities, out of range."""

GOOD: dict[str, list] = {
    "alpha": [np.float64(0.5), 1e-300, 1e300, 2],
    "sigma": [np.float32(0.25), 1e-300, 3],
    "kappa0": [1e-300, 7],
    "alpha0": [0.5],
    "beta0": [np.int64(2)],
    "a0": [1e-3],
    "b0": [40],
    "mu0": [-5, np.float64(0.0)],
    "eta": [MAX_ETA, np.float64(1e-12), 1],
    "gamma": [1, 1e-300, np.float64(0.5)],
    "discount": [1, 0.5],
    "delta": [1e-300, 0.999],
    "explore": [0, MIN_EXPLORE, 0.999],
    "window": [1, np.int64(17)],
    "history": [2, np.int64(40)],
    "min_segment": [1, 125],
    "n_weight_samples": [1, np.int32(MAX_WEIGHT_SAMPLES)],
    "reward_range": [(np.float64(-1.0), 2), [0, 1]],
}
"""Accepted values (the edges of each range and NumPy numbers), stored as plain ints and floats."""

CASES = [(policy, name, value) for policy, cls in sorted(POLICIES.items()) for name in cls._params
         for value in BAD[name]]
GOOD_CASES = [(policy, name, value) for policy, cls in sorted(POLICIES.items()) for name in cls._params
              for value in GOOD[name]]


def _id(value) -> str:
    return f"{type(value).__name__}:{value!r}"


def _valid(policy: str, name: str, value) -> dict:
    """The hyperparameters to build ``policy`` with ``name=value`` (a history that admits the
    value of min_segment tested)."""
    params = {name: value}
    if name == "history" and policy in ("glrucb", "glrts"):
        params["min_segment"] = 1
    return params


def test_every_constructor_parameter_is_a_stored_hyperparameter_with_cases_here() -> None:
    for policy, cls in POLICIES.items():
        signature = set(inspect.signature(cls.__init__).parameters) - {"self", "n_arms", "random_state"}
        assert signature == set(cls._params), policy
        assert set(cls._params) <= set(BAD) and set(cls._params) <= set(GOOD), policy


@pytest.mark.parametrize(("policy", "name", "value"), CASES, ids=[f"{p}-{n}-{_id(v)}" for p, n, v in CASES])
def test_a_bad_hyperparameter_is_a_bandit_error_naming_it(policy: str, name: str, value) -> None:
    with pytest.raises(BanditError, match=f"^{policy}: {name} must be .*, got "):
        POLICIES[policy](4, **{name: value})
    with pytest.raises(BanditError, match=f"^{policy}: {name} must be "):
        make_bandit(policy, 4, random_state=0, **{name: value})


@pytest.mark.parametrize(("policy", "name", "value"), CASES, ids=[f"{p}-{n}-{_id(v)}" for p, n, v in CASES])
def test_a_stored_learner_with_a_bad_hyperparameter_is_a_state_error_naming_it(policy: str, name: str,
                                                                               value) -> None:
    data = make_bandit(policy, 4, random_state=0).update_all(np.array([0.1, 0.2, 0.0, -0.1])).to_dict()
    data["params"][name] = value
    with pytest.raises(StateError, match=f"^cannot restore bandit state: BanditError: {policy}: {name} must be "):
        bandit_from_dict(data)


@pytest.mark.parametrize(("policy", "name", "value"), CASES, ids=[f"{p}-{n}-{_id(v)}" for p, n, v in CASES])
def test_the_meta_agent_configuration_refuses_the_same_values_naming_them(policy: str, name: str, value) -> None:
    """Through the learner's check (bools by the configuration's own, which names them too)."""
    with pytest.raises(InvalidMessageError, match=f"policy_params=.*: ({policy}: )?{name} must be "):
        MetaAgentConfig.create(policy=policy, policy_params={name: value})


@pytest.mark.parametrize(("policy", "name", "value"), GOOD_CASES,
                         ids=[f"{p}-{n}-{_id(v)}" for p, n, v in GOOD_CASES])
def test_values_at_the_edges_are_accepted_stored_as_plain_numbers_and_restored(policy: str, name: str,
                                                                               value) -> None:
    learner = make_bandit(policy, 4, random_state=5, **_valid(policy, name, value))
    stored = learner.get_params()[name]
    expected = [float(v) for v in value] if name == "reward_range" else value
    assert stored == expected and type(stored) in ((list,) if name == "reward_range" else (int, float))
    if name == "reward_range":
        assert all(type(v) is float for v in stored)
    learner.update_all(np.array([0.3, -0.2, 0.1, 0.0]))
    text = json.dumps(learner.to_dict(), allow_nan=False)
    restored = bandit_from_dict(json.loads(text))
    assert json.dumps(restored.to_dict(), allow_nan=False) == text
    assert restored.select().arm == learner.select().arm


@pytest.mark.parametrize("value", [True, np.True_, "4", 4.0, None, 0, -1])
def test_the_number_of_arms_must_be_a_positive_integer(value) -> None:
    with pytest.raises(BanditError, match="^n_arms must be a positive integer, got "):
        make_bandit("hedge", value)
    data = make_bandit("hedge", 4).to_dict()
    data["params"]["n_arms"] = value
    with pytest.raises(StateError, match="n_arms must be a positive integer"):
        bandit_from_dict(data)


@pytest.mark.parametrize("value", [True, "5", 2.7, 5.0, None, -1])
def test_a_stored_round_count_must_be_an_integer_at_least_0(value) -> None:
    """int() read "5" and 2.7 as rounds and True as one."""
    learner = make_bandit("hedge", 4)
    learner.update_all(np.array([0.1, 0.2, 0.0, 0.0]))
    data = learner.to_dict()
    assert bandit_from_dict(json.loads(json.dumps(data))).t_ == 1
    data["t"] = value
    with pytest.raises(StateError, match=r"stored round count t=.* is (not an integer >= 0|negative)"):
        bandit_from_dict(data)


@pytest.mark.parametrize("value", [True, np.False_, "1", 1.0, -1])
def test_the_seed_must_be_an_integer_at_least_0_or_none(value) -> None:
    """A negative seed failed with numpy's untyped ValueError; True was seed 1."""
    with pytest.raises(BanditError, match="^random_state must be an integer >= 0 or None, got "):
        make_bandit("ucb", 4, random_state=value)
    data = make_bandit("ucb", 4, random_state=0).to_dict()
    data["params"]["random_state"] = value
    with pytest.raises(StateError, match="random_state must be an integer >= 0 or None"):
        bandit_from_dict(data)
    assert make_bandit("ucb", 4, random_state=np.uint64(2**64 - 1)).random_state == 2**64 - 1
    assert make_bandit("ucb", 4, random_state=2**70).random_state == 2**70  # SeedSequence takes any size


def test_a_bool_is_never_read_as_one() -> None:
    """The values a bool used to pass as: each accepted as a number, refused as a bool."""
    for policy, params in [("ucb", {"alpha": 1.0}), ("swucb", {"window": 1}), ("hedge", {"eta": 1.0}),
                           ("glrucb", {"sigma": 1.0}), ("glrts", {"explore": 0.0}), ("ucb", {})]:
        make_bandit(policy, 1 if not params else 4, **params)
        name, number = next(iter(params.items())) if params else ("n_arms", 1)
        flag = bool(number)
        with pytest.raises(BanditError, match=f"{name} must be .*got {flag!r}$"):
            if name == "n_arms":
                make_bandit(policy, flag)
            else:
                make_bandit(policy, 4, **{name: flag})


def test_the_largest_learning_rate_and_rewards_never_overflow_full_information() -> None:
    """MAX_ETA's promise: from recentred log-weights, rounds of the largest rewards far apart keep
    the weights finite (a rate of 1e308 overflowed on a reward of 2)."""
    learner = Hedge(4, eta=MAX_ETA)
    extreme = np.array([MAX_REWARD, -MAX_REWARD, 0.0, -MAX_REWARD])
    for _ in range(2_000):  # the same arms apart every round: the spread only grows
        learner.update_all(extreme)
        assert np.all(np.isfinite(learner.log_weights_)) and learner.log_weights_.max() == 0.0
    np.testing.assert_allclose(learner.log_weights_[1], -2_000 * 2 * MAX_ETA * MAX_REWARD, rtol=1e-12)
    assert learner.weights()[0] == 1.0
