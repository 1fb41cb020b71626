"""CloudWatch dashboards (operations, business), alarms and the KMS-encrypted alarm topic.

Metric names are the Powertools EMF metrics the handlers publish in the ``EnsembleTrader``
namespace with the ``service`` dimension (= the function's folder name); they are listed in
:data:`BUSINESS_METRICS` and documented in docs/deployment.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct
from ensemble_trader.constants import FUNCTIONS, qualified

from infra_cdk.config import StageConfig
from infra_cdk.constructs.functions import METRICS_NAMESPACE, Functions
from infra_cdk.constructs.queues import Queues, dead_letter_queues
from infra_cdk.constructs.streams import Streams, _construct_name
from infra_cdk.constructs.training import Training

PERIOD = Duration.minutes(1)
WIDE = 12
FULL = 24


def compute_metric_name(logical: str) -> str:
    """The per-stage compute latency each handler records, in microseconds."""
    return f"{logical}_compute_us"


@dataclass(frozen=True)
class BusinessMetric:
    """A business metric: EMF name, the service that emits it, how to aggregate, extra dimension."""

    name: str
    service: str
    statistic: str
    title: str
    by: str | None = None  # a further dimension to split by (SEARCH expression)


BUSINESS_METRICS = (
    BusinessMetric("decisions", "meta_agent", "Sum", "Decisions"),
    BusinessMetric(
        "regime", "regime", "Average", "Regime (0 BULL, 1 BEAR, 2 SIDEWAYS, 3 VOLATILE)", by="symbol"
    ),
    BusinessMetric("regime_changes", "regime", "Sum", "Regime changes"),
    BusinessMetric("agent_weight", "meta_agent", "Average", "Agent weights", by="agent"),
    BusinessMetric("agent_switches", "meta_agent", "Sum", "Agent switches"),
    BusinessMetric("regret", "meta_agent", "Average", "Meta-agent cumulative regret"),
    BusinessMetric("orders_submitted", "orders", "Sum", "Orders submitted"),
    BusinessMetric("orders_filled", "orders", "Sum", "Orders filled"),
    BusinessMetric("orders_rejected", "orders", "Sum", "Order rejections by reason", by="reason"),
    BusinessMetric("pnl", "orders", "Average", "P&L (account currency)"),
    BusinessMetric("drawdown", "orders", "Maximum", "Drawdown (fraction of peak equity)"),
    BusinessMetric("breaker_tripped", "orders", "Sum", "Circuit-breaker trips"),
    BusinessMetric("kill_switch_active", "orders", "Maximum", "Kill switch (1 = on)"),
    BusinessMetric("reconciliation_failed", "orders", "Sum", "Reconciliation failures"),
)


def _emf(name: str, service: str, statistic: str, label: str | None = None) -> cw.Metric:
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": service},
        statistic=statistic,
        period=PERIOD,
        label=label,
    )


def _search(metric: BusinessMetric) -> cw.MathExpression:
    """All series of ``metric`` split by its extra dimension (one line per reason, agent, ...)."""
    return cw.MathExpression(
        expression=(
            f'SEARCH(\'{{{METRICS_NAMESPACE},service,{metric.by}}} MetricName="{metric.name}" '
            f"service=\"{metric.service}\"', '{metric.statistic}', {int(PERIOD.to_seconds())})"
        ),
        label=metric.title,
        using_metrics={},
        period=PERIOD,
    )


class Monitoring(Construct):
    """Two dashboards per stage and the alarms that page through :attr:`topic`."""

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
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self._action = cw_actions.SnsAction(self.topic)
        self.alarms: dict[str, cw.Alarm] = {}
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
                    f"Wired functions: {', '.join(sorted(wired)) or 'none yet'}. "
                    "Compute = Powertools `<stage>_compute_us`; iterator age = Kinesis lag."
                ),
                width=FULL,
                height=2,
            )
        )
        for spec in FUNCTIONS:
            fn = wired.get(spec.logical)
            if fn is None:
                continue
            self._function_row(spec.logical, fn, kinesis=spec.mapping.kind == "kinesis")
        for entry_key, fn in sorted(wired.items()):
            if "." in entry_key:  # extra entries: errors and throttles only
                self._error_alarms(entry_key, fn)
        self._queue_row(queues)
        self._stream_row(streams)
        self._business(wired)
        self._alarm(
            "TrainingFailed",
            training.state_machine.metric_failed(period=Duration.minutes(5), statistic="Sum"),
            threshold=1,
            description="the weekly agent-training execution failed (SageMaker job or its start)",
        )

    # -- operations ----------------------------------------------------------------------------

    def _function_row(self, logical: str, fn, *, kinesis: bool) -> None:
        title = _construct_name(logical)
        compute = compute_metric_name(logical)
        widgets: list[cw.IWidget] = [
            cw.GraphWidget(
                title=f"{title}: compute (µs)",
                left=[
                    _emf(compute, logical, "p50", "p50"),
                    _emf(compute, logical, "p99", "p99"),
                ],
                width=6,
            ),
            cw.GraphWidget(
                title=f"{title}: duration (ms)",
                left=[
                    fn.metric_duration(statistic="p50", period=PERIOD),
                    fn.metric_duration(statistic="p99", period=PERIOD),
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
                description=f"{logical} is falling behind its stream",
            )
        self.operations.add_widgets(*widgets)
        self._error_alarms(logical, fn)

    def _error_alarms(self, entry_key: str, fn) -> None:
        title = "".join(_construct_name(part) for part in entry_key.split("."))
        error_rate = cw.MathExpression(
            expression="100 * errors / MAX([invocations, 1])",
            using_metrics={
                "errors": fn.metric_errors(period=Duration.minutes(5)),
                "invocations": fn.metric_invocations(period=Duration.minutes(5)),
            },
            label=f"{entry_key} error rate (%)",
            period=Duration.minutes(5),
        )
        self._alarm(
            f"{title}ErrorRate",
            error_rate,
            threshold=self._config.error_rate_alarm_percent,
            description=f"{entry_key}: more than {self._config.error_rate_alarm_percent}% of invocations fail",
        )
        self._alarm(
            f"{title}Throttles",
            fn.metric_throttles(period=Duration.minutes(5), statistic="Sum"),
            threshold=1,
            description=f"{entry_key} is throttled (concurrency exhausted)",
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
        for name, metric in zip(dlqs, depth, strict=True):
            self._alarm(
                f"{_construct_name(name)}NotEmpty",
                metric.with_(statistic="Maximum"),
                threshold=1,
                description=f"{name} holds failed records: inspect and redrive (docs/runbook.md)",
            )

    def _stream_row(self, streams: Streams) -> None:
        self.operations.add_widgets(
            cw.GraphWidget(
                title="Streams: incoming records",
                left=[
                    s.metric_incoming_records(period=PERIOD, label=name)
                    for name, s in streams.streams.items()
                ],
                width=WIDE,
            ),
            cw.GraphWidget(
                title="Streams: write throttles",
                left=[
                    s.metric_put_records_throttled_records(period=PERIOD, label=name)
                    for name, s in streams.streams.items()
                ],
                width=WIDE,
            ),
        )

    # -- business ------------------------------------------------------------------------------

    def _business(self, wired: dict) -> None:
        widgets: list[cw.IWidget] = [
            cw.TextWidget(
                markdown=f"# ensemble-trader {self._config.name}: business\nEMF metrics of namespace `{METRICS_NAMESPACE}`.",
                width=FULL,
                height=2,
            )
        ]
        for metric in BUSINESS_METRICS:
            series: cw.IMetric = (
                _search(metric) if metric.by else _emf(metric.name, metric.service, metric.statistic)
            )
            widgets.append(cw.GraphWidget(title=metric.title, left=[series], width=8))
        self.business.add_widgets(*widgets)
        if "orders" in wired:
            self._alarm(
                "DrawdownLimit",
                _emf("drawdown", "orders", "Maximum"),
                threshold=self._config.drawdown_alarm_fraction,
                description=f"drawdown above {self._config.drawdown_alarm_fraction:.0%} of peak equity",
            )
            self._alarm(
                "BreakerTripped",
                _emf("breaker_tripped", "orders", "Sum"),
                threshold=1,
                description="the risk engine's circuit breaker tripped: trading is halted",
            )
        if "orders.reconcile" in wired:
            self._alarm(
                "ReconciliationFailed",
                _emf("reconciliation_failed", "orders", "Sum", None).with_(period=Duration.minutes(5)),
                threshold=1,
                description="orders/positions disagree with the broker or reconciliation could not run",
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
    ) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            alarm_id,
            alarm_name=qualified(self._config.name, alarm_id),
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[alarm_id] = alarm
        return alarm
