r"""Reward functions of the four agents.

Each reward sees one :class:`StepOutcome` per environment step. Notation, for the step taken at
bar *t*:

* :math:`p_t` — the target position chosen at *t* (fraction of equity, in :math:`[-L, L]`),
  :math:`p_{t-1}` the position held before;
* :math:`r_{t+1} = C_{t+1}/C_t - 1` — the asset's return over the next bar, *after* the action;
* :math:`c_t = (\text{cost\_bps} + \text{slippage\_bps}) \cdot 10^{-4} \cdot |p_t - p_{t-1}|`;
* :math:`R_t = p_t r_{t+1} - c_t` — the portfolio's net return; wealth :math:`W_t = W_{t-1}(1+R_t)`;
* :math:`D_t = 1 - W_t / \max_{s \le t} W_s` — the drawdown;
* :math:`\sigma_t` — the asset's EWMA volatility per bar known at *t*
  (:math:`\sigma_t^2 = \lambda \sigma_{t-1}^2 + (1-\lambda) r_t^2`, :math:`\lambda = 0.94`);
* :math:`z_t` — the short-term excursion at *t*: the feature ``zscore_20`` (distance of the close
  from its 20-bar mean in standard deviations).

Rewards (``k`` is a scale that brings rewards to order one for PPO; all are clipped to
``[-clip, clip]``):

Conservative — return penalised by drawdown increments and volatility exposure
    :math:`k \left(R_t - \lambda_{dd} \max(0, D_t - D_{t-1}) - \lambda_{vol} (p_t \sigma_t)^2\right)`

    Loss while sliding into a drawdown counts :math:`1 + \lambda_{dd}` times; the variance term
    makes the mean-variance optimal position :math:`\mu / (2 \lambda_{vol} \sigma^2)` shrink as
    volatility rises.

Aggressive — log growth of wealth (the Kelly criterion)
    :math:`k \log(1 + R_t)`, clipped to ``[-clip, clip]`` like every reward. Its sum over an
    episode is :math:`k \log W_T` only when no step is clipped: with the defaults (k = 100,
    clip 10) a step is clipped when :math:`|\log(1 + R_t)| > 0.1`, i.e. :math:`R_t < -9.5\,\%`
    or :math:`R_t > +10.5\,\%` — a bar moving more than about 5 % at the full 2x leverage. On
    the real training data (S&P 500 and NASDAQ, 1999-2012) that binds on 27 S&P 500 and 71
    NASDAQ bars (72 with the former 61-bar warm-up), most of them falls: the reward
    under-penalises crashes (figures in docs/agents.md, *Rewards*). Kept as it is: the committed
    configuration was chosen on validation with it.

Balanced — differential Sharpe ratio (Moody & Saffell, 1998/2001)
    With exponential moving estimates of the first and second moments of :math:`R`,
    :math:`A_t = A_{t-1} + \eta (R_t - A_{t-1})` and :math:`B_t = B_{t-1} + \eta (R_t^2 - B_{t-1})`,

    :math:`\mathrm{DSR}_t = \dfrac{B_{t-1} \Delta A_t - \tfrac12 A_{t-1} \Delta B_t}
    {\max(B_{t-1} - A_{t-1}^2, v_{min})^{3/2}}`, with :math:`\Delta A_t = R_t - A_{t-1}`,
    :math:`\Delta B_t = R_t^2 - B_{t-1}`.

    It is the first-order effect of this step on the moving Sharpe ratio :math:`A/\sqrt{B-A^2}`
    for adaptation rate :math:`\eta` (default 0.01, a memory of about 100 bars). :math:`A_0 = 0`,
    :math:`B_0` is a prior second moment (default :math:`10^{-4}`, i.e. 1 % per bar) and
    :math:`v_{min}` a variance floor (default :math:`10^{-6}`) that keeps the ratio finite
    after a flat spell.

Contrarian — profits from positions against short-term excursions
    :math:`k \left(R_t (1 + \beta \,\mathbb{1}[p_t z_t < 0]) - \gamma \max(0, p_t z_t)\, \sigma_t\right)`

    P&L of a position that leans against the excursion (short above the mean, long below it)
    counts :math:`1 + \beta` times — gains and losses alike, so it still has to be right — and
    a position that follows the excursion costs :math:`\gamma\,\sigma_t` per unit of
    :math:`p_t z_t`. It is trained on mean-reverting data, where the edge exists.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol

from ensemble_trader.domain.errors import EnsembleTraderError


@dataclass(frozen=True)
class StepOutcome:
    """What happened over one bar after the agent's action (see the module docstring)."""

    position: float  # p_t, the new position
    previous_position: float  # p_{t-1}
    asset_return: float  # r_{t+1}
    cost: float  # c_t, as a fraction of equity
    net_return: float  # R_t
    wealth: float  # W_t
    peak_wealth: float  # max_{s<=t} W_s
    previous_drawdown: float  # D_{t-1}
    volatility: float  # sigma_t, per bar
    excursion: float  # z_t

    @property
    def drawdown(self) -> float:
        return 1.0 - self.wealth / self.peak_wealth


class Reward(Protocol):
    """A (possibly stateful) reward: ``reset`` at each episode start, then one call per step."""

    name: str

    def reset(self) -> None: ...

    def __call__(self, outcome: StepOutcome) -> float: ...

    def params(self) -> dict[str, float | str]: ...


class RewardError(EnsembleTraderError, ValueError):
    """A reward's parameters are out of range, or a step gave it inputs that make no number."""


