"""Ensemble backtest: features → regime → agents → meta-agent in process, with the live steps.

Two passes, because the agents' decisions do not depend on the meta-agent (each agent sees the
features and its *own* virtual position, never the ensemble's):

1. :func:`run_pipeline` drives the same objects the Lambdas run — :class:`FeatureEngine`,
   :class:`RegimeStep`, :class:`AgentPool` — bar by bar and keeps every ``MarketState`` and
   every agent's targets. It is the expensive part and runs once per series. Each agent's
   targets are fed back to it as its position, as ``MetaAgentStep`` books them as its virtual
   position, so the agents see the same positions here and live (the ensemble's position bound,
   ``max_position``, bounds the ensemble only: one pipeline serves every configuration).
2. :func:`run_meta` drives :class:`MetaAgentStep` over those ``MarketState`` s with the targets
   the meta_agent Lambda would compute (``MetaAgentStep.__call__`` asks the pool with the same
   features and the same virtual positions); it can be repeated cheaply for several policies.

:func:`evaluate` turns a run into the report dict the CLI prints: metrics (the
:mod:`ensemble_trader.backtest.engine` conventions: a target set at the close of bar ``t`` earns
``p_t r_{t+1}`` and pays the cost of ``|p_t - p_{t-1}|``) for the ensemble, each single agent
and buy-and-hold, overall and per detected regime, the regret over the evaluated window,
the check of the issue's target and where the orders stage's circuit breaker would have acted
(:func:`breaker_crossings`). The backtest ends at the intents: its positions are the targets,
so no risk check, circuit breaker, minimum trade or share rounding of the orders stage shapes
its figures (a replay through the local stack runs that stage). Evaluation can start after the first warm bar (``start``) and
stop before ``end`` (a validation window):
everything before it only warms the features, the regime filter and the learners, so the
evaluated window is strictly out of sample for the meta-agent (it learns online, causally).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from ensemble_trader.backtest.engine import (
    CostModel,
    asset_returns,
    bars_span,
    period_regimes,
    strategy_returns,
    summarise,
    window_text,
)
from ensemble_trader.backtest.metrics import (
    BarsPerYear,
    checked_periods_per_year,
    drawdowns,
    infer_periods_per_year,
    log_wealth,
    ruin_index,
    sharpe_margin_se,
    sharpe_margin_se_hac,
)
from ensemble_trader.domain.bars import BarSeries, parse_datetime64, to_datetime64
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import FeatureEngine
from ensemble_trader.domain.meta_agent import (
    MAX_PRICE_MOVE,
    AgentPolicy,
    AgentSwitched,
    MetaAgentConfig,
    MetaAgentState,
    MetaAgentStep,
    RegretLedger,
)
from ensemble_trader.domain.models import REGIMES, MarketState, OrderIntent
from ensemble_trader.domain.regime import RegimeStep

REWARD_UNITS = {
    "vol": "risk-adjusted reward (net return / market EWMA vol) summed over bars",
    "agent_vol": "risk-adjusted reward (net return / each agent's EWMA vol) summed over bars",
    "none": "net return summed over bars",
}
"""What the regret is measured in, by ``MetaAgentConfig.risk_adjustment``."""


@dataclass(frozen=True)
class PipelineRun:
    """One series through features → regime → agents (independent of the meta policy)."""

    symbol: str
    timestamp: np.ndarray  # (n,) datetime64[ns]
    close: np.ndarray  # (n,)
    market_states: tuple[MarketState, ...]
    agent_targets: np.ndarray  # (n, A); zeros while the features warm up
    ready: np.ndarray  # (n,) bool
    agent_names: tuple[str, ...]
    agent_version: str
    regime_version: str
    regime_changes: int
    bars_per_year: float | None = None  # given (``--bars-per-year``); None: inferred from the bar times

    @property
    def regimes(self) -> np.ndarray:
        return np.array([m.regime.regime.value for m in self.market_states])

    @property
    def confidence(self) -> np.ndarray:
        return np.array([m.regime.confidence for m in self.market_states])

    @property
    def probabilities(self) -> np.ndarray:
        return np.array([m.regime.probabilities for m in self.market_states])


def run_pipeline(
    series: BarSeries,
    agents: AgentPolicy,
    regime: RegimeStep,
    *,
    progress: bool = False,
    bars_per_year: float | None = None,
) -> PipelineRun:
    """Features, regime and agents for every bar of ``series``, with the stages' own step code.
    ``bars_per_year`` annualises every figure of the run when given (else it is inferred from
    the bar times, :func:`~ensemble_trader.backtest.metrics.periods_per_year`)."""
    given = None if bars_per_year is None else checked_periods_per_year(bars_per_year)
    if len(series) < 2:
        raise DataError(f"{series.symbol}: need at least two bars, got {len(series)}")
    engine = FeatureEngine(series.symbol)
    probe = MetaAgentStep(MetaAgentConfig(), agents=agents)  # the meta_agent Lambda's feature order and checks
    n, a = len(series), len(agents.names)
    targets = np.zeros((n, a))
    ready = np.zeros(n, dtype=bool)
    states: list[MarketState] = []
    regime_state = None
    positions = np.zeros(a)
    changes = 0
    bars = tqdm(series.bars(), total=n, desc=f"{series.symbol} pipeline", disable=not progress, unit="bar")
    for i, bar in enumerate(bars):
        vector = engine.update(bar)
        regime_state, outputs, events = regime.apply(regime_state, vector)
        if len(outputs) != 1:
            raise DataError(f"{series.symbol}: regime stage produced no state at {bar.timestamp.isoformat()}")
        market = outputs[0]
        changes += len(events)
        states.append(market)
        if vector.ready:
            ready[i] = True
            raw = agents.act(probe.features_of(market), positions)
            positions = probe.check_targets(market, raw)
            targets[i] = positions
        else:
            positions = np.zeros(a)
    return PipelineRun(
        symbol=series.symbol,
        timestamp=np.asarray(series.timestamp),
        close=np.asarray(series.close, dtype=np.float64),
        market_states=tuple(states),
        agent_targets=targets,
        ready=ready,
        agent_names=tuple(agents.names),
        agent_version=agents.version,
        regime_version=regime.model_version,
        regime_changes=changes,
        bars_per_year=given,
    )


@dataclass(frozen=True)
class EnsembleRun:
    """The meta-agent over a :class:`PipelineRun`: every intent and the per-bar diagnostics."""

    pipeline: PipelineRun
    config: MetaAgentConfig
    intents: tuple[OrderIntent, ...]
    switches: tuple[AgentSwitched, ...]
    positions: np.ndarray  # (n,) smoothed ensemble target per bar
    weights: np.ndarray  # (n, A)
    leaders: np.ndarray  # (n,) index of the leading agent, -1 while warming up
    agent_rewards: np.ndarray  # (n, A) reward of each agent for (t-1, t]; NaN when none
    meta_rewards: np.ndarray  # (n,) the meta-agent's reward for (t-1, t]; NaN when none
    final_state: MetaAgentState
    vol_scales: np.ndarray  # (n,) the volatility overlay's scale (1 when off or warming up)

    def regret_curve(self, start: int = 0) -> np.ndarray:
        """Cumulative regret against the best agent in hindsight *at each bar* from ``start``,
        over the periods that begin at or after ``start`` (as the report's ledger): 0 at
        ``start``, whose own reward is for the period (start-1, start]."""
        r = np.nan_to_num(self.agent_rewards[start:])
        m = np.nan_to_num(self.meta_rewards[start:])
        r[:1] = 0.0
        m[:1] = 0.0
        return np.cumsum(r, axis=0).max(axis=1) - np.cumsum(m)


def check_price_moves(series: BarSeries) -> None:
    """A :class:`DataError` naming the symbol, the bar, both closes and the factor when a close
    moves by more than :data:`~ensemble_trader.domain.meta_agent.MAX_PRICE_MOVE` from the
    previous bar's, which the meta-agent step refuses as a bad print (:func:`run_meta` would stop
    there). A backtest checks every series with it before any run, so one bad symbol of a file
    does not stop the run after others were reported."""
    close = np.asarray(series.close, dtype=np.float64)
    if close.size < 2:
        return
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = close[1:] / close[:-1]
    bad = np.flatnonzero(~((ratio >= 1.0 / MAX_PRICE_MOVE) & (ratio <= MAX_PRICE_MOVE)))
    if bad.size:
        i = int(bad[0]) + 1
        when, before = (str(np.datetime64(series.timestamp[k], "s")) for k in (i, i - 1))
        raise DataError(
            f"{series.symbol}: bar {i} ({when}): close {float(close[i])!r} is {float(ratio[i - 1]):.3g} times the "
            f"previous close {float(close[i - 1])!r} (at {before}); the meta-agent refuses a move by more than a "
            f"factor of {MAX_PRICE_MOVE:,.0f} between two bars as a bad print: correct or drop that bar "
            "(nothing was run)"
        )


def run_meta(pipeline: PipelineRun, config: MetaAgentConfig, *, progress: bool = False) -> EnsembleRun:
    """Drive :class:`MetaAgentStep` over the pipeline's market states and agent targets."""
    step = MetaAgentStep(config, agent_names=pipeline.agent_names, agent_version=pipeline.agent_version)
    n, a = pipeline.agent_targets.shape
    positions = np.zeros(n)
    weights = np.zeros((n, a))
    leaders = np.full(n, -1)
    agent_rewards = np.full((n, a), np.nan)
    meta_rewards = np.full(n, np.nan)
    vol_scales = np.ones(n)
    intents: list[OrderIntent] = []
    switches: list[AgentSwitched] = []
    state: MetaAgentState | None = None
    rows = tqdm(range(n), desc=f"meta-agent ({config.policy})", disable=not progress, unit="bar")
    for i in rows:
        state, decision = step.decide(state, pipeline.market_states[i], pipeline.agent_targets[i])
        intent = decision.intent
        if intent is None:
            raise DataError(f"{pipeline.symbol}: bar {i} was treated as a redelivery (timestamps not increasing?)")
        intents.append(intent)
        switches.extend(decision.events)
        positions[i] = intent.target_position
        weights[i] = [intent.agent_weights[name] for name in pipeline.agent_names]
        if pipeline.ready[i]:
            leaders[i] = int(np.argmax(weights[i]))
        overlay = intent.explanation_detail.get("vol_target")
        if overlay is not None:
            vol_scales[i] = overlay["scale"]
        if decision.agent_rewards is not None:
            agent_rewards[i] = decision.agent_rewards
            meta_rewards[i] = decision.meta_reward
    if state is None:
        raise DataError(f"{pipeline.symbol}: no bars")
    return EnsembleRun(
        pipeline, config, tuple(intents), tuple(switches), positions, weights, leaders,
        agent_rewards, meta_rewards, state, vol_scales,
    )


