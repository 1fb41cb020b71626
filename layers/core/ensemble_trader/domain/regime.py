"""Online regime detection: a causal HMM forward filter, a transition rule and the stage step.

Per bar, for a model with K hidden states (:class:`~.regime_model.RegimeModel`):

1. the model's features are read from the :class:`FeatureVector`, transformed (log of the
   volatilities) and standardised;
2. the forward filter advances in log space, O(K²):
   ``log a_t = log b_t + logsumexp_i(log a_{t-1,i} + log A_ij)``, normalised, where ``b_t`` are
   the Gaussian emission densities. The result is the *filtered* distribution
   P(state_t | x_1..x_t): it uses only bars up to t, unlike hmmlearn's ``predict_proba``, which
   smooths with future bars. At every t it equals the last row of hmmlearn's posterior on the
   prefix ``x_1..x_t`` (tested to 1e-8);
3. regime probabilities are the sums of state probabilities by the model's state→regime map, in
   the order BULL, BEAR, SIDEWAYS, VOLATILE;
4. the :class:`TransitionRule` decides the *reported* regime: it switches only when another
   regime's probability exceeds the current one's by a margin for a number of consecutive bars
   (and the current one has been held a minimum dwell). A switch emits :class:`RegimeChanged`.
   The confidence is the filtered probability of the reported regime.

Bars still in feature warm-up (``FeatureVector.ready`` is False) do not enter the filter; their
estimate is the model's start distribution, its most likely regime, ``bars_in_regime`` 0 (no
detection). Warm-up bars after ready ones (the symbol's features state restarted) also restart
the detection: the filter distribution, the reported regime and a pending confirmation are
dropped, so the first ready bar after them is detected as a new symbol's first bar (its regime
comes without a ``RegimeChanged``). A bar at or before the last applied bar of the
symbol (a redelivery) is a no-op. Everything here is numpy + pydantic: the Lambda needs no
hmmlearn, scipy or scikit-learn.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import (
    DataError,
    FieldProblem,
    InvalidMessageError,
    ModelArtifactError,
    StateError,
)
from ensemble_trader.domain.features import (
    FEATURE_NAMES,
    MAX_TIMESTAMP_NS,
    MIN_TIMESTAMP_NS,
    replay_features,
    timestamp_ns,
)
from ensemble_trader.domain.models import (
    REGIMES,
    Count,
    FeatureVector,
    MarketState,
    Message,
    Probability,
    Regime,
    RegimeEstimate,
    Symbol,
    Timestamp,
    deterministic_id,
)
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel, is_version_list

__all__ = [
    "FeatureSpec",
    "RegimeChanged",
    "RegimeDetector",
    "RegimeFilterState",
    "RegimeModel",
    "HistoryRow",
    "RegimeStep",
    "TransitionRule",
    "forward_step",
]

STATE_FORMAT = 1
STATE_LINEAGE = 8
"""Refit-lineage entries a filter state keeps of the model that wrote it (newest first): a
container still serving a model up to this many refits older than the writer carries the filter
(a container serves the model of its cold start until it is recycled; refits are daily)."""
_REGIME_INDEX = {r: i for i, r in enumerate(REGIMES)}


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


class RegimeChanged(Message):
    """The reported regime of a symbol changed at a bar (published to EventBridge).

    ``bars_since_previous_change`` counts the bars the previous regime was reported for (since
    the previous change, or since the first estimate of the symbol).

    ``event_id`` derives from the symbol, the bar's UTC instant and the change (from, to) only,
    not from ``model_version`` (which stays in the body): a batch retried on a container serving
    a refit of the model that first published the change (the filter carries over) publishes
    the same change at the same bar under the same id, so consumers can drop the duplicate.
    """

    event_id: str
    symbol: Symbol
    from_regime: Regime
    to_regime: Regime
    confidence: Probability
    timestamp: Timestamp
    bars_since_previous_change: Count
    model_version: str

    @classmethod
    def create(
        cls,
        symbol: str,
        from_regime: Regime,
        to_regime: Regime,
        confidence: float,
        timestamp: datetime,
        bars_since_previous_change: int,
        model_version: str,
    ) -> RegimeChanged:
        """An event whose id derives from (symbol, UTC bar time, from, to): redelivery-safe,
        whichever model version the redelivery runs on."""
        return cls(
            event_id=deterministic_id("regime-changed", symbol, timestamp, from_regime.value, to_regime.value),
            symbol=symbol,
            from_regime=from_regime,
            to_regime=to_regime,
            confidence=confidence,
            timestamp=timestamp,
            bars_since_previous_change=bars_since_previous_change,
            model_version=model_version,
        )


# --------------------------------------------------------------------------------------------
# The forward filter
# --------------------------------------------------------------------------------------------


def forward_step(
    log_alpha: np.ndarray | None,
    log_b: np.ndarray,
    log_start: np.ndarray,
    transmat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One step of the normalised forward recursion in log space.

    ``log_alpha`` is the previous filtered log distribution (normalised; None before the first
    observation), ``log_b`` the log emission densities of the new observation. Returns the new
    normalised log distribution, the same as probabilities, and ``log c_t`` = log p(x_t | x_<t),
    whose running sum is the log-likelihood of the sequence.

    The predict step ``logsumexp_i(log a_i + log A_ij)`` is computed as
    ``m + log(exp(log a - m) @ A)`` with ``m = max log a``: one matrix-vector product, exact
    because every entry of A is > 0 (the artifact guarantees it) and ``exp(log a - m) <= 1``.
    """
    if log_alpha is None:
        log_pred = log_start
    else:
        m = log_alpha.max()
        log_pred = np.log(np.exp(log_alpha - m) @ transmat) + m
    log_post = log_pred + log_b
    top = log_post.max()
    if not math.isfinite(top):
        raise StateError(f"forward filter lost all probability mass (max log density {top})")
    probs = np.exp(log_post - top)
    total = probs.sum()
    log_c = top + math.log(total)
    return log_post - log_c, probs / total, log_c


