"""CloudWatch dashboards (operations, business), alarms and the KMS-encrypted alarm topic.

Two sources feed them, both produced by the handlers as they are:

* Powertools EMF metrics in the ``EnsembleTrader`` namespace with dimensions ``service`` (the
  function's folder name, ``POWERTOOLS_SERVICE_NAME``) and ``stage`` (``ET_STAGE``): per-record
  compute latency, batch counts, orders, kill switch, reconciliation (:data:`EMF_METRICS`); the
  meta-agent's regret per symbol (a ``symbol`` dimension too, graphed by SEARCH expressions:
  :data:`REGRET_METRICS`); the account (equity, daily loss, drawdown, breaker state, kill
  switch) the orders stage reports with every routed intent; failed intents (``intents_failed``), which the SQS partial
  batch response hides from Lambda's error metrics.
* The domain events on the bus, copied to a log group by :class:`DomainEventLog`: rejections by
  reason, the regime timeline, agent switches with their weights, circuit-breaker transitions
  with equity and drawdown, reconciliation failures (Logs Insights widgets, and metric filters
  graphed on the business dashboard).

Every name is documented in docs/deployment.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import jsii
from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from ensemble_trader.constants import EVENT_SOURCE, FUNCTIONS, qualified
from ensemble_trader.domain.agents import AGENT_NAMES
from ensemble_trader.domain.models import REGIMES

from infra_cdk.config import StageConfig
from infra_cdk.constructs.cache_admin import LOGICAL as CACHE_ADMIN
from infra_cdk.constructs.events import TARGET_MAX_EVENT_AGE, TARGET_RETRY_ATTEMPTS
from infra_cdk.constructs.functions import ACCESS, METRICS_NAMESPACE, Functions
from infra_cdk.constructs.queues import Queues, dead_letter_queues
from infra_cdk.constructs.streams import Streams, _construct_name
from infra_cdk.constructs.training import Training

PERIOD = Duration.minutes(1)
ALARM_PERIOD = Duration.minutes(5)
STATE_PERIOD = PERIOD
"""The period of the state alarms (``KillSwitchOn``, ``BreakerTripped``): one minute, so the
minute of an OFF or a reset holds only its 0 unless the state was reported on earlier in that
same minute, and the next scheduled reconciliation (its own minute) settles that case."""
WIDE = 12
FULL = 24


REFIT_HEARTBEAT_PERIOD = Duration.hours(25)
"""The window the daily refit must have run in: a day and an hour, so that a window always holds
one 22:00 run however CloudWatch places it and whatever the seconds of the schedule's start.
CloudWatch takes it: an alarm's period times its evaluation periods may reach seven days for a
period of an hour or more (one day below an hour; PutMetricAlarm's ``Period``)."""

RECONCILE_HEARTBEAT_RUNS = 3
"""The reconciliation's heartbeat window, in schedule periods (3 x 5 minutes): no invocation in
it means the schedule or its target is gone or disabled. Three runs, so that one run's sample
landing in the next window cannot leave a window empty."""


def function_name(stage: str, entry_key: str) -> str:
    """The function name of an entry as infra_cdk.constructs.functions names it:
    ``et-<stage>-<entry>``, dots and underscores as dashes (``orders.kill_switch`` ->
    ``et-<stage>-orders-kill-switch``)."""
    return qualified(stage, entry_key.replace(".", "-").replace("_", "-"))


def heartbeat_period(entry_key: str, config: StageConfig) -> Duration | None:
    """The window an EventBridge-scheduled entry must be invoked in at least once (its heartbeat
    alarm), or None for an entry without a schedule."""
    if entry_key == "orders.reconcile":
        return Duration.minutes(RECONCILE_HEARTBEAT_RUNS * config.reconcile_every_minutes)
    if entry_key == "regime.refit":
        return REFIT_HEARTBEAT_PERIOD
    return None


FOREIGN_KEYS_STAGE = "features"
"""The stage that counts bars whose record's partition key is not their symbol
(``<stage>_foreign_partition_keys``: the stage runner's ``checks_partition_key``, the features step's)."""

ORDER_INTENT_MAX_AGE_SECONDS = 300
"""An intent normally leaves the order-intents queue within seconds; older ones mean a stall."""


def compute_metric_name(logical: str) -> str:
    """The compute-latency metric (µs) of a stage: the stage runner's ``<step>_compute_us``;
    the orders stage records the whole routing of an intent as ``orders_route_us``."""
    return "orders_route_us" if logical == "orders" else f"{logical}_compute_us"


def failure_destination(entry_key: str) -> str | None:
    """The on-failure destination (a queue) Lambda sends the record of a failed invocation of
    ``entry_key`` to, as infra_cdk.constructs.functions wires it: an extra entry (invoked
    asynchronously) -> ``events-dlq``; a Kinesis-fed main entry -> its stage's DLQ (the mapping's
    on-failure destination); an SQS-fed one (orders) has none (the queue's redrive policy)."""
    logical, _, extra = entry_key.partition(".")
    [spec] = [spec for spec in FUNCTIONS if spec.logical == logical]
    if extra:
        return "events-dlq"
    return spec.dead_letter_queue if spec.mapping.kind == "kinesis" else None


def _calls_widget(title: str, fn: lambda_.IFunction, width: int) -> cw.GraphWidget:
    """A function's invocations, errors and throttles (sums per :data:`PERIOD`), titled ``title``."""
    return cw.GraphWidget(
        title=f"{title}: invocations, errors, throttles",
        left=[
            fn.metric_invocations(period=PERIOD, statistic="Sum"),
            fn.metric_errors(period=PERIOD, statistic="Sum"),
            fn.metric_throttles(period=PERIOD, statistic="Sum"),
        ],
        width=width,
    )


def _duration_text(period: Duration) -> str:
    minutes = int(period.to_minutes())
    return f"{minutes // 60} hours" if minutes % 60 == 0 else f"{minutes} minutes"


@dataclass(frozen=True)
class EmfMetric:
    name: str
    service: str
    statistic: str
    label: str


EMF_METRICS: tuple[tuple[str, tuple[EmfMetric, ...]], ...] = (
    (
        "Decisions and orders",
        (
            EmfMetric("meta_agent_outputs", "meta_agent", "Sum", "decisions (order intents)"),
            EmfMetric("intents_routed", "orders", "Sum", "intents routed"),
            EmfMetric("orders_placed", "orders", "Sum", "orders placed"),
            EmfMetric("fills_applied", "orders", "Sum", "fills"),
        ),
    ),
    (
        "Rejections and dead letters",
        (
            EmfMetric("orders_rejected", "orders", "Sum", "orders rejected (risk)"),
            EmfMetric("intents_dead_lettered", "orders", "Sum", "intents dead-lettered"),
            *(
                EmfMetric(f"{s.logical}_rejected", s.logical, "Sum", f"{s.logical} bad records")
                for s in FUNCTIONS[:3]
            ),
        ),
    ),
    (
        "Agent switches, breaker state, kill switch",
        (
            EmfMetric("meta_agent_switches", "meta_agent", "Sum", "agent switches"),
            EmfMetric("account_breaker_state", "orders", "Maximum", "breaker (0 ACTIVE, 1 REDUCING, 2 HALTED)"),
            EmfMetric("kill_switch_active", "orders", "Maximum", "kill switch (1 = on)"),
        ),
    ),
    (
        "Reconciliation and regime refit",
        (
            EmfMetric("reconcile_orders_synced", "orders", "Sum", "orders synced"),
            EmfMetric("reconcile_symbols_failed", "orders", "Sum", "symbols failed"),
            EmfMetric("regime_refit_published", "regime", "Sum", "regime models published"),
            EmfMetric("regime_refit_skipped", "regime", "Sum", "symbol models skipped (too little history)"),
            EmfMetric("regime_refit_unchanged", "regime", "Sum", "refits not material (pin kept)"),
            EmfMetric("regime_refit_republished", "regime", "Sum", "retried refits (event sent again)"),
            EmfMetric("features_state_restarted", "features", "Sum", "feature states of an older version restarted"),
        ),
    ),
)

REGRET_METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Meta-agent regret by symbol (overall)", ("meta_agent_regret",)),
    ("Meta-agent regret by symbol and regime", tuple(f"meta_agent_regret_{r.value}" for r in REGIMES)),
)
"""The meta-agent's cumulative regret, published per symbol with a ``symbol`` dimension beside
``service`` and ``stage`` (runtime.meta_agent_stage.EmfSymbolMetrics): one line per symbol (and
regime), found by a SEARCH expression, so no symbol list is deployed and a symbol's regret is
never averaged with another's."""


