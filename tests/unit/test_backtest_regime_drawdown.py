"""A regime's max drawdown is that of the wealth its periods alone compound to (docs/agents.md,
*Evaluation*): periods of other regimes between them are left out, so two losing BEAR spells with
a rally between them compound into one BEAR drawdown deeper than any fall of the real wealth.
The published specialty tables (the Conservative's BEAR and VOLATILE check) rest on this
definition; this test pins it."""

from __future__ import annotations

import numpy as np
import pytest
from ensemble_trader.backtest.engine import summarise
from ensemble_trader.backtest.metrics import max_drawdown


def test_a_regimes_drawdown_compounds_its_periods_with_the_others_left_out():
    r = np.array([-0.10] + [0.05] * 10 + [-0.10])  # BEAR -10 %, a ten-bar BULL rally, BEAR -10 % again
    labels = np.array(["BEAR"] + ["BULL"] * 10 + ["BEAR"])
    report = summarise(r, np.ones_like(r), 252.0, labels)
    assert report["by_regime"]["BEAR"]["max_drawdown"] == pytest.approx(1 - 0.9 * 0.9)  # 19 %
    assert report["by_regime"]["BEAR"]["max_drawdown"] == pytest.approx(max_drawdown(r[labels == "BEAR"]))
    assert report["overall"]["max_drawdown"] == pytest.approx(0.10)  # the real wealth never fell further
    assert report["by_regime"]["BULL"]["max_drawdown"] == 0.0
