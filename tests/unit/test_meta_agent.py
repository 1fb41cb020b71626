"""Meta-agent step: no look-ahead, smoothing, ramp, ids, explanations, regret, state."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from ensemble_trader.domain import meta_agent
from ensemble_trader.domain.errors import DataError, InvalidMessageError, StateError
from ensemble_trader.domain.meta_agent import (
    GLOBAL,
    AgentSwitched,
    MetaAgentConfig,
    MetaAgentState,
    MetaAgentStep,
    RegretLedger,
)
from ensemble_trader.domain.models import (
    REGIMES,
    Bar,
    FeatureVector,
    MarketState,
    Regime,
    RegimeEstimate,
    make_intent_id,
)

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def market(i: int, price: float, regime: Regime = Regime.BULL, warmup: int = 0, conf: float = 0.7,
           symbol: str = "SPX") -> MarketState:
    ts = T0 + timedelta(days=i)
    bar = Bar(symbol=symbol, timestamp=ts, open=price, high=price, low=price, close=price, volume=1.0)
    rest = (1.0 - conf) / 3.0
    probs = tuple(conf if r is regime else rest for r in REGIMES)
    return MarketState(
        features=FeatureVector(bar=bar, values={"ret_1": 0.0}, warmup_remaining=warmup),
        regime=RegimeEstimate(
            symbol=symbol,
            timestamp=ts,
            probabilities=probs,
            regime=regime,
            confidence=conf,
            bars_in_regime=1,
            model_version="test",
        ),
    )


def path(n: int, seed: int = 0) -> tuple[np.ndarray, list[Regime], np.ndarray]:
    """Prices, regimes and agent targets of a synthetic run (agent 0 follows the trend)."""
    rng = np.random.default_rng(seed)
    drift = np.where(np.arange(n) < n // 2, 0.002, -0.002)
    returns = drift + 0.01 * rng.standard_normal(n)
    prices = 100.0 * np.cumprod(1.0 + returns)
    regimes = [Regime.BULL if d > 0 else Regime.BEAR for d in drift]
    targets = np.column_stack(
        [np.sign(drift), np.full(n, 1.5), rng.uniform(-1, 1, n), -np.sign(drift)]
    )
    return prices, regimes, targets


def run(step: MetaAgentStep, prices, regimes, targets, warmup: int = 0):
    state, decisions = None, []
    for i, p in enumerate(prices):
        state, decision = step.decide(state, market(i, p, regimes[i], warmup=max(warmup - i, 0)), targets[i])
        decisions.append(decision)
    return state, decisions


@pytest.mark.parametrize("policy", ["hedge", "ucb", "thompson", "exp3", "dts", "betats"])
@pytest.mark.parametrize("context", ["regime", "probability"])
def test_no_look_ahead_changing_the_future_does_not_change_past_intents(policy: str, context: str) -> None:
    prices, regimes, targets = path(120)
    step = MetaAgentStep(MetaAgentConfig.create(policy=policy, context=context, min_regime_rounds=5))
    _, base = run(step, prices, regimes, targets)
    k = 70
    future_prices = prices.copy()
    future_prices[k + 1 :] *= 1.3
    future_targets = targets.copy()
    future_targets[k + 1 :] = -future_targets[k + 1 :]
    future_regimes = regimes[: k + 1] + [Regime.VOLATILE] * (len(regimes) - k - 1)
    _, other = run(step, future_prices, future_regimes, future_targets)
    for a, b in zip(base[: k + 1], other[: k + 1], strict=True):
        assert a.intent == b.intent
    assert any(a.intent != b.intent for a, b in zip(base[k + 1 :], other[k + 1 :], strict=True))


def test_position_change_per_bar_is_bounded() -> None:
    prices, regimes, targets = path(150, seed=3)
    targets = np.where(np.arange(150)[:, None] % 2 == 0, 2.0, -2.0) * np.ones((1, 4))
    step = MetaAgentStep(MetaAgentConfig.create(max_position_change=0.3, ramp_bars=1))
    _, decisions = run(step, prices, regimes, targets)
    positions = np.array([0.0] + [d.intent.target_position for d in decisions])
    assert np.max(np.abs(np.diff(positions))) <= 0.3 + 1e-12
    assert any(d.intent.explanation_detail["capped"] for d in decisions)
    for d in decisions:  # capped: the bound held the move back, and only then
        detail, moved = d.intent.explanation_detail, abs(d.intent.target_position - d.intent.explanation_detail[
            "previous"]["position"])
        assert detail["capped"] == (abs(detail["desired_position"] - detail["previous"]["position"]) > 0.3 + 1e-9)
        assert detail["capped"] == ("per-bar or position cap" in d.intent.explanation)
        if detail["capped"]:
            assert moved == pytest.approx(0.3)


def test_no_trade_band_holds_small_moves_and_trades_to_the_edge_of_large_ones() -> None:
    """Every agent wants the same target, so the desired position is that target: moves of
    less than the band are not made; a larger one stops at the band's near edge."""
    n = 40
    prices = 100.0 * np.cumprod(np.full(n, 1.0005))
    wanted = np.where(np.arange(n) < 20, 0.5 + 0.05 * np.sin(np.arange(n)), -0.5)
    targets = np.repeat(wanted[:, None], 4, axis=1)
    config = dict(context="global", vol_target="none", ramp_bars=1, max_position_change=2.0)
    _, free = run(MetaAgentStep(MetaAgentConfig.create(**config)), prices, [Regime.BULL] * n, targets)
    _, banded = run(MetaAgentStep(MetaAgentConfig.create(**config, no_trade_band=0.2)),
                    prices, [Regime.BULL] * n, targets)
    desired = np.array([d.intent.target_position for d in free])
    held = np.array([d.intent.target_position for d in banded])
    assert np.allclose(desired, wanted)
    assert held[0] == pytest.approx(0.5 - 0.2)  # from flat to 0.5: stops 0.2 short
    expected, position = [], 0.0
    for w in wanted:  # the band's rule, bar by bar
        position = float(np.clip(position, w - 0.2, w + 0.2))
        expected.append(position)
    np.testing.assert_allclose(held, expected, atol=1e-12)
    assert held[20] == pytest.approx(-0.5 + 0.2)  # the reversal stops at the near edge
    assert np.count_nonzero(np.diff(held[:20])) < np.count_nonzero(np.diff(desired[:20])) / 2
    held_back = banded[5].intent.explanation_detail  # the band held the position: no bound bound it
    assert held_back["banded"] and not held_back["capped"] and not held_back["ramping"]
    assert "(no-trade band)" in banded[5].intent.explanation