@dataclass(frozen=True)
class TransitionRule:
    """When the reported regime may change.

    The regime with the highest filtered probability (the candidate) replaces the reported one
    when its probability exceeds the reported one's by more than ``margin`` on ``confirm_bars``
    consecutive bars, and the reported regime has been held at least ``min_dwell`` bars.
    ``TransitionRule(0.0, 1, 1)`` reports the plain argmax of every bar.

    The defaults (a 0.35 lead on one bar) were chosen on the synthetic ``realistic`` preset:
    they halve the argmax's excess flips for about half a bar of extra detection lag and a
    fraction of a point of accuracy (docs/regime.md).
    """

    margin: float = 0.35
    confirm_bars: int = 1
    min_dwell: int = 1

    def __post_init__(self) -> None:
        # the options come from JSON (ET_REGIME_RULE) too: 1.5 or true would compare as a count
        if isinstance(self.margin, bool) or not isinstance(self.margin, numbers.Real):
            raise ValueError(f"margin {self.margin!r} must be a number in [0, 1)")
        if not (0.0 <= self.margin < 1.0):
            raise ValueError(f"margin {self.margin!r} must be in [0, 1)")
        for name in ("confirm_bars", "min_dwell"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} {value!r} must be an integer >= 1")
            if value < 1:
                raise ValueError(f"{name} {value!r} must be >= 1")

    def as_dict(self) -> dict[str, Any]:
        return {"margin": self.margin, "confirm_bars": self.confirm_bars, "min_dwell": self.min_dwell}

    def apply(self, state: RegimeFilterState, regime_probs: np.ndarray) -> tuple[Regime, Regime, int] | None:
        """Update the reported regime of ``state`` in place from this bar's regime probabilities.

        Returns ``(from, to, bars the previous regime was held)`` when the reported regime
        changed, else None. The first estimate of a symbol sets the regime without a change.
        """
        candidate = REGIMES[int(regime_probs.argmax())]
        current = state.regime
        if current is None:
            state.regime, state.bars_in_regime = candidate, 1
            return None
        if candidate is not current and (
            regime_probs[_REGIME_INDEX[candidate]] - regime_probs[_REGIME_INDEX[current]] > self.margin
        ):
            if state.pending is candidate:
                state.pending_count += 1
            else:
                state.pending, state.pending_count = candidate, 1
            if state.pending_count >= self.confirm_bars and state.bars_in_regime >= self.min_dwell:
                held = state.bars_in_regime
                state.regime, state.bars_in_regime = candidate, 1
                state.pending, state.pending_count = None, 0
                state.changes += 1
                return current, candidate, held
        else:
            state.pending, state.pending_count = None, 0
        state.bars_in_regime += 1
        return None


