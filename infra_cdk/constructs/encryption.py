"""The customer-managed KMS key that encrypts every data resource of a stage."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct
from ensemble_trader.constants import EVENT_BUS, qualified

from infra_cdk.config import StageConfig

LOG_GROUP_PATHS = ("/aws/lambda/", "/aws/events/", "/aws/vpc/", "/aws/vendedlogs/states/")
"""The paths of the stage's log groups: each log group the key encrypts is named
``<path>et-<stage>-<name>`` (the functions', the domain-event log, the VPC flow logs, the training
state machine's), and CloudWatch Logs may use the key for those names only."""


class DataKey(Construct):
    """One rotating CMK for streams, tables, queues, the registry, the secret, logs, alarms, the
    event bus and its archive.

    AWS services that write into encrypted resources on their own behalf are allowed to use the
    key through the key policy, each for this stage's resources only:

    * EventBridge (``kms:GenerateDataKey``, ``kms:Decrypt``), to send an event it could not
      deliver to ``events-dlq``: for the stage's rules (``aws:SourceArn`` like
      ``rule/et-<stage>-*``, which covers the default bus's ``rule/<name>`` and the stage bus's
      ``rule/et-<stage>-events/<name>``) and for the stage's bus (its own dead-letter queue);
    * CloudWatch (``kms:GenerateDataKey*``, ``kms:Decrypt``), to publish an alarm's notification
      to the alarm topic: for the stage's alarms (``aws:SourceArn`` like ``alarm:et-<stage>-*``);
    * CloudWatch Logs, for the log groups named under :data:`LOG_GROUP_PATHS` with the stage's
      prefix (the ``aws:logs:arn`` encryption context).

    The first two also require ``aws:SourceAccount`` to be this account. The patterns are built
    from names, not from the resources' attributes: the rules, the alarms and the log groups
    depend on the key (directly, or through the queue and the topic it encrypts), so a reference
    to them in the key policy would be a dependency cycle. No statement names ``sqs.amazonaws.com``:
    SQS uses the key for whoever sends or receives (a function's role, or a service through its own
    statement above), never on its own behalf. The bus's and the archive's statements (scoped to
    the bus) are added by CDK where infra_cdk.constructs.events creates them.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        prefix = qualified(config.name, "")  # et-<stage>-: every physical name of the stage
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{qualified(config.name, 'data')}",
            description=f"ensemble-trader {config.name}: data at rest",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )
        this_account = {"aws:SourceAccount": stack.account}

        def log_group(name: str) -> str:
            return stack.format_arn(service="logs", resource="log-group", resource_name=name,
                                    arn_format=ArnFormat.COLON_RESOURCE_NAME)

        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgeDeadLetters",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy "*" means this key
                conditions={
                    "StringEquals": this_account,
                    "ArnLike": {
                        "aws:SourceArn": [
                            stack.format_arn(service="events", resource="rule", resource_name=f"{prefix}*"),
                            stack.format_arn(
                                service="events",
                                resource="event-bus",
                                resource_name=qualified(config.name, EVENT_BUS),
                            ),
                        ]
                    },
                },
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmNotifications",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={
                    "StringEquals": this_account,
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name=f"{prefix}*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    },
                },
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogs",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        # the stage's names, and the flow logs' and the state machine's groups as
                        # CloudFormation named them before they had names of their own (``<stack
                        # name>-<id>-<suffix>``): prod retains them when they are replaced, and
                        # they stay readable
                        "kms:EncryptionContext:aws:logs:arn": [
                            *(log_group(f"{path}{prefix}*") for path in LOG_GROUP_PATHS),
                            log_group(f"{stack.stack_name}-*"),
                        ]
                    }
                },
            )
        )
