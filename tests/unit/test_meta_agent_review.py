"""Meta-agent: inputs the step cannot turn into finite state are refused by name (and keep the
state), the configuration refuses values that would fail every bar, equal settings hash alike,
and the probability/select explanation quotes the mix it chose by."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

import numpy as np
import pytest
from ensemble_trader.adapters.memory import MemoryCache
from ensemble_trader.backtest.ensemble import run_pipeline
from ensemble_trader.domain.bandits import MAX_ETA, MAX_WEIGHT_SAMPLES, BanditError, GaussianThompson
from ensemble_trader.domain.errors import DataError, InvalidMessageError
from ensemble_trader.domain.meta_agent import (
    GLOBAL,
    MAX_AGENT_TARGET,
    MAX_PRICE_MOVE,
    MAX_SEED_VOL,
    MetaAgentConfig,
    MetaAgentState,
    MetaAgentStep,
)
from ensemble_trader.domain.models import (
    REGIMES,
    Bar,
    FeatureVector,
    MarketState,
    OrderIntent,
    Regime,
    RegimeEstimate,
)
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.synthetic import generate
from pydantic_core import to_jsonable_python

from tests.unit.test_meta_agent import T0, path, run
from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model
from tests.unit.test_meta_handler import QUEUE, Container, world  # noqa: F401 (world is a fixture)


def bar_state(i: int, price: float, *, regime: Regime = Regime.BULL, ready: bool = True,
              ewma_vol: float = 0.01, symbol: str = "SPX") -> MarketState:
    """A MarketState at day ``i`` whose bar closes at ``price`` (with an ``ewma_vol`` feature)."""
    ts = T0 + timedelta(days=i)
    bar = Bar(symbol=symbol, timestamp=ts, open=price, high=price, low=price, close=price, volume=1.0)
    probs = tuple(0.7 if r is regime else 0.1 for r in REGIMES)
    return MarketState(
        features=FeatureVector(bar=bar, values={"ewma_vol": ewma_vol}, warmup_remaining=0 if ready else 5),
        regime=RegimeEstimate(symbol=symbol, timestamp=ts, probabilities=probs, regime=regime,
                              confidence=0.7, bars_in_regime=1, model_version="test"),
    )


def with_close(state: MarketState, close: float) -> MarketState:
    """``state`` with its bar's prices all set to ``close``."""
    bar = state.features.bar.model_copy(update={"open": close, "high": close, "low": close, "close": close})
    features = state.features.model_copy(update={"bar": bar})
    return MarketState.model_validate(state.model_copy(update={"features": features}).model_dump())


def warmed(step: MetaAgentStep, n: int = 60, seed: int = 0):
    """A state after ``n`` ready bars of the synthetic path, and the path."""
    prices, regimes, targets = path(n + 10, seed=seed)
    state, _ = run(step, prices[:n], regimes, targets)
    return state, prices, regimes, targets


# ---- bad prints ----------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1e-101, 1e-4, 1e4, 1e20])
def test_a_close_far_from_the_last_one_is_refused_by_name_and_the_state_is_kept(factor: float) -> None:
    """A glitch close (1e-99 among closes near 100) was accepted; the next, normal bar then gave
    rewards beyond the learners' limit, an untyped BanditError, and the symbol failed for good."""
    step = MetaAgentStep(MetaAgentConfig.create())
    state, prices, regimes, targets = warmed(step)
    before = state.to_bytes()
    glitch = bar_state(60, prices[59] * factor, regime=regimes[60])
    with pytest.raises(DataError, match=re.escape(f"SPX@{glitch.timestamp.isoformat()}: close "
                                                  f"{glitch.features.bar.close!r} is")) as info:
        step.decide(state, glitch, targets[60])
    assert f"last applied close {state.last_price!r}" in str(info.value)
    assert f"factor of {MAX_PRICE_MOVE:,.0f}" in str(info.value)
    assert state.to_bytes() == before  # nothing of the refused bar is kept
    # the next bar is measured against the last good close, with rewards of the usual size
    after, decision = step.decide(state, bar_state(61, prices[60], regime=regimes[60]), targets[60])
    assert decision.agent_rewards is not None and np.all(np.abs(decision.agent_rewards) < 1e3)
    assert MetaAgentStep.load(MetaAgentStep.dump(after)).to_bytes() == after.to_bytes()