def test_switch_ramps_to_the_new_leader_over_ramp_bars() -> None:
    names = ("a", "b")
    cfg = MetaAgentConfig.create(
        policy="ucb", mode="select", context="global", ramp_bars=4, max_position_change=2.0,
        risk_adjustment="none", cost_bps=0.0, vol_target="none",
    )
    step = MetaAgentStep(cfg, agent_names=names)
    # agent a is long, agent b short; prices rise then fall hard so the leader flips to b
    prices = np.concatenate([100 * 1.01 ** np.arange(30), 100 * 1.01**29 * 0.97 ** np.arange(1, 31)])
    targets = np.tile([1.0, -1.0], (60, 1))
    state, decisions = run(step, prices, [Regime.BULL] * 60, targets)
    switches = [i for i, d in enumerate(decisions) if d.events]
    assert switches, "the leader never changed"
    i = switches[-1]
    event = decisions[i].events[0]
    assert isinstance(event, AgentSwitched) and event.to_agent == decisions[i].intent.explanation_detail["chosen"]
    before = decisions[i - 1].intent.target_position
    desired = decisions[i].intent.explanation_detail["desired_position"]
    ramp = [d.intent.target_position for d in decisions[i : i + 4]]
    expected, pos = [], before
    for left in (4, 3, 2, 1):
        pos = pos + (desired - pos) / left
        expected.append(pos)
    assert all(not d.events for d in decisions[i + 1 : i + 4])
    np.testing.assert_allclose(ramp, expected)
    assert ramp[-1] == pytest.approx(desired)
    assert len({round(x, 9) for x in ramp}) == 4  # four distinct steps, not a jump
    assert "switched from" in decisions[i].intent.explanation
    # a ramp holds the position back without any bound binding (capped was true on every ramp bar)
    for k, d in enumerate(decisions[i : i + 4]):
        detail = d.intent.explanation_detail
        assert detail["ramping"] == (k < 3) and not detail["capped"] and not detail["banded"]
        assert ("(ramp, " in d.intent.explanation) == (k < 3)


def test_intent_ids_are_deterministic_and_follow_make_intent_id() -> None:
    prices, regimes, targets = path(30)
    step = MetaAgentStep(MetaAgentConfig.create(strategy_id="ens-1"), agent_version="v7")
    _, first = run(step, prices, regimes, targets)
    _, second = run(MetaAgentStep(MetaAgentConfig.create(strategy_id="ens-1"), agent_version="v7"), prices, regimes, targets)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        assert a.intent.intent_id == b.intent.intent_id
        assert a.intent.intent_id == make_intent_id("ens-1", "SPX", T0 + timedelta(days=i), step.model_version)
    assert step.model_version.startswith("v7+meta-")
    other = MetaAgentStep(MetaAgentConfig.create(strategy_id="ens-1", policy="ucb"), agent_version="v7")
    assert other.model_version != step.model_version


def test_explanations_are_present_and_structured() -> None:
    prices, regimes, targets = path(60)
    for policy, key in (("ucb", "bonus"), ("thompson", "sample"), ("betats", "sample"), ("hedge", "estimate")):
        _, decisions = run(MetaAgentStep(MetaAgentConfig.create(policy=policy)), prices, regimes, targets)
        intent = decisions[-1].intent
        assert intent.explanation.startswith("BEAR (")
        detail = intent.explanation_detail
        for field in ("regime", "confidence", "agents", "chosen", "why", "previous", "regret", "position"):
            assert field in detail
        assert set(detail["agents"]) == {"conservative", "aggressive", "balanced", "contrarian"}
        assert all(key in a and "weight" in a and "target" in a for a in detail["agents"].values())
        assert abs(sum(intent.agent_weights.values()) - 1.0) < 1e-9
        json.dumps(detail)  # serialisable as is


def test_warm_up_keeps_flat_and_does_not_learn() -> None:
    prices, regimes, targets = path(40)
    state, decisions = run(MetaAgentStep(), prices, regimes, targets, warmup=10)
    assert all(d.intent.target_position == 0.0 for d in decisions[:10])
    assert "warming up" in decisions[0].intent.explanation
    assert decisions[10].agent_rewards is None  # positions before bar 10 were all flat
    assert decisions[11].agent_rewards is not None
    assert sum(state.regret.bars.values()) == 40 - 11
    assert decisions[0].intent.explanation.endswith("staying flat; target +0.00 (was +0.00)")


def test_a_warm_up_mid_stream_goes_flat_held_back_by_the_per_bar_bound_only() -> None:
    """The features restarted (a state upgrade sends 173 warm-up vectors) while the position is
    +1.3 and a ramp is under way: no ramp and no no-trade band on a warm-up bar — flat is the
    aim — only the per-bar bound holds the position back, and the explanation says so with the
    real target, not "target 0"."""
    prices, regimes, targets = path(40)
    step = MetaAgentStep(MetaAgentConfig.create(no_trade_band=0.3, max_position_change=0.5, ramp_bars=4,
                                                vol_target="none"))
    state, _ = run(step, prices[:30], regimes, targets)
    state = dataclasses.replace(state, position=1.3, ramp_left=3)  # part way through a ramp
    bars = state.regret.bars.copy()
    positions, lines, decisions = [], [], []
    for i in range(30, 34):
        state, decision = step.decide(state, market(i, prices[i], regimes[i], warmup=50 - i), targets[i])
        positions.append(decision.intent.target_position)
        lines.append(decision.intent.explanation)
        decisions.append(decision)
        detail = decision.intent.explanation_detail
        assert detail["desired_position"] == 0.0 and state.ramp_left == 0
        assert not detail["ramping"] and not detail["banded"]
        assert "warming up" in detail["why"] and "staying flat" not in detail["why"]
    np.testing.assert_allclose(positions, [0.8, 0.3, 0.0, 0.0], atol=1e-12)  # 0.5 a bar, then held at 0
    assert [d.intent.explanation_detail["capped"] for d in decisions] == [True, True, False, False]
    assert lines[0].endswith("features warming up (20 bars left), going flat (per-bar or position cap); "
                             "target +0.80 (was +1.30)")
    assert lines[2].endswith("going flat; target +0.00 (was +0.30)")  # the band would have held +0.30
    assert lines[3].endswith("staying flat; target +0.00 (was +0.00)")
    assert all("target 0" not in line for line in lines)
    # learnt only from the bar held before the warm-up began, nothing from the warm-up's own bars
    assert decisions[0].agent_rewards is not None
    assert all(d.agent_rewards is None for d in decisions[1:])
    assert sum(state.regret.bars.values()) == sum(bars.values()) + 1


