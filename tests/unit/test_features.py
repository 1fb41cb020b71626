"""FeatureEngine: hand-computed values, warm-up, persistence and bad input."""

from __future__ import annotations

import json
import math
import struct
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from ensemble_trader.domain.bars import BarSeries
from ensemble_trader.domain.errors import DataError, StateError
from ensemble_trader.domain.features import (
    EWMA_LAMBDA,
    FEATURE_NAMES,
    MIN_PRICE,
    WARMUP_BARS,
    FeatureEngine,
    FeatureStateVersionError,
    StaleBarError,
    compute_features,
    timestamp_ns,
)
from ensemble_trader.domain.models import Bar, FeatureVector

F = {name: k for k, name in enumerate(FEATURE_NAMES)}
DAY_NS = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9


def feed(closes, volumes=None, engine=None):
    """Flat bars (open = high = low = close) for each close; the rows the engine returns."""
    engine = engine or FeatureEngine("TEST")
    volumes = volumes if volumes is not None else [1000.0] * len(closes)
    start = engine.bars_seen
    return engine, np.array(
        [
            engine.update_raw(T0 + (start + i) * DAY_NS, c, c, c, c, v)
            for i, (c, v) in enumerate(zip(closes, volumes, strict=True))
        ]
    )


def random_bars(n, seed=0):
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, 0.002, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.004, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.004, n)))
    volume = rng.integers(0, 10_000, n).astype(float)
    ts = T0 + np.arange(n) * DAY_NS
    return [(int(ts[i]), open_[i], high[i], low[i], close[i], volume[i]) for i in range(n)]


def test_feature_names_are_pinned():
    # The agents are trained on this order: it may only ever be appended to.
    assert FEATURE_NAMES == (
        "ret_1", "ret_5", "ret_20", "ret_60", "ewma_vol", "realized_vol_20", "range_vol_1",
        "range_vol_20", "trend_10_50", "rsi_14", "zscore_20", "drawdown", "volume_z_20",
    )  # fmt: skip
    assert WARMUP_BARS == 173  # EMA50's start down to 1e-3 of its weight (docs/features.md)


def test_first_bar_is_finite_and_neutral():
    _, rows = feed([100.0])
    row = rows[0]
    assert np.all(np.isfinite(row))
    assert row[F["rsi_14"]] == 50.0
    expected_zero = set(FEATURE_NAMES) - {"rsi_14"}
    assert all(row[F[name]] == 0.0 for name in expected_zero)


def test_returns_use_bars_seen_so_far_during_warmup():
    closes = [100.0 * 1.01**i for i in range(70)]
    _, rows = feed(closes)
    # bar 3: ret_5 and ret_20 span all bars seen (back to bar 0)
    assert rows[3, F["ret_1"]] == pytest.approx(math.log(closes[3] / closes[2]), abs=1e-15)
    assert rows[3, F["ret_5"]] == pytest.approx(math.log(closes[3] / closes[0]), abs=1e-15)
    assert rows[3, F["ret_60"]] == pytest.approx(math.log(closes[3] / closes[0]), abs=1e-15)
    # bar 65: full horizons
    assert rows[65, F["ret_5"]] == pytest.approx(math.log(closes[65] / closes[60]), abs=1e-15)
    assert rows[65, F["ret_20"]] == pytest.approx(math.log(closes[65] / closes[45]), abs=1e-15)
    assert rows[65, F["ret_60"]] == pytest.approx(math.log(closes[65] / closes[5]), abs=1e-15)


def test_rsi_by_hand():
    # changes +1, -1, +2: AG = (1 + 0 + 2) / 3 = 1, AL = (0 + 1 + 0) / 3 = 1/3 -> RSI = 75
    _, rows = feed([10.0, 11.0, 10.0, 12.0])
    assert rows[1, F["rsi_14"]] == pytest.approx(100.0)
    assert rows[2, F["rsi_14"]] == pytest.approx(50.0)
    assert rows[3, F["rsi_14"]] == pytest.approx(75.0)
    # 14 changes of +1 seed AG = 1, AL = 0; a 15th change of -2.8 is smoothed by 1/14:
    # AG = 1 - 1/14 = 13/14, AL = 2.8 / 14 = 0.2
    closes = [100.0 + i for i in range(15)] + [114.0 - 2.8]
    _, rows = feed(closes)
    assert rows[14, F["rsi_14"]] == pytest.approx(100.0)
    assert rows[15, F["rsi_14"]] == pytest.approx(100.0 * (13 / 14) / (13 / 14 + 0.2), rel=1e-12)
    assert rows[15, F["rsi_14"]] == pytest.approx(82.278481, abs=1e-6)


