"""The meta_agent stage's wiring: decision rows, regret metrics, bandit-state snapshots, config.

The step itself is :class:`~ensemble_trader.domain.meta_agent.MetaAgentStep`; this module adds
what the Lambda needs around the standard stage runner (see ``functions/meta_agent``):

- :class:`DecisionSink` writes each OrderIntent's row to the ``decisions`` table
  (:func:`decision_item`; first writer wins), then sends the intent that row holds to the FIFO
  queue, and publishes each symbol's regret metrics with a ``symbol`` dimension
  (:class:`EmfSymbolMetrics`);
- :class:`BanditSnapshots` stores each symbol's meta-agent state in ``bandit-state`` under the
  runner's conditional version check (a writer that lost the race fails its records, drops its
  cache entry and retries from the newer snapshot);
- :func:`meta_config` reads ``ET_META_CONFIG`` (a JSON object of
  :class:`~ensemble_trader.domain.meta_agent.MetaAgentConfig` options, but not ``strategy_id``:
  ``ET_STRATEGY_ID``) over the defaults, which are those of ``ensemble-trader backtest``, so
  backtest and live decide alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aws_lambda_powertools.metrics import EphemeralMetrics
from pydantic import BaseModel, ValidationError

from ensemble_trader.adapters.limits import message_text
from ensemble_trader.domain.errors import DataError, FieldProblem, InvalidMessageError
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.ports import KeyValueStore
from ensemble_trader.runtime.regime_registry import history_key, row_time
from ensemble_trader.runtime.settings import EnvironmentSettingError, json_from_env
from ensemble_trader.runtime.stage import KinesisStageRunner, MetricsSink, RecordSink, runner_for_function

FUNCTION = "meta_agent"
BANDIT_TABLE = "bandit-state"
DECISIONS_TABLE = "decisions"
DECISION_TTL = timedelta(days=90)
CONFIG_ENV = "ET_META_CONFIG"
STRATEGY_ENV = "ET_STRATEGY_ID"
SET_ELSEWHERE = {"strategy_id": f"{STRATEGY_ENV} (the stage's settings)"}
"""The ``MetaAgentConfig`` options ``ET_META_CONFIG`` may not set, with where they are set: the
stage's identity, which names its intents and enters their ids and the client order ids derived
from them (docs/deployment.md); the backtest's ``--meta-config`` refuses it too."""

log = logging.getLogger(__name__)


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
    """The ``decisions`` row of an intent: pk ``symbol``, sk ``timestamp`` — the bar's UTC instant
    in ISO-8601 (:func:`~ensemble_trader.runtime.regime_registry.history_key`, as regime-history
    rows), so a symbol's rows sort as time whatever offset its feed carries; ``intent`` holds the
    queue message body exactly; TTL ``expires_at``."""
    return {
        "symbol": intent.symbol,
        "timestamp": history_key(intent.timestamp),
        "intent_id": intent.intent_id,
        "strategy_id": intent.strategy_id,
        "target_position": intent.target_position,
        "reference_price": intent.reference_price,
        "model_version": intent.model_version,
        "regime_model_version": intent.explanation_detail.get("regime_model_version"),
        "regime": intent.regime.value,
        "confidence": intent.confidence,
        "agent_weights": dict(intent.agent_weights),
        "chosen": intent.explanation_detail.get("chosen"),
        "explanation": intent.explanation,
        "explanation_detail": json.dumps(intent.explanation_detail, separators=(",", ":")),
        "intent": intent.model_dump_json(),
        "decided_at": now.isoformat(),
        "expires_at": int((now + DECISION_TTL).timestamp()),
    }


def decision_time(row: Mapping[str, Any]) -> datetime:
    """The bar time of a ``decisions`` row, aware (rows written before the keys were UTC carry the
    bar's own offset: compare these, never the key texts); DataError naming the row otherwise."""
    return row_time(row, "decisions")


class SymbolMetrics(Protocol):
    """Publishes metrics of one symbol under a ``symbol`` dimension (beside the service's own)."""

    def publish(self, symbol: str, metrics: Sequence[tuple[str, str, float]]) -> None: ...


