"""The refit's symbols are checked against the symbol pattern the bars carry (``SYMBOL_PATTERN``).

``{"symbols": ["spx"]}`` read no history rows (the stages key them by the upper-case symbol) and
failed as "needs at least 80 rows ... got 0", naming neither the field nor the value; the same
held for a symbol in ``ET_REGIME_SYMBOLS``. A ``detail.symbols`` that was present but falsy and
not a list (``0``, ``""``, ``{}``, ``False``) fell back to ``ET_REGIME_SYMBOLS`` silently.
"""

from __future__ import annotations

import pytest
from ensemble_trader.adapters.memory.fakes import MemoryEventBus, MemoryKeyValueStore, MemoryModelStore
from ensemble_trader.domain.errors import DataError
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.settings import get_settings

refit = load_module("regime", "refit")


class EmptyHistory(MemoryKeyValueStore):
    """A regime-history table without rows, which records whether it was read."""

    def __init__(self) -> None:
        super().__init__()
        self.queried: list[str] = []

    def query(self, table, key, value, limit=None, newest_first=False):
        self.queried.append(value)
        return []


@pytest.mark.parametrize("bad", ["spx", "Spx", "SPX\n", " SPX", "SP X", "^" + "A" * 24, "-SPX", "ÉTF"])
def test_a_symbol_off_the_pattern_is_refused_naming_the_field_and_the_value(bad):
    with pytest.raises(DataError) as info:
        refit.refit_options({"symbols": ["SPX", bad]})
    assert "detail.symbols" in str(info.value) and repr(bad) in str(info.value)
    assert "needs at least" not in str(info.value)


def test_the_run_fails_before_it_reads_history_or_loads_a_model():
    history = EmptyHistory()
    with pytest.raises(DataError, match=r"detail.symbols has 'spx'"):
        refit.run_refit(MemoryModelStore(), history, MemoryEventBus(), get_settings().models_dir / "regime",
                        {"symbols": ["spx"]})
    assert history.queried == []


def test_a_symbol_off_the_pattern_in_the_environment_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("ET_REGIME_SYMBOLS", "SPX, ixic")
    with pytest.raises(DataError, match=r"ET_REGIME_SYMBOLS has 'ixic'"):
        refit.refit_options({})


@pytest.mark.parametrize("bad", [0, "", {}, False, ()])
def test_a_detail_symbols_that_is_present_is_never_replaced_by_the_environment(bad, monkeypatch):
    monkeypatch.setenv("ET_REGIME_SYMBOLS", "SPX")
    with pytest.raises(DataError, match="detail.symbols="):
        refit.refit_options({"symbols": bad})


def test_symbols_of_every_form_the_pattern_takes_are_accepted(monkeypatch):
    symbols = ["SPX", "BRK.B", "BTC-USD", "^GSPC", "EUR/USD", "ES=F", "A" * 24]
    assert refit.refit_options({"symbols": symbols}) == (symbols, 2_000)
    monkeypatch.setenv("ET_REGIME_SYMBOLS", " BRK.B ,^GSPC")
    assert refit.refit_options({}) == (["BRK.B", "^GSPC"], 2_000)
