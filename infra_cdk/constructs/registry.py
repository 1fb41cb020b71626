"""The S3 model registry (ONNX agents, regime parameters, manifests) and its access-log bucket."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct
from ensemble_trader.constants import MODEL_BUCKET, qualified

from infra_cdk.config import StageConfig

TRAINING_DATA_PREFIX = "training/data/"
TRAINING_OUTPUT_PREFIX = "training/output/"
REGIME_PREFIX = "regime/"


class ModelRegistry(Construct):
    """A versioned, KMS-encrypted bucket that refuses plain HTTP and public access.

    Layout: ``regime/<version>/...`` with ``regime/current.json`` pinning the version the regime
    function loads and ``regime/symbols/<SYMBOL>/current.json`` a symbol's own (the daily refit
    and ``ensemble-trader regime publish`` write there); ``training/{data,output}/`` for the agent
    training job. Versioning keeps every object ever written, so going back to an older model is a
    pointer change (see docs/runbook.md). Server
    access logs go to a separate bucket (SSE-S3: log delivery cannot use a customer key).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=config.removal_policy,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=None,  # globally unique names are CloudFormation's job; ET_MODEL_BUCKET carries it
            versioned=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{qualified(config.name, MODEL_BUCKET)}/",
            lifecycle_rules=[s3.LifecycleRule(noncurrent_version_expiration=Duration.days(365))],
            removal_policy=config.removal_policy,
        )
