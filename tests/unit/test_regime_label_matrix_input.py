"""``RegimeDetector.label_matrix`` checks its input as ``step`` checks a ready bar's values.

A negative value of a feature the model takes the logarithm of was read through the log's floor
(as the quietest bar) where step refuses it; a NaN raised ModelArtifactError (bad data, not a
bad artifact); values no hidden state explains raised a bare StateError; an ``observed`` mask of
the wrong length and 1-D values raised IndexError/ValueError. Each case below failed so.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from ensemble_trader.domain.errors import DataError, InvalidMessageError
from ensemble_trader.domain.models import Bar, FeatureVector, Regime
from ensemble_trader.domain.regime import RegimeDetector
from ensemble_trader.domain.regime_model import FeatureSpec, RegimeModel

B, R, S, V = Regime.BULL, Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE
NAMES = ["vol", "ret"]
MODEL = RegimeModel(
    (FeatureSpec("vol", "log", -4.0, 1.0), FeatureSpec("ret", "identity", 0.0, 0.01)),
    np.full(4, 0.25),
    np.array([[0.97 if i == j else 0.01 for j in range(4)] for i in range(4)]),
    np.array([[0.0, 1.0], [0.5, -1.0], [-1.0, 0.0], [1.5, 0.0]]),
    np.tile(np.eye(2), (4, 1, 1)),
    "full",
    (B, R, S, V),
)
DETECTOR = RegimeDetector(MODEL)
GOOD = [0.02, 0.001]


def step_error(values: dict[str, float]) -> InvalidMessageError:
    bar = Bar(symbol="SYN", timestamp=datetime(2024, 1, 2, tzinfo=UTC), open=10, high=11, low=9, close=10,
              volume=100)
    with pytest.raises(InvalidMessageError) as info:
        DETECTOR.step(None, FeatureVector(bar=bar, values=values, warmup_remaining=0))
    return info.value


def matrix_error(values: list[list[float]], observed: list[bool] | None = None) -> InvalidMessageError:
    with pytest.raises(InvalidMessageError) as info:
        DETECTOR.label_matrix(np.array(values), NAMES, None if observed is None else np.array(observed))
    return info.value


def test_a_negative_log_feature_is_refused_with_steps_error_naming_the_row():
    expected = step_error({"vol": -0.5, "ret": 0.001})
    error = matrix_error([GOOD, [-0.5, 0.001], GOOD])
    assert error.problems == expected.problems
    assert str(error) == str(expected).replace("invalid FeatureVector:", "invalid FeatureVector at row 1:")
    assert "values.vol=-0.5: is below 0" in str(error)
    # a negative return (a feature not logged) is a value like any other, for both
    labels = DETECTOR.label_matrix(np.array([GOOD, [0.02, -0.03]]), NAMES)
    assert labels.observed.all() and labels.regime.shape == (2,)


@pytest.mark.parametrize(("column", "value"), [(1, math.nan), (1, math.inf), (0, -math.inf), (0, math.nan)])
def test_a_value_that_is_not_finite_is_refused_as_the_feature_vector_refuses_it(column, value):
    row = list(GOOD)
    row[column] = value
    error = matrix_error([GOOD, GOOD, row])
    name = NAMES[column]
    # the message itself refuses the same value (a FeatureVector's values are finite)
    bar = Bar(symbol="SYN", timestamp=datetime(2024, 1, 2, tzinfo=UTC), open=10, high=11, low=9, close=10,
              volume=100)
    with pytest.raises(InvalidMessageError, match=f"values.{name}=.*must be finite"):
        FeatureVector.parse({"bar": bar.model_dump(mode="json"), "values": dict(zip(NAMES, row, strict=True)),
                             "warmup_remaining": 0})
    assert [(p.field, p.message) for p in error.problems] == [(f"values.{name}", "must be finite")]
    assert str(error).startswith(f"invalid FeatureVector at row 2: values.{name}=")


def test_rows_not_observed_are_not_checked_and_the_first_bad_observed_row_is_named():
    error = matrix_error([[math.nan, -1.0], [-0.5, 0.0], [-0.7, 0.0]], observed=[False, False, True])
    assert str(error).startswith("invalid FeatureVector at row 2: values.vol=-0.7: is below 0")


def test_values_no_hidden_state_explains_are_refused_with_steps_error():
    expected = step_error({"vol": 0.02, "ret": 1e300})
    error = matrix_error([GOOD, [0.02, 1e300]])
    assert error.problems == expected.problems
    assert "no regime of model" in str(error) and str(error).startswith("invalid FeatureVector at row 1: values=")


@pytest.mark.parametrize("observed", [[True], [True] * 5, [[True, True, True]]])
def test_an_observed_mask_not_one_flag_per_row_is_a_data_error_naming_the_shapes(observed):
    shape = re.escape(str(np.array(observed).shape))
    with pytest.raises(DataError, match=rf"observed of shape {shape}: expected \(3,\), one flag per row"):
        DETECTOR.label_matrix(np.array([GOOD] * 3), NAMES, np.array(observed))


@pytest.mark.parametrize(
    ("values", "shape"),
    [(GOOD, r"\(2,\)"), ([[0.02]] * 3, r"\(3, 1\)"), ([[GOOD] * 2] * 3, r"\(3, 2, 2\)")],
)
def test_values_not_a_row_per_bar_and_a_column_per_name_are_a_data_error_naming_the_shape(values, shape):
    with pytest.raises(DataError, match=rf"values of shape {shape}: expected \(n, 2\)"):
        DETECTOR.label_matrix(np.array(values), NAMES)
