"""features Lambda: bars from ``market-data`` → FeatureVector records on ``features``.

Kinesis event-source mapping with ReportBatchItemFailures. Per-symbol FeatureEngine state lives
in Redis (snapshotted to DynamoDB); the stage runner does the rest (see
``ensemble_trader.runtime.stage``): a bad record goes to ``features-dlq`` with its reason, a
redelivered bar is a no-op, a transient failure is reported as failed batch items, and a valid
bar whose record's partition key is not its symbol is applied but counted
(``features_foreign_partition_keys``) and named in a warning (docs/features.md, "The partition key").
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from ensemble_trader.runtime.deadline import invocation_deadline
from ensemble_trader.runtime.features_stage import FeaturesStep
from ensemble_trader.runtime.observability import observability
from ensemble_trader.runtime.stage import KinesisStageRunner, runner_for_function

obs = observability("features")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@lru_cache(maxsize=1)
def runner() -> KinesisStageRunner:
    """Dependencies built once per container (cold start)."""
    return runner_for_function(FeaturesStep(), "features", metrics=metrics)


@logger.inject_lambda_context(correlation_id_path="Records[0].eventID")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with invocation_deadline(context):  # no AWS attempt or retry back-off outlasts the invocation
        return runner().process(event)