def test_redelivery_is_a_no_op_and_the_step_is_pure() -> None:
    prices, regimes, targets = path(50)
    step = MetaAgentStep(MetaAgentConfig.create(policy="thompson"))
    state, _ = run(step, prices[:30], regimes, targets)
    snapshot = state.to_dict()
    again, decision = step.decide(state, market(29, prices[29], regimes[29]), targets[29])
    assert decision.intent is None and again is state
    new, decision = step.decide(state, market(30, prices[30], regimes[30]), targets[30])
    assert decision.intent is not None and new.version == state.version + 1
    assert state.to_dict() == snapshot  # the input state was not modified


@pytest.mark.parametrize("policy", ["dts", "betats"])
def test_state_round_trip_gives_identical_next_intents(policy: str) -> None:
    prices, regimes, targets = path(80)
    step = MetaAgentStep(MetaAgentConfig.create(policy=policy, context="probability"))
    state, _ = run(step, prices[:40], regimes, targets)
    restored = MetaAgentState.from_bytes(state.to_bytes())
    for i in range(40, 80):
        state, a = step.decide(state, market(i, prices[i], regimes[i]), targets[i])
        restored, b = step.decide(restored, market(i, prices[i], regimes[i]), targets[i])
        assert a.intent == b.intent
    with pytest.raises(StateError):
        MetaAgentState.from_bytes(b"{not json")
    with pytest.raises(StateError):
        MetaAgentState.from_bytes(json.dumps({"format": 1, "symbol": "SPX"}).encode())


def test_regret_ledger_hand_made_case() -> None:
    ledger = RegretLedger(2)
    ledger.add("BULL", np.array([1.0, 0.0]), 0.5)
    ledger.add("BEAR", np.array([0.0, 2.0]), 2.0)
    ledger.add("BULL", np.array([1.0, 0.0]), 0.0)
    assert ledger.regret("BULL") == pytest.approx(1.5)
    assert ledger.regret("BEAR") == pytest.approx(0.0)
    assert ledger.overall() == pytest.approx(2.0 - 2.5)  # beat every single agent
    summary = ledger.summary(("a", "b"))
    assert summary["vs_regime_oracle"] == pytest.approx(1.5)
    assert summary["by_regime"]["BULL"]["best_agent"] == "a"
    assert list(summary["by_regime"]) == ["BULL", "BEAR"]


def test_regret_of_the_step_on_a_hand_made_path() -> None:
    """Two agents, long 1 and short 1, prices +1 % per bar, raw rewards, no costs.

    Bar 0: Hedge is cold, weights (0.5, 0.5). Bar 1: rewards (+0.01, -0.01); the meta-agent
    earned 0.5 * 0.01 - 0.5 * 0.01 = 0, so regret = 0.01 in BULL and overall.
    """
    cfg = MetaAgentConfig.create(policy="hedge", context="global", risk_adjustment="none", cost_bps=0.0)
    step = MetaAgentStep(cfg, agent_names=("long", "short"))
    state, d0 = step.decide(None, market(0, 100.0), [1.0, -1.0])
    assert d0.intent.agent_weights == {"long": 0.5, "short": 0.5}
    state, d1 = step.decide(state, market(1, 101.0), [1.0, -1.0])
    np.testing.assert_allclose(d1.agent_rewards, [0.01, -0.01])
    assert d1.meta_reward == pytest.approx(0.0)
    assert state.regret.regret("BULL") == pytest.approx(0.01)
    assert d1.intent.explanation_detail["regret"]["overall"] == pytest.approx(0.01)


def test_costs_are_charged_for_the_trade_made_at_the_previous_bar() -> None:
    cfg = MetaAgentConfig.create(context="global", risk_adjustment="none", cost_bps=10.0)
    step = MetaAgentStep(cfg, agent_names=("a", "b"))
    state, _ = step.decide(None, market(0, 100.0), [1.0, 0.0])
    state, d = step.decide(state, market(1, 100.0), [1.0, 0.0])
    np.testing.assert_allclose(d.agent_rewards, [-0.001, 0.0])  # a bought 1 unit at 10 bp
    state, d = step.decide(state, market(2, 100.0), [1.0, 0.0])
    np.testing.assert_allclose(d.agent_rewards, [0.0, 0.0])  # no trade, no cost


def test_full_information_learns_from_agents_that_were_not_played() -> None:
    prices, regimes, targets = path(200, seed=2)
    regimes = [Regime.BULL] * 200
    prices = 100 * 1.002 ** np.arange(200) * (1 + 0.001 * np.sin(np.arange(200)))
    targets = np.tile([1.0, 0.0, 0.2, -1.0], (200, 1))
    cfg = MetaAgentConfig.create(policy="hedge", context="global", risk_adjustment="vol")
    state, decisions = run(MetaAgentStep(cfg), prices, regimes, targets)
    assert decisions[-1].intent.agent_weights["conservative"] > 0.9


def test_bad_input_raises_typed_errors() -> None:
    step = MetaAgentStep()
    with pytest.raises(DataError, match="expected 4 agent targets"):
        step.decide(None, market(0, 100.0), [1.0, 2.0])
    with pytest.raises(DataError, match="aggressive"):
        step.decide(None, market(0, 100.0), [0.0, float("nan"), 0.0, 0.0])
    with pytest.raises(InvalidMessageError, match="policy"):
        MetaAgentConfig.create(policy="greedy")
    with pytest.raises(InvalidMessageError, match="ramp_bars"):
        MetaAgentConfig.create(ramp_bars=0)
    state, _ = step.decide(None, market(0, 100.0), [0.0] * 4)
    other = market(1, 100.0).model_copy()
    with pytest.raises(DataError, match="without agents"):
        step(state, other)


def test_agent_vol_rewards_are_per_unit_of_each_agents_own_risk() -> None:
    """Agent b holds a tenth of a's position: per unit of market risk it earns a tenth, per unit
    of its own risk exactly as much."""
    cfg = MetaAgentConfig.create(context="global", cost_bps=0.0, risk_adjustment="agent_vol")
    step = MetaAgentStep(cfg, agent_names=("a", "b"))
    state, _ = step.decide(None, market(0, 100.0), [1.0, 0.1])
    state, d1 = step.decide(state, market(1, 101.0), [1.0, 0.1])
    assert d1.agent_rewards is None  # no volatility known at the previous bar: nothing learnt
    assert state.variance == pytest.approx(1e-4) and state.agent_variance is None
    state, d2 = step.decide(state, market(2, 101.0 * 1.01), [1.0, 0.1])
    # no agent vol yet: each position's risk at the market's volatility, (1 %)² and (0.1 %)²
    np.testing.assert_allclose(d2.agent_rewards, [1.0, 1.0])
    np.testing.assert_allclose(state.agent_variance, [1e-4, 1e-6])
    state, d3 = step.decide(state, market(3, 101.0 * 1.01**2), [1.0, 0.1])
    np.testing.assert_allclose(d3.agent_rewards, [1.0, 1.0])
    restored = MetaAgentState.from_bytes(state.to_bytes())
    np.testing.assert_array_equal(restored.agent_variance, state.agent_variance)