def test_a_move_just_within_the_bound_is_learnt_and_the_state_round_trips() -> None:
    step = MetaAgentStep(MetaAgentConfig.create())
    state, prices, regimes, targets = warmed(step)
    for factor in (MAX_PRICE_MOVE, 1.0 / MAX_PRICE_MOVE):
        new, decision = step.decide(state, bar_state(60, prices[59] * factor, regime=regimes[60]), targets[60])
        assert decision.agent_rewards is not None and np.all(np.isfinite(decision.agent_rewards))
        assert MetaAgentStep.load(MetaAgentStep.dump(new)).to_bytes() == new.to_bytes()
        # and the bar after it, back at the old level, too
        back, _ = step.decide(new, bar_state(61, prices[59], regime=regimes[60]), targets[61])
        assert MetaAgentStep.load(MetaAgentStep.dump(back)).to_bytes() == back.to_bytes()


def test_a_bad_print_during_the_warm_up_is_refused_too() -> None:
    """Nothing is learnt in the warm-up, so no learner refused the return: its square (1e-160
    after 100: r² overflows) made the variance infinite, a state that could not be loaded back."""
    step = MetaAgentStep(MetaAgentConfig.create())
    state = None
    for i in range(10):
        state, _ = step.decide(state, bar_state(i, 100.0 + i, ready=False), np.zeros(4))
    with pytest.raises(DataError, match="close 1e-160 is"):
        step.decide(state, bar_state(10, 1e-160, ready=False), np.zeros(4))


# ---- seeds, targets and the learners' limits ---------------------------------------------------


def test_an_ewma_vol_too_large_to_seed_the_market_volatility_is_refused() -> None:
    step = MetaAgentStep(MetaAgentConfig.create())
    with pytest.raises(DataError, match=re.escape("SPX@2024-01-02T00:00:00+00:00: ewma_vol 1e+160 cannot seed")):
        step.decide(None, bar_state(0, 100.0, ewma_vol=1e160), np.zeros(4))
    state, _ = step.decide(None, bar_state(0, 100.0, ewma_vol=MAX_SEED_VOL), np.full(4, 0.5))
    assert state.variance == MAX_SEED_VOL**2
    new, decision = step.decide(state, bar_state(1, 101.0, ewma_vol=MAX_SEED_VOL), np.full(4, 0.5))
    assert decision.agent_rewards is not None
    assert MetaAgentStep.load(MetaAgentStep.dump(new)).to_bytes() == new.to_bytes()


@pytest.mark.parametrize("value", [1e200, -MAX_AGENT_TARGET * 1.5, float("nan")])
def test_an_agent_target_beyond_the_bound_is_refused_by_agent_and_value(value: float) -> None:
    step = MetaAgentStep(MetaAgentConfig.create())
    state, prices, regimes, targets = warmed(step)
    wanted = targets[60].copy()
    wanted[2] = value
    with pytest.raises(DataError, match=re.escape(f"target of agent balanced is {value!r}")):
        step.decide(state, bar_state(60, prices[60], regime=regimes[60]), wanted)
    wanted[2] = -MAX_AGENT_TARGET  # the bound itself is a target
    new, _ = step.decide(state, bar_state(60, prices[60], regime=regimes[60]), wanted)
    nxt, decision = step.decide(new, bar_state(61, prices[61], regime=regimes[61]), targets[61])
    assert np.all(np.isfinite(decision.agent_rewards))
    assert MetaAgentStep.load(MetaAgentStep.dump(nxt)).to_bytes() == nxt.to_bytes()


def test_rewards_the_learners_cannot_hold_are_a_data_error_and_keep_the_state() -> None:
    """Bandit feedback credits the played agent with reward / probability: a stored state whose arm
    was drawn with probability 1e-310 (in (0, 1], so the state loads) overflows Hedge's log-weights.
    The BanditError (a bug to the stage runner, failing the symbol's every record) is the bar's
    DataError, naming it. (Full information cannot overflow any more: a learning rate that could,
    like the 1e308 this test used before, is refused by the configuration, tested below.)"""
    step = MetaAgentStep(MetaAgentConfig.create(policy="hedge", feedback="bandit", context="global"))
    state = None
    for i in range(5):
        state, _ = step.decide(state, bar_state(i, 100.0 * 1.0001**i), np.full(4, 0.5))
    state = MetaAgentState.from_dict(state.to_dict() | {"arm_probability": 1e-310})
    before = state.to_bytes()
    bar = bar_state(5, state.last_price * 1.01)
    with pytest.raises(DataError, match=re.escape(f"SPX@{bar.timestamp.isoformat()}: the learners cannot take "
                                                  f"the rewards")) as info:
        step.decide(state, bar, np.full(4, 0.5))
    assert "/ probability 1e-310 makes the weights non-finite" in str(info.value)
    assert state.to_bytes() == before
    state.arm_probability = 0.25  # the same bar with a probability floats can hold is learnt
    new, decision = step.decide(state, bar, np.full(4, 0.5))
    assert new.learners[GLOBAL].t_ == state.learners[GLOBAL].t_ + 1 and np.all(np.isfinite(decision.agent_rewards))