def until(run: EnsembleRun, end: str | None) -> EnsembleRun:
    """The run restricted to bars before ``end`` (an ISO date; None = unchanged).

    Every stage is causal, so this equals running the pipeline on the shorter series.
    """
    if end is None:
        return run
    p = run.pipeline
    n = int(np.searchsorted(p.timestamp, parse_datetime64(end)))
    if n < 2:
        raise DataError(f"{p.symbol}: fewer than two bars before {end}: {bars_span(p.timestamp)}")
    pipeline = replace(
        p, timestamp=p.timestamp[:n], close=p.close[:n], market_states=p.market_states[:n],
        agent_targets=p.agent_targets[:n], ready=p.ready[:n],
    )
    last = p.market_states[n - 1].timestamp
    return replace(
        run, pipeline=pipeline, intents=run.intents[:n],
        switches=tuple(s for s in run.switches if s.timestamp <= last),
        positions=run.positions[:n], weights=run.weights[:n], leaders=run.leaders[:n],
        agent_rewards=run.agent_rewards[:n], meta_rewards=run.meta_rewards[:n],
        vol_scales=run.vol_scales[:n],
    )


def first_index(pipeline: PipelineRun, start: str | None, end: str | None = None) -> int:
    """First bar evaluated: the first warm bar at or after ``start`` (an ISO date; ``end``, when
    given, only checks that the window [start, end) holds two warm bars). Give the pipeline before
    it is cut at ``end`` (:func:`until`), so an error names where the whole series runs."""
    mask = pipeline.ready.copy()
    if start is not None:
        mask &= pipeline.timestamp >= parse_datetime64(start)
    if end is not None:
        mask &= pipeline.timestamp < parse_datetime64(end)
    idx = np.flatnonzero(mask)
    if idx.size < 2:
        raise DataError(f"{pipeline.symbol}: fewer than two warm bars to evaluate in {window_text(start, end)}: "
                        f"{bars_span(pipeline.timestamp)}")
    return int(idx[0])


