"""Per-stage settings of the CDK app, selected with ``-c stage=dev|staging|prod``.

Everything that differs between a cheap development stack and production lives here, so the
constructs read one typed object instead of branching on the stage name.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_logs as logs


class UnknownStageError(ValueError):
    """The ``stage`` context names no configured stage."""


@dataclass(frozen=True)
class StageConfig:
    """Sizing, retention and alarm thresholds of one stage."""

    name: str
    shard_count: int
    stream_retention_hours: int
    nat_gateways: int
    provisioned_concurrency_min: int
    provisioned_concurrency_max: int
    orders_reserved_concurrency: int
    log_retention: logs.RetentionDays
    retain_data: bool
    cache_snapshot_retention_days: int
    iterator_age_alarm_ms: int
    error_rate_alarm_percent: float
    drawdown_alarm_fraction: float
    reconcile_every_minutes: int = 5
    regime_refit_hour_utc: int = 22  # after the US close
    training_weekday: str = "SUN"
    training_instance_type: str = "ml.m5.xlarge"
    # the orders stage refuses intents whose bar time is older than this (ET_RISK_MAX_INTENT_AGE_SECONDS);
    # it depends on the feed's bar stamps and cadence, so it is set per deployment (-c max_intent_age_seconds=N)
    max_intent_age_seconds: float | None = None
    # the equity the orders functions size orders and the loss/drawdown limits from, before their own
    # P&L (ET_ORDERS_INITIAL_EQUITY; they never ask the broker): the account's, so set per deployment
    # (-c initial_equity=N, required with an Alpaca broker); None keeps the settings' default (paper)
    initial_equity: float | None = None
    # whether the stage takes its broker and its symbols only from an explicit -c broker=... (paper
    # included) and -c symbols=...: both live in the per-deploy context, so a default would switch a
    # stage that trades Alpaca to the paper broker, or one that trades SPY,QQQ to SPY alone (the regime
    # refit and the orders functions' allocation), at the first redeploy that forgets them. Only dev
    # (a development stack) defaults them (paper, SPY)
    explicit_context_required: bool = True
    # whether every function declares ET_AWS_ENDPOINT_URL (empty: AWS's own endpoints), so that
    # `sam local invoke --env-vars` can point it at the local stack: SAM overrides only the variables
    # the template declares (docs/deployment.md, `sam local invoke`)
    declares_local_endpoint: bool = False

    def __post_init__(self) -> None:
        # the hot-path functions read Kinesis shards with a parallelization factor of 1 (per-symbol
        # order): at most one invocation per shard runs, so more provisioned concurrency is idle
        if not 1 <= self.provisioned_concurrency_min <= self.provisioned_concurrency_max <= self.shard_count:
            raise ValueError(
                f"stage {self.name}: provisioned concurrency {self.provisioned_concurrency_min}.."
                f"{self.provisioned_concurrency_max} must lie in 1..{self.shard_count} (one invocation per shard)"
            )

    @property
    def removal_policy(self) -> RemovalPolicy:
        """RETAIN for data in production (a stack deletion must never drop orders), DESTROY in dev."""
        return RemovalPolicy.RETAIN if self.retain_data else RemovalPolicy.DESTROY

    @property
    def stream_retention(self) -> Duration:
        return Duration.hours(self.stream_retention_hours)


STAGES: dict[str, StageConfig] = {
    "dev": StageConfig(
        name="dev",
        shard_count=1,
        stream_retention_hours=24,
        nat_gateways=1,
        provisioned_concurrency_min=1,
        provisioned_concurrency_max=1,
        orders_reserved_concurrency=2,
        log_retention=logs.RetentionDays.TWO_WEEKS,
        retain_data=False,
        cache_snapshot_retention_days=1,
        iterator_age_alarm_ms=60_000,
        error_rate_alarm_percent=5.0,
        drawdown_alarm_fraction=0.10,
        explicit_context_required=False,  # -c broker defaults to paper, -c symbols to SPY
        declares_local_endpoint=True,  # for sam local invoke
    ),
    # Production's shape at a smaller size: what CI deploys and smoke-tests before production.
    "staging": StageConfig(
        name="staging",
        shard_count=1,
        stream_retention_hours=24,
        nat_gateways=1,
        provisioned_concurrency_min=1,
        provisioned_concurrency_max=1,
        orders_reserved_concurrency=2,
        log_retention=logs.RetentionDays.ONE_MONTH,
        retain_data=False,
        cache_snapshot_retention_days=1,
        iterator_age_alarm_ms=10_000,
        error_rate_alarm_percent=1.0,
        drawdown_alarm_fraction=0.05,
    ),
    "prod": StageConfig(
        name="prod",
        shard_count=4,
        stream_retention_hours=168,  # seven days of replay for disaster recovery
        nat_gateways=2,
        provisioned_concurrency_min=4,
        provisioned_concurrency_max=4,  # one invocation per shard at a time (parallelization factor 1)
        orders_reserved_concurrency=5,
        log_retention=logs.RetentionDays.THREE_MONTHS,
        retain_data=True,
        cache_snapshot_retention_days=7,
        iterator_age_alarm_ms=5_000,
        error_rate_alarm_percent=1.0,
        drawdown_alarm_fraction=0.05,
    ),
}


def stage_config(stage: str) -> StageConfig:
    """The configuration of ``stage``; raises :class:`UnknownStageError` naming the known stages."""
    try:
        return STAGES[stage]
    except KeyError:
        raise UnknownStageError(f"unknown stage {stage!r}; choose one of {sorted(STAGES)}") from None