def test_rsi_without_movement_is_neutral():
    _, rows = feed([50.0] * 30)
    assert np.all(rows[:, F["rsi_14"]] == 50.0)


def test_drawdown_by_hand():
    _, rows = feed([100.0, 120.0, 90.0, 130.0, 65.0])
    assert rows[:, F["drawdown"]].tolist() == pytest.approx([0.0, 0.0, -0.25, 0.0, -0.5])


def test_garman_klass_by_hand():
    engine = FeatureEngine("TEST")
    row = engine.update_raw(T0, 100.0, 110.0, 95.0, 105.0, 10.0)
    # 0.5 ln(110/95)^2 - (2 ln 2 - 1) ln(105/100)^2
    hl, co = math.log(110 / 95), math.log(1.05)
    variance = 0.5 * hl**2 - (2 * math.log(2) - 1) * co**2
    assert row[F["range_vol_1"]] == pytest.approx(math.sqrt(variance), rel=1e-14)
    assert row[F["range_vol_1"]] == pytest.approx(0.0991291, abs=1e-6)
    assert row[F["range_vol_20"]] == pytest.approx(row[F["range_vol_1"]], rel=1e-14)
    # second bar with zero range: the 20-bar figure averages the variances
    row2 = engine.update_raw(T0 + DAY_NS, 105.0, 105.0, 105.0, 105.0, 10.0)
    assert row2[F["range_vol_1"]] == 0.0
    assert row2[F["range_vol_20"]] == pytest.approx(math.sqrt(variance / 2), rel=1e-12)


