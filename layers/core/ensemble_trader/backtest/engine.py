"""In-process backtester: the same features and the same ONNX agents as live, bar by bar.

Timing convention (shared with the training environment, so training, backtest and live agree):
at the close of bar ``t`` the features of bar ``t`` are known; the agent chooses a target
position ``p_t`` and holds it over the next bar, earning ``p_t * r_{t+1}`` with
``r_{t+1} = C_{t+1} / C_t - 1``; the trade ``|p_t - p_{t-1}|`` pays costs at ``t``. So a series of
``n`` bars yields ``n - 1`` periods and nothing uses a price after the decision it informs.

Building blocks (reusable by every backtest — single agents, baselines, the ensemble):

* :class:`CostModel` — commission and slippage in basis points of the traded notional;
* :func:`asset_returns`, :func:`strategy_returns` — positions → net returns;
* :func:`period_regimes` — the regime label of each period (the label known when its position is taken);
* :func:`summarise` — :class:`~ensemble_trader.backtest.metrics.Metrics` overall and per regime;
* :func:`run_pool` — the four agents driven step by step, each seeing its own position;
* :func:`evaluated_bars`, :func:`align_truth` — the bars a window ``[start, end)`` evaluates, and the
  truth file's labels of the ones it scores;
* :func:`evaluate_agents` — agents plus buy-and-hold and cash on one series, as a report dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ensemble_trader.backtest.metrics import (
    apply_ruin,
    checked_number,
    checked_periods_per_year,
    infer_periods_per_year,
    performance,
    periods_per_year,
    ruin_index,
)
from ensemble_trader.domain.bars import BarSeries, parse_datetime64
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import FeatureMatrix, compute_features
from ensemble_trader.domain.models import REGIMES

if TYPE_CHECKING:  # pragma: no cover
    from ensemble_trader.domain.agents import AgentPool

REGIME_NAMES: tuple[str, ...] = tuple(r.value for r in REGIMES)


@dataclass(frozen=True)
class CostModel:
    """Trading frictions as a fraction of the traded notional: ``(cost_bps + slippage_bps) / 1e4``.

    A change of position from ``p`` to ``q`` (fractions of equity) costs
    ``(cost_bps + slippage_bps) * 1e-4 * |q - p|`` of equity. Only changes of the target
    fraction are charged: a book held at a constant fraction other than 0 or ±1 drifts with the
    price, and the trades that would bring it back to its target every bar (what live execution
    does when it turns the target into shares) are neither charged nor counted in turnover. At a
    constant 2x they come to 4.1 times the equity a year on the S&P 500 1999-2018 and 5.5 on the
    NASDAQ 1999-2018 (3.0 and 3.6 in the 2015-2018 test window, 8.9 and 9.3 in 2008), while the
    turnover counts the entry alone, 2.0 once.
    """

    cost_bps: float = 1.0
    slippage_bps: float = 2.0

    def __post_init__(self) -> None:
        # a real number, finite and >= 0: not True (1 bp), nor "1" or None (a raw TypeError)
        for name in ("cost_bps", "slippage_bps"):
            checked_number(f"CostModel.{name}", getattr(self, name), 0.0)

    @property
    def rate(self) -> float:
        return (self.cost_bps + self.slippage_bps) * 1e-4

    def cost(self, previous: float, target: float) -> float:
        return self.rate * abs(target - previous)


def asset_returns(close: np.ndarray) -> np.ndarray:
    """Simple returns ``r[t] = close[t+1] / close[t] - 1`` of the ``n - 1`` periods."""
    c = np.asarray(close, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise DataError(f"need at least two closes, got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise DataError("closes must be finite and > 0")
    return c[1:] / c[:-1] - 1.0


def strategy_returns(
    positions: np.ndarray, returns: np.ndarray, costs: CostModel, initial_position: float = 0.0
) -> np.ndarray:
    """Net returns ``p_t r_{t+1} - rate |p_t - p_{t-1}|`` for positions (m,) or (m, k).

    Ruin: the first period whose net return is -100 % or worse (``1 + r <= 0``, a leveraged
    position over a crash) loses the whole account: it returns -1 and every later period 0
    (:func:`~ensemble_trader.backtest.metrics.apply_ruin`, each column of (m, k) on its own).
    Wealth stops at 0 instead of turning negative; :func:`summarise` also holds no position
    and makes no trade after it.

    ``initial_position`` must be a finite real number (:func:`~ensemble_trader.backtest.metrics.checked_number`:
    not True, "1" or None) and every position finite, else :class:`DataError` naming it (a NaN
    would otherwise surface as a NaN return, named as ``returns[i]`` by the metrics).
    ``positions`` of another shape than (m,) or (m, k) (a single number, (m, k, j)) and
    ``returns`` of another shape than (m,) are a :class:`DataError` naming the argument and
    its shape."""
    start = checked_number("initial_position", initial_position)
    p = np.asarray(positions, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if p.ndim not in (1, 2):
        raise DataError(f"positions must have shape (m,) or (m, k), one row per period, got shape {p.shape}")
    if r.ndim != 1:
        raise DataError(f"returns must have shape (m,), one asset return per period, got shape {r.shape}")
    if p.shape[0] != r.shape[0]:
        raise DataError(f"{p.shape[0]} positions but {r.shape[0]} returns")
    if not np.all(np.isfinite(p)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(p))[0])
        where = ", ".join(str(i) for i in bad)
        raise DataError(f"positions[{where}] is {float(p[bad])!r}; every position must be finite")
    if p.ndim == 2:
        r = r[:, None]
    previous = np.concatenate((np.full((1,) + p.shape[1:], start), p[:-1]), axis=0)
    return apply_ruin(p * r - costs.rate * np.abs(p - previous))


def period_regimes(bar_regimes: np.ndarray) -> np.ndarray:
    """The regime of each period ``t -> t+1``: the label of bar ``t``, the regime in force when
    the position held over the period is taken.

    Not the label of bar ``t+1``: a detected label there is computed from that bar's own return
    and range, so periods would be sorted by the very return being measured (big up bars into
    BULL, big down bars into BEAR or VOLATILE) — on the S&P 500 2015-2018, with the regime
    model ``r8d6b5e3a686c`` of the time, buy-and-hold earned +13.3 % in BULL that way and +1.5 %
    with the label known when the position is taken. The
    meta-agent's regret ledger and learners use the same convention. With true (synthetic)
    regimes the two differ only on the first bar after each switch."""
    return _known_regimes(np.asarray(bar_regimes).astype(str)[:-1])  # the last bar's label labels no period


def _known_regimes(labels: np.ndarray) -> np.ndarray:
    """``labels`` (str) when each is one of ``REGIME_NAMES``, else :class:`DataError` naming the
    others: a label the report does not know ("bull", "" for no label) would otherwise be left
    out of every regime's metrics without a word."""
    unknown = sorted(set(np.unique(labels).tolist()) - set(REGIME_NAMES))
    if unknown:
        raise DataError(f"unknown regime labels {unknown}; expected {list(REGIME_NAMES)}")
    return labels