@dataclass(slots=True)
class RegimeFilterState:
    """Everything the detector keeps per symbol between bars; serialisable to bytes (Redis).

    ``log_alpha`` is the filtered log distribution over hidden states after the last observed
    bar (None before the first). ``regime`` is the reported regime (None before the first
    estimate), held for ``bars_in_regime`` bars; ``pending`` / ``pending_count`` track a
    candidate regime waiting for confirmation. ``last_ns`` is the time of the last applied
    bar (nanoseconds since the epoch): a bar at or before it is a redelivery.
    ``lineage`` is the refit lineage of ``model_version`` (its first :data:`STATE_LINEAGE`
    versions, newest first): a model it names carries the filter too
    (:meth:`RegimeModel.states_aligned_with`). Encoded only when non-empty, so a state without it
    (a model fitted from scratch, or written before lineages were recorded) keeps the old bytes.
    """

    symbol: str
    model_version: str
    log_alpha: np.ndarray | None = None
    last_ns: int | None = None
    n_bars: int = 0
    n_observed: int = 0
    log_likelihood: float = 0.0
    regime: Regime | None = None
    bars_in_regime: int = 0
    pending: Regime | None = None
    pending_count: int = 0
    changes: int = field(default=0)
    lineage: tuple[str, ...] = ()

    def copy(self) -> RegimeFilterState:
        return RegimeFilterState(
            self.symbol,
            self.model_version,
            self.log_alpha,  # never mutated in place: every update assigns a new array
            self.last_ns,
            self.n_bars,
            self.n_observed,
            self.log_likelihood,
            self.regime,
            self.bars_in_regime,
            self.pending,
            self.pending_count,
            self.changes,
            self.lineage,
        )

    def to_bytes(self) -> bytes:
        """Compact JSON; floats are written with ``repr`` so a round trip is exact.

        ``lineage`` is an optional key of format 1 (absent when empty): states written before it
        existed load with an empty lineage, and code that predates it ignores it."""
        raw: dict[str, Any] = {
            "format": STATE_FORMAT,
            "symbol": self.symbol,
            "model_version": self.model_version,
            "log_alpha": None if self.log_alpha is None else self.log_alpha.tolist(),
            "last_ns": self.last_ns,
            "n_bars": self.n_bars,
            "n_observed": self.n_observed,
            "log_likelihood": self.log_likelihood,
            "regime": None if self.regime is None else self.regime.value,
            "bars_in_regime": self.bars_in_regime,
            "pending": None if self.pending is None else self.pending.value,
            "pending_count": self.pending_count,
            "changes": self.changes,
        }
        if self.lineage:
            raw["lineage"] = list(self.lineage)
        return json.dumps(raw, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RegimeFilterState:
        """Decode :meth:`to_bytes`; anything malformed raises :class:`StateError`."""
        try:
            raw = json.loads(data)
            if raw.get("format") != STATE_FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {STATE_FORMAT}")
            log_alpha = raw["log_alpha"]
            if log_alpha is not None:
                log_alpha = np.array(log_alpha, dtype=np.float64)
                # -inf is a state the bars so far have ruled out (its density underflowed): valid
                if (log_alpha.ndim != 1 or np.isnan(log_alpha).any() or np.isposinf(log_alpha).any()
                        or not np.isfinite(log_alpha).any()):
                    raise ValueError("log_alpha must be a vector of log-probabilities, one of them finite")
            lineage = raw.get("lineage", [])  # absent in states written before it was recorded
            if not isinstance(lineage, list) or not is_version_list(lineage):
                raise ValueError(f"lineage {lineage!r} must be a list of model versions")
            state = cls(
                symbol=str(raw["symbol"]),
                model_version=str(raw["model_version"]),
                log_alpha=log_alpha,
                last_ns=_bar_time_ns(raw),
                n_bars=_count(raw, "n_bars"),
                n_observed=_count(raw, "n_observed"),
                log_likelihood=float(raw["log_likelihood"]),
                regime=None if raw["regime"] is None else Regime(raw["regime"]),
                bars_in_regime=_count(raw, "bars_in_regime"),
                pending=None if raw["pending"] is None else Regime(raw["pending"]),
                pending_count=_count(raw, "pending_count"),
                changes=_count(raw, "changes"),
                lineage=tuple(lineage),
            )
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError,
                OverflowError) as exc:  # OverflowError: a count of 1e999 (inf) cannot be an int
            raise StateError(f"cannot decode regime filter state: {exc!r}") from None
        return state


def _bar_time_ns(raw: dict[str, Any]) -> int | None:
    """``last_ns`` of the stored state: None (no bar applied) or the time of a bar as
    :func:`timestamp_ns` gives it, an integer number of nanoseconds since the epoch within signed
    64 bits (1677-09-21 … 2262-04-11) and a whole microsecond (a bar's time has no finer digits).
    ValueError otherwise, as a StateError: ``int()`` took 2.7, true, "5" and 1e300, and a time past
    every bar made each later bar a silent redelivery. A time before 1970 is negative: valid."""
    value = raw["last_ns"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"last_ns {value!r} must be an integer number of nanoseconds since the epoch")
    if not MIN_TIMESTAMP_NS <= value <= MAX_TIMESTAMP_NS or value % 1_000:
        raise ValueError(
            f"last_ns {value!r} is no bar time: a bar's time is a whole microsecond within signed 64-bit "
            f"nanoseconds since the epoch ({MIN_TIMESTAMP_NS} … {MAX_TIMESTAMP_NS})"
        )
    return value


def _count(raw: dict[str, Any], key: str) -> int:
    """A count of the stored state: a whole number >= 0 (ValueError otherwise, as a StateError)."""
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
        raise ValueError(f"{key} {value!r} must be a whole number >= 0")
    return int(value)