def test_zscore_by_hand():
    _, rows = feed([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sample std sqrt(5/3)
    assert rows[3, F["zscore_20"]] == pytest.approx(1.5 / math.sqrt(5 / 3), rel=1e-12)
    assert rows[1, F["zscore_20"]] == pytest.approx(0.5 / math.sqrt(0.5), rel=1e-12)


def test_zscore_uses_last_20_closes():
    closes = [float(c) for c in range(1, 31)]
    _, rows = feed(closes)
    window = np.array(closes[-20:])
    expected = (window[-1] - window.mean()) / window.std(ddof=1)
    assert rows[-1, F["zscore_20"]] == pytest.approx(expected, rel=1e-12)


def test_realized_and_ewma_vol_by_hand():
    closes = [100.0, 101.0, 99.0]
    _, rows = feed(closes)
    r1, r2 = math.log(101 / 100), math.log(99 / 101)
    assert rows[1, F["ewma_vol"]] == pytest.approx(abs(r1), rel=1e-14)
    assert rows[1, F["realized_vol_20"]] == 0.0  # one return: no spread yet
    lam = EWMA_LAMBDA
    assert rows[2, F["ewma_vol"]] == pytest.approx(math.sqrt((lam * r1**2 + r2**2) / (lam + 1)), rel=1e-13)
    assert rows[2, F["realized_vol_20"]] == pytest.approx(np.std([r1, r2], ddof=1), rel=1e-12)


def test_trend_by_hand():
    _, rows = feed([100.0, 110.0])
    fast_decay, slow_decay = 1 - 2 / 11, 1 - 2 / 51
    fast = (fast_decay * 100 + 110) / (fast_decay + 1)
    slow = (slow_decay * 100 + 110) / (slow_decay + 1)
    assert rows[0, F["trend_10_50"]] == 0.0
    assert rows[1, F["trend_10_50"]] == pytest.approx(math.log(fast / slow), rel=1e-12)


def test_flat_windows_have_exactly_zero_spread_after_volatility():
    rng = np.random.default_rng(3)
    wild = list(200.0 * np.exp(np.cumsum(rng.normal(0, 0.3, 40))))
    closes = wild + [wild[-1]] * 25
    volumes = list(rng.integers(0, 10**6, 40).astype(float)) + [0.0] * 25
    _, rows = feed(closes, volumes)
    # the last 20 closes, returns and volumes are all equal: spreads are exactly zero
    tail = rows[-5:]
    assert np.all(tail[:, F["zscore_20"]] == 0.0)
    assert np.all(tail[:, F["realized_vol_20"]] == 0.0)
    assert np.all(tail[:, F["volume_z_20"]] == 0.0)
    assert np.all(tail[:, F["range_vol_20"]] == 0.0)


def test_warmup_counts_down_to_zero_at_bar_173():
    engine, _ = feed([100.0] * (WARMUP_BARS - 1))
    assert engine.warmup_remaining == 1
    feed([100.0], engine=engine)
    assert engine.warmup_remaining == 0
    feed([100.0], engine=engine)
    assert engine.warmup_remaining == 0


def test_update_with_a_bar_returns_the_same_numbers_as_update_raw():
    fast, slow = FeatureEngine("SPX"), FeatureEngine("SPX")
    start = datetime(2024, 1, 2, 21, tzinfo=UTC)
    for i, (_, o, h, lo, c, v) in enumerate(random_bars(WARMUP_BARS + 9, seed=5)):
        when = start + timedelta(days=i)
        bar = Bar(symbol="SPX", timestamp=when, open=o, high=h, low=lo, close=c, volume=v)
        vector = slow.update(bar)
        row = fast.update_raw(timestamp_ns(when), o, h, lo, c, v)
        assert isinstance(vector, FeatureVector)
        assert list(vector.values) == list(FEATURE_NAMES)
        assert list(vector.values.values()) == row.tolist()
        assert vector.warmup_remaining == max(0, WARMUP_BARS - (i + 1))
        assert vector.ready == (i + 1 >= WARMUP_BARS)
    assert slow.last_timestamp_ns == timestamp_ns(start + timedelta(days=WARMUP_BARS + 8))


def test_timestamp_ns_matches_numpy():
    when = datetime(2021, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    assert timestamp_ns(when) == int(np.datetime64("2021-03-04T05:06:07.891011", "ns").astype(np.int64))
    with pytest.raises(DataError):
        timestamp_ns(datetime(2021, 3, 4))


# ---- idempotency and bad input -----------------------------------------------------------------


def test_stale_bar_raises_and_leaves_state_untouched():
    engine = FeatureEngine("TEST")
    bars = random_bars(30)
    for b in bars:
        engine.update_raw(*b)
    before = engine.to_bytes()
    with pytest.raises(StaleBarError) as info:
        engine.update_raw(*bars[-1])
    assert info.value.last_timestamp_ns == bars[-1][0]
    with pytest.raises(StaleBarError):
        engine.update_raw(*bars[5])
    assert engine.to_bytes() == before
    assert engine.last_timestamp_ns == bars[-1][0]


@pytest.mark.parametrize(
    "ohlcv",
    [
        (100.0, 101.0, 100.5, 100.7, 1.0),  # low above open
        (100.0, 99.0, 98.0, 100.5, 1.0),  # high below open
        (100.0, 101.0, 99.0, 102.0, 1.0),  # close above high
        (100.0, 101.0, 0.0, 100.0, 1.0),  # zero low
        (100.0, math.inf, 99.0, 100.0, 1.0),  # infinite high
        (100.0, 101.0, 99.0, math.nan, 1.0),  # NaN close
        (100.0, 101.0, 99.0, 100.0, -1.0),  # negative volume
        (100.0, 101.0, 99.0, 100.0, math.nan),  # NaN volume
        (100.0, 1e200, 99.0, 100.0, 1.0),  # high out of range
        (100.0, 101.0, 99.0, 100.0, 1e151),  # volume out of range
        (100.0, 101.0, 99.0, 100.0, 3e-160),  # a volume whose square is below the smallest normal float
        (1e-200, 1e-200, 1e-200, 1e-200, 1.0),  # below the smallest price: 100 / 1e-200 overflows
        ("100", 101.0, 99.0, 100.0, 1.0),  # not a number
    ],
)
def test_invalid_raw_bar_is_rejected_without_state_change(ohlcv):
    engine = FeatureEngine("TEST")
    engine.update_raw(T0, 100.0, 100.0, 100.0, 100.0, 1.0)
    before = engine.to_bytes()
    with pytest.raises(DataError, match="invalid bar"):
        engine.update_raw(T0 + DAY_NS, *ohlcv)
    assert engine.to_bytes() == before


def test_extreme_but_valid_prices_give_finite_features():
    """At the price bounds every ratio and its logarithm stay finite, so a bar that passes the
    check cannot produce an infinite feature (which would poison the saved state)."""
    engine = FeatureEngine("TEST")
    rows = [engine.update_raw(T0, 1e149, 1e149, 1e149, 1e149, 1.0),
            engine.update_raw(T0 + DAY_NS, MIN_PRICE, 1e149, MIN_PRICE, MIN_PRICE, 1e149),
            engine.update_raw(T0 + 2 * DAY_NS, MIN_PRICE, 1e149, MIN_PRICE, 1e149, 0.0)]
    assert np.isfinite(np.array(rows)).all()
    FeatureEngine.from_bytes(engine.to_bytes())  # the state stays loadable


def test_the_smallest_volumes_keep_their_z_score():
    """Two volumes at the bound: the z-score of the second is exactly 1/sqrt(2), as at any scale."""
    engine = FeatureEngine("TEST")
    engine.update_raw(T0, 1.0, 1.0, 1.0, 1.0, 3e-130)
    row = engine.update_raw(T0 + DAY_NS, 1.0, 1.0, 1.0, 1.0, 5e-130)
    assert row[FEATURE_NAMES.index("volume_z_20")] == pytest.approx(1 / math.sqrt(2), rel=1e-12)


@pytest.mark.parametrize("step", [1e-10, 1e-13, 1e-15])
def test_values_at_the_bound_a_few_ulps_apart_keep_their_z_scores(step):
    """At 1e-150 a difference of a few ulps squared to a subnormal or to 0: two different volumes
    got a z-score of 0, and online and batch differed by 4e-8. The bound keeps such squares normal."""
    low = MIN_PRICE
    engine = FeatureEngine("TEST")
    engine.update_raw(T0, low, low, low, low, low)
    c = low * (1 + step)
    row = engine.update_raw(T0 + DAY_NS, c, c, c, c, c)
    for name in ("volume_z_20", "zscore_20"):
        assert row[FEATURE_NAMES.index(name)] == pytest.approx(1 / math.sqrt(2), rel=1e-6), name
    with pytest.raises(DataError, match="invalid bar"):
        engine.update_raw(T0 + 2 * DAY_NS, 1.0, 1.0, 1.0, 1.0, 1e-140)


@pytest.mark.parametrize("year", [1600, 2300])
def test_a_time_outside_64_bit_nanoseconds_is_rejected_before_any_change(year):
    engine = FeatureEngine("TEST")
    engine.update_raw(T0, 100.0, 100.0, 100.0, 100.0, 1.0)
    before = engine.to_bytes()
    # Bar refuses such a time itself; the engine checks again for a bar built without validation
    bar = Bar.model_construct(
        symbol="TEST", timestamp=datetime(year, 1, 2, tzinfo=UTC), open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0
    )
    with pytest.raises(DataError, match="64-bit nanoseconds"):
        engine.update(bar)
    assert engine.to_bytes() == before


def test_timestamp_must_be_integer_nanoseconds():
    engine = FeatureEngine("TEST")
    with pytest.raises(DataError, match="integer nanoseconds"):
        engine.update_raw(1.7e18, 100.0, 100.0, 100.0, 100.0, 1.0)
    engine.update_raw(np.int64(T0), 100.0, 100.0, 100.0, 100.0, 1.0)
    assert type(engine.last_timestamp_ns) is int
    json.dumps(engine.to_dict())


@pytest.mark.parametrize("symbol", ["", "spx", "A" * 30, None])
def test_engine_needs_a_valid_symbol(symbol):
    with pytest.raises(DataError, match="symbol"):
        FeatureEngine(symbol)


def test_bar_of_another_symbol_is_rejected():
    """The engine (a symbol's state) is the wrong one, not the bar: StateError, which the stage
    runner retries instead of dead-lettering (tests/unit/test_features_state_checks.py)."""
    engine = FeatureEngine("AAA")
    bar = Bar(symbol="BBB", timestamp=datetime(2024, 1, 2, tzinfo=UTC), open=1, high=1, low=1, close=1, volume=1)
    with pytest.raises(StateError, match="BBB"):
        engine.update(bar)


def test_compute_features_rejects_invalid_rows():
    n = 5
    ts = np.datetime64("2024-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    close = np.full(n, 10.0)
    low = close.copy()
    low[3] = 11.0
    series = BarSeries("TEST", ts, close, np.full(n, 12.0), low, close, np.ones(n))
    with pytest.raises(DataError, match="row 3"):
        compute_features(series)


# ---- persistence --------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [0, 1, 15, 60, 61, 125, 126, 127, WARMUP_BARS, 250])
@pytest.mark.parametrize("codec", ["bytes", "json"])
def test_round_trip_mid_stream_gives_identical_outputs(split, codec):
    bars = random_bars(400, seed=split)
    original = FeatureEngine("SPX")
    for b in bars[:split]:
        original.update_raw(*b)
    if codec == "bytes":
        restored = FeatureEngine.from_bytes(original.to_bytes())
    else:
        restored = FeatureEngine.from_dict(json.loads(json.dumps(original.to_dict(), allow_nan=False)))
    assert restored.last_timestamp_ns == original.last_timestamp_ns
    assert restored.warmup_remaining == original.warmup_remaining
    assert restored.to_dict() == original.to_dict()
    for b in bars[split:]:
        assert np.array_equal(restored.update_raw(*b), original.update_raw(*b))


def test_state_is_compact():
    engine = FeatureEngine("SPX")
    for b in random_bars(300):
        engine.update_raw(*b)
    assert len(engine.to_bytes()) < 2000  # 126 closes, 4 x 20-value windows, the averages


def _engine_bytes():
    engine = FeatureEngine("SPX")
    for b in random_bars(80):
        engine.update_raw(*b)
    return engine.to_bytes()


def test_any_flipped_byte_is_detected():
    data = _engine_bytes()
    for pos in range(0, len(data), 7):
        corrupted = bytearray(data)
        corrupted[pos] ^= 0x5A
        with pytest.raises(StateError):
            FeatureEngine.from_bytes(bytes(corrupted))


@pytest.mark.parametrize("data", [b"", b"ETFE", b"not a state at all, just text", b"\x00" * 1400])
def test_garbage_bytes_raise_state_error(data):
    with pytest.raises(StateError):
        FeatureEngine.from_bytes(data)


def test_truncated_bytes_raise_state_error():
    data = _engine_bytes()
    with pytest.raises(StateError):
        FeatureEngine.from_bytes(data[:-10])


def test_version_mismatch_raises_state_error():
    body = bytearray(_engine_bytes()[:-4])
    body[4] = 99  # version byte, with a valid checksum for the altered body
    data = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(FeatureStateVersionError, match="version 99"):
        FeatureEngine.from_bytes(data)
    d = FeatureEngine.from_bytes(_engine_bytes()).to_dict()
    d["version"] = 3
    with pytest.raises(StateError, match="version"):
        FeatureEngine.from_dict(d)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("closes"), "closes"),
        (lambda d: d["closes"].__setitem__(100, float("nan")), r"closes\[100\]"),
        (lambda d: d.__setitem__("closes", [1.0] * 3), "closes"),
        (lambda d: d["windows"]["gk"].__setitem__("pos", 20), "pos"),
        (lambda d: d["windows"].pop("volumes"), "volumes"),
        (lambda d: d.__setitem__("bars_seen", "80"), "bars_seen"),
        (lambda d: d.__setitem__("last_timestamp_ns", None), "last_timestamp_ns"),
        (lambda d: d.__setitem__("symbol", ""), "symbol"),
        (lambda d: d.__setitem__("windows", {**d["windows"], "gk": [1, 2]}), "malformed"),
        (lambda d: d.__setitem__("bars_seen", 5), "inconsistent with bars_seen"),
        (lambda d: d["closes"].__setitem__(5, 10**400), "closes.5.: an integer of 1329 bits is beyond a float"),
    ],
)
def test_malformed_dict_raises_state_error(mutate, message):
    d = FeatureEngine.from_bytes(_engine_bytes()).to_dict()
    mutate(d)
    with pytest.raises(StateError, match=message):
        FeatureEngine.from_dict(d)


def _state_after(n: int) -> dict:
    engine = FeatureEngine("SPX")
    for b in random_bars(n):
        engine.update_raw(*b)
    return engine.to_dict()


@pytest.mark.parametrize(("n", "edit", "match"), [
    (3, lambda d: d["closes"].__setitem__(0, 0.0), "closes"),  # the next bar divided by it
    (80, lambda d: d["closes"].__setitem__(17, -5.0), "closes"),
    (200, lambda d: d["closes"].__setitem__(120, 0.0), "closes"),  # in the drawdown's window
    (80, lambda d: d.__setitem__("ewma", [0.0, d["ewma"][1]]), "ewma"),  # no weight after 80 bars
    (80, lambda d: d.__setitem__("rsi", [-1.0, d["rsi"][1]]), "rsi"),
])
def test_a_state_the_engine_could_not_have_written_is_refused(n, edit, match):
    """Accepted, a zero close made every later bar of the symbol fail (ZeroDivisionError), so
    its stage retried the record for ever instead of falling back to its snapshot."""
    d = _state_after(n)
    FeatureEngine.from_dict(d)  # as written: fine
    edit(d)
    with pytest.raises(StateError, match=match):
        FeatureEngine.from_dict(d)