def switches_from(run: EnsembleRun, i0: int) -> list[AgentSwitched]:
    """The switches of the leading agent at or after bar ``i0``."""
    start = run.pipeline.timestamp[i0]
    return [s for s in run.switches if to_datetime64(s.timestamp) >= start]


def _ledger(run: EnsembleRun, i0: int) -> RegretLedger:
    """The regret ledger of the evaluated window only (rewards of periods that begin at i0)."""
    ledger = RegretLedger(len(run.pipeline.agent_names))
    regimes = run.pipeline.regimes
    for t in range(i0 + 1, len(run.intents)):
        if not np.isnan(run.meta_rewards[t]):
            ledger.add(regimes[t - 1], run.agent_rewards[t], float(run.meta_rewards[t]))
    return ledger


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    """The backtest's JSON object (``ensemble-trader backtest --json`` and ``report.json``):
    ``{"ensemble": M, "agents": {name: M}, "buy_and_hold": M, "regret": {...}, "by_regime":
    {"ensemble": {regime: M}, "agents": {name: {regime: M}}, "buy_and_hold": {regime: M}},
    "target": {...}, "run": {...}}`` (and ``policies`` with ``--compare``), M the metrics of the
    whole window — the shape of :func:`evaluate`'s result with each strategy's per-regime
    metrics gathered under ``by_regime``."""
    strategies = {"ensemble": result["ensemble"], "buy_and_hold": result["buy_and_hold"]}
    out = {k: v for k, v in result.items() if k not in ("ensemble", "agents", "buy_and_hold")}
    out |= {name: block["overall"] for name, block in strategies.items()}
    out["agents"] = {name: block["overall"] for name, block in result["agents"].items()}
    out["by_regime"] = {name: block["by_regime"] for name, block in strategies.items()} | {
        "agents": {name: block["by_regime"] for name, block in result["agents"].items()}}
    return out