@pytest.mark.parametrize(("policy", "params", "named"), [
    ("hedge", {"eta": 1e308}, "eta must be > 0 and at most 10000"),
    ("hedge", {"eta": MAX_ETA * 1.5}, "eta must be > 0 and at most 10000"),
    ("hedge", {"eta": "0.1"}, "eta must be > 0"),
    ("swucb", {"window": 10**9}, "window must be an integer in \\[1, 100,000\\]"),
])
def test_a_hedge_learning_rate_beyond_the_bound_or_a_huge_window_is_a_config_error(
        policy: str, params: dict, named: str) -> None:
    """The learner's refusal (a BanditError naming the parameter) is the configuration's, naming
    policy_params: not an overflow at a symbol's bars, nor a window allocated in gigabytes. Every
    parameter of every policy: tests/unit/test_bandits_hyperparameters.py."""
    with pytest.raises(InvalidMessageError, match=f"policy_params=.*: {policy}: {named}"):
        MetaAgentConfig.create(policy=policy, policy_params=params)


def test_the_largest_hedge_learning_rate_is_a_valid_configuration() -> None:
    config = MetaAgentConfig.create(policy="hedge", policy_params={"eta": MAX_ETA, "discount": 1.0})
    assert config.canonical_policy_params()["eta"] == MAX_ETA


POLICIES = ["hedge", "ucb", "thompson", "exp3", "glrucb", "betats"]


@pytest.mark.parametrize("options", [{"policy": p} for p in POLICIES]
                         + [{"risk_adjustment": "none"}, {"risk_adjustment": "vol"},
                            {"vol_target": "ensemble"}, {"policy": "exp3", "feedback": "bandit", "mode": "select"}])
def test_extreme_inputs_are_refused_or_leave_a_state_that_round_trips(options: dict) -> None:
    """Random glitches in prices, targets and ewma_vol, on fresh and warmed states: every bar is
    either refused with a DataError, the state given unchanged, or gives a valid intent and a state
    that dump/load gives back (an untyped error, or a state load refuses, fails the symbol)."""
    step = MetaAgentStep(MetaAgentConfig.create(**options))
    rng = np.random.default_rng(7)
    prices, regimes, targets = path(120, seed=1)
    refused = accepted = 0
    for trial in range(6):
        state = None
        start = int(rng.choice([0, 40]))
        if start:
            state, _ = run(step, prices[:start], regimes, targets)
        for i in range(start, start + 25):
            kind = rng.choice(["price", "target", "vol", "warmup", "normal", "normal"])
            close = float(prices[i] * 10.0 ** rng.choice([-200, -60, -3.2, 2.9, 3.1, 60, 200])) \
                if kind == "price" else float(prices[i])
            wanted = targets[i].copy()
            if kind == "target":
                wanted[int(rng.integers(4))] = float(rng.choice([-1, 1]) * 10.0 ** rng.choice([1, 2, 3, 100]))
            vol = float(10.0 ** rng.choice([-300, 1, 3, 160])) if kind == "vol" else 0.01
            bar = bar_state(i + trial * 1000, close, regime=regimes[i], ready=kind != "warmup", ewma_vol=vol)
            before = None if state is None else state.to_bytes()
            try:
                new, decision = step.decide(state, bar, wanted)
            except DataError:
                refused += 1
                assert (None if state is None else state.to_bytes()) == before
                continue
            accepted += 1
            OrderIntent.parse(decision.intent.model_dump_json().encode())
            assert MetaAgentStep.load(MetaAgentStep.dump(new)).to_bytes() == new.to_bytes()
            state = new
    assert refused > 0 and accepted > 0


# ---- the stage runner: the bad print is dead-lettered, the symbol goes on ------------------------


@pytest.fixture(scope="module")
def ready_pipeline():
    series = generate("realistic", 230, seed=2).series
    return run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model()))


