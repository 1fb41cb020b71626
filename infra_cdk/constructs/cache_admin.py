"""The operator's way into the cache: the ``cache_admin`` maintenance function (docs/runbook.md §3.1).

The cache admits connections only from the functions' security group and only as its IAM-
authenticated application user, so the maintenance path is a function beside the stages: in the
VPC on that security group, with the core layer, ``elasticache:Connect`` on the cache and that
user, and ``lambda:GetEventSourceMapping`` on the stages' own mappings (it refuses to flush a
stage whose mapping is not paused). No trigger: an operator invokes it
(``ensemble-trader cache``, ``aws lambda invoke``). Reserved concurrency 1: one run at a time.
Like the stage functions, it is deployed only when its code (``functions/cache_admin/handler.py``)
exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from ensemble_trader.runtime.cache_admin import CACHE_STAGES, FUNCTION_TIMEOUT_S, MAPPINGS_ENV

from infra_cdk.config import StageConfig
from infra_cdk.constructs.functions import (
    ARCHITECTURE,
    METRICS_NAMESPACE,
    RUNTIME,
    Functions,
    function_name,
    vpc_interfaces_statement,
)
from infra_cdk.constructs.network import Network
from infra_cdk.constructs.registry import ModelRegistry

LOGICAL = "cache_admin"
MEMORY_MB = 256
RESERVED_CONCURRENCY = 1


def has_handler(functions_dir: Path) -> bool:
    """Whether ``functions/cache_admin/handler.py`` defines ``lambda_handler``."""
    path = functions_dir / LOGICAL / "handler.py"
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.FunctionDef) and node.name == "lambda_handler" for node in tree.body)


class CacheAdmin(Construct):
    """The ``cache_admin`` function (``et-<stage>-cache-admin``), its role and its log group.

    :attr:`function` and :attr:`role` are None when the handler does not exist.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        functions_dir: Path,
        functions: Functions,
        network: Network,
        registry: ModelRegistry,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function: lambda_.Function | None = None
        self.role: iam.Role | None = None
        self.log_group: logs.LogGroup | None = None
        if not has_handler(functions_dir):
            return
        name = function_name(config.name, LOGICAL)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{name}",
            retention=config.log_retention,
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"ensemble-trader {config.name} {LOGICAL}",
        )
        self.log_group.grant_write(self.role)
        self.role.add_to_policy(vpc_interfaces_statement())
        # the stages whose functions are deployed have a mapping to check before a flush
        mapped = {stage: functions.kinesis_sources[stage] for stage in CACHE_STAGES if stage in functions.kinesis_sources}
        if mapped:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadStageMappings",
                    actions=["lambda:GetEventSourceMapping"],
                    resources=[source.event_source_mapping_arn for source in mapped.values()],
                )
            )
        environment = {
            "ET_STAGE": config.name,
            # unused here, declared as on every function: the stage's resources are named alike
            # everywhere (sam local's env file blanks it for all functions at once)
            "ET_MODEL_BUCKET": registry.bucket.bucket_name,
            "ET_REDIS_URL": network.cache.url,
            "ET_REDIS_IAM_USER": network.cache.user_name,
            "ET_REDIS_CACHE_NAME": network.cache.name,
            MAPPINGS_ENV: Stack.of(self).to_json_string(
                {stage: source.event_source_mapping_id for stage, source in mapped.items()}
            ),
            "POWERTOOLS_SERVICE_NAME": LOGICAL,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        if config.declares_local_endpoint:  # as every function of such a stage (sam local --env-vars)
            environment["ET_AWS_ENDPOINT_URL"] = ""
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=name,
            description=f"ensemble-trader {config.name}: {LOGICAL} (operator: count or flush the stages' cache keys)",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="handler.lambda_handler",
            code=lambda_.Code.from_asset(str(functions_dir / LOGICAL), exclude=["__pycache__", "*.pyc", "tests"]),
            layers=functions.shared_layers(),
            memory_size=MEMORY_MB,
            timeout=Duration.seconds(FUNCTION_TIMEOUT_S),
            environment=environment,
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            security_groups=[network.function_security_group],
            reserved_concurrent_executions=RESERVED_CONCURRENCY,
        )
        network.cache.grant_connect(self.function)
