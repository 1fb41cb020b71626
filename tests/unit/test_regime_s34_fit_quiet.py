"""`regime fit` no longer prints hmmlearn's "Model is not converging. Current: ... is not greater
than ..." for an EM step that lowers the log-likelihood (expected with the covariance prior and
floors; the best restart is kept), and leaves hmmlearn's logger as it found it."""

from __future__ import annotations

import logging

import numpy as np

from training.regime.estimator import _fit_restart


class _SteppingDown:
    """An hmm whose fit logs what hmmlearn's convergence monitor logs on a step down."""

    startprob_ = transmat_ = means_ = covars_ = np.ones(2)

    def fit(self, z, lengths):
        logging.getLogger("hmmlearn.base").warning("Model is not converging.  Current: -2.0 is not greater than -1.0.")

    def score(self, z, lengths):
        return -1.0


def test_a_restart_that_steps_down_logs_nothing(caplog):
    monitor_log = logging.getLogger("hmmlearn.base")
    before = monitor_log.level
    with caplog.at_level(logging.WARNING):
        assert _fit_restart(_SteppingDown(), np.zeros((3, 1)), [3]) == -1.0
    assert "not converging" not in caplog.text
    assert monitor_log.level == before