def test_the_runner_dead_letters_the_bad_print_and_goes_on_with_the_symbol(ready_pipeline, world) -> None:  # noqa: F811
    states = ready_pipeline.market_states
    glitch = with_close(states[200], 1e-99)
    c = Container(world["queue"], world["store"], world["snapshots"], world["bus"])
    assert c.send(states[:200]) == {"batchItemFailures": []}
    assert c.send([glitch, *states[201:215]], 200) == {"batchItemFailures": []}
    assert len(c.dlq.reasons) == 1 and "close 1e-99 is" in c.dlq.reasons[0]
    sent = [OrderIntent.parse(body) for _, _, body in world["queue"].queues[QUEUE]]
    assert [i.timestamp for i in sent] == [s.timestamp for s in states[:200] + states[201:215]]
    # the same intents as a run that never saw the bad print
    step, state = MetaAgentStep(MetaAgentConfig.create(), RuleAgents()), None
    reference = []
    for s in states[:200] + states[201:215]:
        state, outputs, _ = step.apply(state, s)
        reference.extend(outputs)
    assert [(i.intent_id, i.target_position) for i in sent] == [(i.intent_id, i.target_position) for i in reference]
    # a cold container reads the snapshot and continues
    cold = Container(world["queue"], world["store"], world["snapshots"], world["bus"], cache=MemoryCache())
    assert cold.send(states[215:225], 215) == {"batchItemFailures": []} and cold.dlq.reasons == []
    (item,) = world["snapshots"].items("bandit-state")
    assert MetaAgentState.from_bytes(item["state"]).version == 224


# ---- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("cost_bps", 1e300), ("cost_bps", 10_001.0), ("vol_floor", 1e200), ("vol_floor", 1e-320),
    ("agent_vol_floor", 1e308), ("agent_vol_floor", 1e-320), ("vol_target_max_scale", 1e308),
])
def test_options_that_would_fail_every_bar_are_refused_by_name(option: str, value: float) -> None:
    with pytest.raises(InvalidMessageError, match=re.escape(f"{option}={value!r}: Input should be")):
        MetaAgentConfig.create(**{option: value})


@pytest.mark.parametrize(("policy", "params", "named"), [
    ("hedge", {"eta": True}, "eta"),
    ("swucb", {"alpha": 1.0, "window": True}, "window"),
    ("ucb", {"alpha": np.bool_(True)}, "alpha"),
    ("exp3", {"reward_range": [True, 4.0]}, "reward_range"),
])
def test_bools_are_refused_in_policy_params(policy: str, params: dict, named: str) -> None:
    """JSON's true is Python's True, an int: eta=true was accepted as η = 1, window=true as 1."""
    with pytest.raises(InvalidMessageError, match=f"policy_params=.*: {named} must be a number, not true/false"):
        MetaAgentConfig.create(policy=policy, policy_params=params)


def test_more_posterior_draws_than_the_bound_are_refused() -> None:
    with pytest.raises(InvalidMessageError, match=f"n_weight_samples must be at most {MAX_WEIGHT_SAMPLES:,}"):
        MetaAgentConfig.create(policy="thompson", policy_params={"n_weight_samples": 10**30})
    with pytest.raises(BanditError, match="n_weight_samples must be at most"):
        GaussianThompson(4, n_weight_samples=MAX_WEIGHT_SAMPLES + 1)
    assert GaussianThompson(4, n_weight_samples=MAX_WEIGHT_SAMPLES).n_weight_samples == MAX_WEIGHT_SAMPLES


@pytest.mark.parametrize("options", [
    {"cost_bps": 10_000.0}, {"vol_floor": 1e-12, "risk_adjustment": "vol"}, {"vol_floor": 1.0},
    {"agent_vol_floor": 1e-6}, {"agent_vol_floor": 100.0},
    {"vol_target_max_scale": 100.0, "vol_target_power": 0.01},
])
def test_options_at_their_bounds_run_and_their_states_round_trip(options: dict) -> None:
    """The bounds leave usable values: a flat bar with a trade (a cost over the smallest floor),
    the largest move, back again, and a run of ordinary bars."""
    step = MetaAgentStep(MetaAgentConfig.create(**options))
    state = None
    closes = [100.0, 100.0, 100.0 * MAX_PRICE_MOVE, 100.0, *(100.0 * 1.01 ** np.arange(20))]
    for i, close in enumerate(closes):
        wanted = np.array([MAX_AGENT_TARGET, -MAX_AGENT_TARGET, 1.0, -1.0]) * (-1) ** i
        state, decision = step.decide(state, bar_state(i, close), wanted)
        assert abs(decision.intent.target_position) <= 2.0
        assert MetaAgentStep.load(MetaAgentStep.dump(state)).to_bytes() == state.to_bytes()


# ---- the fingerprint -----------------------------------------------------------------------------


def plain_hash_text(config: MetaAgentConfig) -> str:
    """The settings as the hash took them before it was made canonical (policy_params as written)."""
    settings = config.model_dump(mode="json") | {"policy_params": to_jsonable_python(config.hyperparameters)}
    return json.dumps(settings, sort_keys=True)


