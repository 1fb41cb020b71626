"""cdk-nag acknowledgements: every one names the finding and says why it is acceptable here.

cdk-nag 3.x runs as a validation plugin (see :func:`infra_cdk.app.build_app`); synthesis fails on
any finding that is not acknowledged. Acknowledgements sit on the narrowest construct that carries
the finding, so a new resource of the same kind elsewhere is still checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from constructs import IConstruct

from infra_cdk.constructs.functions import ACCESS
from infra_cdk.constructs.queues import dead_letter_queues

if TYPE_CHECKING:
    from infra_cdk.constructs.broker import BrokerSecret
    from infra_cdk.constructs.cache_admin import CacheAdmin
    from infra_cdk.constructs.functions import Functions
    from infra_cdk.constructs.queues import Queues
    from infra_cdk.constructs.registry import ModelRegistry
    from infra_cdk.constructs.streams import Streams
    from infra_cdk.constructs.training import Training

KMS_GRANT = ("kms:ReEncrypt*", "kms:GenerateDataKey*")
S3_READ_GRANT = ("s3:GetObject*", "s3:GetBucket*", "s3:List*")
S3_PUT_GRANT = ("s3:Abort*",)


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge ``finding`` (``AwsSolutions-XXX``, ``Serverless-XXX`` or a full IAM finding id)."""
    pack = finding.split("-", 1)[0]
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"{pack}::{finding}", reason=reason))


def acknowledge_grant_wildcards(scope: IConstruct, *, actions: tuple[str, ...], reason: str) -> None:
    """IAM5 on the wildcard action groups CDK's grant methods emit (``s3:GetObject*`` ...)."""
    for action in actions:
        acknowledge(scope, f"AwsSolutions-IAM5[Action::{action}]", reason)


def acknowledge_streams(streams: IConstruct) -> None:
    acknowledge(
        streams,
        "AwsSolutions-KDS3",
        "Streams use the stage's customer-managed key on purpose (one auditable key policy for all "
        "data, revocable); the rule only accepts the AWS-managed aws/kinesis key.",
    )


def acknowledge_dead_letter_queue(queue: IConstruct) -> None:
    reason = (
        "Terminal dead-letter queue: it receives records that failed every retry, keeps them 14 days "
        "and alarms when not empty; a DLQ of a DLQ would only move the same records."
    )
    acknowledge(queue, "AwsSolutions-SQS3", reason)
    acknowledge(queue, "Serverless-SQSRedrivePolicy", reason)


def acknowledge_broker_secret(secret: IConstruct) -> None:
    acknowledge(
        secret,
        "AwsSolutions-SMG4",
        "Broker API keys are issued by the broker and can only be rotated in its console; the runbook "
        "rotates them there and puts the new pair in this secret (no rotation Lambda can do it).",
    )


def acknowledge_synchronous_function(fn: IConstruct, *, kinesis: bool) -> None:
    """A function fed by an event-source mapping: failures are handled by the mapping, not a function DLQ."""
    acknowledge(
        fn,
        "Serverless-LambdaDLQ",
        "Invoked synchronously by its event-source mapping; a function DLQ only applies to "
        "asynchronous invocations. Records that fail all retries go to the stage's DLQ through "
        + ("the mapping's on-failure destination." if kinesis else "the source queue's redrive policy."),
    )


def acknowledge_asynchronous_function(fn: IConstruct) -> None:
    acknowledge(
        fn,
        "Serverless-LambdaDLQ",
        "Asynchronous failures go to the events DLQ through the function's on-failure destination, "
        "which records the error with the event; a legacy DeadLetterConfig would duplicate it.",
    )


def acknowledge_operator_function(fn: IConstruct) -> None:
    """A function only an operator invokes, synchronously (``cache_admin``): no event source."""
    acknowledge(
        fn,
        "Serverless-LambdaDLQ",
        "Invoked only by an operator, synchronously (ensemble-trader cache, aws lambda invoke): the caller "
        "receives every error in the answer and nothing is retried, so there is no failed event to keep.",
    )


def acknowledge_sqs_mapping(mapping: IConstruct) -> None:
    acknowledge(
        mapping,
        "Serverless-LambdaEventSourceMappingDestination",
        "SQS event-source mappings take no on-failure destination; the FIFO order-intents queue "
        "redrives to the FIFO orders DLQ after the configured retries.",
    )