class EmfSymbolMetrics:
    """:class:`SymbolMetrics` in CloudWatch EMF through Powertools: per symbol one metric set in
    the namespace, ``service`` and default dimensions (``stage``) of the stage's own Powertools
    ``metrics``, plus ``symbol``, flushed at once (an ``EphemeralMetrics`` of its own, so the
    handler's metric set — one dimension set for all its metrics — is left as it is).

    Each symbol's regret is then a series of its own: one value per metric name, service, stage
    and symbol, where values of several symbols under one series averaged to nothing (+50 and −50
    read 0). Each such series is a CloudWatch custom metric, billed per month (docs/deployment.md).
    """

    def __init__(self, metrics: Any) -> None:
        try:
            self.namespace = metrics.namespace
            self.service = metrics.service
            self.dimensions = {str(k): str(v) for k, v in metrics.default_dimensions.items()}
        except AttributeError as exc:
            raise TypeError(f"EmfSymbolMetrics needs Powertools metrics (namespace, service, default dimensions), "
                            f"not {type(metrics).__name__}") from exc

    def publish(self, symbol: str, metrics: Sequence[tuple[str, str, float]]) -> None:
        emf = EphemeralMetrics(namespace=self.namespace, service=self.service,
                               default_dimensions={**self.dimensions, "symbol": symbol})
        for name, unit, value in metrics:
            emf.add_metric(name=name, unit=unit, value=value)
        emf.flush_metrics()


def log_overlay_restart(intent: OrderIntent) -> None:
    """Log a decision at which the volatility overlay's stored estimates were not used and started
    afresh (``explanation_detail.vol_target.restarted``: they were of another return stream than
    ``vol_target`` names, e.g. after ``ET_META_CONFIG`` changed it; docs/meta-agent.md §2)."""
    overlay = intent.explanation_detail.get("vol_target")
    reason = overlay.get("restarted") if isinstance(overlay, Mapping) else None
    if reason:
        log.warning("meta_agent: %s@%s: the volatility overlay (vol_target=%s) started its estimates afresh: %s",
                    intent.symbol, intent.timestamp.isoformat(), overlay.get("source"), reason)


def regret_metrics(intent: OrderIntent) -> list[tuple[str, str, float]]:
    """The regret metrics of a symbol's latest intent: ``meta_agent_regret`` (overall) and
    ``meta_agent_regret_<REGIME>`` (its regime's), cumulative, in risk-adjusted reward units."""
    regret = intent.explanation_detail.get("regret", {})
    return [
        ("meta_agent_regret", "None", float(regret.get("overall", 0.0))),
        (f"meta_agent_regret_{intent.regime.value}", "None", float(regret.get("regime", 0.0))),
    ]


