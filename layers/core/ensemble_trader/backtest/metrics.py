"""Performance metrics of a strategy's per-period returns (pure numpy).

Conventions, shared by every backtest in the project:

* ``returns[t]`` is the strategy's simple net return over period ``t`` (after costs), and
  ``positions[t]`` the position (fraction of equity, signed) held over that period. The book
  starts flat, so the first trade is ``|positions[0]|``.
* **ruin**: a period with ``1 + r <= 0`` loses the whole account (a leveraged position over a
  crash: -50 % at 2x). Its return counts as -1 and every later period as 0, flat, without a
  trade (:func:`apply_ruin`): wealth stops at 0 instead of turning negative, so ``total_return``
  is at least -1 and ``max_drawdown`` at most 1, and nothing is earned, traded or won after it.
* ``total_return``  = prod(1 + r) - 1, taken as expm1(sum(log(1 + r))) when the product
  overflows a float (or underflows to 0 without a ruin): inf only when the growth itself is
  beyond a float (log-growth past ~709.8), never NaN
* ``annual_return`` = (1 + total_return) ** (P / n) - 1, with P periods per year (geometric;
  from the mean log growth when the product is beyond a float); NaN when the annual figure
  itself is beyond a float (one hourly period of +9 % compounded over 8,760 a year)
* ``annual_vol``    = std(r, ddof=1) * sqrt(P)
* ``sharpe``        = mean(r) / std(r, ddof=1) * sqrt(P) (risk-free rate 0); 0 when std is 0
  or there is one period
* ``sortino``       = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(P); 0 when there is one period or
  no period lost or earned money (never in the market); NaN when no period lost money and some
  earned (the ratio is unbounded: it exists but cannot be given as a number)
* ``max_drawdown``  = max_t (1 - W_t / max_{s<=t} W_s) over wealth W (starting at 1), a
  positive fraction (0.25 = a 25 % fall from a peak; 1 after ruin; in log space when wealth
  overflows a float, so never NaN). Over a subset of the
  periods (one regime's, ``summarise`` in the engine) W is the wealth those periods alone
  compound to, taken in time order with the periods between them left out: two -10 % BEAR
  periods with a BULL rally between them are a 19 % BEAR drawdown (0.9 * 0.9), though the real
  wealth never fell more than 10 % from its peak. It is the drawdown of a strategy that is in
  the market only in that regime, not the largest fall of the whole run's wealth during it.
* ``win_rate``      = share of periods in the market (position != 0) with r > 0; 0 if never in
* ``turnover``      = mean |Δposition| per period * P, i.e. how many times a year the book is
  traded through (annualised, so slices of different lengths compare)

A ratio the data leave undefined is 0.0 by convention (the Sharpe ratio of a series that never
varies, the win rate of a strategy never in the market). A figure that exists but cannot be given
is NaN, never 0.0, which would read as a measured flat year or a margin known exactly: an
``annual_return`` beyond a float, the ``sortino`` of a strategy that earned and never lost, and the
standard errors of :func:`sharpe_margin_se` and
:func:`sharpe_margin_se_hac` over fewer than three periods. Strict JSON has no NaN: whoever writes
these figures as JSON writes null (as the ``regime`` commands do), and a table shows "n/a".

Periods per year P come from the bar times (:func:`periods_per_year`; :func:`infer_periods_per_year`
also says what it assumed, for a command to show) unless a run fixes them (``--bars-per-year``:
``evaluate agents`` passes it to the engine's ``prepare``, ``backtest`` to ``run_pipeline``,
whose run carries it).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.numbers import real_number

SECONDS_PER_DAY = 86_400.0
TRADING_DAYS = 252
CALENDAR_DAYS = 365
MEASURED_SPAN_DAYS = 90.0
"""A series spanning this many days or more has its bars per year measured, not inferred."""


@dataclass(frozen=True)
class Metrics:
    """Summary of one return series; see the module docstring for each formula."""

    total_return: float
    annual_return: float
    annual_vol: float
    sharpe: float
    sortino: float
    max_drawdown: float
    win_rate: float
    turnover: float

    def as_dict(self) -> dict[str, float]:
        """The eight metrics as plain floats, keyed by name."""
        return {k: float(v) for k, v in asdict(self).items()}


METRIC_NAMES: tuple[str, ...] = (
    "total_return",
    "annual_return",
    "annual_vol",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "turnover",
)


def _as_1d(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise DataError(f"{name}[{bad}] is {float(arr[bad])!r}; every value must be finite")
    return arr


def checked_number(name: str, value: Any, minimum: float | None = None, *, strict: bool = False) -> float:
    """``value`` as a float when it is a finite real number (an int, a float, a numpy integer or
    float) at least ``minimum`` (above it when ``strict``; no bound when None), else
    :class:`DataError` naming ``name`` and the value.

    A bool, a string or None is refused, not converted: ``True`` would otherwise pass as 1 (a cost
    of 1 bp, one bar a year) and a string or None fail deep in numpy with a TypeError that names
    neither the parameter nor the value. Text is for a command to parse
    (:func:`checked_periods_per_year` reads ``--bars-per-year``), not for a call from code. What
    counts as a real number is decided by :func:`ensemble_trader.domain.numbers.real_number`."""
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"

    def refusal(shown: str) -> str:
        return f"{name} must be a finite number{bound}, got {shown}"

    number = real_number(value, lambda: refusal("None" if value is None else f"{value!r} (a {type(value).__name__})"))
    in_range = minimum is None or (number > minimum if strict else number >= minimum)
    if not (math.isfinite(number) and in_range):
        raise DataError(refusal(repr(value)))
    return number


def _paired(
    name_a: str, a: np.ndarray, name_b: str, b: np.ndarray, periods_per_year: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Two validated series over the same periods, and a valid bar frequency (a float > 0)."""
    x, y = _as_1d(name_a, a), _as_1d(name_b, b)
    if x.shape != y.shape:
        raise DataError(f"{name_a} has {x.size} periods but {name_b} has {y.size}")
    return x, y, checked_number("periods_per_year", periods_per_year, 0.0, strict=True)