@dataclass(frozen=True)
class HistoryRow:
    """One stored regime-history row as :meth:`RegimeStep.rebuild` replays it: the bar's time
    (ns since the epoch), whether its features were ready, their values, and what the stage
    published for it (the reported regime, the bars it had been held, the model version)."""

    ns: int
    ready: bool
    values: Mapping[str, float]
    regime: Regime
    bars_in_regime: int
    model_version: str


def stored_last_ns(data: bytes, symbol: str) -> int | None:
    """The last applied bar time a refused stored state still names, when its bytes are a JSON
    object of ``symbol`` with a valid ``last_ns`` (a state refused for another field); None when
    they name none (garbage, another symbol, no bar applied)."""
    try:
        raw = json.loads(data)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(raw, dict) or raw.get("symbol") != symbol:
        return None
    return bar_time_or_none(raw.get("last_ns"))


def bar_time_or_none(value: Any) -> int | None:
    """``value`` when it is a bar time as a filter state stores ``last_ns`` (an integer number of
    ns since the epoch, a whole microsecond within signed 64 bits), else None."""
    try:
        return _bar_time_ns({"last_ns": value})
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """Batch output of :meth:`RegimeDetector.label_matrix`, one row per input bar."""

    state_probabilities: np.ndarray  # (n, K); the start distribution on warm-up rows
    probabilities: np.ndarray  # (n, 4) regime probabilities, REGIMES order
    regime: np.ndarray  # (n,) index into REGIMES of the reported regime
    confidence: np.ndarray  # (n,) probability of the reported regime
    observed: np.ndarray  # (n,) bool: the row entered the filter (not warm-up)


