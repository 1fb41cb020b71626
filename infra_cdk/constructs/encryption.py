"""The customer-managed KMS key that encrypts every data resource of a stage."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct
from ensemble_trader.constants import qualified

from infra_cdk.config import StageConfig


class DataKey(Construct):
    """One rotating CMK for streams, tables, queues, the registry, the secret, logs, alarms, the
    event bus and its archive.

    AWS services that write into encrypted resources on their own behalf (EventBridge into a
    dead-letter queue, CloudWatch alarms into the SNS topic, CloudWatch Logs into log groups)
    are allowed to use the key through the key policy, scoped to this account. The bus's and the
    archive's statements (scoped to the bus) are added by CDK where infra_cdk.constructs.events
    creates them.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{qualified(config.name, 'data')}",
            description=f"ensemble-trader {config.name}: data at rest",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )
        for service in ("events.amazonaws.com", "cloudwatch.amazonaws.com", "sqs.amazonaws.com"):
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=f"Allow{service.split('.')[0].capitalize()}",
                    principals=[iam.ServicePrincipal(service)],
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    resources=["*"],  # in a key policy "*" means this key
                    conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
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
                        "kms:EncryptionContext:aws:logs:arn": f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:*"
                    }
                },
            )
        )