def _with_vol(m: MarketState, vol: float = 0.01) -> MarketState:
    features = m.features.model_copy(update={"values": {**m.features.values, "ewma_vol": vol}})
    return m.model_copy(update={"features": features})


def _quiet_then_three_sigma(step: MetaAgentStep, state: MetaAgentState | None, i: int, positions) -> np.ndarray:
    """From a state whose agents' volatilities are not known yet: a flat bar (the agents' first
    learned bar), then a 3 % move at a market volatility of 1 %; the second bar's rewards."""
    price = 100.0 if state is None or state.last_price is None else state.last_price
    state, _ = step.decide(state, _with_vol(market(i, price)), positions)
    state, first = step.decide(state, _with_vol(market(i + 1, price * 1.00001)), positions)
    assert first.agent_rewards is not None
    _, second = step.decide(state, _with_vol(market(i + 2, price * 1.00001 * 1.03)), positions)
    return second.agent_rewards


def test_a_quiet_first_learned_bar_does_not_blow_up_the_next_rewards() -> None:
    """The agents' volatilities start from each position's risk at the market's volatility, not
    from one squared net return: after a flat first bar a 3-sigma move is worth about 3 units of
    each agent's risk (it was 300: the 0.1 × market-vol floor), on a fresh state, after a
    restart, and from a state saved before the agents' volatilities were kept."""
    cfg = MetaAgentConfig.create(context="global", cost_bps=0.0, risk_adjustment="agent_vol", vol_target="none")
    step = MetaAgentStep(cfg, agent_names=("a", "b", "c"))
    positions = np.array([1.0, -0.5, 2.0])
    fresh = _quiet_then_three_sigma(step, None, 0, positions)
    assert np.all(np.abs(fresh) <= 1.2 * 3.0), fresh
    np.testing.assert_allclose(np.sign(fresh), np.sign(positions))
    # a restart (another model version) forgets the agents' volatilities with their learners
    prices, _, _ = path(40, seed=1)
    state = None
    for i, p in enumerate(prices):
        state, _ = step.decide(state, _with_vol(market(i, p)), positions)
    restarted = MetaAgentStep(cfg, agent_names=("a", "b", "c"), agent_version="v2")
    again = _quiet_then_three_sigma(restarted, state, 40, positions)
    assert np.all(np.abs(again) <= 1.2 * 3.0), again
    # a state stored without the agents' volatilities (older snapshots) loads and is seeded too
    data = state.to_dict()
    del data["agent_variance"]
    old = MetaAgentState.from_dict(data)
    assert old.agent_variance is None
    resumed = _quiet_then_three_sigma(step, old, 40, positions)
    assert np.all(np.abs(resumed) <= 1.2 * 3.0), resumed


def test_the_first_reward_never_reads_the_return_it_rewards() -> None:
    """A state that starts on a ready bar (a new symbol, a lost snapshot) knows no volatility at
    its first bar: the next bar's reward must not be scaled by that bar's own return."""
    cfg = MetaAgentConfig.create(context="global", cost_bps=0.0, risk_adjustment="vol")
    step = MetaAgentStep(cfg, agent_names=("a", "b"))
    outcomes = []
    for move in (1.02, 1.0001):
        state, _ = step.decide(None, market(0, 100.0), [1.0, -1.0])
        state, d1 = step.decide(state, market(1, 100.0 * move), [1.0, -1.0])
        state, d2 = step.decide(state, market(2, 100.0 * move * 1.01), [1.0, -1.0])
        assert d1.agent_rewards is None
        outcomes.append(d2.agent_rewards)
    # bar 2's reward is 1 % over the volatility known at bar 1 (that bar's move), not over 1 %
    np.testing.assert_allclose(outcomes[0], [0.01 / 0.02, -0.01 / 0.02])
    np.testing.assert_allclose(outcomes[1], [0.01 / 1e-4, -0.01 / 1e-4])


def test_a_state_starting_on_a_ready_bar_takes_its_first_volatility_from_the_features() -> None:
    """The features' EWMA volatility (60+ bars) seeds the estimate, so a flat first bar no longer
    makes the next rewards a hundred times their size (a gap in Hedge's weights never closed)."""
    cfg = MetaAgentConfig.create(context="global", cost_bps=0.0, risk_adjustment="vol")
    step = MetaAgentStep(cfg, agent_names=("a", "b"))

    def with_vol(m: MarketState) -> MarketState:
        features = m.features.model_copy(update={"values": {**m.features.values, "ewma_vol": 0.01}})
        return m.model_copy(update={"features": features})

    state, _ = step.decide(None, with_vol(market(0, 100.0)), [1.0, -1.0])
    assert state.variance == pytest.approx(1e-4)
    state, d1 = step.decide(state, with_vol(market(1, 100.0)), [1.0, -1.0])  # a flat first bar
    np.testing.assert_allclose(d1.agent_rewards, [0.0, 0.0])  # learnt from at once: the scale is known
    state, d2 = step.decide(state, with_vol(market(2, 101.0)), [1.0, -1.0])
    assert np.all(np.abs(d2.agent_rewards) < 2.0)  # a 1 % move at a ~1 % volatility, not 100
    # a state that starts before the features are ready keeps warming up on its own returns
    state, _ = step.decide(None, with_vol(market(0, 100.0, warmup=5)), [1.0, -1.0])
    assert state.variance is None