def summarise(
    returns: np.ndarray,
    positions: np.ndarray,
    ppy: float,
    regimes: np.ndarray | None = None,
    initial_position: float = 0.0,
) -> dict[str, Any]:
    """``{"overall": M, "by_regime": {regime: M}}`` with M a metrics dict.

    Per regime, the periods of that regime are taken together in time order (a strategy's
    wealth while the market is in that regime), with the trades actually made in them;
    regimes that never occur are left out. So a regime's ``max_drawdown`` is the drawdown of the
    wealth its periods alone compound to, the periods between them left out: two -10 % BEAR
    periods separated by a BULL rally are a 19 % BEAR drawdown (0.9 * 0.9), though the whole
    run's wealth never fell more than 10 % from its peak. ``initial_position`` is the position
    held before the first period (as in :func:`strategy_returns`), so a slice of a longer run
    does not count an invented first trade in its turnover. ``regimes`` (one label per period)
    must each be one of ``REGIME_NAMES``: an unknown label (``"bull"``) is a :class:`DataError`
    naming it, not a period silently left out of every regime. ``initial_position`` is checked
    as in :func:`strategy_returns` (True is not taken as 1).

    A period returning -100 % or worse ruins the account (:func:`strategy_returns`): from the
    next period on, in every regime, nothing is held, traded or earned.

    ``returns`` and ``positions`` are of one strategy, shape (m,) each (the metrics take one
    series); another shape (a 2-D block of several strategies, a single number) is a
    :class:`DataError` naming the argument and its shape.
    """
    start = checked_number("initial_position", initial_position)
    returns = np.asarray(returns, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    for name, values in (("returns", returns), ("positions", positions)):
        if values.ndim != 1:
            raise DataError(f"{name} must have shape (m,), one value per period, got shape {values.shape}")
    trades = np.abs(np.diff(np.concatenate(([start], positions))))
    ruin = ruin_index(returns)
    if ruin is not None:  # the account is gone: the later periods of every regime are flat
        returns, positions = apply_ruin(returns), positions.copy()
        positions[ruin + 1:] = 0.0
        trades[ruin + 1:] = 0.0
    report: dict[str, Any] = {
        "overall": performance(returns, positions, ppy, trades=trades).as_dict(),
        "by_regime": {},
    }
    if regimes is not None:
        labels = np.asarray(regimes).astype(str)
        if labels.shape[0] != np.asarray(returns).shape[0]:
            raise DataError(f"{labels.shape[0]} regime labels for {np.asarray(returns).shape[0]} periods")
        _known_regimes(labels)
        for name in REGIME_NAMES:
            mask = labels == name
            if np.any(mask):
                report["by_regime"][name] = performance(
                    returns[mask], positions[mask], ppy, trades=trades[mask]
                ).as_dict()
    return report


def run_policy(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    features: np.ndarray,
    n_agents: int,
    initial_positions: np.ndarray | None = None,
) -> np.ndarray:
    """Drive a policy bar by bar: ``act(features[t], positions) -> targets``; returns (n, A).

    Each agent sees its own current position, which is its previous target: the loop is
    sequential because a decision depends on the one before.
    """
    f = np.asarray(features, dtype=np.float32)
    out = np.empty((f.shape[0], n_agents), dtype=np.float64)
    current = (
        np.zeros(n_agents, dtype=np.float32)
        if initial_positions is None
        else np.asarray(initial_positions, dtype=np.float32)
    )
    for t in range(f.shape[0]):
        current = np.asarray(act(f[t], current), dtype=np.float32)
        out[t] = current
    return out


def run_pool(pool: AgentPool, features: np.ndarray) -> np.ndarray:
    """Target positions (n, A) of every agent of ``pool`` at each row of ``features``."""
    return run_policy(pool.act, features, len(pool.names))


@dataclass(frozen=True)
class PreparedSeries:
    """A series ready for a backtest: warm rows only, with the features the agents see."""

    symbol: str
    timestamp: np.ndarray  # (n,)
    close: np.ndarray  # (n,)
    features: np.ndarray  # (n, F)
    regimes: np.ndarray | None  # (n,) labels, or None; the last may be "" (it labels no period)
    bars_per_year: float | None = None  # of the whole series (or given); None: inferred from these bars
    bars_per_year_note: str | None = None  # what inferring bars_per_year assumed (metrics.BarsPerYear.note)

    @property
    def periods_per_year(self) -> float:
        """Bars per year of the series: measured on the whole series the window was cut from
        where known, so a short window (a few days over a weekend) is not annualised at 84."""
        return self.bars_per_year if self.bars_per_year is not None else periods_per_year(self.timestamp)


def bars_span(timestamp: np.ndarray) -> str:
    """Where a series' bars run, for an error that says a window holds too few of them."""
    if len(timestamp) == 0:
        return "it has no bars"
    return f"its bars run from {str(timestamp[0])[:19]} to {str(timestamp[-1])[:19]}"


def window_text(start: Any, end: Any) -> str:
    """``[start, end)`` for a message, an open bound shown as ``…``."""
    return f"[{'…' if start is None else start}, {'…' if end is None else end})"


def evaluated_bars(series: BarSeries, start: Any = None, end: Any = None,
                   features: FeatureMatrix | None = None) -> np.ndarray:
    """Which bars of ``series`` a backtest of ``[start, end)`` evaluates: the warm ones in the
    window (a bool mask). Raises :class:`DataError` when that is fewer than two, with the span of
    the whole series (the window may be what missed it)."""
    fm = features if features is not None else compute_features(series)
    if len(fm) != len(series):
        raise DataError(f"{series.symbol}: {len(fm)} feature rows for {len(series)} bars")
    mask = fm.ready.copy()
    ts = np.asarray(series.timestamp)
    if start is not None:
        mask &= ts >= parse_datetime64(start)
    if end is not None:
        mask &= ts < parse_datetime64(end)
    if np.count_nonzero(mask) < 2:
        raise DataError(f"{series.symbol}: fewer than two warm bars in {window_text(start, end)}: {bars_span(ts)}")
    return mask


def prepare(
    series: BarSeries,
    regimes: np.ndarray | None = None,
    start: Any = None,
    end: Any = None,
    features: FeatureMatrix | None = None,
    bars_per_year: float | None = None,
) -> PreparedSeries:
    """Compute features over the whole series (so windows are warm), then keep the warm rows
    with ``start <= timestamp < end``. ``regimes`` (one label per bar of ``series``) are cut alike.
    Pass ``features`` (``compute_features(series)``) to cut several windows from one computation.
    ``bars_per_year`` fixes the annualisation (finite, > 0); None measures it on the series'
    bars before ``end`` (:func:`~ensemble_trader.backtest.metrics.infer_periods_per_year`; what
    that assumed, if anything, in ``bars_per_year_note``, for a command to show)."""
    given = None if bars_per_year is None else checked_periods_per_year(bars_per_year)
    fm = features if features is not None else compute_features(series)
    mask = evaluated_bars(series, start, end, fm)
    ts = np.asarray(series.timestamp)
    # the series' bars before end, warm-up included: what its bars per year come from
    upto_end = ts if end is None else ts[ts < parse_datetime64(end)]
    if regimes is not None and len(regimes) != len(series):
        raise DataError(f"{series.symbol}: {len(regimes)} regime labels for {len(series)} bars")
    inferred = infer_periods_per_year(upto_end) if given is None else None
    return PreparedSeries(
        symbol=series.symbol,
        timestamp=ts[mask],
        close=np.asarray(series.close, dtype=np.float64)[mask],
        features=fm.values[mask],
        regimes=None if regimes is None else np.asarray(regimes).astype(str)[mask],
        bars_per_year=given if inferred is None else inferred.value,
        bars_per_year_note=None if inferred is None else inferred.note,
    )


def load_series(spec: str, synthetic_bars: int = 2_000) -> tuple[BarSeries, np.ndarray | None]:
    """Bars of one data spec, with the true regimes when the spec is synthetic.

    ``synth:<scenario>[:<seed>[:<bars>[:<symbol>]]]`` is generated here (``synthetic_bars`` by default,
    read by :func:`ensemble_trader.marketdata.parse_synth_spec` as every command reads it) so its
    hidden regime labels come along; every other spec (``arch:sp500``, ``shared:<name>``, a CSV
    path) goes through :func:`ensemble_trader.marketdata.load_bars` and has none.
    """
    from ensemble_trader.marketdata import generate_synth, load_bars, parse_synth_spec

    synth = parse_synth_spec(spec, default_bars=synthetic_bars)
    if synth is not None:
        data = generate_synth(synth)
        return data.series, data.regimes
    loaded = load_bars(spec)
    if len(loaded) != 1:
        raise DataError(f"{spec!r} holds {len(loaded)} symbols; give one symbol per data spec")
    return loaded[0], None


def scored_bars(evaluated: np.ndarray) -> np.ndarray:
    """The bars whose periods an evaluation of the ``evaluated`` bars scores (a bool mask): all
    but the last, whose period would run past the window (:func:`period_regimes`)."""
    scored = np.asarray(evaluated, dtype=bool).copy()
    kept = np.flatnonzero(scored)
    if kept.size:
        scored[kept[-1]] = False
    return scored


def align_truth(
    series: BarSeries, truth_ts: np.ndarray, truth_labels: np.ndarray, needed: np.ndarray | None = None
) -> np.ndarray:
    """Regime label of every bar of ``series`` from a truth file.

    Every bar of ``needed`` (a bool mask; default every bar) must be covered — pass
    ``scored_bars(evaluated_bars(...))`` so a file covering the evaluated window is enough (the
    warm-up bars and those outside ``[start, end)`` are never scored). A bar the file does not
    cover and that is not needed gets ``""`` (no label).

    Labels are kept whole (``"VOLATILE?"`` is not cut to ``"VOLATILE"``), so one the report does
    not know is refused where the labels are read (:func:`period_regimes`). A file with more
    times than labels, or fewer, is a :class:`DataError` giving both counts."""
    times = np.asarray(truth_ts).astype("datetime64[ns]").astype(np.int64)
    given = np.asarray(truth_labels)
    if times.shape[0] != given.shape[0]:
        raise DataError(f"{series.symbol}: the truth file has {times.shape[0]} times but {given.shape[0]} regime labels")
    index = {int(t): lab for t, lab in zip(times, given.tolist(), strict=True)}
    stamps = np.asarray(series.timestamp).astype("datetime64[ns]").astype(np.int64)
    labels = np.array([index.get(int(t), "") for t in stamps], dtype=str)  # as long as the longest label
    wanted = np.ones(len(stamps), dtype=bool) if needed is None else np.asarray(needed, dtype=bool)
    if len(wanted) != len(stamps):
        raise DataError(f"{series.symbol}: a mask of {len(wanted)} bars for {len(stamps)} bars")
    missing = np.flatnonzero(wanted & (labels == ""))
    if missing.size:
        which = "bar(s)" if needed is None else "evaluated bar(s)"
        raise DataError(
            f"{series.symbol}: {missing.size} {which} have no regime in the truth file; first at "
            f"{np.datetime64(int(stamps[missing[0]]), 'ns')}"
        )
    return labels


def evaluate_agents(
    prepared: PreparedSeries,
    positions: Mapping[str, np.ndarray],
    costs: CostModel,
    initial_positions: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Report of each named position path plus buy-and-hold and cash on ``prepared``.

    ``positions[name]`` holds one target per bar (n,); the last bar's target earns nothing (there
    is no next bar), so the periods are the first ``n - 1``. ``initial_positions`` (by name, and
    ``"buy_and_hold"``) are the positions held before the first bar, for a slice of a longer run
    (default: flat, so the first trade pays its cost); each must be a finite real number, else
    :class:`DataError` naming it. Shape of the result::

        {"agents": {name: {"overall": M, "by_regime": {...}}},
         "baselines": {"buy_and_hold": {...}, "cash": {...}}}
    """
    r = asset_returns(prepared.close)
    ppy = prepared.periods_per_year
    regimes = period_regimes(prepared.regimes) if prepared.regimes is not None else None
    before = dict(initial_positions or {})
    report: dict[str, Any] = {"agents": {}, "baselines": {}}
    for name, path in positions.items():
        p = np.asarray(path, dtype=np.float64)[:-1]
        p0 = checked_number(f"initial_positions[{name!r}]", before.get(name, 0.0))
        report["agents"][name] = summarise(strategy_returns(p, r, costs, p0), p, ppy, regimes, p0)
    hold = np.ones_like(r)
    h0 = checked_number("initial_positions['buy_and_hold']", before.get("buy_and_hold", 0.0))
    report["baselines"]["buy_and_hold"] = summarise(strategy_returns(hold, r, costs, h0), hold, ppy, regimes, h0)
    flat = np.zeros_like(r)
    report["baselines"]["cash"] = summarise(flat, flat, ppy, regimes)
    return report

