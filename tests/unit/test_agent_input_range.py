"""Agent inputs beyond float32's range: the pool computes in float32, so a finite feature of
1e300 would become infinity in the cast; it is refused before, naming the feature and its value."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.domain.agents import AgentPool
from ensemble_trader.domain.errors import DataError

FLOAT32_MAX = float(np.finfo(np.float32).max)
AGENTS = Path(__file__).resolve().parents[2] / "layers" / "models" / "agents"


@pytest.fixture(scope="module")
def pool():
    return AgentPool.load(AGENTS)


def test_a_finite_feature_beyond_float32_is_refused_by_name_and_value(pool) -> None:
    features = np.zeros(len(pool.feature_names))
    features[2] = 1e300
    positions = np.zeros(len(pool.names))
    name = pool.feature_names[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in the cast: refused before it
        with pytest.raises(DataError, match=rf"feature {name}=1e\+300 is beyond float32's range") as err:
            pool.act(features, positions)
    assert "warming up" not in str(err.value)
    features[2] = -FLOAT32_MAX  # the largest magnitude float32 holds is fine
    assert np.isfinite(pool.act(features, positions)).all()


def test_non_finite_inputs_are_named_with_the_warm_up_hint(pool) -> None:
    features = np.zeros(len(pool.feature_names))
    features[0] = np.nan
    positions = np.zeros(len(pool.names))
    positions[1] = np.inf
    with pytest.raises(DataError, match="warming up") as err:
        pool.act(features, positions)
    text = str(err.value)
    assert f"feature {pool.feature_names[0]}=nan is not finite" in text
    assert f"{pool.names[1]}'s position=inf is not finite" in text


def test_a_batch_names_the_row(pool) -> None:
    features = np.zeros((3, len(pool.feature_names)))
    features[1, -1] = -2e39
    with pytest.raises(DataError, match=rf"feature {pool.feature_names[-1]} \(row 1\)=-2e\+39 is beyond"):
        pool.act_batch(features, np.zeros((3, len(pool.names))))