def test_risk_blend_keeps_a_flat_agent_and_bounds_a_new_one() -> None:
    """An agent with no return volatility yet (flat so far) still pulls the blend toward flat by
    its weight — no jump between a tiny and a zero volatility — and one that has only just
    entered a position is normalised by the floored volatility."""
    cfg = MetaAgentConfig.create(blend_by="risk")
    step = MetaAgentStep(cfg, agent_names=("a", "b"))
    w, targets = np.array([0.4, 0.6]), np.array([0.0, 1.0])
    market_var = 0.01**2
    floor = cfg.agent_vol_floor * 0.01
    at_zero = step._combine(w, targets, np.array([0.0, 0.02**2]), market_var)
    at_tiny = step._combine(w, targets, np.array([1e-18, 0.02**2]), market_var)
    assert at_zero == pytest.approx(at_tiny)
    assert at_zero == pytest.approx((0.6 * 1.0 / 0.02) * (0.4 * floor + 0.6 * 0.02))
    assert at_zero < 0.6  # the flat agent's weight pulls toward flat
    entering = step._combine(np.array([0.5, 0.5]), np.array([0.2, 0.5]), np.array([1e-14, 0.02**2]), market_var)
    # the formula gives (0.5·0.2/floor + 0.5·0.5/0.02)·(0.5·floor + 0.5·0.02) = 1.18, more than
    # either agent wants: the blend is held to the agents' range
    assert (0.5 * 0.2 / floor + 0.5 * 0.5 / 0.02) * (0.5 * floor + 0.5 * 0.02) > 1.0
    assert entering == 0.5


def test_the_risk_blend_never_leaves_the_range_of_the_weighted_agents_targets() -> None:
    cfg = MetaAgentConfig.create(blend_by="risk")
    step = MetaAgentStep(cfg, agent_names=("a", "b", "c"))
    rng = np.random.default_rng(7)
    for _ in range(2000):
        w = rng.dirichlet(np.ones(3))
        w[rng.integers(3)] *= rng.integers(2)  # sometimes an agent has no weight at all
        w /= w.sum()
        targets = rng.uniform(-2.0, 2.0, 3)
        variance = rng.choice([0.0, 1e-10, 1e-4, 4e-4], 3)
        blend = step._combine(w, targets, variance, 0.01**2)
        held = targets[w > 0]
        assert held.min() - 1e-12 <= blend <= held.max() + 1e-12
    # both agents want +1; the one just in (volatility at the floor) pulled the formula to +3
    assert step._combine(np.array([0.5, 0.5, 0.0]), np.array([1.0, 1.0, -1.0]),
                         np.array([0.0, 0.02**2, 0.02**2]), 0.02**2) == 1.0


def test_risk_blend_normalises_each_agent_by_its_own_volatility() -> None:
    prices, regimes, targets = path(60, seed=4)
    targets[:, 1] *= 0.1  # a timid agent
    cfg = MetaAgentConfig.create(
        blend_by="risk", risk_adjustment="agent_vol", max_position_change=2.0, ramp_bars=1,
        policy_params={"eta": 0.01, "discount": 1.0},
    )
    step = MetaAgentStep(cfg)
    state, _ = run(step, prices[:59], regimes, targets)
    new, decision = step.decide(state, market(59, prices[59], regimes[59]), targets[59])
    w = np.array(list(decision.intent.agent_weights.values()))
    sigma = np.maximum(np.sqrt(new.agent_variance), cfg.agent_vol_floor * np.sqrt(new.variance))
    expected = float((w @ (targets[59] / sigma)) * (w @ sigma))
    assert decision.intent.explanation_detail["desired_position"] == pytest.approx(expected)
    assert expected != pytest.approx(float(w @ targets[59]))


def test_a_new_model_version_restarts_the_learners_but_keeps_the_book() -> None:
    prices, regimes, targets = path(80)
    old = MetaAgentStep(MetaAgentConfig.create(policy="ucb"), agent_version="v1")
    state, _ = run(old, prices[:60], regimes, targets)
    assert state.model_version == old.model_version
    new_step = MetaAgentStep(MetaAgentConfig.create(policy="hedge"), agent_version="v2")
    again, decision = new_step.decide(state, market(59, prices[59], regimes[59]), targets[59])
    assert decision.intent is None and again is state  # a redelivery stays a no-op
    new, decision = new_step.decide(state, market(60, prices[60], regimes[60]), targets[60])
    assert new.model_version == new_step.model_version
    assert {type(b).__name__ for b in new.learners.values()} == {"Hedge"}
    assert new.regret.bars == {} and decision.agent_rewards is None  # nothing learnt from old positions
    assert decision.intent.explanation_detail["previous"]["position"] == state.position
    assert abs(decision.intent.target_position - state.position) <= new_step.config.max_position_change + 1e-12
    assert MetaAgentState.from_bytes(new.to_bytes()).model_version == new_step.model_version


def test_changed_default_hyperparameters_are_a_new_model_version_and_restart_the_learners(monkeypatch) -> None:
    """With ``policy_params`` None the learners get DEFAULT_POLICY_PARAMS: a release that changes
    those defaults changes the model version, so a stored state restarts under the new settings
    (not old learners beside new regime learners) and its bars get new intent ids."""
    prices, regimes, targets = path(80)
    config = MetaAgentConfig.create(policy="hedge")
    old = MetaAgentStep(config)
    state, _ = run(old, prices[:60], regimes, targets)
    assert {learner.eta for learner in state.learners.values()} == {0.1}
    monkeypatch.setitem(meta_agent.DEFAULT_POLICY_PARAMS, "hedge", {"eta": 0.3, "discount": 0.998})
    new_step = MetaAgentStep(config)  # the same configuration object, new defaults
    assert new_step.model_version != old.model_version
    new, decision = new_step.decide(state, market(60, prices[60], regimes[60]), targets[60])
    assert new.model_version == new_step.model_version
    assert {(learner.eta, learner.discount) for learner in new.learners.values()} == {(0.3, 0.998)}
    assert new.regret.bars == {} and decision.agent_rewards is None  # restarted: nothing learnt from old ones
    _, before = old.decide(state, market(60, prices[60], regimes[60]), targets[60])
    assert decision.intent.intent_id != before.intent.intent_id
    # explicit policy_params equal to the defaults are the same effective settings
    explicit = MetaAgentConfig.create(policy="hedge", policy_params={"eta": 0.3, "discount": 0.998})
    assert MetaAgentStep(explicit).model_version == new_step.model_version
    # and explicit policy_params are untouched by a change of the defaults
    other = MetaAgentConfig.create(policy="hedge", policy_params={"eta": 0.2, "discount": 0.99})
    kept = MetaAgentStep(other).model_version
    monkeypatch.setitem(meta_agent.DEFAULT_POLICY_PARAMS, "hedge", {"eta": 0.5, "discount": 0.9})
    assert MetaAgentStep(other).model_version == kept


