"""Meta-agent options: the volatility-targeting overlay, shrinkage toward equal weights, and the
regime learners' prior toward the global learner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ensemble_trader.domain.meta_agent import GLOBAL, MetaAgentConfig, MetaAgentState, MetaAgentStep
from ensemble_trader.domain.models import Regime
from test_meta_agent import market, path, run


def calm_then_wild(n: int = 200, spike_at: int = 150, seed: int = 1) -> np.ndarray:
    """Prices whose returns are 0.5 % a bar, then 3 % a bar from ``spike_at``."""
    rng = np.random.default_rng(seed)
    sd = np.where(np.arange(n) < spike_at, 0.005, 0.03)
    return 100.0 * np.cumprod(1.0 + sd * rng.standard_normal(n))


def ewma_vols(x: np.ndarray, halflives: tuple[float, float]) -> tuple[float, float]:
    """Zero-started, bias-corrected EWMA volatilities of ``x`` (what the overlay should use)."""
    out = []
    for hl in halflives:
        d = 0.5 ** (1.0 / hl)
        acc = 0.0
        for v in x:
            acc = d * acc + (1.0 - d) * v * v
        out.append(np.sqrt(acc / (1.0 - d ** len(x))))
    return out[0], out[1]


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_market_overlay_scales_the_blend_by_the_ratio_of_long_run_to_recent_vol(power: float) -> None:
    prices = calm_then_wild()
    n = len(prices)
    targets = np.tile([1.0, 0.5, 0.8, 0.2], (n, 1))
    cfg = MetaAgentConfig.create(
        vol_target="market", vol_target_power=power, vol_target_max_scale=5.0, max_position_change=4.0
    )
    step = MetaAgentStep(cfg)
    _, decisions = run(step, prices, [Regime.BULL] * n, targets)
    returns = prices[1:] / prices[:-1] - 1.0
    for i in (100, 160, n - 1):
        fast, slow = ewma_vols(returns[:i], (cfg.vol_target_halflife, cfg.vol_target_long_halflife))
        detail = decisions[i].intent.explanation_detail
        overlay = detail["vol_target"]
        assert overlay["forecast_vol"] == pytest.approx(fast)
        assert overlay["target_vol"] == pytest.approx(slow)
        assert overlay["scale"] == pytest.approx((slow / fast) ** power)
        assert detail["desired_position"] == pytest.approx(overlay["blend"] * overlay["scale"])
    assert 0.5 < decisions[100].intent.explanation_detail["vol_target"]["scale"] < 2.0  # calm: near its long run
    assert decisions[n - 1].intent.explanation_detail["vol_target"]["scale"] < 0.75**power  # after the spike
    assert "more volatile than long-run" in decisions[n - 1].intent.explanation


def test_overlay_cap_and_explanation() -> None:
    prices = calm_then_wild()
    n = len(prices)
    targets = np.tile([1.0, 0.5, 0.8, 0.2], (n, 1))
    step = MetaAgentStep(MetaAgentConfig.create(vol_target="market", vol_target_max_scale=1.0))
    _, decisions = run(step, prices, [Regime.BULL] * n, targets)
    scales = [d.intent.explanation_detail["vol_target"]["scale"] for d in decisions]
    assert max(scales) == 1.0 and min(scales) < 0.5
    capped = [d for d in decisions[1:] if d.intent.explanation_detail["vol_target"]["capped"]]
    assert capped and "capped" in capped[-1].intent.explanation
    json.dumps(decisions[-1].intent.explanation_detail)

    off = MetaAgentStep(MetaAgentConfig.create(vol_target="none"))
    _, plain = run(off, prices, [Regime.BULL] * n, targets)
    assert plain[-1].intent.explanation_detail["vol_target"] is None
    assert "vol target" not in plain[-1].intent.explanation


def test_ensemble_overlay_follows_the_unscaled_blend_returns() -> None:
    prices = calm_then_wild(n=120, spike_at=80)
    n = len(prices)
    targets = np.tile([1.0, 1.0, 1.0, 1.0], (n, 1))  # every blend is +1
    cfg = MetaAgentConfig.create(
        vol_target="ensemble", vol_target_power=1.0, vol_target_max_scale=5.0, max_position_change=4.0
    )
    _, decisions = run(MetaAgentStep(cfg), prices, [Regime.BULL] * n, targets, warmup=10)
    returns = prices[1:] / prices[:-1] - 1.0
    assert decisions[10].intent.explanation_detail["vol_target"]["forecast_vol"] is None  # nothing held yet
    fast, slow = ewma_vols(returns[10:n - 1], (cfg.vol_target_halflife, cfg.vol_target_long_halflife))
    overlay = decisions[-1].intent.explanation_detail["vol_target"]
    assert overlay["forecast_vol"] == pytest.approx(fast)
    assert overlay["scale"] == pytest.approx(slow / fast)


def test_shrinkage_moves_weights_toward_equal() -> None:
    prices, regimes, targets = path(80)
    weights = {}
    for lam in (0.0, 0.5, 1.0):
        _, decisions = run(MetaAgentStep(MetaAgentConfig.create(shrinkage=lam)), prices, regimes, targets)
        weights[lam] = np.array(list(decisions[-1].intent.agent_weights.values()))
    assert np.ptp(weights[0.0]) > 0.1
    np.testing.assert_allclose(weights[1.0], 0.25)
    np.testing.assert_allclose(weights[0.5], 0.5 * weights[0.0] + 0.125)


def test_regime_learner_weights_are_shrunk_toward_the_global_learner() -> None:
    prices, regimes, targets = path(120)
    n0 = 40.0
    step = MetaAgentStep(
        MetaAgentConfig.create(context="regime", regime_prior_rounds=n0, min_regime_rounds=0)
    )
    state = None
    for i in range(100):
        state, decision = step.decide(state, market(i, prices[i], regimes[i]), targets[i])
        regime = regimes[i].value
        learner = state.learners.get(regime)
        if learner is None or learner.t_ == 0:
            continue
        k = learner.t_
        expected = (k * learner.weights() + n0 * state.learners[GLOBAL].weights()) / (k + n0)
        np.testing.assert_allclose(list(decision.intent.agent_weights.values()), expected, atol=1e-12)


def test_state_with_overlay_and_regime_prior_round_trips() -> None:
    prices, regimes, targets = path(90)
    cfg = MetaAgentConfig.create(
        context="regime", regime_prior_rounds=30.0, vol_target="market", vol_target_power=2.0, shrinkage=0.1
    )
    step = MetaAgentStep(cfg)
    state, _ = run(step, prices[:45], regimes, targets)
    assert state.overlay_variance is not None and state.blend is not None
    restored = MetaAgentState.from_bytes(state.to_bytes())
    for i in range(45, 90):
        state, a = step.decide(state, market(i, prices[i], regimes[i]), targets[i])
        restored, b = step.decide(restored, market(i, prices[i], regimes[i]), targets[i])
        assert a.intent == b.intent


@pytest.mark.parametrize(
    "options",
    [{"shrinkage": 1.5}, {"vol_target": "vix"}, {"vol_target_power": 3.0}, {"regime_prior_rounds": -1}],
)
def test_bad_overlay_and_shrinkage_options_are_refused(options: dict) -> None:
    from ensemble_trader.domain.errors import InvalidMessageError

    with pytest.raises(InvalidMessageError, match=next(iter(options))):
        MetaAgentConfig.create(**options)