class RegimeDetector:
    """A :class:`RegimeModel` plus a :class:`TransitionRule`: the per-symbol online detector."""

    def __init__(self, model: RegimeModel, rule: TransitionRule | None = None):
        self.model = model
        self.rule = rule or TransitionRule()
        self._log_start = np.log(model.start_prob)
        self._transmat = model.transmat
        self._regime_matrix = model.regime_matrix
        self._prior_regime_probs = model.start_prob @ model.regime_matrix
        self._prior_regime = REGIMES[int(self._prior_regime_probs.argmax())]
        self._state_lineage = model.refit_lineage[:STATE_LINEAGE]
        self._log_features = np.array([f.transform == "log" for f in model.features])  # never below 0

    def initial_state(self, symbol: str) -> RegimeFilterState:
        return RegimeFilterState(symbol=symbol, model_version=self.model.version, lineage=self._state_lineage)

    # -- the hot path -------------------------------------------------------------------------

    def observe(self, state: RegimeFilterState, raw: np.ndarray) -> np.ndarray:
        """Advance ``state`` in place with one observation (raw features in model order).

        Returns the regime probabilities (REGIMES order). Does not touch the reported regime.
        """
        z = self.model.transform(raw)
        log_b = self.model.log_emission(z)
        state.log_alpha, probs, log_c = forward_step(state.log_alpha, log_b, self._log_start, self._transmat)
        state.n_observed += 1
        state.log_likelihood += log_c
        return probs @ self._regime_matrix

    def decide(self, state: RegimeFilterState, regime_probs: np.ndarray) -> tuple[Regime, Regime, int] | None:
        """Apply the transition rule to ``state`` in place (see :meth:`TransitionRule.apply`)."""
        return self.rule.apply(state, regime_probs)

    def update(
        self, state: RegimeFilterState, raw: np.ndarray
    ) -> tuple[np.ndarray, tuple[Regime, Regime, int] | None]:
        """One observed bar, in place: filter update, then the transition rule."""
        probs = self.observe(state, raw)
        return probs, self.decide(state, probs)

    # -- input checks, shared by step and label_matrix ------------------------------------------

    def _refused(self, raw: np.ndarray) -> np.ndarray:
        """Whether raw feature values (model order; one row (D,) or rows (n, D)) are refused: a
        value that is not finite, or a negative value of a feature the model takes the log of
        (read as the quietest bar, the log's floor, it would flip the regime unseen). A bool,
        or one per row."""
        return ~np.isfinite(raw).all(axis=-1) | (raw[..., self._log_features] < 0).any(axis=-1)

    def _value_problems(self, raw: np.ndarray) -> list[FieldProblem]:
        """Why one refused row of raw feature values (model order) is refused, a problem per
        value: not finite (the ``FeatureVector`` message refuses it so), or below 0 where the
        model takes the logarithm."""
        problems = []
        for f, v in zip(self.model.features, raw.tolist(), strict=True):
            if not math.isfinite(v):
                problems.append(FieldProblem(f"values.{f.name}", v, "must be finite"))
            elif f.transform == "log" and v < 0:
                problems.append(FieldProblem(
                    f"values.{f.name}", v,
                    f"is below 0: a volatility or range, of which model {self.model.version} "
                    "takes the logarithm, is never negative"))
        return problems

    def _unexplained(self, raw: np.ndarray, exc: StateError) -> FieldProblem:
        """The problem of a row of finite values no hidden state gives any likelihood."""
        return FieldProblem(
            "values", dict(zip(self.model.feature_names, raw.tolist(), strict=True)),
            f"{exc}: no regime of model {self.model.version} gives these features any likelihood")

    @staticmethod
    def _restart_detection(state: RegimeFilterState) -> None:
        """In place, for a bar in feature warm-up: forget the filter distribution, the reported
        regime and a pending confirmation, so the first ready bar after the warm-up starts the
        detection as a new symbol's first bar does (a no-op before the first ready bar)."""
        state.log_alpha = None
        state.regime, state.bars_in_regime = None, 0
        state.pending, state.pending_count = None, 0

    def carries_over(self, state: RegimeFilterState) -> bool:
        """Whether ``state``'s filter (written under ``state.model_version``, whose lineage is
        ``state.lineage``) goes on under this model: the two are the same version, one was refit
        from the other (either way round) or both from a common version, and the numbers of
        hidden states match."""
        return self.model.states_aligned_with(state.model_version, state.lineage) and (
            state.log_alpha is None or len(state.log_alpha) == self.model.n_states
        )

    # -- messages -----------------------------------------------------------------------------

    def step(
        self, state: RegimeFilterState | None, features: FeatureVector
    ) -> tuple[RegimeFilterState, MarketState | None, list[RegimeChanged]]:
        """Pure step: returns a new state, the MarketState (None on redelivery) and events.

        A state written under a version this model was refit from, or under a refit of this
        model (a warm container still serving the replaced model reads a state the refit
        wrote), carries its filter distribution and pending confirmation over: warm-started
        refits keep the hidden states one to one (:meth:`RegimeModel.states_aligned_with`), so
        a refit that keeps its states' names changes no reported regime by itself, even while
        old and new containers alternate on a symbol's records. A refit that renames a state
        carries the filter over too, and the reported regime follows the new names at once: its
        first bar may report another regime (with a RegimeChanged) with no market move. A state written under an unrelated version (or one
        with another number of states) keeps its reported regime but restarts the filter from
        the new model's start distribution: its hidden states are not this model's. The new
        state records this model's version and lineage (a newer model's lineage names this
        one, so it carries the state back).
        """
        symbol = features.symbol
        if state is None:
            state = self.initial_state(symbol)
        elif state.symbol != symbol:
            raise StateError(f"regime state of {state.symbol} applied to a bar of {symbol}")
        ns = timestamp_ns(features.timestamp)
        if state.last_ns is not None and ns <= state.last_ns:
            return state, None, []
        new, probs, change = self.advance(state, ns, features.ready, features.values)
        events: list[RegimeChanged] = []
        if change is not None:
            from_regime, to_regime, held = change
            events.append(
                RegimeChanged.create(
                    symbol,
                    from_regime,
                    to_regime,
                    _unit(probs[_REGIME_INDEX[to_regime]]),
                    features.timestamp,
                    held,
                    self.model.version,
                )
            )
        if features.ready:
            regime, bars_in_regime = new.regime, new.bars_in_regime
        else:
            regime, bars_in_regime = self._prior_regime, 0
        estimate = RegimeEstimate(
            symbol=symbol,
            timestamp=features.timestamp,
            probabilities=_as_probabilities(probs),
            regime=regime,
            confidence=_unit(probs[_REGIME_INDEX[regime]]),
            bars_in_regime=bars_in_regime,
            model_version=self.model.version,
        )
        return new, MarketState(features=features, regime=estimate), events

    def advance(
        self, state: RegimeFilterState, ns: int, ready: bool, values: Mapping[str, float]
    ) -> tuple[RegimeFilterState, np.ndarray, tuple[Regime, Regime, int] | None]:
        """One bar after ``state`` (a copy is returned, ``state`` is left as it is): the core of
        :meth:`step`, shared with :meth:`RegimeStep.rebuild`, which replays stored rows through it.

        ``ns`` is the bar's time (after ``state.last_ns``: the caller skips redeliveries),
        ``ready`` whether its features are past their warm-up and ``values`` the features.
        Returns the new state, the regime probabilities (the start distribution's on a warm-up
        bar) and the change of the reported regime (``(from, to, bars held)``) or None."""
        if (state.model_version == self.model.version and state.log_alpha is not None
                and len(state.log_alpha) != self.model.n_states):
            raise StateError(
                f"regime state of {state.symbol} under model {state.model_version} holds {len(state.log_alpha)} "
                f"hidden-state probabilities; that model has {self.model.n_states}"
            )
        new = state.copy()
        if new.model_version != self.model.version:
            if not self.carries_over(new):
                # the old model's pending confirmation is not evidence under the new one either
                new.log_alpha = None
                new.pending, new.pending_count = None, 0
            new.model_version = self.model.version
        new.lineage = self._state_lineage  # also fills in a state written before lineages were kept
        new.last_ns = ns
        new.n_bars += 1
        if not ready:
            # feature warm-up: no detection. After ready bars (the features state restarted) the
            # detection restarts too: the filter, the reported regime and a pending confirmation
            self._restart_detection(new)
            return new, self._prior_regime_probs, None
        try:
            raw = self.model.raw_vector(values)
        except ModelArtifactError as exc:
            raise InvalidMessageError(
                "FeatureVector",
                [FieldProblem("values", sorted(values), f"{exc} (model {self.model.version})")],
            ) from None
        if self._refused(raw):
            raise InvalidMessageError("FeatureVector", self._value_problems(raw))
        try:
            probs, change = self.update(new, raw)
        except StateError as exc:  # the bar, not the state: no hidden state can explain it
            raise InvalidMessageError("FeatureVector", [self._unexplained(raw, exc)]) from None
        return new, probs, change

    # -- batch (CLI, evaluation): the same per-bar code in a loop --------------------------------

    def label_matrix(
        self,
        values: np.ndarray,
        feature_names: Sequence[str],
        observed: np.ndarray | None = None,
        symbol: str = "SYN",
    ) -> Labels:
        """Label every row of a feature matrix causally, exactly as :meth:`step` would.

        ``values`` is (n, F) with columns named by ``feature_names``; rows where ``observed`` is
        False (feature warm-up) do not enter the filter, carry the start distribution and its
        most likely regime, and restart the detection (as :meth:`step` does).

        Observed rows are refused as :meth:`step` refuses a ready bar's values, with the
        :class:`InvalidMessageError` step raises (the same problems; the message names the row:
        ``invalid FeatureVector at row 7: values.range_vol_1=-0.5: is below 0: ...``): a value
        that is not finite or a negative value of a feature the model takes the logarithm of
        (every row is checked before the first is labelled), and values no hidden state gives
        any likelihood (found when the row is reached). Rows not observed are not checked (step
        does not read a warm-up bar's values either).
        ``values`` that are not 2-D with a column per name, or an ``observed`` that is not one
        flag per row, raise a :class:`DataError` naming the shapes; ``feature_names`` lacking a
        feature the model reads raise the :class:`InvalidMessageError` step raises for a
        FeatureVector lacking it (``invalid feature matrix: feature_names=[...]: lacks ['vol'],
        which regime model ... reads``), and so do ``feature_names`` naming a column twice.
        """
        values = np.asarray(values, dtype=np.float64)
        names = list(feature_names)
        if values.ndim != 2 or values.shape[1] != len(names):
            raise DataError(
                f"values of shape {values.shape}: expected (n, {len(names)}), a row per bar and a column "
                f"per feature name ({len(names)} names)"
            )
        n = values.shape[0]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:  # which of two columns is the feature? (a FeatureVector's values cannot repeat one)
            raise InvalidMessageError("feature matrix", [FieldProblem(
                "feature_names", names, f"names {repeated} more than once: each column needs a name of its own")])
        try:
            cols = [names.index(name) for name in self.model.feature_names]
        except ValueError:  # bad input, as a FeatureVector lacking the feature is to step
            missing = sorted(set(self.model.feature_names) - set(names))
            raise InvalidMessageError("feature matrix", [FieldProblem(
                "feature_names", names, f"lacks {missing}, which regime model {self.model.version} reads")]) from None
        raw = values[:, cols]
        if observed is None:
            mask = np.ones(n, dtype=bool)
        else:
            mask = np.asarray(observed, dtype=bool)
            if mask.shape != (n,):
                raise DataError(f"observed of shape {mask.shape}: expected ({n},), one flag per row of values")
        bad = mask & self._refused(raw)
        if bad.any():
            t = int(np.flatnonzero(bad)[0])
            raise InvalidMessageError(f"FeatureVector at row {t}", self._value_problems(raw[t]))
        state = self.initial_state(symbol)
        state_probs = np.tile(self.model.start_prob, (n, 1))
        probs = np.tile(self._prior_regime_probs, (n, 1))
        regime = np.empty(n, dtype=int)
        prior_regime = _REGIME_INDEX[self._prior_regime]
        for t in range(n):
            if mask[t]:
                try:
                    probs[t] = self.observe(state, raw[t])
                except StateError as exc:  # the row, as in step: no hidden state can explain it
                    raise InvalidMessageError(f"FeatureVector at row {t}", [self._unexplained(raw[t], exc)]) from None
                state_probs[t] = np.exp(state.log_alpha)  # type: ignore[arg-type]
                self.decide(state, probs[t])
                regime[t] = _REGIME_INDEX[state.regime]  # type: ignore[index]
            else:  # warm-up, also after observed rows: the detection restarts, as in step()
                self._restart_detection(state)
                regime[t] = prior_regime
        confidence = probs[np.arange(n), regime]
        return Labels(state_probs, probs, regime, confidence, mask)


