"""Disaster recovery, the local part of docs/runbook.md: a cache wiped mid-run changes nothing.

The same bars are replayed twice through the whole pipeline on the local stack (Kinesis and SQS
event-source mappings over moto, a real redis-server, the real handlers): once uninterrupted, and
once with ``FLUSHALL`` between the two halves of the replay — a lost ElastiCache. The stage
runners must rebuild every symbol's state from the DynamoDB snapshots (features, regime,
bandit state) and produce exactly the outputs of the uninterrupted run: the same feature vectors,
market states, order intents and decision rows.

The meta_agent runs its real stage wiring (``runtime.meta_agent_stage.build_runner``, with its
handler module's metrics) and stage runner with four small rule agents
(:class:`MomentumRules`) in place of the trained ONNX set: recovery is about where state lives,
and the test should not depend on which model set is committed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
from ensemble_trader.cli.feed import replay_bars
from ensemble_trader.domain.features import FEATURE_NAMES
from ensemble_trader.marketdata import load_arch

# Every stage that keeps hot state in the cache. The orders stage keeps none (DynamoDB only) and
# its client order ids derive from the intents, so equal intents mean equal orders.
PIPELINE = ["features", "regime", "meta_agent"]
BARS_PER_SYMBOL = 100
# Fields that do not come from the data: when a row was written (and a decision's TTL).
NOT_FROM_DATA = {"decided_at", "expires_at", "updated_at"}


class MomentumRules:
    """Four deterministic agents with the AgentPool interface: targets from trend and z-score."""

    names = ("conservative", "aggressive", "balanced", "contrarian")
    version = "dr-rules-1"
    feature_names = FEATURE_NAMES
    feature_version = "1"

    def act(self, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
        f = dict(zip(FEATURE_NAMES, np.asarray(features, dtype=np.float64), strict=True))
        trend, z = f["trend_10_50"], f["zscore_20"]
        return np.array(
            [
                0.5 * np.sign(trend),
                np.clip(trend * 40.0, -2.0, 2.0),
                np.clip(trend * 20.0, -1.0, 1.0),
                np.clip(-z / 2, -1.0, 1.0),
            ]
        )


def _meta_agent_handler(stack):
    from ensemble_trader.local.functions import load_module
    from ensemble_trader.runtime.meta_agent_stage import build_runner

    module = load_module("meta_agent", fresh=True)
    runner = build_runner(stack.settings, MomentumRules(), metrics=module.metrics)

    def handler(event, context):
        return runner.process(event)

    return handler


def _series():
    return [
        load_arch("sp500")[3000 : 3000 + BARS_PER_SYMBOL],
        load_arch("nasdaq")[3000 : 3000 + BARS_PER_SYMBOL],
    ]


def _scan(stack, logical: str) -> list[dict]:
    from boto3.dynamodb.types import Binary, TypeDeserializer

    def encode(value):
        return bytes(value.value).hex() if isinstance(value, Binary) else str(value)

    plain = TypeDeserializer()
    items = []
    for page in stack.client("dynamodb").get_paginator("scan").paginate(TableName=stack.name(logical)):
        for item in page.get("Items", []):
            row = {k: plain.deserialize(v) for k, v in item.items() if k not in NOT_FROM_DATA}
            items.append(json.loads(json.dumps(row, sort_keys=True, default=encode)))
    return sorted(items, key=lambda r: json.dumps(r, sort_keys=True))


def _run(session_factory, *, wipe_cache_between_halves: bool) -> dict:
    session = session_factory()
    stack = session.stack
    esm = session.emulator(PIPELINE, handlers={"meta_agent": _meta_agent_handler(stack)})
    publisher = KinesisPublisher(settings=stack.settings)
    series = _series()
    half = BARS_PER_SYMBOL // 2
    replay_bars([s[:half] for s in series], publisher, "market-data")
    esm.run_until_drained()
    cached_keys = stack.redis_client().dbsize()
    if wipe_cache_between_halves:
        stack.redis_client().flushall()
        assert stack.redis_client().dbsize() == 0
    replay_bars([s[half:] for s in series], publisher, "market-data")
    stats = esm.run_until_drained()
    return {
        "cached_keys_at_half_time": cached_keys,
        "failures": {name: (s.item_failures, s.dead_lettered) for name, s in stats.items()},
        "features": session.new_records("features"),
        "market-state": session.new_records("market-state"),
        "order-intents": sorted(json.dumps(m, sort_keys=True) for m in stack.read_queue("order-intents")),
        "decisions": _scan(stack, "decisions"),
        "snapshots": _scan(stack, "stage-state") + _scan(stack, "bandit-state"),
        "dead_letters": {q: stack.read_queue(q) for q in ("features-dlq", "regime-dlq", "meta-agent-dlq")},
    }


@pytest.mark.slow
def test_wiping_the_cache_mid_run_gives_the_same_outputs_as_an_uninterrupted_run(local_stack):
    from ensemble_trader.local.functions import forget_loaded

    from tests.conftest import fresh_session

    try:
        uninterrupted = _run(lambda: fresh_session(local_stack), wipe_cache_between_halves=False)
        recovered = _run(lambda: fresh_session(local_stack), wipe_cache_between_halves=True)
    finally:
        forget_loaded()

    assert uninterrupted["cached_keys_at_half_time"] > 0  # there was hot state to lose
    # the pipeline produced something at every stage, without failures or dead letters
    assert len(uninterrupted["features"]) == 2 * BARS_PER_SYMBOL
    assert len(uninterrupted["market-state"]) == 2 * BARS_PER_SYMBOL
    assert uninterrupted["decisions"] and len(uninterrupted["order-intents"]) == len(
        uninterrupted["decisions"]
    )
    for run in (uninterrupted, recovered):
        assert all(f == (0, 0) for f in run["failures"].values()), run["failures"]
        assert not any(run["dead_letters"].values())
    for output in ("features", "market-state", "order-intents", "decisions", "snapshots"):
        assert recovered[output] == uninterrupted[output], output