def _clip(value: float, bound: float, name: str) -> float:
    """``value`` clipped to ``[-bound, bound]``; NaN is an error (``min(bound, nan)`` is ``bound``:
    a step with a NaN input would otherwise earn the largest reward)."""
    if value != value:
        raise RewardError(f"the {name} reward of a step is nan: one of its inputs (the return, the "
                          "volatility, the position) is not a number")
    return max(-bound, min(bound, value))


class _RewardBase:
    """Shared by the reward dataclasses: parameters as a dict, checked on construction; nothing
    to reset by default.

    ``_positive`` parameters must be finite and > 0 (a clip <= 0 made every reward the constant
    +clip, a zero variance floor a division by zero), ``_non_negative`` ones finite and >= 0 (a
    negative penalty is a bonus for what it penalises)."""

    _positive: tuple[str, ...] = ("scale", "clip")
    _non_negative: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for names, bound, ok in ((self._positive, "> 0", lambda v: v > 0),
                                 (self._non_negative, ">= 0", lambda v: v >= 0)):
            for param in names:
                value = getattr(self, param)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise RewardError(f"{type(self).__name__}: {param} must be a number, got {value!r}")
                if not (math.isfinite(value) and ok(value)):
                    raise RewardError(f"{type(self).__name__}: {param} must be finite and {bound}, got {value!r}")

    def reset(self) -> None:
        """Stateless: the reward depends on the current step only (the drawdown is tracked by
        the environment)."""

    def params(self) -> dict[str, float | str]:
        return asdict(self)


@dataclass
class ConservativeReward(_RewardBase):
    """Return penalised by drawdown increments and volatility exposure."""

    drawdown_penalty: float = 0.1
    vol_penalty: float = 1.0
    scale: float = 100.0
    clip: float = 10.0
    name: str = "conservative"
    _non_negative = ("drawdown_penalty", "vol_penalty")

    def __call__(self, o: StepOutcome) -> float:
        dd_increase = max(0.0, o.drawdown - o.previous_drawdown)
        exposure = (o.position * o.volatility) ** 2
        raw = o.net_return - self.drawdown_penalty * dd_increase - self.vol_penalty * exposure
        return _clip(self.scale * raw, self.clip, self.name)


@dataclass
class AggressiveReward(_RewardBase):
    """Log growth of wealth, ``scale * log(1 + R)`` clipped to ``[-clip, clip]``: the episode's
    rewards sum to ``scale * log W_T`` only when no step is clipped (with the defaults a step
    whose net return is below -9.5 % or above +10.5 % is; see the module docstring)."""

    scale: float = 100.0
    clip: float = 10.0
    name: str = "aggressive"

    def __call__(self, o: StepOutcome) -> float:
        growth = max(1.0 + o.net_return, 1e-6)  # a step that wipes out equity is the floor
        return _clip(self.scale * math.log(growth), self.clip, self.name)


@dataclass
class BalancedReward(_RewardBase):
    """Differential Sharpe ratio of Moody & Saffell with adaptation rate ``eta``."""

    eta: float = 0.01
    initial_second_moment: float = 1e-4
    variance_floor: float = 1e-6
    scale: float = 1.0
    clip: float = 10.0
    name: str = "balanced"
    _positive = ("eta", "variance_floor", "scale", "clip")
    _non_negative = ("initial_second_moment",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.eta < 1.0:
            raise RewardError(f"BalancedReward: eta must be in (0, 1), got {self.eta}")
        self.reset()

    def reset(self) -> None:
        self.mean_ = 0.0  # A
        self.second_moment_ = self.initial_second_moment  # B

    def __call__(self, o: StepOutcome) -> float:
        a, b, r = self.mean_, self.second_moment_, o.net_return
        delta_a = r - a
        delta_b = r * r - b
        variance = max(b - a * a, self.variance_floor)
        dsr = (b * delta_a - 0.5 * a * delta_b) / variance**1.5
        self.mean_ = a + self.eta * delta_a
        self.second_moment_ = b + self.eta * delta_b
        return _clip(self.scale * dsr, self.clip, self.name)


@dataclass
class ContrarianReward(_RewardBase):
    """Profit from leaning against short-term excursions; following them is penalised."""

    contrarian_bonus: float = 0.5
    trend_penalty: float = 0.2
    scale: float = 100.0
    clip: float = 10.0
    name: str = "contrarian"
    _non_negative = ("contrarian_bonus", "trend_penalty")

    def __call__(self, o: StepOutcome) -> float:
        lean = o.position * o.excursion
        weight = 1.0 + self.contrarian_bonus if lean < 0.0 else 1.0
        raw = o.net_return * weight - self.trend_penalty * max(0.0, lean) * o.volatility
        return _clip(self.scale * raw, self.clip, self.name)


REWARDS: dict[str, type] = {
    "conservative": ConservativeReward,
    "aggressive": AggressiveReward,
    "balanced": BalancedReward,
    "contrarian": ContrarianReward,
}


def make_reward(agent: str, **params: float) -> Reward:
    """The reward of ``agent`` with optional parameter overrides."""
    try:
        cls = REWARDS[agent]
    except KeyError:
        raise EnsembleTraderError(f"no reward for agent {agent!r}; known: {sorted(REWARDS)}") from None
    try:
        return cls(**params)
    except (TypeError, RewardError) as exc:
        raise RewardError(f"bad parameters for the {agent} reward: {exc}") from None
