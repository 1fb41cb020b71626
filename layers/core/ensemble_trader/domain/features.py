"""Incremental market features: one symbol's rolling state, updated in O(1) per bar.

Two implementations compute the same numbers:

* :class:`FeatureEngine` — the online path (features Lambda, backtester). It keeps the rolling
  state of one symbol in plain Python floats and ring buffers and updates it bar by bar in
  constant time. The state serialises to compact bytes or to a JSON-safe dict.
* :func:`compute_features` — the batch path for training: vectorised numpy over a whole
  :class:`~ensemble_trader.domain.bars.BarSeries`.

Both agree to 1e-9 (``|online - batch| <= 1e-9 * max(1, |batch|)``, i.e. absolute for values
up to 1, relative above) at every row of long series; the unit tests check it with hypothesis
and on 20 years of S&P 500 bars.

Formulas
--------
Bars are numbered ``i = 0, 1, ...``; ``O, H, L, C, V`` are the bar's open, high, low, close and
volume, ``r_i = ln(C_i / C_{i-1})`` the one-bar log return (bar 0 has none). Every window
includes the current bar. While a window is not yet full it uses the bars seen so far, so every
value is finite from the first bar on:

``ret_k`` (k = 1, 5, 20, 60)
    ``ln(C_i / C_{max(i-k, 0)})``: the log return over k bars, or over all bars seen so far.
``ewma_vol``
    RiskMetrics EWMA volatility with ``lambda = 0.94``, in its weight-normalised form
    ``sqrt(sum_j lambda^(i-j) r_j^2 / sum_j lambda^(i-j))`` over the returns seen so far
    (the first value is ``|r_1|``; it tends to the usual recursion
    ``s2_i = lambda s2_{i-1} + (1 - lambda) r_i^2`` as the weights fill). 0 on bar 0.
``realized_vol_20``
    Sample standard deviation (ddof = 1) of the last ``min(i, 20)`` one-bar returns;
    0 while fewer than two returns exist or when they are all equal.
``range_vol_1``
    One-bar Garman-Klass volatility ``sqrt(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2)``
    (never negative: ``ln(H/L) >= |ln(C/O)|`` for a valid bar).
``range_vol_20``
    ``sqrt`` of the mean Garman-Klass variance of the last ``min(i + 1, 20)`` bars.
``trend_10_50``
    ``ln(EMA10 / EMA50)`` of the close, where ``EMA_n`` is the weight-normalised exponential
    mean with ``alpha = 2 / (n + 1)``: ``sum_j (1-alpha)^(i-j) C_j / sum_j (1-alpha)^(i-j)``.
    0 on bar 0.
``rsi_14``
    Wilder's RSI on close-to-close price changes: ``100 * AG / (AG + AL)`` with ``AG``/``AL``
    the average gain/loss — the plain mean over the first 14 changes (while fewer exist, over
    those seen), then Wilder's smoothing ``A_i = A_{i-1} + (x_i - A_{i-1}) / 14``. 50 while
    ``AG + AL = 0`` (bar 0, or no movement at all). An average that decays below 1e-200
    during a very long flat stretch (several thousand bars) is set to exactly 0, before it would
    reach the subnormal range where a ratio of two such numbers has no precision left.
``zscore_20``
    ``(C_i - mean) / std`` over the last ``min(i + 1, 20)`` closes (std with ddof = 1);
    0 when fewer than two closes or when they are all equal.
``drawdown``
    ``C_i / max_{i-125 <= j <= i} C_j - 1``: the fall from the highest close of the last
    ``DRAWDOWN_WINDOW = 126`` bars (half a year of daily bars), or of all bars seen so far
    (always ``<= 0``). A finite window, so that it does not depend on where the history began.
``volume_z_20``
    Like ``zscore_20`` on the volume.

Warm-up: a *ready* vector (``warmup_remaining == 0``) must not depend on where the engine's
history began — a live engine starts at its first bar (a new symbol, a new deployment, a lost
state), training and backtests at the start of their data. So ``WARMUP_BARS`` is the largest of

* the bars that fill every finite window: 126 for ``drawdown`` (``ret_60`` needs 61, the 20-bar
  windows 21), and
* for each exponential average, the bars until the weight that its start (the bars before the
  engine's first bar, or Wilder's seed mean) still carries falls to ``WARMUP_TOLERANCE = 1e-3``:
  ``decay^k <= 1e-3`` — 173 bars for ``EMA50`` (35 for ``EMA10``), 1 + 112 for ``ewma_vol``
  (its first return is on bar 1), 1 + 14 + 94 for ``rsi_14`` (the seed is the mean of the first
  14 changes).

``WARMUP_BARS = 173`` (derived from the constants below), ``warmup_remaining =
max(0, WARMUP_BARS - bars_seen)``. On the 5,031 S&P 500 bars, the features of ``series[k:]``
equal those of the full series at every ready row of the shorter run to within 0.03 standard
deviations of each feature (measured: 0.026, ``trend_10_50``; docs/features.md gives the gaps).

Numerical care (online path): each 20-bar window keeps ``s1 = sum(x - a)`` and
``s2 = sum((x - a)^2)`` around an anchor ``a`` and updates them with one add and one remove per
bar. It also tracks ``scale``, the sum of the squared terms added since the last exact
recomputation, which bounds the rounding error those sums carry. When the centred sum
``m2 = s2 - s1^2 / n`` falls below ``1e-4 * scale`` (cancellation would cost digits; this also
catches every window that has become exactly flat), the window recomputes ``s1`` and ``s2``
exactly from its ring buffer around a new anchor, the newest value. So the error stays below
about ``2e-12`` relative, a flat window has exactly zero spread, and the amortised cost stays
O(1): recomputation is rare (15 times in all over the 5,031 S&P 500 daily bars).

Valid input: ``1e-130 <= low <= open, close <= high < 1e150`` and a volume of 0 or in ``[1e-130, 1e150)`` (the
bounds keep squared window terms and every price ratio finite and non-zero), at a time inside
signed 64-bit nanoseconds; anything else raises :class:`DataError` before any state changes.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError, EnsembleTraderError, StateError
from ensemble_trader.domain.models import SYMBOL_PATTERN, Bar, FeatureVector

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "N_FEATURES",
    "DRAWDOWN_WINDOW",
    "WARMUP_BARS",
    "WARMUP_TOLERANCE",
    "FeatureEngine",
    "FeatureStateVersionError",
    "FeatureMatrix",
    "StaleBarError",
    "compute_features",
]

FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "ret_60",
    "ewma_vol",
    "realized_vol_20",
    "range_vol_1",
    "range_vol_20",
    "trend_10_50",
    "rsi_14",
    "zscore_20",
    "drawdown",
    "volume_z_20",
)
"""Feature order of every vector and matrix. Append only: agents are trained on this order."""

N_FEATURES = len(FEATURE_NAMES)
FEATURE_VERSION = "2"
"""Goes into ``FeatureVector.feature_version``; bump it when a formula changes.

