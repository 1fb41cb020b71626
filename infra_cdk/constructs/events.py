"""The EventBridge bus, its archive, the KillSwitch rule and the schedules.

Every target has its own retry policy and dead-letter queue (``events-dlq``), so an event that
cannot be delivered is kept with its error for 14 days instead of vanishing.

The bus and its archive are encrypted with the stage's customer-managed key (encryption.DataKey),
not an AWS-owned one. EventBridge uses the key on its own behalf, through the key policy: CDK adds
the statements (the bus's scoped to this bus by ``aws:SourceAccount``, ``aws:SourceArn`` and the
``aws:events:event-bus:arn`` encryption context; the archive's by that encryption context), so the
functions that put events need no KMS permission. The bus has a dead-letter queue of its own
(``events-dlq``) for events it cannot encrypt or decrypt (the key disabled, its policy changed).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from ensemble_trader.constants import (
    CONTROL_EVENT_SOURCE,
    EVENT_BUS,
    EVENT_SOURCE,
    KILL_SWITCH_DETAIL_TYPE,
    qualified,
)

from infra_cdk.config import StageConfig

TARGET_RETRY_ATTEMPTS = 4
TARGET_MAX_EVENT_AGE = Duration.hours(1)


@dataclass(frozen=True)
class Route:
    """A rule that is wired only when its target entry has been deployed."""

    rule_id: str
    entry: str  # key of a Functions entry, e.g. "orders.kill_switch"
    description: str


class Events(Construct):
    """The stage's custom bus (domain and control events), archived for replay."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey, dlq: sqs.IQueue
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._dlq = dlq
        name = qualified(config.name, EVENT_BUS)
        self.bus = events.EventBus(self, "Bus", event_bus_name=name, kms_key=key, dead_letter_queue=dlq)
        # the bus's ARN from its name, not the bus's attribute: the archive's key-policy statement
        # names the bus, and the key policy must not depend on the bus, which depends on the key
        # (a dependency cycle CloudFormation refuses)
        bus_arn = Stack.of(self).format_arn(service="events", resource="event-bus", resource_name=name)
        dlq.add_to_resource_policy(
            iam.PolicyStatement(
                sid="BusDeadLetters",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[dlq.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": bus_arn}},
            )
        )
        # events.Archive, not bus.archive(): in aws-cdk-lib 2.275 bus.archive() drops kms_key. Its
        # scope is the bus, as bus.archive() made it: the same construct path keeps the archive's
        # logical id, so a deployed stack updates its archive (and the events it holds) in place
        # instead of creating a second one under the same name, which CloudFormation refuses
        self.archive = events.Archive(
            self.bus,
            "Archive",
            source_event_bus=events.EventBus.from_event_bus_arn(self, "ArchivedBus", bus_arn),
            archive_name=qualified(config.name, "events-archive"),
            description="domain and control events, for replay after an incident",
            event_pattern=events.EventPattern(source=[EVENT_SOURCE, CONTROL_EVENT_SOURCE]),
            retention=Duration.days(90 if config.retain_data else 7),
            kms_key=key,
        )
        self.archive.node.add_dependency(self.bus)  # the ARN names it, so no reference orders them
        self.rules: dict[str, events.Rule] = {}

    def route(self, functions: dict[str, lambda_.IFunction]) -> None:
        """Create the KillSwitch rule and the schedules whose targets exist in ``functions``."""
        config = self._config
        wanted = {
            Route("KillSwitch", "orders.kill_switch", "operator KillSwitch on/off -> orders kill_switch"): (
                self.bus,
                None,
                events.EventPattern(source=[CONTROL_EVENT_SOURCE], detail_type=[KILL_SWITCH_DETAIL_TYPE]),
            ),
            Route("RegimeRefitDaily", "regime.refit", "daily regime-model refit after the close"): (
                None,
                events.Schedule.cron(minute="0", hour=str(config.regime_refit_hour_utc)),
                None,
            ),
            Route(
                "ReconcileSchedule", "orders.reconcile", "orders and positions reconciliation with the broker"
            ): (
                None,
                events.Schedule.rate(Duration.minutes(config.reconcile_every_minutes)),
                None,
            ),
        }
        for route, (bus, schedule, pattern) in wanted.items():
            fn = functions.get(route.entry)
            if fn is None:
                continue
            self.rules[route.rule_id] = events.Rule(
                self,
                route.rule_id,
                rule_name=qualified(config.name, route.rule_id.lower()),
                description=route.description,
                event_bus=bus,  # schedules run on the account's default bus
                schedule=schedule,
                event_pattern=pattern,
                targets=[self.target(fn)],
            )

    def target(self, fn: lambda_.IFunction) -> targets.LambdaFunction:
        """A Lambda target with the shared retry policy and dead-letter queue."""
        return targets.LambdaFunction(
            fn,
            dead_letter_queue=self._dlq,
            retry_attempts=TARGET_RETRY_ATTEMPTS,
            max_event_age=TARGET_MAX_EVENT_AGE,
        )