def label_series(detector: RegimeDetector, series: BarSeries) -> Labels:
    """Label bars causally through the online path: FeatureEngine, then the detector, per bar.

    This is what the features and regime Lambdas compute for the same bars, bar by bar, so a
    prefix of the bars always gets the same labels.
    """
    matrix = replay_features(series)
    return detector.label_matrix(matrix.values, FEATURE_NAMES, matrix.ready, symbol=series.symbol)


def _unit(p: float) -> float:
    """A probability as a float in [0, 1]: a regime's probability sums its hidden states', which
    can round past 1 (1.0000000000000002) when two states share the regime."""
    return float(min(max(p, 0.0), 1.0))


def _as_probabilities(p: np.ndarray) -> tuple[float, float, float, float]:
    """Regime probabilities as a tuple that sums to 1 within rounding and lies in [0, 1]."""
    clipped = np.clip(p, 0.0, 1.0)
    clipped = clipped / clipped.sum()
    return (float(clipped[0]), float(clipped[1]), float(clipped[2]), float(clipped[3]))


# --------------------------------------------------------------------------------------------
# The stage step (for the stateful stage runner)
# --------------------------------------------------------------------------------------------


class RegimeStep:
    """The regime stage as a pure step for the stage runner (its ``SymbolStep`` protocol).

    ``apply(state, FeatureVector) -> (state, [MarketState], [RegimeChanged, ...])``; the state
    is a :class:`RegimeFilterState` per symbol (``dump``/``load`` for the cache). A bar at or
    before the symbol's last applied bar returns the state unchanged and no output (redelivery
    is a no-op). ``apply`` copies the state before changing it, so an error leaves it intact.

    ``models_for`` (optional) gives a symbol its own model (e.g. the runtime's per-symbol
    registry); ``model`` serves every other symbol. ``admit`` (optional) is called with each
    FeatureVector that would be applied, before anything changes: it raises (``DataError`` or
    ``InvalidMessageError``) for a record whose outputs could not be kept downstream (the Lambda
    passes the regime-history row's DynamoDB limits), so the stage runner dead-letters it with the
    reason before its state moves or a RegimeChanged of it goes out. A symbol whose model changes to an unrelated
    one restarts its filter; a refit of its model carries it over, and so does the replaced
    model reading a state its refit wrote (see :meth:`RegimeDetector.step`). ``recheck``
    (optional, with ``models_for``) is called as ``recheck(symbol, writer_version)`` before a bar
    is applied to a state another model version wrote; it returns True when ``models_for`` now
    gives the symbol another model (the runtime reads the registry's pointers again, so a warm
    container serving a replaced model switches to the published one instead of taking turns
    with the new containers). ``start_over`` (optional) is the stage runner's hook for a stored
    state :meth:`load` refuses: ``start_over(symbol, data, error)`` returns the state to go on from
    and a note for the log, or None to leave the refusal (the runtime's reads the symbol's
    regime-history rows and replays them with :meth:`rebuild`).
    """

    name = "regime"
    input_model = FeatureVector

    def __init__(
        self,
        model: RegimeModel,
        rule: TransitionRule | None = None,
        models_for: Callable[[str], RegimeModel] | None = None,
        admit: Callable[[FeatureVector], None] | None = None,
        recheck: Callable[[str, str], bool] | None = None,
        start_over: Callable[[str, bytes, Exception], tuple[RegimeFilterState, str] | None] | None = None,
    ):
        if recheck is not None and models_for is None:
            raise ValueError("recheck needs models_for: it changes the model models_for gives a symbol")
        self.detector = RegimeDetector(model, rule)
        self.rule = rule
        self.models_for = models_for
        self.admit = admit
        self.recheck = recheck
        self.start_over = start_over
        self._detectors: dict[str, RegimeDetector] = {model.version: self.detector}

    @property
    def model_version(self) -> str:
        """The version of the model serving symbols without their own."""
        return self.detector.model.version

    def detector_for(self, symbol: str) -> RegimeDetector:
        """The detector of ``symbol``'s model (one per model version)."""
        if self.models_for is None:
            return self.detector
        model = self.models_for(symbol)
        detector = self._detectors.get(model.version)
        if detector is None:
            detector = self._detectors[model.version] = RegimeDetector(model, self.rule)
        return detector

    def key(self, symbol: str) -> str:
        """Cache key of a symbol's state."""
        return f"{self.name}:{symbol}"

    @staticmethod
    def symbol_of(message: FeatureVector) -> str:
        return message.symbol

    @staticmethod
    def message_sequence(message: FeatureVector) -> int:
        return timestamp_ns(message.timestamp)

    def new_state(self, symbol: str) -> RegimeFilterState:
        return self.detector_for(symbol).initial_state(symbol)

    @staticmethod
    def load(data: bytes) -> RegimeFilterState:
        return RegimeFilterState.from_bytes(data)

    @staticmethod
    def dump(state: RegimeFilterState) -> bytes:
        return state.to_bytes()

    @staticmethod
    def sequence(state: RegimeFilterState) -> int | None:
        return state.last_ns

    def apply(
        self, state: RegimeFilterState | None, message: FeatureVector
    ) -> tuple[RegimeFilterState, list[MarketState], list[RegimeChanged]]:
        if state is not None and state.symbol == message.symbol and state.last_ns is not None and (
                timestamp_ns(message.timestamp) <= state.last_ns):
            return state, [], []  # a redelivery: a no-op (what RegimeDetector.step would return)
        if self.admit is not None:
            self.admit(message)
        detector = self.detector_for(message.symbol)
        if (self.recheck is not None and state is not None and state.model_version != detector.model.version
                and self.recheck(message.symbol, state.model_version)):
            detector = self.detector_for(message.symbol)
        new, market_state, events = detector.step(state, message)
        return new, ([] if market_state is None else [market_state]), events

    def rebuild(
        self, symbol: str, rows: Sequence[HistoryRow], until_ns: int | None = None
    ) -> tuple[RegimeFilterState, str]:
        """The state of ``symbol`` rebuilt from its stored regime-history rows, and a note saying
        how (for a stored state that can no longer be read).

        The rows (any order; one per bar time, the last of a repeated time kept) are replayed in
        time order through :meth:`RegimeDetector.advance`, the code every bar went through, each
        under the model version that wrote it when this step serves that version (the filter
        then carries over or restarts at the same bars as it did), else under the symbol's
        model. Only rows up to ``until_ns`` are replayed when it is given (the last applied time
        the refused state still names: later rows come from an attempt that never committed,
        and its retry applies their records again), and the rebuilt state's last applied time is
        ``until_ns``, else the newest row's: every record applied before is a redelivery.

        The filter forgets where it started within a few hundred bars, so from a few hundred rows
        on the replayed distribution is the one the lost state held; the reported regime is
        path-dependent (the transition rule's margin), so the rebuilt state reports what the last
        row published, held for the bars that row says (a pending confirmation is kept only when
        the replay reports that regime too): the next change goes out from the regime consumers
        saw. The counters (``n_bars``, ``n_observed``, ``log_likelihood``, ``changes``) count
        the replayed rows only. No rows (up to ``until_ns``) is a :class:`StateError`; a row whose
        values the model refuses raises as :meth:`RegimeDetector.step` does."""
        by_time = {row.ns: row for row in rows if until_ns is None or row.ns <= until_ns}
        if not by_time:
            upto = "" if until_ns is None else f" up to {_iso_ns(until_ns)}"
            raise StateError(f"no regime-history rows of {symbol}{upto} to rebuild its state from")
        kept = [by_time[ns] for ns in sorted(by_time)]
        serving = self.detector_for(symbol)
        state = serving.initial_state(symbol)
        unserved: dict[str, int] = {}
        for row in kept:
            detector = self._detectors.get(row.model_version)
            if detector is None:
                unserved[row.model_version] = unserved.get(row.model_version, 0) + 1
                detector = serving
            state, _, _ = detector.advance(state, row.ns, row.ready, row.values)
        last = kept[-1]
        replayed = state.regime
        if last.ready:
            if replayed is not last.regime:
                state.pending, state.pending_count = None, 0
            state.regime, state.bars_in_regime = last.regime, last.bars_in_regime
        if until_ns is not None:
            state.last_ns = until_ns
        note = (f"rebuilt from {len(kept)} regime-history rows ({_iso_ns(kept[0].ns)} … {_iso_ns(last.ns)}), "
                f"last applied bar {_iso_ns(state.last_ns)}")  # type: ignore[arg-type]
        if unserved:
            versions = ", ".join(f"{v} ({n} rows)" for v, n in sorted(unserved.items()))
            note += f"; rows of models this container does not serve, {versions}, replayed under {serving.model.version}"
        if last.ready:
            note += f"; reporting {last.regime.value} held {last.bars_in_regime} bars, as the last row published"
            if replayed is not last.regime:
                note += f" (the replay alone reported {None if replayed is None else replayed.value})"
        else:
            note += "; the last row is in feature warm-up: no regime reported yet"
        return state, note


def _iso_ns(ns: int) -> str:
    """A bar time in ns since the epoch as ISO-8601 UTC (microseconds, as bar times have)."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1_000)).isoformat()