def ruin_index(returns: np.ndarray) -> int | None:
    """The first period of a 1-D return series with ``1 + r <= 0`` (the account is gone), or None."""
    hit = np.flatnonzero(np.asarray(returns, dtype=np.float64) <= -1.0)
    return int(hit[0]) if hit.size else None


def apply_ruin(returns: np.ndarray) -> np.ndarray:
    """``returns`` (periods along axis 0; (m,) or (m, k), each column its own account) with
    ruin applied: the first period with ``1 + r <= 0`` becomes -1 and every later one 0. A copy."""
    r = np.array(returns, dtype=np.float64)
    gone = np.cumsum(r <= -1.0, axis=0) > 0  # at or after the first ruinous period
    first = gone & ~np.concatenate((np.zeros_like(gone[:1]), gone[:-1]), axis=0)
    r[gone] = 0.0
    r[first] = -1.0
    return r


def _log_growth(returns: np.ndarray) -> np.ndarray:
    """``log(1 + r)`` of each period of ``returns`` (ruin applied): -inf for the ruinous one."""
    with np.errstate(divide="ignore"):  # log1p(-1) is -inf: the account is gone
        return np.log1p(returns)


def log_wealth(returns: np.ndarray) -> np.ndarray:
    """``log W_t`` of the wealth ``returns`` compound to, starting at ``W_0 = 1``: ``n + 1`` values,
    0 first, ruin applied (:func:`apply_ruin`; -inf from the ruinous period on). Finite where
    ``W_t`` itself is beyond a float (log-wealth past ~709.8), for whoever needs wealth there:
    :func:`drawdowns`, the circuit-breaker replay and the report's equity curves."""
    return np.concatenate(([0.0], np.cumsum(_log_growth(apply_ruin(returns)))))