def sharpe_goal(best_sharpe: float) -> float:
    """The issue's Sharpe target for an ensemble whose best single agent has ``best_sharpe``:
    20 % above it, ``best + 0.2 |best|``."""
    return float(goal_factor(best_sharpe) * best_sharpe)


def goal_factor(best_sharpe: float) -> float:
    """``c`` with ``sharpe_goal(best) == c * best``: 1.2 for a positive best Sharpe, 0.8 for a negative one."""
    return 1.2 if best_sharpe >= 0 else 0.8


def bars_per_year_of(pipeline: PipelineRun) -> BarsPerYear:
    """The bars per year every figure of a run is annualised at: the run's given figure, or
    inferred from all its bars, warm-up included (a window of a few days is still daily bars),
    with what inferring it assumed (:func:`~ensemble_trader.backtest.metrics.infer_periods_per_year`).
    Cut the run at the window's end first (:func:`until`)."""
    if pipeline.bars_per_year is not None:
        return BarsPerYear(pipeline.bars_per_year)
    return infer_periods_per_year(pipeline.timestamp)


def _window(run: EnsembleRun, start: str | None, end: str | None) -> tuple[EnsembleRun, int, np.ndarray, BarsPerYear]:
    """The run cut at ``end``, the first evaluated bar, the asset's returns from it and the bars per
    year (:func:`bars_per_year_of` the cut run)."""
    i0 = first_index(run.pipeline, start, end)  # before the cut: its error names the whole series' span
    run = until(run, end)
    return run, i0, asset_returns(run.pipeline.close[i0:]), bars_per_year_of(run.pipeline)