@pytest.mark.parametrize(("policy", "spellings"), [
    ("hedge", [None, {"eta": 0.1, "discount": 1.0}, {"eta": 0.1, "discount": 1}, {"eta": 0.1}, {"discount": 1},
               {}]),
    ("thompson", [None, {}, {"n_weight_samples": 256}, {"mu0": 0, "kappa0": 1}]),
    ("exp3", [None, {"gamma": 0.05, "reward_range": [-4, 4], "discount": 0.995},
              {"gamma": 0.05, "reward_range": (-4.0, 4.0), "discount": 0.995}]),
    ("swucb", [None, {"alpha": 1, "window": 250}, {"window": 250}]),
])
def test_equal_settings_written_differently_have_one_fingerprint(policy: str, spellings: list) -> None:
    """The hash took the JSON text of policy_params: 1 and 1.0, or a parameter at its default
    left out, were other model versions (every symbol's learners restarted, new intent ids)."""
    prints = {MetaAgentConfig.create(policy=policy, policy_params=p).fingerprint() for p in spellings}
    assert len(prints) == 1
    other = MetaAgentConfig.create(policy=policy, policy_params={"n_weight_samples": 512} if policy == "thompson"
                                   else {"reward_range": [-3.0, 3.0]} if policy == "exp3"
                                   else {"alpha": 0.5} if policy == "swucb" else {"eta": 0.2})
    assert other.fingerprint() not in prints


@pytest.mark.parametrize("options", [
    {}, {"policy": "thompson"}, {"policy": "glrts"}, {"policy": "betats", "context": "global"},
    {"policy": "hedge", "policy_params": {"eta": 0.03, "discount": 1.0}, "context": "global"},
    {"policy": "exp3", "policy_params": {"gamma": 0.1, "reward_range": [-4.0, 4.0], "discount": 0.995}},
    {"policy": "dts", "policy_params": {"gamma": 0.95}, "mode": "select"},
])
def test_a_configuration_in_the_canonical_spelling_keeps_its_fingerprint(options: dict) -> None:
    """Making the hash canonical moved no hash of a configuration written the way the learners hold
    it (the default's model version, and so its intent ids, are what they were)."""
    config = MetaAgentConfig.create(**options)
    assert config.fingerprint() == hashlib.sha256(plain_hash_text(config).encode()).hexdigest()[:8]


def test_the_default_configuration_keeps_its_model_version() -> None:
    """Pinned: the default configuration's intents ids depend on it (a change is a new model version,
    which restarts every symbol's learners — make it on purpose, and say so in docs/meta-agent.md)."""
    assert MetaAgentConfig.create().fingerprint() == "4899c2f5"


# ---- explanation ---------------------------------------------------------------------------------


def test_probability_select_quotes_the_held_agents_share_of_the_mix() -> None:
    """The held weight is one-hot (always 1.00); the number worth quoting is the leader's weight in
    the regime learners' mix — the weights blend mode holds on the same learners (full information:
    the learners do not depend on what was held)."""
    prices, regimes, targets = path(150, seed=4)
    options = {"context": "probability", "min_regime_rounds": 5, "vol_target": "none"}
    _, chosen = run(MetaAgentStep(MetaAgentConfig.create(mode="select", **options)), prices, regimes, targets)
    _, mixed = run(MetaAgentStep(MetaAgentConfig.create(mode="blend", **options)), prices, regimes, targets)
    quoted = []
    for select, blend in zip(chosen, mixed, strict=True):
        name = select.intent.explanation_detail["chosen"]
        found = re.search(r"mix by regime probability \((\d\.\d\d)\)", select.intent.explanation)
        assert found is not None and name in select.intent.explanation
        assert found.group(1) == f"{blend.intent.agent_weights[name]:.2f}"
        quoted.append(float(found.group(1)))
    assert min(quoted) < 0.99  # not the one-hot 1.00


@pytest.mark.parametrize("option", ["ramp_bars", "shrinkage", "vol_halflife", "min_regime_rounds", "random_state",
                                    "cost_bps", "max_position", "vol_target_power"])
@pytest.mark.parametrize("flag", [True, False])
def test_a_number_option_refuses_true_and_false(option, flag):
    """JSON's true is Python's True, an int: {"shrinkage": true} ran as equal weights, ramp_bars as 1."""
    with pytest.raises(InvalidMessageError, match=f"{option}={flag}: .*must be a number, not true/false"):
        MetaAgentConfig.create(**{option: flag})


def test_numbers_written_as_integers_still_build_the_default_version():
    assert MetaAgentConfig.create(vol_halflife=20, ramp_bars=3, cost_bps=3).fingerprint() == "4899c2f5"