class DecisionSink:
    """Decision rows first (first writer wins), then the intents they hold to the FIFO queue,
    then each symbol's regret metrics (to ``symbol_metrics``, under a ``symbol`` dimension).

    Every row is built and checked — DynamoDB must be able to hold it, SQS its intent's body
    (:func:`~ensemble_trader.adapters.limits.message_text`) — before anything is written, and
    every row is written before any intent is sent: a record whose row or message would be
    refused is dead-lettered with nothing of it on the queue or in the table.

    A row is put only if no row of the same intent id is stored under its key
    (``store.put_new_items``: one conditional ``PutItem`` per row, or the in-memory twin). When
    one is stored already — this writer's own earlier attempt, or a concurrent writer that
    computed the same bar from another state (the runner's snapshot race) — the intent sent is
    the one that row holds (its ``intent`` attribute), not the one just computed: every message
    sent under an intent id carries the body of the row stored for it, so what FIFO
    deduplication keeps on the queue is what the table says was decided (docs/meta-agent.md, §3).
    A row of another intent id (another model version deciding the bar again) is replaced.
    """

    def __init__(
        self,
        queue: RecordSink,
        store: Any,
        metrics: MetricsSink | None = None,
        clock: Any = None,
        table: str = DECISIONS_TABLE,
        symbol_metrics: SymbolMetrics | None = None,
    ):
        self.queue = queue
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.table = table
        self.symbol_metrics = symbol_metrics

    def emit(self, records: Sequence[BaseModel]) -> None:
        intents = [r for r in records if isinstance(r, OrderIntent)]
        if len(intents) != len(records):
            raise DataError("the meta_agent stage emits OrderIntent records only")
        now = self.clock.now() if self.clock is not None else datetime.now(UTC)
        queue = str(getattr(self.queue, "queue", "order-intents"))
        rows = [decision_item(intent, now) for intent in intents]
        for intent, row in zip(intents, rows, strict=True):  # SQS's refusal, before any row is written
            message_text(queue, intent.intent_id, row["intent"])
        stored = self.store.put_new_items(self.table, rows, unless_same="intent_id")
        sent = [
            intent if kept is None else self._stored_intent(intent, kept)
            for intent, kept in zip(intents, stored, strict=True)
        ]
        for intent, kept in zip(sent, stored, strict=True):
            if kept is None:  # said once, with the decision row that first records it
                log_overlay_restart(intent)
        if self.metrics is not None:
            # a switch counts once, when its decision row is first written (before the send, so
            # a queue failure does not lose it: the retry finds the row stored and sends it again,
            # which is not a new switch); a decisions write that fails part-way leaves the
            # switches of the rows it did write uncounted (the retry finds them stored)
            switched = sum(1 for i, kept in zip(sent, stored, strict=True)
                           if kept is None and i.explanation_detail.get("switched"))
            if switched:
                self.metrics.add_metric("meta_agent_switches", "Count", switched)
        self.queue.emit(sent)
        if self.symbol_metrics is not None:
            latest = {i.symbol: i for i in sent}  # regret is cumulative: a symbol's last bar says it
            for symbol, intent in latest.items():
                self.symbol_metrics.publish(symbol, regret_metrics(intent))

    @staticmethod
    def _stored_intent(computed: OrderIntent, row: Mapping[str, Any]) -> OrderIntent:
        """The intent a stored row of ``computed``'s id holds (``computed`` itself for a row
        written before rows kept their intent, or one whose intent does not parse: logged)."""
        body = row.get("intent")
        if not isinstance(body, str):
            log.warning("decisions row of %s %s holds no intent body; sending the one computed now",
                        computed.symbol, computed.intent_id)
            return computed
        try:
            intent = OrderIntent.model_validate_json(body)
        except ValidationError as exc:
            log.error("decisions row of %s %s holds an intent that does not parse (%s); sending the one "
                      "computed now", computed.symbol, computed.intent_id, exc)
            return computed
        if intent != computed:
            log.warning("decisions row of %s %s was written first with other content (a concurrent or earlier "
                        "writer); sending what it holds", computed.symbol, computed.intent_id)
        return intent


def meta_config(strategy_id: str) -> MetaAgentConfig:
    """The configuration from ``ET_META_CONFIG`` (JSON options) over the defaults, with the stage's
    ``strategy_id`` (its settings'); a bad value, or an option of :data:`SET_ELSEWHERE` (read over
    the settings' value, ``{"strategy_id": "x"}`` renamed the stage's intents while
    ``ET_STRATEGY_ID`` said otherwise), raises
    :class:`~ensemble_trader.runtime.settings.EnvironmentSettingError` naming it; so does a
    ``strategy_id`` the configuration refuses, naming ``ET_STRATEGY_ID`` (not ``ET_META_CONFIG``,
    whose options it was checked with)."""
    try:
        MetaAgentConfig.create(strategy_id=strategy_id)
    except InvalidMessageError as exc:
        raise EnvironmentSettingError(STRATEGY_ENV, f"not a valid strategy id ({exc})") from exc

    def build(**options: Any) -> MetaAgentConfig:
        clash = sorted(set(options) & set(SET_ELSEWHERE))
        if clash:
            raise InvalidMessageError(MetaAgentConfig.__name__, [
                FieldProblem(key, options[key], f"set by {SET_ELSEWHERE[key]}, not in {CONFIG_ENV}") for key in clash
            ])
        return MetaAgentConfig.create(**options, strategy_id=strategy_id)

    return json_from_env(CONFIG_ENV, MetaAgentConfig, build=build)


def build_runner(
    settings: Any,
    agents: Any,
    *,
    metrics: MetricsSink | None = None,
    config: MetaAgentConfig | None = None,
) -> KinesisStageRunner:
    """The stage runner wired to AWS (or the local stack) for ``settings``, deciding with ``agents``:
    the stage's standard wiring, its FIFO sink also writing the decision rows and each symbol's
    regret metrics (in the namespace and dimensions of the Powertools ``metrics``, plus ``symbol``),
    its snapshots in ``bandit-state``. ``config`` defaults to :func:`meta_config`."""
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
    built.sink = DecisionSink(built.sink, store, metrics,
                              symbol_metrics=None if metrics is None else EmfSymbolMetrics(metrics))
    built.snapshots, built.snapshot_table = BanditSnapshots(store), BANDIT_TABLE
    return built
