"""Synthetic regime-switching OHLCV bars with ground-truth regime labels.

A hidden Markov chain over the four regimes (BULL, BEAR, SIDEWAYS, VOLATILE) drives the
close-to-close log return of every bar; each regime has its own drift, volatility, optional
short-term mean reversion, optional GARCH-like volatility clustering and volume level. Each
bar's open/high/low/close come from a discretised Brownian bridge between the open and the
close, so high and low are consistent with open and close and the bar's range carries the
regime's volatility (range-based volatility estimators work as on real data).

Everything is pure numpy, seeded through one ``numpy.random.Generator``: the same
``(scenario, n_bars, seed, symbol, start, freq)`` gives bit-identical arrays.

The model of one bar ``t`` in regime ``k`` (log prices):

* shock ``z_t``: standard normal, or a unit-variance Student-t when ``tail_df`` is finite;
* conditional variance (GJR-GARCH with variance targeting)
  ``h_t = vol_k² (1 - α_k - β_k - γ_k/2) + (α_k + γ_k 1[ε_{t-1} < 0]) ε_{t-1}² + β_k h_{t-1}``
  with ``ε = √h z``, reset to ``vol_k²`` when the regime is entered;
* anchor level ``m_t = m_{t-1} + drift_k + level_vol_k η_t`` (reset to the price on entering a
  mean-reverting regime);
* return ``r_t = drift_k + κ_k (m_{t-1} - p_{t-1}) + √h_t z_t``; with ``κ_k > 0`` the price is an
  Ornstein-Uhlenbeck deviation around the slowly moving anchor, so returns are negatively
  autocorrelated and a contrarian profits;
* volume ``log V_t = log base_volume + volume_level_k + u_t + volume_response (|z_t| - √(2/π))``
  with ``u`` a persistent AR(1) noise.

See docs/data.md for the parameters of every preset. The files of a generated data set
(``bars.csv``, ``truth.csv``) are written and read by :mod:`ensemble_trader.marketdata`
(``write_bars_csv``, ``write_truth_csv``, ``read_truth_csv``): this module does no I/O.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from datetime import UTC

import numpy as np

from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.models import (
    REGIMES,
    SYMBOL_PATTERN,
    outside_time_range,
    read_time_text,
)
from ensemble_trader.domain.numbers import is_real, real_number

INTRABAR_STEPS_MAX = 100_000
"""The most steps of a bar's Brownian bridge (``ScenarioSpec.intrabar_steps``): one a second of a
whole day (86,400) fits. Measured (``easy``, one bar, fastest of 5): 0.3 ms at the presets' 24
steps, 0.5 ms and 0.4 MB at 10,000, 3 ms and 4 MB at 100,000; each step more is about 30 ns and
40 bytes, so 10**9 steps would hold 40 GB for one bar. The range has stopped widening long before:
the Parkinson estimate over the close-to-close volatility (5,000 bars) is 0.86 at 24 steps, 0.96
at 1,440 and 0.98 at 10,000 and at 100,000."""
MAX_BARS = 1_000_000
"""The most bars one call of :func:`generate` or :func:`bar_times` (and ``data synth --bars``)
makes; more is a DataError before anything is allocated. Measured on 1,000,000 bars of
``realistic``: generating holds about 140 bytes a bar at its peak (137 MB), ``bars.csv`` takes
106 bytes a row (106 MB, written in 5 s) and reading it back with ``read_bars_csv`` about 400
bytes a row. Ten times that would be a 1 GB file that needs some 4 GB to read; without a limit,
``--bars 100000000 --freq 1min`` ran into a numpy MemoryError asking for about 14 GB. More bars:
several series of at most this many, with distinct seeds (and symbols)."""
REGIME_NAMES: tuple[str, ...] = tuple(r.value for r in REGIMES)
"""``("BULL", "BEAR", "SIDEWAYS", "VOLATILE")``: the order of every per-regime tuple here."""
_SYMBOL = re.compile(SYMBOL_PATTERN)


def _number(where: str, name: str, value: object) -> float:
    """``value`` as a float when it is a real number, else a DataError naming the field: a bool
    (which Python would count as 0 or 1), text or None is no parameter value (see
    :func:`~ensemble_trader.domain.numbers.real_number`)."""
    number = real_number(value, lambda: f"{where}{name}={value!r}: must be a number")
    if math.isinf(number) and not isinstance(value, float | np.floating):
        # an int beyond a float: kept as given, it would meet float()'s OverflowError later
        raise DataError(f"{where}{name}={value!r}: beyond a float's range")
    return number


@dataclass(frozen=True)
class RegimeParams:
    """How one regime moves the market (per bar, log-return units).

    ``drift``: mean log return per bar. ``vol``: unconditional volatility of the shock per bar.
    ``dwell``: expected number of bars per visit (the chain leaves with probability 1/dwell).
    ``mean_reversion``: κ, the fraction of the deviation from the anchor level removed per bar
    (0 = random walk). ``level_vol``: volatility per bar of the anchor level itself.
    ``garch_alpha`` / ``garch_beta``: volatility clustering (0, 0 = constant volatility).
    ``garch_gamma``: leverage effect (GJR): extra variance after a down move.
    ``volume_level``: log-volume offset from the scenario's base volume.

    Every field is a real number (not a bool) in its range, else a DataError names it and its
    value: ``|drift| < 0.1``; ``0 < vol < 0.5``; ``dwell`` finite and >= 1 (a regime is left
    some time); ``0 <= mean_reversion < 1``; ``0 <= level_vol < 0.5`` (per bar, as ``vol``);
    ``garch_alpha``, ``garch_beta``, ``garch_gamma`` >= 0 with ``alpha + beta + gamma/2 < 1``;
    ``volume_level`` finite.
    """

    drift: float
    vol: float
    dwell: float
    mean_reversion: float = 0.0
    level_vol: float = 0.0
    garch_alpha: float = 0.0
    garch_beta: float = 0.0
    garch_gamma: float = 0.0
    volume_level: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drift", "vol", "dwell", "mean_reversion", "level_vol", "garch_alpha", "garch_beta",
                     "garch_gamma", "volume_level"):
            _number("", name, getattr(self, name))
        if not (math.isfinite(self.drift) and abs(self.drift) < 0.1):
            raise DataError(f"drift={self.drift!r}: must be finite and below 0.1 per bar in size")
        if not (0.0 < self.vol < 0.5):
            raise DataError(f"vol={self.vol!r}: must be in (0, 0.5) per bar")
        if not (math.isfinite(self.dwell) and self.dwell >= 1.0):
            raise DataError(
                f"dwell={self.dwell!r}: must be a finite number of bars >= 1 (a regime is left some time)"
            )
        if not 0.0 <= self.mean_reversion < 1.0:
            raise DataError(f"mean_reversion={self.mean_reversion!r}: must be in [0, 1)")
        if not 0.0 <= self.level_vol < 0.5:
            raise DataError(f"level_vol={self.level_vol!r}: must be in [0, 0.5) per bar")
        garch = (self.garch_alpha, self.garch_beta, self.garch_gamma)
        # written so that NaN fails too (every comparison with NaN is False)
        if not (min(garch) >= 0.0 and self.garch_alpha + self.garch_beta + self.garch_gamma / 2 < 1.0):
            raise DataError(
                f"garch_alpha={self.garch_alpha!r}, garch_beta={self.garch_beta!r}, "
                f"garch_gamma={self.garch_gamma!r}: must be >= 0 with alpha + beta + gamma/2 < 1"
            )
        if not math.isfinite(self.volume_level):
            raise DataError(f"volume_level={self.volume_level!r}: must be finite (a log-volume offset)")


@dataclass(frozen=True)
class ScenarioSpec:
    """A difficulty preset: the four regimes' parameters and how the chain moves between them.

    ``regimes`` lists BULL, BEAR, SIDEWAYS, VOLATILE. ``exit_weights[i][j]`` is the relative
    weight of moving to regime j when leaving regime i (the diagonal is ignored).
    ``tail_df``: degrees of freedom of the Student-t shocks (inf = Gaussian). ``gap_scale``: sd
    of the overnight gap in units of the bar's volatility. ``intrabar_steps``: steps of the
    Brownian bridge that gives high and low. ``start_price``: the price before the first bar.
    ``base_volume``, ``volume_sigma``, ``volume_persistence``, ``volume_response``: median
    volume, sd and AR(1) coefficient of the log-volume noise, and the log-volume added per unit
    of ``|z| - E|z|`` (volume is larger on big moves).

    Every field is checked, else a DataError names it and its value: ``name`` a non-empty
    string, ``description`` a string, four :class:`RegimeParams`, a 4x4 of finite weights >= 0
    (numbers, not bools) that gives every regime somewhere to go and lets the chain reach one
    group of regimes it then never leaves (one long-run distribution); ``tail_df > 2`` (or
    inf); ``0 <= gap_scale < 1``; ``intrabar_steps`` an integer in [2, :data:`INTRABAR_STEPS_MAX`];
    ``start_price`` and ``base_volume`` finite and > 0; ``volume_sigma`` and ``volume_response``
    finite and >= 0; ``0 <= volume_persistence < 1``.
    """

    name: str
    description: str
    regimes: tuple[RegimeParams, RegimeParams, RegimeParams, RegimeParams]
    exit_weights: tuple[tuple[float, float, float, float], ...]
    tail_df: float = math.inf
    gap_scale: float = 0.0
    intrabar_steps: int = 24
    start_price: float = 100.0
    base_volume: float = 1.0e6
    volume_sigma: float = 0.25
    volume_persistence: float = 0.8
    volume_response: float = 0.2
    _matrix: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"scenario name={self.name!r}: must be a non-empty string")
        where = f"scenario {self.name!r}: "
        if not isinstance(self.description, str):
            raise DataError(f"{where}description={self.description!r}: must be a string")
        if not isinstance(self.regimes, tuple | list) or len(self.regimes) != 4 or not all(
                isinstance(r, RegimeParams) for r in self.regimes):
            raise DataError(
                f"{where}regimes={self.regimes!r}: must be four RegimeParams (BULL, BEAR, SIDEWAYS, VOLATILE)"
            )
        w = self._exit_matrix(where)
        np.fill_diagonal(w, 0.0)
        row = w.sum(axis=1)
        if np.any(row <= 0):
            raise DataError(f"{where}exit_weights={self.exit_weights!r}: every regime needs somewhere to go")
        groups = _closed_groups(w > 0)
        if len(groups) > 1:
            named = " and ".join("(" + ", ".join(REGIME_NAMES[i] for i in g) + ")" for g in groups)
            raise DataError(
                f"{where}exit_weights={self.exit_weights!r}: the chain splits into groups of regimes it "
                f"never leaves, {named}: no single long-run share of each regime"
            )
        tail_df = _number(where, "tail_df", self.tail_df)
        if not tail_df > 2.0:
            raise DataError(f"scenario {self.name!r}: tail_df={self.tail_df!r} must be > 2 (or inf)")
        if not 0.0 <= _number(where, "gap_scale", self.gap_scale) < 1.0:
            raise DataError(f"scenario {self.name!r}: gap_scale={self.gap_scale!r} must be in [0, 1)")
        steps = self.intrabar_steps
        if (isinstance(steps, bool | np.bool_) or not isinstance(steps, numbers.Integral)
                or not 2 <= steps <= INTRABAR_STEPS_MAX):
            raise DataError(
                f"{where}intrabar_steps={steps!r}: must be an integer >= 2 and at most {INTRABAR_STEPS_MAX:,} "
                "(the presets use 24; more steps only add time, about 3 ms a bar at the limit)"
            )
        for name in ("start_price", "base_volume"):
            value = _number(where, name, getattr(self, name))
            if not (math.isfinite(value) and value > 0.0):
                raise DataError(f"{where}{name}={getattr(self, name)!r}: must be finite and > 0")
        for name in ("volume_sigma", "volume_response"):
            value = _number(where, name, getattr(self, name))
            if not (math.isfinite(value) and value >= 0.0):
                raise DataError(f"{where}{name}={getattr(self, name)!r}: must be finite and >= 0")
        if not 0.0 <= _number(where, "volume_persistence", self.volume_persistence) < 1.0:
            raise DataError(
                f"scenario {self.name!r}: volume_persistence={self.volume_persistence!r}: must be in [0, 1)"
            )
        leave = np.array([1.0 / r.dwell for r in self.regimes])
        matrix = (w / row[:, None]) * leave[:, None]
        matrix[np.diag_indices(4)] = 1.0 - leave
        object.__setattr__(self, "_matrix", matrix)

    def _exit_matrix(self, where: str) -> np.ndarray:
        """``exit_weights`` as a 4x4 float array, or a DataError naming it."""
        rows = self.exit_weights
        shaped = isinstance(rows, tuple | list) and len(rows) == 4 and all(
            isinstance(r, tuple | list) and len(r) == 4 for r in rows)
        if not shaped or not all(_is_weight(x) for r in rows for x in r):
            raise DataError(f"{where}exit_weights={rows!r}: must be a 4x4 of finite weights >= 0")
        return np.array(rows, dtype=np.float64)

    @property
    def transition_matrix(self) -> np.ndarray:
        """P[i, j] = probability of regime j at bar t+1 given regime i at bar t (a copy)."""
        return self._matrix.copy()

    def stationary(self) -> np.ndarray:
        """Long-run share of bars in each regime (the chain's stationary distribution)."""
        a = self._matrix.T - np.eye(4)
        a[-1, :] = 1.0
        b = np.zeros(4)
        b[-1] = 1.0
        return np.linalg.solve(a, b)

    def expected_dwell(self) -> np.ndarray:
        """Expected bars per visit of each regime."""
        return np.array([r.dwell for r in self.regimes])


def _is_weight(x: object) -> bool:
    """A finite real number >= 0 (not a bool)."""
    return is_real(x) and 0.0 <= real_number(x, str) < math.inf  # an int beyond a float is inf here


def _closed_groups(moves: np.ndarray) -> list[tuple[int, ...]]:
    """The groups of regimes the chain never leaves once in them (its closed classes), given
    ``moves[i, j]``: regime i can move to regime j. One group: one long-run distribution."""
    n = len(moves)
    reach = moves | np.eye(n, dtype=bool)
    for k in range(n):  # transitive closure (Warshall)
        reach = reach | (reach[:, k : k + 1] & reach[k : k + 1, :])
    # regime i is in a group it never leaves when every regime it reaches reaches it back
    groups = {tuple(np.flatnonzero(reach[i]).tolist()) for i in range(n) if reach[reach[i], i].all()}
    return sorted(groups)


def _p(drift: float, vol: float, dwell: float, **kw: float) -> RegimeParams:
    return RegimeParams(drift=drift, vol=vol, dwell=dwell, **kw)


# Exit weights: rows are the regime left, columns the regime entered (BULL, BEAR, SIDEWAYS,
# VOLATILE). Bull markets mostly pause (SIDEWAYS) or crack (VOLATILE); bear markets end in a
# sideways base or a volatile capitulation; volatile spells resolve into either trend.
_TYPICAL_EXITS = (
    (0.0, 0.25, 0.50, 0.25),
    (0.20, 0.0, 0.40, 0.40),
    (0.45, 0.25, 0.0, 0.30),
    (0.30, 0.40, 0.30, 0.0),
)

SCENARIOS: dict[str, ScenarioSpec] = {
    spec.name: spec
    for spec in (
        ScenarioSpec(
            name="easy",
            description="very distinct regimes, long dwell (~100-150 bars)",
            regimes=(
                _p(0.0025, 0.007, 150),
                _p(-0.0035, 0.015, 100, volume_level=0.3),
                _p(0.0, 0.004, 120, mean_reversion=0.30, level_vol=0.0005, volume_level=-0.3),
                _p(-0.0005, 0.030, 80, garch_alpha=0.05, garch_beta=0.85, volume_level=0.7),
            ),
            exit_weights=_TYPICAL_EXITS,
        ),
        ScenarioSpec(
            name="realistic",
            description="overlapping drifts, dwell ~20-60 bars, fat tails, volatility clustering",
            regimes=(
                _p(0.0010, 0.009, 60, garch_alpha=0.02, garch_beta=0.90, garch_gamma=0.04),
                _p(
                    -0.0016, 0.016, 30, garch_alpha=0.03, garch_beta=0.88, garch_gamma=0.06, volume_level=0.25
                ),
                _p(0.0, 0.006, 40, mean_reversion=0.25, level_vol=0.001, volume_level=-0.2),
                _p(
                    -0.0005, 0.026, 20, garch_alpha=0.06, garch_beta=0.80, garch_gamma=0.10, volume_level=0.55
                ),
            ),
            exit_weights=_TYPICAL_EXITS,
            tail_df=6.0,
            gap_scale=0.15,
        ),
        ScenarioSpec(
            name="hard",
            description="close parameters, short dwell (~10-25 bars), fatter tails",
            regimes=(
                _p(0.0005, 0.010, 25, garch_alpha=0.05, garch_beta=0.85),
                _p(-0.0007, 0.013, 15, garch_alpha=0.05, garch_beta=0.85, volume_level=0.1),
                _p(0.0, 0.008, 18, mean_reversion=0.10, level_vol=0.002, volume_level=-0.1),
                _p(-0.0002, 0.019, 10, garch_alpha=0.10, garch_beta=0.80, volume_level=0.25),
            ),
            exit_weights=_TYPICAL_EXITS,
            tail_df=5.0,
            gap_scale=0.2,
            volume_sigma=0.35,
        ),
        ScenarioSpec(
            name="mean_reverting",
            description="SIDEWAYS-heavy market with strong short-term mean reversion (contrarian)",
            regimes=(
                _p(0.0010, 0.009, 25),
                _p(-0.0012, 0.014, 20, volume_level=0.25),
                _p(0.0, 0.008, 90, mean_reversion=0.45, level_vol=0.0008, volume_level=-0.2),
                _p(-0.0003, 0.024, 12, garch_alpha=0.08, garch_beta=0.80, volume_level=0.5),
            ),
            exit_weights=(
                (0.0, 0.15, 0.70, 0.15),
                (0.15, 0.0, 0.70, 0.15),
                (0.35, 0.30, 0.0, 0.35),
                (0.20, 0.20, 0.60, 0.0),
            ),
            tail_df=6.0,
            gap_scale=0.1,
        ),
    )
}


@dataclass(frozen=True)
class SyntheticData:
    """Generated bars with their hidden regime (one label per bar)."""

    series: BarSeries
    regimes: np.ndarray
    scenario: str
    seed: int

    @property
    def regime_codes(self) -> np.ndarray:
        """Regimes as integers 0..3 in the order BULL, BEAR, SIDEWAYS, VOLATILE."""
        return regime_codes(self.regimes)

    def switches(self) -> int:
        """Number of bars whose regime differs from the previous bar's."""
        return int(np.count_nonzero(self.regimes[1:] != self.regimes[:-1]))

    def shares(self) -> dict[str, float]:
        """Fraction of bars in each regime."""
        n = max(len(self.regimes), 1)
        return {name: float(np.count_nonzero(self.regimes == name)) / n for name in REGIME_NAMES}


def regime_codes(regimes: np.ndarray) -> np.ndarray:
    """Map regime strings to 0..3 (BULL, BEAR, SIDEWAYS, VOLATILE); unknown labels → DataError."""
    labels = np.asarray(regimes)
    codes = np.full(labels.shape, -1, dtype=np.int64)
    for i, name in enumerate(REGIME_NAMES):
        codes[labels == name] = i
    if np.any(codes < 0):
        bad = str(labels[codes < 0][0])
        raise DataError(f"unknown regime label {bad!r}; expected one of {list(REGIME_NAMES)}")
    return codes


_FREQ = re.compile(r"^\s*(\d+)\s*(B|D|d|H|h|min|T|m|S|s)\s*$")
_FREQ_UNITS = {"D": "D", "d": "D", "H": "h", "h": "h", "min": "m", "T": "m", "m": "m", "S": "s", "s": "s"}
_UNIT_NS = {"D": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9}
_LAST_DAY = np.datetime64("2262-04-11", "D")
_LAST_NS = int(_LAST_DAY.astype("datetime64[ns]").astype(np.int64))
"""Bars must fall before 2262-04-11 (int64 nanoseconds reach 2262-04-11T23:47:16)."""
_MAX_NS = 2**63 - 1
_DAY_NS = 86_400 * 10**9


def _freq_parts(freq: str) -> tuple[int, str, bool]:
    """``freq`` as (count, numpy unit, business days?), the count a Python int of any size."""
    match = _FREQ.match(freq) if isinstance(freq, str) else None
    if match is None or int(match.group(1)) <= 0:
        raise DataError(
            f"freq={freq!r}: expected a positive count and a unit B (business days), D, h, min or s "
            "(e.g. '1B', '1D', '15min')"
        )
    business = match.group(2) == "B"
    return int(match.group(1)), "D" if business else _FREQ_UNITS[match.group(2)], business


def parse_freq(freq: str) -> np.timedelta64:
    """``"1D"``, ``"4h"``, ``"15min"``, ``"30s"`` → a numpy timedelta64 (``"1B"``: see bar_times).

    A step longer than int64 nanoseconds hold (~292 years) is a DataError (numpy wrapped it)."""
    count, unit, _ = _freq_parts(freq)
    step_ns = count * _UNIT_NS[unit]
    if step_ns > _MAX_NS:
        raise DataError(f"freq={freq!r}: a step longer than int64 nanoseconds hold (about 292 years)")
    return np.timedelta64(count, unit).astype("timedelta64[ns]")


def _parse_start(start: str) -> tuple[np.datetime64, int]:
    """``start`` as (its instant as datetime64[ns] UTC, its UTC offset in nanoseconds; 0 when
    naive, which means UTC)."""
    if not isinstance(start, str):
        raise DataError(f"start={start!r}: must be ISO-8601 text (a date or a datetime)")
    try:
        when = read_time_text(start, "not an ISO-8601 date or datetime")
    except ValueError as exc:
        raise DataError(f"start={start!r}: {exc}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    problem = outside_time_range(when)
    if problem:
        raise DataError(f"start={start!r}: {problem}")
    offset = when.utcoffset()
    offset_ns = 0 if offset is None else (offset.days * 86_400 + offset.seconds) * 10**9 + offset.microseconds * 1_000
    return np.datetime64(when.astimezone(UTC).replace(tzinfo=None), "ns"), offset_ns


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _over_max_bars(name: str, n: int) -> DataError | None:
    """The DataError for ``n`` bars (argument ``name``) above :data:`MAX_BARS`, naming the limit
    and its reason, or None."""
    if n <= MAX_BARS:
        return None
    return DataError(
        f"{name}={n:,}: at most {MAX_BARS:,} bars in one run (generating holds about 140 bytes a bar, "
        f"bars.csv takes about 106 bytes a row and reading it back about 400, so the limit keeps each "
        f"within a few hundred MB): for more, generate several series with distinct seeds (and symbols)"
    )


def _past_the_limit(n: int, freq: str, start: str, fit: int) -> DataError:
    return DataError(
        f"{n:,} bars of {freq} from {start} would end after 2262-04-11, the last day bar times "
        f"(int64 nanoseconds) reach: at most {fit:,} {'bar' if fit == 1 else 'bars'} of {freq} fit from {start}"
    )


def bar_times(start: str, freq: str, n: int) -> np.ndarray:
    """``n`` bar times (datetime64[ns], UTC) from ``start`` every ``freq``.

    ``"<k>B"`` steps over business days, like daily equity bars: Monday-Friday of the start's
    own calendar (its local date at its UTC offset; naive means UTC), each bar at the start's
    local time of day, the first at ``start``; a start that is not a business day there is a
    DataError naming its weekday and the next business day. The other units are fixed steps. Bars that would reach 2262-04-11 (the end of
    datetime64[ns]) raise a DataError saying how many bars fit; the check is done in Python
    integers and day units, so no step or count wraps around. ``n`` is an integer from 1 to
    :data:`MAX_BARS`, else a DataError.
    """
    return _bar_times(start, freq, n, "n")


def _bar_times(start: str, freq: str, n: int, name: str) -> np.ndarray:
    """:func:`bar_times`, a count above :data:`MAX_BARS` named as argument ``name``."""
    count, unit, business = _freq_parts(freq)
    t0, offset_ns = _parse_start(start)
    n = int(n)
    if n < 1:
        raise DataError(f"{name}={n!r}: must be >= 1")
    t0_ns = int(t0.astype(np.int64))
    if business:
        # business days are the start's own: its local date, time of day and offset
        local_ns = t0_ns + offset_ns
        day_number, time_of_day = divmod(local_ns, _DAY_NS)
        day = np.datetime64(day_number, "D")
        if not np.is_busday(day):
            weekday = _WEEKDAYS[(day_number + 3) % 7]  # 1970-01-01 was a Thursday
            following = np.busday_offset(day, 0, roll="forward")
            raise DataError(
                f"start={start!r} falls on a {weekday} ({day}, its own date), not a business day: with "
                f"freq={freq!r} the first bar is at start, which must be a Monday-Friday (the next is {following})"
            )
        # a local day d holds a bar before the UTC limit when d + time_of_day - offset < _LAST_NS
        end_day = np.datetime64(-((time_of_day - offset_ns - _LAST_NS) // _DAY_NS), "D")
        open_days = int(np.busday_count(day, end_day)) if day < end_day else 0
        fit = (open_days - 1) // count + 1 if open_days > 0 else 0
        if n > fit:
            raise _past_the_limit(n, freq, start, fit)
        too_many = _over_max_bars(name, n)
        if too_many:
            raise too_many
        days = np.busday_offset(day, np.arange(n, dtype=np.int64) * count, roll="forward")
        return days.astype("datetime64[ns]") + np.timedelta64(time_of_day - offset_ns, "ns")
    step_ns = count * _UNIT_NS[unit]
    fit = (_LAST_NS - 1 - t0_ns) // step_ns + 1 if t0_ns < _LAST_NS else 0
    if n > fit:
        raise _past_the_limit(n, freq, start, fit)
    too_many = _over_max_bars(name, n)
    if too_many:
        raise too_many
    if n == 1:
        return np.array([t0], dtype="datetime64[ns]")
    return t0 + np.arange(n, dtype=np.int64) * np.timedelta64(step_ns, "ns")


def generate(
    scenario: str,
    n_bars: int,
    seed: int,
    symbol: str = "SYN",
    start: str = "2000-01-03",
    freq: str = "1D",
) -> SyntheticData:
    """Generate ``n_bars`` bars of ``scenario`` (a key of :data:`SCENARIOS`) and their regimes.

    ``start`` is the first bar's time (ISO-8601; naive means UTC), ``freq`` the bar spacing.
    ``n_bars`` is at most :data:`MAX_BARS` (a DataError before anything is drawn).
    Deterministic: the same arguments give identical arrays.

    The random numbers come from ``seed`` alone, drawn in a fixed order (the chain's ``n_bars``
    uniforms first): presets run with the same seed share them (same switch bars more often
    than not; ``realistic`` and ``mean_reverting``, both Student-t 6, have returns correlated
    0.84), ``symbol``, ``start`` and ``freq`` change no price, and the regime path of a shorter
    run is the prefix of a longer one's. Use distinct seeds for series that must be independent
    (a test run never shares its training run's seed). Kept so for the documented figures.
    """
    spec = SCENARIOS.get(scenario) if isinstance(scenario, str) else None
    if spec is None:
        raise DataError(f"unknown scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
    if isinstance(n_bars, bool) or not isinstance(n_bars, (int, np.integer)) or n_bars < 1:
        raise DataError(f"n_bars={n_bars!r}: must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed={seed!r}: must be an integer >= 0")
    if not isinstance(symbol, str) or _SYMBOL.fullmatch(symbol) is None:
        raise DataError(f"symbol={symbol!r}: not a valid symbol (upper-case ticker)")
    timestamps = _bar_times(start, freq, int(n_bars), "n_bars")  # before anything is drawn

    n = int(n_bars)
    rng = np.random.default_rng(int(seed))
    states = _simulate_chain(spec, n, rng)
    shocks = _shocks(spec, n, rng)
    closes_log, sigma, abs_z = _simulate_returns(spec, states, shocks, rng)
    opens_log = _opens(spec, closes_log, sigma, rng)
    high, low = _intrabar_extremes(spec, opens_log, closes_log, sigma, rng)
    volume = _volume(spec, states, abs_z, rng)

    with np.errstate(over="ignore"):  # a price past float64 is refused below, naming the bar
        open_ = np.exp(opens_log)
        close = np.exp(closes_log)
        # exp() is monotone, so the log-space ordering carries over; clip guards the last ulp.
        high = np.maximum(np.exp(high), np.maximum(open_, close))
        low = np.minimum(np.exp(low), np.minimum(open_, close))
    _check_bars(scenario, int(seed), open_, high, low, close, volume)
    series = BarSeries(
        symbol=symbol,
        timestamp=timestamps.astype("datetime64[ns]"),
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
    )
    labels = np.array(REGIME_NAMES, dtype="<U8")[states]
    return SyntheticData(series=series, regimes=labels, scenario=scenario, seed=int(seed))


def _check_bars(scenario: str, seed: int, *columns: np.ndarray) -> None:
    """A DataError when a price is not finite and > 0 or a volume is not finite: parameters each
    in range can still carry a long series past float64 (a drift of 0.05 a bar for 20,000 bars is
    e^1000), and a NaN bar must not leave the generator."""
    open_, high, low, close, volume = columns
    ok = np.isfinite(volume)
    for price in (open_, high, low, close):
        ok &= np.isfinite(price) & (price > 0.0)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"scenario {scenario!r}, seed {seed}: bar {i} is out of float64's range (open={open_[i]!r}, "
            f"high={high[i]!r}, low={low[i]!r}, close={close[i]!r}, volume={volume[i]!r}): the parameters "
            "carry prices or volumes past what float64 holds over this many bars"
        )


def _simulate_chain(spec: ScenarioSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Regime index of every bar: first from the stationary law, then the Markov chain."""
    cumulative = np.cumsum(spec.transition_matrix, axis=1)
    cumulative[:, -1] = 1.0
    u = rng.random(n)
    first = np.cumsum(spec.stationary())
    first[-1] = 1.0
    states = np.empty(n, dtype=np.int64)
    state = int(np.searchsorted(first, u[0], side="right"))
    states[0] = state
    rows = [list(r) for r in cumulative]
    for t in range(1, n):
        row = rows[state]
        x = u[t]
        state = 0
        while x >= row[state]:
            state += 1
        states[t] = state
    return states


def _shocks(spec: ScenarioSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance shocks: Gaussian, or Student-t scaled to variance 1."""
    if math.isinf(spec.tail_df):
        return rng.standard_normal(n)
    df = spec.tail_df
    return rng.standard_t(df, n) / math.sqrt(df / (df - 2.0))


def _simulate_returns(
    spec: ScenarioSpec, states: np.ndarray, z: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log closes, the per-bar conditional volatility, and |z| (for volume)."""
    n = len(states)
    eta = rng.standard_normal(n).tolist()
    params = spec.regimes
    drift = [p.drift for p in params]
    target = [p.vol * p.vol for p in params]
    alpha = [p.garch_alpha for p in params]
    beta = [p.garch_beta for p in params]
    gamma = [p.garch_gamma for p in params]
    kappa = [p.mean_reversion for p in params]
    level_vol = [p.level_vol for p in params]

    log_close = np.empty(n)
    sigma = np.empty(n)
    zs = z.tolist()
    st = states.tolist()
    price = math.log(spec.start_price)
    level = price
    prev_state = -1
    h = 0.0
    prev_eps2 = 0.0
    prev_down = False
    for t in range(n):
        k = st[t]
        if k != prev_state:  # entering a regime: its own volatility, anchor at today's price
            h = target[k]
            level = price
            prev_state = k
        else:
            shock_weight = alpha[k] + gamma[k] if prev_down else alpha[k]
            h = (
                target[k] * (1.0 - alpha[k] - beta[k] - 0.5 * gamma[k])
                + shock_weight * prev_eps2
                + beta[k] * h
            )
        s = math.sqrt(h)
        eps = s * zs[t]
        price_next = price + drift[k] + kappa[k] * (level - price) + eps
        level += drift[k] + level_vol[k] * eta[t]
        price = price_next
        prev_eps2 = eps * eps
        prev_down = eps < 0.0
        log_close[t] = price
        sigma[t] = s
    return log_close, sigma, np.abs(z)


def _opens(
    spec: ScenarioSpec, log_close: np.ndarray, sigma: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Open = previous close plus a small overnight gap (scale ``gap_scale`` × the bar's vol)."""
    prev = np.empty_like(log_close)
    prev[0] = math.log(spec.start_price)
    prev[1:] = log_close[:-1]
    gaps = rng.standard_normal(len(log_close)) * sigma * spec.gap_scale
    return prev + gaps


def _intrabar_extremes(
    spec: ScenarioSpec,
    log_open: np.ndarray,
    log_close: np.ndarray,
    sigma: np.ndarray,
    rng: np.random.Generator,
    chunk_values: int = 16_384 * 24,
) -> tuple[np.ndarray, np.ndarray]:
    """Log high and low of a discretised Brownian bridge from open to close (vol = sigma).

    The bars go in chunks of ``chunk_values // intrabar_steps`` bars (at least one), so the paths
    held at once stay near ``chunk_values`` numbers (3 MB each array) whatever the step count:
    16,384 bars of the presets' 24 steps. The draws are the same in any chunking (numpy fills
    each ``(m, steps)`` block row by row from one stream)."""
    n = len(log_open)
    steps = spec.intrabar_steps
    chunk = max(1, chunk_values // steps)
    frac = np.arange(1, steps + 1) / steps
    high = np.empty(n)
    low = np.empty(n)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        m = hi - lo
        walk = np.cumsum(rng.standard_normal((m, steps)), axis=1) * (sigma[lo:hi, None] / math.sqrt(steps))
        bridge = walk - frac[None, :] * walk[:, -1:]
        path = log_open[lo:hi, None] + frac[None, :] * (log_close[lo:hi] - log_open[lo:hi])[:, None] + bridge
        high[lo:hi] = np.maximum(path.max(axis=1), log_open[lo:hi])
        low[lo:hi] = np.minimum(path.min(axis=1), log_open[lo:hi])
    return high, low


def _volume(
    spec: ScenarioSpec, states: np.ndarray, abs_z: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Log-normal volume: regime level + persistent AR(1) noise + response to the shock size."""
    n = len(states)
    phi = spec.volume_persistence
    e = rng.standard_normal(n) * spec.volume_sigma * math.sqrt(1.0 - phi * phi)
    u = np.empty(n)
    acc = rng.standard_normal() * spec.volume_sigma
    for t, x in enumerate(e.tolist()):
        acc = phi * acc + x
        u[t] = acc
    level = np.array([p.volume_level for p in spec.regimes])[states]
    mean_abs = math.sqrt(2.0 / math.pi)
    log_v = math.log(spec.base_volume) + level + u + spec.volume_response * (abs_z - mean_abs)
    return np.round(np.exp(log_v))