def best_agent(names: Sequence[str], sharpes: Sequence[float], ruined: Sequence[bool]) -> int:
    """Index of the best single agent: the highest Sharpe among the agents not ruined, a ruined
    one only when every agent is (then the highest Sharpe among them). After ruin an agent is
    flat, so its Sharpe is pulled toward 0 by the periods it no longer trades and could rank
    above an agent that lost steadily; as the yardstick of the target it would make the
    drawdown condition (at most its 100 %) trivially met. Ties go to the first agent."""
    if not len(names) == len(sharpes) == len(ruined) or not names:
        raise DataError(f"best agent of {len(names)} names, {len(sharpes)} Sharpe ratios, {len(ruined)} ruin flags")
    alive = [k for k in range(len(names)) if not ruined[k]] or list(range(len(names)))
    return max(alive, key=lambda k: sharpes[k])


def ensemble_net_returns(
    run: EnsembleRun, costs: CostModel | None = None, start: str | None = None, end: str | None = None
) -> tuple[np.ndarray, float]:
    """The ensemble's net per-period returns over the window :func:`evaluate` measures, and the
    bars per year: for comparing two configurations period by period on the same series."""
    run, i0, r, annual = _window(run, start, end)
    initial = run.positions[i0 - 1] if i0 > 0 else 0.0
    return strategy_returns(run.positions[i0:-1], r, costs or CostModel(), initial), annual.value


