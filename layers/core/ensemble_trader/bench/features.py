"""Feature-stage benchmark: the incremental engine against a naive pandas recompute.

Figures (one symbol, steady state, in-process, after warm-up):

* ``features_update_us_p50/p99`` — ``FeatureEngine.update_raw`` per bar;
* ``features_update_bar_us_p50/p99`` — ``FeatureEngine.update`` with a validated ``Bar``, which
  also builds and validates the pydantic ``FeatureVector``;
* ``features_naive_us_p50/p99`` — the naive way, measured in the same run: on each new bar,
  recompute every feature with pandas rolling/ewm over the trailing 250 bars;
* ``features_speedup`` — naive p50 / ``update_raw`` p50;
* ``features_naive_max_abs_diff`` — the largest difference between the naive recompute and
  the engine on the features whose windows fit in 250 bars (returns, realised, range, z-score
  and drawdown features): a check that both compute the same thing;
* ``features_state_bytes``, ``features_state_roundtrip_us_p50`` — the serialised state and
  one ``to_bytes`` + ``from_bytes`` (what the features Lambda does per symbol and batch);
* ``features_batch_bars_per_s`` — ``compute_features`` throughput (the training path).
"""

from __future__ import annotations

import time

import numpy as np

from ensemble_trader.bench import percentiles_us
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.features import (
    DRAWDOWN_WINDOW,
    EWMA_LAMBDA,
    FEATURE_NAMES,
    GK_COEF,
    RETURN_HORIZONS,
    RSI_PERIOD,
    TREND_FAST,
    TREND_SLOW,
    WINDOW,
    FeatureEngine,
    compute_features,
)

NAIVE_LOOKBACK = 250
_WINDOWED = ("ret_1", "ret_5", "ret_20", "ret_60", "realized_vol_20", "range_vol_1", "range_vol_20",
             "zscore_20", "drawdown", "volume_z_20")  # fmt: skip


