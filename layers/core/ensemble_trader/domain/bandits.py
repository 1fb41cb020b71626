"""Multi-armed bandits and exponential weights for choosing among the trading agents.

Every learner here shares one interface:

``select()``
    choose an arm now; returns a :class:`Selection` with the arm and the diagnostics that
    explain it (each arm's estimate, its exploration bonus or posterior sample, the weights).
``weights()``
    the learner's current distribution over arms (what blending uses).
``update(arm, reward)``
    *bandit feedback*: only the reward of the arm that was played is seen.
``update_all(rewards)``
    *full information*: the reward every arm would have earned is seen.

Bandit feedback vs full information
-----------------------------------
A bandit must spend rounds on arms it believes are worse, only to learn about them; its
regret against the best arm grows like ``sqrt(K T log K)`` (EXP3) or ``log T`` per gap (UCB).
With full information every round teaches something about every arm, so there is nothing to
explore: Hedge's regret is ``sqrt(T log K / 2)``, with no factor ``K`` and no exploration
cost. Here every agent's counterfactual return is observable (each agent's virtual position
times the bar's return), so full information is the right default for the meta-agent; bandit
feedback stays available for settings where only the executed choice is observed (for
example when the agents' orders would move the price, or when an agent's counterfactual
cannot be replayed), and for comparison with the bandit literature.

Non-stationarity
----------------
Regimes shift, so an arm's mean reward is piecewise stationary. UCB1 and plain Thompson
sampling weigh a reward from a year ago like today's and adapt slowly after a change point.
Discounted UCB and discounted Thompson sampling multiply their statistics by ``gamma`` every
round (an effective memory of ``1 / (1 - gamma)`` rounds); sliding-window UCB keeps only the
last ``window`` rounds; Hedge and EXP3 accept a ``discount`` on their log-weights. These forget
at a fixed rate, changes or not. GLR-UCB and GLR Thompson sampling instead keep everything until
a generalised likelihood ratio test finds a change in an arm's mean, then restart.

Randomness comes from one seeded :class:`numpy.random.Generator` per learner. The whole
learner (parameters, statistics and generator state) round-trips through :meth:`to_dict` /
:func:`bandit_from_dict` as plain JSON; a restored learner makes exactly the same next
selections as the original.
"""

from __future__ import annotations

import json
import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ensemble_trader.domain.errors import EnsembleTraderError, StateError


class BanditError(EnsembleTraderError, ValueError):
    """A bandit was given an invalid parameter, arm or reward."""


@dataclass(frozen=True)
class Selection:
    """One choice of a learner and why it was made.

    ``estimates`` are the learner's reward estimates per arm (posterior means, empirical means,
    or log-weights for the exponential-weights family); ``bonuses`` the exploration bonus per
    arm (UCB family, else None); ``samples`` the posterior draw per arm (Thompson sampling,
    else None); ``weights`` the distribution the choice was made from. ``forced``: the arm was
    played for forced exploration (change-detecting learners), not for its index or sample.
    """

    arm: int
    weights: np.ndarray
    estimates: np.ndarray
    bonuses: np.ndarray | None = None
    samples: np.ndarray | None = None
    forced: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "arm": self.arm,
            "weights": [float(w) for w in self.weights],
            "estimates": [float(e) for e in self.estimates],
        }
        if self.bonuses is not None:
            out["bonuses"] = [json_float(b) for b in self.bonuses]
        if self.samples is not None:
            out["samples"] = [json_float(s) for s in self.samples]
        if self.forced:
            out["forced"] = True
        return out


def json_float(x: float) -> float | str:
    """Infinities as the strings ``"inf"`` / ``"-inf"`` so JSON stays valid: the bonus of an arm
    never played, a Thompson draw whose precision underflowed to 0 under a vague prior (about half
    the draws before an agent's first reward with ``alpha0`` = 0.001). Written as floats, pydantic
    put them in an intent's body as ``"Infinity"`` (the intent read back unequal to the one decided)
    and ``json.dumps`` in a decisions row as the non-standard ``Infinity``."""
    x = float(x)
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


MAX_REWARD = 1e100
"""Rewards beyond this in size are refused: sums of squares over millions of rounds stay finite
(a reward of 2e154 made Thompson sampling's scatter infinite and its posterior NaN)."""

_SEED = np.random.SeedSequence(0)


def _as_real(value: Any) -> float | None:
    """``value`` as a float if it is one real number (a Python or NumPy integer or float, or a
    0-d array of one), else None. Bools are not rewards, probabilities or arms. An integer too
    large for a float becomes an infinity of its sign (refused by the magnitude checks)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _generator_with_state(state: dict[str, Any]) -> np.random.Generator:
    """A new PCG64 generator set to ``state`` (seeding from a ready SeedSequence is the cheap path)."""
    bit_generator = np.random.PCG64(_SEED)
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _one_hot_of_max(values: np.ndarray) -> np.ndarray:
    """Equal weight on every arm attaining the maximum (ties split)."""
    top = values == values.max()
    return top / top.sum()


def _win_shares(draws: np.ndarray) -> np.ndarray:
    """Each arm's share of the rows of ``draws`` (samples, arms) in which it is largest, a tie
    split among the tied arms (Beta draws can tie at 0 or 1; no arm is favoured by its index)."""
    top = draws == draws.max(axis=1, keepdims=True)
    shares = (top / top.sum(axis=1, keepdims=True)).sum(axis=0)
    return shares / shares.sum()


MAX_WEIGHT_SAMPLES = 100_000
"""The most posterior draws a Thompson sampler's :meth:`weights` may take: their noise is then
3 / sqrt(n) ≈ 0.01 and a call takes 30-60 ms of CPU (four arms; the default 256 takes tens of
microseconds). 10**30 was accepted and failed at every call, numpy refusing the array; 10**9
would need gigabytes."""


MAX_WINDOW = 100_000
"""The most rounds a sliding window (``window``) or a change detector's history (``history``) may
keep. With four arms, sliding-window UCB with a window of 100,000 rounds has a state of 20 MB
(``size_bound``, reckoned in 1.2 s) and spends 3.7 ms on a round (update and selection); with
10**6 rounds, 204 MB reckoned in 12 s and 37 ms a round. 10**8 rounds need 6.4 GB of buffers,
and 10**15 failed with a raw MemoryError."""

MAX_ETA = 1e4
"""The largest learning rate Hedge accepts. Tuned for ``T`` rounds of rewards in a range of width
``B``, Hedge's rate is ``sqrt(8 ln K / T) / B`` (Cesa-Bianchi & Lugosi 2006, Theorem 2.2), largest
at ``T = 1``: ``3.3 / B`` for four arms, so 3.3 for the meta-agent's unit-scale risk-adjusted
rewards (its default is 0.1) and 333 for raw returns in a range of 1 %; the bound still admits the
one-round rate of rewards 3.3 basis points wide. At 1e4, a reward difference of 0.075 in one round
puts the lower arm's weight below the smallest double (``exp(-745)``): on unit-scale rewards Hedge
is then follow-the-leader, and a larger rate changes nothing but whether the log-weights overflow
(1e308 made them infinite on a reward of 2). Under the bound, with rewards of at most
:data:`MAX_REWARD`, a full-information round moves two log-weights apart by at most
``2 * MAX_ETA * MAX_REWARD`` = 2e104: recentred log-weights would need about 1e204 rounds to
leave float64's range."""


