"""The regime fit's EM restarts in worker processes give the model fitted in one process."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.marketdata import load_bars

from training.regime.estimator import RegimeHMM


@pytest.fixture(scope="module")
def bars():
    return load_bars("synth:realistic:5:1500")


def _fit(bars, n_jobs):
    return RegimeHMM(n_states=(4, 5), n_restarts=3, random_state=11, n_jobs=n_jobs).fit(bars)


def test_the_model_fitted_in_two_processes_is_the_one_fitted_in_one(bars):
    one, two = _fit(bars, 1), _fit(bars, 2)
    assert one.candidates_ == two.candidates_  # every state count's best restart and its BIC
    assert one.n_states_ == two.n_states_
    for name in ("means_", "covars_", "transmat_", "startprob_"):
        np.testing.assert_array_equal(getattr(one.hmm_, name), getattr(two.hmm_, name), err_msg=name)
    assert one.model_.version == two.model_.version


@pytest.mark.parametrize("n_jobs", [0, True, 1.5, "2"])
def test_a_number_of_jobs_that_is_not_one_is_refused_before_any_em(bars, n_jobs):
    with pytest.raises(ValueError, match="n_jobs"):
        RegimeHMM(n_restarts=1, n_jobs=n_jobs).fit(bars)
