"""Disaster recovery, the local part of docs/runbook.md: a cache wiped mid-run changes nothing.

The same bars are replayed twice through the whole pipeline on the local stack (Kinesis and SQS
event-source mappings over moto, a real redis-server, the real handlers): once uninterrupted, and
once with ``FLUSHALL`` part-way — a lost ElastiCache. The stage runners must rebuild every
symbol's state from the DynamoDB snapshots (features, regime, bandit state) and produce exactly
the outputs of the uninterrupted run: the same feature vectors, market states, order intents,
decision rows and snapshots.

The cache is wiped only after the features have warmed up (``WARMUP_BARS``) and 50 ready bars
have been applied: by then the regime filter has a filtered distribution and the meta-agent's
learners and regret ledger have statistics, so a state rebuilt without them (a stage that
reloaded its snapshot but lost what was learned) would decide the 50 bars after the wipe
differently. The test checks that there was such state to lose and that those bars trade.

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
from ensemble_trader.domain.features import FEATURE_NAMES, FEATURE_VERSION, WARMUP_BARS
from ensemble_trader.domain.meta_agent import GLOBAL
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.marketdata import load_arch

# Every stage that keeps hot state in the cache. The orders stage keeps none (DynamoDB only) and
# its client order ids derive from the intents, so equal intents mean equal orders.
PIPELINE = ["features", "regime", "meta_agent"]
# The first WARMUP_BARS feature vectors of a symbol are not ready: the regime filter observes
# nothing and the meta-agent stays flat and learns nothing on them. The cache is wiped after 50
# ready bars, and 50 more follow.
WIPE_AFTER = WARMUP_BARS + 50
BARS_PER_SYMBOL = WIPE_AFTER + 50
# Bars per symbol replayed (and drained) at a time, the order intents they produced taken off their
# queue after each, as the orders function would: a moto FIFO queue gets slower with every message
# it holds (a 10-message send takes ~2 ms more per message already queued). Leaving a whole run's
# intents in the queue made this test take 137 s instead of 44 s (chunks of 60) in one measurement.
CHUNK = 30
# Fields that do not come from the data: when a row was written (and a decision's TTL).
NOT_FROM_DATA = {"decided_at", "expires_at", "updated_at"}


class MomentumRules:
    """Four deterministic agents with the AgentPool interface: targets from trend and z-score."""

    names = ("conservative", "aggressive", "balanced", "contrarian")
    version = "dr-rules-1"
    feature_names = FEATURE_NAMES
    feature_version = FEATURE_VERSION

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


def learned_state(stack, symbol: str) -> dict:
    """What the regime filter and the meta-agent have learned about ``symbol``, from their
    DynamoDB snapshots: the bars the filter observed and whether it holds a filtered
    distribution, the feedback rounds of each of the meta-agent's learners and the bars of its
    regret ledger."""
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore
    from ensemble_trader.domain.meta_agent import MetaAgentState
    from ensemble_trader.domain.regime import RegimeFilterState

    store = DynamoKeyValueStore(settings=stack.settings)
    regime = RegimeFilterState.from_bytes(bytes(store.get_item("stage-state", {"pk": "regime", "sk": symbol})["state"]))
    meta = MetaAgentState.from_bytes(bytes(store.get_item("bandit-state", {"pk": f"meta_agent#{symbol}"})["state"]))
    return {
        "regime_observed": regime.n_observed,
        "regime_filtered": regime.log_alpha is not None,
        "learner_rounds": {name: learner.t_ for name, learner in meta.learners.items()},
        "regret_bars": sum(meta.regret.bars.values()),
    }


def assert_learned_something(learned: dict) -> None:
    assert learned["regime_filtered"] and learned["regime_observed"] > 0, learned
    assert learned["learner_rounds"] and all(t > 0 for t in learned["learner_rounds"].values()), learned
    assert learned["regret_bars"] > 0, learned


def feed(series, publisher, esm, stack, intents: list[str]) -> dict:
    """Replay ``series`` (merged by time) ``CHUNK`` bars per symbol at a time, draining the
    pipeline after each and moving the order intents it produced from their queue to
    ``intents`` (JSON, sorted keys). Returns the emulator's (cumulative) statistics."""
    stats: dict = {}
    for start in range(0, max(len(s) for s in series), CHUNK):
        replay_bars([s[start : start + CHUNK] for s in series if len(s) > start], publisher, "market-data")
        stats = esm.run_until_drained()
        intents.extend(json.dumps(m, sort_keys=True) for m in stack.read_queue("order-intents"))
    return stats


