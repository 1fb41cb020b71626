"""DynamoDB tables, one per :data:`ensemble_trader.constants.TABLES` entry."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct
from ensemble_trader.constants import TABLES, qualified

from infra_cdk.config import StageConfig
from infra_cdk.constructs.streams import _construct_name


class Tables(Construct):
    """On-demand tables with point-in-time recovery, the stage's KMS key and TTL where declared.

    Keys are strings, exactly as the shared constants declare them; the local stack creates the
    same tables, so handler code never branches on where it runs. Production tables are retained
    when the stack is deleted and protected against deletion.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.tables: dict[str, dynamodb.Table] = {}
        for spec in TABLES:
            string = dynamodb.AttributeType.STRING
            self.tables[spec.logical] = dynamodb.Table(
                self,
                _construct_name(spec.logical),
                table_name=qualified(config.name, spec.logical),
                partition_key=dynamodb.Attribute(name=spec.partition_key, type=string),
                sort_key=dynamodb.Attribute(name=spec.sort_key, type=string) if spec.sort_key else None,
                time_to_live_attribute=spec.ttl_attribute,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=key,
                deletion_protection=config.retain_data,
                removal_policy=config.removal_policy,
            )
