"""The Lambda functions of the pipeline, their layers, roles, event-source mappings and scaling.

A function is deployed only when its code exists: :func:`discover_entries` looks for
``functions/<logical>/handler.py`` (and the extra entries a :class:`FunctionSpec` lists) at synth
time, so ``cdk synth`` never ships a handler that has not been written.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct
from ensemble_trader.constants import EVENT_SOURCE, FUNCTIONS, QUEUES, STREAMS, FunctionSpec, qualified
from ensemble_trader.runtime.orders import reconcile_grace_seconds_for, require_grace_past_redelivery

from infra_cdk.config import StageConfig
from infra_cdk.constructs.broker import BrokerSecret
from infra_cdk.constructs.network import Network
from infra_cdk.constructs.queues import Queues
from infra_cdk.constructs.registry import REGIME_PREFIX, ModelRegistry
from infra_cdk.constructs.streams import Streams, _construct_name
from infra_cdk.constructs.tables import Tables

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
METRICS_NAMESPACE = "EnsembleTrader"
MODELS_DIR_IN_LAMBDA = "/opt/models"
PROVISIONED_UTILISATION_TARGET = 0.7
ASYNC_RETRY_ATTEMPTS = 2
ASYNC_MAX_EVENT_AGE = Duration.hours(1)


class LayersNotBuiltError(FileNotFoundError):
    """The layer folders the app packages do not exist: run ``python layers/build.py`` first."""


@dataclass(frozen=True)
class Access:
    """What one entry may touch; each item becomes one narrowly scoped grant."""

    tables: tuple[str, ...] = ()  # read/write data
    read_tables: tuple[str, ...] = ()
    regime_models: str = ""  # "" | "read" | "write": the registry's regime/ prefix
    put_events: bool = False
    cache: bool = False
    broker: bool = False  # the broker layer (alpaca-py); the broker secret with an Alpaca broker


PAPER_BOOK_TABLE = "paper-broker"
ORDER_BOOK_TABLES = ("orders", "positions", "risk-state", PAPER_BOOK_TABLE)

ACCESS: dict[str, Access] = {
    "features": Access(tables=("stage-state",), cache=True),
    "regime": Access(
        tables=("stage-state", "regime-history"), regime_models="read", put_events=True, cache=True
    ),
    "regime.refit": Access(read_tables=("regime-history",), regime_models="write", put_events=True),
    "meta_agent": Access(tables=("bandit-state", "decisions"), put_events=True, cache=True),
    "orders": Access(tables=(*ORDER_BOOK_TABLES, "idempotency"), put_events=True, broker=True),
    "orders.reconcile": Access(tables=ORDER_BOOK_TABLES, put_events=True, broker=True),
    "orders.kill_switch": Access(tables=ORDER_BOOK_TABLES, put_events=True, broker=True),
}
"""Per entry (``<logical>`` or ``<logical>.<extra entry>``) the resources it may use."""


@dataclass(frozen=True)
class Entry:
    """One deployable handler: a function folder and the Python callable Lambda invokes."""

    spec: FunctionSpec
    entry: str  # "handler" for the main entry, else the extra entry's name
    handler: str  # "module.function"

    @property
    def key(self) -> str:
        return self.spec.logical if self.entry == "handler" else f"{self.spec.logical}.{self.entry}"

    @property
    def is_main(self) -> bool:
        return self.entry == "handler"

    @property
    def timeout_seconds(self) -> int:
        return self.spec.timeout_of(self.entry)


def _top_level_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def discover_entries(functions_dir: Path) -> list[Entry]:
    """The entries whose code exists under ``functions_dir``, in :data:`FUNCTIONS` order.

    The main entry is ``handler.lambda_handler``. An extra entry ``e`` is ``e.lambda_handler`` when
    ``functions/<logical>/e.py`` defines it, else ``handler.e`` or ``handler.e_handler`` when the
    main module defines such a function. Anything else is not deployed.
    """
    found: list[Entry] = []
    for spec in FUNCTIONS:
        folder = functions_dir / spec.logical
        main = folder / "handler.py"
        if not main.is_file() or "lambda_handler" not in _top_level_functions(main):
            continue
        found.append(Entry(spec, "handler", "handler.lambda_handler"))
        main_functions = _top_level_functions(main)
        for extra in spec.extra_entries:
            module = folder / f"{extra}.py"
            if module.is_file() and "lambda_handler" in _top_level_functions(module):
                found.append(Entry(spec, extra, f"{extra}.lambda_handler"))
            else:
                for name in (extra, f"{extra}_handler"):
                    if name in main_functions:
                        found.append(Entry(spec, extra, f"handler.{name}"))
                        break
    return found


def env_number(value: float) -> str:
    """``value`` as an environment variable's text, exactly (``:g`` keeps six digits: 1234567
    became 1.23457e+06)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def function_name(stage: str, entry_key: str) -> str:
    """Physical function name: ``orders.kill_switch`` → ``et-<stage>-orders-kill-switch``."""
    return qualified(stage, entry_key.replace(".", "-").replace("_", "-"))