def _run(session_factory, *, wipe_cache: bool) -> dict:
    session = session_factory()
    stack = session.stack
    esm = session.emulator(PIPELINE, handlers={"meta_agent": _meta_agent_handler(stack)})
    publisher = KinesisPublisher(settings=stack.settings)
    series = _series()
    intents: list[str] = []
    feed([s[:WIPE_AFTER] for s in series], publisher, esm, stack, intents)
    cached_keys = stack.redis_client().dbsize()
    learned = {s.symbol: learned_state(stack, s.symbol) for s in series}
    if wipe_cache:
        stack.redis_client().flushall()
        assert stack.redis_client().dbsize() == 0
    stats = feed([s[WIPE_AFTER:] for s in series], publisher, esm, stack, intents)
    return {
        "cached_keys_at_wipe": cached_keys,
        "learned_at_wipe": learned,
        "learned_at_end": {s.symbol: learned_state(stack, s.symbol) for s in series},
        "wiped_at": {s.symbol: s.bar(WIPE_AFTER - 1).timestamp for s in series},  # the last bar before it
        "failures": {name: (s.item_failures, s.dead_lettered) for name, s in stats.items()},
        "features": session.new_records("features"),
        "market-state": session.new_records("market-state"),
        "order-intents": sorted(intents),
        "decisions": _scan(stack, "decisions"),
        "snapshots": _scan(stack, "stage-state") + _scan(stack, "bandit-state"),
        "dead_letters": {q: stack.read_queue(q) for q in ("features-dlq", "regime-dlq", "meta-agent-dlq")},
    }


@pytest.mark.slow
def test_wiping_the_cache_mid_run_gives_the_same_outputs_as_an_uninterrupted_run(local_stack):
    from ensemble_trader.local.functions import forget_loaded

    from tests.conftest import fresh_session

    try:
        uninterrupted = _run(lambda: fresh_session(local_stack), wipe_cache=False)
        recovered = _run(lambda: fresh_session(local_stack), wipe_cache=True)
    finally:
        forget_loaded()

    assert recovered["cached_keys_at_wipe"] > 0  # there was hot state to lose ...
    for learned in recovered["learned_at_wipe"].values():
        assert_learned_something(learned)  # ... holding what the regime filter and the meta-agent learned
    # the bars after the wipe trade: what the meta-agent decides on them depends on that state
    intents = [OrderIntent.model_validate_json(m) for m in recovered["order-intents"]]
    after_wipe = [i for i in intents if i.timestamp > recovered["wiped_at"][i.symbol]]
    assert len(after_wipe) == 2 * (BARS_PER_SYMBOL - WIPE_AFTER)
    assert any(i.target_position != 0.0 for i in after_wipe)
    after = BARS_PER_SYMBOL - WIPE_AFTER
    for symbol, learned in recovered["learned_at_end"].items():  # what was learned went on from the wipe
        at_wipe = recovered["learned_at_wipe"][symbol]
        assert learned["learner_rounds"][GLOBAL] == at_wipe["learner_rounds"][GLOBAL] + after, symbol
        assert learned["regret_bars"] == at_wipe["regret_bars"] + after, symbol
        assert learned["regime_observed"] == at_wipe["regime_observed"] + after, symbol
    assert recovered["learned_at_end"] == uninterrupted["learned_at_end"]
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