"2": ``drawdown`` from the highest close of the last :data:`DRAWDOWN_WINDOW` bars (was: of all
bars seen) and the warm-up covers the exponential averages (was: 61 bars, the finite windows)."""

RETURN_HORIZONS: tuple[int, ...] = (1, 5, 20, 60)
WINDOW = 20
EWMA_LAMBDA = 0.94
TREND_FAST, TREND_SLOW = 10, 50
RSI_PERIOD = 14
DRAWDOWN_WINDOW = 126
"""``drawdown`` is measured from the highest close of this many bars (the current one included)."""
GK_COEF = 2.0 * math.log(2.0) - 1.0

CLOSE_HISTORY = max(max(RETURN_HORIZONS) + 1, DRAWDOWN_WINDOW)
"""Closes kept per symbol: the multi-horizon returns and the drawdown's window."""

_FAST_DECAY = 1.0 - 2.0 / (TREND_FAST + 1)
_SLOW_DECAY = 1.0 - 2.0 / (TREND_SLOW + 1)
_RSI_DECAY = 1.0 - 1.0 / RSI_PERIOD

WARMUP_TOLERANCE = 1e-3
"""Largest weight the start of an exponential average (the bars before the engine's first bar, or
Wilder's seed mean) may still carry in a ready vector."""


def bars_to_forget(decay: float, tolerance: float = WARMUP_TOLERANCE) -> int:
    """Updates after which a start weighted 1 weighs at most ``tolerance``: the least ``k`` with
    ``decay**k <= tolerance``."""
    if not (0.0 < decay < 1.0 and 0.0 < tolerance < 1.0):
        raise ValueError(f"need 0 < decay < 1 and 0 < tolerance < 1, got decay={decay!r} tolerance={tolerance!r}")
    k = math.ceil(math.log(tolerance) / math.log(decay))
    return k if decay**k <= tolerance else k + 1


WARMUP_BARS: int = max(
    max(RETURN_HORIZONS) + 1,  # ret_60: 61 closes
    WINDOW + 1,  # realized_vol_20: 20 returns
    DRAWDOWN_WINDOW,
    bars_to_forget(_FAST_DECAY),  # EMA10 of the closes, from bar 0
    bars_to_forget(_SLOW_DECAY),  # EMA50 of the closes, from bar 0 (the largest: 173)
    1 + bars_to_forget(EWMA_LAMBDA),  # squared returns, from bar 1
    1 + RSI_PERIOD + bars_to_forget(_RSI_DECAY),  # Wilder: seed mean of 14 changes, then smoothing
)
"""Bars a ready vector needs (173: the first 172 give none, the 173rd is the first ready): every
finite window full and the start of every exponential average down to :data:`WARMUP_TOLERANCE`
of its weight (see the module notes)."""
MAX_VALUE = 1e150
"""Prices and volumes must stay below this, so that squared window terms cannot overflow."""
MIN_PRICE = 1e-130
"""Prices must be at least this: with :data:`MAX_VALUE`, every price ratio (high/low, close/open,
close/previous close) and its logarithm stay finite and non-zero, and the square of a difference
of one ulp between two prices (about 1e-146 here) is still a normal float, so the windows'
variances keep their digits (at 1e-150 it was subnormal or 0: a z-score of 0 for two prices)."""
MIN_VOLUME = MIN_PRICE
"""A volume is 0 or at least this, for the same reason (the volume window's z-score)."""
_BAR_RULE = "need 1e-130 <= low <= open, close <= high < 1e150 and volume 0 or 1e-130 <= volume < 1e150"
MIN_TIMESTAMP_NS = -(2**63) + 1
MAX_TIMESTAMP_NS = 2**63 - 1
"""Bar times are kept as signed 64-bit nanoseconds (1677-09-21 … 2262-04-11); -2**63 is not one,
numpy reads it as NaT (not a time)."""
_RECOMPUTE_RATIO = 1e-4
_RSI_FLUSH = 1e-200
STATE_VERSION = 2
"""2: ``closes`` holds the last :data:`CLOSE_HISTORY` (126) closes and ``peak`` is gone (the
drawdown's window maximum is rebuilt from them). A version-1 state cannot be migrated: it holds
61 closes and the all-time peak, not the last 126 closes; loading it raises
:class:`FeatureStateVersionError` (``readable`` when intact: the features stage then starts a new
engine after its last bar, :meth:`FeatureEngine.restart`)."""


class FeatureStateVersionError(StateError):
    """A stored feature state written in another format version (``found``) than this code reads.

    A version-1 state (feature version 1) cannot be converted: its drawdown came from the
    all-time peak and it keeps 61 closes, where version 2 needs the last 126. The symbol's state
    must be rebuilt from new bars: the features stage does it by itself (it starts a new engine
    after the old state's last bar, :meth:`FeatureEngine.restart`, when :attr:`readable`);
    elsewhere, delete the state and replay at least :data:`WARMUP_BARS` bars (the engine is not
    ready before them anyway).

    ``readable`` is True when the bytes check out as a complete state of that older version
    (its layout, checksum, symbol and bar count/time), so its ``symbol`` and
    ``last_timestamp_ns`` (None: no bar applied) are known; False for a newer version, a dict
    state, or bytes that only carry an old version number (corrupt: not to be restarted from)."""

    def __init__(
        self,
        found: Any,
        where: str = "feature state",
        *,
        symbol: str | None = None,
        last_timestamp_ns: int | None = None,
        readable: bool = False,
        problem: str | None = None,
    ):
        self.found = found
        self.supported = STATE_VERSION
        self.symbol = symbol
        self.last_timestamp_ns = last_timestamp_ns
        self.readable = readable
        hint = (
            " (written by feature version 1: drawdown from the all-time peak, 61 closes kept; it cannot "
            f"be converted — delete the symbol's cached state and snapshot and replay at least {WARMUP_BARS} "
            "bars to rebuild it)"
            if found == 1
            else ""
        )
        bad = f"; and it is not a valid version-{found} state either: {problem}" if problem else ""
        super().__init__(f"{where} version {found!r} != supported {STATE_VERSION}{hint}{bad}")

    @property
    def restartable(self) -> bool:
        """An intact state of an *older* version: a new engine may replace it (it cannot be
        converted), starting after its last bar."""
        return self.readable and isinstance(self.found, int) and self.found < STATE_VERSION


