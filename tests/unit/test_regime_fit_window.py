"""``regime fit --start`` fits every bar of its window, reading the warm-up bars before it.

``fit_model`` cut each series to [start, end) before the estimator computed its features, so the
window's first 172 bars were spent on the feature warm-up (``--start 2016-06-01 --end
2017-01-01``: 0 usable bars of 149, with 4,380 bars of history before them), while the manifest's
``training_window`` claimed the whole window. The features now warm up on the bars before
``start`` (as the backtester computes them over the whole series and keeps the rows in the
window), and the manifest records the first and last row actually fitted.
"""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.features import WARMUP_BARS, compute_features
from ensemble_trader.domain.synthetic import generate

from training.regime.train import fit_model, with_warmup

SERIES = generate("easy", 1200, 5, symbol="SYNX").series
TS = [str(t)[:19] for t in SERIES.timestamp]


def _fit(series=(SERIES,), **window):
    return fit_model(list(series), seed=0, states=4, restarts=1, **window)


@pytest.mark.parametrize("first", [WARMUP_BARS - 1, 400])
def test_a_window_with_enough_history_before_it_is_fitted_whole(first):
    """``--start`` at least 172 bars into the series (the 173rd bar or later): every bar of the
    window is a fitted row, and none before it."""
    estimator, model = _fit(start=TS[first], end=TS[1000])
    assert estimator.n_samples_ == 1000 - first
    (window,) = model.info["training_window"]
    assert (window["fitted_start"], window["fitted_end"], window["fitted_bars"]) == (TS[first], TS[999], 1000 - first)
    # the bars read: the window and the warm-up bars before it
    assert (window["start"], window["end"], window["bars"]) == (TS[first - (WARMUP_BARS - 1)], TS[999], 1000 - first
                                                                + WARMUP_BARS - 1)
    assert model.info["n_samples"] == 1000 - first


def test_a_window_starting_too_early_in_the_series_loses_what_has_no_history():
    estimator, model = _fit(start=TS[100], end=TS[1000])
    assert estimator.n_samples_ == 1000 - (WARMUP_BARS - 1)
    assert model.info["training_window"][0]["fitted_start"] == TS[WARMUP_BARS - 1]


def test_the_fitted_rows_are_the_backtesters_rows_of_the_window():
    """The whole series' features, kept on [start, end): what ``backtest.engine.prepare`` evaluates."""
    given = with_warmup(SERIES, TS[500], TS[900])
    ready = compute_features(given)
    whole = compute_features(SERIES)
    np.testing.assert_array_equal(given.timestamp[ready.ready], SERIES.timestamp[500:900])
    np.testing.assert_allclose(ready.values[ready.ready], whole.values[500:900], rtol=0, atol=1e-3)


def test_without_a_window_the_whole_series_is_read_and_the_fitted_rows_recorded():
    estimator, model = _fit()
    (window,) = model.info["training_window"]
    assert (window["start"], window["end"], window["bars"]) == (TS[0], TS[-1], len(SERIES))
    assert (window["fitted_start"], window["fitted_end"]) == (TS[WARMUP_BARS - 1], TS[-1])
    assert window["fitted_bars"] == estimator.n_samples_ == len(SERIES) - (WARMUP_BARS - 1)


def test_a_series_with_no_bar_in_the_window_is_not_fitted_even_with_bars_before_it():
    early = SERIES[:600]  # ends before the window: its last bars would be the window's warm-up
    later = generate("easy", 1200, 6, symbol="LATER").series
    _, model = _fit((early, later), start=TS[700], end=TS[1100])
    assert [w["symbol"] for w in model.info["training_window"]] == ["LATER"]
    with pytest.raises(DataError, match=r"no bars in the training window"):
        _fit((early,), start=TS[700], end=TS[1100])
