"""meta_agent Lambda: MarketState records from ``market-state`` → OrderIntents on the FIFO queue.

Per record (through :class:`~ensemble_trader.runtime.stage.KinesisStageRunner`): the four ONNX
agents decide from the features and their own virtual positions, the bandit meta-agent
(:class:`~ensemble_trader.domain.meta_agent.MetaAgentStep`) learns from the bar that just ended
and chooses; the OrderIntent goes to ``order-intents`` (message group = symbol, deduplication
id = intent id), the decision with its explanation to the ``decisions`` table, AgentSwitched
events to EventBridge, regret against the best agent to the metrics. The meta-agent state of
each symbol lives in Redis and is snapshotted to the ``bandit-state`` table with a conditional
version check. The wiring is :mod:`ensemble_trader.runtime.meta_agent_stage`.

Configuration: ``ET_META_CONFIG`` may hold a JSON object of
:class:`~ensemble_trader.domain.meta_agent.MetaAgentConfig` options (policy, context, mode, ...)
but not ``strategy_id``, which is ``ET_STRATEGY_ID`` (refused at cold start); the defaults are
those of ``ensemble-trader backtest``, so backtest and live decide alike.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from ensemble_trader.runtime.deadline import invocation_deadline
from ensemble_trader.runtime.meta_agent_stage import build_runner
from ensemble_trader.runtime.observability import observability
from ensemble_trader.runtime.stage import KinesisStageRunner

obs = observability("meta_agent")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@lru_cache(maxsize=1)
def runner() -> KinesisStageRunner:
    """Dependencies built once per container (cold start): the pinned agent set, clients, runner."""
    from ensemble_trader.domain.agents import AgentPool
    from ensemble_trader.runtime.settings import get_settings

    settings = get_settings()
    return build_runner(settings, AgentPool.load(settings.models_dir / "agents"), metrics=metrics)


@logger.inject_lambda_context(correlation_id_path="Records[0].eventID")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with invocation_deadline(context):  # no AWS attempt or retry back-off outlasts the invocation
        return runner().process(event)