class StaleBarError(EnsembleTraderError):
    """A bar at or before the last applied bar time: a redelivery, to be treated as a no-op."""

    def __init__(self, symbol: str, timestamp_ns: int, last_timestamp_ns: int):
        self.symbol = symbol
        self.timestamp_ns = timestamp_ns
        self.last_timestamp_ns = last_timestamp_ns
        super().__init__(
            f"{symbol}: bar at {timestamp_ns} ns is not after the last applied bar ({last_timestamp_ns} ns)"
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _bar_time(ts: int) -> str:
    """A bar time (int nanoseconds, in range) as an operator reads it in a dead letter:
    ``2024-01-02T00:00:00Z``, with the fraction when there is one."""
    text = str(np.datetime64(ts, "ns"))
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"


def timestamp_ns(when: datetime) -> int:
    """A timezone-aware datetime as integer nanoseconds since the epoch (exact)."""
    if when.tzinfo is None:
        raise DataError(f"timestamp {when!r} has no timezone")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


# --------------------------------------------------------------------------------------------
# Online path
# --------------------------------------------------------------------------------------------


class _Window:
    """Ring buffer of the last ``size`` values with anchored running sums (see module notes)."""

    __slots__ = ("size", "values", "pos", "count", "anchor", "s1", "s2", "scale")

    def __init__(self, size: int):
        self.size = size
        self.values = [0.0] * size
        self.pos = 0
        self.count = 0
        self.anchor = 0.0
        self.s1 = 0.0
        self.s2 = 0.0
        self.scale = 0.0

    def push(self, x: float) -> None:
        """Add ``x``, dropping the oldest value once the window is full."""
        values, pos, count = self.values, self.pos, self.count
        s1, s2 = self.s1, self.s2
        anchor = self.anchor
        if count == self.size:
            d = values[pos] - anchor
            s1 -= d
            s2 -= d * d
        else:
            if count == 0:
                anchor = self.anchor = x
            count = self.count = count + 1
        values[pos] = x
        pos += 1
        self.pos = pos if pos < self.size else 0
        d = x - anchor
        dd = d * d
        s1 += d
        s2 += dd
        scale = self.scale + dd
        if scale > 0.0 and s2 - s1 * s1 / count <= _RECOMPUTE_RATIO * scale:
            self._recompute(x)
        else:
            self.s1, self.s2, self.scale = s1, s2, scale

    def _recompute(self, anchor: float) -> None:
        """Exact sums of the buffered values around a new anchor."""
        live = self.values[: self.count]
        self.anchor = anchor
        self.s1 = math.fsum([v - anchor for v in live])
        self.s2 = self.scale = math.fsum([(v - anchor) * (v - anchor) for v in live])

    def mean(self) -> float:
        return self.anchor + self.s1 / self.count

    def m2(self) -> float:
        """Sum of squared deviations from the window mean (never negative)."""
        m2 = self.s2 - self.s1 * self.s1 / self.count
        return m2 if m2 > 0.0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": list(self.values),
            "pos": self.pos,
            "count": self.count,
            "anchor": self.anchor,
            "s1": self.s1,
            "s2": self.s2,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, size: int, d: dict[str, Any], name: str) -> _Window:
        w = cls(size)
        w.values = _float_list(d["values"], size, f"windows.{name}.values")
        w.pos = _int_in(d["pos"], 0, size - 1, f"windows.{name}.pos")
        w.count = _int_in(d["count"], 0, size, f"windows.{name}.count")
        for attr in ("anchor", "s1", "s2", "scale"):
            setattr(w, attr, _finite(d[attr], f"windows.{name}.{attr}"))
        if w.count < size and w.pos != w.count:
            raise StateError(f"windows.{name}: pos={w.pos} must equal count={w.count} until full")
        return w


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StateError(f"{where}={value!r}: expected a number")
    try:
        out = float(value)
    except OverflowError:  # an int beyond a float (its repr may be too long to print)
        raise StateError(f"{where}: an integer of {value.bit_length()} bits is beyond a float") from None
    if not math.isfinite(out):
        raise StateError(f"{where}={value!r}: expected a finite number")
    return out


_BAR_FIELDS = ("open", "high", "low", "close", "volume")
_REAL = (numbers.Real, Decimal)  # Decimal is no numbers.Real, but broker SDKs give prices as Decimal


def _bar_floats(symbol: str, ts: int, values: tuple[Any, ...]) -> tuple[float, ...]:
    """The bar's open, high, low, close and volume as plain floats: numbers of any real type
    (int, float, :class:`~decimal.Decimal`, :class:`~fractions.Fraction`, numpy integer and
    floating scalars) are converted; a bool, a string, an array, a sequence or ``None`` raises
    :class:`DataError` naming the field. Called only when a value is not a plain float, before
    anything is changed, so an update either applies the bar or leaves the state untouched."""
    out = []
    for name, x in zip(_BAR_FIELDS, values, strict=True):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, _REAL):
            raise DataError(
                f"{symbol}: invalid bar at {_bar_time(ts)}: {name}={_short_repr(x)} must be a real number (int, float, "
                f"Decimal or a numpy scalar), not {type(x).__module__}.{type(x).__qualname__}"
            )
        try:
            out.append(float(x))
        except (OverflowError, ValueError, TypeError) as exc:  # an int beyond a float, Decimal('sNaN')
            raise DataError(f"{symbol}: invalid bar at {_bar_time(ts)}: {name}={_short_repr(x)} is not a float: {exc}") from None
    return tuple(out)


