"""``regime history`` shows the BTC fit's progress on a terminal.

The BTC model fit takes ~4 minutes, and ``run_history`` called ``fit_model`` without
``progress``: on a terminal the command printed nothing until its final tables (``regime fit``
draws a progress bar there). The CLI now passes whether stderr is a terminal through
``run_history`` to ``fit_model``.
"""

from __future__ import annotations

import io
import sys

import pytest
from ensemble_trader.domain.regime import RegimeModel
from ensemble_trader.domain.synthetic import generate


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture()
def history(monkeypatch):
    """``regime history`` with a fake BTC data set and a fit that records its ``progress``."""
    import ensemble_trader.marketdata as marketdata
    from ensemble_trader.cli.regime import default_model_dir

    from training.regime import historical
    from training.regime import train as regime_train

    seen: list[bool] = []
    committed = RegimeModel.load(default_model_dir())

    def fit_model(series, *, progress=False, **kw):
        seen.append(progress)
        return None, committed

    monkeypatch.setattr(regime_train, "fit_model", fit_model)
    monkeypatch.setattr(marketdata, "load_shared", lambda name: generate("easy", 400, 1, symbol="BTCUSD").series)
    monkeypatch.setattr(historical, "plot", lambda series, labels, path, *a, **k: path)  # no PNGs
    return seen


@pytest.mark.parametrize(("stderr", "expected"), [(_Terminal, True), (_Pipe, False)])
def test_the_btc_fit_draws_its_progress_when_stderr_is_a_terminal(history, monkeypatch, tmp_path, stderr, expected):
    from ensemble_trader.cli import main

    monkeypatch.setattr(sys, "stderr", stderr())
    assert main(["regime", "history", "--out", str(tmp_path)]) == 0
    assert history == [expected]


def test_run_history_passes_progress_to_the_fit(history, tmp_path):
    from ensemble_trader.cli.regime import default_model_dir

    from training.regime.historical import run_history

    run_history(default_model_dir(), tmp_path, progress=True)
    run_history(default_model_dir(), tmp_path)
    assert history == [True, False]
