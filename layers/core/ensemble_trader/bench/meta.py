"""Meta-agent benchmarks: one meta step, and one whole decision (features → regime → agents → meta).

``meta_step_us_p50/p99``
    :meth:`MetaAgentStep.decide` for one bar (learn from the last bar, choose, smooth, build the
    OrderIntent with its explanation), default configuration, over a replay of 2,000 synthetic
    bars so the state is realistic (four regime learners, regret ledger, ramp).
``meta_step_<policy>_us_p50/p99``
    the same for every bandit policy (quick mode: skipped).
``decision_us_p50/p99``
    everything a fused deployment computes per bar: ``FeatureEngine.update`` → ``RegimeStep`` →
    ``AgentPool.act`` (ONNX, the committed model set) → ``MetaAgentStep.decide``. Target: p99
    ≤ 1 ms. Needs the committed agent set and regime model; without them the keys are absent and
    ``decision_note`` says why.
Both leave the first ``UNTIMED_READY_BARS`` (50) ready bars untimed: a fresh ONNX session's first
calls and the learners' first updates are a cold path a warm container pays once.

``meta_step_cpu_us_*``, ``decision_cpu_us_*``
    the same measured in thread CPU time (``time.thread_time_ns``): on a shared machine the
    wall-clock p99 includes time the thread spent preempted; the CPU-time p99 does not.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ensemble_trader.bench import committed_models, models_missing, percentiles_us
from ensemble_trader.domain.bandits import POLICIES
from ensemble_trader.domain.errors import ModelArtifactError
from ensemble_trader.domain.features import FeatureEngine
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.models import REGIMES, MarketState, RegimeEstimate
from ensemble_trader.domain.synthetic import generate

REPLAY_BARS = 2_000


def _constant_regime(vector: Any, i: int) -> RegimeEstimate:
    """A plausible estimate cycling through the regimes (for the meta-step-only benchmark)."""
    regime = REGIMES[(i // 50) % 4]
    probs = tuple(0.7 if r is regime else 0.1 for r in REGIMES)
    return RegimeEstimate(
        symbol=vector.symbol, timestamp=vector.timestamp, probabilities=probs, regime=regime,
        confidence=0.7, bars_in_regime=i % 50, model_version="bench",
    )


UNTIMED_READY_BARS = 50
"""Ready bars run before timing starts: the first inferences of a fresh ONNX session and the
first learner updates are cold-path costs a warm Lambda container pays once."""


def _replay(n: int) -> tuple[list[MarketState], np.ndarray]:
    """Market states of a synthetic series and random agent targets for them."""
    series = generate("realistic", n, seed=11).series
    engine = FeatureEngine(series.symbol)
    states = [
        MarketState(features=(v := engine.update(bar)), regime=_constant_regime(v, i))
        for i, bar in enumerate(series.bars())
    ]
    targets = np.random.default_rng(0).uniform(-1.0, 1.0, size=(n, 4))
    return states, targets


def _time_meta(
    config: MetaAgentConfig, states: list[MarketState], targets: np.ndarray, clock: Any = time.perf_counter_ns
) -> list[int]:
    """Nanoseconds of each decide() over the replay (after the features warm up)."""
    step = MetaAgentStep(config)
    state = None
    out = []
    ready = 0
    for market, target in zip(states, targets, strict=True):
        t0 = clock()
        state, _ = step.decide(state, market, target)
        elapsed = clock() - t0
        if market.features.ready:
            ready += 1
            if ready > UNTIMED_READY_BARS:
                out.append(elapsed)
    return out


def _time_decision(n: int) -> dict[str, Any]:
    try:
        pool, regime = committed_models()
    except ModelArtifactError as exc:
        return models_missing("decision_note", exc)
    series = generate("realistic", n, seed=12).series
    engine = FeatureEngine(series.symbol)
    meta = MetaAgentStep(MetaAgentConfig(), pool)
    regime_state = meta_state = None
    wall, cpu = [], []
    ready = 0
    for bar in series.bars():
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        vector = engine.update(bar)
        regime_state, outputs, _ = regime.apply(regime_state, vector)
        meta_state, _ = meta(meta_state, outputs[0])
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        if vector.ready:
            ready += 1
            if ready > UNTIMED_READY_BARS:
                wall.append(t1 - t0)
                cpu.append(c1 - c0)
    return percentiles_us(wall, "decision") | percentiles_us(cpu, "decision_cpu")


def run(quick: bool) -> dict[str, Any]:
    n = 600 if quick else REPLAY_BARS
    states, targets = _replay(n)
    results: dict[str, Any] = {}
    results.update(percentiles_us(_time_meta(MetaAgentConfig(), states, targets), "meta_step"))
    cpu = _time_meta(MetaAgentConfig(), states, targets, clock=time.thread_time_ns)
    results.update(percentiles_us(cpu, "meta_step_cpu"))
    if not quick:
        for policy in sorted(POLICIES):
            samples = _time_meta(MetaAgentConfig(policy=policy), states, targets)
            results.update(percentiles_us(samples, f"meta_step_{policy}"))
    results.update(_time_decision(n))
    return results
