"""The weekly agent-training job: a SageMaker training job started by a Step Functions task.

Why Step Functions and not a direct EventBridge Scheduler SDK target: ``CreateTrainingJob`` needs a
unique job name per run, which a static scheduler payload cannot produce; one state with the
``.sync`` integration names the job after the execution, waits for it, and turns a failed job into
a failed execution that the monitoring construct alarms on. The job runs the project's training
image (``et-<stage>-training`` in ECR, built from ``training/Dockerfile``; CI does not push it),
which writes ONNX agents and their manifest to ``/opt/ml/model``; SageMaker uploads them under
``training/output/`` of the registry, and promotion (a commit under ``layers/models/agents``,
shipped in the core layer) is a reviewed step (docs/runbook.md §4).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct
from ensemble_trader.constants import qualified

from infra_cdk.config import StageConfig
from infra_cdk.constructs.events import TARGET_MAX_EVENT_AGE, TARGET_RETRY_ATTEMPTS
from infra_cdk.constructs.registry import TRAINING_DATA_PREFIX, TRAINING_OUTPUT_PREFIX, ModelRegistry

MAX_TRAINING_TIME = Duration.hours(6)


class Training(Construct):
    """The training image repository, the SageMaker execution role, the state machine and its schedule."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        registry: ModelRegistry,
        dlq: sqs.IQueue,
        image_tag: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.repository = ecr.Repository(
            self,
            "Images",
            repository_name=qualified(config.name, "training"),
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=key,
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
            empty_on_delete=not config.retain_data,
        )
        self.role = iam.Role(
            self,
            "SageMakerRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"ensemble-trader {config.name}: SageMaker agent-training job",
        )
        registry.bucket.grant_read(self.role, f"{TRAINING_DATA_PREFIX}*")
        # write on training/output/ is granted by the task's output location (S3Location.bind, for writing)
        self.repository.grant_pull(self.role)
        key.grant_encrypt_decrypt(self.role)
        stack = Stack.of(self)
        log_group_arn = (
            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws/sagemaker/TrainingJobs"
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="TrainingJobLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[log_group_arn, f"{log_group_arn}:log-stream:*"],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="TrainingJobMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData takes no resource; limited to SageMaker's namespace
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            )
        )
        train = tasks.SageMakerCreateTrainingJob(
            self,
            "TrainAgents",
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            training_job_name=sfn.JsonPath.format(
                f"{qualified(config.name, 'agents')}-{{}}", sfn.JsonPath.string_at("$$.Execution.Name")
            ),
            role=self.role,
            algorithm_specification=tasks.AlgorithmSpecification(
                training_image=tasks.DockerImage.from_ecr_repository(self.repository, image_tag),
                training_input_mode=tasks.InputMode.FILE,
            ),
            input_data_config=[
                tasks.Channel(
                    channel_name="train",
                    data_source=tasks.DataSource(
                        s3_data_source=tasks.S3DataSource(
                            s3_location=tasks.S3Location.from_bucket(registry.bucket, TRAINING_DATA_PREFIX),
                            s3_data_type=tasks.S3DataType.S3_PREFIX,
                        )
                    ),
                )
            ],
            output_data_config=tasks.OutputDataConfig(
                s3_output_location=tasks.S3Location.from_bucket(registry.bucket, TRAINING_OUTPUT_PREFIX),
                encryption_key=key,
            ),
            resource_config=tasks.ResourceConfig(
                instance_count=1,
                instance_type=ec2.InstanceType(config.training_instance_type.removeprefix("ml.")),
                volume_size=Size.gibibytes(30),
                volume_encryption_key=key,
            ),
            stopping_condition=tasks.StoppingCondition(max_runtime=MAX_TRAINING_TIME),
            environment={"OMP_NUM_THREADS": "1", "ET_STAGE": config.name},
        )
        log_group = logs.LogGroup(
            self,
            "StateMachineLogs",
            # named under the stage's prefix: the key policy lets CloudWatch Logs use the key for
            # those names only (infra_cdk.constructs.encryption.LOG_GROUP_PATHS); /aws/vendedlogs/
            # is the path AWS recommends for Step Functions' log groups
            log_group_name=f"/aws/vendedlogs/states/{qualified(config.name, 'train-agents')}",
            retention=config.log_retention,
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=qualified(config.name, "train-agents"),
            definition_body=sfn.DefinitionBody.from_chainable(train),
            timeout=MAX_TRAINING_TIME.plus(Duration.hours(1)),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        self.schedule = events.Rule(
            self,
            "Weekly",
            rule_name=qualified(config.name, "train-agents-weekly"),
            description="weekly agent training (SageMaker) via Step Functions",
            schedule=events.Schedule.cron(minute="0", hour="2", week_day=config.training_weekday),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    dead_letter_queue=dlq,
                    retry_attempts=TARGET_RETRY_ATTEMPTS,
                    max_event_age=TARGET_MAX_EVENT_AGE,
                )
            ],
        )
