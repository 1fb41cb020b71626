"""The meta-agent: chooses and weights the four trading agents per regime, bar by bar.

A pure step, ``(MetaAgentState, MarketState, agent targets) -> (MetaAgentState, OrderIntent,
events)``, shared by the meta_agent Lambda, the local stack and the in-process backtester.

Order of operations at bar ``t`` (nothing from after ``t`` is used):

1. the realised return ``r_t = close_t / close_{t-1} - 1``;
2. each agent's reward for the position it held over ``(t-1, t]``: ``pos_i * r_t`` minus the cost
   of the trade it made at ``t-1``, divided by the EWMA volatility known at ``t-1`` (risk
   adjustment, so rewards have unit scale in every regime);
3. the learners of the regime current at ``t-1`` (and the global learner) are updated with those
   rewards (full information: every agent's counterfactual reward; or bandit feedback: only the
   played agent's) and the regret accumulators of that regime advance;
4. the agents' targets at ``t`` (computed by the caller from the features at ``t`` and each
   agent's own virtual position) are combined: hard selection of one agent or a blend with the
   learner's weights; with ``context="probability"`` the weights of the four regime learners
   are mixed by the regime probabilities at ``t``;
5. smoothing: when the leading agent changes, the position ramps to the new target over
   ``ramp_bars`` bars, a move smaller than ``no_trade_band`` is not made, and no bar moves the
   position by more than ``max_position_change`` (on a feature warm-up bar the target is flat,
   reached without a ramp or band, held back by the per-bar bound only);
6. the :class:`OrderIntent` (deterministic id), its explanation, and an :class:`AgentSwitched`
   event when the leading agent changed.

A bar the step cannot turn into finite state — a close more than :data:`MAX_PRICE_MOVE` times
away from the last applied one, an agent target beyond :data:`MAX_AGENT_TARGET`, an ``ewma_vol``
seed beyond :data:`MAX_SEED_VOL`, rewards a learner refuses — raises :class:`DataError` naming the
symbol, the time and the value before anything of it is kept, so the stage runner dead-letters
that record and keeps the symbol's state; every state the step returns loads back from its dump.

Regret: for each regime, the cumulative reward of every agent and of the meta-agent's choices
(the weights it used, before smoothing) over the bars that began in that regime. Regret against
the best agent in hindsight is ``max_i sum(reward_i) - sum(reward_meta)``, per regime and overall.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python

from ensemble_trader.domain.agents import no_trade_target
from ensemble_trader.domain.bandits import (
    POLICIES,
    Bandit,
    BanditError,
    RestartOnChange,
    Selection,
    bandit_from_dict,
    json_float,
    make_bandit,
)
from ensemble_trader.domain.errors import (
    DataError,
    FieldProblem,
    InvalidMessageError,
    StateError,
)
from ensemble_trader.domain.features import timestamp_ns
from ensemble_trader.domain.models import (
    REGIMES,
    MarketState,
    Message,
    OrderIntent,
    Probability,
    Regime,
    Symbol,
    Timestamp,
    deterministic_id,
    field_problems,
    make_intent_id,
)
from ensemble_trader.domain.numbers import is_real, real_number

DEFAULT_AGENT_NAMES: tuple[str, ...] = ("conservative", "aggressive", "balanced", "contrarian")
GLOBAL = "ALL"
"""Key of the learner that sees every bar, whatever the regime."""
RESERVED_POLICY_PARAMS = frozenset({"n_arms", "random_state"})
"""Bandit parameters the meta-agent sets itself (not allowed in ``policy_params``)."""
MAX_LEARNERS_BYTES = 300_000
"""The most a symbol's learners may take in the serialised state (its snapshot is one DynamoDB item)."""
STATE_FORMAT = 1
OVERLAY_STREAMS = ("market", "ensemble")
"""The return streams the volatility overlay can estimate (``vol_target`` other than "none"); a
state records which one its estimates are of (``MetaAgentState.overlay_source``)."""
MAX_PRICE_MOVE = 1_000.0
"""The largest factor by which a bar's close may differ from the last applied close (up or down).
A bigger jump between two bars (a close of 1e-99 among closes near 100) is taken for a bad print
and refused with a DataError, the state unchanged, so the next bar is measured against the last
good close: accepted, a glitch made the next bar's return and rewards astronomically large (a
reward beyond the learners' limit failed the symbol's every later record). No traded instrument
moves by a factor of 1,000 between two bars; an unadjusted reverse split can, and then every
later bar of the symbol is refused with this reason until the series is adjusted and the symbol
rebuilt (docs/runbook.md: drop its state, re-feed its bars). It also bounds every return the
step computes by 999, so squares and sums of returns stay finite."""
MAX_AGENT_TARGET = 100.0
"""The largest agent target (in size) the step accepts: ten times the largest leverage an agent
manifest allows. With :data:`MAX_PRICE_MOVE` it bounds the agents' net returns, and so their
variances and rewards (a target of 1e200 made its squared return infinite)."""
MAX_HALFLIFE = 1e6
"""The longest EWMA half-life, in bars, a configuration may give (``vol_halflife``,
``vol_target_halflife``, ``vol_target_long_halflife``): a million bars is more than any history
the step sees (four centuries of daily bars), and the decay ``0.5 ** (1 / h)`` must stay below 1
in float64 — from h ~ 6e15 it rounds to exactly 1, and the overlay's bias correction
``1 - decay ** n`` is 0, so every target was 0/0 = NaN."""
MAX_RAMP_BARS = 10_000
"""The most bars a ramp to a new leader may take (more than a ramp of any use; 10**400 bars
overflowed a float at the first change of leader)."""
MAX_SEED_VOL = 10.0
"""The largest ``ewma_vol`` feature (per bar) that may seed a fresh state's market volatility:
1,000 % a bar, beyond any series whose moves stay within :data:`MAX_PRICE_MOVE` (``|ln 1000|``
is 6.9); an ``ewma_vol`` of 1e160 made the seeded variance infinite, a state that cannot be stored."""

DEFAULT_POLICY_PARAMS: dict[str, dict[str, Any]] = {
    # Rewards are risk-adjusted (return / EWMA vol): roughly unit scale per bar.
    "ucb": {"alpha": 1.0},
    "ducb": {"alpha": 1.0, "gamma": 0.99},
    "swucb": {"alpha": 1.0, "window": 250},
    "thompson": {},
    "dts": {"gamma": 0.99},
    # GLR restarts: sigma 1 for unit-scale rewards; no forced exploration with full information
    "glrucb": {"alpha": 1.0, "sigma": 1.0, "delta": 0.01, "history": 250, "explore": 0.0, "min_segment": 20},
    "glrts": {"sigma": 1.0, "delta": 0.01, "history": 250, "explore": 0.0, "min_segment": 20},
    # Beta posteriors over rewards clipped from (-4, 4) into [0, 1], as EXP3's
    "betats": {"reward_range": (-4.0, 4.0)},
    "exp3": {"gamma": 0.05, "reward_range": (-4.0, 4.0), "discount": 0.995},
    "hedge": {"eta": 0.1, "discount": 1.0},
}
"""Hyperparameters used when a config names a policy without its own ``policy_params``."""


# ============================================================================================
# Configuration
# ============================================================================================