def _synthetic_series(n: int, seed: int = 7) -> BarSeries:
    """A seeded random walk with volatility regimes and intraday-consistent OHLCV."""
    rng = np.random.default_rng(seed)
    vol = np.repeat(rng.choice([0.005, 0.01, 0.03], size=-(-n // 250)), 250)[:n]
    close = 100.0 * np.exp(np.cumsum(vol * rng.standard_normal(n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, 0.001, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.004, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.004, n)))
    volume = rng.lognormal(12.0, 0.5, n).round()
    ts = np.datetime64("2020-01-01T00:00", "ns") + np.arange(n) * np.timedelta64(1, "m")
    return BarSeries("BENCH", ts, open_, high, low, close, volume)


def _rows(series: BarSeries) -> list[tuple[int, float, float, float, float, float]]:
    ts = series.timestamp.astype(np.int64).tolist()
    cols = [getattr(series, k).tolist() for k in ("open", "high", "low", "close", "volume")]
    return list(zip(ts, *cols, strict=True))


def _naive_features(window):  # window: pandas DataFrame of the trailing bars
    """All features of the last row, recomputed from scratch with pandas over ``window``."""
    import pandas as pd

    o, h, lo, c, v = (window[k] for k in ("open", "high", "low", "close", "volume"))
    log_c = np.log(c)
    r1 = log_c.diff()
    out = {f"ret_{k}": (log_c - log_c.shift(k)).iloc[-1] for k in RETURN_HORIZONS}
    out["ewma_vol"] = np.sqrt((r1**2).ewm(alpha=1.0 - EWMA_LAMBDA).mean().iloc[-1])
    out["realized_vol_20"] = r1.rolling(WINDOW).std().iloc[-1]
    gk = 0.5 * np.log(h / lo) ** 2 - GK_COEF * np.log(c / o) ** 2
    out["range_vol_1"] = np.sqrt(gk.iloc[-1])
    out["range_vol_20"] = np.sqrt(gk.rolling(WINDOW).mean().iloc[-1])
    out["trend_10_50"] = np.log(c.ewm(span=TREND_FAST).mean() / c.ewm(span=TREND_SLOW).mean()).iloc[-1]
    change = c.diff()
    gain = change.clip(lower=0.0).ewm(alpha=1.0 / RSI_PERIOD, adjust=False).mean()
    loss = (-change).clip(lower=0.0).ewm(alpha=1.0 / RSI_PERIOD, adjust=False).mean()
    out["rsi_14"] = (100.0 * gain / (gain + loss)).iloc[-1]
    for name, x in (("zscore_20", c), ("volume_z_20", v)):
        roll = x.rolling(WINDOW)
        out[name] = ((x - roll.mean()) / roll.std()).iloc[-1]
    out["drawdown"] = (c / c.rolling(DRAWDOWN_WINDOW).max() - 1.0).iloc[-1]
    return pd.Series(out)[list(FEATURE_NAMES)].to_numpy()


def run(quick: bool = False) -> dict[str, float | int | str]:
    import pandas as pd

    n_fast = 3_000 if quick else 20_000
    n_bar = 1_000 if quick else 5_000
    n_naive = 30 if quick else 200
    warm = 2_000
    series = _synthetic_series(warm + n_fast)
    rows = _rows(series)
    clock = time.perf_counter_ns

    # update_raw: one symbol, steady state
    engine = FeatureEngine(series.symbol)
    for r in rows[:warm]:
        engine.update_raw(*r)
    fast_ns = []
    update_raw = engine.update_raw
    for r in rows[warm:]:
        t0 = clock()
        update_raw(*r)
        fast_ns.append(clock() - t0)

    # update(bar): the same bars as validated messages (built outside the timed region)
    engine = FeatureEngine(series.symbol)
    for r in rows[:warm]:
        engine.update_raw(*r)
    bars = [series.bar(i) for i in range(warm, warm + n_bar)]
    bar_ns = []
    for bar in bars:
        t0 = clock()
        engine.update(bar)
        bar_ns.append(clock() - t0)

    # naive: pandas recompute over the trailing bars, for each new bar
    frame = pd.DataFrame(
        {k: getattr(series, k) for k in ("open", "high", "low", "close", "volume")}, index=series.timestamp
    )
    naive_ns = []
    last = None
    for i in range(warm, warm + n_naive):
        t0 = clock()
        last = _naive_features(frame.iloc[i - NAIVE_LOOKBACK + 1 : i + 1])
        naive_ns.append(clock() - t0)
    check = compute_features(series[: warm + n_naive]).values[-1]
    cols = [FEATURE_NAMES.index(name) for name in _WINDOWED]
    naive_diff = float(np.max(np.abs(last[cols] - check[cols])))

    # state round trip (per symbol and Lambda batch)
    blob = engine.to_bytes()
    state_ns = []
    for _ in range(200 if quick else 2_000):
        t0 = clock()
        FeatureEngine.from_bytes(engine.to_bytes())
        state_ns.append(clock() - t0)

    # batch path
    t0 = clock()
    compute_features(series)
    batch_s = (clock() - t0) / 1e9

    out: dict[str, float | int | str] = {}
    out.update(percentiles_us(fast_ns, "features_update"))
    out.update(percentiles_us(bar_ns, "features_update_bar"))
    out.update(percentiles_us(naive_ns, "features_naive"))
    out["features_speedup"] = round(out["features_naive_us_p50"] / out["features_update_us_p50"], 1)
    out["features_naive_lookback_bars"] = NAIVE_LOOKBACK
    out["features_naive_max_abs_diff"] = naive_diff
    out["features_state_bytes"] = len(blob)
    out["features_state_roundtrip_us_p50"] = percentiles_us(state_ns, "x")["x_us_p50"]
    out["features_batch_bars_per_s"] = round(len(series) / batch_s)
    return out
