"""The BTC history table of docs/regime.md is what `regime history` gives today.

Not a unit test: it fits the six-state BTC model on 12,000 hourly bars (32 EM restarts per
state count, in worker processes on every core: ~170 s on two) and reads the BTC bars of the shared data folder (skipped
without them)."""

from __future__ import annotations

from pathlib import Path

import pytest

REGIME_DOC = Path(__file__).resolve().parents[2] / "docs" / "regime.md"


def _table_rows(markdown_table: str) -> list[str]:
    return markdown_table.splitlines()[2:]  # past the header and the rule


@pytest.mark.slow
@pytest.mark.minutes
def test_the_btc_history_table_in_the_docs_is_what_the_code_gives():
    """`regime history` fits the BTC model (seed 0, 32 restarts per K, every core)."""
    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.domain.regime import RegimeDetector, label_series
    from ensemble_trader.marketdata import load_shared

    from training.regime.historical import BTC_EPISODES, BTC_TRAIN_BARS, episode_table, markdown
    from training.regime.train import fit_model

    try:
        btc = load_shared("btcusd_1h")
    except DataError as exc:
        pytest.skip(str(exc))
    _, model = fit_model([btc[:BTC_TRAIN_BARS]], seed=0)
    rows = episode_table(btc, label_series(RegimeDetector(model), btc), BTC_EPISODES)
    doc = REGIME_DOC.read_text(encoding="utf-8")
    for line in _table_rows(markdown(rows, "hours")):
        assert line in doc
