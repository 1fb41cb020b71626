"""The VPC the functions run in, its endpoints, and the ElastiCache Serverless (Valkey) cache."""

from __future__ import annotations

from aws_cdk import ArnFormat, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct
from ensemble_trader.constants import qualified

from infra_cdk.config import StageConfig

CACHE_PORT = 6379
INTERFACE_ENDPOINTS = {
    # construct id -> service: every AWS API the functions call stays inside the VPC
    "Kinesis": ec2.InterfaceVpcEndpointAwsService.KINESIS_STREAMS,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Events": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "XRay": ec2.InterfaceVpcEndpointAwsService.XRAY,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
}


class Network(Construct):
    """A two-AZ VPC: public subnets hold only the NAT gateways, functions run in private subnets.

    AWS services are reached through gateway endpoints (DynamoDB, S3) and interface endpoints
    (Kinesis, SQS, EventBridge, Secrets Manager, CloudWatch Logs and metrics, X-Ray, KMS). The NAT
    gateway exists for one reason: the orders function calls the broker's public API. VPC flow
    logs go to an encrypted log group.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            # named under the stage's prefix: the key policy lets CloudWatch Logs use the key for
            # those names only (infra_cdk.constructs.encryption.LOG_GROUP_PATHS)
            log_group_name=f"/aws/vpc/{qualified(config.name, 'flow-logs')}",
            retention=config.log_retention,
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                ),
            ],
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        self.private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.function_security_group = ec2.SecurityGroup(
            self,
            "FunctionSecurityGroup",
            vpc=self.vpc,
            description="ensemble-trader functions: outbound only",
            allow_all_outbound=True,
        )
        endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="VPC interface endpoints: HTTPS from the functions",
            allow_all_outbound=False,
        )
        endpoint_security_group.add_ingress_rule(
            self.function_security_group, ec2.Port.tcp(443), "HTTPS from the functions"
        )
        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        for name, service in INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=self.private_subnets,
                security_groups=[endpoint_security_group],
                private_dns_enabled=True,
                open=False,  # only the functions' security group, not the whole VPC CIDR
            )
        self.cache = Cache(
            self,
            "Cache",
            config=config,
            key=key,
            vpc=self.vpc,
            subnets=self.private_subnets,
            clients=self.function_security_group,
        )


class Cache(Construct):
    """ElastiCache Serverless for Valkey: TLS in transit, KMS at rest, IAM authentication.

    Destroyed with the stack in every stage (a cache: the state is snapshotted to DynamoDB).
    Clients connect with TLS (``rediss://``) as the IAM-authenticated user :attr:`user_name`,
    signing a short-lived token with their role; a role needs ``elasticache:Connect`` on the
    cache and on the user (:meth:`grant_connect`). No password exists to leak or rotate. The
    default user is disabled by leaving it out of the user group.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        clients: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="ElastiCache Serverless: Valkey (TLS) from the functions",
            allow_all_outbound=False,
        )
        # 6379 is the primary endpoint; 6380 the reader endpoint of a serverless cache.
        security_group.add_ingress_rule(clients, ec2.Port.tcp_range(CACHE_PORT, CACHE_PORT + 1), "Valkey")
        self.name = qualified(config.name, "cache")
        self.user_name = qualified(config.name, "app")
        user = elasticache.CfnUser(
            self,
            "User",
            engine="valkey",
            user_id=self.user_name,
            user_name=self.user_name,  # IAM authentication requires user id == user name
            access_string="on ~* +@all -@dangerous",
            authentication_mode={"Type": "iam"},
        )
        user_group = elasticache.CfnUserGroup(
            self,
            "UserGroup",
            engine="valkey",
            user_group_id=qualified(config.name, "app-users"),
            user_ids=[self.user_name],
        )
        user_group.add_resource_dependency(user)
        self.resource = elasticache.CfnServerlessCache(
            self,
            "Serverless",
            serverless_cache_name=self.name,
            engine="valkey",
            major_engine_version="8",
            kms_key_id=key.key_arn,
            security_group_ids=[security_group.security_group_id],
            subnet_ids=vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids,
            user_group_id=user_group.user_group_id,
            snapshot_retention_limit=config.cache_snapshot_retention_days,
            daily_snapshot_time="05:00",
        )
        self.resource.add_resource_dependency(user_group)
        # Destroyed with the stack in every stage: it is a cache, never the only copy (state is
        # snapshotted to DynamoDB and rebuilt from it). Retained, it would outlive the security
        # group, subnets and user group it uses, and the stack's deletion would fail on them.
        self.resource.apply_removal_policy(RemovalPolicy.DESTROY)
        self._user = user
        self.url = Fn.join(
            "",
            ["rediss://", self.resource.attr_endpoint_address, ":", self.resource.attr_endpoint_port, "/0"],
        )

    def grant_connect(self, grantee: iam.IGrantable) -> None:
        """Allow ``grantee`` to authenticate to this cache as the application user."""
        stack = Stack.of(self)
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["elasticache:Connect"],
                resources=[
                    self.resource.attr_arn,
                    # ElastiCache user ARNs use a colon: arn:aws:elasticache:<region>:<account>:user:<id>
                    stack.format_arn(service="elasticache", resource="user", resource_name=self.user_name,
                                     arn_format=ArnFormat.COLON_RESOURCE_NAME),
                ],
            )
        )