def _short_repr(x: Any) -> str:
    try:
        text = repr(x)
    except ValueError:  # an int over the interpreter's digit limit
        return f"<an integer of {x.bit_length()} bits>"
    return text if len(text) <= 80 else f"{text[:77]}..."


_ONLY_FLOAT = {float}
_SYMBOL = re.compile(SYMBOL_PATTERN)


def _float_list(value: Any, size: int, where: str) -> list[float]:
    if not isinstance(value, list) or len(value) != size:
        raise StateError(f"{where}: expected a list of {size} numbers, got {value!r:.80}")
    if set(map(type, value)) == _ONLY_FLOAT and all(map(math.isfinite, value)):
        return list(value)
    return [_finite(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _int_in(value: Any, lo: int, hi: int | None, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateError(f"{where}={value!r}: expected an integer")
    if value < lo or (hi is not None and value > hi):
        raise StateError(f"{where}={value!r}: expected {lo} <= value <= {hi}")
    return value


class FeatureEngine:
    """Incremental features of one symbol: O(1) work and constant memory per bar.

    >>> engine = FeatureEngine("SPX")
    >>> vector = engine.update(bar)                       # doctest: +SKIP
    >>> row = engine.update_raw(ts_ns, o, h, l, c, v)     # doctest: +SKIP

    Bars must arrive in strictly increasing time; a bar at or before
    :attr:`last_timestamp_ns` raises :class:`StaleBarError` and leaves the state unchanged
    (callers treat it as a redelivery). Invalid prices raise :class:`DataError`, also without
    touching the state; a bar of another symbol raises :class:`StateError` (the engine, a
    symbol's state, is the wrong one), also without touching it.
    """

    def __init__(self, symbol: str):
        if not isinstance(symbol, str) or _SYMBOL.fullmatch(symbol) is None:
            raise DataError(f"symbol={symbol!r} does not match {SYMBOL_PATTERN}")
        self.symbol = symbol
        self._bars = 0
        self._last_ts: int | None = None
        self._closes = [0.0] * CLOSE_HISTORY
        self._peaks: deque[int] = deque()  # bar numbers of the drawdown window's falling maxima
        self._ewma_w = 0.0
        self._ewma_m = 0.0
        self._fast_w = 0.0
        self._fast_m = 0.0
        self._slow_w = 0.0
        self._slow_m = 0.0
        self._avg_gain = 0.0
        self._avg_loss = 0.0
        self._ret_win = _Window(WINDOW)
        self._close_win = _Window(WINDOW)
        self._volume_win = _Window(WINDOW)
        self._gk_win = _Window(WINDOW)

    # ---- properties ------------------------------------------------------------------------

    @property
    def last_timestamp_ns(self) -> int | None:
        """Time of the last applied bar (ns since the epoch), None before the first bar."""
        return self._last_ts

    @property
    def bars_seen(self) -> int:
        return self._bars

    @property
    def warmup_remaining(self) -> int:
        """Bars still needed before a vector is ready (0 = ready): every finite window full and
        the start of every exponential average forgotten (:data:`WARMUP_BARS`, 173, set by
        ``EMA50``; the windows alone fill after 126)."""
        return max(0, WARMUP_BARS - self._bars)

    # ---- updates ---------------------------------------------------------------------------

    def update(self, bar: Bar) -> FeatureVector:
        """Apply one validated bar and return its :class:`FeatureVector`."""
        if bar.symbol != self.symbol:  # the engine (a state) does not match: StateError, as in the regime step
            raise StateError(f"bar of {bar.symbol!r} given to the feature engine of {self.symbol!r}")
        row = self._step(timestamp_ns(bar.timestamp), bar.open, bar.high, bar.low, bar.close, bar.volume)
        return FeatureVector(
            bar=bar,
            values=dict(zip(FEATURE_NAMES, row, strict=True)),
            warmup_remaining=self.warmup_remaining,
            feature_version=FEATURE_VERSION,
        )

    def update_raw(
        self,
        ts_ns: int,
        o: float,
        h: float,
        l: float,  # noqa: E741  (the contract's name for the low)
        c: float,
        v: float,
    ) -> np.ndarray:
        """Fast path: apply one bar given as numbers; the features in ``FEATURE_NAMES`` order.

        ``ts_ns`` is an integer (int or numpy integer); the prices and the volume are numbers of
        any real type — float, int, :class:`~decimal.Decimal`, numpy scalars — taken as floats.
        A bool, a string, an array or a sequence (a 1-element numpy array included) raises
        :class:`DataError` naming the field, like any invalid bar, before the state changes; so
        does a bool as ``ts_ns`` (``True`` is an int to Python, and was read as 1 ns)."""
        if isinstance(ts_ns, bool):
            raise DataError(f"{self.symbol}: timestamp {ts_ns!r} must be integer nanoseconds, not a bool")
        return np.array(self._step(ts_ns, o, h, l, c, v))

    def _step(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> list[float]:  # noqa: E741
        try:
            ts = operator.index(ts)  # int or numpy integer; never a silently truncated float
        except TypeError:
            raise DataError(f"{self.symbol}: timestamp {ts!r} must be integer nanoseconds") from None
        if not MIN_TIMESTAMP_NS <= ts <= MAX_TIMESTAMP_NS:
            raise DataError(f"{self.symbol}: timestamp {ts} ns is outside signed 64-bit nanoseconds (1677-2262)")
        last = self._last_ts
        if last is not None and ts <= last:
            raise StaleBarError(self.symbol, ts, last)
        if not (type(o) is float and type(h) is float and type(l) is float and type(c) is float and type(v) is float):
            o, h, l, c, v = _bar_floats(self.symbol, ts, (o, h, l, c, v))  # noqa: E741  (off the hot path)
        try:
            valid = MIN_PRICE <= l <= o <= h < MAX_VALUE and l <= c <= h and (v == 0.0 or MIN_VOLUME <= v < MAX_VALUE)
        except TypeError:
            valid = False
        if not valid:
            raise DataError(
                f"{self.symbol}: invalid bar at {_bar_time(ts)}: open={o!r} high={h!r} low={l!r} "
                f"close={c!r} volume={v!r} ({_BAR_RULE})"
            )
        log, sqrt = math.log, math.sqrt
        i = self._bars
        closes = self._closes
        n_hist = CLOSE_HISTORY
        closes[i % n_hist] = c
        rets = [log(c / closes[(i - k) % n_hist]) if i >= k else log(c / closes[0]) for k in RETURN_HORIZONS]

        # drawdown: a monotonic deque of the bars whose close beats every later close in the window
        # (the expired front goes first: its slot in the ring is the one the new close takes)
        peaks = self._peaks
        if peaks and peaks[0] <= i - DRAWDOWN_WINDOW:
            peaks.popleft()
        while peaks and closes[peaks[-1] % n_hist] <= c:
            peaks.pop()
        peaks.append(i)
        peak = closes[peaks[0] % n_hist]

        if i == 0:
            ewma_vol = 0.0
            rsi = 50.0
            realized = 0.0
        else:
            r1 = rets[0]
            # exponentially weighted mean of r^2, normalised by the weight sum
            w = self._ewma_w = EWMA_LAMBDA * self._ewma_w + 1.0
            m = self._ewma_m = self._ewma_m + (r1 * r1 - self._ewma_m) / w
            ewma_vol = sqrt(m)
            win = self._ret_win
            win.push(r1)
            realized = sqrt(win.m2() / (win.count - 1)) if win.count > 1 else 0.0
            # Wilder RSI: plain mean of the first 14 changes, then smoothing by 1/14
            change = c - closes[(i - 1) % n_hist]
            a = 1.0 / (i if i < RSI_PERIOD else RSI_PERIOD)
            gain = change if change > 0.0 else 0.0
            loss = -change if change < 0.0 else 0.0
            ag = self._avg_gain + (gain - self._avg_gain) * a
            al = self._avg_loss + (loss - self._avg_loss) * a
            if ag < _RSI_FLUSH:  # a long flat stretch: flush before subnormals lose precision
                ag = 0.0
            if al < _RSI_FLUSH:
                al = 0.0
            self._avg_gain, self._avg_loss = ag, al
            total = ag + al
            rsi = 100.0 * (ag / total) if total > 0.0 else 50.0

        w = self._fast_w = _FAST_DECAY * self._fast_w + 1.0
        fast = self._fast_m = self._fast_m + (c - self._fast_m) / w
        w = self._slow_w = _SLOW_DECAY * self._slow_w + 1.0
        slow = self._slow_m = self._slow_m + (c - self._slow_m) / w

        hl = log(h / l)
        co = log(c / o)
        gk = 0.5 * hl * hl - GK_COEF * co * co
        gk_win = self._gk_win
        gk_win.push(gk)
        gk_mean = gk_win.mean()

        cw = self._close_win
        cw.push(c)
        m2 = cw.m2()
        zscore = ((c - cw.anchor) - cw.s1 / cw.count) / sqrt(m2 / (cw.count - 1)) if m2 > 0.0 else 0.0

        vw = self._volume_win
        vw.push(v)
        m2 = vw.m2()
        volume_z = ((v - vw.anchor) - vw.s1 / vw.count) / sqrt(m2 / (vw.count - 1)) if m2 > 0.0 else 0.0

        self._bars = i + 1
        self._last_ts = ts
        return [
            rets[0],
            rets[1],
            rets[2],
            rets[3],
            ewma_vol,
            realized,
            sqrt(gk) if gk > 0.0 else 0.0,
            sqrt(gk_mean) if gk_mean > 0.0 else 0.0,
            log(fast / slow),
            rsi,
            zscore,
            c / peak - 1.0,
            volume_z,
        ]

    # ---- persistence -----------------------------------------------------------------------

    @classmethod
    def restart(cls, symbol: str, last_timestamp_ns: int | None) -> FeatureEngine:
        """A new engine (no bars seen: it warms up again over :data:`WARMUP_BARS` bars) that
        replaces a state it cannot convert (:class:`FeatureStateVersionError`): it takes only
        bars after ``last_timestamp_ns``, the old state's last bar, so a redelivered bar stays
        a no-op (:attr:`last_timestamp_ns` is that time until its first bar)."""
        engine = cls(symbol)
        if last_timestamp_ns is not None:
            engine._last_ts = _int_in(last_timestamp_ns, MIN_TIMESTAMP_NS, MAX_TIMESTAMP_NS, "last_timestamp_ns")
        return engine

    def to_dict(self) -> dict[str, Any]:
        """The full state as a JSON-safe dict (floats round-trip exactly through JSON)."""
        return {
            "version": STATE_VERSION,
            "symbol": self.symbol,
            "bars_seen": self._bars,
            "last_timestamp_ns": self._last_ts,
            "closes": list(self._closes),
            "ewma": [self._ewma_w, self._ewma_m],
            "ema_fast": [self._fast_w, self._fast_m],
            "ema_slow": [self._slow_w, self._slow_m],
            "rsi": [self._avg_gain, self._avg_loss],
            "windows": {name: getattr(self, attr).to_dict() for name, attr in _WINDOWS},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEngine:
        """Rebuild an engine from :meth:`to_dict`; raises StateError on anything malformed."""
        try:
            if not isinstance(d, dict):
                raise StateError(f"feature state must be a dict, got {type(d).__name__}")
            if d.get("version") != STATE_VERSION:
                raise FeatureStateVersionError(d.get("version"))
            symbol = d["symbol"]
            if not isinstance(symbol, str) or _SYMBOL.fullmatch(symbol) is None:
                raise StateError(f"symbol={symbol!r}: expected a symbol matching {SYMBOL_PATTERN}")
            engine = cls(symbol)
            engine._bars = _int_in(d["bars_seen"], 0, None, "bars_seen")
            last = d["last_timestamp_ns"]
            if last is None and engine._bars > 0:  # (a time with no bar: a restarted engine)
                raise StateError(f"last_timestamp_ns={last!r} inconsistent with bars_seen={engine._bars}")
            engine._last_ts = (
                None if last is None else _int_in(last, -(2**63), 2**63 - 1, "last_timestamp_ns")
            )
            engine._closes = _float_list(d["closes"], CLOSE_HISTORY, "closes")
            for key, (wa, ma) in _PAIRS.items():
                w, m = _float_list(d[key], 2, key)
                setattr(engine, wa, w)
                setattr(engine, ma, m)
            windows = d["windows"]
            if not isinstance(windows, dict):
                raise StateError("windows: expected a dict")
            for name, attr in _WINDOWS:
                setattr(engine, attr, _Window.from_dict(WINDOW, windows[name], name))
        except KeyError as exc:
            raise StateError(f"feature state is missing the key {exc.args[0]!r}") from None
        except TypeError as exc:
            raise StateError(f"malformed feature state: {exc}") from None
        engine._check_counts()
        engine._rebuild_peaks()
        return engine

    def _rebuild_peaks(self) -> None:
        """The drawdown's monotonic deque from the closes of its window (O(DRAWDOWN_WINDOW), on load)."""
        n, closes, peaks = self._bars, self._closes, self._peaks
        peaks.clear()
        for j in range(max(0, n - DRAWDOWN_WINDOW), n):
            c = closes[j % CLOSE_HISTORY]
            while peaks and closes[peaks[-1] % CLOSE_HISTORY] <= c:
                peaks.pop()
            peaks.append(j)

    def _check_counts(self) -> None:
        """Window fill levels and the running figures must be ones the engine could have written
        after the number of bars seen (catches edited or foreign states): the closes in use are
        valid prices, the averages carry weight once started (0 and mean 0 before), the EMAs'
        means are > 0 and ewma's >= 0, so no update of a loaded state fails part-way."""
        n = self._bars
        used = self._closes[: min(n, CLOSE_HISTORY)]
        bad = next((i for i, c in enumerate(used) if not MIN_PRICE <= c < MAX_VALUE), None)
        if bad is not None:
            raise StateError(f"closes[{bad}]={used[bad]!r} is not a price (bars_seen={n})")
        for key, (wa, ma) in _PAIRS.items():
            weight, mean = getattr(self, wa), getattr(self, ma)
            if key == "rsi":
                if weight < 0.0 or mean < 0.0:
                    raise StateError(f"rsi=[{weight!r}, {mean!r}]: average gain and loss are never negative")
                continue
            # each mean is a weighted average of what it averages since its first term: squared
            # returns (>= 0) for ewma, whose first is on bar 1, closes (>= MIN_PRICE > 0) for the
            # EMAs. Before it, weight and mean are 0 (a mean there would be mixed into the first
            # term; a negative one made the update fail on sqrt or log after changing the state)
            if n <= (key == "ewma"):
                if weight != 0.0 or mean != 0.0:
                    raise StateError(f"{key}=[{weight!r}, {mean!r}]: expected [0.0, 0.0] before its first term (bars_seen={n})")
                continue
            if weight < 1.0:
                raise StateError(f"{key}=[{weight!r}, {mean!r}]: weight {weight!r} after {n} bars (at least 1)")
            if mean < 0.0 if key == "ewma" else mean <= 0.0:
                what = "a mean of squared returns is never negative" if key == "ewma" else "a mean of closes is always > 0"
                raise StateError(f"{key}=[{weight!r}, {mean!r}]: {what} (bars_seen={n})")
        expected = {"returns": min(max(n - 1, 0), WINDOW)}
        expected.update({name: min(n, WINDOW) for name, _ in _WINDOWS[1:]})
        for name, attr in _WINDOWS:
            count = getattr(self, attr).count
            if count != expected[name]:
                raise StateError(
                    f"windows.{name}.count={count} inconsistent with bars_seen={n} (expected {expected[name]})"
                )

    def to_bytes(self) -> bytes:
        """Compact binary state (about 1.9 kB): header, packed numbers, CRC32 trailer."""
        sym = self.symbol.encode()
        floats = [*self._closes]
        for wa, ma in _PAIRS.values():
            floats += [getattr(self, wa), getattr(self, ma)]
        ints = [self._bars, 0 if self._last_ts is None else 1, self._last_ts or 0]
        for _, attr in _WINDOWS:
            w: _Window = getattr(self, attr)
            floats += [*w.values, w.anchor, w.s1, w.s2, w.scale]
            ints += [w.pos, w.count]
        body = _HEADER.pack(_MAGIC, STATE_VERSION, len(sym)) + sym + _INTS.pack(*ints) + _FLOATS.pack(*floats)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureEngine:
        """Inverse of :meth:`to_bytes`; StateError on truncated, corrupted or foreign bytes."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StateError(f"feature state must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size + 4:
            raise StateError(f"feature state too short ({len(data)} bytes)")
        body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
        magic, version, sym_len = _HEADER.unpack_from(body)
        if magic != _MAGIC:
            raise StateError(f"not a feature state (magic {magic!r})")
        if version != STATE_VERSION:
            raise _old_version_error(version, body, crc, sym_len)
        expected = _HEADER.size + sym_len + _INTS.size + _FLOATS.size
        if len(body) != expected:
            raise StateError(f"feature state has {len(body)} bytes before the checksum, expected {expected}")
        if zlib.crc32(body) != crc:
            raise StateError("feature state checksum mismatch (corrupted bytes)")
        off = _HEADER.size
        try:
            symbol = body[off : off + sym_len].decode()
        except UnicodeDecodeError:
            raise StateError("feature state symbol is not UTF-8") from None
        off += sym_len
        ints = list(_INTS.unpack_from(body, off))
        floats = list(_FLOATS.unpack_from(body, off + _INTS.size))
        bars, has_ts, ts = ints[:3]
        d: dict[str, Any] = {
            "version": version,
            "symbol": symbol,
            "bars_seen": bars,
            "last_timestamp_ns": ts if has_ts else None,
            "closes": floats[:CLOSE_HISTORY],
        }
        f = CLOSE_HISTORY
        for key in _PAIRS:
            d[key] = floats[f : f + 2]
            f += 2
        d["windows"] = {}
        for k, (name, _) in enumerate(_WINDOWS):
            vals = floats[f : f + WINDOW + 4]
            f += WINDOW + 4
            d["windows"][name] = {
                "values": vals[:WINDOW],
                "anchor": vals[WINDOW],
                "s1": vals[WINDOW + 1],
                "s2": vals[WINDOW + 2],
                "scale": vals[WINDOW + 3],
                "pos": ints[3 + 2 * k],
                "count": ints[4 + 2 * k],
            }
        return cls.from_dict(d)

    def __repr__(self) -> str:
        return (
            f"FeatureEngine(symbol={self.symbol!r}, bars_seen={self._bars}, "
            f"last_timestamp_ns={self._last_ts}, warmup_remaining={self.warmup_remaining})"
        )


_WINDOWS = (
    ("returns", "_ret_win"),
    ("closes", "_close_win"),
    ("volumes", "_volume_win"),
    ("gk", "_gk_win"),
)
_PAIRS = {
    "ewma": ("_ewma_w", "_ewma_m"),
    "ema_fast": ("_fast_w", "_fast_m"),
    "ema_slow": ("_slow_w", "_slow_m"),
    "rsi": ("_avg_gain", "_avg_loss"),
}
_MAGIC = b"ETFE"
_HEADER = struct.Struct("<4sBB")
_INTS = struct.Struct("<qBq" + "HH" * len(_WINDOWS))
_FLOATS = struct.Struct(f"<{CLOSE_HISTORY + 2 * len(_PAIRS) + len(_WINDOWS) * (WINDOW + 4)}d")
_OLD_FLOATS = {1: 61 + 1 + 2 * len(_PAIRS) + len(_WINDOWS) * (WINDOW + 4)}
"""Floats in the byte layout of each older state version (1: 61 closes, the peak; the header
and the integers were laid out as now)."""


def _old_version_error(version: int, body: bytes, crc: int, sym_len: int) -> FeatureStateVersionError:
    """The error for a state of another version; ``readable`` (with the symbol and last bar
    time) when the bytes check out as a complete state of a known older version."""
    n_floats = _OLD_FLOATS.get(version)
    if n_floats is None:
        return FeatureStateVersionError(version)
    expected = _HEADER.size + sym_len + _INTS.size + 8 * n_floats
    if len(body) != expected:
        problem = f"{len(body)} bytes before the checksum, expected {expected}"
    elif zlib.crc32(body) != crc:
        problem = "checksum mismatch (corrupted bytes)"
    else:
        try:
            symbol = body[_HEADER.size : _HEADER.size + sym_len].decode()
        except UnicodeDecodeError:
            symbol = None
        bars, has_ts, ts = _INTS.unpack_from(body, _HEADER.size + sym_len)[:3]
        if symbol is None or _SYMBOL.fullmatch(symbol) is None:
            problem = f"symbol {body[_HEADER.size : _HEADER.size + sym_len]!r} is not a symbol"
        elif bars < 0 or has_ts not in (0, 1) or bool(has_ts) != (bars > 0):
            problem = f"bars_seen={bars} inconsistent with a last bar time flag {has_ts}"
        else:
            return FeatureStateVersionError(version, symbol=symbol, last_timestamp_ns=ts if has_ts else None,
                                            readable=True)
    return FeatureStateVersionError(version, problem=problem)


# --------------------------------------------------------------------------------------------
# Batch path
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureMatrix:
    """Features of every bar of one series: row ``i`` equals the engine's output after bar ``i``.

    ``values`` is (n, len(FEATURE_NAMES)) float64 in ``FEATURE_NAMES`` order,
    ``warmup_remaining`` (n,) int, ``timestamp`` (n,) datetime64[ns] (the bars' times).
    """

    values: np.ndarray
    warmup_remaining: np.ndarray
    timestamp: np.ndarray
    names: tuple[str, ...] = field(default=FEATURE_NAMES)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def ready(self) -> np.ndarray:
        """Boolean mask of the ready rows (``warmup_remaining == 0``: every window full and every
        exponential average's start forgotten, from row ``WARMUP_BARS - 1`` = 172 on)."""
        return self.warmup_remaining == 0

    def column(self, name: str) -> np.ndarray:
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise KeyError(f"unknown feature {name!r}; known: {', '.join(self.names)}") from None


def replay_features(series: BarSeries) -> FeatureMatrix:
    """Every feature of every bar of ``series`` through the online engine, bar by bar.

    Exactly what the features Lambda computes for the same bars (bit for bit), where
    :func:`compute_features` agrees only to 1e-9; use it when labels must match the live path.
    """
    engine = FeatureEngine(series.symbol)
    n = len(series)
    values = np.empty((n, N_FEATURES), dtype=np.float64)
    warm = np.empty(n, dtype=np.int64)
    ts = np.asarray(series.timestamp).astype("datetime64[ns]").astype(np.int64).tolist()
    cols = [
        np.asarray(getattr(series, k), dtype=np.float64).tolist()
        for k in ("open", "high", "low", "close", "volume")
    ]
    for i, bar in enumerate(zip(ts, *cols, strict=True)):
        values[i] = engine.update_raw(*bar)
        warm[i] = engine.warmup_remaining
    return FeatureMatrix(values, warm, np.asarray(series.timestamp).copy())


def compute_features(series: BarSeries) -> FeatureMatrix:
    """Every feature of every bar of ``series``, vectorised (the training path).

    Raises :class:`DataError` if a bar has non-finite or non-positive prices, ``low`` above
    open/close, ``high`` below them, or a negative volume.
    """
    o, h, lo, c, v = (
        np.asarray(getattr(series, k), dtype=np.float64) for k in ("open", "high", "low", "close", "volume")
    )
    n = len(c)
    _check_bars(series.symbol, o, h, lo, c, v)
    out = np.zeros((n, N_FEATURES), dtype=np.float64)
    warm = np.maximum(0, WARMUP_BARS - np.arange(1, n + 1)).astype(np.int64)
    if n == 0:
        return FeatureMatrix(out, warm, np.asarray(series.timestamp).copy())
    idx = np.arange(n)

    col = {name: k for k, name in enumerate(FEATURE_NAMES)}
    for k, name in zip(RETURN_HORIZONS, ("ret_1", "ret_5", "ret_20", "ret_60"), strict=True):
        out[:, col[name]] = np.log(c / c[np.maximum(idx - k, 0)])

    if n > 1:
        r1 = out[1:, col["ret_1"]]
        m = _normalised_ewm(r1 * r1, EWMA_LAMBDA)
        out[1:, col["ewma_vol"]] = np.sqrt(m)
        count, _, m2 = _rolling_moments(r1, WINDOW)
        out[1:, col["realized_vol_20"]] = _std(m2, count)

        change = np.diff(c)
        gain = np.where(change > 0.0, change, 0.0)
        loss = np.where(change < 0.0, -change, 0.0)
        ag, al = _wilder_mean(gain, RSI_PERIOD), _wilder_mean(loss, RSI_PERIOD)
        ag[ag < _RSI_FLUSH] = 0.0
        al[al < _RSI_FLUSH] = 0.0
        total = ag + al
        safe = np.where(total > 0.0, total, 1.0)
        out[1:, col["rsi_14"]] = np.where(total > 0.0, 100.0 * (ag / safe), 50.0)
    out[0, col["rsi_14"]] = 50.0

    hl, co = np.log(h / lo), np.log(c / o)
    gk = 0.5 * hl * hl - GK_COEF * co * co
    out[:, col["range_vol_1"]] = np.sqrt(np.maximum(gk, 0.0))
    _, gk_offset, _ = _rolling_moments(gk, WINDOW)
    out[:, col["range_vol_20"]] = np.sqrt(np.maximum(gk + gk_offset, 0.0))

    fast = _normalised_ewm(c, _FAST_DECAY)
    slow = _normalised_ewm(c, _SLOW_DECAY)
    out[:, col["trend_10_50"]] = np.log(fast / slow)

    out[:, col["zscore_20"]] = _zscore(c, WINDOW)
    out[:, col["drawdown"]] = c / _rolling_max(c, DRAWDOWN_WINDOW) - 1.0
    out[:, col["volume_z_20"]] = _zscore(v, WINDOW)
    return FeatureMatrix(out, warm, np.asarray(series.timestamp).copy())


def _check_bars(
    symbol: str, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> None:
    with np.errstate(invalid="ignore"):
        ok = (MIN_PRICE <= lo) & (lo <= o) & (o <= h) & (h < MAX_VALUE) & (lo <= c) & (c <= h)
        ok &= (v == 0.0) | ((v >= MIN_VOLUME) & (v < MAX_VALUE))
    if not ok.all():
        i = int(np.argmin(ok))
        raise DataError(
            f"{symbol}: invalid bar at row {i}: open={o[i]!r} high={h[i]!r} low={lo[i]!r} "
            f"close={c[i]!r} volume={v[i]!r} ({_BAR_RULE})"
        )


def _zscore(x: np.ndarray, window: int) -> np.ndarray:
    count, offset, m2 = _rolling_moments(x, window)
    std = _std(m2, count)
    safe = np.where(std > 0.0, std, 1.0)
    return np.where(std > 0.0, -offset / safe, 0.0)


def _std(m2: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Sample std (ddof = 1) from centred sums; 0 where fewer than two values or no spread."""
    ok = (count > 1) & (m2 > 0.0)
    return np.where(ok, np.sqrt(np.where(ok, m2, 0.0) / np.maximum(count - 1, 1)), 0.0)


_CHUNK_ROWS = 1 << 16


def _rolling_moments(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, ``mean - x_i`` and centred sum of squares over the last ``min(i + 1, window)`` values.

    Two passes per window on the values shifted by the window's newest value ``x_i`` (exact
    differences for nearby values, so a large level costs no digits). The mean is returned as
    its offset from ``x_i``; a window whose values are all equal gets exactly 0 and 0.
    """
    n = len(x)
    count = np.minimum(np.arange(1, n + 1), window)
    offset = np.empty(n)
    m2 = np.empty(n)
    for i in range(min(n, window - 1)):
        shifted = x[: i + 1] - x[i]
        offset[i] = shifted.mean()
        m2[i] = np.sum((shifted - offset[i]) ** 2)
    if n >= window:
        views = sliding_window_view(x, window)
        for start in range(0, len(views), _CHUNK_ROWS):
            win = views[start : start + _CHUNK_ROWS]
            rows = slice(start + window - 1, start + window - 1 + len(win))
            shifted = win - win[:, -1:]
            mu = shifted.mean(axis=1)
            dev = shifted - mu[:, None]
            offset[rows] = mu
            m2[rows] = np.einsum("ij,ij->i", dev, dev)
    return count, offset, m2


def _rolling_max(x: np.ndarray, window: int) -> np.ndarray:
    """Maximum of the last ``min(i + 1, window)`` values (exact), in chunks of rows."""
    n = len(x)
    out = np.empty(n)
    head = min(n, window - 1)
    out[:head] = np.maximum.accumulate(x[:head])
    if n >= window:
        views = sliding_window_view(x, window)
        for start in range(0, len(views), _CHUNK_ROWS):
            win = views[start : start + _CHUNK_ROWS]
            out[start + window - 1 : start + window - 1 + len(win)] = win.max(axis=1)
    return out


def _normalised_ewm(x: np.ndarray, decay: float) -> np.ndarray:
    """``sum_j decay^(i-j) x_j / sum_j decay^(i-j)`` for every ``i`` (the online mean form)."""
    k = np.arange(1, len(x) + 1, dtype=np.float64)
    weights = (1.0 - decay**k) / (1.0 - decay)
    return _decayed_sum(x, decay) / weights


def _wilder_mean(x: np.ndarray, period: int) -> np.ndarray:
    """Plain running mean of the first ``period`` values, then Wilder's smoothing by 1/period."""
    n = len(x)
    head = min(n, period)
    out = np.empty(n)
    out[:head] = np.cumsum(x[:head]) / np.arange(1, head + 1)
    if n > period:
        decay = 1.0 - 1.0 / period
        out[period:] = _decayed_sum(x[period:] / period, decay, initial=out[period - 1])
    return out


_BLOCK = 64
_T = np.arange(_BLOCK)


def _decayed_sum(x: np.ndarray, decay: float, initial: float = 0.0) -> np.ndarray:
    """``y_t = decay * y_{t-1} + x_t`` with ``y_{-1} = initial``, vectorised in blocks of 64.

    Inside a block the recursion is one matrix product with the lower-triangular matrix of
    powers ``decay^(t-j)`` (all <= 1, so no overflow and no loss of precision); the blocks are
    then chained by carrying each block's last value into the next.
    """
    n = len(x)
    if n == 0:
        return np.empty(0)
    blocks = -(-n // _BLOCK)
    padded = np.zeros(blocks * _BLOCK)
    padded[:n] = x
    lag = _T[:, None] - _T[None, :]
    powers = np.where(lag >= 0, decay ** np.maximum(lag, 0).astype(np.float64), 0.0)
    y = padded.reshape(blocks, _BLOCK) @ powers.T
    carry = decay ** (_T + 1.0)
    y[0] += carry * initial
    for b in range(1, blocks):
        y[b] += carry * y[b - 1, -1]
    return y.ravel()[:n]
