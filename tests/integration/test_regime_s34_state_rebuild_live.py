"""The regime Lambda rebuilds a symbol whose stored state cannot be read from its regime-history
rows (moto's DynamoDB query, real Redis), instead of failing its records until an operator
rebuilds the symbol."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.domain.models import MarketState
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.runtime.stage import stage_stats

N_BARS = WARMUP_BARS + 300
CUT = WARMUP_BARS + 200


@pytest.fixture(scope="module")
def vectors():
    engine = FeatureEngine("SYNR")
    return [engine.update(bar) for bar in generate("realistic", N_BARS, 5, symbol="SYNR").series.bars()]


def run(clean_stack, vectors, damage: bool):
    stack = clean_stack.stack
    esm = clean_stack.emulator(["regime"])
    clean_stack.put_records("features", vectors[:CUT])
    esm.run_until_drained()
    if damage:  # the snapshot cannot be decoded and the cached copy is gone
        stack.client("dynamodb").update_item(
            TableName=stack.name("stage-state"),
            Key={"pk": {"S": "regime"}, "sk": {"S": "SYNR"}},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":s": {"B": b"{not json"}},
        )
        stack.redis_client().delete(f"{stack.stage}:regime:SYNR")
    clean_stack.put_records("features", vectors[CUT:])
    esm.run_until_drained()
    states = [MarketState.parse(body) for _, body in clean_stack.new_records("market-state")]
    events = [e["detail"] for e in stack.published_events() if e.get("detail-type") == "RegimeChanged"]
    return states, events, stack.read_queue("regime-dlq")


def test_an_unreadable_snapshot_is_rebuilt_and_the_outputs_are_those_of_an_intact_run(clean_stack, vectors, caplog):
    intact, intact_events, _ = run(clean_stack, vectors, damage=False)
    from tests.conftest import fresh_session

    session = fresh_session(clean_stack.stack)
    with caplog.at_level(logging.WARNING):
        rebuilt, rebuilt_events, letters = run(session, vectors, damage=True)
    assert letters == []
    assert stage_stats("regime").restarted == 1
    assert [(s.timestamp, s.regime.regime, s.regime.bars_in_regime) for s in rebuilt] == [
        (s.timestamp, s.regime.regime, s.regime.bars_in_regime) for s in intact]
    np.testing.assert_allclose([s.regime.probabilities for s in rebuilt], [s.regime.probabilities for s in intact],
                               rtol=0, atol=1e-12)
    assert [e["event_id"] for e in rebuilt_events] == [e["event_id"] for e in intact_events]
    assert f"rebuilt from {CUT} regime-history rows" in caplog.text and "stored state refused" in caplog.text
