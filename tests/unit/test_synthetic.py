"""Synthetic regime-switching generator: determinism, OHLC consistency, regime statistics."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import (
    REGIME_NAMES,
    SCENARIOS,
    RegimeParams,
    ScenarioSpec,
    bar_times,
    generate,
    parse_freq,
    regime_codes,
)

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def test_required_presets_exist() -> None:
    assert {"easy", "realistic", "hard", "mean_reverting"} <= set(SCENARIOS)


def test_same_seed_same_arrays_different_seed_different() -> None:
    a = generate("realistic", 3000, 11)
    b = generate("realistic", 3000, 11)
    c = generate("realistic", 3000, 12)
    for col in COLUMNS:
        assert getattr(a.series, col).tobytes() == getattr(b.series, col).tobytes()
    assert a.regimes.tobytes() == b.regimes.tobytes()
    assert not np.array_equal(a.series.close, c.series.close)
    assert not np.array_equal(a.regimes, c.regimes)


def test_labels_timestamps_and_metadata() -> None:
    d = generate("easy", 50, 2, symbol="ABC", start="2021-06-01T09:30:00", freq="15min")
    assert d.series.symbol == "ABC"
    assert d.scenario == "easy" and d.seed == 2
    assert d.regimes.shape == (50,)
    assert set(d.regimes.tolist()) <= set(REGIME_NAMES)
    assert d.series.timestamp[0] == np.datetime64("2021-06-01T09:30:00", "ns")
    assert np.all(np.diff(d.series.timestamp) == np.timedelta64(15, "m"))
    np.testing.assert_array_equal(REGIME_NAMES_ARRAY[d.regime_codes], d.regimes)


REGIME_NAMES_ARRAY = np.array(REGIME_NAMES)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ohlc_consistent_on_100k_bars(scenario: str) -> None:
    s = generate(scenario, 100_000, 7, freq="1h").series
    for col in ("open", "high", "low", "close"):
        x = getattr(s, col)
        assert np.all(np.isfinite(x)) and np.all(x > 0)
    assert np.all(s.low <= np.minimum(s.open, s.close))
    assert np.all(s.high >= np.maximum(s.open, s.close))
    assert np.all(s.volume >= 0) and np.all(np.isfinite(s.volume))
    # open = previous close plus a small gap: never far from it
    gap = np.abs(np.log(s.open[1:] / s.close[:-1]))
    assert np.percentile(gap, 99) < 0.05
    # the bars pass the Bar model too (a sample, the model is slow)
    for i in range(0, 100_000, 9_973):
        s.bar(i)


def _dwell_runs(codes: np.ndarray) -> list[np.ndarray]:
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(codes)]])
    lengths = np.diff(bounds)
    starts = bounds[:-1]
    # drop the first and last (censored) runs
    return [lengths[1:-1][codes[starts[1:-1]] == k] for k in range(4)]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_regime_shares_and_dwell_near_the_spec(scenario: str) -> None:
    spec = SCENARIOS[scenario]
    d = generate(scenario, 60_000, 3, freq="1h")
    shares = np.array([d.shares()[r] for r in REGIME_NAMES])
    np.testing.assert_allclose(shares, spec.stationary(), atol=0.06)
    runs = _dwell_runs(d.regime_codes)
    for k, expected in enumerate(spec.expected_dwell()):
        assert len(runs[k]) > 20
        assert abs(runs[k].mean() / expected - 1.0) < 0.3, (REGIME_NAMES[k], runs[k].mean(), expected)


def test_transition_matrix_is_stochastic_and_persistent() -> None:
    for spec in SCENARIOS.values():
        p = spec.transition_matrix
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
        assert np.all(np.diag(p) > 0.85)
        pi = spec.stationary()
        np.testing.assert_allclose(pi @ p, pi, atol=1e-12)
    assert 20 <= SCENARIOS["realistic"].expected_dwell().min()
    assert SCENARIOS["realistic"].expected_dwell().max() <= 60


def _per_regime(d, values: np.ndarray) -> dict[str, np.ndarray]:
    codes = d.regime_codes[1:]
    return {name: values[codes == k] for k, name in enumerate(REGIME_NAMES)}


def test_regimes_carry_their_character() -> None:
    d = generate("realistic", 80_000, 5, freq="1h")
    s = d.series
    log_ret = np.diff(np.log(s.close))
    by = _per_regime(d, log_ret)
    assert by["BULL"].mean() > 0 > by["BEAR"].mean()
    sd = {k: v.std() for k, v in by.items()}
    assert sd["SIDEWAYS"] < sd["BULL"] < sd["BEAR"] < sd["VOLATILE"]
    # the bar's range carries the regime's volatility (Parkinson estimator within 25% of close-to-close)
    park = _per_regime(d, np.log(s.high / s.low)[1:] ** 2)
    for name, x in park.items():
        estimate = np.sqrt(x.mean() / (4 * np.log(2)))
        assert 0.75 < estimate / sd[name] < 1.25, name
    # volume is higher in VOLATILE and BEAR than in SIDEWAYS
    vol = _per_regime(d, s.volume[1:])
    assert vol["VOLATILE"].mean() > vol["BEAR"].mean() > vol["SIDEWAYS"].mean()


@pytest.mark.parametrize("scenario", ["easy", "realistic"])
def test_labels_sit_on_the_bars_their_regime_moved(scenario: str) -> None:
    """At each switch, the return into the new regime's first bar has that regime's volatility
    (its variance starts at the regime's own on entry) and the return into the old regime's last
    bar the old one's; labels shifted one bar either way put each on the wrong side."""
    d = generate(scenario, 100_000, 11, freq="1h")
    r = np.diff(np.log(d.series.close))
    c = d.regime_codes
    vol = np.array([p.vol for p in SCENARIOS[scenario].regimes])
    t = np.flatnonzero(c[1:] != c[:-1]) + 1  # first bar of each new regime
    t = t[t >= 2]
    first_new, last_old = r[t - 1], r[t - 2]  # returns into bar t and into bar t - 1

    def mean_z2(returns: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean((returns / vol[labels]) ** 2))

    assert 0.85 < mean_z2(first_new, c[t]) < 1.2
    assert 0.85 < mean_z2(last_old, c[t - 1]) < 1.2
    assert mean_z2(first_new, c[t - 1]) > 2.5  # labels one bar late
    assert mean_z2(last_old, c[t]) > 2.5  # labels one bar early


def test_sideways_mean_reverts_so_a_contrarian_profits() -> None:
    d = generate("mean_reverting", 50_000, 8, freq="1h")
    log_ret = np.diff(np.log(d.series.close))
    sideways = d.regime_codes[1:] == REGIME_NAMES.index("SIDEWAYS")
    both = sideways[1:] & sideways[:-1]
    r_prev, r_next = log_ret[:-1][both], log_ret[1:][both]
    assert float(np.corrcoef(r_prev, r_next)[0, 1]) < -0.15
    # fading yesterday's move earns money on average
    assert float(np.mean(-np.sign(r_prev) * r_next)) > 0
    trend = d.regime_codes[1:] == REGIME_NAMES.index("BULL")
    both = trend[1:] & trend[:-1]
    assert abs(float(np.corrcoef(log_ret[:-1][both], log_ret[1:][both])[0, 1])) < 0.05


def test_volatile_regime_has_volatility_clustering() -> None:
    d = generate("realistic", 80_000, 4, freq="1h")
    log_ret = np.diff(np.log(d.series.close))
    volatile = d.regime_codes[1:] == REGIME_NAMES.index("VOLATILE")
    both = volatile[1:] & volatile[:-1]
    sq = log_ret**2
    assert float(np.corrcoef(sq[:-1][both], sq[1:][both])[0, 1]) > 0.05


def test_100k_bars_are_fast_enough_to_generate() -> None:
    """Not a timing assertion: just that 100k bars work (the time is in docs/data.md)."""
    d = generate("hard", 100_000, 1, freq="1min")
    assert len(d.series) == 100_000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scenario": "nope"}, "unknown scenario 'nope'"),
        ({"n_bars": 0}, "n_bars=0"),
        ({"seed": -1}, "seed=-1"),
        ({"symbol": "bad sym"}, "symbol='bad sym'"),
        ({"freq": "1 week"}, "freq='1 week'"),
        ({"start": "yesterday"}, "start='yesterday'"),
        ({"start": "1600-01-01"}, "outside the times kept"),
        ({"n_bars": 200_000, "freq": "1D"}, "2262"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"scenario": "easy", "n_bars": 10, "seed": 0, **kwargs}
    with pytest.raises(DataError, match=match):
        generate(**args)


def test_parse_freq() -> None:
    assert parse_freq("1D") == np.timedelta64(1, "D")
    assert parse_freq("4h") == np.timedelta64(4, "h")
    assert parse_freq("15min") == np.timedelta64(15, "m")
    assert parse_freq("30s") == np.timedelta64(30, "s")


def _one_regime_spec(**garch: float) -> ScenarioSpec:
    """Four identical regimes that practically never switch: isolates the volatility model."""
    params = RegimeParams(drift=0.0, vol=0.01, dwell=1e9, **garch)
    return ScenarioSpec(
        name="test",
        description="one regime",
        regimes=(params, params, params, params),
        exit_weights=((0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0)),
    )


def _down_up_variance_ratio(monkeypatch: pytest.MonkeyPatch, **garch: float) -> float:
    monkeypatch.setitem(SCENARIOS, "test", _one_regime_spec(**garch))
    log_ret = np.diff(np.log(generate("test", 100_000, 1, freq="1h").series.close))
    prev, nxt = log_ret[:-1], log_ret[1:] ** 2
    return float(nxt[prev < 0].mean() / nxt[prev > 0].mean())


def test_garch_gamma_gives_a_leverage_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Down moves raise the next bar's variance more than up moves only with the GJR term."""
    symmetric = _down_up_variance_ratio(monkeypatch, garch_alpha=0.1, garch_beta=0.8)
    leveraged = _down_up_variance_ratio(monkeypatch, garch_alpha=0.02, garch_beta=0.8, garch_gamma=0.16)
    assert abs(symmetric - 1.0) < 0.05
    # theory for the leveraged case: (1 + gamma/2) / (1 - gamma/2) = 1.17
    assert leveraged > 1.1


def test_business_day_frequency_skips_weekends() -> None:
    stamps = bar_times("2024-01-05T21:00:00", "1B", 4)  # a Friday
    expected = ["2024-01-05T21:00:00", "2024-01-08T21:00:00", "2024-01-09T21:00:00", "2024-01-10T21:00:00"]
    np.testing.assert_array_equal(stamps, np.array(expected, dtype="datetime64[ns]"))
    d = generate("easy", 500, 1, freq="1B")
    weekday = (d.series.timestamp.astype("datetime64[D]").astype(np.int64) + 3) % 7  # Monday = 0
    assert weekday.max() <= 4


def test_regime_codes_rejects_unknown_labels() -> None:
    np.testing.assert_array_equal(regime_codes(np.array(["BEAR", "BULL"])), [1, 0])
    with pytest.raises(DataError, match="unknown regime label 'CRASH'"):
        regime_codes(np.array(["BULL", "CRASH"]))


def test_spec_validation() -> None:
    with pytest.raises(DataError, match="alpha \\+ beta \\+ gamma/2 < 1"):
        RegimeParams(drift=0.0, vol=0.01, dwell=10, garch_alpha=0.5, garch_beta=0.6)
    with pytest.raises(DataError, match="dwell"):
        RegimeParams(drift=0.0, vol=0.01, dwell=0.5)
    good = RegimeParams(drift=0.0, vol=0.01, dwell=10)
    with pytest.raises(DataError, match="somewhere to go"):
        ScenarioSpec(
            name="x",
            description="",
            regimes=(good, good, good, good),
            exit_weights=((0, 0, 0, 0), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0)),
        )


