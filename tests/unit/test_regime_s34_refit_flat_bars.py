"""Flat bars (no range: read at the log floor) in the refit's lookback re-estimate only a state the
starting model already places on the floor. Before, 2 % of such rows pulled the committed model's
BULL state onto the floor (mean -4.31 standard units), the refit gained far more than the publish
threshold, and the published model labelled no ordinary bar BULL."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.domain.features import FEATURE_NAMES, replay_features
from ensemble_trader.domain.regime import RegimeDetector, RegimeModel
from ensemble_trader.domain.regime_fit import _floor_rows_and_states, refit
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.runtime.settings import get_settings

RV, RET = FEATURE_NAMES.index("range_vol_1"), FEATURE_NAMES.index("ret_1")


@pytest.fixture(scope="module")
def committed() -> RegimeModel:
    return RegimeModel.load(get_settings().models_dir / "regime")


@pytest.fixture(scope="module")
def lookback():
    matrix = replay_features(generate("realistic", 2_200, 11, symbol="S").series)
    return matrix.values[matrix.ready][-2_000:]


@pytest.fixture(scope="module")
def clean_run():
    matrix = replay_features(generate("realistic", 3_000, 21, symbol="T").series)
    return matrix.values, matrix.ready


def floor_z(model: RegimeModel) -> float:
    f = model.features[0]
    return (np.log(model.log_floor) - f.center) / f.scale


@pytest.mark.parametrize("share", [0.02, 0.05, 0.2])
def test_flat_rows_do_not_pull_a_named_state_onto_the_floor(committed, lookback, clean_run, share):
    rows = lookback.copy()
    flat = np.random.default_rng(0).random(len(rows)) < share
    rows[flat, RV] = 0.0
    rows[flat, RET] = 0.0
    assert not _floor_rows_and_states(committed, rows[:, [RV]])[1].any()  # no state of the pin is there
    result = refit(committed, rows[:, [RV]], rows[:, RET], rows[:, RV])
    assert result.model.means[:, 0].min() > floor_z(committed) + 3  # before: a state at the floor (-4.31)
    values, ready = clean_run
    labels = RegimeDetector(result.model).label_matrix(values, FEATURE_NAMES, ready)
    shares = np.bincount(labels.regime[ready], minlength=4) / ready.sum()
    assert shares.min() > 0.05  # every regime is still reported on ordinary bars (before: one at 0)


def test_a_state_the_starting_model_has_on_the_floor_is_still_refit_from_its_rows(committed):
    """A fit that gave the flat rows a state of their own (as the BTC fit does) keeps it: that
    state alone is re-estimated from them."""
    floor = floor_z(committed)
    means = committed.means.copy()
    means[2, 0] = floor
    covariances = committed.covariances.copy()
    covariances[2] = 4e-5
    model = RegimeModel(committed.features, committed.start_prob, committed.transmat, means, covariances,
                        committed.covariance_type, committed.state_regimes, log_floor=committed.log_floor)
    rows, states = _floor_rows_and_states(model, np.array([[0.0], [0.01]]))
    assert rows.tolist() == [True, False] and states.tolist() == [False, False, True, False]