def breaker_crossings(net: np.ndarray, landed: np.ndarray, limits: Any = None) -> dict[str, Any]:
    """Where the orders stage's circuit breaker would have acted on this equity curve, which the
    backtest does not apply (it ends at the intents: its positions are the targets, not orders).

    ``net`` are per-period net returns, ``landed`` (same length, datetime64) the time each
    period's return lands. The symbol is taken as the whole account (live, the breaker reads the
    account's equity over every symbol and its allocation). Equity starts at 1; ``drawdown_*_at`` is the first time the drawdown
    from the running peak reached ``limits.drawdown_reduce`` / ``drawdown_halt``; a UTC day's loss
    is measured from the equity at the previous day's last bar to each bar of the day, and
    ``daily_loss_*_days`` counts the days it reached ``daily_loss_reduce`` / ``daily_loss_halt``
    (``first_daily_loss_*_at`` the first such bar). Live, the breaker would have made the symbol's
    book reduce-only or flat from the first crossing (a drawdown halt latched until an operator
    reset), so every figure of the report after it describes trading the orders stage would not
    have done. ``limits`` defaults to :class:`~ensemble_trader.domain.risk.RiskLimits`'s defaults.
    Equity beyond a float (log-equity past ~709.8: 5,000 periods of +20 %) is followed in log
    space (:func:`~ensemble_trader.backtest.metrics.drawdowns`,
    :func:`~ensemble_trader.backtest.metrics.log_wealth`), so no figure is NaN; ordinary equity
    keeps the product, bit for bit."""
    from ensemble_trader.domain.risk import RiskLimits

    limits = limits or RiskLimits()
    net, landed = np.asarray(net, dtype=np.float64), np.asarray(landed, dtype="datetime64[ns]")
    if net.shape != landed.shape:
        raise DataError(f"breaker crossings of {net.shape} returns landing at {landed.shape} times")
    drawdown = drawdowns(net)[1:]  # in log space when equity is beyond a float
    day = landed.astype("datetime64[D]")
    new_day = np.concatenate(([True], day[1:] != day[:-1]))
    opening = np.cumsum(new_day) - 1  # each bar's day, as an index into the days' first bars
    with np.errstate(over="ignore", invalid="ignore"):  # inf, or inf * 0 (NaN) at a ruin: checked below
        equity = np.cumprod(1.0 + net)
    if np.all(np.isfinite(equity)):
        before = np.concatenate(([1.0], equity[:-1]))  # the equity each period starts from
        day_start = before[new_day][opening]  # the equity at the previous day's last bar
        # after a ruin a day starts from equity 0: nothing is left to lose (0 / 0 was NaN, with a warning)
        daily_loss = np.where(day_start != 0.0, 1.0 - equity / np.where(day_start != 0.0, day_start, 1.0), 0.0)
    else:  # equity beyond a float (inf, NaN after a ruin): each day's loss from log-equity
        logs = log_wealth(net)
        log_start = logs[:-1][new_day][opening]
        alive = log_start != -np.inf  # a day starting after a ruin has nothing left to lose
        daily_loss = np.where(alive, 0.0 - np.expm1(logs[1:] - np.where(alive, log_start, 0.0)), 0.0)

    def first(hit: np.ndarray) -> str | None:
        return str(landed[np.argmax(hit)]) if hit.any() else None

    def days(hit: np.ndarray) -> int:
        return int(len(np.unique(day[hit])))

    return {
        "limits": {k: getattr(limits, k) for k in ("drawdown_reduce", "drawdown_halt", "daily_loss_reduce",
                                                    "daily_loss_halt")},
        "max_drawdown": float(drawdown.max(initial=0.0)),
        "drawdown_reduce_at": first(drawdown >= limits.drawdown_reduce),
        "drawdown_halt_at": first(drawdown >= limits.drawdown_halt),
        "days": int(new_day.sum()),
        "daily_loss_reduce_days": days(daily_loss >= limits.daily_loss_reduce),
        "daily_loss_halt_days": days(daily_loss >= limits.daily_loss_halt),
        "first_daily_loss_reduce_at": first(daily_loss >= limits.daily_loss_reduce),
        "first_daily_loss_halt_at": first(daily_loss >= limits.daily_loss_halt),
    }


