"""Two meta_agent writers race on the local stack (moto server + a real Redis): what the FIFO
queue kept for every intent id is what the ``decisions`` table holds; rows are keyed by UTC time,
so a newest-first Query of a local-time feed finds its last bar across a DST change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore
from ensemble_trader.backtest.ensemble import run_pipeline
from ensemble_trader.domain.meta_agent import MetaAgentConfig
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.runtime.meta_agent_stage import build_runner
from ensemble_trader.runtime.regime_registry import history_key
from ensemble_trader.runtime.stage import StageStats

from tests.integration.test_meta_agent_lambda import drain_fifo, event
from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline():
    series = generate("realistic", 110, seed=5, symbol="METAX").series
    return run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model()))


@pytest.fixture()
def stack(clean_stack):
    return clean_stack.stack


def _runner(stack):
    r = build_runner(stack.settings, RuleAgents(), config=MetaAgentConfig.create())
    r.stats = StageStats()
    return r


def test_after_a_lost_snapshot_race_the_queue_and_the_decisions_table_agree(stack, pipeline) -> None:
    """B passes its version check at v; A then commits bars 70..89; B applies 90..109 from the
    stale state, sends, loses the conditional snapshot write and retries from A's snapshot. The
    retry computes other targets for 90..109 under the same intent ids; FIFO deduplication
    keeps B's first messages, and the table must hold those, not the retry's."""
    states = pipeline.market_states
    a, b = _runner(stack), _runner(stack)
    assert a.process(event(states[:70])) == {"batchItemFailures": []}
    real = b.snapshots.get_versions
    fired = []

    def get_versions(table, keys):
        out = real(table, keys)
        if not fired:
            fired.append(1)
            assert a.process(event(states[70:90], 70)) == {"batchItemFailures": []}
        return out

    b.snapshots.get_versions = get_versions
    assert len(b.process(event(states[90:110], 90))["batchItemFailures"]) == 20
    assert b.process(event(states[90:110], 90)) == {"batchItemFailures": []}

    messages = drain_fifo(stack)
    assert len(messages) == len(states)
    store = DynamoKeyValueStore(settings=stack.settings)
    rows = {r["intent_id"]: r for r in store.query("decisions", "symbol", "METAX")}
    assert len(rows) == len(states)
    for m in messages:
        intent = OrderIntent.parse(m["Body"])
        row = rows[intent.intent_id]
        assert m["Body"] == row["intent"]
        assert row["timestamp"] == history_key(intent.timestamp)
        assert row["target_position"] == intent.target_position and row["agent_weights"] == intent.agent_weights
        assert row["regime_model_version"] == intent.explanation_detail.get("regime_model_version")


def test_a_local_time_feed_sorts_by_time_across_the_autumn_dst_change(stack, pipeline) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 10, 26, 20, 0, tzinfo=UTC)

    def at(s, i):
        t = (start + timedelta(hours=i)).astimezone(berlin)
        bar = s.features.bar.model_copy(update={"timestamp": t})
        return s.model_copy(update={"features": s.features.model_copy(update={"bar": bar}),
                                    "regime": s.regime.model_copy(update={"timestamp": t})})

    states = [at(s, i) for i, s in enumerate(pipeline.market_states[:8])]
    assert _runner(stack).process(event(states)) == {"batchItemFailures": []}
    store = DynamoKeyValueStore(settings=stack.settings)
    rows = store.query("decisions", "symbol", "METAX")
    assert [r["timestamp"] for r in rows] == [history_key(s.timestamp) for s in states]
    newest = store.query("decisions", "symbol", "METAX", limit=1, newest_first=True)[0]
    assert newest["timestamp"] == "2024-10-27T03:00:00+00:00"
    assert OrderIntent.model_validate_json(newest["intent"]).timestamp.isoformat() == "2024-10-27T04:00:00+01:00"