def regret_search(metric_names: tuple[str, ...], stage: str) -> str:
    """The SEARCH expression of the per-symbol regret series ``metric_names`` of ``stage``
    (quoted values match exactly)."""
    names = " OR ".join(f'MetricName="{name}"' for name in metric_names)
    names = f"({names})" if len(metric_names) > 1 else names
    schema = f"{{{METRICS_NAMESPACE},service,stage,symbol}}"
    return f"""SEARCH('{schema} service="meta_agent" stage="{stage}" {names}', 'Average', {int(PERIOD.to_seconds())})"""


EVENT_METRICS = {
    # metric name -> (filter pattern over the event log, metric value)
    "breaker_transitions": (
        # a merged save's corrections re-announce the stored state (correction: true) and are not
        # counted; IS FALSE matches only an event that has the field (every event published since
        # it exists), so one logged before it is not counted either
        '{ $.detail-type = "CircuitBreakerTripped" && $.detail.current != "ACTIVE" && $.detail.correction IS FALSE }',
        "1",
    ),
    "breaker_drawdown": ('{ $.detail-type = "CircuitBreakerTripped" }', "$.detail.drawdown"),
    "breaker_equity": ('{ $.detail-type = "CircuitBreakerTripped" }', "$.detail.equity"),
    "order_rejections": ('{ $.detail-type = "OrderRejected" }', "1"),
    "regime_changes": ('{ $.detail-type = "RegimeChanged" }', "1"),
    "reconciliation_failures": ('{ $.detail-type = "ReconciliationFailed" }', "1"),
}