def vpc_interfaces_statement() -> iam.PolicyStatement:
    """What Lambda needs to manage a function's network interfaces in the VPC."""
    return iam.PolicyStatement(
        sid="VpcNetworkInterfaces",
        actions=[
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSubnets",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        ],
        resources=["*"],  # Lambda's ENI management; these actions take no resource ARN
    )


def domain_events_statement(bus: events.IEventBus) -> iam.PolicyStatement:
    """``events:PutEvents`` on the stage's bus, for events whose ``source`` is the domain events'
    (:data:`~ensemble_trader.constants.EVENT_SOURCE`, the only source the functions' publishers
    use; the condition key ``events:source`` of PutEvents). Not ``bus.grant_put_events_to``, which
    admits any source: with it every function that publishes could put the operator's
    ``ensemble-trader.control`` KillSwitch event, which the KillSwitch rule routes to the
    kill_switch entry (turning the switch off, or on). Only an operator's credentials send it."""
    return iam.PolicyStatement(
        sid="PutDomainEvents",
        actions=["events:PutEvents"],
        resources=[bus.event_bus_arn],
        conditions={"StringEquals": {"events:source": EVENT_SOURCE}},
    )


class Functions(Construct):
    """Builds every discovered entry with the shared layers and wires its feed.

    Main entries are fed by event-source mappings built from their :class:`SourceMapping`
    (Kinesis: enhanced fan-out consumer, batch size, batching window, bisect on error, retries,
    maximum record age, ReportBatchItemFailures, on-failure destination = the function's
    dead-letter queue; SQS: batch size and ReportBatchItemFailures, retries through the queue's
    redrive policy). Hot-path functions run behind a ``live`` alias with provisioned concurrency
    scaled by application auto-scaling; the orders function has reserved concurrency. Extra
    entries are invoked asynchronously by EventBridge (see :class:`~infra_cdk.constructs.events.Events`):
    their failures go to the events dead-letter queue.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        functions_dir: Path,
        layers_dir: Path,
        key: kms.IKey,
        network: Network,
        streams: Streams,
        queues: Queues,
        tables: Tables,
        registry: ModelRegistry,
        broker: BrokerSecret,
        bus: events.IEventBus,
        broker_kind: str,
        symbols: tuple[str, ...],
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.entries = discover_entries(functions_dir)
        self.functions: dict[str, lambda_.Function] = {}
        self.aliases: dict[str, lambda_.Alias] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        self.roles: dict[str, iam.Role] = {}
        self._broker_kind = broker_kind
        self._symbols = symbols
        self._layers_dir = layers_dir
        self._built_layers: dict[str, lambda_.ILayerVersion] = {}
        self._broker_layer: lambda_.ILayerVersion | None = None
        # the Kinesis event sources of the stage functions, by logical name (their mappings' ids
        # and ARNs: the cache_admin function checks that a stage is paused before a flush)
        self.kinesis_sources: dict[str, sources.KinesisConsumerEventSource] = {}
        layers = self.shared_layers() if self.entries else []
        for entry in self.entries:
            fn = self._function(entry, functions_dir, layers, key, network, registry, broker, queues)
            self.functions[entry.key] = fn
            self._grant(entry, fn, tables, registry, broker, network, bus)
            self._grant_outputs(entry, fn, streams, queues)
            if entry.is_main:
                target = self._alias(entry, fn) if entry.spec.hot_path else fn
                self._feed(entry, target, streams, queues)

    # -- building blocks -----------------------------------------------------------------------

    def shared_layers(self) -> list[lambda_.ILayerVersion]:
        """The deps and core layers every function uses (built on first use, once)."""
        if not self._built_layers:
            self._built_layers = self._layers(self._layers_dir)
            self._broker_layer = self._built_layers["broker"]
        return [self._built_layers[name] for name in ("deps", "core")]

    def _layers(self, layers_dir: Path) -> dict[str, lambda_.ILayerVersion]:
        layers = {}
        for name, description in (
            ("deps", "third-party run-time packages (layers/requirements-lambda.txt)"),
            ("core", "ensemble_trader package and the committed model artifacts (/opt/models)"),
            ("broker", "live broker client for the orders functions (layers/requirements-broker.txt)"),
        ):
            folder = layers_dir / name
            if not folder.is_dir():
                raise LayersNotBuiltError(
                    f"layer folder {folder} is missing: build the layers first (`make layers`, "
                    "i.e. `python layers/build.py`)"
                )
            layers[name] = lambda_.LayerVersion(
                self,
                f"{name.capitalize()}Layer",
                # bytecode a local run wrote into build/layers is not part of the layer (it would
                # also change the asset's hash, and so publish a new layer version, for nothing)
                code=lambda_.Code.from_asset(str(folder), exclude=["__pycache__", "*.pyc"]),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[ARCHITECTURE],
                description=f"ensemble-trader {name}: {description}",
                removal_policy=self._config.removal_policy,
            )
        return layers

    def _function(
        self,
        entry: Entry,
        functions_dir: Path,
        layers: list[lambda_.ILayerVersion],
        key: kms.IKey,
        network: Network,
        registry: ModelRegistry,
        broker: BrokerSecret,
        queues: Queues,
    ) -> lambda_.Function:
        config = self._config
        name = function_name(config.name, entry.key)
        construct_id = "".join(_construct_name(part) for part in entry.key.split("."))
        log_group = logs.LogGroup(
            self,
            f"{construct_id}Logs",
            log_group_name=f"/aws/lambda/{name}",
            retention=config.log_retention,
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        self.log_groups[entry.key] = log_group
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"ensemble-trader {config.name} {entry.key}",
        )
        log_group.grant_write(role)
        self.roles[entry.key] = role
        role.add_to_policy(vpc_interfaces_statement())
        environment = {
            "ET_STAGE": config.name,
            "ET_MODEL_BUCKET": registry.bucket.bucket_name,
            "ET_MODELS_DIR": MODELS_DIR_IN_LAMBDA,
            "POWERTOOLS_SERVICE_NAME": entry.spec.logical,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        if config.declares_local_endpoint:  # empty: AWS's endpoints; sam local --env-vars may override it
            environment["ET_AWS_ENDPOINT_URL"] = ""
        if ACCESS[entry.key].cache:
            environment |= {
                "ET_REDIS_URL": network.cache.url,
                "ET_REDIS_IAM_USER": network.cache.user_name,
                "ET_REDIS_CACHE_NAME": network.cache.name,
            }
        if ACCESS[entry.key].broker:
            alpaca = self._broker_kind in ("alpaca", "alpaca-live")
            environment |= {
                "ET_ORDERS_BROKER": "alpaca" if alpaca else self._broker_kind,
                "ET_ORDERS_ALPACA_SECRET_NAME": broker.secret_name,
                # the account is split equally between the traded symbols
                "ET_ORDERS_DEFAULT_ALLOCATION": f"{1 / len(self._symbols):.6g}",
            }
            # a PENDING order is retired NOT_AT_BROKER only once nothing attempted it for longer
            # than its intent's redelivery gap on the queue as deployed (refused otherwise)
            environment["ET_ORDERS_RECONCILE_GRACE_SECONDS"] = env_number(require_grace_past_redelivery(
                reconcile_grace_seconds_for(entry.spec), entry.spec,
                queues.visibility_timeouts[entry.spec.mapping.source],
            ))
            if alpaca:  # the paper endpoint unless deployed for live trading
                environment["ET_ORDERS_ALPACA_PAPER"] = "false" if self._broker_kind == "alpaca-live" else "true"
            if config.initial_equity is not None:  # the account the router sizes orders and limits for
                environment["ET_ORDERS_INITIAL_EQUITY"] = env_number(config.initial_equity)
            if config.max_intent_age_seconds is not None:  # late intents are refused (STALE_INTENT)
                environment["ET_RISK_MAX_INTENT_AGE_SECONDS"] = env_number(config.max_intent_age_seconds)
        if entry.key == "regime.refit":
            environment["ET_REGIME_SYMBOLS"] = ",".join(self._symbols)
        is_orders = entry.is_main and entry.spec.mapping.kind == "sqs"
        fn = lambda_.Function(
            self,
            construct_id,
            function_name=name,
            description=f"ensemble-trader {config.name}: {entry.key} ({entry.handler})",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=entry.handler,
            code=lambda_.Code.from_asset(
                str(functions_dir / entry.spec.logical), exclude=["__pycache__", "*.pyc", "tests"]
            ),
            # CDK lists them sorted by construct path (the layer flag), so no file may be in two layers
            layers=[*layers, self._broker_layer] if ACCESS[entry.key].broker else layers,
            memory_size=entry.spec.memory_mb,
            timeout=Duration.seconds(entry.timeout_seconds),
            environment=environment,
            role=role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            security_groups=[network.function_security_group],
            reserved_concurrent_executions=config.orders_reserved_concurrency if is_orders else None,
            # Async invocations (EventBridge targets) that fail all retries land in the events DLQ.
            # (an on-failure destination, which records the error with the event, not a legacy DLQ).
            on_failure=None if entry.is_main else destinations.SqsDestination(queues.queues["events-dlq"]),
            retry_attempts=None if entry.is_main else ASYNC_RETRY_ATTEMPTS,
            max_event_age=None if entry.is_main else ASYNC_MAX_EVENT_AGE,
        )
        return fn

    def _grant(
        self,
        entry: Entry,
        fn: lambda_.Function,
        tables: Tables,
        registry: ModelRegistry,
        broker: BrokerSecret,
        network: Network,
        bus: events.IEventBus,
    ) -> None:
        access = ACCESS[entry.key]
        alpaca = self._broker_kind in ("alpaca", "alpaca-live")
        for logical in access.tables:
            if logical == PAPER_BOOK_TABLE and alpaca:  # the paper book is the paper broker's only
                continue
            tables.tables[logical].grant_read_write_data(fn)
        for logical in access.read_tables:
            tables.tables[logical].grant_read_data(fn)
        if access.regime_models == "read":
            registry.bucket.grant_read(fn, f"{REGIME_PREFIX}*")
        elif access.regime_models == "write":  # publishes new versions; never deletes one
            registry.bucket.grant_read(fn, f"{REGIME_PREFIX}*")
            registry.bucket.grant_put(fn, f"{REGIME_PREFIX}*")
        if access.put_events:  # the domain events' source only: never the operator's control events
            fn.add_to_role_policy(domain_events_statement(bus))
        if access.cache:
            network.cache.grant_connect(fn)
        if access.broker and alpaca:  # the Alpaca keys, read only by an Alpaca broker (make_broker)
            broker.grant_read(fn)

    def _grant_outputs(self, entry: Entry, fn: lambda_.Function, streams: Streams, queues: Queues) -> None:
        if not entry.is_main:
            return
        # the stage runner sends a record it rejects (bad input) to the DLQ itself, with the reason
        queues.queues[entry.spec.dead_letter_queue].grant_send_messages(fn)
        for output in entry.spec.outputs:
            if output in STREAMS:
                streams.streams[output].grant_write(fn)
            elif output in QUEUES:
                queues.queues[output].grant_send_messages(fn)
            else:
                raise ValueError(f"{entry.key}: output {output!r} is neither a stream nor a queue")

    def _alias(self, entry: Entry, fn: lambda_.Function) -> lambda_.Alias:
        """A ``live`` alias with provisioned concurrency that follows utilisation.

        ``current_version`` is named by a hash of the function's properties, its layers included
        only through the feature flag ``@aws-cdk/aws-lambda:recognizeLayerVersion``
        (``infra_cdk.app.FEATURE_FLAGS``): with it a deploy that changes only a layer (core: the
        domain code and the models) publishes a new version and moves the alias to it."""
        config = self._config
        alias = lambda_.Alias(
            self,
            f"{_construct_name(entry.spec.logical)}Live",
            alias_name="live",
            version=fn.current_version,
            provisioned_concurrent_executions=config.provisioned_concurrency_min,
        )
        scaling = alias.add_auto_scaling(
            min_capacity=config.provisioned_concurrency_min,
            max_capacity=config.provisioned_concurrency_max,
        )
        scaling.scale_on_utilization(utilization_target=PROVISIONED_UTILISATION_TARGET)
        self.aliases[entry.key] = alias
        return alias

    def _feed(self, entry: Entry, target: lambda_.IFunction, streams: Streams, queues: Queues) -> None:
        mapping = entry.spec.mapping
        if mapping.kind == "kinesis":
            consumer = streams.consumer(mapping.source, entry.spec.logical)
            source = sources.KinesisConsumerEventSource(
                consumer,
                # a new mapping (first deployment, or one CloudFormation replaces) reads what the
                # stream still holds: the stages skip bars they already applied, so nothing unread
                # is lost and nothing is applied twice
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=mapping.batch_size,
                max_batching_window=(
                    Duration.seconds(mapping.batching_window_seconds)
                    if mapping.batching_window_seconds
                    else None
                ),
                bisect_batch_on_error=mapping.bisect_on_error,
                retry_attempts=mapping.retry_attempts,
                max_record_age=(  # None: unlimited (the stream's retention), CloudFormation's -1
                    Duration.seconds(mapping.max_record_age_seconds)
                    if mapping.max_record_age_seconds >= 0
                    else None
                ),
                report_batch_item_failures=mapping.report_batch_item_failures,
                parallelization_factor=mapping.parallelization_factor,
                on_failure=sources.SqsDlq(queues.queues[entry.spec.dead_letter_queue]),
            )
            target.add_event_source(source)
            self.kinesis_sources[entry.spec.logical] = source
        elif mapping.kind == "sqs":
            reserved = self._config.orders_reserved_concurrency
            target.add_event_source(
                sources.SqsEventSource(
                    queues.queues[mapping.source],
                    batch_size=mapping.batch_size,
                    report_batch_item_failures=mapping.report_batch_item_failures,
                    max_concurrency=reserved if reserved >= 2 else None,
                )
            )
        else:
            raise ValueError(f"{entry.key}: unknown source kind {mapping.kind!r}")
