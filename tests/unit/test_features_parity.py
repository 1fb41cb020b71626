"""The incremental engine and the vectorised batch agree to 1e-9 at every row.

Tolerance: ``|online - batch| <= 1e-9 * max(1, |batch|)`` — absolute for values up to 1,
relative above (RSI lives on 0..100).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.features import (
    FEATURE_NAMES,
    WARMUP_BARS,
    FeatureEngine,
    compute_features,
    replay_features,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOL = 1e-9
DAY = np.timedelta64(1, "D")


def online(series: BarSeries) -> tuple[np.ndarray, np.ndarray]:
    matrix = replay_features(series)
    return matrix.values, matrix.warmup_remaining


def assert_parity(series: BarSeries) -> None:
    rows, warm = online(series)
    batch = compute_features(series)
    assert batch.values.shape == (len(series), len(FEATURE_NAMES))
    assert np.all(np.isfinite(rows)) and np.all(np.isfinite(batch.values))
    np.testing.assert_array_equal(warm, batch.warmup_remaining)
    np.testing.assert_array_equal(batch.timestamp, series.timestamp)
    err = np.abs(rows - batch.values) / np.maximum(1.0, np.abs(batch.values))
    if err.max() > TOL:
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        pytest.fail(
            f"{FEATURE_NAMES[j]} differs at row {i}: online {rows[i, j]!r} batch {batch.values[i, j]!r}"
        )
    assert np.all(rows[:, FEATURE_NAMES.index("drawdown")] <= 0.0)
    rsi = rows[:, FEATURE_NAMES.index("rsi_14")]
    assert np.all((rsi >= 0.0) & (rsi <= 100.0))


def make_series(o, h, low, c, v, symbol="TEST") -> BarSeries:
    n = len(c)
    ts = np.datetime64("2000-01-03T21:00", "ns") + np.arange(n) * DAY
    return BarSeries(symbol, ts, *(np.asarray(x, dtype=np.float64) for x in (o, h, low, c, v)))


# One step of a bar path: how the open gaps from the previous close and how the bar moves, in
# basis points (prices move by at least 1 bp or not at all, like a real tick grid), and volume.
step = st.tuples(
    st.sampled_from(["flat", "move", "move", "move", "gap"]),
    st.integers(-400, 400),  # open vs previous close, bp (gaps use x10)
    st.integers(-300, 300),  # close vs open, bp
    st.integers(0, 200),  # high above max(open, close), bp
    st.integers(0, 200),  # low below min(open, close), bp
    st.one_of(st.just(-1), st.just(0), st.integers(0, 1_000_000)),  # volume (-1 = repeat last)
)


@st.composite
def bar_paths(draw):
    start = draw(st.integers(100, 500_000)) / 100.0
    steps = draw(st.lists(step, min_size=1, max_size=160))
    o, h, low, c, v = [], [], [], [], []
    prev, vol = start, 1000.0
    for kind, gap, move, up, down, volume in steps:
        if kind == "flat":
            op = hi = lo = cl = prev
        else:
            op = prev * math.exp((gap * (10 if kind == "gap" else 1)) * 1e-4)
            cl = op * math.exp(move * 1e-4)
            hi = max(op, cl) * math.exp(up * 1e-4)
            lo = min(op, cl) * math.exp(-down * 1e-4)
        vol = vol if volume < 0 else float(volume)
        o.append(op)
        h.append(hi)
        low.append(lo)
        c.append(cl)
        v.append(vol)
        prev = cl
    return make_series(o, h, low, c, v)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bar_paths())
def test_online_equals_batch_on_random_paths(series):
    assert_parity(series)


@pytest.mark.parametrize("name", ["sp500", "nasdaq"])
def test_online_equals_batch_on_real_daily_bars(name):
    module = pytest.importorskip(f"arch.data.{name}")
    df = module.load()
    ts = df.index.values.astype("datetime64[ns]")
    series = BarSeries(
        name.upper(),
        ts,
        df["Open"].to_numpy(float),
        df["High"].to_numpy(float),
        df["Low"].to_numpy(float),
        df["Close"].to_numpy(float),
        df["Volume"].to_numpy(float),
    )
    assert len(series) > 5000
    assert_parity(series)


def test_online_equals_batch_on_20k_bars_with_regime_changes():
    rng = np.random.default_rng(20_000)
    n = 20_000
    vol = np.repeat(rng.choice([0.002, 0.01, 0.05], size=n // 500), 500)
    drift = np.repeat(rng.choice([-0.002, 0.0, 0.002], size=n // 500), 500)
    r = drift + vol * rng.standard_t(4, n)
    r[rng.random(n) < 0.05] = 0.0  # flat bars
    close = 50.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[50.0], close[:-1]]) * np.exp(rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.003, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.003, n)))
    volume = np.where(rng.random(n) < 0.05, 0.0, rng.lognormal(12, 1, n).round())
    assert_parity(make_series(open_, high, low, close, volume))


def test_batch_of_a_prefix_equals_the_prefix_of_the_batch():
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    series = make_series(close, close * 1.01, close * 0.99, close, rng.integers(0, 100, 300))
    full = compute_features(series).values
    for k in (1, 19, 20, 64, 65, WARMUP_BARS, 200):
        part = compute_features(series[:k]).values
        np.testing.assert_allclose(part, full[:k], rtol=1e-12, atol=1e-12)


def test_empty_series_gives_an_empty_matrix():
    m = compute_features(make_series([], [], [], [], []))
    assert m.values.shape == (0, len(FEATURE_NAMES))
    assert len(m) == 0 and m.ready.shape == (0,)


def test_online_equals_batch_across_a_very_long_flat_stretch():
    # 12,000 unchanged closes (a halted or illiquid market) drive Wilder's averages towards the
    # subnormal range; both paths flush them to zero and resume identically afterwards.
    rng = np.random.default_rng(12)
    before = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 100)))
    flat = np.full(12_000, before[-1])
    after = before[-1] * np.exp(np.cumsum(rng.normal(0.0, 0.01, 50)))
    close = np.concatenate([before, flat, after])
    assert_parity(make_series(close, close, close, close, np.ones(len(close))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bar_paths(), st.data())
def test_state_restored_at_any_bar_continues_identically(series, data):
    split = data.draw(st.integers(0, len(series)), label="split")
    ts = series.timestamp.astype(np.int64).tolist()
    cols = [getattr(series, k).tolist() for k in ("open", "high", "low", "close", "volume")]
    bars = list(zip(ts, *cols, strict=True))
    engine = FeatureEngine(series.symbol)
    for bar in bars[:split]:
        engine.update_raw(*bar)
    restored = FeatureEngine.from_bytes(engine.to_bytes())
    for bar in bars[split:]:
        assert np.array_equal(restored.update_raw(*bar), engine.update_raw(*bar))
    assert restored.to_bytes() == engine.to_bytes()
