"""The meta_agent stage's wiring: decision rows, regret metrics, bandit-state snapshots, config.

The step itself is :class:`~ensemble_trader.domain.meta_agent.MetaAgentStep`; this module adds
what the Lambda needs around the standard stage runner (see ``functions/meta_agent``):

- :class:`DecisionSink` sends each OrderIntent to the FIFO queue, then writes its row to the
  ``decisions`` table (:func:`decision_item`) and publishes regret metrics;
- :class:`BanditSnapshots` stores each symbol's meta-agent state in ``bandit-state`` under the
  runner's conditional version check (a writer that lost the race fails its records, drops its
  cache entry and retries from the newer snapshot);
- :func:`meta_config` reads ``ET_META_CONFIG`` (a JSON object of
  :class:`~ensemble_trader.domain.meta_agent.MetaAgentConfig` options) over the defaults, which
  are those of ``ensemble-trader backtest``, so backtest and live decide alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from ensemble_trader.domain.errors import DataError
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.ports import KeyValueStore
from ensemble_trader.runtime.settings import json_from_env
from ensemble_trader.runtime.stage import KinesisStageRunner, MetricsSink, RecordSink, runner_for_function

FUNCTION = "meta_agent"
BANDIT_TABLE = "bandit-state"
DECISIONS_TABLE = "decisions"
DECISION_TTL = timedelta(days=90)
CONFIG_ENV = "ET_META_CONFIG"


class BanditSnapshots:
    """The runner's per-symbol snapshots stored in the ``bandit-state`` table.

    The runner addresses a snapshot as ``{"pk": stage, "sk": symbol}``; ``bandit-state`` has a
    partition key only, so the item key becomes ``pk = "<stage>#<symbol>"`` (``symbol`` kept as
    an attribute). The conditional ``version`` check passes through unchanged.
    """

    def __init__(self, store: KeyValueStore, table: str = BANDIT_TABLE):
        self.store = store
        self.table = table

    @staticmethod
    def item_key(key: Mapping[str, Any]) -> str:
        return f"{key['pk']}#{key['sk']}"

    def get_item(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        item = self.store.get_item(self.table, {"pk": self.item_key(key)})
        if item is None:
            return None
        return {**item, "pk": key["pk"], "sk": key["sk"]}

    def get_versions(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[int]:
        return self.store.get_versions(self.table, [{"pk": self.item_key(k)} for k in keys])

    def put_item(self, table: str, item: Mapping[str, Any], *, expected_version: int | None = None) -> None:
        stored = {k: v for k, v in item.items() if k != "sk"}
        stored["pk"] = self.item_key(item)
        stored["symbol"] = item["sk"]
        self.store.put_item(self.table, stored, expected_version=expected_version)


def decision_item(intent: OrderIntent, now: datetime) -> dict[str, Any]:
    """The ``decisions`` row of an intent (pk symbol, sk bar time; TTL ``expires_at``)."""
    return {
        "symbol": intent.symbol,
        "timestamp": intent.timestamp.isoformat(),
        "intent_id": intent.intent_id,
        "strategy_id": intent.strategy_id,
        "target_position": intent.target_position,
        "reference_price": intent.reference_price,
        "model_version": intent.model_version,
        "regime": intent.regime.value,
        "confidence": intent.confidence,
        "agent_weights": dict(intent.agent_weights),
        "chosen": intent.explanation_detail.get("chosen"),
        "explanation": intent.explanation,
        "explanation_detail": json.dumps(intent.explanation_detail, separators=(",", ":")),
        "decided_at": now.isoformat(),
        "expires_at": int((now + DECISION_TTL).timestamp()),
    }


class DecisionSink:
    """Intents to the FIFO queue, then their decision rows, then regret metrics.

    The queue comes first: a failure after it re-sends on retry, which FIFO deduplication (by
    intent id) absorbs; a decision row is keyed by (symbol, bar time), so rewriting it is harmless.
    Rows go in ``BatchWriteItem`` calls (``store.put_items``: the DynamoDB store or its in-memory
    twin).
    """

    def __init__(
        self,
        queue: RecordSink,
        store: Any,
        metrics: MetricsSink | None = None,
        clock: Any = None,
        table: str = DECISIONS_TABLE,
    ):
        self.queue = queue
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.table = table

    def emit(self, records: Sequence[BaseModel]) -> None:
        intents = [r for r in records if isinstance(r, OrderIntent)]
        if len(intents) != len(records):
            raise DataError("the meta_agent stage emits OrderIntent records only")
        self.queue.emit(intents)
        now = self.clock.now() if self.clock is not None else datetime.now(UTC)
        self.store.put_items(self.table, [decision_item(intent, now) for intent in intents])
        if self.metrics is not None:
            latest = {i.symbol: i for i in intents}
            for intent in latest.values():
                regret = intent.explanation_detail.get("regret", {})
                self.metrics.add_metric("meta_agent_regret", "None", float(regret.get("overall", 0.0)))
                self.metrics.add_metric(
                    f"meta_agent_regret_{intent.regime.value}", "None", float(regret.get("regime", 0.0))
                )
            switched = sum(1 for i in intents if i.explanation_detail.get("switched"))
            if switched:
                self.metrics.add_metric("meta_agent_switches", "Count", switched)


def meta_config(strategy_id: str) -> MetaAgentConfig:
    """The configuration from ``ET_META_CONFIG`` (JSON options) over the defaults; a bad value
    raises :class:`~ensemble_trader.runtime.settings.EnvironmentSettingError` naming it."""
    return json_from_env(
        CONFIG_ENV, MetaAgentConfig, build=MetaAgentConfig.create, defaults={"strategy_id": strategy_id}
    )


def build_runner(
    settings: Any,
    agents: Any,
    *,
    metrics: MetricsSink | None = None,
    config: MetaAgentConfig | None = None,
) -> KinesisStageRunner:
    """The stage runner wired to AWS (or the local stack) for ``settings``, deciding with ``agents``:
    the stage's standard wiring, its FIFO sink also writing the decision rows and regret metrics
    (to ``metrics``), its snapshots in ``bandit-state``. ``config`` defaults to :func:`meta_config`."""
    step = MetaAgentStep(config or meta_config(settings.strategy_id), agents)
    built = runner_for_function(
        step,
        FUNCTION,
        settings=settings,
        metrics=metrics,
        with_events=True,
        deduplication_id=lambda intent: intent.intent_id,
    )
    store = built.snapshots
    built.sink = DecisionSink(built.sink, store, metrics)
    built.snapshots, built.snapshot_table = BanditSnapshots(store), BANDIT_TABLE
    return built