LIMIT = np.datetime64("2262-04-11", "ns")


@pytest.mark.parametrize(
    ("start", "freq", "n"),
    [
        ("2000-01-03", "213504D", 5),  # 213,504 days in ns wrapped to 25 minutes
        ("2000-01-03", "106752D", 2),  # wrapped to a negative step
        ("2000-01-03", "99999999999999999999D", 10),  # did not fit an int64: OverflowError
        ("2000-01-03", "99999999999999999999B", 10),
        ("2000-01-03", "1B", 70_000),  # business days past 2262 wrapped to 1677
        ("2000-01-03", "1B", 100_000),
        ("2000-01-03", "9999999999B", 3),
        ("2000-01-03", "1s", 10**30),
    ],
)
def test_bars_past_the_int64_nanosecond_limit_are_refused(start: str, freq: str, n: int) -> None:
    with pytest.raises(DataError, match=r"would end after 2262-04-11.*at most [\d,]+ bars? of"):
        bar_times(start, freq, n)


@pytest.mark.parametrize(("start", "freq"), [("2000-01-03", "1B"), ("2000-01-03", "1D"), ("2262-04-08T12:00", "1B"), ("2000-01-03T10:30", "7h")])
def test_the_count_of_bars_said_to_fit_does_fit(start: str, freq: str) -> None:
    """The error names how many bars fit; that many are accepted and end before the limit."""
    with pytest.raises(DataError) as info:
        bar_times(start, freq, 10**9)
    fit = int(str(info.value).split("at most ")[1].split(" bars")[0].replace(",", ""))
    stamps = bar_times(start, freq, fit)
    assert len(stamps) == fit and stamps[-1] < LIMIT and np.all(np.diff(stamps) > np.timedelta64(0))
    with pytest.raises(DataError, match="would end after 2262-04-11"):
        bar_times(start, freq, fit + 1)


def test_one_bar_takes_any_freq_and_generate_refuses_the_overflow() -> None:
    assert bar_times("2000-01-03", "99999999999999999999D", 1)[0] == np.datetime64("2000-01-03", "ns")
    with pytest.raises(DataError, match="would end after 2262-04-11"):
        generate("easy", 5, 0, freq="213504D")
    with pytest.raises(DataError, match="at most 68,424 bars"):
        generate("easy", 100_000, 0, freq="1B")


def test_the_limit_message_gives_no_advice_the_caller_cannot_follow() -> None:
    """synth:... specs (regime fit --bars, regime evaluate --train-bars) cannot set a freq."""
    with pytest.raises(DataError) as info:
        generate("easy", 100_000, 0)
    assert "freq" not in str(info.value).split("would end")[1]
    assert "at most 95,792 bars of 1D fit from 2000-01-03" in str(info.value)