def _as_integer(value: Any) -> int | None:
    """``value`` as an int if it is a Python or NumPy integer, else None (bools are not counts)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def _check_count(policy: str, label: str, value: Any, least: int, most: int) -> int:
    """A count (a window, a history) as an int in [least, most] (bools, floats and strings refused)."""
    count = _as_integer(value)
    if count is None or not least <= count <= most:
        raise BanditError(f"{policy}: {label} must be an integer in [{least}, {most:,}], got {value!r}")
    return count


def _check_weight_samples(policy: str, n_weight_samples: Any) -> int:
    count = _as_integer(n_weight_samples)
    if count is None or count < 1:
        raise BanditError(f"{policy}: n_weight_samples must be a positive integer, got {n_weight_samples!r}")
    if count > MAX_WEIGHT_SAMPLES:
        raise BanditError(f"{policy}: n_weight_samples must be at most {MAX_WEIGHT_SAMPLES:,}, got {n_weight_samples!r}")
    return count


def _check_prior(policy: str, label: str, value: Any, positive: bool = True) -> float:
    """A Thompson sampler's prior parameter as a float: one finite real number (bools refused),
    and > 0 unless ``positive`` is False."""
    real = _as_real(value)
    if real is None or not math.isfinite(real) or (positive and not real > 0.0):
        raise BanditError(f"{policy}: {label} must be finite{' and > 0' if positive else ''}, got {value!r}")
    return real


def _check_rate(policy: str, label: str, value: Any) -> float:
    """A discount or exploration rate as a float in (0, 1] (bools and strings refused)."""
    real = _as_real(value)
    if real is None or not 0.0 < real <= 1.0:
        raise BanditError(f"{policy}: {label} must be in (0, 1], got {value!r}")
    return real


def _check_scale(policy: str, label: str, value: Any, most: float = math.inf) -> float:
    """A bonus scale, noise scale or learning rate as a float: one finite real number > 0 and at
    most ``most`` (bools and strings refused). Not finite: "must be finite"; else "must be > 0"."""
    real = _as_real(value)
    limit = "" if most == math.inf else f" and at most {most:g}"
    if real is not None and not math.isfinite(real):
        raise BanditError(f"{policy}: {label} must be finite{', > 0' if limit else ' and > 0'}{limit}, got {value!r}")
    if real is None or not 0.0 < real <= most:
        raise BanditError(f"{policy}: {label} must be > 0{limit}, got {value!r}")
    return real


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


def _reward_range(policy: str, reward_range: Any) -> tuple[float, float]:
    """``reward_range`` as ``(low, high)`` floats with ``high > low`` (EXP3, Beta Thompson)."""
    values = [_as_real(v) for v in reward_range] if isinstance(reward_range, (tuple, list, np.ndarray)) else []
    if len(values) != 2 or None in values:
        raise BanditError(f"{policy}: reward_range must be two numbers (low, high), got {reward_range!r}")
    lo, hi = values
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo and math.isfinite(hi - lo)):
        raise BanditError(f"{policy}: reward_range must be finite: (low, high) with high > low and a finite width, got {reward_range!r}")
    return lo, hi


def _to_unit(reward: float | np.ndarray, reward_range: tuple[float, float]) -> float | np.ndarray:
    """A reward mapped from ``reward_range`` onto [0, 1], values outside clipped to its ends."""
    lo, hi = reward_range
    return np.clip((reward - lo) / (hi - lo), 0.0, 1.0)


class Bandit(ABC):
    """Base of every learner: parameter checks, generator, serialisation, copy."""

    name: ClassVar[str]
    _params: ClassVar[tuple[str, ...]] = ()
    _arrays: ClassVar[tuple[str, ...]] = ()
    _counts: ClassVar[tuple[str, ...]] = ()  # arrays of counts or sums of squares: never negative

    def __init__(self, n_arms: int, random_state: int | None = None):
        arms = _as_integer(n_arms)
        if arms is None or arms < 1:  # True would be one arm
            raise BanditError(f"n_arms must be a positive integer, got {n_arms!r}")
        seed = None if random_state is None else _as_integer(random_state)
        if random_state is not None and (seed is None or seed < 0):  # numpy refuses a negative seed untyped
            raise BanditError(f"random_state must be an integer >= 0 or None, got {random_state!r}")
        self.n_arms = arms
        self.random_state = seed  # plain JSON
        self.rng_ = np.random.default_rng(seed)
        self.t_ = 0  # rounds of feedback seen

    # ---- the interface -------------------------------------------------------------------

    @abstractmethod
    def select(self) -> Selection:
        """Choose an arm now (may draw from the generator)."""

    @abstractmethod
    def weights(self) -> np.ndarray:
        """The current distribution over arms, shape (n_arms,), summing to 1."""

    @property
    def weights_noise(self) -> float:
        """How far :meth:`weights` may move between two calls on the same statistics (0: they
        are a function of the statistics; Thompson sampling's are Monte-Carlo frequencies)."""
        return 0.0

    @property
    def rounds_learned(self) -> int:
        """Rounds of feedback behind the current statistics: ``t_``, or for a learner that
        restarts on a detected change, the rounds since its last restart."""
        return self.t_

    def update(self, arm: int, reward: float, probability: float | None = None) -> Bandit:
        """Bandit feedback: ``reward`` of the arm that was played. Returns self.

        ``probability`` is the probability with which ``arm`` was played, when it was drawn from
        another distribution than this learner's current one (another learner chose, or this
        one's weights moved since): the importance weight of EXP3 and Hedge, ignored by the
        others. Default: this learner's current probability of ``arm``."""
        checked = None if probability is None else self._check_probability(probability)
        self._update(self._check_arm(arm), self._check_reward(reward), checked)
        self.t_ += 1
        return self

    def update_all(self, rewards: np.ndarray) -> Bandit:
        """Full information: the reward of every arm this round. Returns self."""
        self._update_all(self._check_rewards(rewards))
        self.t_ += 1
        return self

    @abstractmethod
    def _update(self, arm: int, reward: float, probability: float | None) -> None: ...

    @abstractmethod
    def _update_all(self, rewards: np.ndarray) -> None: ...

    # ---- input checks ----------------------------------------------------------------------

    def _check_arm(self, arm: int) -> int:
        if (isinstance(arm, (bool, np.bool_)) or not isinstance(arm, (int, np.integer))
                or not 0 <= arm < self.n_arms):  # True would silently be arm 1
            raise BanditError(f"{self.name}: arm must be an integer in [0, {self.n_arms}), got {arm!r}")
        return int(arm)

    def _check_reward(self, reward: float) -> float:
        r = _as_real(reward)
        if r is None:
            raise BanditError(f"{self.name}: reward must be a real number, got {reward!r}")
        if not abs(r) <= MAX_REWARD:  # false for NaN and infinities too
            raise BanditError(f"{self.name}: reward must be finite and at most {MAX_REWARD:g} in size, got {reward!r}")
        return r

    def _check_probability(self, probability: float) -> float:
        p = _as_real(probability)
        if p is None or not 0.0 < p <= 1.0:
            raise BanditError(f"{self.name}: the probability an arm was played with must be in (0, 1], got {probability!r}")
        return p

    def _check_rewards(self, rewards: np.ndarray) -> np.ndarray:
        try:  # a list is kept as the caller's objects (NumPy would turn True into 1.0, None into NaN)
            given = rewards if isinstance(rewards, np.ndarray) else np.asarray(rewards, dtype=object)
        except (TypeError, ValueError) as exc:
            raise BanditError(f"{self.name}: rewards must be {self.n_arms} real numbers, got {rewards!r}") from exc
        if given.shape != (self.n_arms,):
            raise BanditError(f"{self.name}: rewards must have shape ({self.n_arms},), got {given.shape}")
        if given.dtype.kind in "iuf":
            arr = given.astype(np.float64)
        else:  # objects, strings, bools: element by element
            arr = np.empty(self.n_arms)
            for i, element in enumerate(given):
                r = _as_real(element)
                if r is None:
                    raise BanditError(f"{self.name}: reward of arm {i} must be a real number, got {element!r}")
                arr[i] = r
        ok = np.abs(arr) <= MAX_REWARD  # false for NaN and infinities too
        if not np.all(ok):
            bad = int(np.flatnonzero(~ok)[0])
            raise BanditError(f"{self.name}: reward of arm {bad} must be finite and at most {MAX_REWARD:g} "
                              f"in size, got {given[bad]!r}")
        return arr

    def _pick(self, scores: np.ndarray) -> int:
        """Arg-max with ties broken at random (so no arm is favoured by its index)."""
        top = np.flatnonzero(scores == scores.max())
        return int(top[0]) if top.size == 1 else int(self.rng_.choice(top))

    # ---- state -------------------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        return {"n_arms": self.n_arms, "random_state": self.random_state} | {
            p: getattr(self, p) for p in self._params
        }

    def to_dict(self) -> dict[str, Any]:
        """Parameters, statistics and generator state as plain JSON-compatible values."""
        return {
            "policy": self.name,
            "params": self.get_params(),
            "t": self.t_,
            "arrays": {a: getattr(self, a).tolist() for a in self._arrays},
            "rng": self.rng_.bit_generator.state,
        }

    def size_bound(self) -> int:
        """The most bytes :meth:`to_dict` takes as compact JSON: every statistic a float of the
        longest spelling (a window's buffers, not a count, are what make a learner large)."""
        full = self.copy()
        for a in self._arrays:
            getattr(full, a)[...] = -1.2345678901234567e-123
        return len(json.dumps(full.to_dict(), separators=(",", ":")))

    def _restore(self, data: dict[str, Any]) -> None:
        rounds = _as_integer(data["t"])  # a learner writes an int: "5", 2.7 or true is not one
        if rounds is None:
            raise StateError(f"{self.name}: stored round count t={data['t']!r} is not an integer >= 0")
        if rounds < 0:
            raise StateError(f"{self.name}: stored round count t={rounds} is negative")
        self.t_ = rounds
        for a in self._arrays:
            current = getattr(self, a)
            value = np.asarray(data["arrays"][a], dtype=current.dtype)
            if value.shape != current.shape:
                raise StateError(
                    f"{self.name}: stored array {a} has shape {value.shape}, expected {current.shape}"
                )
            if not np.all(np.isfinite(value)):  # a NaN statistic would fail every later bar
                raise StateError(f"{self.name}: stored array {a} holds a number that is not finite")
            if a in self._counts and np.any(value < 0):  # so would a negative count
                raise StateError(f"{self.name}: stored array {a} holds a negative count {value.min()!r}")
            setattr(self, a, value)
        self.rng_ = _generator_with_state(data["rng"])

    def copy(self) -> Bandit:
        """An independent copy (statistics and generator state)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for a in self._arrays:
            setattr(new, a, getattr(self, a).copy())
        new.rng_ = _generator_with_state(self.rng_.bit_generator.state)
        return new

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


# ============================================================================================
# Upper confidence bounds
# ============================================================================================


class UCB1(Bandit):
    """UCB1 (Auer et al. 2002): play the arm maximising ``mean + alpha * sqrt(2 ln n / n_i)``.

    ``alpha`` scales the bonus to the reward range (1 for rewards in [0, 1]). An arm never
    played has an infinite bonus and is played first. ``weights()`` puts all mass on the arm
    with the highest index (UCB is deterministic apart from ties).
    """

    name = "ucb"
    _params = ("alpha",)
    _arrays = ("counts_", "sums_")
    _counts = ("counts_",)

    def __init__(self, n_arms: int, alpha: float = 1.0, random_state: int | None = None):
        super().__init__(n_arms, random_state)
        self.alpha = _check_scale(self.name, "alpha", alpha)
        self.counts_ = np.zeros(self.n_arms)
        self.sums_ = np.zeros(self.n_arms)

    def _log_total(self) -> float:
        return math.log(max(self.counts_.sum(), 1.0))

    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = self.counts_
        played = counts > 0
        means = np.divide(self.sums_, counts, out=np.zeros(self.n_arms), where=played)
        bonus = np.full(self.n_arms, np.inf)
        bonus[played] = self.alpha * np.sqrt(2.0 * self._log_total() / counts[played])
        return means, bonus, means + bonus

    def select(self) -> Selection:
        means, bonus, index = self._index()
        arm = self._pick(index)
        return Selection(arm, _one_hot_of_max(index), means, bonuses=bonus)

    def weights(self) -> np.ndarray:
        return _one_hot_of_max(self._index()[2])

    def _update(self, arm: int, reward: float, probability: float | None = None) -> None:
        self.counts_[arm] += 1.0
        self.sums_[arm] += reward

    def _update_all(self, rewards: np.ndarray) -> None:
        self.counts_ += 1.0
        self.sums_ += rewards


class DiscountedUCB(UCB1):
    """Discounted UCB (Garivier & Moulines 2011): statistics decay by ``gamma`` every round.

    Counts and sums of every arm are multiplied by ``gamma`` before each update, so a reward
    ``k`` rounds old weighs ``gamma**k``; the bonus uses the discounted counts. Effective memory
    ``1 / (1 - gamma)`` rounds.
    """

    name = "ducb"
    _params = ("alpha", "gamma")

    def __init__(
        self, n_arms: int, gamma: float = 0.99, alpha: float = 1.0, random_state: int | None = None
    ):
        super().__init__(n_arms, alpha=alpha, random_state=random_state)
        self.gamma = _check_rate(self.name, "gamma", gamma)

    def _update(self, arm: int, reward: float, probability: float | None = None) -> None:
        self.counts_ *= self.gamma
        self.sums_ *= self.gamma
        super()._update(arm, reward)

    def _update_all(self, rewards: np.ndarray) -> None:
        self.counts_ *= self.gamma
        self.sums_ *= self.gamma
        super()._update_all(rewards)


class SlidingWindowUCB(UCB1):
    """Sliding-window UCB (Garivier & Moulines 2011): statistics of the last ``window`` rounds.

    A ring buffer keeps each round's rewards and which arms they belong to; counts and sums are
    recomputed from the buffer, so nothing older than ``window`` rounds has any influence.
    """

    name = "swucb"
    _params = ("alpha", "window")
    _arrays = ("buffer_rewards_", "buffer_mask_")
    _counts = ("buffer_mask_",)

    def __init__(
        self, n_arms: int, window: int = 200, alpha: float = 1.0, random_state: int | None = None
    ):
        Bandit.__init__(self, n_arms, random_state)
        self.alpha = _check_scale(self.name, "alpha", alpha)
        self.window = _check_count(self.name, "window", window, 1, MAX_WINDOW)
        self.buffer_rewards_ = np.zeros((self.window, self.n_arms))
        self.buffer_mask_ = np.zeros((self.window, self.n_arms))

    @property
    def counts_(self) -> np.ndarray:  # type: ignore[override]
        return self.buffer_mask_.sum(axis=0)

    @property
    def sums_(self) -> np.ndarray:  # type: ignore[override]
        return (self.buffer_rewards_ * self.buffer_mask_).sum(axis=0)

    def _log_total(self) -> float:
        return math.log(max(min(self.t_, self.window), 1))

    def _slot(self) -> int:
        return self.t_ % self.window

    def _update(self, arm: int, reward: float, probability: float | None = None) -> None:
        row = self._slot()
        self.buffer_rewards_[row] = 0.0
        self.buffer_mask_[row] = 0.0
        self.buffer_rewards_[row, arm] = reward
        self.buffer_mask_[row, arm] = 1.0

    def _update_all(self, rewards: np.ndarray) -> None:
        row = self._slot()
        self.buffer_rewards_[row] = rewards
        self.buffer_mask_[row] = 1.0


# ============================================================================================
# Thompson sampling, Gaussian rewards with unknown mean and variance
# ============================================================================================


class _PosteriorSampling(Bandit):
    """Shared by the Thompson samplers: play the largest posterior draw; weights are each arm's
    share of ``n_weight_samples`` joint draws in which it is largest."""

    n_weight_samples: int

    @abstractmethod
    def _draw(self, size: int | None) -> np.ndarray:
        """One draw per arm from the posteriors, on the reward scale; ``size`` rows of them if given."""

    @abstractmethod
    def _posterior_means(self) -> np.ndarray:
        """Each arm's posterior mean reward (the estimates a selection reports)."""

    def select(self) -> Selection:
        samples = self._draw(None)
        arm = self._pick(samples)
        weights = np.zeros(self.n_arms)
        weights[arm] = 1.0
        return Selection(arm, weights, self._posterior_means(), samples=samples)

    @property
    def weights_noise(self) -> float:
        """Three standard errors (at most) of the difference of two arms' win frequencies over
        ``n_weight_samples`` draws: ``3 / sqrt(n)``."""
        return 3.0 / math.sqrt(self.n_weight_samples)

    def weights(self) -> np.ndarray:
        return _win_shares(self._draw(self.n_weight_samples))