def test_after_a_model_version_change_the_agents_see_the_restarted_virtual_positions() -> None:
    class Agents:
        names = ("a", "b", "c", "d")
        version = "v2"
        feature_names = ("ret_1",)
        feature_version = "1"

        def __init__(self) -> None:
            self.seen: list[np.ndarray] = []

        def act(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
            self.seen.append(np.array(positions))
            return np.full(4, 0.5)

    prices, regimes, targets = path(10)
    state, _ = run(MetaAgentStep(agent_version="v1"), prices[:5], regimes, targets)
    assert np.any(state.agent_positions != 0.0)
    agents = Agents()
    new, decision = MetaAgentStep(agents=agents)(state, market(5, prices[5], regimes[5]))
    np.testing.assert_array_equal(agents.seen[0], np.zeros(4))  # not the old agent set's positions
    np.testing.assert_allclose(new.agent_costs, 3e-4 * 0.5)  # the trade booked from those positions
    assert decision.intent is not None and new.model_version.startswith("v2+")


def test_bad_policy_params_are_refused_when_the_config_is_built() -> None:
    with pytest.raises(InvalidMessageError, match=r"policy_params=\{'eta': -1\}: hedge: eta must be > 0"):
        MetaAgentConfig.create(policy="hedge", policy_params={"eta": -1})
    with pytest.raises(InvalidMessageError, match="policy_params"):
        MetaAgentConfig.create(policy="ucb", policy_params={"window": 5})  # not a UCB1 parameter


@pytest.mark.parametrize("option", ["regime_prior_rounds", "cost_bps", "agent_vol_floor", "vol_floor",
                                    "vol_halflife", "vol_target_halflife", "vol_target_long_halflife",
                                    "max_position_change", "vol_target_max_scale"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_non_finite_option_is_refused_when_the_config_is_built(option: str, value: float) -> None:
    """ET_META_CONFIG is JSON, where 1e999 reads as infinity: refused by name, not at every bar."""
    with pytest.raises(InvalidMessageError, match=f"{option}=.*finite"):
        MetaAgentConfig.create(**{option: value})


def test_bandit_feedback_weights_the_played_arm_by_the_probability_it_was_drawn_with() -> None:
    """The regime learner drew arm 1 with probability 0.5; the global learner, which gives that
    arm probability 0, is credited with reward / 0.5 too (not reward / 0: NaN weights)."""
    prices, regimes, targets = path(40, seed=2)
    cfg = MetaAgentConfig.create(feedback="bandit", min_regime_rounds=5)
    step = MetaAgentStep(cfg)
    state, _ = run(step, prices[:30], regimes, targets)
    regime = state.last_regime
    state.learners[GLOBAL].log_weights_ = np.array([0.0, -1000.0, 0.0, 0.0])
    state.learners[regime].log_weights_ = np.zeros(4)
    state.arm, state.arm_probability = 1, 0.25
    before = state.learners[regime].log_weights_.copy()
    new, decision = step.decide(state, market(30, prices[30], regimes[30]), targets[30])
    for learner in new.learners.values():
        assert np.all(np.isfinite(learner.weights()))
    eta = cfg.hyperparameters["eta"]
    credited = new.learners[regime].log_weights_ - new.learners[regime].log_weights_.max()
    expected = before.copy()
    expected[1] += eta * decision.agent_rewards[1] / 0.25
    np.testing.assert_allclose(credited, expected - expected.max())
    assert np.isfinite(decision.intent.target_position)
    restored = MetaAgentState.from_bytes(new.to_bytes())
    assert restored.arm_probability == new.arm_probability > 0.0


def test_bandit_feedback_with_an_undrawn_held_agent_is_refused() -> None:
    with pytest.raises(InvalidMessageError, match="feedback='bandit' with context='probability'"):
        MetaAgentConfig.create(feedback="bandit", context="probability", mode="select")
    MetaAgentConfig.create(feedback="bandit", context="probability", mode="blend")


def test_bandit_feedback_skips_a_bar_whose_draw_probability_an_old_state_did_not_keep() -> None:
    prices, regimes, targets = path(40, seed=2)
    step = MetaAgentStep(MetaAgentConfig.create(feedback="bandit", min_regime_rounds=5))
    state, _ = run(step, prices[:30], regimes, targets)
    old = MetaAgentState.from_dict({k: v for k, v in state.to_dict().items() if k != "arm_probability"})
    assert old.arm_probability is None
    old.learners[GLOBAL].log_weights_ = np.array([0.0, -1000.0, 0.0, 0.0])  # p = 0 for arm 1
    old.arm = 1
    rounds = {k: learner.t_ for k, learner in old.learners.items()}
    new, decision = step.decide(old, market(30, prices[30], regimes[30]), targets[30])
    assert {k: learner.t_ for k, learner in new.learners.items() if k in rounds} == rounds  # nothing learnt
    assert decision.intent is not None and new.arm_probability is not None  # and kept from now on


def test_policy_params_that_the_meta_agent_sets_itself_or_that_are_not_finite_are_refused() -> None:
    for params in ({"eta": 0.1, "random_state": 5}, {"n_arms": 4}):
        with pytest.raises(InvalidMessageError, match="set by the meta-agent"):
            MetaAgentConfig.create(policy="hedge", policy_params=params)
    with pytest.raises(InvalidMessageError, match="eta must be finite"):
        MetaAgentConfig.create(policy="hedge", policy_params={"eta": float("inf")})


def test_a_learner_window_whose_state_could_outgrow_a_dynamodb_item_is_refused() -> None:
    MetaAgentConfig.create(policy="swucb", policy_params={"window": 250, "alpha": 1.0})
    with pytest.raises(InvalidMessageError, match="KB of state .* smaller window"):
        MetaAgentConfig.create(policy="swucb", policy_params={"window": 1500, "alpha": 1.0})
    # checked for four agents by the configuration, again for the step's own number of agents
    config = MetaAgentConfig.create(policy="swucb", policy_params={"window": 200, "alpha": 1.0})
    MetaAgentStep(config, agent_names=("a", "b", "c", "d", "e"))
    with pytest.raises(InvalidMessageError, match=r"\(6 agents\) would take up to .* KB of state"):
        MetaAgentStep(config, agent_names=("a", "b", "c", "d", "e", "f"))


def _decoded(**changes) -> dict:
    prices, regimes, targets = path(30)
    state, _ = run(MetaAgentStep(), prices, regimes, targets)
    return state.to_dict() | changes


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"leader": 9}, "leader must be an agent index"),
        ({"arm": 7}, "arm must be an agent index"),
        ({"weights": [0.5, 0.5, 0.0]}, "weights must hold 4 finite numbers"),
        ({"agent_positions": [0.0, 0.0, 0.0]}, "must hold 3 finite numbers"),  # shorter than the rest
        ({"last_timestamp": "2024-01-02T00:00:00"}, "last_timestamp must carry a time zone"),
        ({"last_price": "abc"}, "last_price must be a finite number"),
        ({"variance": -1.0}, "variance must be a finite number"),
        ({"position": 3.0}, "position must lie in"),
        ({"last_regime": "MOON"}, "last_regime must be a regime name"),
        ({"agent_variance": [1.0, float("nan"), 1.0, 1.0]}, "agent_variance must hold 4 finite"),
        ({"regret": {"agent_rewards": {"BULL": [0.0] * 4}, "meta_reward": {}, "bars": {"BULL": 3}}},
         "must name the same regimes"),
        ({"regret": {"agent_rewards": {"BULL": [0.0] * 4}, "meta_reward": {"BULL": float("nan")},
                     "bars": {"BULL": 3}}}, "regret of BULL must have a finite meta reward"),
        ({"regret": {"agent_rewards": {"MOON": [0.0] * 4}, "meta_reward": {"MOON": 0.0}, "bars": {"MOON": 3}}},
         "regret must be kept per regime name"),
    ],
)
def test_a_decoded_state_whose_parts_do_not_fit_is_a_state_error(changes: dict, what: str) -> None:
    with pytest.raises(StateError, match=what):
        MetaAgentState.from_dict(_decoded(**changes))


