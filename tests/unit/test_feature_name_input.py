"""A feature name DynamoDB cannot hold as an attribute name is refused where FeatureVector is parsed.

An empty name passed every stage: the regime stage stored its ``regime-history`` row with an
empty key in the ``features`` map, which the table then could not give back (a refit or a
history query of the symbol failed). Names of whitespace only were taken too. Now the
FeatureVector (and a MarketState holding one) is an InvalidMessageError naming ``values`` and
the name, so each stage dead-letters that record alone with the reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from ensemble_trader.domain.errors import InvalidMessageError
from ensemble_trader.domain.features import FEATURE_NAMES, FeatureEngine
from ensemble_trader.domain.models import Bar, FeatureVector, MarketState
from ensemble_trader.domain.synthetic import generate

BAR = Bar(symbol="SYN", timestamp=datetime(2024, 1, 2, tzinfo=UTC), open=10, high=11, low=9, close=10, volume=100)


def vector(values: dict[str, float]) -> dict:
    return {"bar": BAR.model_dump(mode="json"), "values": values, "warmup_remaining": 0}


@pytest.mark.parametrize("name", ["", " ", "\t\n", "\u00a0", "\u3000"])
def test_an_empty_or_blank_feature_name_is_refused_naming_values_and_the_name(name):
    with pytest.raises(InvalidMessageError) as info:
        FeatureVector.parse(vector({"ret_1": 0.01, name: 1.0}))
    (problem,) = info.value.problems
    assert problem.field == "values"
    assert f"feature name {name!r}" in problem.message
    # from the JSON a stream carries, too
    with pytest.raises(InvalidMessageError, match="feature name"):
        FeatureVector.parse(json.dumps(vector({name: 1.0})))


def test_a_name_over_dynamodbs_attribute_name_limit_is_refused():
    long = "é" * 32_768  # 65,536 bytes in UTF-8: DynamoDB takes names under 64 KB
    with pytest.raises(InvalidMessageError, match="65,536 bytes"):
        FeatureVector.parse(vector({long: 1.0}))
    assert FeatureVector.parse(vector({"é" * 32_767: 1.0}))


def test_a_market_state_holding_such_a_vector_is_refused_too():
    engine = FeatureEngine("SYN")
    state = None
    for bar in generate("easy", 2, 1, symbol="SYN").series.bars():
        state = engine.update(bar)
    good = json.loads(state.model_dump_json())
    regime = {"symbol": "SYN", "timestamp": good["bar"]["timestamp"], "probabilities": [0.25] * 4,
              "regime": "BULL", "confidence": 0.25, "bars_in_regime": 0, "model_version": "v"}
    assert MarketState.parse({"features": good, "regime": regime})
    good["values"][""] = 1.0
    with pytest.raises(InvalidMessageError, match=r"features.values=.*feature name ''"):
        MarketState.parse({"features": good, "regime": regime})


def test_the_engines_names_and_unusual_but_storable_names_are_taken():
    assert FeatureVector.parse(vector({name: 0.5 for name in FEATURE_NAMES})).values.keys() == set(FEATURE_NAMES)
    assert FeatureVector.parse(vector({"é": 1.0, "a b": 2.0, "x.y": 3.0})).values == {"é": 1.0, "a b": 2.0, "x.y": 3.0}