class MetaAgentConfig(BaseModel):
    """How the meta-agent chooses, combines and smooths (frozen; bad values raise on build).

    The defaults (Hedge with η = 0.1 and no discount; one learner per regime whose weights are
    shrunk toward the global learner's with a prior of 150 rounds; blending of risk-normalised
    targets; rewards per unit of each agent's own risk; full information; variance targeting on
    the market's volatility that only ever reduces exposure; a per-bar bound of 2.0) were chosen
    on validation data only — see docs/meta-agent.md, "Choosing the configuration".

    policy
        a bandit policy of :mod:`ensemble_trader.domain.bandits` (``ucb``, ``ducb``, ``swucb``,
        ``glrucb``, ``thompson``, ``dts``, ``glrts``, ``betats``, ``exp3``, ``hedge``); ``policy_params``
        overrides its hyperparameters (default :data:`DEFAULT_POLICY_PARAMS`).
    context
        ``regime``: one learner per reported regime (falling back to the global learner until
        it has ``min_regime_rounds`` updates); ``probability``: the regime learners' weights
        mixed by the regime probabilities; ``global``: one learner for every bar. With
        ``regime_prior_rounds`` = n0 > 0 a regime learner's blending weights are shrunk toward
        the global learner's, ``(n w_regime + n0 w_global) / (n + n0)`` after ``n`` updates.
    mode, blend_by
        ``select``: hold the chosen agent's target; ``blend``: the weighted mean of all targets
        (``blend_by="position"``) or of their risk-normalised targets, rescaled to the weighted
        risk of the agents (``"risk"``, see ``MetaAgentStep._combine``).
    feedback
        ``full``: every agent's counterfactual reward updates the learner; ``bandit``: only
        the reward of the agent that was drawn, importance-weighted by the probability it was
        drawn with (not with ``context="probability"`` and ``mode="select"``, which holds an
        agent no learner drew).
    max_position_change, ramp_bars, no_trade_band
        smoothing: the largest |Δposition| per bar, the number of bars over which the
        position moves to a new leading agent's target, and a no-trade band around the
        (ramped) target — a smaller move leaves the position alone, a larger one trades only to
        the band's near edge (0: off; the agents' own bands are in their model set).
    cost_bps, risk_adjustment, vol_halflife, agent_vol_floor
        the reward: ``pos * r - cost_bps/1e4 * |Δpos|`` (default 3 bp, the backtest CostModel's
        1 bp commission + 2 bp slippage), divided by a volatility known at the previous bar
        (EWMA, half-life ``vol_halflife`` bars): with ``risk_adjustment == "vol"`` the market's,
        the same for every agent (the learner maximises return per unit of market risk); with
        ``"agent_vol"`` each agent's own (floored at ``agent_vol_floor`` times the market's, and
        started at its first learned bar from its position's risk at the market's volatility), so
        the learner maximises each agent's return per unit of its own risk — a Sharpe ratio, the
        quantity the ensemble is judged on, which no longer favours an agent merely for taking
        bigger positions; ``"none"`` leaves rewards raw.
    shrinkage
        blending weights are ``(1 - shrinkage) * learned + shrinkage / N``: 0 trusts the
        learner, 1 is the equal(-risk) weight blend whatever the learner says — 1/N is hard to
        beat when the agents' differences are small against the noise of per-bar rewards.
    vol_target, vol_target_halflife, vol_target_long_halflife, vol_target_max_scale, vol_target_power
        a volatility-targeting overlay on the blended position, applied before the smoothing
        and the position cap: the position is multiplied by ``(target_vol / forecast_vol) **
        vol_target_power`` (1: volatility targeting; 2: variance targeting, exposure ∝ 1/σ², as
        in Moreira & Muir's volatility-managed portfolios), capped at ``vol_target_max_scale``
        (1: the overlay only ever reduces exposure); both are EWMA volatilities known at the bar — the
        forecast with half-life ``vol_target_halflife``, the target the long-run level of the
        same return stream (half-life ``vol_target_long_halflife``), so the overlay is unit-free
        (daily or hourly bars alike) and leaves the average exposure near its unscaled level.
        ``"market"`` (default): the stream is the market's returns; ``"ensemble"``: the returns
        of the unscaled blended position; ``"none"``: no overlay. Volatility clusters, so
        scaling exposure down when recent volatility is high raises the return per unit of risk.
    """

    # allow_inf_nan=False: JSON's 1e999 or Infinity (ET_META_CONFIG) would otherwise pass the bounds
    # and fail every bar later (a NaN target, a bandit error) instead of naming the option here.
    # The upper bounds of cost_bps, vol_floor, agent_vol_floor and vol_target_max_scale and the lower
    # ones of the floors keep, with the step's bounds on prices and targets (MAX_PRICE_MOVE,
    # MAX_AGENT_TARGET), every reward below 1e23 and every variance and position finite: vol_floor
    # 1e200 overflowed the agents' variance and cost_bps 1e300 gave rewards beyond the learners'
    # limit at every bar, floors of 1e-320 divided zero by zero. The half-lives and ramp_bars have
    # upper bounds for the same reason (MAX_HALFLIFE, MAX_RAMP_BARS).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    strategy_id: str = Field(default="ensemble", min_length=1, max_length=64)
    policy: str = "hedge"
    policy_params: dict[str, Any] | None = None
    context: Literal["regime", "probability", "global"] = "regime"
    mode: Literal["select", "blend"] = "blend"
    blend_by: Literal["position", "risk"] = "risk"
    feedback: Literal["full", "bandit"] = "full"
    min_regime_rounds: int = Field(default=20, ge=0)
    regime_prior_rounds: float = Field(default=150.0, ge=0.0)
    max_position_change: float = Field(default=2.0, gt=0.0)
    no_trade_band: float = Field(default=0.0, ge=0.0, le=2.0)
    ramp_bars: int = Field(default=3, ge=1, le=MAX_RAMP_BARS)
    max_position: float = Field(default=2.0, gt=0.0, le=2.0)
    cost_bps: float = Field(default=3.0, ge=0.0, le=10_000.0)  # at most the whole amount traded
    risk_adjustment: Literal["vol", "agent_vol", "none"] = "agent_vol"
    agent_vol_floor: float = Field(default=0.1, ge=1e-6, le=100.0)
    vol_halflife: float = Field(default=20.0, gt=0.0, le=MAX_HALFLIFE)
    vol_floor: float = Field(default=1e-4, ge=1e-12, le=1.0)
    shrinkage: float = Field(default=0.0, ge=0.0, le=1.0)
    vol_target: Literal["none", "market", "ensemble"] = "market"
    vol_target_halflife: float = Field(default=10.0, gt=0.0, le=MAX_HALFLIFE)
    vol_target_long_halflife: float = Field(default=250.0, gt=0.0, le=MAX_HALFLIFE)
    vol_target_max_scale: float = Field(default=1.0, gt=0.0, le=100.0)
    vol_target_power: float = Field(default=2.0, gt=0.0, le=2.0)
    random_state: int = 0

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_flags(cls, value: Any, info: ValidationInfo) -> Any:
        # JSON's true is Python's True, an int: ramp_bars=true passed as 1 and shrinkage=true as 1.0
        # (equal weights), as policy_params refuses for the hyperparameters
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation in (int, float):
            raise ValueError("must be a number, not true/false")
        return value

    @model_validator(mode="after")
    def _feedback_needs_a_drawn_arm(self) -> MetaAgentConfig:
        if self.feedback == "bandit" and self.context == "probability" and self.mode == "select":
            raise ValueError(
                "feedback='bandit' with context='probability' and mode='select' would credit an arm "
                "that was not held (the held agent is the arg-max of the mixed weights, which no "
                "learner drew): use feedback='full', mode='blend' or another context"
            )
        return self

    @classmethod
    def create(cls, **options: Any) -> MetaAgentConfig:
        """Build and validate; bad options raise :class:`InvalidMessageError` naming each one."""
        try:
            config = cls(**options)
        except ValidationError as exc:
            raise InvalidMessageError(cls.__name__, field_problems(exc, "<configuration>", cls.model_fields)) from None
        if config.policy not in POLICIES:
            raise InvalidMessageError(
                cls.__name__,
                [FieldProblem("policy", config.policy, f"unknown policy; known: {sorted(POLICIES)}")],
            )
        def bad_params(reason: str) -> InvalidMessageError:
            return InvalidMessageError(cls.__name__, [FieldProblem("policy_params", config.policy_params, reason)])

        reserved = sorted(RESERVED_POLICY_PARAMS & set(config.hyperparameters))
        if reserved:
            raise bad_params(f"{', '.join(reserved)} is set by the meta-agent (the number of agents, the "
                             f"configuration's random_state), not a hyperparameter")
        flags = sorted(name for name, value in config.hyperparameters.items() if _holds_a_bool(value))
        if flags:  # JSON's true is Python's True, an int: eta=true would pass as 1 and window=true as 1
            raise bad_params(f"{', '.join(flags)} must be a number, not true/false")
        try:  # bad hyperparameters fail here, not at a symbol's first bar
            learner = make_bandit(config.policy, len(DEFAULT_AGENT_NAMES), random_state=0, **config.hyperparameters)
        except BanditError as exc:
            raise bad_params(str(exc)) from None
        problem = _learners_too_big(learner, len(DEFAULT_AGENT_NAMES))
        if problem:
            raise bad_params(problem)
        return config

    @property
    def hyperparameters(self) -> dict[str, Any]:
        if self.policy_params is not None:
            return dict(self.policy_params)
        return dict(DEFAULT_POLICY_PARAMS.get(self.policy, {}))

    def fingerprint(self) -> str:
        """Short hash of every effective setting: part of the intent's model version.

        The hyperparameters hashed are the ones the learners get (:attr:`hyperparameters`, the
        policy's :data:`DEFAULT_POLICY_PARAMS` when ``policy_params`` is None): a release that
        changes those defaults is a new model version, so stored learners restart with the new
        settings (not the old ones kept beside new regime learners) and re-decided bars get new
        intent ids. They are hashed as the learner holds them (:meth:`canonical_policy_params`),
        so settings written differently but equal hash alike."""
        settings = self.model_dump(mode="json") | {"policy_params": to_jsonable_python(self.canonical_policy_params())}
        text = json.dumps(settings, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def canonical_policy_params(self) -> dict[str, Any]:
        """The learners' hyperparameters in one spelling for every way of writing them: each value
        as the learner stores it (``1`` → ``1.0``, ``[-4, 4]`` → ``[-4.0, 4.0]``), the parameters
        of :data:`_ALWAYS_HASHED` always, every other one only when it differs from the learner
        class's default — so ``{"eta": 0.1}``, ``{"eta": 0.1, "discount": 1}`` and leaving
        ``policy_params`` unset are one setting and one hash, and the hash of a configuration
        written in the canonical spelling (the default one included) is what it was before."""
        n = len(DEFAULT_AGENT_NAMES)
        given = make_bandit(self.policy, n, random_state=0, **self.hyperparameters).get_params()
        defaults = make_bandit(self.policy, n, random_state=0).get_params()
        always = _ALWAYS_HASHED.get(self.policy, ())
        return {name: value for name, value in given.items()
                if name not in RESERVED_POLICY_PARAMS and (name in always or value != defaults[name])}


_ALWAYS_HASHED: dict[str, tuple[str, ...]] = {
    "ucb": ("alpha",),
    "ducb": ("alpha", "gamma"),
    "swucb": ("alpha", "window"),
    "thompson": (),
    "dts": ("gamma",),
    "glrucb": ("alpha", "sigma", "delta", "history", "explore", "min_segment"),
    "glrts": ("sigma", "delta", "history", "explore", "min_segment"),
    "betats": ("reward_range",),
    "exp3": ("gamma", "reward_range", "discount"),
    "hedge": ("eta", "discount"),
}
"""The hyperparameters a configuration's hash always names, at whatever value: those
:data:`DEFAULT_POLICY_PARAMS` named when the hash was made canonical, so that the hash of the
default configuration and of ones written out in full did not move. Fixed on purpose: a later
change of the defaults changes the hash of the configurations that use them (their values),
never that of explicit ``policy_params``."""


def _holds_a_bool(value: Any) -> bool:
    """True if a hyperparameter is a bool or a list or tuple holding one."""
    values = value if isinstance(value, (list, tuple)) else (value,)
    return any(isinstance(v, (bool, np.bool_)) for v in values)


# ============================================================================================
# State
# ============================================================================================


@dataclass
class RegretLedger:
    """Cumulative rewards of each agent and of the meta-agent, per regime.

    ``agent_rewards[regime]`` (A,), ``meta_reward[regime]`` and ``bars[regime]`` count the bars
    that *began* in that regime (the regime when the positions were taken).
    """

    n_agents: int
    agent_rewards: dict[str, np.ndarray] = field(default_factory=dict)
    meta_reward: dict[str, float] = field(default_factory=dict)
    bars: dict[str, int] = field(default_factory=dict)

    def add(self, regime: str, agent_rewards: np.ndarray, meta_reward: float) -> None:
        if regime not in self.agent_rewards:
            self.agent_rewards[regime] = np.zeros(self.n_agents)
            self.meta_reward[regime] = 0.0
            self.bars[regime] = 0
        self.agent_rewards[regime] = self.agent_rewards[regime] + agent_rewards
        self.meta_reward[regime] += float(meta_reward)
        self.bars[regime] += 1

    def regret(self, regime: str) -> float:
        """Best agent's cumulative reward in ``regime`` minus the meta-agent's (0 if unseen)."""
        if regime not in self.agent_rewards:
            return 0.0
        return float(self.agent_rewards[regime].max() - self.meta_reward[regime])

    def totals(self) -> tuple[np.ndarray, float]:
        agents = np.zeros(self.n_agents)
        for v in self.agent_rewards.values():
            agents = agents + v
        return agents, float(sum(self.meta_reward.values()))

    def overall(self) -> float:
        """Regret against the single best agent over every bar."""
        agents, meta = self.totals()
        return float(agents.max() - meta) if self.bars else 0.0

    def summary(self, agent_names: Sequence[str]) -> dict[str, Any]:
        """Regret per regime and overall, with the best agent of each, for reports and metrics."""
        agents, meta = self.totals()
        by_regime = {
            r: {
                "regret": self.regret(r),
                "bars": self.bars[r],
                "best_agent": agent_names[int(np.argmax(self.agent_rewards[r]))],
                "meta_reward": self.meta_reward[r],
            }
            for r in sorted(self.agent_rewards, key=_regime_order)
        }
        return {
            "overall": self.overall(),
            "best_agent": agent_names[int(np.argmax(agents))] if self.bars else None,
            "meta_reward": meta,
            "agent_rewards": {n: float(v) for n, v in zip(agent_names, agents, strict=True)},
            "vs_regime_oracle": float(sum(v["regret"] for v in by_regime.values())),
            "by_regime": by_regime,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_rewards": {r: v.tolist() for r, v in self.agent_rewards.items()},
            "meta_reward": dict(self.meta_reward),
            "bars": dict(self.bars),
        }

    @classmethod
    def from_dict(cls, n_agents: int, data: Mapping[str, Any], symbol: str | None = None) -> RegretLedger:
        """The ledger of a stored state (of ``symbol``, for the errors): ``data`` and its three
        parts must be JSON objects, the rewards real numbers (not bools, not text) and the bar
        counts integers, or a StateError names the field."""
        reader = _StoredFields(symbol)
        parts = {name: reader.mapping(reader.mapping(data, "regret").get(name), f"regret.{name}")
                 for name in ("agent_rewards", "meta_reward", "bars")}
        return cls(
            n_agents,
            {r: reader.array(v, f"regret.agent_rewards.{r}") for r, v in parts["agent_rewards"].items()},
            {r: reader.real(v, f"regret.meta_reward.{r}") for r, v in parts["meta_reward"].items()},
            {r: reader.integer(v, f"regret.bars.{r}") for r, v in parts["bars"].items()},
        )

    def copy(self) -> RegretLedger:
        return RegretLedger(self.n_agents, dict(self.agent_rewards), dict(self.meta_reward), dict(self.bars))


class _StoredFields:
    """Type checks of a stored state's fields as JSON decodes them, each a StateError naming the
    field: ``int("5")``, ``int(2.9)`` and ``float(True)`` would otherwise take text, a fraction
    and a bool for numbers, and a list where an object belongs failed with an AttributeError."""

    def __init__(self, symbol: str | None) -> None:
        self.owner = "meta-agent state" if symbol is None else f"meta-agent state of {symbol}"

    def bad(self, name: str, what: str, value: Any) -> StateError:
        return StateError(f"{self.owner}: {name} must be {what} (got {value!r})")

    def mapping(self, value: Any, name: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.bad(name, "a JSON object", value)
        return value

    def integer(self, value: Any, name: str) -> int:
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
            raise self.bad(name, "an integer", value)
        return int(value)

    def real(self, value: Any, name: str, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if not is_real(value):
            raise self.bad(name, "a finite number", value)
        return real_number(value, str)  # an int beyond float64 is inf: refused by the finiteness checks

    def array(self, value: Any, name: str, optional: bool = False) -> np.ndarray | None:
        if value is None and optional:
            return None
        if not isinstance(value, list) or not all(is_real(v) for v in value):
            raise self.bad(name, "a list of numbers", value)
        try:
            return np.asarray(value, dtype=np.float64)
        except OverflowError:  # an int beyond float64
            raise self.bad(name, "a list of finite numbers", value) from None


def _regime_order(name: str) -> int:
    names = [r.value for r in REGIMES]
    return names.index(name) if name in names else len(names)


@dataclass
class MetaAgentState:
    """Everything the meta-agent remembers about one symbol (JSON round-trip via to_dict).

    ``agent_positions`` is each agent's *virtual* position (its last target, fed back into its
    observation); ``agent_costs`` the cost of the trade each made at the last bar;
    ``weights``/``arm`` what the meta-agent chose at the last bar (``arm_probability``: the
    probability the arm was drawn with, the importance weight of bandit feedback); ``position`` the smoothed
    ensemble target; ``blend`` the blended position before the volatility overlay,
    ``overlay_variance`` the overlay's zero-started EWMA accumulators ``[forecast, long-run,
    bars]``, ``overlay_source`` the return stream they are of (``"market"`` or ``"ensemble"``;
    None without estimates, or in a state stored before it was recorded: see
    :meth:`MetaAgentStep.overlay_estimates`) and ``vol_scale`` the scale the overlay applied at
    the last bar; ``version`` the number of bars applied (the snapshot's version);
    ``model_version`` the step's (agent set + configuration) that wrote it — a step with another
    model version restarts the learners (:meth:`MetaAgentStep.restart`).
    """

    symbol: str
    learners: dict[str, Bandit]
    agent_positions: np.ndarray
    agent_costs: np.ndarray
    weights: np.ndarray
    regret: RegretLedger
    arm: int | None = None
    arm_probability: float | None = None
    leader: int | None = None
    position: float = 0.0
    ramp_left: int = 0
    last_price: float | None = None
    last_timestamp: datetime | None = None
    last_regime: str | None = None
    last_rewards: np.ndarray | None = None
    variance: float | None = None
    agent_variance: np.ndarray | None = None
    blend: float | None = None
    overlay_variance: np.ndarray | None = None
    overlay_source: str | None = None
    vol_scale: float = 1.0
    version: int = 0
    model_version: str = ""

    def copy(self) -> MetaAgentState:
        """A shallow copy whose learners dict and ledger can be changed without touching self
        (learners themselves are copied on write by the step)."""
        return MetaAgentState(
            symbol=self.symbol,
            learners=dict(self.learners),
            agent_positions=self.agent_positions.copy(),
            agent_costs=self.agent_costs.copy(),
            weights=self.weights.copy(),
            regret=self.regret.copy(),
            arm=self.arm,
            arm_probability=self.arm_probability,
            leader=self.leader,
            position=self.position,
            ramp_left=self.ramp_left,
            last_price=self.last_price,
            last_timestamp=self.last_timestamp,
            last_regime=self.last_regime,
            last_rewards=None if self.last_rewards is None else self.last_rewards.copy(),
            variance=self.variance,
            agent_variance=None if self.agent_variance is None else self.agent_variance.copy(),
            blend=self.blend,
            overlay_variance=None if self.overlay_variance is None else self.overlay_variance.copy(),
            overlay_source=self.overlay_source,
            vol_scale=self.vol_scale,
            version=self.version,
            model_version=self.model_version,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "symbol": self.symbol,
            "learners": {k: v.to_dict() for k, v in self.learners.items()},
            "agent_positions": self.agent_positions.tolist(),
            "agent_costs": self.agent_costs.tolist(),
            "weights": self.weights.tolist(),
            "regret": self.regret.to_dict(),
            "arm": self.arm,
            "arm_probability": self.arm_probability,
            "leader": self.leader,
            "position": self.position,
            "ramp_left": self.ramp_left,
            "last_price": self.last_price,
            "last_timestamp": None if self.last_timestamp is None else self.last_timestamp.isoformat(),
            "last_regime": self.last_regime,
            "last_rewards": None if self.last_rewards is None else self.last_rewards.tolist(),
            "variance": self.variance,
            "agent_variance": None if self.agent_variance is None else self.agent_variance.tolist(),
            "blend": self.blend,
            "overlay_variance": None if self.overlay_variance is None else self.overlay_variance.tolist(),
            "overlay_source": self.overlay_source,
            "vol_scale": self.vol_scale,
            "version": self.version,
            "model_version": self.model_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetaAgentState:
        try:
            if data.get("format") != STATE_FORMAT:
                raise StateError(f"meta-agent state format {data.get('format')!r}, expected {STATE_FORMAT}")
            symbol = data["symbol"]
            if not isinstance(symbol, str):
                raise StateError(f"meta-agent state: symbol must be a string (got {symbol!r})")
            read = _StoredFields(symbol)
            positions = read.array(data["agent_positions"], "agent_positions")
            ts = data["last_timestamp"]
            model_version = data.get("model_version", "")
            if not isinstance(model_version, str):
                raise read.bad("model_version", "a string", model_version)
            # absent from states stored before 2026-11-29: None, resolved by the step that reads
            # the state (MetaAgentStep.overlay_estimates)
            overlay_source = data.get("overlay_source")
            if overlay_source is not None and overlay_source not in OVERLAY_STREAMS:
                raise read.bad("overlay_source", f"one of {', '.join(OVERLAY_STREAMS)} or null", overlay_source)
            return cls(
                symbol=symbol,
                learners={k: bandit_from_dict(v) for k, v in read.mapping(data["learners"], "learners").items()},
                agent_positions=positions,
                agent_costs=read.array(data["agent_costs"], "agent_costs"),
                weights=read.array(data["weights"], "weights"),
                regret=RegretLedger.from_dict(positions.size, data["regret"], symbol),
                arm=data["arm"],
                arm_probability=read.real(data.get("arm_probability"), "arm_probability", optional=True),
                leader=data["leader"],
                position=read.real(data["position"], "position"),
                ramp_left=read.integer(data["ramp_left"], "ramp_left"),
                last_price=read.real(data["last_price"], "last_price", optional=True),
                last_timestamp=None if ts is None else datetime.fromisoformat(ts),
                last_regime=data["last_regime"],
                last_rewards=read.array(data["last_rewards"], "last_rewards", optional=True),
                variance=read.real(data["variance"], "variance", optional=True),
                agent_variance=read.array(data.get("agent_variance"), "agent_variance", optional=True),
                blend=read.real(data.get("blend"), "blend", optional=True),
                overlay_variance=read.array(data.get("overlay_variance"), "overlay_variance", optional=True),
                overlay_source=overlay_source,
                vol_scale=read.real(data.get("vol_scale", 1.0), "vol_scale"),
                version=read.integer(data["version"], "version"),
                model_version=model_version,
            )._checked()
        except StateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"cannot decode meta-agent state: {type(exc).__name__}: {exc}") from exc

    def _checked(self) -> MetaAgentState:
        """Self, after checking that every part fits the others (shapes, ranges, finiteness): a
        decoded state that does not is a StateError here, not an untyped error in a later step."""
        n = self.agent_positions.size

        def bad(what: str, value: Any) -> StateError:
            return StateError(f"meta-agent state of {self.symbol}: {what} (got {value!r})")

        if self.agent_positions.ndim != 1 or n < 1:
            raise bad("agent_positions must be a non-empty list", self.agent_positions.tolist())
        arrays = {"agent_positions": self.agent_positions, "agent_costs": self.agent_costs,
                  "weights": self.weights, "last_rewards": self.last_rewards, "agent_variance": self.agent_variance}
        for name, arr in arrays.items():
            if arr is not None and (arr.shape != (n,) or not np.all(np.isfinite(arr))):
                raise bad(f"{name} must hold {n} finite numbers, one per agent", arr.tolist())
        for name, arr in (("weights", self.weights), ("agent_costs", self.agent_costs),
                          ("agent_variance", self.agent_variance)):
            if arr is not None and np.any(arr < 0.0):
                raise bad(f"{name} must not be negative", arr.tolist())
        ov = self.overlay_variance
        if ov is not None and (ov.shape != (3,) or not np.all(np.isfinite(ov)) or np.any(ov < 0.0)):
            raise bad("overlay_variance must be 3 finite non-negative numbers", ov.tolist())
        if self.overlay_source is not None and ov is None:
            raise bad("overlay_source names the stream of estimates the state does not hold", self.overlay_source)
        for name, index in (("leader", self.leader), ("arm", self.arm)):
            if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n):
                raise bad(f"{name} must be an agent index in [0, {n})", index)
        if self.arm_probability is not None and not 0.0 < self.arm_probability <= 1.0:
            raise bad("arm_probability must be in (0, 1]", self.arm_probability)
        for name, value, low in (("position", self.position, -2.0), ("blend", self.blend, -math.inf),
                                 ("vol_scale", self.vol_scale, 0.0), ("variance", self.variance, 0.0)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
                raise bad(f"{name} must be a finite number ≥ {low}", value)
        if abs(self.position) > 2.0:
            raise bad("position must lie in [-2, 2]", self.position)
        if self.last_price is not None and not (
            isinstance(self.last_price, (int, float)) and math.isfinite(self.last_price) and self.last_price > 0.0
        ):
            raise bad("last_price must be a finite number > 0", self.last_price)
        if self.last_timestamp is not None and self.last_timestamp.utcoffset() is None:
            raise bad("last_timestamp must carry a time zone", self.last_timestamp.isoformat())
        if self.last_regime is not None and self.last_regime not in {r.value for r in REGIMES}:
            raise bad("last_regime must be a regime name", self.last_regime)
        if self.ramp_left < 0 or self.version < 0:
            raise bad("ramp_left and version must not be negative", (self.ramp_left, self.version))
        for key, learner in self.learners.items():
            if learner.n_arms != n:
                raise bad(f"learner {key} must have one arm per agent ({n})", learner.n_arms)
        ledger, regimes = self.regret, {r.value for r in REGIMES}
        if not set(ledger.agent_rewards) <= regimes:
            raise bad("regret must be kept per regime name", sorted(set(ledger.agent_rewards) - regimes))
        if set(ledger.meta_reward) != set(ledger.agent_rewards) or set(ledger.bars) != set(ledger.agent_rewards):
            raise bad("regret's agent rewards, meta reward and bars must name the same regimes",
                      [sorted(ledger.agent_rewards), sorted(ledger.meta_reward), sorted(ledger.bars)])
        for regime, rewards in ledger.agent_rewards.items():
            if rewards.shape != (n,) or not np.all(np.isfinite(rewards)):
                raise bad(f"regret of {regime} must hold {n} finite numbers", rewards.tolist())
            if not math.isfinite(ledger.meta_reward[regime]) or ledger.bars[regime] < 0:
                raise bad(f"regret of {regime} must have a finite meta reward and a bar count ≥ 0",
                          (ledger.meta_reward[regime], ledger.bars[regime]))
        return self

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> MetaAgentState:
        try:
            decoded = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"meta-agent state is not valid JSON: {exc}") from exc
        if not isinstance(decoded, dict):
            raise StateError("meta-agent state must be a JSON object")
        return cls.from_dict(decoded)


# ============================================================================================
# Events and outputs
# ============================================================================================


class AgentSwitched(Message):
    """The meta-agent's leading agent for a symbol changed at a bar (to EventBridge)."""

    event_id: str
    symbol: Symbol
    timestamp: Timestamp
    from_agent: str
    to_agent: str
    regime: Regime
    confidence: Probability
    weights: dict[str, Probability]
    reason: str
    intent_id: str


@dataclass(frozen=True)
class MetaDecision:
    """What one MarketState produces. ``intent`` is None only for a redelivered bar."""

    intent: OrderIntent | None
    events: tuple[AgentSwitched, ...] = ()
    agent_targets: np.ndarray | None = None
    agent_rewards: np.ndarray | None = None
    meta_reward: float | None = None


class AgentPolicy(Protocol):
    """What the step needs from the agents (``domain.agents.AgentPool`` satisfies it)."""

    names: tuple[str, ...]
    version: str
    feature_names: tuple[str, ...]
    feature_version: str  # the FEATURE_VERSION the agents were trained on

    def act(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray: ...


# ============================================================================================
# The step
# ============================================================================================


def _learners_too_big(learner: Bandit, n_agents: int) -> str | None:
    """Why a symbol's learners (the global one and one per regime, like ``learner``) would not fit
    in its state item, or None."""
    size = (1 + len(REGIMES)) * learner.size_bound()
    if size <= MAX_LEARNERS_BYTES:
        return None
    return (f"the {1 + len(REGIMES)} learners of a symbol ({n_agents} agents) would take up to "
            f"{size / 1e3:,.0f} KB of state (at most {MAX_LEARNERS_BYTES / 1e3:,.0f} KB: a DynamoDB item "
            f"holds 400 KB): use a smaller {'history' if isinstance(learner, RestartOnChange) else 'window'}")


class MetaAgentStep:
    """The meta-agent stage as a pure step (see the module docstring for the order of work).

    ``decide(state, market_state, targets)`` takes the agents' targets from the caller (tests,
    vectorised backtests); ``__call__(state, market_state)`` asks ``agents`` for them, feeding
    each agent its own virtual position.
    """

    name = "meta_agent"
    pure_states = True
    """``apply`` never changes the state it is given (learners are copied before they change or
    draw), so the stage runner may reuse a state it decoded or stored (see runtime.stage)."""

    def __init__(
        self,
        config: MetaAgentConfig | None = None,
        agents: AgentPolicy | None = None,
        *,
        agent_names: Sequence[str] | None = None,
        agent_version: str | None = None,
    ):
        self.config = config or MetaAgentConfig()
        self.agents = agents
        names = agent_names or (agents.names if agents is not None else DEFAULT_AGENT_NAMES)
        self.agent_names: tuple[str, ...] = tuple(names)
        version = agent_version or (agents.version if agents is not None else "none")
        self.model_version = f"{version}+meta-{self.config.fingerprint()}"
        self._n = len(self.agent_names)
        if self._n != len(DEFAULT_AGENT_NAMES):  # the configuration checked the size for four agents
            cfg = self.config
            problem = _learners_too_big(make_bandit(cfg.policy, self._n, random_state=0, **cfg.hyperparameters),
                                        self._n)
            if problem:
                raise InvalidMessageError(type(cfg).__name__,
                                          [FieldProblem("policy_params", cfg.policy_params, problem)])
        self._decay = 0.5 ** (1.0 / self.config.vol_halflife)
        self._overlay_decay = 0.5 ** (
            1.0 / np.array([self.config.vol_target_halflife, self.config.vol_target_long_halflife])
        )
        cap, power = self.config.vol_target_max_scale, self.config.vol_target_power
        try:  # the vol ratio at which the overlay's scale reaches its cap (beyond float: never)
            self._scale_cap_ratio = cap ** (1.0 / power)
        except OverflowError:
            self._scale_cap_ratio = math.inf

    # ---- the stage runner's SymbolStep protocol ------------------------------------------

    input_model: type[MarketState] = MarketState

    def key(self, symbol: str) -> str:
        """Cache key of a symbol's state."""
        return f"{self.name}:{symbol}"

    @staticmethod
    def symbol_of(message: MarketState) -> str:
        return message.symbol

    @staticmethod
    def message_sequence(message: MarketState) -> int:
        return timestamp_ns(message.timestamp)

    @staticmethod
    def sequence(state: MetaAgentState) -> int | None:
        """The last applied bar (ns since the epoch): records at or before it are no-ops."""
        return None if state.last_timestamp is None else timestamp_ns(state.last_timestamp)

    @staticmethod
    def load(data: bytes) -> MetaAgentState:
        return MetaAgentState.from_bytes(data)

    @staticmethod
    def dump(state: MetaAgentState) -> bytes:
        return state.to_bytes()

    def apply(
        self, state: MetaAgentState, message: MarketState
    ) -> tuple[MetaAgentState, list[OrderIntent], list[AgentSwitched]]:
        """One record for the stage runner: (new state, [intent], [AgentSwitched...])."""
        new, decision = self(state, message)
        return new, [] if decision.intent is None else [decision.intent], list(decision.events)

    def new_learner(self, symbol: str, context: str) -> Bandit:
        """A fresh learner for ``context`` of ``symbol``, seeded from the configuration's
        ``random_state``, the symbol and the context, so the randomised policies of two symbols
        (or two regimes) draw independent sequences."""
        seed = int(deterministic_id(self.config.random_state, symbol, context, length=8), 16)
        return make_bandit(self.config.policy, self._n, random_state=seed, **self.config.hyperparameters)

    def new_state(self, symbol: str) -> MetaAgentState:
        return MetaAgentState(
            symbol=symbol,
            learners={GLOBAL: self.new_learner(symbol, GLOBAL)},
            agent_positions=np.zeros(self._n),
            agent_costs=np.zeros(self._n),
            weights=np.full(self._n, 1.0 / self._n),
            regret=RegretLedger(self._n),
            model_version=self.model_version,
        )

    def restart(self, state: MetaAgentState) -> MetaAgentState:
        """A state saved under another model version (agent set or configuration): fresh learners,
        agents and regret, but the same book (position, last price and time, market volatility,
        and the overlay's estimates when they and this configuration's overlay are of the market's
        returns, :meth:`overlay_estimates`), so the position moves on
        smoothly and a redelivered bar is still a no-op. With the same number of agents the last
        weights and leader are kept too: a new leader under the new version is a switch
        (AgentSwitched, a ramp), and the explanation's "previous" is what was held. Either way the
        position ramps (``ramp_bars``, or what is left of a longer ramp in progress) to what the
        fresh learners blend: under equal weights the old leader stays leader by a tie, so no
        switch starts a ramp, and the position jumped to the equal-weight blend in one bar (+1.0
        to -0.5 on a change of ``cost_bps`` alone, until 2026-11-29). The agents' volatilities
        start again from their positions at the market's volatility."""
        fresh = self.new_state(state.symbol)
        fresh.position = state.position
        fresh.last_price = state.last_price
        fresh.last_timestamp = state.last_timestamp
        fresh.last_regime = state.last_regime
        fresh.variance = state.variance
        fresh.version = state.version
        estimates, _ = self.overlay_estimates(state)
        if estimates is not None:  # the market's returns, as this overlay's: no agent in them
            fresh.overlay_variance = estimates.copy()
            fresh.overlay_source = self.config.vol_target
            fresh.vol_scale = state.vol_scale
        if len(state.weights) == self._n:
            fresh.weights = state.weights.copy()
            fresh.leader = state.leader
        fresh.ramp_left = max(state.ramp_left, self.config.ramp_bars)
        return fresh

    def overlay_estimates(self, state: MetaAgentState) -> tuple[np.ndarray | None, str | None]:
        """The overlay's estimates of ``state`` this step goes on with, and when it has some it
        does not (they are started afresh), why: (estimates, None), (None, reason) or (None, None).

        They must be of this configuration's stream (``vol_target``): the ensemble's returns are
        its blended position times the market's, a tenth of the market's at a blend of 0.1, so one
        stream's estimates read as the other's put the overlay's scale off for hundreds of bars
        (the long-run estimate's half-life is 250 bars). The ensemble's returns are those of the
        model version that held it, so under another model version only the market's go on. A
        state stored before the stream was recorded (``overlay_source`` None) holds this
        configuration's stream if this model version wrote it — the version hashes
        ``vol_target`` — and an unknown one otherwise."""
        cfg = self.config
        if state.overlay_variance is None or cfg.vol_target == "none":
            return None, None
        same_version = state.model_version == self.model_version
        source = state.overlay_source
        if source is None and same_version:  # stored before 2026-11-29 by this configuration
            source = cfg.vol_target
        if source is None:
            return None, ("the stream of the stored estimates was not recorded (a state saved before "
                          "2026-11-29 under another model version)")
        if source != cfg.vol_target:
            return None, f"the stored estimates were of the {source}'s returns"
        if source == "ensemble" and not same_version:
            return None, "the stored estimates were of another model version's ensemble"
        return state.overlay_variance, None

    # ---- the step --------------------------------------------------------------------------

    def features_of(self, market: MarketState) -> np.ndarray:
        """The feature vector in the agents' order (a missing feature, or features computed by
        other formulas than the agents were trained on, raise DataError)."""
        names = self.agents.feature_names if self.agents is not None else ()
        trained_on = self.agents.feature_version if self.agents is not None else market.features.feature_version
        if market.features.feature_version != trained_on:
            raise DataError(
                f"{market.symbol}@{market.timestamp.isoformat()}: features of version "
                f"{market.features.feature_version!r}, but the agents were trained on version {trained_on!r}"
            )
        values = market.features.values
        try:
            return np.array([values[n] for n in names], dtype=np.float64)
        except KeyError as exc:
            raise DataError(
                f"{market.symbol}@{market.timestamp.isoformat()}: feature {exc.args[0]!r} needed by the "
                f"agents is missing from the MarketState"
            ) from None

    def __call__(
        self, state: MetaAgentState | None, market: MarketState
    ) -> tuple[MetaAgentState, MetaDecision]:
        if self.agents is None:
            raise DataError("MetaAgentStep was built without agents: call decide() with targets")
        if state is not None and state.last_timestamp is not None and market.timestamp <= state.last_timestamp:
            return state, MetaDecision(None)
        current = state if state is not None else self.new_state(market.symbol)
        if current.model_version != self.model_version:
            current = self.restart(current)  # the agents see the virtual positions decide() books
        if market.features.ready:
            targets = self.agents.act(self.features_of(market), current.agent_positions)
        else:
            targets = np.zeros(self._n)
        # the state as stored: decide() restarts it the same way (a pure, seeded restart), and
        # explains what of it the restart did not keep
        return self.decide(current if state is None else state, market, targets)

    def decide(
        self, state: MetaAgentState | None, market: MarketState, targets: np.ndarray
    ) -> tuple[MetaAgentState, MetaDecision]:
        """One bar: learn from (t-1, t], then choose at t. ``targets`` are the agents' at t."""
        if state is None:
            state = self.new_state(market.symbol)
        elif state.symbol != market.symbol:
            raise DataError(f"state of {state.symbol} given a MarketState of {market.symbol}")
        if state.last_timestamp is not None and market.timestamp <= state.last_timestamp:
            return state, MetaDecision(None)  # redelivery (or out of order): no-op
        targets = self.check_targets(market, targets)
        # the overlay's estimates go on only if they are of this configuration's stream (else they
        # start afresh, and the explanation says why): decided on the state as stored
        overlay_estimates, overlay_restarted = self.overlay_estimates(state)
        if state.model_version != self.model_version:
            state = self.restart(state)
        cfg = self.config
        price = market.features.bar.close
        if state.last_price is not None:
            ratio = price / state.last_price
            if not 1.0 / MAX_PRICE_MOVE <= ratio <= MAX_PRICE_MOVE:  # see MAX_PRICE_MOVE
                when = None if state.last_timestamp is None else state.last_timestamp.isoformat()
                raise DataError(
                    f"{market.symbol}@{market.timestamp.isoformat()}: close {price!r} is {ratio:.3g} times the "
                    f"last applied close {state.last_price!r} (at {when}); a move by more than a factor of "
                    f"{MAX_PRICE_MOVE:,.0f} between two bars is taken for a bad print (the state keeps the "
                    f"last applied close)"
                )
        new = state.copy()

        # 1-3. learn from the bar that just ended (only if the agents held positions over it)
        copied: set[str] = set()
        rewards = meta_reward = None
        if state.last_price is not None:
            r = ratio - 1.0
            # a risk-adjusted reward needs the market's volatility as known at t-1 (a state that
            # starts on a ready bar is seeded from the features below; one that starts in the
            # warm-up estimates it from its own returns)
            scale_known = cfg.risk_adjustment == "none" or state.variance is not None
            if state.arm is not None and state.last_regime is not None and scale_known:
                net = state.agent_positions * r - state.agent_costs
                # the agents' volatilities known at t-1: at their first learned bar (a fresh state,
                # a restart) seeded from the risk of the positions held at the market's volatility
                agent_variance = self._agent_variance_seed(state)
                rewards = net / self._risk_scale(state, agent_variance)
                new.agent_variance = self._decay * agent_variance + (1.0 - self._decay) * net * net
                meta_reward = float(state.weights @ rewards)
                try:  # the learners refuse what they cannot hold (EXP3/Hedge: a log-weight overflowing)
                    self._learn(new, copied, state.last_regime, state.arm, state.arm_probability, rewards)
                except BanditError as exc:  # nothing of the new state is kept: the old one stays
                    raise DataError(
                        f"{market.symbol}@{market.timestamp.isoformat()}: the learners cannot take the rewards "
                        f"{rewards.tolist()} of the return {r!r} (close {price!r} after {state.last_price!r}): {exc}"
                    ) from None
                new.regret.add(state.last_regime, rewards, meta_reward)
            new.variance = (
                r * r
                if state.variance is None
                else self._decay * state.variance + (1.0 - self._decay) * r * r
            )
            new.overlay_variance = self._overlay_update(state, overlay_estimates, r)
        elif market.features.ready:
            # a state that starts on a ready bar (a deployment on a running stream, a lost
            # snapshot) would take its whole volatility estimate from its first return, and a flat
            # first bar would divide the next rewards by the 1e-4 floor (rewards 100 times their
            # size, a weight gap Hedge never closes): the features' EWMA volatility seeds it
            seed = market.features.values.get("ewma_vol")
            if seed is not None and seed > MAX_SEED_VOL:
                raise DataError(
                    f"{market.symbol}@{market.timestamp.isoformat()}: ewma_vol {seed!r} cannot seed the market's "
                    f"volatility (at most {MAX_SEED_VOL:g} a bar)"
                )
            if seed is not None and math.isfinite(seed) and seed > 0.0:
                new.variance = seed * seed
        if state.last_price is None:
            new.overlay_variance = overlay_estimates
        new.overlay_source = None if new.overlay_variance is None else cfg.vol_target
        new.last_rewards = rewards

        # 4. choose at t
        regime = market.regime.regime
        mixed = None
        if market.features.ready:
            weights, selection, learner_key, mixed = self._choose(new, copied, market)
            arm = selection.arm
            arm_probability = float(selection.weights[arm])
        else:
            weights, selection, learner_key = np.full(self._n, 1.0 / self._n), None, None
            arm = arm_probability = None
            targets = np.zeros(self._n)
        blend = self._combine(weights, targets, new.agent_variance, new.variance)
        scale = self._vol_scale(new.overlay_variance) if selection is not None else 1.0
        desired = blend * scale
        leader = None if learner_key is None else self._leader(weights, state.leader,
                                                               self._leader_tolerance(new.learners[learner_key]))

        # 5. smooth (a warm-up bar goes flat: no ramp — one under way is dropped — and no band;
        # only the per-bar bound, a risk rule, holds it back)
        switched = leader is not None and state.leader is not None and leader != state.leader
        warming = selection is None
        ramp_left = 0 if warming else cfg.ramp_bars if switched else state.ramp_left
        position = state.position
        step_target = desired
        if ramp_left > 0:
            step_target = position + (desired - position) / ramp_left
            ramp_left -= 1
        ramped = step_target
        if cfg.no_trade_band > 0.0 and not warming:  # hold inside the band, trade to its near edge outside it
            step_target = float(no_trade_target(position, step_target, cfg.no_trade_band))
        delta = float(np.clip(step_target - position, -cfg.max_position_change, cfg.max_position_change))
        new_position = float(np.clip(position + delta, -cfg.max_position, cfg.max_position))
        # which smoothing held the position back from the desired one at this bar
        held = {
            "ramping": abs(ramped - desired) > 1e-12,  # a ramp to a new leader is part way
            "banded": abs(step_target - ramped) > 1e-12,  # the no-trade band held or shortened the move
            "capped": abs(new_position - step_target) > 1e-12,  # the per-bar bound or max_position bound
        }

        # bookkeeping for the next bar
        cost = cfg.cost_bps * 1e-4
        new.agent_costs = cost * np.abs(targets - state.agent_positions)
        new.agent_positions = targets
        new.weights = weights
        new.arm = arm
        new.arm_probability = arm_probability
        new.leader = leader if leader is not None else state.leader
        new.position = new_position
        new.blend = blend if selection is not None else None
        new.vol_scale = scale
        new.ramp_left = ramp_left
        new.last_price = price
        new.last_timestamp = market.timestamp
        new.last_regime = regime.value
        new.version = state.version + 1

        # 6. intent, explanation, events
        intent_id = make_intent_id(cfg.strategy_id, market.symbol, market.timestamp, self.model_version)
        detail = self._detail(
            state, new, market, targets, weights, selection, learner_key, desired, switched, held, mixed,
            overlay_restarted,
        )
        intent = OrderIntent(
            intent_id=intent_id,
            strategy_id=cfg.strategy_id,
            symbol=market.symbol,
            timestamp=market.timestamp,
            target_position=new_position,
            reference_price=price,
            model_version=self.model_version,
            regime=regime,
            confidence=market.regime.confidence,
            agent_weights={n: float(w) for n, w in zip(self.agent_names, weights, strict=True)},
            explanation=self._one_line(
                state, new, market, weights, selection, desired, switched,
                detail["why"] + self._overlay_phrase(detail["vol_target"]), held,
                detail.get("change_detected"),
            ),
            explanation_detail=detail,
        )
        events: tuple[AgentSwitched, ...] = ()
        if switched and leader is not None and state.leader is not None:
            events = (
                AgentSwitched(
                    event_id=deterministic_id("agent-switched", intent_id),
                    symbol=market.symbol,
                    timestamp=market.timestamp,
                    from_agent=self.agent_names[state.leader],
                    to_agent=self.agent_names[leader],
                    regime=regime,
                    confidence=market.regime.confidence,
                    weights=intent.agent_weights,
                    reason=detail["why"],
                    intent_id=intent_id,
                ),
            )
        return new, MetaDecision(intent, events, targets, rewards, meta_reward)

    # ---- parts of the step ---------------------------------------------------------------

    def check_targets(self, market: MarketState, targets: np.ndarray) -> np.ndarray:
        """The agents' targets checked (one finite value per agent, at most
        :data:`MAX_AGENT_TARGET` in size): what the step books as their virtual positions, as the
        agents chose them — an agent is fed and judged on its own positions; ``max_position``
        bounds the ensemble's position, not what the agents want."""
        arr = np.asarray(targets, dtype=np.float64).reshape(-1)
        if arr.shape != (self._n,):
            raise DataError(
                f"{market.symbol}@{market.timestamp.isoformat()}: expected {self._n} agent targets "
                f"({', '.join(self.agent_names)}), got shape {np.shape(targets)}"
            )
        ok = np.abs(arr) <= MAX_AGENT_TARGET  # false for NaN too
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise DataError(
                f"{market.symbol}@{market.timestamp.isoformat()}: target of agent "
                f"{self.agent_names[bad]} is {float(arr[bad])!r} (a target must be finite and at most "
                f"{MAX_AGENT_TARGET:g} in size)"
            )
        return arr

    def _leader_tolerance(self, learner: Bandit) -> float:
        """How far the previous leader's weight may trail the largest and still lead.

        In select mode none: the weights are the held agent's one-hot, and the leader is the agent
        held (a tolerance of 1, Thompson's noise with 9 draws or fewer, kept a leader held on no
        bar). In blend mode the weights' own noise (Thompson's win frequencies; 0 for the other
        policies), at most ``1 / N``: a larger tolerance would let a leader stay behind a weight
        vector that is not even close to equal (the largest weight of any vector with a zero
        exceeds ``1 / N``), so with too few posterior draws the lead would never pass."""
        if self.config.mode == "select":
            return 0.0
        return min(learner.weights_noise, 1.0 / self._n)

    @staticmethod
    def _leader(weights: np.ndarray, previous: int | None, tolerance: float) -> int:
        """The agent with the largest weight; the previous leader stays while its weight is
        positive and within ``tolerance`` of the largest (exact ties included), so Monte-Carlo
        weights do not switch — and restart the ramp — on sampling noise alone."""
        top = int(np.argmax(weights))
        if previous is not None and weights[previous] > 0.0 and weights[previous] >= weights[top] - tolerance:
            return previous
        return top

    def _combine(
        self,
        weights: np.ndarray,
        targets: np.ndarray,
        agent_variance: np.ndarray | None,
        market_variance: float | None,
    ) -> float:
        """The desired position: ``sum w_i p_i``, or with ``blend_by == "risk"`` the blend of the
        agents' risk-normalised targets ``p_i / s_i`` brought back to the weighted risk
        ``sum w_i s_i`` (``s_i`` = each agent's EWMA return volatility, floored as in the
        rewards at ``agent_vol_floor`` times the market's), so an agent that takes small
        positions is not drowned by agents that take large ones at low weight. The floor keeps
        an agent that has been flat in the blend (its weight pulls toward flat) and bounds the
        pull of one that has only just entered a position. The risk blend is not a weighted
        mean: agents of unequal risk can carry it past every target (two agents at +1, one of
        them just in at the volatility floor, blend to +3), so it is clipped to the range of the
        weighted agents' targets — the ensemble never holds a position no agent wants."""
        if self.config.blend_by == "position" or agent_variance is None:
            return float(weights @ targets)
        sigma = self._agent_vols(agent_variance, market_variance)
        blend = float((weights @ (targets / sigma)) * (weights @ sigma))
        held = [t for t, w in zip(targets.tolist(), weights.tolist(), strict=True) if w > 0.0]  # 4 numbers:
        return min(max(blend, min(held)), max(held)) if held else blend  # plain Python is 5x numpy here

    def _overlay_update(self, state: MetaAgentState, estimates: np.ndarray | None, r: float) -> np.ndarray | None:
        """The overlay's EWMA accumulators after the bar's return: ``[forecast, long-run, bars]``
        (zero-started, bias-corrected in :meth:`overlay_vols`), from ``estimates``, the state's
        that this step goes on with (:meth:`overlay_estimates`; None: from zero)."""
        cfg = self.config
        if cfg.vol_target == "none":
            return None
        if cfg.vol_target == "ensemble":
            if state.blend is None:  # the ensemble held nothing yet: no return to learn from
                return estimates
            x = state.blend * r
        else:
            x = r
        acc = np.zeros(3) if estimates is None else estimates
        out = np.empty(3)
        out[:2] = self._overlay_decay * acc[:2] + (1.0 - self._overlay_decay) * x * x
        out[2] = acc[2] + 1.0
        return out

    def overlay_vols(self, overlay_variance: np.ndarray | None) -> tuple[float, float] | None:
        """(forecast vol, target vol) of the overlay's stream, or None before its first return."""
        if overlay_variance is None or overlay_variance[2] < 1.0:
            return None
        variances = overlay_variance[:2] / (1.0 - self._overlay_decay ** overlay_variance[2])
        return float(np.sqrt(variances[0])), float(np.sqrt(variances[1]))

    def _vol_scale(self, overlay_variance: np.ndarray | None) -> float:
        """``(target_vol / forecast_vol) ** vol_target_power`` capped at ``vol_target_max_scale``;
        1 without an estimate."""
        vols = self.overlay_vols(overlay_variance)
        if vols is None or vols[1] <= 0.0:
            return 1.0
        if vols[0] <= 0.0 or vols[1] / vols[0] >= self._scale_cap_ratio:  # the power could overflow
            return self.config.vol_target_max_scale
        return (vols[1] / vols[0]) ** self.config.vol_target_power

    def _market_vol(self, variance: float | None) -> float:
        """The market's EWMA volatility, floored at ``vol_floor`` (the floor without an estimate)."""
        return max(math.sqrt(variance) if variance is not None else 0.0, self.config.vol_floor)

    def _agent_vols(self, agent_variance: np.ndarray, market_variance: float | None) -> np.ndarray:
        """Each agent's EWMA return volatility, floored at ``agent_vol_floor`` times the market's."""
        return np.maximum(np.sqrt(agent_variance), self.config.agent_vol_floor * self._market_vol(market_variance))

    def _agent_variance_seed(self, state: MetaAgentState) -> np.ndarray:
        """The agents' return variances known at the previous bar: the state's estimates, or —
        before the first learned bar (a fresh state, a restart, a state saved without them) —
        each position's variance at the market's volatility, ``pos_i² σ²`` (the market's
        estimate floored as in the rewards). Started from one squared net return instead, a
        quiet first bar made the next bar's rewards tens of times their size, a gap in Hedge's
        weights that undiscounted Hedge never closes."""
        if state.agent_variance is not None:
            return state.agent_variance
        return state.agent_positions**2 * self._market_vol(state.variance) ** 2

    def _risk_scale(self, state: MetaAgentState, agent_variance: np.ndarray) -> float | np.ndarray:
        """What the bar's net returns are divided by: volatilities known at the previous bar."""
        cfg = self.config
        if cfg.risk_adjustment == "none":
            return 1.0
        if cfg.risk_adjustment == "vol":
            return self._market_vol(state.variance)
        return self._agent_vols(agent_variance, state.variance)

    def _writable(self, state: MetaAgentState, copied: set[str], key: str) -> Bandit:
        """The learner under ``key`` in the new state, copied before its first change this bar
        (the old state's learners are never modified: the step stays pure)."""
        if key not in copied:
            learner = state.learners.get(key)
            state.learners[key] = learner.copy() if learner is not None else self.new_learner(state.symbol, key)
            copied.add(key)
        return state.learners[key]

    def _learn(
        self,
        new: MetaAgentState,
        copied: set[str],
        regime: str,
        arm: int,
        probability: float | None,
        rewards: np.ndarray,
    ) -> None:
        """Update the global learner and the regime's. With bandit feedback both see the played
        arm's reward, importance-weighted by the probability it was *drawn* with (one learner
        drew it; the other's own probability of it may differ, or be 0)."""
        if self.config.feedback == "bandit" and probability is None:
            return  # a state written before the probability was kept: its weight is unknown
        keys = [GLOBAL] if self.config.context == "global" else [GLOBAL, regime]
        for key in keys:
            learner = self._writable(new, copied, key)
            if self.config.feedback == "full":
                learner.update_all(rewards)
            else:
                learner.update(arm, float(rewards[arm]), probability)

    def _primary_key(self, state: MetaAgentState, regime: str) -> str:
        if self.config.context == "global":
            return GLOBAL
        learner = state.learners.get(regime)
        if learner is None or learner.rounds_learned < self.config.min_regime_rounds:
            return GLOBAL
        return regime

    def _learner_weights(self, new: MetaAgentState, copied: set[str], key: str) -> np.ndarray:
        """The weights of the learner under ``key``; a regime learner's are shrunk toward the
        global learner's, ``(n w_regime + n0 w_global) / (n + n0)`` with ``n`` its updates and
        ``n0 = regime_prior_rounds``, so a regime seen for a few bars leans on every bar's evidence."""
        weights = self._writable(new, copied, key).weights()
        n0 = self.config.regime_prior_rounds
        if key == GLOBAL or n0 <= 0.0:
            return weights
        n = new.learners[key].rounds_learned
        return (n * weights + n0 * self._writable(new, copied, GLOBAL).weights()) / (n + n0)

    def _choose(
        self, new: MetaAgentState, copied: set[str], market: MarketState
    ) -> tuple[np.ndarray, Selection, str, np.ndarray | None]:
        """(weights held, the deciding learner's selection, its key, and with
        ``context="probability"`` in select mode the mixed weights the held agent was chosen by)."""
        key = self._primary_key(new, market.regime.regime.value)
        learner = self._writable(new, copied, key)  # selection may draw from its generator
        selection = learner.select()
        mixed = None
        if self.config.context == "probability":
            weights = np.zeros(self._n)
            for r, p in zip(REGIMES, market.regime.probabilities, strict=True):
                if p > 0.0:
                    weights += p * self._learner_weights(new, copied, self._primary_key(new, r.value))
            if self.config.mode == "select":
                mixed = weights / weights.sum()
                weights = np.eye(self._n)[int(np.argmax(weights))]
        elif self.config.mode == "blend":
            weights = self._learner_weights(new, copied, key)
        else:
            weights = np.eye(self._n)[selection.arm]
        weights = weights / weights.sum()
        if self.config.shrinkage > 0.0 and self.config.mode == "blend":
            weights = (1.0 - self.config.shrinkage) * weights + self.config.shrinkage / self._n
        return weights, selection, key, mixed

    # ---- explanations ----------------------------------------------------------------------

    def _why(
        self,
        selection: Selection | None,
        leader: int | None,
        learner_key: str | None,
        weights: np.ndarray,
        mixed: np.ndarray | None = None,
    ) -> str:
        if selection is None or leader is None:
            return "features warming up: the agents' targets are not used, the desired position is flat"
        name = self.agent_names[leader]
        source = (
            f"{learner_key} learner" if learner_key != GLOBAL else "global learner (regime learner still cold)"
        )
        if self.config.context == "global":
            source = "global learner"
        if (selection.forced and self.config.mode == "select" and self.config.context != "probability"
                and leader == selection.arm):
            return (f"{name} is played for forced exploration in the {source} (every agent in turn at a "
                    f"fixed share of the rounds, so that a change in an agent not followed is seen)")
        if self.config.context == "probability":
            mix = weights if mixed is None else mixed  # select mode holds one agent: quote its share of the mix
            held = "has the largest weight" if mix[leader] >= mix.max() else (
                "keeps the lead, within the weights' noise of the largest weight,")
            return f"{name} {held} in the regime learners' mix by regime probability ({mix[leader]:.2f})"
        elif learner_key != GLOBAL and self.config.regime_prior_rounds > 0.0 and self.config.mode == "blend":
            source = f"{learner_key} learner shrunk toward the global learner"
        if selection.samples is not None and self.config.mode == "blend":
            # blending weights are win frequencies over many posterior draws, not the one draw
            share = f"{weights[leader]:.0%}; mean {selection.estimates[leader]:.3f}"
            if weights[leader] < weights.max():
                return (f"{name} keeps the lead, within the draws' noise of the largest share ({share}) in "
                        f"the {source}")
            return f"{name} wins the largest share of posterior draws ({share}) in the {source}"
        if selection.bonuses is not None:
            index = selection.estimates + selection.bonuses
            best = index[selection.arm]
            slack = 1e-9 * max(1.0, abs(best)) if math.isfinite(best) else 0.0
            if self.config.mode == "blend" and index[leader] < best - slack:
                # the shrinkage toward the global learner outweighs the regime learner's own leader
                # (an agent tied with it on the index has the highest index too: said so below)
                return (f"{name} has the largest blending weight ({weights[leader]:.2f}; the {learner_key} learner "
                        f"alone prefers {self.agent_names[selection.arm]}) in the {source}")
            est, bonus = selection.estimates[leader], selection.bonuses[leader]
            if not math.isfinite(bonus):  # no reward yet: the index is the bonus alone
                return (f"{name} has no reward yet in the {source}: its UCB bonus is infinite, so agents "
                        f"without rewards come first{self._tied_with(index, leader)}")
            said = (f"{name} has the highest UCB index (estimate {est:.3f} + bonus {bonus:.3f}) in the "
                    f"{source}{self._tied_with(index, leader)}")
            return said + self._exploring(selection.estimates, leader, "its bonus, for fewer rewards, "
                                                                       "outweighs {best}'s higher estimate ({value})")
        if selection.samples is not None:
            mean, draw = selection.estimates[leader], selection.samples[leader]
            exploring = self._exploring(selection.estimates, leader, "{best}'s posterior mean is higher ({value})")
            if exploring:  # the draw, not the posterior's centre, put it first
                return f"{name} has the largest posterior draw ({draw:.3f}; mean {mean:.3f}) in the {source}{exploring}"
            return f"{name} leads the posterior (mean {mean:.3f}, draw {draw:.3f}) in the {source}"
        drawn = selection.weights  # the deciding learner's own exponential weights
        top = int(np.argmax(drawn))
        # (agents whose rewards are equal but for rounding tie: the drawn one is among the largest)
        behind = drawn[leader] < drawn.max() * (1.0 - 1e-9)
        if self.config.mode == "select" and leader == selection.arm and behind:
            # select mode holds the arm drawn from the weights, not the largest
            return (f"{name} was drawn with probability {drawn[leader]:.2f} from the exponential weights "
                    f"(largest: {self.agent_names[top]} {drawn[top]:.2f}) in the {source}")
        if self.config.mode == "blend" and behind:
            # the shrinkage toward the global learner outweighs the regime learner's own leader
            return (f"{name} has the largest blending weight ({weights[leader]:.2f}; the {learner_key} learner "
                    f"alone prefers {self.agent_names[top]} {drawn[top]:.2f}) in the {source}")
        shown = drawn if self.config.mode == "select" else weights  # select: weights are one-hot
        return (f"{name} has the largest exponential weight ({shown[leader]:.2f}) in the {source}"
                f"{self._tied_with(shown, leader)}")

    def _tied_with(self, values: np.ndarray, leader: int) -> str:
        """``", tied with a, b"``: the other agents whose value equals the leader's (but for
        rounding), or "" — the leader of a tie is the previous one, else the first by index."""
        top = float(values[leader])
        slack = 1e-9 * max(1.0, abs(top)) if math.isfinite(top) else 0.0
        tied = [self.agent_names[i] for i in range(self._n)
                if i != leader and (values[i] == top or abs(values[i] - top) <= slack)]  # inf ties with inf
        return f", tied with {', '.join(tied)}" if tied else ""

    def _exploring(self, estimates: np.ndarray, leader: int, text: str) -> str:
        """``", exploring: <text>"`` when another agent's estimate is above the leader's (``text``
        with ``{best}`` and ``{value}`` of the agent with the largest estimate), else "": UCB's
        bonus or a posterior draw, not the estimate, put the leader first."""
        best = int(np.argmax(estimates))
        top = float(estimates[best])
        if estimates[leader] >= top - 1e-9 * max(1.0, abs(top)):
            return ""
        return ", exploring: " + text.format(best=self.agent_names[best], value=f"{top:.3f}")

    def _detail(
        self,
        old: MetaAgentState,
        new: MetaAgentState,
        market: MarketState,
        targets: np.ndarray,
        weights: np.ndarray,
        selection: Selection | None,
        learner_key: str | None,
        desired: float,
        switched: bool,
        held: Mapping[str, bool],
        mixed: np.ndarray | None = None,
        overlay_restarted: str | None = None,
    ) -> dict[str, Any]:
        agents: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(self.agent_names):
            entry: dict[str, Any] = {"target": float(targets[i]), "weight": float(weights[i])}
            if selection is not None:
                entry["estimate"] = float(selection.estimates[i])
                if selection.bonuses is not None:
                    entry["bonus"] = json_float(selection.bonuses[i])
                if selection.samples is not None:
                    entry["sample"] = json_float(selection.samples[i])
            if new.last_rewards is not None:
                entry["last_reward"] = float(new.last_rewards[i])
            agents[name] = entry
        leader = new.leader if selection is not None else None
        restarted = self._restarted(old, new)
        return {
            "policy": self.config.policy,
            "context": self.config.context,
            "mode": self.config.mode,
            "feedback": self.config.feedback,
            "learner": learner_key,
            "learner_rounds": new.learners[learner_key].rounds_learned if learner_key is not None else 0,
            **({} if restarted is None else {"change_detected": restarted}),
            "regime": market.regime.regime.value,
            "confidence": float(market.regime.confidence),
            "regime_model_version": market.regime.model_version,
            "probabilities": {r.value: float(p) for r, p in zip(REGIMES, market.regime.probabilities, strict=True)},
            "agents": agents,
            "chosen": self.agent_names[leader] if leader is not None else None,
            "why": self._why(selection, leader, learner_key, weights, mixed),
            "previous": {
                "chosen": self.agent_names[old.leader] if old.leader is not None else None,
                "weights": {n: float(w) for n, w in zip(self.agent_names, old.weights, strict=True)},
                "regime": old.last_regime,
                "position": old.position,
            },
            "switched": switched,
            "vol_target": self._overlay_detail(old, new, selection is not None, overlay_restarted),
            "desired_position": desired,
            "position": new.position,
            "ramp_left": new.ramp_left,
            "ramping": held["ramping"],
            "banded": held["banded"],
            "capped": held["capped"],
            "regret": {
                "overall": new.regret.overall(),
                "regime": new.regret.regret(market.regime.regime.value),
            },
        }

    def _restarted(self, old: MetaAgentState, new: MetaAgentState) -> list[str] | None:
        """The learners whose change detection fired at this bar and restarted them (None: the
        policy detects no changes)."""
        if not issubclass(POLICIES[self.config.policy], RestartOnChange):
            return None
        return [key for key, learner in new.learners.items()
                if isinstance(learner, RestartOnChange)
                and learner.restarts > getattr(old.learners.get(key), "restarts", 0)]

    def _overlay_detail(
        self, old: MetaAgentState, new: MetaAgentState, active: bool, restarted: str | None = None
    ) -> dict[str, Any] | None:
        """What the volatility overlay did at this bar (None when it is off): ``bars`` counts the
        returns its estimates hold; ``restarted`` says why the stored estimates were not used and
        the estimates started afresh at this bar (None on every other bar)."""
        if self.config.vol_target == "none":
            return None
        vols = self.overlay_vols(new.overlay_variance)
        return {
            "source": self.config.vol_target,
            "scale": new.vol_scale,
            "previous_scale": old.vol_scale,
            "forecast_vol": None if vols is None else vols[0],
            "target_vol": None if vols is None else vols[1],
            "bars": 0 if new.overlay_variance is None else int(new.overlay_variance[2]),
            "restarted": restarted,
            "blend": new.blend,
            "capped": active and new.vol_scale >= self.config.vol_target_max_scale,
        }

    def _overlay_phrase(self, detail: dict[str, Any] | None) -> str:
        """The overlay in the one-line explanation: the scale and why."""
        if detail is None:
            return ""
        if detail["restarted"] is not None:
            return f"; vol target ×{detail['scale']:.2f} (estimates started afresh: {detail['restarted']})"
        if detail["forecast_vol"] is None:
            return ""
        f, t, scale = detail["forecast_vol"], detail["target_vol"], detail["scale"]
        source = self.config.vol_target
        if detail["capped"]:
            return f"; vol target ×{scale:.2f} (capped: recent {source} vol {f:.2%} vs long-run {t:.2%})"
        why = "calmer than" if f < t else "more volatile than"
        return f"; vol target ×{scale:.2f} (recent {source} vol {f:.2%} {why} long-run {t:.2%})"

    def _one_line(
        self,
        old: MetaAgentState,
        new: MetaAgentState,
        market: MarketState,
        weights: np.ndarray,
        selection: Selection | None,
        desired: float,
        switched: bool,
        why: str,
        held: Mapping[str, bool],
        restarted: list[str] | None,
    ) -> str:
        regime = market.regime
        head = f"{regime.regime.value} ({regime.confidence:.0%})"
        moved = f"target {new.position:+.2f} (was {old.position:+.2f})"
        if selection is None:  # flat is the aim; the per-bar bound may still hold the position back
            flat = "staying flat" if old.position == 0.0 and new.position == 0.0 else "going flat"
            if held["capped"]:
                flat += " (per-bar or position cap)"
            return f"{head}: features warming up ({market.features.warmup_remaining} bars left), {flat}; {moved}"
        order = np.argsort(-weights, kind="stable")
        shown = ", ".join(f"{self.agent_names[i]} {weights[i]:.2f}" for i in order if weights[i] >= 0.005)
        changes = []
        if old.last_regime is not None and old.last_regime != regime.regime.value:
            changes.append(f"regime {old.last_regime}→{regime.regime.value}")
        if restarted:
            changes.append(f"change detected in the agents' rewards, restarted the {'/'.join(restarted)} "
                           f"learner{'s' if len(restarted) > 1 else ''}")
        if switched and old.leader is not None:
            changes.append(f"switched from {self.agent_names[old.leader]}")
        if abs(new.position - desired) > 1e-9:
            reasons = [text for key, text in (("ramping", f"ramp, {new.ramp_left} bars left"),
                                              ("banded", "no-trade band"), ("capped", "per-bar or position cap"))
                       if held[key]]
            changes.append(f"smoothed toward {desired:+.2f}" + (f" ({', '.join(reasons)})" if reasons else ""))
        changed = "; ".join(changes) if changes else "no change of leader"
        return f"{head}: {self.config.mode} [{shown}] — {why}; {changed}; {moved}"