def acknowledge_function_role(role: IConstruct, *, regime_models: str, bucket_id: str) -> None:
    """A function role: the ENI and X-Ray actions on '*' (each named in the reason); KMS and S3
    grants are key/prefix scoped."""
    acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::*]",
        "Lambda's management of the function's VPC network interfaces (the EC2 actions of AWS's "
        "managed policy AWSLambdaVPCAccessExecutionRole, on '*' as there): ec2:DescribeNetworkInterfaces "
        "and ec2:DescribeSubnets take no resource ARN; ec2:CreateNetworkInterface, "
        "ec2:DeleteNetworkInterface, ec2:AssignPrivateIpAddresses and ec2:UnassignPrivateIpAddresses act "
        "on interfaces Lambda creates and names itself. X-Ray tracing: xray:PutTraceSegments and "
        "xray:PutTelemetryRecords take no resource ARN. No data resource (table, stream, queue, bucket, "
        "secret) is granted on '*'.",
    )
    acknowledge_grant_wildcards(
        role,
        actions=KMS_GRANT,
        reason="kms:GenerateDataKey*/ReEncrypt* on the stage's single data key ARN only (CDK grant).",
    )
    if regime_models:
        acknowledge_grant_wildcards(
            role,
            actions=S3_READ_GRANT + (S3_PUT_GRANT if regime_models == "write" else ()),
            reason="CDK's S3 grant action groups, restricted to the registry bucket's regime/ prefix.",
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/regime/*]",
            "Regime-model versions under the registry's regime/ prefix; the refit names them at run time.",
        )


def _arn_prefix(stack: cdk.Stack, service: str) -> str:
    """How cdk-nag spells an ARN prefix in a finding id: literals where the stack's env is known."""
    region = "<AWS::Region>" if cdk.Token.is_unresolved(stack.region) else stack.region
    account = "<AWS::AccountId>" if cdk.Token.is_unresolved(stack.account) else stack.account
    return f"arn:<AWS::Partition>:{service}:{region}:{account}"


def acknowledge_training(sagemaker_role: IConstruct, state_machine_role: IConstruct, bucket_id: str) -> None:
    stack = cdk.Stack.of(sagemaker_role)
    acknowledge_grant_wildcards(
        sagemaker_role,
        actions=S3_READ_GRANT + S3_PUT_GRANT + KMS_GRANT,
        reason="CDK grant action groups scoped to the registry's training/ prefixes and the stage's data key.",
    )
    acknowledge_grant_wildcards(
        sagemaker_role,
        actions=("s3:DeleteObject*",),
        reason="Emitted by the SageMakerCreateTrainingJob task's write grant on its output location, "
        "the registry's training/output/ prefix only; promoted models live under other prefixes.",
    )
    acknowledge(
        sagemaker_role,
        "AwsSolutions-IAM5[Resource::*]",
        "ecr:GetAuthorizationToken and cloudwatch:PutMetricData accept no resource ARN "
        "(PutMetricData is conditioned on SageMaker's namespace).",
    )
    acknowledge(
        sagemaker_role,
        f"AwsSolutions-IAM5[Resource::{_arn_prefix(stack, 'logs')}:log-group:/aws/sagemaker/TrainingJobs:log-stream:*]",
        "SageMaker names one log stream per training job at run time, inside its fixed log group.",
    )
    for prefix in ("training/data/*", "training/output/*"):
        acknowledge(
            sagemaker_role,
            f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}]",
            "Objects under one prefix of the registry bucket; object keys are chosen per run.",
        )
    acknowledge(
        state_machine_role,
        "AwsSolutions-IAM5[Resource::*]",
        "Step Functions' X-Ray tracing (xray:PutTraceSegments, xray:PutTelemetryRecords, "
        "xray:GetSamplingRules, xray:GetSamplingTargets) and CloudWatch Logs delivery "
        "(logs:CreateLogDelivery, logs:GetLogDelivery, logs:UpdateLogDelivery, logs:DeleteLogDelivery, "
        "logs:ListLogDeliveries, logs:PutResourcePolicy, logs:DescribeResourcePolicies, "
        "logs:DescribeLogGroups) accept no resource ARN. sagemaker:ListTags is granted on '*' by CDK's "
        "SageMakerCreateTrainingJob task itself (a read of tags, no data).",
    )
    acknowledge(
        state_machine_role,
        f"AwsSolutions-IAM5[Resource::{_arn_prefix(stack, 'sagemaker')}:training-job/*]",
        "Each run creates a training job named after its execution; the name is unknown at deploy time.",
    )


def acknowledge_stack_findings(
    stack: cdk.Stack,
    *,
    streams: Streams,
    queues: Queues,
    broker: BrokerSecret,
    registry: ModelRegistry,
    functions: Functions,
    training: Training,
    cache_admin: CacheAdmin | None = None,
) -> None:
    """Apply every acknowledgement above to the constructs of one :class:`TraderStack`."""
    acknowledge_streams(streams)
    for name in sorted(dead_letter_queues()):
        acknowledge_dead_letter_queue(queues.queues[name])
    acknowledge_broker_secret(broker.secret)
    bucket_id = stack.resolve(stack.get_logical_id(registry.bucket.node.default_child))
    for entry_key, role in functions.roles.items():
        acknowledge_function_role(
            role, regime_models=ACCESS[entry_key].regime_models, bucket_id=bucket_id
        )
    for entry in functions.entries:
        if entry.is_main:
            kinesis = entry.spec.mapping.kind == "kinesis"
            acknowledge_synchronous_function(functions.functions[entry.key], kinesis=kinesis)
            if not kinesis:
                acknowledge_sqs_mapping(functions.functions[entry.key])  # the mapping is its child
        else:
            acknowledge_asynchronous_function(functions.functions[entry.key])
    acknowledge_training(training.role, training.state_machine.role, bucket_id)
    if cache_admin is not None and cache_admin.function is not None:
        acknowledge_function_role(cache_admin.role, regime_models="", bucket_id=bucket_id)
        acknowledge_operator_function(cache_admin.function)