def test_a_decoded_state_with_a_learner_of_another_arm_count_is_a_state_error() -> None:
    data = _decoded()
    learner = data["learners"][GLOBAL]
    learner["params"]["n_arms"] = 3
    learner["arrays"] = {k: v[:3] for k, v in learner["arrays"].items()}
    with pytest.raises(StateError, match="learner ALL must have one arm per agent"):
        MetaAgentState.from_dict(data)


def test_thompson_blend_explanations_name_the_agent_with_the_largest_weight() -> None:
    prices, regimes, targets = path(300, seed=3)
    _, decisions = run(MetaAgentStep(MetaAgentConfig.create(policy="thompson")), prices, regimes, targets)
    for d in decisions[1:]:
        weights = d.intent.agent_weights
        detail = d.intent.explanation_detail
        top = weights[detail["chosen"]] == max(weights.values())
        said = " wins the largest share of posterior draws" if top else " keeps the lead, within the draws' noise"
        assert detail["why"].startswith(detail["chosen"] + said)
        assert weights[detail["chosen"]] >= max(weights.values()) - 3 / 16 - 1e-12


def test_thompson_weights_noise_alone_does_not_switch_the_leader() -> None:
    """Two identical agents: which one leads is sampling noise, not news."""
    prices, regimes, _ = path(300, seed=5)
    twins = np.column_stack([np.ones(300), np.ones(300), -np.ones(300), -np.ones(300)])
    switches = {}
    for policy in ("thompson", "hedge"):
        _, decisions = run(MetaAgentStep(MetaAgentConfig.create(policy=policy, context="global")), prices,
                           [Regime.BULL] * 300, twins)
        switches[policy] = sum(len(d.events) for d in decisions)
    assert switches["thompson"] <= switches["hedge"] + 2


def test_probability_context_explanations_name_the_mix_not_one_regime_learner() -> None:
    prices, regimes, targets = path(120)
    step = MetaAgentStep(MetaAgentConfig.create(context="probability", regime_prior_rounds=0, min_regime_rounds=5))
    _, decisions = run(step, prices, regimes, targets)
    for d in decisions[1:]:
        detail = d.intent.explanation_detail
        assert "mix by regime probability" in detail["why"] and "VOLATILE learner" not in detail["why"]
        top = max(d.intent.agent_weights.values())
        assert d.intent.agent_weights[detail["chosen"]] == top


def test_the_overlay_scale_never_overflows() -> None:
    step = MetaAgentStep(MetaAgentConfig.create(vol_target_max_scale=1.5))
    # bias-corrected after one bar: forecast variance 1e-320 (subnormal), long-run 1e-2 — the
    # ratio of the volatilities squared is beyond the largest float
    accumulators = np.append(np.array([1e-320, 1e-2]) * (1.0 - step._overlay_decay), 1.0)
    forecast, target = step.overlay_vols(accumulators)
    assert forecast > 0.0 and target / forecast > 1e155
    assert step._vol_scale(accumulators) == 1.5
    assert step._vol_scale(np.array([4e-4, 1e-4, 1e6])) == pytest.approx(0.5**2)  # (σ_long / σ_recent)²


def test_two_symbols_draw_independent_samples_from_the_same_inputs() -> None:
    """A learner's random stream is seeded with its symbol: a randomised policy run for two
    symbols on identical bars must not make the same draws (correlated bets across symbols)."""
    prices, regimes, targets = path(80, seed=2)
    step = MetaAgentStep(MetaAgentConfig.create(policy="thompson"))
    weights = {}
    for symbol in ("SPX", "IXIC"):
        state, seen = None, []
        for i, p in enumerate(prices):
            m = market(i, p, regimes[i])
            m = m.model_copy(update={
                "features": m.features.model_copy(update={"bar": m.features.bar.model_copy(update={"symbol": symbol})}),
                "regime": m.regime.model_copy(update={"symbol": symbol}),
            })
            state, decision = step.decide(state, m, targets[i])
            seen.append(tuple(decision.intent.agent_weights.values()))
        weights[symbol] = seen
    assert weights["SPX"] != weights["IXIC"]


