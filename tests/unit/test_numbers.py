"""The shared "a real number, not a bool" check (domain/numbers.py) and its three callers.

``backtest.metrics.checked_number``, the synthetic generator's ``_number`` and
``AgentPool.with_no_trade_bands`` each carried a copy of the check; they now call
:func:`real_number`, keeping their own messages. The caller tests here pin that each still refuses
through the shared check (a bool or numpy bool that Python would count as 1, text, None) with its
own message, and accepts numpy numbers.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from ensemble_trader.backtest.metrics import checked_number
from ensemble_trader.domain import agents, synthetic
from ensemble_trader.domain.agents import AgentPool
from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.numbers import is_real, real_number
from ensemble_trader.domain.synthetic import SCENARIOS, RegimeParams

AGENTS = Path(__file__).resolve().parents[2] / "layers" / "models" / "agents"


@pytest.mark.parametrize("value", [0, -3, 0.25, float("nan"), float("inf"), np.int8(-2), np.uint64(7),
                                   np.float32(0.5), np.float64(-1e300), fractions.Fraction(1, 4)])
def test_a_real_number_is_returned_as_a_float(value):
    number = real_number(value, lambda: pytest.fail("refused a real number"))
    assert type(number) is float
    assert number == float(value) or (number != number and value != value)  # NaN stays NaN
    assert is_real(value)


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_, "0.3", "", None, 1 + 0j, np.complex128(1),
                                   Decimal("0.5"), [0.1], np.array(0.1), np.array([0.1]), b"1"])
def test_anything_else_is_a_data_error_with_the_callers_message(value):
    assert not is_real(value)
    with pytest.raises(DataError, match=r"^band=.*: not a number$"):
        real_number(value, lambda: f"band={value!r}: not a number")


def test_the_message_is_built_only_for_a_refusal():
    calls = []

    def refusal() -> str:
        calls.append(1)
        return "refused"

    assert real_number(2, refusal) == 2.0 and calls == []
    with pytest.raises(DataError, match="^refused$"):
        real_number(True, refusal)
    assert calls == [1]


def test_an_int_beyond_a_float_is_an_infinity_of_its_sign_for_the_callers_range_check():
    assert real_number(10**400, lambda: "refused") == math.inf
    assert real_number(-(10**400), lambda: "refused") == -math.inf


def test_an_int_beyond_a_float_is_refused_by_value_by_the_generator_and_the_bands():
    """It used to raise a bare OverflowError from float() in both."""
    with pytest.raises(DataError, match=r"drift"):
        RegimeParams(drift=10**400, vol=0.01, dwell=20)
    with pytest.raises(DataError, match=r"no-trade bands must be in \[0, 2\] \(position units\), got .*inf"):
        AgentPool.load(AGENTS).with_no_trade_bands({"balanced": 10**400})


# -- the three callers: same messages, through the shared check ----------------------------------


def _counting(monkeypatch, module) -> list[object]:
    """Record the values ``module`` passes to real_number (the name it imported)."""
    seen: list[object] = []

    def spy(value: object, refusal):
        seen.append(value)
        return real_number(value, refusal)

    monkeypatch.setattr(module, "real_number", spy)
    return seen


@pytest.mark.parametrize(("value", "message"), [
    (True, "c must be a finite number, got True (a bool)"),
    (np.False_, "c must be a finite number, got False (a bool)"),  # numpy 2 reprs it as np.False_
    ("0.3", "c must be a finite number, got '0.3' (a str)"),
    (None, "c must be a finite number, got None"),
])
def test_checked_number_refuses_through_the_shared_check(value, message, monkeypatch):
    from ensemble_trader.backtest import metrics

    seen = _counting(monkeypatch, metrics)
    with pytest.raises(DataError) as err:
        checked_number("c", value)
    assert seen == [value]
    assert str(err.value).replace("np.False_", "False") == message


def test_checked_number_keeps_its_range_and_overflow_messages():
    assert checked_number("c", np.float32(0.5), 0.0, strict=True) == 0.5
    with pytest.raises(DataError, match=r"^periods_per_year must be a finite number > 0, got 0$"):
        checked_number("periods_per_year", 0, 0.0, strict=True)
    with pytest.raises(DataError, match=rf"^c must be a finite number >= 0, got {10**400}$"):
        checked_number("c", 10**400, 0.0)


def test_the_generators_parameters_are_checked_through_the_shared_check(monkeypatch):
    seen = _counting(monkeypatch, synthetic)
    with pytest.raises(DataError, match=re.escape("dwell=True: must be a number")):
        RegimeParams(drift=0.0, vol=0.01, dwell=True)
    assert True in seen
    with pytest.raises(DataError, match=re.escape("scenario 'easy': gap_scale=np.False_: must be a number")
                       + "|" + re.escape("scenario 'easy': gap_scale=False: must be a number")):
        dataclasses.replace(SCENARIOS["easy"], gap_scale=np.False_)
    assert RegimeParams(drift=np.float32(0.001), vol=np.float64(0.01), dwell=np.int64(20)).dwell == 20


def test_the_no_trade_bands_are_checked_through_the_shared_check(monkeypatch):
    pool = AgentPool.load(AGENTS)
    seen = _counting(monkeypatch, agents)
    with pytest.raises(DataError, match=r"^no-trade band of aggressive='0.3' is a str, not a number in \[0, 2\]"):
        pool.with_no_trade_bands({"balanced": np.float32(0.25), "aggressive": "0.3"})
    assert seen == [np.float32(0.25), "0.3"]
    banded = pool.with_no_trade_bands({"balanced": np.float32(0.25), "contrarian": 1})
    assert banded.manifest.agents["balanced"].no_trade_band == 0.25
    assert type(banded.manifest.agents["contrarian"].no_trade_band) is float


def test_an_exit_weight_beyond_a_float_is_refused_as_a_weight():
    """``math.isfinite`` of such an int raised a bare OverflowError."""
    assert not synthetic._is_weight(10**400)
    assert synthetic._is_weight(0) and synthetic._is_weight(np.float32(2.5))
    assert not synthetic._is_weight(True) and not synthetic._is_weight(-1e-9) and not synthetic._is_weight(math.inf)


@pytest.mark.parametrize("field", ["tail_df", "gap_scale", "volume_persistence"])
def test_a_scenario_field_beyond_a_float_is_refused_at_construction(field):
    """tail_df may be infinite (Gaussian shocks), so an int beyond a float passed the spec's check
    as inf and generation then raised a bare OverflowError."""
    with pytest.raises(DataError, match=rf"{field}=1000.*: beyond a float's range"):
        dataclasses.replace(SCENARIOS["easy"], **{field: 10**400})
