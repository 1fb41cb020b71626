"""Inputs of the agents that are not real numbers: a bool, text, None, a complex number, a dict.

The project's rule (``checked_number``) is that they are refused, not converted. AgentPool took
``"0.1"`` as 0.1, ``True`` as 1.0 and ``0.01+5j`` as 0.01 (the imaginary part dropped with a
warning); ``"x"`` raised a bare ValueError and a dict a bare TypeError.
``with_no_trade_bands({"balanced": True})`` gave a band of 1.0, and ``TradingEnv(leverage=True)``
/ ``(no_trade_band=True)`` a leverage or band of 1.0. Each is now a DataError naming the input and
its value. Each test failed on the code before the fix.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.backtest.engine import prepare
from ensemble_trader.domain.agents import AgentPool
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.synthetic import generate

from training.agents.env import TradingEnv
from training.agents.rewards import make_reward

AGENTS = Path(__file__).resolve().parents[2] / "layers" / "models" / "agents"


@pytest.fixture(scope="module")
def pool() -> AgentPool:
    return AgentPool.load(AGENTS)


@pytest.fixture(scope="module")
def inputs(pool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    return rng.normal(0.0, 0.02, len(pool.feature_names)), np.zeros(len(pool.names))


# -- arrays whose dtype is not a number: refused by the dtype ------------------------------------


@pytest.mark.parametrize(("make", "what"), [
    (lambda f: np.ones(f.shape, dtype=bool), r"a bool array \(dtype bool\)"),
    (lambda f: f + 5j, r"a complex array \(dtype complex128\)"),
    (lambda f: f.astype(str), r"a text array \(dtype <U"),
])
@pytest.mark.parametrize("batch", [False, True])
def test_feature_arrays_of_bools_complex_numbers_or_text_are_refused(pool, inputs, make, what, batch):
    features, positions = inputs
    bad = make(features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the complex cast warned, and went on
        with pytest.raises(DataError, match=rf"^features must be real numbers \(an int or float array\), got {what}"):
            if batch:
                pool.act_batch(bad[None, :], positions[None, :])
            else:
                pool.act(bad, positions)


def test_a_bool_positions_array_is_refused_naming_positions(pool, inputs):
    features, positions = inputs
    with pytest.raises(DataError, match=r"^positions must be real numbers .* a bool array"):
        pool.act(features, positions.astype(bool))


# -- lists and object arrays: every element is checked -------------------------------------------


@pytest.mark.parametrize(("value", "shown"), [
    ("0.1", "'0.1' is a str"),
    ("x", "'x' is a str"),
    (True, "True is a bool"),
    (np.True_, "np.True_ is a bool"),
    (None, "None is None"),
    (0.01 + 5j, r"\(0.01\+5j\) is a complex"),
])
def test_a_non_number_in_a_feature_list_is_refused_naming_the_feature(pool, inputs, value, shown):
    features, positions = inputs
    row = features.tolist()
    row[3] = value
    name = pool.feature_names[3]
    with pytest.raises(DataError, match=rf"^features\[3\] \({name}\)={shown}, not a real number"):
        pool.act(row, positions)
    with pytest.raises(DataError, match=rf"^features\[0, 3\] \({name}\)={shown}, not a real number"):
        pool.act_batch([features.tolist(), row][::-1], np.zeros((2, len(pool.names))))


def test_numbers_in_a_list_are_taken_and_a_bool_among_them_is_not(pool, inputs):
    """Python and numpy ints and floats in a list decide as the float64 array does; a True among
    them (which numpy would make 1.0 in a float array) is refused."""
    features, positions = inputs
    expected = pool.act(features, positions)
    mixed = [np.float32(x) if i % 3 == 0 else float(x) for i, x in enumerate(features)]
    np.testing.assert_allclose(pool.act(mixed, [0, 0, 0, 0]), expected, atol=1e-6)
    np.testing.assert_array_equal(pool.act(features.astype(np.float32), positions.astype(np.int64)),
                                  pool.act(features.astype(np.float32).astype(np.float64), positions))
    with pytest.raises(DataError, match=rf"^positions\[2\] \({pool.names[2]}\)=True is a bool"):
        pool.act(features, [0.0, 0.0, True, 0.0])


def test_a_dict_of_features_is_refused_as_a_dict(pool, inputs):
    features, positions = inputs
    as_dict = dict(zip(pool.feature_names, features.tolist(), strict=True))
    with pytest.raises(DataError, match=r"^features=\{'ret_1': .* is a dict, not a real number"):
        pool.act(as_dict, positions)


def test_rows_of_different_lengths_are_a_data_error(pool, inputs):
    features, _ = inputs
    rows = [features.tolist(), features.tolist()[:-1]]
    with pytest.raises(DataError, match=r"^features must be a rectangular array of real numbers, but features\[0\]"):
        pool.act_batch(rows, np.zeros((2, len(pool.names))))


def test_an_integer_beyond_float64_is_refused_by_name_not_overflowed(pool, inputs):
    features, positions = inputs
    row = features.tolist()
    row[-1] = 10**400
    with pytest.raises(DataError, match=rf"features\[12\] \({pool.feature_names[-1]}\)=1000.* is beyond float32's range"):
        pool.act(row, positions)


# -- no-trade bands and the training environment -------------------------------------------------


@pytest.mark.parametrize(("band", "shown"), [(True, "True is a bool"), ("0.3", "'0.3' is a str"),
                                             ("x", "'x' is a str"), (None, "None is None")])
def test_a_no_trade_band_that_is_not_a_number_is_refused_naming_the_agent(pool, band, shown):
    with pytest.raises(DataError, match=rf"^no-trade band of balanced={shown}, not a number in \[0, 2\]"):
        pool.with_no_trade_bands({"balanced": band})


@pytest.fixture(scope="module")
def series():
    return prepare(generate("realistic", 400, seed=3).series)


@pytest.mark.parametrize(("setting", "message"), [
    ({"leverage": True}, r"leverage must be a finite number > 0, got True \(a bool\)"),
    ({"leverage": "2"}, r"leverage must be a finite number > 0, got '2' \(a str\)"),
    ({"leverage": float("inf")}, r"leverage must be a finite number > 0, got inf"),
    ({"no_trade_band": True}, r"no_trade_band must be a finite number >= 0, got True \(a bool\)"),
    ({"no_trade_band": "0.1"}, r"no_trade_band must be a finite number >= 0, got '0.1' \(a str\)"),
    ({"episode_length": True}, r"episode_length must be a whole number >= 1, got True \(a bool\)"),
    ({"episode_length": 2.5}, r"episode_length must be a whole number >= 1, got 2.5 \(a float\)"),
])
def test_the_environment_refuses_bools_and_text_as_its_settings(series, setting, message):
    with pytest.raises(DataError, match=rf"^{message}"):
        TradingEnv([series], make_reward("balanced"), **setting)