def test_features_of_another_version_than_the_agents_were_trained_on_are_refused() -> None:
    class Agents:
        names = ("a", "b", "c", "d")
        version = "v1"
        feature_names = ("ret_1",)
        feature_version = "1"

        def act(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
            return np.full(4, 0.5)

    step = MetaAgentStep(agents=Agents())
    ready = market(0, 100.0)
    state, decision = step(None, ready)
    assert decision.intent is not None
    newer = market(1, 101.0)
    newer = newer.model_copy(update={"features": newer.features.model_copy(update={"feature_version": "2"})})
    with pytest.raises(DataError, match="features of version '2', but the agents were trained on version '1'"):
        step(state, newer)


def test_a_restart_keeps_the_overlays_market_estimates() -> None:
    """The market-volatility overlay follows the market only: a new agent set must not switch it
    off (fresh estimates from one return give a scale of 1 in the middle of a volatility spike)."""
    n = 400
    rng = np.random.default_rng(1)
    vol = np.where(np.arange(n) < 360, 0.005, 0.04)
    prices = 100.0 * np.cumprod(1.0 + vol * rng.standard_normal(n))
    targets = np.ones((n, 4))
    config = MetaAgentConfig.create()
    old = MetaAgentStep(config, agent_version="agents-A")
    state, _ = run(old, prices[:390], [Regime.BULL] * n, targets)
    assert state.vol_scale < 0.5
    continued, kept = old.decide(state, market(390, prices[390]), targets[390])
    restarted, after = MetaAgentStep(config, agent_version="agents-B").decide(state, market(390, prices[390]), targets[390])
    assert restarted.model_version != continued.model_version
    assert after.intent.explanation_detail["vol_target"]["scale"] == pytest.approx(
        kept.intent.explanation_detail["vol_target"]["scale"])
    # the same target, reached by the ramp a restart starts (fresh learners blend anew)
    ramp = max(state.ramp_left, config.ramp_bars)
    assert after.intent.target_position == pytest.approx(
        state.position + (kept.intent.target_position - state.position) / ramp)


def test_a_restart_ramps_to_what_the_fresh_learners_blend() -> None:
    """Review 2026-11-29: under equal fresh weights the old leader stays leader by a tie, so no
    switch started a ramp and the position jumped to the equal-weight blend in one bar (+1.0 to
    -0.5 on a change of cost_bps alone)."""
    targets = np.array([-1.0, -1.0, -1.0, 1.0])  # only the contrarian is long, and right
    old = MetaAgentStep(MetaAgentConfig.create(), agent_version="agents-A")
    state, price = None, 100.0
    for i in range(120):
        price *= 1.002
        state, _ = old.decide(state, market(i, price, Regime.BULL), targets)
    assert state.position == pytest.approx(1.0)
    new_config = MetaAgentConfig.create(cost_bps=4.0)  # an operator edits ET_META_CONFIG
    restarted, decision = MetaAgentStep(new_config, agent_version="agents-A").decide(
        state, market(120, price * 1.002, Regime.BULL), targets)
    assert restarted.model_version != state.model_version  # the configuration is in the version
    assert restarted.ramp_left == new_config.ramp_bars - 1 > 0
    assert decision.intent.target_position == pytest.approx(1.0 + (-0.5 - 1.0) / new_config.ramp_bars)
    assert "ramp" in decision.intent.explanation


def test_a_restart_keeps_the_leader_and_what_was_held() -> None:
    prices, _, _ = path(260, seed=5)
    targets = np.tile([-1.0, 1.0, 0.0, -1.0], (260, 1))
    config = MetaAgentConfig.create(vol_target="none")
    old = MetaAgentStep(config, agent_version="agents-A")
    state, _ = run(old, prices[:250], [Regime.BULL] * 260, targets)
    assert state.leader is not None
    new, decision = MetaAgentStep(config, agent_version="agents-B").decide(
        state, market(250, prices[250]), targets[250])
    previous = decision.intent.explanation_detail["previous"]
    assert previous["chosen"] == old.agent_names[state.leader]
    assert list(previous["weights"].values()) == pytest.approx(state.weights.tolist())
    switched = decision.intent.explanation_detail["switched"]
    assert switched == (new.leader != state.leader) and bool(decision.events) == switched


@pytest.mark.parametrize("policy", ["hedge", "exp3", "ucb"])
def test_blend_explanations_never_credit_a_regime_learner_with_a_leader_it_ranks_lower(policy: str) -> None:
    """A regime learner's blending weights are shrunk toward the global learner's: the agent they
    put first may not be the one the regime learner alone puts first. The "why" (and the
    AgentSwitched reason, the same text) then names the blending weight and the regime learner's
    own favourite, and otherwise quotes the weight it names."""
    rng = np.random.default_rng(1)
    n = 600
    bull = (np.arange(n) // 150) % 2 == 0
    prices = 100.0 * np.cumprod(1.0 + np.where(bull, 0.004, -0.004) + 0.01 * rng.standard_normal(n))
    regimes = [Regime.BULL if b else Regime.BEAR for b in bull]
    targets = np.tile([1.0, 0.5, 0.0, -1.0], (n, 1))
    step = MetaAgentStep(MetaAgentConfig.create(policy=policy))  # regime learners shrunk toward the global
    names = step.agent_names
    state, said = None, {"own": 0, "blending": 0}
    for i in range(n):
        state, decision = step.decide(state, market(i, prices[i], regimes[i]), targets[i])
        detail, why = decision.intent.explanation_detail, decision.intent.explanation_detail["why"]
        for event in decision.events:
            assert event.reason == why
        if detail["learner"] not in ("BULL", "BEAR"):
            continue
        chosen, weight = detail["chosen"], decision.intent.agent_weights[detail["chosen"]]
        if policy == "ucb":  # the regime learner's own favourite: its highest index
            own = {k: a["estimate"] + float(a["bonus"]) for k, a in detail["agents"].items()}
        else:  # its own exponential weights (the detail's estimates are their logarithms)
            own = {k: a["estimate"] for k, a in detail["agents"].items()}
        favourites = {k for k in names if own[k] >= max(own.values()) - 1e-9}  # agents may tie
        if chosen in favourites:
            said["own"] += 1
            assert "largest blending weight" not in why, why
            if policy != "ucb":
                assert why.startswith(f"{chosen} has the largest exponential weight ({weight:.2f}) in the "), why
        else:
            said["blending"] += 1
            assert why.startswith(f"{chosen} has the largest blending weight ({weight:.2f}; the {detail['learner']} "
                                  f"learner alone prefers "), why
            assert why.split("alone prefers ")[1].split()[0].rstrip(")") in favourites, why
            assert "exponential weight" not in why and "UCB index" not in why
    assert said["own"] > 0 and said["blending"] > 0, said


@pytest.mark.parametrize("policy", ["hedge", "exp3"])
def test_select_mode_explanations_say_the_agent_was_drawn_not_that_it_has_the_largest_weight(policy: str) -> None:
    prices, regimes, targets = path(300, seed=4)
    _, decisions = run(MetaAgentStep(MetaAgentConfig.create(policy=policy, mode="select", context="global")),
                       prices, regimes, targets)
    drawn = 0
    for d in decisions:
        detail = d.intent.explanation_detail
        if detail["chosen"] is None:
            continue
        log_weights = {k: v["estimate"] for k, v in detail["agents"].items()}
        largest = log_weights[detail["chosen"]] >= max(log_weights.values()) - 1e-12
        assert ("has the largest exponential weight" in detail["why"]) == largest, detail["why"]
        drawn += "was drawn with probability" in detail["why"]
    assert drawn > 0
