"""A feature the regime model reads, missing from ``label_matrix``'s columns, is bad input.

``step`` refuses a FeatureVector lacking a feature of the model with an InvalidMessageError (the
record is dead-lettered); ``label_matrix`` raised a ModelArtifactError for the same fault, as if
the artifact were broken. Both now raise InvalidMessageError naming the field and the missing
feature.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from ensemble_trader.domain.errors import InvalidMessageError, ModelArtifactError
from ensemble_trader.domain.models import Bar, FeatureVector
from ensemble_trader.domain.regime import RegimeDetector

from tests.unit.test_regime_label_matrix_input import MODEL  # vol (log) and ret, four regimes

DETECTOR = RegimeDetector(MODEL)


def test_a_missing_column_raises_the_error_step_raises_for_a_missing_feature():
    bar = Bar(symbol="SYN", timestamp=datetime(2024, 1, 2, tzinfo=UTC), open=10, high=11, low=9, close=10,
              volume=100)
    with pytest.raises(InvalidMessageError):
        DETECTOR.step(None, FeatureVector(bar=bar, values={"ret": 0.001, "other": 1.0}, warmup_remaining=0))
    with pytest.raises(InvalidMessageError) as info:
        DETECTOR.label_matrix(np.array([[0.001, 1.0]]), ["ret", "other"])
    assert not isinstance(info.value, ModelArtifactError)
    (problem,) = info.value.problems
    assert problem.field == "feature_names" and problem.value == ["ret", "other"]
    assert f"lacks ['vol'], which regime model {MODEL.version} reads" in problem.message
    assert str(info.value).startswith("invalid feature matrix: feature_names=['ret', 'other']: lacks ['vol']")


def test_every_missing_column_is_named_and_the_order_of_the_columns_does_not_matter():
    with pytest.raises(InvalidMessageError, match=r"lacks \['ret', 'vol'\]"):
        DETECTOR.label_matrix(np.array([[1.0]]), ["other"])
    swapped = DETECTOR.label_matrix(np.array([[0.001, 0.02]]), ["ret", "vol"])
    assert (swapped.regime == DETECTOR.label_matrix(np.array([[0.02, 0.001]]), ["vol", "ret"]).regime).all()


@pytest.mark.parametrize("names", [["vol", "ret", "vol"], ["vol", "ret", "other", "other"]])
def test_a_column_named_twice_is_refused_not_resolved_to_the_first(names):
    """``names.index`` used to pick the first of two ``vol`` columns silently."""
    values = np.tile([0.02, 0.001, 0.5, 0.5][: len(names)], (3, 1))
    with pytest.raises(InvalidMessageError, match=r"more than once") as info:
        DETECTOR.label_matrix(values, names)
    (problem,) = info.value.problems
    assert problem.field == "feature_names"
    assert DETECTOR.label_matrix(values[:, :2], ["vol", "ret"]).regime.shape == (3,)