def evaluate(
    run: EnsembleRun, costs: CostModel | None = None, start: str | None = None, end: str | None = None
) -> dict[str, Any]:
    """The report: ``{"ensemble": M, "agents": {name: M}, "buy_and_hold": M, "regret": {...},
    "risk": {...}, ...}`` (``risk``: :func:`breaker_crossings` of the ensemble).

    M is ``{"overall": metrics, "by_regime": {regime: metrics}}`` as in
    :func:`ensemble_trader.backtest.engine.summarise`, by the regime the detector reported when
    each period's position was taken (:func:`~ensemble_trader.backtest.engine.period_regimes`).
    ``target`` checks the issue's goal against the best single agent (by Sharpe, an agent ruined
    in the window ranked below every other, :func:`best_agent`):
    ``sharpe >= best + 0.2 |best|`` and ``max_drawdown <= best's``; ``margin_se`` is the standard
    error of the margin ``sharpe - goal`` (:func:`~ensemble_trader.backtest.metrics.sharpe_margin_se`),
    ``margin_se_hac`` the same without assuming normal, serially independent returns
    (:func:`~ensemble_trader.backtest.metrics.sharpe_margin_se_hac`, Newey-West); both are NaN over
    fewer than three periods (null in JSON, "n/a" in the tables). ``sharpe_met`` compares the two
    Sharpe ratios as measured and uses neither error (False over one period, which has no Sharpe
    ratio), so it is decided over two periods too, where the error is n/a.

    ``run.vol_scale_mean`` and ``run.regime_share`` are taken over the window's bars, the last one
    included: unlike the metrics, which count the periods between bars (the last bar's position
    is held over none), they describe the bars themselves — the overlay's mean scale and the share
    of bars the detector labelled with each regime, the last bar's label among them. Over n periods
    that is n + 1 bars; the last bar's weight, 1 / (n + 1), matters only on a short window.
    """
    costs = costs or CostModel()
    run, i0, r, annual = _window(run, start, end)
    ppy = annual.value
    p = run.pipeline
    labels = period_regimes(p.regimes[i0:])
    prev = i0 - 1

    net: dict[str, np.ndarray] = {}

    def report(key: str, path: np.ndarray, initial: float) -> dict[str, Any]:
        held = np.asarray(path, dtype=np.float64)[:-1]
        net[key] = strategy_returns(held, r, costs, initial)
        return summarise(net[key], held, ppy, labels, initial)

    out: dict[str, Any] = {
        "ensemble": report("ensemble", run.positions[i0:], run.positions[prev] if prev >= 0 else 0.0),
        "agents": {
            name: report(name, p.agent_targets[i0:, k], p.agent_targets[prev, k] if prev >= 0 else 0.0)
            for k, name in enumerate(p.agent_names)
        },
        "buy_and_hold": report("buy_and_hold", np.ones(len(r) + 1), 0.0),
    }
    out["risk"] = breaker_crossings(net["ensemble"], p.timestamp[i0 + 1:i0 + 1 + len(r)])
    out["regret"] = _ledger(run, i0).summary(p.agent_names) | {"units": REWARD_UNITS[run.config.risk_adjustment]}
    best = p.agent_names[best_agent(p.agent_names, [out["agents"][n]["overall"]["sharpe"] for n in p.agent_names],
                                    [ruin_index(net[n]) is not None for n in p.agent_names])]
    best_m, ens_m = out["agents"][best]["overall"], out["ensemble"]["overall"]
    goal = sharpe_goal(best_m["sharpe"])
    out["target"] = {
        "best_agent": best,
        "best_sharpe": best_m["sharpe"],
        "ensemble_sharpe": ens_m["sharpe"],
        "sharpe_goal": goal,
        "sharpe_met": bool(len(r) > 1 and ens_m["sharpe"] >= goal),  # one period: no Sharpe to meet
        "margin_se": sharpe_margin_se(net["ensemble"], net[best], goal_factor(best_m["sharpe"]), ppy),
        "margin_se_hac": sharpe_margin_se_hac(net["ensemble"], net[best], goal_factor(best_m["sharpe"]), ppy),
        "best_max_drawdown": best_m["max_drawdown"],
        "ensemble_max_drawdown": ens_m["max_drawdown"],
        "drawdown_met": bool(ens_m["max_drawdown"] <= best_m["max_drawdown"] + 1e-12),
    }
    out["run"] = {
        "symbol": p.symbol,
        "start": str(p.timestamp[i0]),
        "start_index": i0,
        "end": str(p.timestamp[-1]),
        "periods": int(len(r)),
        "periods_per_year": ppy,
        "periods_per_year_source": "given" if p.bars_per_year is not None else "inferred",
        "periods_per_year_note": annual.note,
        "policy": run.config.policy,
        "config": run.config.model_dump(mode="json"),
        "agent_version": p.agent_version,
        "regime_version": p.regime_version,
        "switches": len(switches_from(run, i0)),
        "vol_scale_mean": float(np.mean(run.vol_scales[i0:])),
        "regime_share": {
            reg.value: float(np.mean(p.regimes[i0:] == reg.value)) for reg in REGIMES
        },
        "cost_bps": costs.cost_bps + costs.slippage_bps,
    }
    return out


def compare_policies(
    pipeline: PipelineRun,
    configs: Sequence[MetaAgentConfig],
    costs: CostModel | None = None,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Ensemble metrics and regret of several meta-agent configurations on one pipeline run."""
    out = {}
    for config in configs:
        result = evaluate(run_meta(pipeline, config), costs, start, end)
        label = f"{config.policy}/{config.context}/{config.mode}/{config.feedback}"
        out[label] = {
            "ensemble": result["ensemble"]["overall"],
            "regret": result["regret"]["overall"],
            "target": result["target"],
        }
    return out
