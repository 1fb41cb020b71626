"""The one stack of a stage: composes the capability constructs and nothing else."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct
from ensemble_trader.constants import APP_NAME

from infra_cdk.config import StageConfig
from infra_cdk.constructs.broker import BrokerSecret
from infra_cdk.constructs.cache_admin import CacheAdmin
from infra_cdk.constructs.encryption import DataKey
from infra_cdk.constructs.events import Events
from infra_cdk.constructs.functions import Functions
from infra_cdk.constructs.monitoring import Monitoring
from infra_cdk.constructs.network import Network
from infra_cdk.constructs.queues import Queues
from infra_cdk.constructs.registry import ModelRegistry
from infra_cdk.constructs.streams import Streams
from infra_cdk.constructs.tables import Tables
from infra_cdk.constructs.training import Training
from infra_cdk.nag import acknowledge_stack_findings


class TraderStack(Stack):
    """Streams → functions → queue → functions, with state, cache, registry, events and monitoring."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        functions_dir: Path,
        layers_dir: Path,
        training_image_tag: str,
        broker_kind: str,
        symbols: tuple[str, ...],
        alarm_email: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        Tags.of(self).add("app", APP_NAME)
        Tags.of(self).add("stage", config.name)

        key = DataKey(self, "DataKey", config=config).key
        streams = Streams(self, "Streams", config=config, key=key)
        tables = Tables(self, "Tables", config=config, key=key)
        queues = Queues(self, "Queues", config=config, key=key)
        network = Network(self, "Network", config=config, key=key)
        registry = ModelRegistry(self, "ModelRegistry", config=config, key=key)
        broker = BrokerSecret(self, "BrokerSecret", config=config, key=key)
        events = Events(self, "Events", config=config, key=key, dlq=queues.queues["events-dlq"])
        functions = Functions(
            self,
            "Functions",
            config=config,
            functions_dir=functions_dir,
            layers_dir=layers_dir,
            key=key,
            network=network,
            streams=streams,
            queues=queues,
            tables=tables,
            registry=registry,
            broker=broker,
            bus=events.bus,
            broker_kind=broker_kind,
            symbols=symbols,
        )
        events.route(functions.functions)
        cache_admin = CacheAdmin(
            self,
            "CacheAdmin",
            config=config,
            functions_dir=functions_dir,
            functions=functions,
            network=network,
            registry=registry,
            key=key,
        )
        training = Training(
            self,
            "Training",
            config=config,
            key=key,
            registry=registry,
            dlq=queues.queues["events-dlq"],
            image_tag=training_image_tag,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            key=key,
            streams=streams,
            queues=queues,
            functions=functions,
            training=training,
            bus=events.bus,
            cache_admin=cache_admin.function,
            alarm_email=alarm_email,
        )
        self.functions = functions
        acknowledge_stack_findings(
            self,
            streams=streams,
            queues=queues,
            broker=broker,
            registry=registry,
            functions=functions,
            training=training,
            cache_admin=cache_admin,
        )

        CfnOutput(self, "ModelBucket", value=registry.bucket.bucket_name)
        CfnOutput(self, "EventBus", value=events.bus.event_bus_name)
        CfnOutput(self, "CacheEndpoint", value=network.cache.url)
        if cache_admin.function is not None:
            CfnOutput(self, "CacheAdminFunction", value=cache_admin.function.function_name,
                      description="operator function: count or flush the stages' cache keys (runbook §3.1)")
        CfnOutput(self, "AlarmTopic", value=self.monitoring.topic.topic_arn)
        CfnOutput(self, "TrainingRepository", value=training.repository.repository_uri)
        CfnOutput(
            self,
            "WiredFunctions",
            value=",".join(sorted(functions.functions)) or "none",
            description="entries whose handler existed at synth time",
        )
