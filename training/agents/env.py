"""The trading environment of the four agents (gymnasium API).

One symbol per episode. At bar ``t`` the agent observes the feature vector of bar ``t`` (the
Foundation's feature code, :func:`~ensemble_trader.domain.features.compute_features`, whose
numbers equal the online engine's) followed by its current position, and answers a target
position ``p_t`` in ``[-L, L]`` (fraction of equity; ``L`` = the agent's leverage limit). The
environment then charges the trade's costs (:class:`~ensemble_trader.backtest.engine.CostModel`)
and moves one bar on: the reward for the action at ``t`` uses the return from ``t`` to ``t+1``,
which the agent could not see when it acted. The timing and the cost formula are exactly the
backtester's (:mod:`ensemble_trader.backtest.engine`). With ``no_trade_band`` b > 0 the action
is executed as the served pool executes it (:class:`~ensemble_trader.domain.agents.AgentPool`):
``p_t = clip(p_{t-1}, a_t - b, a_t + b)``.

Episodes are windows of ``episode_length`` bars drawn at random (weighted by length) from a list
of :class:`~ensemble_trader.backtest.engine.PreparedSeries` — real bars (arch S&P 500 /
NASDAQ, shared BTC data) and synthetic scenarios — whose warm-up rows are already removed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from ensemble_trader.backtest.engine import CostModel, PreparedSeries
from ensemble_trader.backtest.metrics import checked_number
from ensemble_trader.domain.agents import MAX_NO_TRADE_BAND, no_trade_target
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import FEATURE_NAMES

from training.agents.rewards import Reward, StepOutcome

VOL_FEATURE = "ewma_vol"
EXCURSION_FEATURE = "zscore_20"
RUIN_WEALTH = 0.05
"""An episode ends (terminated) when wealth falls below this fraction of its start."""


class InvalidActionError(DataError):
    """An action that is not one finite number (NaN, ±inf, or the wrong size).

    A policy gives it only when it has diverged (PPO's Gaussian sample from a finite network is
    finite, and SB3 clips it to the action space); clipping NaN would have made it a position of
    NaN, a reward of +clip and NaN wealth for the rest of the episode."""


class _Track:
    """Arrays of one series in the form the step loop reads fastest."""

    __slots__ = ("features", "close", "vol", "excursion", "n", "name")

    def __init__(self, series: PreparedSeries):
        self.name = series.symbol
        self.features = np.asarray(series.features, dtype=np.float32)
        if self.features.ndim != 2 or self.features.shape[1] != len(FEATURE_NAMES):
            raise DataError(
                f"{series.symbol}: features must have {len(FEATURE_NAMES)} columns "
                f"({', '.join(FEATURE_NAMES)}), got shape {self.features.shape}"
            )
        close = np.asarray(series.close, dtype=np.float64)
        values = np.asarray(series.features, dtype=np.float64)
        # a NaN here would make NaN returns and rewards (or, through the excursion, a finite
        # reward that ignores the position): refused before any step
        checks = (("close", "finite and > 0", ~(np.isfinite(close) & (close > 0))),
                  ("features", "finite", ~np.isfinite(values)))
        for column, what, bad in checks:
            if bad.any():
                raise DataError(f"{series.symbol}: {column} must be {what}; row {int(np.argwhere(bad)[0][0])} is not")
        self.close = close.tolist()
        self.vol = values[:, FEATURE_NAMES.index(VOL_FEATURE)].tolist()
        self.excursion = values[:, FEATURE_NAMES.index(EXCURSION_FEATURE)].tolist()
        self.n = len(self.close)


class TradingEnv(gym.Env):
    """Single-symbol trading with target-position actions, costs and a pluggable reward."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        data: Sequence[PreparedSeries],
        reward: Reward,
        leverage: float = 1.0,
        costs: CostModel | None = None,
        episode_length: int = 256,
        random_state: int | None = None,
        no_trade_band: float = 0.0,
    ):
        super().__init__()
        if not data:
            raise DataError("TradingEnv needs at least one series")
        # a bool or text is refused, not converted (True was a leverage or band of 1.0)
        leverage = checked_number("leverage", leverage, 0.0, strict=True)
        if isinstance(episode_length, (bool, np.bool_)) or not isinstance(episode_length, numbers.Integral):
            raise DataError(f"episode_length must be a whole number >= 1, got {episode_length!r} "
                            f"(a {type(episode_length).__name__})")
        if episode_length < 1:
            raise DataError(f"episode_length must be >= 1, got {episode_length}")
        no_trade_band = checked_number("no_trade_band", no_trade_band, 0.0)
        if no_trade_band > MAX_NO_TRADE_BAND:
            raise DataError(f"no_trade_band must be in [0, {MAX_NO_TRADE_BAND:g}], got {no_trade_band!r}")
        self.tracks = [_Track(s) for s in data]
        short = [t.name for t in self.tracks if t.n < 2]
        if short:
            raise DataError(f"series {short} have fewer than two warm bars")
        self.reward = reward
        self.leverage = float(leverage)
        self.no_trade_band = float(no_trade_band)
        self.costs = costs or CostModel()
        self.episode_length = int(episode_length)
        n_obs = len(FEATURE_NAMES) + 1
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(n_obs,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-self.leverage, self.leverage, shape=(1,), dtype=np.float32)
        weights = np.array([t.n - 1 for t in self.tracks], dtype=np.float64)
        self._weights = weights / weights.sum()
        self._rng = np.random.default_rng(random_state)
        self._track = self.tracks[0]
        self._t = 0
        self._end = 1
        self._position = 0.0
        self._wealth = 1.0
        self._peak = 1.0

    # -- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode. ``options``: ``series`` (index), ``start`` (row), ``length`` (bars;
        None = to the end of the series) pin the window instead of drawing it."""
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = options or {}
        index = options.get("series")
        if index is None:
            index = int(self._rng.choice(len(self.tracks), p=self._weights))
        self._track = self.tracks[int(index)]
        last = self._track.n - 1  # the last row has no next return: no action is taken there
        length = options.get("length", self.episode_length if "series" not in options else None)
        length = last if length is None else min(int(length), last)
        start = options.get("start")
        if start is None:
            start = int(self._rng.integers(0, last - length + 1))
        if not 0 <= int(start) <= last - 1:
            raise DataError(f"start row {start} outside [0, {last - 1}] of {self._track.name}")
        self._t = int(start)
        self._end = min(self._t + length, last)
        self._position = 0.0
        self._wealth = 1.0
        self._peak = 1.0
        self.reward.reset()
        return self._observation(), {"series": self._track.name, "start": self._t}

    def step(self, action):
        values = np.asarray(action, dtype=np.float64).reshape(-1)
        if values.size != 1 or not math.isfinite(values[0]):
            what = "one number" if values.size != 1 else "a finite number"
            raise InvalidActionError(
                f"action {np.asarray(action).tolist()!r} at row {self._t} of {self._track.name}: the action "
                f"must be {what} (a target position in [-{self.leverage:g}, {self.leverage:g}])"
            )
        target = float(np.clip(values[0], -self.leverage, self.leverage))
        if self.no_trade_band > 0.0:  # AgentPool's execution rule: hold inside the band, else its edge
            target = float(no_trade_target(self._position, target, self.no_trade_band))
        tr, t = self._track, self._t
        cost = self.costs.cost(self._position, target)
        asset_return = tr.close[t + 1] / tr.close[t] - 1.0
        net = target * asset_return - cost
        previous_drawdown = 1.0 - self._wealth / self._peak
        self._wealth *= 1.0 + net
        self._peak = max(self._peak, self._wealth)
        outcome = StepOutcome(
            position=target,
            previous_position=self._position,
            asset_return=asset_return,
            cost=cost,
            net_return=net,
            wealth=self._wealth,
            peak_wealth=self._peak,
            previous_drawdown=previous_drawdown,
            volatility=tr.vol[t],
            excursion=tr.excursion[t],
        )
        reward = float(self.reward(outcome))
        self._position = target
        self._t = t + 1
        terminated = self._wealth < RUIN_WEALTH
        truncated = not terminated and self._t >= self._end
        info = {"net_return": net, "asset_return": asset_return, "cost": cost, "wealth": self._wealth}
        return self._observation(), reward, terminated, truncated, info

    # -- helpers ---------------------------------------------------------------------------

    def _observation(self) -> np.ndarray:
        obs = np.empty(len(FEATURE_NAMES) + 1, dtype=np.float32)
        obs[:-1] = self._track.features[self._t]
        obs[-1] = self._position
        return obs

    @property
    def position(self) -> float:
        return self._position

    @property
    def wealth(self) -> float:
        return self._wealth
