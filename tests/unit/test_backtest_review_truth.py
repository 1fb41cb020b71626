"""``align_truth`` keeps a truth file's labels whole, so a label the report does not know is
refused where the labels are read (it was cut to 8 characters: "VOLATILE?" became "VOLATILE" and
passed), and refuses times and labels of different lengths with a DataError giving both counts
(a bare ValueError from zip)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from ensemble_trader.backtest.engine import align_truth, period_regimes, prepare
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import generate


@pytest.mark.parametrize("label", ["VOLATILE?", "SIDEWAYS_", "BULLBEARISH"])
def test_a_label_longer_than_eight_characters_is_kept_whole_and_refused(label):
    data = generate("easy", 50, seed=1)
    labels = align_truth(data.series, data.series.timestamp, np.array([label] * 50, dtype=object))
    assert set(labels.tolist()) == {label}
    with pytest.raises(DataError, match=re.escape(f"unknown regime labels [{label!r}]")):
        period_regimes(labels)


def test_an_unknown_long_label_among_known_ones_is_refused_by_the_report():
    data = generate("easy", 400, seed=1)
    truth = data.regimes.astype(object)
    truth[250] = "VOLATILE?"
    labels = align_truth(data.series, data.series.timestamp, truth)
    assert labels[250] == "VOLATILE?" and labels[:250].tolist() == data.regimes[:250].tolist()
    with pytest.raises(DataError, match=re.escape("unknown regime labels ['VOLATILE?']")):
        period_regimes(prepare(data.series, labels).regimes)


@pytest.mark.parametrize(("times", "labels"), [(10, 9), (9, 10), (0, 3)])
def test_times_and_labels_of_different_lengths_are_refused_with_both_counts(times, labels):
    data = generate("easy", 50, seed=1)
    with pytest.raises(DataError, match=re.escape(f"the truth file has {times} times but {labels} regime labels")):
        align_truth(data.series, data.series.timestamp[:times], np.array(["BULL"] * labels))


def test_known_labels_come_back_as_before():
    data = generate("easy", 100, seed=1)
    labels = align_truth(data.series, data.series.timestamp, list(data.regimes))
    assert labels.tolist() == data.regimes.tolist()
    assert labels.dtype.kind == "U"