def drawdowns(returns: np.ndarray) -> np.ndarray:
    """The fall ``1 - W_t / max_{s<=t} W_s`` of wealth from its running peak at each point of the
    wealth ``returns`` compound to (``n + 1`` values, 0 first for ``W_0 = 1``), for returns with
    ruin applied (:func:`apply_ruin`; :func:`strategy_returns
    <ensemble_trader.backtest.engine.strategy_returns>` gives them so).

    Wealth is the product of ``1 + r`` while that is a float; when it overflows (a long winning
    run), every fall is taken in log space instead, ``-expm1(log W_t - max_{s<=t} log W_s)``
    (:func:`log_wealth`), so none is NaN. :func:`max_drawdown` is their largest."""
    r = np.asarray(returns, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # inf, or inf * 0 (NaN) at a ruin: checked below
        wealth = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    if np.all(np.isfinite(wealth)):
        return 1.0 - wealth / np.maximum.accumulate(wealth)
    logs = log_wealth(r)
    return 0.0 - np.expm1(logs - np.maximum.accumulate(logs))  # 0.0, not -0.0, where at a peak


def max_drawdown(returns: np.ndarray) -> float:
    """Largest fall of wealth from a running peak, as a positive fraction (wealth starts at 1;
    1 when a period loses everything, :func:`apply_ruin`).

    Wealth is the product of ``1 + r``; when that product overflows a float (log-wealth past
    ~709.8, a long winning run), the fall is taken in log space instead,
    ``-expm1(log W_t - max_{s<=t} log W_s)``, so it is never NaN (:func:`drawdowns`)."""
    r = _as_1d("returns", returns)
    if r.size == 0:
        return 0.0
    return float(np.max(drawdowns(apply_ruin(r))))


_LOG_FLOAT_MAX = float(np.log(np.finfo(np.float64).max))
_FLOAT_TINY = float(np.finfo(np.float64).tiny)


def _annualised(growth: float, years_per_slice: float) -> float:
    """``growth ** years_per_slice - 1`` (-1 after a total loss; NaN when it overflows a float:
    no figure can be given, and 0 would read as a flat year)."""
    if growth <= 0.0:
        return -1.0
    return _annualised_log(float(np.log(growth)), years_per_slice)


def _annualised_log(log_growth: float, years_per_slice: float) -> float:
    """:func:`_annualised` of the growth whose log is ``log_growth`` (-inf after a total loss)."""
    if log_growth == -math.inf:
        return -1.0
    exponent = years_per_slice * log_growth
    return float(np.expm1(exponent)) if exponent < _LOG_FLOAT_MAX else math.nan


def performance(
    returns: np.ndarray,
    positions: np.ndarray,
    periods_per_year: float,
    *,
    initial_position: float = 0.0,
    trades: np.ndarray | None = None,
) -> Metrics:
    """Metrics of ``returns`` earned while holding ``positions`` (see the module docstring).

    ``initial_position`` is the position held before the first period (0 = start flat); pass the
    previous position when measuring a slice of a longer run so its first trade is not invented.
    ``trades`` (|Δposition| of each period) overrides the trades derived from ``positions``, for
    periods that are not contiguous (one regime's periods taken out of a longer run).
    A period with ``1 + r <= 0`` ruins the account (module docstring): it counts -1, and the
    periods after it are flat, with no return and no trade.
    """
    r, pos, periods_per_year = _paired("returns", returns, "positions", positions, periods_per_year)
    n = r.size
    if n == 0:
        return Metrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if trades is None:
        start = checked_number("initial_position", initial_position)  # NaN made the turnover NaN
        trades = np.abs(np.diff(np.concatenate(([start], pos))))
    elif np.shape(trades) != pos.shape:
        raise DataError(f"trades has shape {np.shape(trades)}, positions {pos.shape}")
    else:
        trades = _as_1d("trades", trades)
        if (trades < 0.0).any():
            raise DataError(f"trades must be sizes of position changes (>= 0), got {float(trades.min())!r}")
    ruin = ruin_index(r)
    if ruin is not None:
        r, pos, trades = apply_ruin(r), pos.copy(), np.array(trades, dtype=np.float64)
        pos[ruin + 1:] = 0.0
        trades[ruin + 1:] = 0.0

    with np.errstate(over="ignore", invalid="ignore"):  # inf, or inf * 0 (NaN) at a ruin: checked below
        growth = float(np.prod(1.0 + r))
    if math.isfinite(growth) and (growth >= _FLOAT_TINY or ruin is not None):
        total = growth - 1.0
        annual = _annualised(growth, periods_per_year / n)
    else:  # the product overflowed, or underflowed without a ruin: the same figures from log(1 + r)
        log_growth = float(np.sum(_log_growth(r)))
        with np.errstate(over="ignore"):  # inf only when the growth itself is beyond a float
            total = float(np.expm1(log_growth))
        annual = _annualised_log(log_growth, periods_per_year / n)
    std = float(np.std(r, ddof=1)) if n > 1 else 0.0
    mean = float(np.mean(r))
    scale = float(np.sqrt(periods_per_year))
    sharpe = mean / std * scale if std > 1e-15 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    if n < 2:
        sortino = 0.0  # undefined, like Sharpe
    elif downside > 1e-15:
        sortino = mean / downside * scale
    else:  # no loss: unbounded when it earned (NaN, "n/a"; 0.0 would rank it below any loser), 0/0 when flat
        sortino = math.nan if mean > 0.0 else 0.0
    in_market = pos != 0.0
    wins = float(np.sum(r[in_market] > 0.0))
    win_rate = wins / float(np.sum(in_market)) if np.any(in_market) else 0.0
    turnover = float(np.mean(trades)) * periods_per_year
    return Metrics(
        total_return=total,
        annual_return=annual,
        annual_vol=std * scale,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=max_drawdown(r),
        win_rate=win_rate,
        turnover=turnover,
    )


MIN_PERIODS_FOR_SE = 3
"""The fewest periods :func:`sharpe_margin_se` and :func:`sharpe_margin_se_hac` give a standard
error for; fewer give NaN. Two periods have a Sharpe ratio each, but no estimate of its error:
their correlation is always +1 or -1 and their variance rests on one degree of freedom; 0.0 would
read as a margin known exactly."""


def sharpe_margin_se(a: np.ndarray, b: np.ndarray, c: float, periods_per_year: float) -> float:
    """Standard error of ``Sharpe(a) - c * Sharpe(b)`` (both annualised as in :func:`performance`)
    for two return series over the same periods.

    The delta-method variance of two estimated Sharpe ratios under i.i.d. normal returns (Jobson
    and Korkie, with Memmel's correction), per period: ``Var(s) = (1 + s^2 / 2) / n`` and
    ``Cov(s_a, s_b) = (rho + s_a s_b rho^2 / 2) / n``, scaled by ``periods_per_year``. It is
    first-order and assumes no autocorrelation: a yardstick for how far a margin is from noise,
    not an exact test. The dominant term is ``1 + c^2 - 2 c rho``: two correlated strategies are
    compared more sharply than two independent ones. A series that never varies has Sharpe 0 by
    convention and contributes no variance.

    Fewer than three periods give NaN (:data:`MIN_PERIODS_FOR_SE`).
    """
    x, y, periods_per_year = _paired("a", a, "b", b, periods_per_year)
    c = checked_number("c", c)
    n = x.size
    if n < MIN_PERIODS_FOR_SE:
        return math.nan
    sd_x, sd_y = float(np.std(x, ddof=1)), float(np.std(y, ddof=1))
    live_x, live_y = sd_x > 1e-15, sd_y > 1e-15
    s_x = float(np.mean(x)) / sd_x if live_x else 0.0
    s_y = float(np.mean(y)) / sd_y if live_y else 0.0
    rho = float(np.corrcoef(x, y)[0, 1]) if live_x and live_y else 0.0
    var = (
        (1.0 + s_x**2 / 2.0) * live_x
        + c**2 * (1.0 + s_y**2 / 2.0) * live_y
        - 2.0 * c * (rho + s_x * s_y * rho**2 / 2.0)
    ) / n
    return float(np.sqrt(max(var, 0.0) * periods_per_year))


def newey_west_lag(n: int) -> int:
    """The Bartlett-kernel lag of :func:`sharpe_margin_se_hac`: ``floor(4 (n / 100) ** (2 / 9))``
    (Newey and West's rule of thumb; 6 for 1,000 periods, 8 for 3,000)."""
    return int(4.0 * (max(n, 0) / 100.0) ** (2.0 / 9.0))


def sharpe_margin_se_hac(a: np.ndarray, b: np.ndarray, c: float, periods_per_year: float,
                         lag: int | None = None) -> float:
    """Standard error of ``Sharpe(a) - c * Sharpe(b)`` without :func:`sharpe_margin_se`'s
    assumptions of normal, serially independent returns.

    The delta method on the first two moments of both series (Ledoit and Wolf's approach for a
    Sharpe-ratio difference): with ``u_t = (x_t - m_x, y_t - m_y, x_t^2 - g_x, y_t^2 - g_y)``, the
    long-run covariance ``Psi`` of ``u`` is Newey and West's (Bartlett weights ``1 - j / (L + 1)``
    up to ``lag`` L, :func:`newey_west_lag` when None; ``lag=0`` gives the distribution-free
    i.i.d. error), and the variance is ``grad' Psi grad / n`` with ``grad`` the gradient of
    ``m_x / sqrt(g_x - m_x^2) - c m_y / sqrt(g_y - m_y^2)``, scaled by ``periods_per_year``. Fat
    tails and autocorrelated returns widen it; for i.i.d. normal returns it matches
    :func:`sharpe_margin_se` to first order. A series that never varies contributes no variance.
    Fewer than three periods give NaN (:data:`MIN_PERIODS_FOR_SE`).
    """
    x, y, periods_per_year = _paired("a", a, "b", b, periods_per_year)
    c = checked_number("c", c)
    if lag is not None and (not isinstance(lag, numbers.Integral) or isinstance(lag, (bool, np.bool_)) or lag < 0):
        raise DataError(f"lag must be None or an integer >= 0, got {lag!r}")
    n = x.size
    if n < MIN_PERIODS_FOR_SE:
        return math.nan
    lag = min(newey_west_lag(n) if lag is None else int(lag), n - 1)
    m = np.array([x.mean(), y.mean()])
    g = np.array([np.mean(x * x), np.mean(y * y)])
    sd = np.sqrt(np.maximum(g - m * m, 0.0))
    live = sd > 1e-15
    sd3 = np.where(live, sd, 1.0) ** 3
    weight = np.array([1.0, -c])
    grad = np.concatenate((weight * g / sd3, -weight * m / (2.0 * sd3))) * np.concatenate((live, live))
    u = np.column_stack((x - m[0], y - m[1], x * x - g[0], y * y - g[1]))
    psi = u.T @ u / n
    for j in range(1, lag + 1):
        gamma = u[j:].T @ u[:-j] / n
        psi += (1.0 - j / (lag + 1.0)) * (gamma + gamma.T)
    var = float(grad @ psi @ grad) / n
    return float(np.sqrt(max(var, 0.0) * periods_per_year))


def checked_periods_per_year(value: float | str) -> float:
    """``value`` as bars per year: a finite number > 0, or text that reads as one (a command's
    ``--bars-per-year``), else :class:`DataError`. A bool is refused: True is no 1 bar a year."""
    if isinstance(value, (bool, np.bool_)):
        raise DataError(f"bars per year must be a finite number > 0, got {value!r} (a bool)")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"bars per year must be a finite number > 0, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise DataError(f"bars per year must be a finite number > 0, got {value!r}")
    return number


@dataclass(frozen=True)
class BarsPerYear:
    """Bars per year inferred from bar times, and what was assumed to get it."""

    value: float
    note: str | None = None
    """Why the figure is an assumption the bar times could not settle (a short series with no
    weekend in it), ending in what settles it (``--bars-per-year``); None when they settle it.
    For a command to show (``run.periods_per_year_note`` of the backtest); the figure is used
    either way."""


def periods_per_year(timestamps: np.ndarray) -> float:
    """Bars per year of a series, from its bar times (datetime64): :func:`infer_periods_per_year`'s
    figure, without its note."""
    return infer_periods_per_year(timestamps).value


def infer_periods_per_year(timestamps: np.ndarray) -> BarsPerYear:
    """Bars per year of a series, from its bar times (datetime64), with a note when that figure
    is an assumption (:class:`BarsPerYear`).

    A series spanning at least ``MEASURED_SPAN_DAYS`` (90) days is measured: its bars per year
    are ``(n - 1)`` over its span in years, reported as the conventional figure the rule below
    gives when within 5 % of it (daily equities 252, not 251.6) and as measured otherwise (bars
    every 2 or 3 days, exchange hours the rule does not know). A shorter series takes the rule:
    daily bars give 252, or 365 when the series has bars on all seven weekdays (crypto); bars
    of less than 18 hours give bars-per-day times 252, or 365 / the step when the market runs
    round the clock (hourly crypto: 24 × 365 = 8760); weekly 52, monthly 12; other steps
    365.25 / step in days, except a step of under six days on a five-day week: 252 / the step in
    business days. Seven weekdays rather than any weekend bar: daily bars stamped at an Asian
    exchange's midnight fall on Sundays in UTC, and one stray Saturday row is not a crypto series.
    A series of less than a week cannot show seven weekdays; its intraday bars are read from its
    weekend (:func:`_intraday_week`): round the clock when a bar falls on a Saturday afternoon
    (UTC), a five-day market (FX, futures, an exchange) when the series steps over one; with no
    weekend in the series, round the clock when they cover about 24 hours a day
    (:func:`_round_the_clock`, noted: a 24-hour five-day market looks the same), an exchange's
    sessions otherwise. Its daily bars are 365 a year when one falls on a weekend.
    """
    ts = np.asarray(timestamps).astype("datetime64[ns]")
    if ts.ndim != 1 or ts.size < 2:
        raise DataError(f"need at least two timestamps to infer the bar frequency, got {ts.size}")
    seconds = np.diff(ts).astype(np.int64) / 1e9
    if np.any(seconds <= 0):
        raise DataError("timestamps must increase strictly to infer the bar frequency")
    rule = _periods_by_rule(ts, float(np.median(seconds)) / SECONDS_PER_DAY)
    span_days = float(seconds.sum()) / SECONDS_PER_DAY
    if span_days < MEASURED_SPAN_DAYS:
        return rule
    measured = (ts.size - 1) * 365.25 / span_days
    return BarsPerYear(rule.value) if abs(measured / rule.value - 1.0) <= 0.05 else BarsPerYear(measured)


ROUND_THE_CLOCK_HOURS = 20.0
"""Intraday bars of under a week with no weekend in them are taken as a market open round the
clock when their regular steps cover this many hours a day: that share (20 / 24) of their span,
and this many hours at least."""

REGULAR_STEP_HOURS = 1.0
"""A step this long or shorter is never a closed market (:func:`_round_the_clock`): thin bars,
printed only for the minutes that trade, leave gaps of several median steps."""

WEEKEND_CORE_HOURS = (12, 24)
"""The hours of a Saturday (UTC) no weekday session reaches in any time zone: a bar in them is a
market open at the weekend; a series stepping over them (a step longer than twice the median)
is a market closed at the weekend. Saturday's early hours are left out: a US exchange's Friday
extended hours run to 01:00 UTC on Saturday in winter."""

NO_WEEKEND_24_7 = "24/7 assumed: no weekend in the series; give --bars-per-year"
NO_WHOLE_DAY_SESSIONS = "an exchange's sessions assumed: the bars span less than a day; give --bars-per-year"


def _round_the_clock(ts: np.ndarray, step_days: float) -> tuple[bool, bool]:
    """Whether intraday bars cover about 24 hours a day, and whether they span enough to tell.

    They do when their regular steps — at most twice the median or ``REGULAR_STEP_HOURS`` (a
    missing bar here and there, or a thin market's untraded minutes, is no closed market) — add up
    to ``ROUND_THE_CLOCK_HOURS`` / 24 of the span, and to ``ROUND_THE_CLOCK_HOURS`` at least. An
    exchange's session (6.5 hours of 24, or 16 with extended hours) leaves overnight gaps far
    longer; bars spanning less than ``ROUND_THE_CLOCK_HOURS`` cannot show a whole day and count
    as an exchange's (``--bars-per-year`` settles such a series)."""
    steps = np.diff(ts).astype(np.int64) / 1e9 / SECONDS_PER_DAY
    regular = float(steps[steps <= max(2.0 * step_days, REGULAR_STEP_HOURS / 24.0)].sum())
    share = ROUND_THE_CLOCK_HOURS / 24.0
    return regular >= max(share * float(steps.sum()), share), float(steps.sum()) >= share


def _intraday_week(ts: np.ndarray, step_days: float) -> tuple[bool, str | None]:
    """Whether intraday bars of under a week are a market open every day, and the note when that
    is assumed: a bar in a Saturday's ``WEEKEND_CORE_HOURS`` (UTC) says yes (crypto, thin or
    not); a step longer than twice the median over all of them says no (FX and futures close
    from Friday evening to Sunday evening, exchanges from Friday to Monday); neither — no weekend
    in the series — leaves the coverage rule (:func:`_round_the_clock`), noted."""
    days = ts.astype("datetime64[D]")
    weekday = (days.astype(np.int64) + 3) % 7  # 0 = Monday
    since_midnight = ts - days.astype(ts.dtype)
    core_from, core_to = (np.timedelta64(h, "h") for h in WEEKEND_CORE_HOURS)
    if np.any((weekday == 5) & (since_midnight >= core_from) & (since_midnight < core_to)):
        return True, None
    long = np.flatnonzero(np.diff(ts).astype(np.int64) / 1e9 / SECONDS_PER_DAY > 2.0 * step_days)
    # the Saturday on or after the bar each long step starts from: its core inside the step?
    saturday = (days[long] + ((5 - weekday[long]) % 7).astype("timedelta64[D]")).astype(ts.dtype)
    if np.any((ts[long] < saturday + core_from) & (ts[long + 1] >= saturday + core_to)):
        return False, None
    all_day, spans_a_day = _round_the_clock(ts, step_days)
    if all_day:
        return True, NO_WEEKEND_24_7
    return False, None if spans_a_day else NO_WHOLE_DAY_SESSIONS


def _periods_by_rule(ts: np.ndarray, step_days: float) -> BarsPerYear:
    """Bars per year from the median step and the weekdays the bars fall on (under a week of
    intraday bars: :func:`_intraday_week`)."""
    days = ts.astype("datetime64[D]")
    weekdays = np.unique((days.astype(np.int64) + 3) % 7)  # 0 = Monday
    note = None
    if (days[-1] - days[0]).astype(np.int64) >= 7:
        all_week = weekdays.size == 7
    elif step_days < 0.75:  # less than a week of intraday bars: its weekend, or whether they cover the day
        all_week, note = _intraday_week(ts, step_days)
    else:  # less than a week of daily bars: any weekend bar is all there is to go by
        all_week = bool(np.any(weekdays >= 5))
    days_per_year = CALENDAR_DAYS if all_week else TRADING_DAYS
    if step_days < 0.75:  # intraday: round the clock, or the exchange's bars per day
        if all_week:
            return BarsPerYear(CALENDAR_DAYS / step_days, note)
        # bars of a whole day: the most any calendar day holds (the first and last days, and a
        # weekend's, may be part-days; a median of a few days could be one of them)
        return BarsPerYear(float(TRADING_DAYS * np.unique(days, return_counts=True)[1].max()), note)
    if step_days <= 1.5:
        return BarsPerYear(float(days_per_year))
    if 6.0 <= step_days <= 8.0:
        return BarsPerYear(52.0)
    if 27.0 <= step_days <= 32.0:
        return BarsPerYear(12.0)
    if all_week or step_days >= 6.0:
        return BarsPerYear(365.25 / step_days)
    # a few trading days apart: count the step in business days (every third one is 3, though
    # its calendar steps are 3 and 5 days)
    business = np.busday_count(days[:-1], days[1:])
    business = business[business > 0]
    return BarsPerYear(TRADING_DAYS / float(np.median(business)) if business.size else 365.25 / step_days)
