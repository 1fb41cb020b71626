"""The meta_agent Lambda against the local stack (moto server + a real Redis).

The agents are the rule-based stand-ins of the unit tests (no trained artifact needed); every
AWS hop is real: Kinesis-shaped events in, SQS FIFO out, DynamoDB decisions and conditional
bandit-state snapshots, EventBridge (copied to the stack's events tap), Redis state.
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.backtest.ensemble import run_meta, run_pipeline
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentState
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.local.functions import load_module
from ensemble_trader.local.stack import EVENTS_TAP
from ensemble_trader.runtime.meta_agent_stage import build_runner
from ensemble_trader.runtime.stage import StageStats

from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

pytestmark = pytest.mark.slow


@pytest.fixture()
def stack(clean_stack):
    return clean_stack.stack


@pytest.fixture(scope="module")
def handler():
    return load_module("meta_agent")


@pytest.fixture(scope="module")
def pipeline():
    series = generate("realistic", WARMUP_BARS + 60, seed=5, symbol="METAX").series  # 60 ready bars
    return run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model()))


def event(states, first: int = 0):
    return kinesis_event([
        kinesis_record(s.model_dump_json().encode(), partition_key=s.symbol,
                       sequence_number=f"{first + i:020d}", stream="market-state")
        for i, s in enumerate(states)
    ])


def runner(handler, stack, symbol_cache=None):
    r = build_runner(stack.settings, RuleAgents(), metrics=handler.metrics, config=MetaAgentConfig.create())
    r.stats = StageStats()
    if symbol_cache is not None:
        r.cache = symbol_cache(r.cache)
    return r


def drain_fifo(stack) -> list[dict]:
    sqs = stack.client("sqs")
    url = stack.queue_url("order-intents")
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        out.extend(got)
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])


def snapshot(stack, symbol: str) -> dict:
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore

    return DynamoKeyValueStore(settings=stack.settings).get_item("bandit-state", {"pk": f"meta_agent#{symbol}"})


def test_intents_decisions_events_and_redelivery(stack, handler, pipeline) -> None:
    r = runner(handler, stack)
    states = pipeline.market_states
    for start in range(0, len(states), 40):
        assert r.process(event(states[start : start + 40], start)) == {"batchItemFailures": []}
    expected = run_meta(pipeline, MetaAgentConfig.create()).intents
    messages = drain_fifo(stack)
    assert len(messages) == len(expected)
    for m, want in zip(messages, expected, strict=True):
        assert m["Attributes"]["MessageGroupId"] == "METAX"
        assert m["Attributes"]["MessageDeduplicationId"] == want.intent_id
        assert OrderIntent.parse(m["Body"]) == want
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore

    rows = DynamoKeyValueStore(settings=stack.settings)
    last = expected[-1]
    row = rows.get_item("decisions", {"symbol": "METAX", "timestamp": last.timestamp.isoformat()})
    assert row["intent_id"] == last.intent_id and row["explanation"] == last.explanation
    assert json.loads(row["explanation_detail"])["chosen"] == last.explanation_detail["chosen"]
    item = snapshot(stack, "METAX")
    assert item["symbol"] == "METAX" and MetaAgentState.from_bytes(item["state"]).version == len(states)

    from ensemble_trader.local.reports.meta_agent import summarize

    text = summarize(stack)
    assert f"{len(states):>8,}  rows in the decisions table" in text
    assert "METAX:" in text and "regret in" in text and "ALL" in text

    taps = stack.read_queue(EVENTS_TAP)
    switched = [t for t in taps if t.get("detail-type") == "AgentSwitched"]
    assert len(switched) == sum(1 for i in expected if i.explanation_detail["switched"])

    # redelivery of the last batch: a no-op (nothing sent, snapshot version unchanged)
    version = item["version"]
    assert r.process(event(states[80:], 80)) == {"batchItemFailures": []}
    assert r.stats.duplicates == len(states) - 80
    assert drain_fifo(stack) == []
    assert snapshot(stack, "METAX")["version"] == version


class StaleOnce:
    """A cache whose first read returns what another container saw before the last write."""

    def __init__(self, inner, stale: dict[str, bytes]):
        self.inner, self.stale = inner, dict(stale)

    def get(self, key):
        return self.get_many([key])[0]

    def get_many(self, keys):
        if self.stale:
            blobs = [self.stale.pop(k, None) for k in keys]
            return [b if b is not None else self.inner.get(k) for b, k in zip(blobs, keys, strict=True)]
        return self.inner.get_many(keys)

    def set_many(self, items):
        self.inner.set_many(items)

    def delete(self, *keys):
        self.inner.delete(*keys)


def test_two_concurrent_writers_cannot_lose_an_update(stack, handler, pipeline) -> None:
    states = [s.model_copy(update={
        "features": s.features.model_copy(update={"bar": s.features.bar.model_copy(update={"symbol": "RACE"})}),
        "regime": s.regime.model_copy(update={"symbol": "RACE"}),
    }) for s in pipeline.market_states[:60]]
    a = runner(handler, stack)
    assert a.process(event(states[:40])) == {"batchItemFailures": []}
    key = a.step.key("RACE")
    stale = a.cache.get(key)  # what container B read ...
    assert a.process(event(states[40:50], 40)) == {"batchItemFailures": []}  # ... before A wrote v2
    b = runner(handler, stack, symbol_cache=lambda inner: StaleOnce(inner, {key: stale}))
    stale_before = b.stats.stale_cache
    # B's cached state is behind the snapshot: the version check (BatchGetItem on DynamoDB)
    # replaces it with the snapshot before B computes anything (a write racing past that check
    # loses its conditional put and is retried: tests/unit/test_stage_runner.py)
    assert b.process(event(states[50:60], 50)) == {"batchItemFailures": []}
    assert b.stats.stale_cache == stale_before + 1
    item = snapshot(stack, "RACE")
    assert item["version"] == 3
    assert MetaAgentState.from_bytes(item["state"]).version == 60  # every bar applied once
    drain_fifo(stack)
