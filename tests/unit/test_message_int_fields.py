"""A message's integer fields take an int or integral text, never a boolean or grouped digits.

pydantic's lax int read ``true`` as 1 and ``"1_000"`` as 1000: a FeatureVector from Kinesis with
``"warmup_remaining": false`` was taken as ready, and a RegimeChanged with
``"bars_since_previous_change": true`` as one bar. The float fields already refused both (through
``_number_input``); the integer fields now go through it too.
"""

from __future__ import annotations

import inspect
import json

import pytest
from ensemble_trader.domain import meta_agent, models, orders, regime
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.models import FeatureVector, MarketState, Message, RegimeEstimate
from ensemble_trader.domain.regime import RegimeChanged
from pydantic import TypeAdapter, ValidationError

T0 = "2024-01-02T00:00:00Z"
BAR = {"symbol": "SPX", "timestamp": T0, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 100.0}


def features(warmup_remaining=0) -> dict:
    return {"bar": BAR, "values": {"ret_1": 0.01}, "warmup_remaining": warmup_remaining, "feature_version": "2"}


def estimate(bars_in_regime=4) -> dict:
    return {"symbol": "SPX", "timestamp": T0, "probabilities": [0.7, 0.1, 0.1, 0.1], "regime": "BULL",
            "confidence": 0.7, "bars_in_regime": bars_in_regime, "model_version": "m1"}


def change(bars_since_previous_change=12) -> dict:
    return {"event_id": "e" * 32, "symbol": "SPX", "from_regime": "BULL", "to_regime": "BEAR", "confidence": 0.6,
            "timestamp": T0, "bars_since_previous_change": bars_since_previous_change, "model_version": "m1"}


CASES = [
    # (model, build(value), path of the field in the problem, attribute reading the value back)
    (FeatureVector, features, "warmup_remaining", lambda m: m.warmup_remaining),
    (RegimeEstimate, estimate, "bars_in_regime", lambda m: m.bars_in_regime),
    (RegimeChanged, change, "bars_since_previous_change", lambda m: m.bars_since_previous_change),
    (MarketState, lambda v: {"features": features(v), "regime": estimate()}, "features.warmup_remaining",
     lambda m: m.features.warmup_remaining),
    (MarketState, lambda v: {"features": features(), "regime": estimate(v)}, "regime.bars_in_regime",
     lambda m: m.regime.bars_in_regime),
]
IDS = [f"{model.__name__}.{path}" for model, _, path, _ in CASES]


@pytest.mark.parametrize(("model", "build", "path", "read"), CASES, ids=IDS)
@pytest.mark.parametrize(("value", "says"), [
    (True, "not a boolean"),
    (False, "not a boolean"),
    ("1_000", "no '_' digit separators"),
    ("1_0", "no '_' digit separators"),
])
def test_an_int_field_refuses_booleans_and_grouped_digits(model, build, path, read, value, says):
    data = build(value)
    for kind, payload in (("dict", data), ("json", json.dumps(data))):
        with pytest.raises(InvalidMessageError) as info:
            model.parse(payload)
        assert [p.field for p in info.value.problems] == [path], kind
        problem = info.value.problems[0]
        assert problem.value == value, kind
        assert says in problem.message, kind
        assert path.rsplit(".", 1)[-1] in str(info.value), kind


@pytest.mark.parametrize(("model", "build", "path", "read"), CASES, ids=IDS)
@pytest.mark.parametrize(("value", "expected"), [(3, 3), (0, 0), ("3", 3), (3.0, 3), ("3.0", 3)])
def test_an_int_field_still_takes_ints_and_integral_text(model, build, path, read, value, expected):
    data = build(value)
    for payload in (data, json.dumps(data)):
        got = read(model.parse(payload))
        assert got == expected and type(got) is int


@pytest.mark.parametrize(("model", "build", "path", "read"), CASES, ids=IDS)
@pytest.mark.parametrize("value", [-1, 3.5, "three", None])
def test_an_int_field_still_refuses_what_it_refused(model, build, path, read, value):
    with pytest.raises(InvalidMessageError) as info:
        model.parse(build(value))
    assert [p.field for p in info.value.problems] == [path]


def test_regime_changed_create_refuses_a_boolean_count():
    from datetime import UTC, datetime

    from ensemble_trader.domain.models import Regime

    with pytest.raises(ValidationError, match="boolean"):
        RegimeChanged.create("SPX", Regime.BULL, Regime.BEAR, 0.6, datetime(2024, 1, 2, tzinfo=UTC), True, "m1")


def _int_fields():
    """Every int field of a boundary message model in the domain's message modules."""
    for module in (models, regime, orders, meta_agent):
        for name, cls in vars(module).items():
            if not (inspect.isclass(cls) and issubclass(cls, Message) and cls.__module__ == module.__name__):
                continue
            for field_name, info in cls.model_fields.items():
                if info.annotation in (int, int | None):
                    yield f"{name}.{field_name}", info


INT_FIELDS = dict(_int_fields())


def test_the_int_fields_checked_are_the_ones_known():
    """A new int field of a message model shows up here: give it the same input check."""
    assert sorted(INT_FIELDS) == [
        "FeatureVector.warmup_remaining",
        "RegimeChanged.bars_since_previous_change",
        "RegimeEstimate.bars_in_regime",
    ]


@pytest.mark.parametrize("field", sorted(INT_FIELDS))
def test_every_int_field_of_a_message_refuses_booleans_and_grouped_digits(field):
    adapter = TypeAdapter(INT_FIELDS[field].rebuild_annotation())
    for value in (True, False, "1_000"):
        with pytest.raises(ValidationError):
            adapter.validate_python(value)
    assert adapter.validate_python("7") == 7