EVENT_COUNTS = (
    ("breaker_transitions", "breaker transitions (to REDUCING or HALTED)"),
    ("order_rejections", "OrderRejected events"),
    ("regime_changes", "RegimeChanged events (at least once)"),
    ("reconciliation_failures", "ReconciliationFailed events (one per symbol and run)"),
)
"""The event counts of :data:`EVENT_METRICS` graphed on the business dashboard (sums)."""


@jsii.implements(events.IRuleTarget)
class _LogGroupTarget:
    """A log-group rule target granted by a native log resource policy.

    CDK's ``targets.CloudWatchLogGroup`` installs the resource policy through a custom-resource
    Lambda (outside every rule this app enforces on its own functions); ``AWS::Logs::ResourcePolicy``
    does the same declaratively.
    """

    def __init__(self, log_group: logs.LogGroup, dlq: sqs.IQueue) -> None:
        self._log_group = log_group
        self._dlq = dlq

    def bind(self, rule: events.IRule, _id: str | None = None) -> events.RuleTargetConfig:
        stack = Stack.of(self._log_group)
        arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=self._log_group.log_group_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self._log_group.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[
                    iam.ServicePrincipal("events.amazonaws.com"),
                    iam.ServicePrincipal("delivery.logs.amazonaws.com"),
                ],
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self._log_group.log_group_arn],
            )
        )
        self._dlq.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self._dlq.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": rule.rule_arn}},
            )
        )
        return events.RuleTargetConfig(
            arn=arn,
            dead_letter_config=events.CfnRule.DeadLetterConfigProperty(arn=self._dlq.queue_arn),
            retry_policy=events.CfnRule.RetryPolicyProperty(
                maximum_retry_attempts=TARGET_RETRY_ATTEMPTS,
                maximum_event_age_in_seconds=int(TARGET_MAX_EVENT_AGE.to_seconds()),
            ),
        )