def _thompson_moments(arrays: dict[str, Any]) -> dict[str, Any]:
    """A Gaussian Thompson sampler's statistics stored as weight, sum and sum of squares
    (``s0_``, ``s1_``, ``s2_``, before 2026-11-29) as weight, mean and sum of squared deviations;
    the other arrays as stored. The spread is as precise as those sums kept it."""
    s0, s1, s2 = (np.asarray(arrays[a], dtype=float) for a in ("s0_", "s1_", "s2_"))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(s0 > 0, s1 / np.where(s0 > 0, s0, 1.0), 0.0)
    rest = {k: v for k, v in arrays.items() if k not in ("s1_", "s2_")}
    return rest | {"mean_": mean.tolist(), "m2_": np.maximum(s2 - s1 * mean, 0.0).tolist()}


class GaussianThompson(_PosteriorSampling):
    """Thompson sampling for Gaussian rewards of unknown mean and variance.

    Each arm has a Normal-Gamma posterior over (mean, precision) with prior
    ``mu ~ N(mu0, 1 / (kappa0 * tau))``, ``tau ~ Gamma(alpha0, rate=beta0)``. The sufficient
    statistics are kept per arm as weight, mean and sum of squared deviations from the mean
    (Welford's update, so rewards far from zero keep their spread: sums of squares lose it to
    cancellation once the mean is ~1e6 times the spread); with ``gamma < 1`` the weight and the
    squared deviations decay every round (discounted Thompson sampling). ``select()`` draws (tau, mu) from every
    posterior and plays the arm with the largest mu. ``weights()`` estimates each arm's posterior
    probability of being the best from ``n_weight_samples`` joint draws.
    """

    name = "thompson"
    _params = ("mu0", "kappa0", "alpha0", "beta0", "gamma", "n_weight_samples")
    _arrays = ("s0_", "mean_", "m2_")
    _counts = ("s0_", "m2_")

    def __init__(
        self,
        n_arms: int,
        mu0: float = 0.0,
        kappa0: float = 1.0,
        alpha0: float = 1.0,
        beta0: float = 1.0,
        gamma: float = 1.0,
        n_weight_samples: int = 256,
        random_state: int | None = None,
    ):
        super().__init__(n_arms, random_state)
        self.mu0 = _check_prior(self.name, "mu0", mu0, positive=False)
        self.kappa0 = _check_prior(self.name, "kappa0", kappa0)
        self.alpha0 = _check_prior(self.name, "alpha0", alpha0)
        self.beta0 = _check_prior(self.name, "beta0", beta0)
        self.gamma = _check_rate(self.name, "gamma", gamma)
        self.n_weight_samples = _check_weight_samples(self.name, n_weight_samples)
        self.s0_ = np.zeros(self.n_arms)  # weight of the rewards seen (their count when gamma = 1)
        self.mean_ = np.zeros(self.n_arms)  # their (weighted) mean; 0 while the weight is 0
        self.m2_ = np.zeros(self.n_arms)  # their (weighted) sum of squared deviations from it

    def posterior(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(mu_n, kappa_n, alpha_n, beta_n) of every arm."""
        n = self.s0_
        kappa = self.kappa0 + n
        mu = self.mu0 + n * (self.mean_ - self.mu0) / kappa
        alpha = self.alpha0 + 0.5 * n
        beta = self.beta0 + 0.5 * self.m2_ + self.kappa0 * n * (self.mean_ - self.mu0) ** 2 / (2.0 * kappa)
        return mu, kappa, alpha, beta

    def _draw(self, size: int | None) -> np.ndarray:
        mu, kappa, alpha, beta = self.posterior()
        shape = (self.n_arms,) if size is None else (size, self.n_arms)
        tau = self.rng_.gamma(alpha, 1.0 / beta, size=shape)
        return mu + self.rng_.standard_normal(shape) / np.sqrt(kappa * tau)

    def _posterior_means(self) -> np.ndarray:
        return self.posterior()[0]

    def _decay(self) -> None:
        if self.gamma < 1.0:  # the mean of discounted rewards is unchanged by the discount
            self.s0_ *= self.gamma
            self.m2_ *= self.gamma

    def _update(self, arm: int, reward: float, probability: float | None = None) -> None:
        self._decay()
        self.s0_[arm] += 1.0
        deviation = reward - self.mean_[arm]
        self.mean_[arm] += deviation / self.s0_[arm]
        self.m2_[arm] += deviation * (reward - self.mean_[arm])  # = deviation² × old weight / new weight

    def _update_all(self, rewards: np.ndarray) -> None:
        self._decay()
        self.s0_ += 1.0
        deviation = rewards - self.mean_
        self.mean_ += deviation / self.s0_
        self.m2_ += deviation * (rewards - self.mean_)

    def _restore(self, data: dict[str, Any]) -> None:
        arrays = data["arrays"]
        if "mean_" not in arrays and "s1_" in arrays and "s2_" in arrays:
            data = {**data, "arrays": _thompson_moments(arrays)}  # stored before 2026-11-29
        super()._restore(data)


class DiscountedThompson(GaussianThompson):
    """Discounted Thompson sampling: :class:`GaussianThompson` with ``gamma = 0.98`` by default."""

    name = "dts"

    def __init__(
        self,
        n_arms: int,
        gamma: float = 0.98,
        mu0: float = 0.0,
        kappa0: float = 1.0,
        alpha0: float = 1.0,
        beta0: float = 1.0,
        n_weight_samples: int = 256,
        random_state: int | None = None,
    ):
        super().__init__(
            n_arms,
            mu0=mu0,
            kappa0=kappa0,
            alpha0=alpha0,
            beta0=beta0,
            gamma=gamma,
            n_weight_samples=n_weight_samples,
            random_state=random_state,
        )


# ============================================================================================
# Thompson sampling, rewards in a known range (Beta posteriors)
# ============================================================================================


class BetaThompson(_PosteriorSampling):
    """Thompson sampling with Beta posteriors, for rewards in a known range.

    Rewards are mapped from ``reward_range`` onto [0, 1] (values outside are clipped to its
    ends). A mapped reward ``x`` counts as one Bernoulli trial that succeeds with probability
    ``x`` (Agrawal & Goyal, "Analysis of Thompson Sampling for the Multi-armed Bandit Problem",
    COLT 2012), so 0/1 rewards update the posterior exactly as Bernoulli observations and other
    rewards keep the algorithm's guarantees for bounded rewards. Each arm's posterior is
    ``Beta(a0 + successes, b0 + failures)``; ``select()`` draws from every posterior and plays
    the largest draw. With ``gamma < 1`` the counts decay every round (discounted Thompson
    sampling for Bernoulli rewards: a memory of ``1 / (1 - gamma)`` rounds). Estimates and
    samples are reported on the reward scale (``low + (high - low) * p``).

    Use it where rewards are bounded and the range is known (0/1 outcomes, hit rates); for
    unbounded rewards the clipping discards what lies beyond the range, and the Normal-Gamma
    :class:`GaussianThompson` is the better model.
    """

    name = "betats"
    _params = ("reward_range", "a0", "b0", "gamma", "n_weight_samples")
    _arrays = ("successes_", "failures_")
    _counts = ("successes_", "failures_")

    def __init__(
        self,
        n_arms: int,
        reward_range: tuple[float, float] = (0.0, 1.0),
        a0: float = 1.0,
        b0: float = 1.0,
        gamma: float = 1.0,
        n_weight_samples: int = 256,
        random_state: int | None = None,
    ):
        super().__init__(n_arms, random_state)
        self.reward_range = _reward_range(self.name, reward_range)
        self.a0 = _check_prior(self.name, "a0", a0)
        self.b0 = _check_prior(self.name, "b0", b0)
        self.gamma = _check_rate(self.name, "gamma", gamma)
        self.n_weight_samples = _check_weight_samples(self.name, n_weight_samples)
        self.successes_ = np.zeros(self.n_arms)
        self.failures_ = np.zeros(self.n_arms)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["reward_range"] = list(self.reward_range)
        return params

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) of every arm's Beta posterior over its success probability."""
        return self.a0 + self.successes_, self.b0 + self.failures_

    def _on_reward_scale(self, p: np.ndarray) -> np.ndarray:
        lo, hi = self.reward_range
        return lo + (hi - lo) * p

    def _draw(self, size: int | None) -> np.ndarray:
        a, b = self.posterior()
        return self._on_reward_scale(self.rng_.beta(a, b, size=(self.n_arms,) if size is None else (size, self.n_arms)))

    def _posterior_means(self) -> np.ndarray:
        a, b = self.posterior()
        return self._on_reward_scale(a / (a + b))

    def _learn(self, arms: int | slice, rewards: float | np.ndarray) -> None:
        """Decay, then one Bernoulli trial per observed reward. One uniform draw serves every arm
        of a round: each trial still succeeds with its own probability, and an arm rewarded more
        than another that round never fails where the other succeeds (independent draws gave
        agents with identical rewards different counts, and a learner that ranked them by luck)."""
        unit = _to_unit(rewards, self.reward_range)
        success = (self.rng_.random() < unit).astype(np.float64)
        if self.gamma < 1.0:
            self.successes_ *= self.gamma
            self.failures_ *= self.gamma
        self.successes_[arms] += success
        self.failures_[arms] += 1.0 - success

    def _update(self, arm: int, reward: float, probability: float | None = None) -> None:
        self._learn(arm, reward)

    def _update_all(self, rewards: np.ndarray) -> None:
        self._learn(slice(None), rewards)


# ============================================================================================
# Change detection: restart on a generalised likelihood ratio test (GLR)
# ============================================================================================


def glr_threshold(n: int | np.ndarray, delta: float) -> float | np.ndarray:
    """The GLR test's threshold after ``n`` samples, ``ln(3 n^1.5 / delta)`` (Besson et al.)."""
    return np.log(3.0 * np.asarray(n, dtype=float) ** 1.5 / delta)


def glr_statistics(samples: np.ndarray, sigma: float, min_segment: int = 1) -> np.ndarray:
    """Gaussian GLR statistic of a change in mean, per column of ``samples`` (n, m).

    ``max over s of s (n - s) / n * (mean(x[:s]) - mean(x[s:]))^2 / (2 sigma^2)``: the log
    likelihood ratio of "one change of mean after some sample s" against "no change", for
    sigma-sub-Gaussian samples, maximised over the splits that leave at least ``min_segment``
    samples on each side (0 when there is none).
    """
    n = samples.shape[0]
    if n < 2 * min_segment or n < 2:
        return np.zeros(samples.shape[1])
    cumulative = np.cumsum(samples, axis=0)
    s = np.arange(min_segment, n - min_segment + 1, dtype=float)[:, None]
    head = cumulative[min_segment - 1: n - min_segment]
    before = head / s
    after = (cumulative[-1] - head) / (n - s)
    return (s * (n - s) / n * (before - after) ** 2).max(axis=0) / (2.0 * sigma * sigma)


MIN_EXPLORE = 1e-9
"""The smallest forced-exploration share accepted (0 turns it off): a period of ``K / explore``
rounds must stay a machine integer."""


class RestartOnChange(Bandit):
    """Global restarts on detected change points (Besson, Kaufmann, Maillard & Seznec, "Efficient
    change-point detection for tackling piecewise-stationary bandits", JMLR 2022).

    After every update the rewards each updated arm earned since the last restart (its last
    ``history`` of them) are tested for one change of mean with the Gaussian GLR test of
    :func:`glr_statistics` against :func:`glr_threshold` of the number of rewards since the
    restart (``delta``: the test's nominal false-alarm probability — the threshold is the
    simplified one of Besson et al.'s experiments; ``sigma``: the rewards' sub-Gaussian scale, 1
    for unit-scale risk-adjusted rewards, ``B / 2`` for rewards in an interval of width ``B``).
    Only splits that leave ``min_segment`` rewards on each side count: daily returns have fat
    tails, and one large reward at either end of the history is otherwise read as a change (with
    Student-t rewards of 4 degrees of freedom and unit variance, 229 false alarms in 10 streams
    of 2,300 rounds with every split, 1 with 20 rewards on each side). A detection in any arm
    restarts the whole learner (its statistics and every arm's history): when a regime shifts,
    every agent's reward changes with it. ``explore`` = alpha > 0 forces, in every
    ``max(floor(K / alpha), K + 1)`` rounds since the last restart, one round on each arm (so at
    most ``K / (K + 1)`` of the rounds, one in each period left to the index), so that a change in
    an arm the learner no longer plays is seen with bandit feedback (Besson et al. take
    ``alpha = sqrt(Y ln T / T)`` for ``Y`` change points in ``T`` rounds). With full information
    every arm is seen every round and ``explore`` should stay 0.
    """

    _detector_params: ClassVar[tuple[str, ...]] = ("sigma", "delta", "history", "explore", "min_segment")
    _detector_arrays: ClassVar[tuple[str, ...]] = ("history_", "history_n_", "restarts_")
    _detector_counts: ClassVar[tuple[str, ...]] = ("history_n_", "restarts_")
    _base_arrays: ClassVar[tuple[str, ...]]  # the restarted learner's statistics, zeroed on a change

    def __init_subclass__(cls, restarts: type[Bandit] | None = None, without: tuple[str, ...] = (), **kwargs: Any):
        """``class X(RestartOnChange, Learner, restarts=Learner)``: X's parameters are Learner's (but
        ``without``) and the detector's, its statistics Learner's and the detector's."""
        super().__init_subclass__(**kwargs)
        if restarts is not None:
            cls._params = tuple(p for p in restarts._params if p not in without) + cls._detector_params
            cls._base_arrays = restarts._arrays
            cls._arrays = restarts._arrays + cls._detector_arrays
            cls._counts = restarts._counts + cls._detector_counts

    def _init_detector(self, sigma: float, delta: float, history: int, explore: float, min_segment: int) -> None:
        self.sigma = _check_scale(self.name, "sigma", sigma)
        level = _as_real(delta)  # None for bools and strings
        if level is None or not 0.0 < level < 1.0:
            raise BanditError(f"{self.name}: delta must be in (0, 1), got {delta!r}")
        self.delta = level
        self.history = _check_count(self.name, "history", history, 2, MAX_WINDOW)
        share = _as_real(explore)
        if share is None or not (share == 0.0 or MIN_EXPLORE <= share < 1.0):
            raise BanditError(f"{self.name}: explore must be 0 or in [{MIN_EXPLORE:g}, 1), got {explore!r}")
        self.explore = share
        segment = _as_integer(min_segment)
        if segment is None or not 1 <= segment <= self.history // 2:
            raise BanditError(f"{self.name}: min_segment must be an integer in [1, history // 2 = "
                              f"{self.history // 2}], got {min_segment!r}")
        self.min_segment = segment
        self.history_ = np.zeros((self.history, self.n_arms))
        self.history_n_ = np.zeros(self.n_arms)  # rewards per arm since the last restart
        self.restarts_ = np.zeros(2)  # [rounds since the last restart, restarts so far]

    @property
    def rounds_since_restart(self) -> int:
        return int(self.restarts_[0])

    @property
    def rounds_learned(self) -> int:
        return self.rounds_since_restart

    @property
    def restarts(self) -> int:
        """Change points detected (and restarts made) so far."""
        return int(self.restarts_[1])

    def _forced_arm(self) -> int | None:
        """The arm this round must play for forced exploration, or None."""
        if self.explore <= 0.0:
            return None
        period = max(int(self.n_arms / self.explore), self.n_arms + 1)
        slot = self.rounds_since_restart % period
        return slot if slot < self.n_arms else None

    def select(self) -> Selection:
        selection = super().select()  # type: ignore[safe-super]
        forced = self._forced_arm()
        if forced is None:
            return selection
        return Selection(forced, np.eye(self.n_arms)[forced], selection.estimates,
                         bonuses=selection.bonuses, samples=selection.samples, forced=True)

    def _window(self, arms: np.ndarray | slice, count: int) -> np.ndarray:
        """The rewards of ``arms`` (which have ``count`` each since the last restart), their last
        ``history`` of them oldest first: shape (min(count, history), number of arms)."""
        if count <= self.history:
            return self.history_[:count, arms]
        start = count % self.history  # the oldest kept reward's slot
        return np.concatenate((self.history_[start:, arms], self.history_[:start, arms]))

    def _changed(self, arms: np.ndarray) -> bool:
        """Whether the rewards of any of ``arms`` since the last restart changed mean. The test
        reads the last ``history`` of them, but its threshold counts all of them: a learner that
        has run long past its history keeps the false-alarm level of a test over everything it
        kept, instead of re-testing its last ``history`` rewards at a fixed threshold for ever."""
        counts = self.history_n_[arms]
        if counts.size == self.n_arms and np.all(counts == counts[0]):  # full information: one test
            groups = [(slice(None), int(counts[0]))]
        else:
            groups = [(np.array([arm]), int(count)) for arm, count in zip(arms, counts, strict=True)]
        for columns, count in groups:
            if count >= 2 and np.any(glr_statistics(self._window(columns, count), self.sigma, self.min_segment)
                                     > glr_threshold(count, self.delta)):
                return True
        return False

    def _record(self, arms: np.ndarray, rewards: np.ndarray) -> None:
        slots = self.history_n_[arms].astype(int) % self.history
        self.history_[slots, arms] = rewards
        self.history_n_[arms] += 1.0
        self.restarts_[0] += 1.0
        if self._changed(arms):
            for a in self._base_arrays:
                getattr(self, a)[...] = 0.0
            self.history_[...] = 0.0
            self.history_n_[...] = 0.0
            self.restarts_[0] = 0.0
            self.restarts_[1] += 1.0

    def _update(self, arm: int, reward: float, probability: float | None = None) -> None:
        super()._update(arm, reward, probability)  # type: ignore[safe-super]
        self._record(np.array([arm]), np.array([reward]))

    def _update_all(self, rewards: np.ndarray) -> None:
        super()._update_all(rewards)  # type: ignore[safe-super]
        self._record(np.arange(self.n_arms), rewards)

    def _restore(self, data: dict[str, Any]) -> None:
        super()._restore(data)
        if np.any(self.history_n_ != np.round(self.history_n_)) or np.any(self.restarts_ != np.round(self.restarts_)):
            raise StateError(f"{self.name}: stored history_n_ and restarts_ must hold whole numbers")
        if max(self.history_n_.max(), self.restarts_.max()) > self.t_:  # more than the rounds seen
            raise StateError(f"{self.name}: stored history_n_ {self.history_n_.tolist()} or restarts_ "
                             f"{self.restarts_.tolist()} count more than the {self.t_} rounds seen")


class GLRUCB(RestartOnChange, UCB1, restarts=UCB1):
    """UCB1 restarted whenever the GLR test detects a change point (see :class:`RestartOnChange`)."""

    name = "glrucb"

    def __init__(
        self,
        n_arms: int,
        alpha: float = 1.0,
        sigma: float = 1.0,
        delta: float = 0.01,
        history: int = 250,
        explore: float = 0.0,
        min_segment: int = 20,
        random_state: int | None = None,
    ):
        super().__init__(n_arms, alpha=alpha, random_state=random_state)
        self._init_detector(sigma, delta, history, explore, min_segment)


class GLRThompson(RestartOnChange, GaussianThompson, restarts=GaussianThompson, without=("gamma",)):
    """Gaussian Thompson sampling restarted whenever the GLR test detects a change point (see
    :class:`RestartOnChange`): after a restart every posterior is the prior again (no ``gamma``:
    it forgets by restarting, not by discounting)."""

    name = "glrts"

    def __init__(
        self,
        n_arms: int,
        sigma: float = 1.0,
        delta: float = 0.01,
        history: int = 250,
        explore: float = 0.0,
        min_segment: int = 20,
        mu0: float = 0.0,
        kappa0: float = 1.0,
        alpha0: float = 1.0,
        beta0: float = 1.0,
        n_weight_samples: int = 256,
        random_state: int | None = None,
    ):
        super().__init__(n_arms, mu0=mu0, kappa0=kappa0, alpha0=alpha0, beta0=beta0,
                         n_weight_samples=n_weight_samples, random_state=random_state)
        self._init_detector(sigma, delta, history, explore, min_segment)


# ============================================================================================
# Exponential weights: EXP3 (bandit feedback) and Hedge (full information)
# ============================================================================================


class _ExponentialWeights(Bandit):
    """Shared by EXP3 and Hedge: log-weights, sampling from ``weights()``, discount + recentre."""

    _arrays = ("log_weights_",)
    discount: float

    def select(self) -> Selection:
        p = self.weights()
        arm = int(self.rng_.choice(self.n_arms, p=p))
        return Selection(arm, p, self.log_weights_.copy())

    def _add(self, arms: int | slice, scale: float, values: float | np.ndarray, what: str) -> None:
        """``log_w[arms] += scale * values``, then discount and recentre; an update that would make
        a log-weight non-finite (an importance weight overflowing) raises and changes nothing. A
        value of 0 adds nothing whatever the scale: at a draw probability of 1e-320 the scale
        ``eta / p`` is infinite, and infinity × 0 (NaN) refused a reward that moves no weight."""
        log_weights = self.log_weights_.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            log_weights[arms] += np.where(np.asarray(values) == 0.0, 0.0, scale * values)
            log_weights *= self.discount
            log_weights -= log_weights.max()
        if not np.all(np.isfinite(log_weights)):
            raise BanditError(f"{self.name}: update with {what} makes the weights non-finite")
        self.log_weights_ = log_weights

    def _played_with(self, arm: int, probability: float | None) -> float:
        """The importance weight's denominator: the probability ``arm`` was played with."""
        p = float(self.weights()[arm]) if probability is None else probability
        if p <= 0.0:
            raise BanditError(
                f"{self.name}: arm {arm} has probability 0 here, so it was not played from these "
                f"weights: pass the probability it was played with"
            )
        return p


class EXP3(_ExponentialWeights):
    """EXP3 (Auer et al. 2002): exponential weights with importance-weighted reward estimates.

    Rewards are mapped to [0, 1] through ``reward_range`` (values outside are clipped). Play
    probabilities are ``(1 - gamma) * softmax(log_w) + gamma / K``; after playing arm ``i`` with
    probability ``p_i`` and observing ``x``, ``log_w[i] += gamma * (x / p_i) / K``. With
    ``update_all`` no importance weighting is needed (every arm's reward is seen). ``discount``
    < 1 shrinks the log-weights toward uniform every round, so the learner can recover from a
    change point.
    """

    name = "exp3"
    _params = ("gamma", "reward_range", "discount")

    def __init__(
        self,
        n_arms: int,
        gamma: float = 0.1,
        reward_range: tuple[float, float] = (-3.0, 3.0),
        discount: float = 1.0,
        random_state: int | None = None,
    ):
        super().__init__(n_arms, random_state)
        self.gamma = _check_rate(self.name, "gamma", gamma)
        self.reward_range = _reward_range(self.name, reward_range)
        self.discount = _check_rate(self.name, "discount", discount)
        self.log_weights_ = np.zeros(self.n_arms)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["reward_range"] = list(self.reward_range)
        return params

    def weights(self) -> np.ndarray:
        return (1.0 - self.gamma) * _softmax(self.log_weights_) + self.gamma / self.n_arms

    def _update(self, arm: int, reward: float, probability: float | None = None) -> None:
        p = self._played_with(arm, probability)
        self._add(arm, self.gamma / (p * self.n_arms), float(_to_unit(reward, self.reward_range)),
                  f"reward {reward!r} / probability {p!r}")

    def _update_all(self, rewards: np.ndarray) -> None:
        self._add(slice(None), self.gamma / self.n_arms, _to_unit(rewards, self.reward_range), "rewards")


class Hedge(_ExponentialWeights):
    """Hedge / exponential weights for full information: ``log_w += eta * reward`` per round.

    ``weights()`` is ``softmax(log_w)``; ``select()`` samples an arm from it. ``discount`` < 1
    multiplies the log-weights every round (a fading memory, for non-stationary rewards).
    With bandit feedback (``update``) the unseen rewards are replaced by the unbiased estimate
    ``reward / p_arm`` for the played arm and 0 for the others; prefer EXP3 there, whose forced
    exploration keeps that estimate's variance bounded.
    """

    name = "hedge"
    _params = ("eta", "discount")

    def __init__(
        self, n_arms: int, eta: float = 0.1, discount: float = 1.0, random_state: int | None = None
    ):
        super().__init__(n_arms, random_state)
        self.eta = _check_scale(self.name, "eta", eta, most=MAX_ETA)
        self.discount = _check_rate(self.name, "discount", discount)
        self.log_weights_ = np.zeros(self.n_arms)

    def weights(self) -> np.ndarray:
        return _softmax(self.log_weights_)

    def _update(self, arm: int, reward: float, probability: float | None = None) -> None:
        p = self._played_with(arm, probability)
        self._add(arm, self.eta / p, reward, f"reward {reward!r} / probability {p!r}")

    def _update_all(self, rewards: np.ndarray) -> None:
        self._add(slice(None), self.eta, rewards, "rewards")


# ============================================================================================
# Registry and serialisation
# ============================================================================================

POLICIES: dict[str, type[Bandit]] = {
    cls.name: cls
    for cls in (UCB1, DiscountedUCB, SlidingWindowUCB, GLRUCB, GaussianThompson, DiscountedThompson,
                GLRThompson, BetaThompson, EXP3, Hedge)
}
"""Policy name (as used on the command line) → learner class."""


def make_bandit(policy: str, n_arms: int, random_state: int | None = None, **params: Any) -> Bandit:
    """A fresh learner by policy name (``ucb``, ``ducb``, ``swucb``, ``glrucb``, ``thompson``,
    ``dts``, ``glrts``, ``betats``, ``exp3``, ``hedge``) with the given hyperparameters."""
    try:
        cls = POLICIES[policy]
    except KeyError:
        raise BanditError(f"unknown bandit policy {policy!r}; known: {sorted(POLICIES)}") from None
    try:
        learner = cls(n_arms, random_state=random_state, **params)
    except TypeError as exc:
        raise BanditError(f"{policy}: bad hyperparameters {params!r}: {exc}") from None
    return learner


def bandit_from_dict(data: dict[str, Any]) -> Bandit:
    """Rebuild a learner from :meth:`Bandit.to_dict` output (raises StateError if malformed)."""
    try:
        params = dict(data["params"])
        policy = data["policy"]
        n_arms = params.pop("n_arms")
        seed = params.pop("random_state")
        learner = make_bandit(policy, n_arms, random_state=seed, **params)  # the constructors' checks
        learner._restore(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"cannot restore bandit state: {type(exc).__name__}: {exc}") from exc
    return learner
