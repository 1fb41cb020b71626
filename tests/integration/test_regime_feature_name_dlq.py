"""A feature vector with an empty feature name, through the regime Lambda on the local stack.

Before, the record was applied: its regime-history row held an empty key in its ``features`` map,
which the table (moto, as the audit found) then refused to give back, so the symbol's history
could no longer be read (the refit's source). Now the record is dead-lettered with a reason
naming ``values`` and the name, and the other records of the batch go on.
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.domain.synthetic import generate


@pytest.mark.parametrize("name", ["", "  "])
def test_an_unstorable_feature_name_is_dead_lettered_and_the_batch_goes_on(clean_stack, name):
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore

    engine = FeatureEngine("SYNA")
    vectors = [engine.update(bar) for bar in generate("easy", WARMUP_BARS + 3, 1, symbol="SYNA").series.bars()]
    records = [(v.symbol, v.model_dump_json().encode()) for v in vectors]
    broken = json.loads(records[WARMUP_BARS][1])  # the first ready bar
    broken["values"][name] = 1.0
    records[WARMUP_BARS] = ("SYNA", json.dumps(broken).encode())
    esm = clean_stack.emulator(["regime"])
    clean_stack.put_records("features", records)
    esm.run_until_drained()

    assert len(clean_stack.new_records("market-state")) == len(vectors) - 1
    (letter,) = clean_stack.stack.read_queue("regime-dlq")
    assert letter["source"] == "regime"
    assert "invalid FeatureVector: values=" in letter["reason"]
    assert f"feature name {name!r} is empty or only whitespace" in letter["reason"]
    rows = DynamoKeyValueStore(settings=clean_stack.stack.settings).query("regime-history", "symbol", "SYNA")
    assert len(rows) == len(vectors) - 1 and all(name not in row["features"] for row in rows)