class DomainEventLog(Construct):
    """Every domain event of the bus (source ``ensemble-trader``) copied to a log group.

    The business dashboard queries it with Logs Insights, and the metric filters turn selected
    events into metrics (namespace ``EnsembleTrader/<stage>/events``) that the business dashboard
    graphs (:data:`EVENT_COUNTS`; the breaker's equity and drawdown beside them). No alarm reads
    them: the alarms watch the state the functions report (``account_breaker_state``,
    ``reconcile_symbols_failed``), not the events about it, which are at least once.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        bus: events.IEventBus,
        dlq: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.namespace = f"{METRICS_NAMESPACE}/{config.name}/events"
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/events/{qualified(config.name, 'domain-events')}",
            retention=config.log_retention,
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        events.Rule(
            self,
            "ToLogs",
            rule_name=qualified(config.name, "domain-events-to-logs"),
            description="copy every domain event to CloudWatch Logs (business dashboard, alarms)",
            event_bus=bus,
            event_pattern=events.EventPattern(source=[EVENT_SOURCE]),
            targets=[_LogGroupTarget(self.log_group, dlq)],
        )
        self.metrics: dict[str, cw.Metric] = {}
        for name, (pattern, value) in EVENT_METRICS.items():
            logs.MetricFilter(
                self,
                _construct_name(name),
                log_group=self.log_group,
                filter_pattern=logs.FilterPattern.literal(pattern),
                metric_namespace=self.namespace,
                metric_name=name,
                metric_value=value,
            )
            self.metrics[name] = cw.Metric(namespace=self.namespace, metric_name=name, period=ALARM_PERIOD)


class Monitoring(Construct):
    """Two dashboards per stage and the alarms that notify through :attr:`topic`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        streams: Streams,
        queues: Queues,
        functions: Functions,
        training: Training,
        bus: events.IEventBus,
        cache_admin: lambda_.IFunction | None = None,
        alarm_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=qualified(config.name, "alarms"),
            display_name=f"ensemble-trader {config.name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        # enforce_ssl gives the topic a policy of its own, which replaces SNS's default one (that
        # let the account's services publish): without this statement every alarm's notification
        # would be refused ("not authorized to perform: SNS:Publish")
        stack = Stack.of(self)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    # the stage's alarms only, all named et-<stage>-... (as in the key policy)
                    "ArnLike": {"aws:SourceArn": stack.format_arn(
                        service="cloudwatch", resource="alarm", resource_name=qualified(config.name, "*"),
                        arn_format=ArnFormat.COLON_RESOURCE_NAME)},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self._action = cw_actions.SnsAction(self.topic)
        self.alarms: dict[str, cw.Alarm] = {}
        self.event_log = DomainEventLog(
            self, "DomainEvents", config=config, key=key, bus=bus, dlq=queues.queues["events-dlq"]
        )
        wired = functions.functions

        self.operations = cw.Dashboard(
            self,
            "Operations",
            dashboard_name=qualified(config.name, "operations"),
            default_interval=Duration.hours(3),
        )
        self.business = cw.Dashboard(
            self,
            "Business",
            dashboard_name=qualified(config.name, "business"),
            default_interval=Duration.days(1),
        )
        self.operations.add_widgets(
            cw.TextWidget(
                markdown=(
                    f"# ensemble-trader {config.name}: operations\n"
                    f"Functions deployed: {', '.join(sorted(wired)) or 'none yet'}. "
                    "Compute = per-record stage latency (Powertools EMF); iterator age = Kinesis lag."
                ),
                width=FULL,
                height=2,
            )
        )
        for spec in FUNCTIONS:
            fn = wired.get(spec.logical)
            if fn is not None:
                self._function_row(spec.logical, fn, kinesis=spec.mapping.kind == "kinesis")
        for entry_key, fn in sorted(wired.items()):
            if "." in entry_key:  # extra entries: a row, errors and throttles, a heartbeat if scheduled
                self._entry_row(entry_key, fn)
                self._error_alarms(entry_key, fn)
                self._heartbeat_alarm(entry_key, fn)
        if cache_admin is not None:
            self._cache_admin_row(cache_admin)
        self._queue_row(queues)
        self._stream_row(streams)
        self._business(wired)
        machine = training.state_machine
        self._alarm(
            "TrainingFailed",
            cw.MathExpression(
                expression="FILL(failed, 0) + FILL(timed_out, 0) + FILL(aborted, 0)",
                using_metrics={
                    "failed": machine.metric_failed(period=ALARM_PERIOD, statistic="Sum"),
                    "timed_out": machine.metric_timed_out(period=ALARM_PERIOD, statistic="Sum"),
                    "aborted": machine.metric_aborted(period=ALARM_PERIOD, statistic="Sum"),
                },
                label="training executions failed, timed out or aborted",
                period=ALARM_PERIOD,
            ),
            threshold=1,
            description=f"the weekly agent-training execution of {qualified(config.name, 'train-agents')} "
                        "failed, timed out or was aborted (SageMaker job or its start; docs/runbook.md §1)",
        )

    def _emf(self, name: str, service: str, statistic: str, label: str | None = None) -> cw.Metric:
        return cw.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={"service": service, "stage": self._config.name},
            statistic=statistic,
            period=PERIOD,
            label=label,
        )

    # -- operations ----------------------------------------------------------------------------

    def _function_row(self, logical: str, fn, *, kinesis: bool) -> None:
        title = _construct_name(logical)
        name = function_name(self._config.name, logical)
        compute = compute_metric_name(logical)
        widgets: list[cw.IWidget] = [
            cw.GraphWidget(
                title=f"{title}: compute (µs, {compute})",
                left=[self._emf(compute, logical, "p50", "p50"), self._emf(compute, logical, "p99", "p99")],
                width=6,
            ),
            cw.GraphWidget(
                title=f"{title}: duration (ms)",
                left=[
                    fn.metric_duration(statistic="p50", period=PERIOD, label="p50"),
                    fn.metric_duration(statistic="p99", period=PERIOD, label="p99"),
                ],
                width=6,
            ),
            cw.GraphWidget(
                title=f"{title}: invocations, errors, throttles",
                left=[
                    fn.metric_invocations(period=PERIOD),
                    fn.metric_errors(period=PERIOD),
                    fn.metric_throttles(period=PERIOD),
                ],
                width=6,
            ),
        ]
        if kinesis:
            iterator_age = fn.metric("IteratorAge", statistic="Maximum", period=PERIOD)
            widgets.append(cw.GraphWidget(title=f"{title}: iterator age (ms)", left=[iterator_age], width=6))
            self._alarm(
                f"{title}IteratorAge",
                iterator_age,
                threshold=self._config.iterator_age_alarm_ms,
                evaluation_periods=3,
                description=f"{name} is falling behind its stream (docs/runbook.md §1)",
            )
            # the stage runner reports a symbol's transient failures as partial batch responses,
            # which Lambda's error metrics never see; and a rewritten snapshot means lost writes
            failed = self._emf(f"{logical}_failed_items", logical, "Sum")
            widgets.append(cw.GraphWidget(title=f"{title}: failed records (retried)", left=[failed], width=6))
            if logical == FOREIGN_KEYS_STAGE:
                # should stay at 0: a producer keying bars by something other than their symbol
                # spreads a symbol over shards (late letters, racing batches; docs/features.md)
                widgets.append(cw.GraphWidget(
                    title=f"{title}: bars under a partition key other than their symbol",
                    left=[self._emf(f"{logical}_foreign_partition_keys", logical, "Sum", "foreign partition keys")],
                    width=6,
                ))
            self._alarm(
                f"{title}FailedItems",
                failed,
                threshold=1,
                evaluation_periods=3,
                description=f"{name} keeps reporting records failed (a sink or "
                            "DynamoDB fault; a cache fault alone fails none): see its log (docs/runbook.md §1)",
            )
            self._alarm(
                f"{title}SnapshotReseeded",
                self._emf(f"{logical}_snapshot_reseeded", logical, "Sum"),
                threshold=1,
                description=f"{name}: state snapshots were behind the cache (lost "
                            "writes?) and were rewritten from it (docs/runbook.md §1, §3)",
            )
            if ACCESS[logical].cache:
                # a warning: the runner reads the states from their snapshots and fails no record, so
                # only latency and DynamoDB reads rise; three minutes in a row is an outage, not a blip
                self._alarm(
                    f"{title}CacheUnavailable",
                    self._emf(f"{logical}_cache_unavailable", logical, "Sum"),
                    threshold=1,
                    evaluation_periods=3,
                    description=f"warning: {name} cannot use the cache (unreachable or refusing) and runs "
                                "from the DynamoDB snapshots: no record failed, latency and DynamoDB reads "
                                "rise (docs/runbook.md §3.1)",
                )
        if logical == "orders":
            # SqsFifoPartialProcessor reports a failed intent as a batch-item failure: the invocation
            # succeeds, so Lambda's Errors (and OrdersErrorRate) never count it
            failed = self._emf("intents_failed", logical, "Sum", "failed (retried by SQS)")
            widgets.append(cw.GraphWidget(
                title=f"{title}: failed intents (retried)",
                left=[failed, self._emf("intents_deferred", logical, "Sum", "deferred (invocation ending)")],
                width=6,
            ))
            self._alarm(
                f"{title}FailedItems",
                self._emf("intents_failed", logical, "Sum").with_(period=ALARM_PERIOD),
                threshold=1,
                description=f"{name}: intents failed (broker, DynamoDB or "
                            "idempotency fault) and are retried by SQS, holding back their symbol: see its "
                            "log (docs/runbook.md §1)",
            )
        self.operations.add_widgets(*widgets)
        self._error_alarms(logical, fn)

    def _error_alarms(self, entry_key: str, fn) -> None:
        title = "".join(_construct_name(part) for part in entry_key.split("."))
        name = function_name(self._config.name, entry_key)
        error_rate = cw.MathExpression(
            expression="IF(invocations > 0, 100 * errors / invocations, 0)",
            using_metrics={
                "errors": fn.metric_errors(period=ALARM_PERIOD),
                "invocations": fn.metric_invocations(period=ALARM_PERIOD),
            },
            label=f"{entry_key} error rate (%)",
            period=ALARM_PERIOD,
        )
        self._alarm(
            f"{title}ErrorRate",
            error_rate,
            threshold=self._config.error_rate_alarm_percent,
            description=f"{name} ({entry_key}): at least {self._config.error_rate_alarm_percent}% of "
                        "invocations fail: see its log (docs/runbook.md §1)",
        )
        self._alarm(
            f"{title}Throttles",
            fn.metric_throttles(period=ALARM_PERIOD, statistic="Sum"),
            threshold=1,
            description=f"{name} ({entry_key}) is throttled (concurrency "
                        "exhausted; docs/runbook.md §1)",
        )
        dlq = failure_destination(entry_key)
        if dlq is not None:
            failed = "event (async invocation)" if "." in entry_key else "batch (Kinesis mapping)"
            self._alarm(
                f"{title}DestinationFailures",
                fn.metric("DestinationDeliveryFailures", statistic="Sum", period=ALARM_PERIOD),
                threshold=1,
                description=f"{name} ({entry_key}): Lambda could not send the "
                            f"record of a failed {failed} to its "
                            f"on-failure destination {dlq}, so it is in no queue to inspect or redrive: "
                            "check the queue, its KMS key and the function's grants (docs/runbook.md §1)",
            )

    def _entry_row(self, entry_key: str, fn: lambda_.IFunction) -> None:
        """A row for an EventBridge-invoked entry (the refit, the reconciliation, the kill switch):
        invocations, errors and throttles, and the duration against the function's timeout."""
        logical, _, extra = entry_key.partition(".")
        timeout_ms = next(spec.timeout_of(extra) for spec in FUNCTIONS if spec.logical == logical) * 1000
        name = function_name(self._config.name, entry_key)
        self.operations.add_widgets(
            _calls_widget(name, fn, WIDE),
            cw.GraphWidget(
                title=f"{name}: duration (ms) against its {timeout_ms // 1000} s timeout",
                left=[
                    fn.metric_duration(statistic="Maximum", period=PERIOD, label="max"),
                    fn.metric_duration(statistic="p50", period=PERIOD, label="p50"),
                ],
                left_annotations=[cw.HorizontalAnnotation(value=timeout_ms, label="timeout")],
                width=WIDE,
            ),
        )

    def _heartbeat_alarm(self, entry_key: str, fn: lambda_.IFunction) -> None:
        """An alarm when a scheduled entry was not invoked in its window (:func:`heartbeat_period`):
        the schedule deleted or disabled, its target removed, EventBridge not invoking it. Error
        alarms cannot see it: nothing runs, so nothing fails. Missing data is breaching (no
        invocation gives no datapoint), so on a stage's first deployment it is in ALARM until the
        entry's first scheduled run (docs/deployment.md, alarm table)."""
        period = heartbeat_period(entry_key, self._config)
        if period is None:
            return
        title = "".join(_construct_name(part) for part in entry_key.split("."))
        name = function_name(self._config.name, entry_key)
        self._alarm(
            f"{title}Heartbeat",
            fn.metric_invocations(period=period, statistic="Sum"),
            threshold=1,
            comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.BREACHING,
            description=f"{name} ({entry_key}) was not invoked in {_duration_text(period)}: its EventBridge "
                        "schedule is deleted or disabled, or no longer targets it (docs/runbook.md §1)",
        )

    def _cache_admin_row(self, fn: lambda_.IFunction) -> None:
        """The operator's cache maintenance function: a row and two alarms.

        It runs only when an operator invokes it, rarely and by hand, so an error rate over five
        minutes says no more than a count: any failed run (a refused flush, a bad request, the cache
        unreachable, the timeout) alarms, as does any throttle (a second run while one holds the
        single reserved execution). The alarm tells the team, not only whoever invoked it."""
        title = _construct_name(CACHE_ADMIN)
        name = function_name(self._config.name, CACHE_ADMIN)
        self.operations.add_widgets(
            _calls_widget(title, fn, 8),
            cw.GraphWidget(
                title=f"{title}: duration (ms)",
                left=[fn.metric_duration(statistic="Maximum", period=PERIOD, label="max")],
                width=8,
            ),
            cw.GraphWidget(
                title=f"{title}: keys found and deleted",
                left=[
                    self._emf("cache_admin_keys_found", CACHE_ADMIN, "Sum", "found"),
                    self._emf("cache_admin_keys_deleted", CACHE_ADMIN, "Sum", "deleted"),
                ],
                width=8,
            ),
        )
        self._alarm(
            f"{title}Errors",
            fn.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
            threshold=1,
            description=f"{name}: a run failed (a flush refused while its stage's mapping runs, a "
                        "bad request, the cache unreachable, the timeout): its error is in the answer to "
                        "whoever invoked it and in the function's log (docs/runbook.md §3.1)",
        )
        self._alarm(
            f"{title}Throttles",
            fn.metric_throttles(period=ALARM_PERIOD, statistic="Sum"),
            threshold=1,
            description=f"{name} was throttled: a second run was refused while one held its single "
                        "reserved execution (docs/runbook.md §3.1)",
        )

    def _queue_row(self, queues: Queues) -> None:
        dlqs = sorted(dead_letter_queues())
        depth = [
            queues.queues[name].metric_approximate_number_of_messages_visible(period=PERIOD, label=name)
            for name in dlqs
        ]
        intents = queues.queues["order-intents"]
        self.operations.add_widgets(
            cw.GraphWidget(title="Dead-letter queues: messages", left=depth, width=WIDE),
            cw.GraphWidget(
                title="order-intents: depth and oldest message (s)",
                left=[intents.metric_approximate_number_of_messages_visible(period=PERIOD)],
                right=[intents.metric_approximate_age_of_oldest_message(period=PERIOD)],
                width=WIDE,
            ),
        )
        self._alarm(
            "OrderIntentsStalled",
            intents.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum"),
            threshold=ORDER_INTENT_MAX_AGE_SECONDS,
            evaluation_periods=3,
            description="order-intents holds intents older than "
                        f"{ORDER_INTENT_MAX_AGE_SECONDS} s: {function_name(self._config.name, 'orders')} is failing or "
                        "stalled (docs/runbook.md §1)",
        )
        for name, metric in zip(dlqs, depth, strict=True):
            self._alarm(
                f"{_construct_name(name)}NotEmpty",
                metric.with_(statistic="Maximum"),
                threshold=1,
                description=f"{name} holds failed records: inspect and redrive (docs/runbook.md §5)",
            )

    def _stream_row(self, streams: Streams) -> None:
        # records per minute: CDK's default statistic for these is Average, i.e. records per
        # PutRecords call, which says nothing about throughput
        self.operations.add_widgets(
            cw.GraphWidget(
                title="Streams: incoming records",
                left=[
                    s.metric_incoming_records(period=PERIOD, statistic="Sum", label=name)
                    for name, s in streams.streams.items()
                ],
                width=WIDE,
            ),
            cw.GraphWidget(
                title="Streams: write throttles",
                left=[
                    s.metric_put_records_throttled_records(period=PERIOD, statistic="Sum", label=name)
                    for name, s in streams.streams.items()
                ],
                width=WIDE,
            ),
        )

    # -- business ------------------------------------------------------------------------------

    def _business(self, wired: dict) -> None:
        events_log = self.event_log
        widgets: list[cw.IWidget] = [
            cw.TextWidget(
                markdown=(
                    f"# ensemble-trader {self._config.name}: business\n"
                    f"EMF metrics of `{METRICS_NAMESPACE}` and the domain events in "
                    f"`{events_log.log_group.log_group_name}`."
                ),
                width=FULL,
                height=2,
            )
        ]
        for title, metrics in EMF_METRICS:
            widgets.append(
                cw.GraphWidget(
                    title=title,
                    left=[self._emf(m.name, m.service, m.statistic, m.label) for m in metrics],
                    width=8,
                )
            )
        for title, names in REGRET_METRICS:  # a line per symbol: the dimension is searched, not listed
            widgets.append(
                cw.GraphWidget(
                    title=title,
                    left=[cw.SearchExpression(expression=regret_search(names, self._config.name), label="",
                                              period=PERIOD)],
                    width=8,
                )
            )
        widgets.append(
            cw.GraphWidget(
                title="Account: equity, daily loss and drawdown (orders stage, every intent)",
                left=[self._emf("account_equity", "orders", "Average", "equity")],
                right=[
                    self._emf("account_daily_loss", "orders", "Maximum", "daily loss"),
                    self._emf("account_drawdown", "orders", "Maximum", "drawdown"),
                ],
                width=8,
            )
        )
        widgets.append(
            cw.GraphWidget(
                title="Domain events (event log metric filters, per 5 minutes)",
                left=[events_log.metrics[name].with_(statistic="Sum", label=label) for name, label in EVENT_COUNTS],
                width=8,
            )
        )
        widgets.append(
            cw.GraphWidget(
                title="Equity and drawdown at circuit-breaker transitions",
                left=[events_log.metrics["breaker_equity"].with_(statistic="Average", label="equity")],
                right=[events_log.metrics["breaker_drawdown"].with_(statistic="Maximum", label="drawdown")],
                width=8,
            )
        )
        group = [events_log.log_group.log_group_name]
        weights = ", ".join(f"detail.weights.{agent}" for agent in AGENT_NAMES)
        for title, query, view in (
            (
                "Order rejections by reason",
                'filter `detail-type` = "OrderRejected" | stats count(*) as rejections by detail.reason_code',
                cw.LogQueryVisualizationType.BAR,
            ),
            (
                "Regime timeline (changes)",
                'filter `detail-type` = "RegimeChanged" | fields @timestamp, detail.symbol, detail.from_regime, '
                "detail.to_regime, detail.confidence, detail.event_id | sort @timestamp desc "
                "| dedup detail.event_id | limit 100",  # at least once: a retried batch publishes again
                cw.LogQueryVisualizationType.TABLE,
            ),
            (
                "Agent switches and weights",
                'filter `detail-type` = "AgentSwitched" | fields @timestamp, detail.symbol, detail.regime, '
                f"detail.from_agent, detail.to_agent, {weights}, detail.event_id | sort @timestamp desc "
                "| dedup detail.event_id | limit 100",
                cw.LogQueryVisualizationType.TABLE,
            ),
            (
                "Circuit breaker (state, latch, correction, equity, daily loss, drawdown)",
                'filter `detail-type` = "CircuitBreakerTripped" | fields @timestamp, detail.previous, '
                "detail.current, detail.latched, detail.correction, detail.reason, detail.equity, detail.daily_loss, "
                "detail.drawdown "
                "| sort @timestamp desc | limit 50",
                cw.LogQueryVisualizationType.TABLE,
            ),
            (
                "Reconciliation failures",
                'filter `detail-type` = "ReconciliationFailed" | fields @timestamp, detail.symbol, detail.reasons '
                "| sort @timestamp desc | limit 50",
                cw.LogQueryVisualizationType.TABLE,
            ),
        ):
            widgets.append(
                cw.LogQueryWidget(
                    title=title, log_group_names=group, query_string=query, view=view, width=WIDE
                )
            )
        self.business.add_widgets(*widgets)
        if "orders" in wired:
            # state alarms: every routed intent reports the state (the drawdown too: only then), and
            # a period without intents (market closed, nothing decided) keeps the alarm as it was, so
            # OK means routed intents saw the drawdown below the limit (the breaker ACTIVE, the kill
            # switch off) for a whole period, not that none were routed
            self._alarm(
                "DrawdownLimit",
                self._emf("account_drawdown", "orders", "Maximum").with_(period=ALARM_PERIOD),
                threshold=self._config.drawdown_alarm_fraction,
                description=f"the account's drawdown from its peak reached "
                            f"{self._config.drawdown_alarm_fraction:.0%}; OK once intents are routed "
                            "with it below again (docs/runbook.md §1)",
                treat_missing_data=cw.TreatMissingData.IGNORE,
            )
            # the breaker and the switch are also reported by every scheduled reconciliation (every
            # reconcile_every_minutes) from the stored risk state, so a minute's maximum is the state
            # as it stood then: an OFF (or a reset) clears the alarm at its own minute, or at the next
            # reconciliation when that minute also held the ON; a minute without samples keeps the state
            self._alarm(
                "BreakerTripped",
                self._emf("account_breaker_state", "orders", "Maximum").with_(period=STATE_PERIOD),
                threshold=1,
                description="the risk engine's circuit breaker is not ACTIVE (1 REDUCING, 2 HALTED), as "
                            "routed intents, KillSwitch commands and the scheduled reconciliation report it; "
                            f"OK within {self._config.reconcile_every_minutes} minutes of its reset "
                            "(docs/runbook.md §1)",
                treat_missing_data=cw.TreatMissingData.IGNORE,
            )
            self._alarm(
                "KillSwitchOn",
                self._emf("kill_switch_active", "orders", "Maximum").with_(period=STATE_PERIOD),
                threshold=1,
                description="the kill switch is on: every new order is rejected (KILL_SWITCH); OK within "
                            f"{self._config.reconcile_every_minutes} minutes of it being turned off "
                            "(docs/runbook.md §1)",
                treat_missing_data=cw.TreatMissingData.IGNORE,
            )
            self._alarm(
                "KillSwitchOnIgnored",
                self._emf("kill_switch_on_ignored", "orders", "Sum").with_(period=ALARM_PERIOD),
                threshold=1,
                description="a KillSwitch ON was ignored as older than the command the risk state holds, "
                            "and the switch is off although an operator turned it on; check "
                            "`ensemble-trader orders status` and send ON again (docs/runbook.md §1; the "
                            f"{function_name(self._config.name, 'orders.kill_switch')} log)",
            )
        if "orders.reconcile" in wired:
            # every run that gets as far as its router reports it, 0 included (1: skipped for the
            # placeholder keys): as ReconciliationFailed, a period without a run keeps the state,
            # so the alarm holds while the keys stay missing and clears with the first run after
            self._alarm(
                "BrokerKeysMissing",
                self._emf("broker_keys_missing", "orders", "Maximum").with_(period=ALARM_PERIOD),
                threshold=1,
                description="the broker secret still holds the empty keys the stack created: the "
                            f"reconciliation ({function_name(self._config.name, 'orders.reconcile')}) is "
                            "skipped and no orders function can reach Alpaca; put the key pair in "
                            f"{qualified(self._config.name, 'broker-keys')}; OK once a run builds its "
                            "router (docs/runbook.md §7.1)",
                treat_missing_data=cw.TreatMissingData.IGNORE,
            )
            # every run reports its count, 0 included: a period without a run (the schedule's runs
            # drift against the periods) keeps the state instead of reading as "none failed", so the
            # alarm holds while symbols stay halted and clears with the first run that finds none
            self._alarm(
                "ReconciliationFailed",
                self._emf("reconcile_symbols_failed", "orders", "Maximum").with_(period=ALARM_PERIOD),
                threshold=1,
                description="reconciliation left symbols HALTED: orders/positions disagree with the broker (the log "
                            f"of {function_name(self._config.name, 'orders.reconcile')}); OK once a run finds "
                            "none (docs/runbook.md §1)",
                treat_missing_data=cw.TreatMissingData.IGNORE,
            )

    # -- helpers -------------------------------------------------------------------------------

    def _alarm(
        self,
        alarm_id: str,
        metric: cw.IMetric,
        *,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
        treat_missing_data: cw.TreatMissingData = cw.TreatMissingData.NOT_BREACHING,
        comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    ) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            alarm_id,
            alarm_name=qualified(self._config.name, alarm_id),
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=comparison,
            treat_missing_data=treat_missing_data,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[alarm_id] = alarm
        return alarm
