"""The Secrets Manager secret that holds the broker's API keys."""

from __future__ import annotations

from aws_cdk import SecretValue, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct
from ensemble_trader.constants import qualified
from ensemble_trader.runtime.broker_keys import PLACEHOLDER

from infra_cdk.config import StageConfig


class BrokerSecret(Construct):
    """``{"api_key": ..., "secret_key": ...}`` (Alpaca's keys), set by an operator after deploy.

    Only the order-handling functions are granted read access (:meth:`grant_read`); nothing else
    in the stack can read it. The value is created with empty keys (``runtime.broker_keys.PLACEHOLDER``,
    which the scheduled reconciliation recognises: it reports the keys missing, alarm
    ``BrokerKeysMissing``, instead of failing every 5 minutes); the orders functions read it only
    when ``ET_ORDERS_BROKER=alpaca`` (context ``broker=alpaca``), the paper broker needs none.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.secret_name = qualified(config.name, "broker-keys")
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            secret_name=self.secret_name,
            description="Broker API keys for the orders function (set after deploy; see docs/deployment.md)",
            encryption_key=key,
            # Empty keys, not a secret: an operator puts the real ones in after the first deploy.
            secret_object_value={name: SecretValue.unsafe_plain_text(value) for name, value in PLACEHOLDER.items()},
            removal_policy=config.removal_policy,
        )
        self._key = key

    def grant_read(self, grantee: iam.IGrantable) -> None:
        """Read the secret, and decrypt it through Secrets Manager, by ``grantee``'s own policy.

        Not ``Secret.grant_read``: it puts the decrypt grant in the key's policy, naming the role,
        and the key (retained in production) would then reference roles a stack deletion removes.
        """
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            resource_arns=[self.secret.secret_arn],
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kms:Decrypt"],
            resource_arns=[self._key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{Stack.of(self).region}.amazonaws.com"}},
        )
