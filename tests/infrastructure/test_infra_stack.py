"""The synthesised stack: counts, event-source mappings from the constants, encryption, IAM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ensemble_trader.constants import FUNCTIONS, QUEUES, STREAMS, TABLES, qualified

from infra_cdk.constructs.cache_admin import has_handler
from infra_cdk.constructs.functions import ACCESS, discover_entries, function_name
from infra_cdk.constructs.monitoring import EVENT_METRICS, compute_metric_name
from infra_cdk.constructs.queues import dead_letter_queues
from tests.infrastructure.conftest import FULL_CONTEXT, synthesise, write_fixture_handlers

STAGE = "dev"
N_ENTRIES = sum(1 + len(spec.extra_entries) for spec in FUNCTIONS)
KINESIS_SPECS = [spec for spec in FUNCTIONS if spec.mapping.kind == "kinesis"]
SQS_SPECS = [spec for spec in FUNCTIONS if spec.mapping.kind == "sqs"]
DATA_SERVICES = ("dynamodb:", "kinesis:", "sqs:", "s3:", "secretsmanager:", "kms:", "elasticache:", "events:")


def _logical_id_of(template: dict, kind: str, prop: str, value: str) -> str:
    matches = [
        k
        for k, v in template["Resources"].items()
        if v["Type"] == kind and v["Properties"].get(prop) == value
    ]
    assert len(matches) == 1, f"expected one {kind} with {prop}={value!r}, found {matches}"
    return matches[0]


def _function_name_of_mapping(template: dict, mapping: dict) -> str:
    """Follow an ESM's FunctionName (a Ref to a function or to an alias of one) to the name."""
    resources = template["Resources"]
    [ref] = _refs(mapping["FunctionName"])
    target = resources[ref]
    if target["Type"] == "AWS::Lambda::Alias":
        target = resources[target["Properties"]["FunctionName"]["Ref"]]
    return target["Properties"]["FunctionName"]


def _refs(value) -> list[str]:
    """Every ``Ref`` inside a CloudFormation value (intrinsics nest)."""
    if isinstance(value, dict):
        return [value["Ref"]] if "Ref" in value else [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _statements(policy: dict) -> list[dict]:
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _roles_of_function(template: dict, name: str) -> str:
    fn = template["Resources"][_logical_id_of(template, "AWS::Lambda::Function", "FunctionName", name)]
    return fn["Properties"]["Role"]["Fn::GetAtt"][0]


def _policies_of_role(template: dict, role_id: str) -> list[dict]:
    return [
        v
        for v in template["Resources"].values()
        if v["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in v["Properties"].get("Roles", [])
    ]


# -- counts -----------------------------------------------------------------------------------


def test_resource_counts_follow_the_constants(full):
    assert len(full.resources("AWS::Kinesis::Stream")) == len(STREAMS)
    assert len(full.resources("AWS::DynamoDB::Table")) == len(TABLES)
    assert len(full.resources("AWS::SQS::Queue")) == len(QUEUES)
    assert len(full.resources("AWS::Lambda::Function")) == N_ENTRIES
    assert len(full.resources("AWS::Lambda::LayerVersion")) == 3  # deps, core, broker
    assert len(full.resources("AWS::Kinesis::StreamConsumer")) == len(KINESIS_SPECS)
    assert len(full.resources("AWS::Lambda::EventSourceMapping")) == len(FUNCTIONS)
    assert len(full.resources("AWS::ElastiCache::ServerlessCache")) == 1
    assert len(full.resources("AWS::SecretsManager::Secret")) == 1
    assert len(full.resources("AWS::Events::EventBus")) == 1
    assert len(full.resources("AWS::CloudWatch::Dashboard")) == 2
    assert len(full.resources("AWS::StepFunctions::StateMachine")) == 1


def test_the_real_tree_deploys_exactly_the_handlers_that_exist(real):
    expected = {function_name("prod", entry.key) for entry in discover_entries(real.functions_dir)}
    if has_handler(real.functions_dir):  # the operator's cache_admin function, outside the pipeline
        expected.add(function_name("prod", "cache_admin"))
    deployed = {p["FunctionName"] for p in real.props("AWS::Lambda::Function")}
    assert deployed == expected
    outputs = real.template["Outputs"]["WiredFunctions"]["Value"]
    assert outputs == (",".join(sorted(e.key for e in discover_entries(real.functions_dir))) or "none")


# -- event-source mappings ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", KINESIS_SPECS, ids=lambda s: s.logical)
def test_kinesis_mapping_settings_come_from_the_function_spec(full, spec):
    template = full.template
    mappings = [
        p
        for p in full.props("AWS::Lambda::EventSourceMapping")
        if _function_name_of_mapping(template, p) == function_name(STAGE, spec.logical)
    ]
    assert len(mappings) == 1
    m, mapping = mappings[0], spec.mapping
    assert m["BatchSize"] == mapping.batch_size
    assert m.get("MaximumBatchingWindowInSeconds", 0) == mapping.batching_window_seconds
    assert m["BisectBatchOnFunctionError"] is mapping.bisect_on_error
    assert m["MaximumRetryAttempts"] == mapping.retry_attempts
    assert m.get("MaximumRecordAgeInSeconds", -1) == mapping.max_record_age_seconds == -1  # the stream's retention
    assert m["ParallelizationFactor"] == mapping.parallelization_factor
    assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert m["StartingPosition"] == "TRIM_HORIZON"  # a replaced mapping loses no unread record
    # enhanced fan-out: the source is the function's consumer on its input stream
    consumer = template["Resources"][m["EventSourceArn"]["Fn::GetAtt"][0]]
    assert consumer["Type"] == "AWS::Kinesis::StreamConsumer"
    stream_id = consumer["Properties"]["StreamARN"]["Fn::GetAtt"][0]
    assert template["Resources"][stream_id]["Properties"]["Name"] == qualified(STAGE, mapping.source)
    # on-failure destination: the function's own dead-letter queue
    dlq_id = m["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    assert template["Resources"][dlq_id]["Properties"]["QueueName"] == qualified(
        STAGE, spec.dead_letter_queue
    )


@pytest.mark.parametrize("spec", SQS_SPECS, ids=lambda s: s.logical)
def test_sqs_mapping_and_fifo_queue_with_redrive(full, spec):
    template = full.template
    queue_id = _logical_id_of(template, "AWS::SQS::Queue", "QueueName", qualified(STAGE, spec.mapping.source))
    queue = template["Resources"][queue_id]["Properties"]
    assert queue["FifoQueue"] is True
    assert queue["VisibilityTimeout"] >= 6 * spec.timeout_seconds
    redrive = queue["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == spec.mapping.max_receive_count == max(10, spec.mapping.retry_attempts + 1)
    dlq = template["Resources"][redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]]["Properties"]
    assert dlq["QueueName"] == qualified(STAGE, spec.dead_letter_queue)
    assert dlq.get("FifoQueue") is True  # a FIFO queue can only redrive to a FIFO queue
    [m] = [
        p
        for p in full.props("AWS::Lambda::EventSourceMapping")
        if p["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    ]
    assert m["BatchSize"] == spec.mapping.batch_size
    assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert _function_name_of_mapping(template, m) == function_name(STAGE, spec.logical)


def test_every_dead_letter_queue_keeps_messages_fourteen_days_and_alarms(full):
    alarms = {p["AlarmName"] for p in full.props("AWS::CloudWatch::Alarm")}
    for name in dead_letter_queues():
        queue_id = _logical_id_of(full.template, "AWS::SQS::Queue", "QueueName", qualified(STAGE, name))
        assert full.template["Resources"][queue_id]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
        camel = "".join(part.capitalize() for part in name.split("-"))
        assert qualified(STAGE, f"{camel}NotEmpty") in alarms


# -- functions ----------------------------------------------------------------------------------


def test_functions_runtime_architecture_tracing_vpc_and_environment(full):
    for props in full.props("AWS::Lambda::Function"):
        assert props["Runtime"] == "python3.14"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["VpcConfig"]["SubnetIds"] and props["VpcConfig"]["SecurityGroupIds"]
        env = props["Environment"]["Variables"]
        assert env["ET_STAGE"] == STAGE
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "EnsembleTrader"
        assert env["ET_MODELS_DIR"] == "/opt/models"
        assert env["POWERTOOLS_SERVICE_NAME"] in {spec.logical for spec in FUNCTIONS}
        assert "ET_MODEL_BUCKET" in env
        brokers = {function_name(STAGE, key) for key, access in ACCESS.items() if access.broker}
        talks_to_broker = props["FunctionName"] in brokers
        assert ("ET_ORDERS_BROKER" in env) == talks_to_broker
        if talks_to_broker:
            assert float(env["ET_ORDERS_DEFAULT_ALLOCATION"]) == 1.0  # one symbol (SPY) by default
        assert len(props["Layers"]) == (3 if talks_to_broker else 2)  # the broker layer only where needed
        if props["FunctionName"] in {function_name(STAGE, s.logical) for s in KINESIS_SPECS}:
            assert env["ET_REDIS_URL"]["Fn::Join"][1][0] == "rediss://"  # TLS to the cache


def test_log_groups_have_retention_and_encryption(full):
    groups = {p.get("LogGroupName"): p for p in full.props("AWS::Logs::LogGroup")}
    for props in full.props("AWS::Lambda::Function"):
        group = groups[f"/aws/lambda/{props['FunctionName']}"]
        assert group["RetentionInDays"] == 14
        assert "KmsKeyId" in group


def test_hot_path_provisioned_concurrency_autoscaling_and_reserved_orders(full):
    aliases = full.props("AWS::Lambda::Alias")
    hot = [spec for spec in FUNCTIONS if spec.hot_path]
    assert len(aliases) == len(hot)
    for alias in aliases:
        assert alias["Name"] == "live"
        assert alias["ProvisionedConcurrencyConfig"]["ProvisionedConcurrentExecutions"] >= 1
    targets = full.props("AWS::ApplicationAutoScaling::ScalableTarget")
    assert len(targets) == len(hot)
    assert all(t["ScalableDimension"] == "lambda:function:ProvisionedConcurrency" for t in targets)
    assert len(full.props("AWS::ApplicationAutoScaling::ScalingPolicy")) == len(hot)
    orders = full.template["Resources"][
        _logical_id_of(full.template, "AWS::Lambda::Function", "FunctionName", function_name(STAGE, "orders"))
    ]["Properties"]
    assert orders["ReservedConcurrentExecutions"] >= 1


def test_asynchronous_entries_have_retries_and_a_failure_destination(full):
    configs = full.props("AWS::Lambda::EventInvokeConfig")
    extras = sum(len(spec.extra_entries) for spec in FUNCTIONS)
    assert len(configs) == extras
    for config in configs:
        assert config["MaximumRetryAttempts"] == 2
        assert "OnFailure" in config["DestinationConfig"]


# -- encryption and durability --------------------------------------------------------------------


def test_streams_tables_queues_bucket_topic_cache_secret_are_kms_encrypted(full):
    for props in full.props("AWS::Kinesis::Stream"):
        assert props["StreamEncryption"]["EncryptionType"] == "KMS"
    for props in full.props("AWS::DynamoDB::Table"):
        assert (
            props["SSESpecification"]["SSEEnabled"] is True and props["SSESpecification"]["SSEType"] == "KMS"
        )
        assert props["SSESpecification"]["KMSMasterKeyId"]
    for props in full.props("AWS::SQS::Queue"):
        assert "KmsMasterKeyId" in props
    for props in full.props("AWS::SNS::Topic"):
        assert "KmsMasterKeyId" in props
    [cache] = full.props("AWS::ElastiCache::ServerlessCache")
    assert cache["Engine"] == "valkey" and "KmsKeyId" in cache and "UserGroupId" in cache
    [user] = full.props("AWS::ElastiCache::User")
    assert user["AuthenticationMode"] == {"Type": "iam"}
    [secret] = full.props("AWS::SecretsManager::Secret")
    assert "KmsKeyId" in secret
    [key] = full.props("AWS::KMS::Key")
    assert key["EnableKeyRotation"] is True


def test_cloudwatch_may_publish_the_alarms_to_their_topic(full):
    """The topic's own policy (enforce_ssl) replaces SNS's default one: CloudWatch needs a statement
    of its own, or every alarm's notification is refused."""
    [policy] = full.props("AWS::SNS::TopicPolicy")
    statements = policy["PolicyDocument"]["Statement"]
    [allow] = [s for s in statements if s.get("Sid") == "CloudWatchAlarmsPublish"]
    assert allow["Effect"] == "Allow" and allow["Action"] == "sns:Publish"
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert "aws:SourceArn" in allow["Condition"]["ArnLike"] and "aws:SourceAccount" in allow["Condition"]["StringEquals"]
    # the stage's alarms only (all are named et-<stage>-...; test_infra_key_policy_scope checks that)
    [arn] = allow["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Join"][1][-1:]
    assert arn == f":alarm:{qualified(STAGE, '*')}"
    assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false" for s in statements)


def test_tables_on_demand_with_pitr_and_ttl_from_constants(full):
    for spec in TABLES:
        table_id = _logical_id_of(
            full.template, "AWS::DynamoDB::Table", "TableName", qualified(STAGE, spec.logical)
        )
        props = full.template["Resources"][table_id]["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
        assert keys["HASH"] == spec.partition_key and keys.get("RANGE") == spec.sort_key
        ttl = props.get("TimeToLiveSpecification")
        assert (ttl["AttributeName"] if ttl else None) == spec.ttl_attribute


def test_model_registry_bucket_is_versioned_private_tls_only_and_logged(full):
    buckets = full.resources("AWS::S3::Bucket")
    registry = [v["Properties"] for v in buckets.values() if "VersioningConfiguration" in v["Properties"]]
    assert len(registry) == 1
    props = registry[0]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert rule["SSEAlgorithm"] == "aws:kms"
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert "LoggingConfiguration" in props
    for policy in full.props("AWS::S3::BucketPolicy"):
        denies = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


def test_prod_retains_data_and_protects_tables(real):
    for kind in ("AWS::DynamoDB::Table", "AWS::Kinesis::Stream", "AWS::S3::Bucket", "AWS::KMS::Key"):
        for resource in real.resources(kind).values():
            assert resource["DeletionPolicy"] == "Retain", kind
    for props in real.props("AWS::DynamoDB::Table"):
        assert props["DeletionProtectionEnabled"] is True


def test_the_cache_is_destroyed_with_the_stack_even_in_prod(real):
    """A cache, never the only copy (state snapshots are in DynamoDB): retained, it outlived its
    security group, subnets and user group, and the stack's deletion failed on them."""
    [cache] = real.resources("AWS::ElastiCache::ServerlessCache").values()
    assert cache["DeletionPolicy"] == "Delete"


def _references(value) -> set[str]:
    """Every logical id a CloudFormation value names: Ref, Fn::GetAtt (either form), Fn::Sub."""
    if isinstance(value, list):
        return {r for v in value for r in _references(v)}
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, inner in value.items():
        if key == "Ref" and isinstance(inner, str):
            found.add(inner)
        elif key == "Fn::GetAtt":
            found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
        elif key == "Fn::Sub":
            text, variables = (inner, {}) if isinstance(inner, str) else (inner[0], inner[1])
            found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!][^}]*)\}", text)} - set(variables)
            found |= _references(variables)
        else:
            found |= _references(inner)
    return found


def test_no_retained_resource_references_a_resource_that_is_not_retained(real):
    """Whatever a stack deletion retains must not use what it deletes: a retained cache held its
    security group and subnets (the deletion failed), a retained key's policy named the roles."""
    resources = real.template["Resources"]
    retained = {k for k, v in resources.items() if v.get("DeletionPolicy") == "Retain"}
    assert len(retained) > 20  # prod retains its data
    bad = []
    for logical_id in sorted(retained):
        resource = resources[logical_id]
        depends = _as_list(resource.get("DependsOn", []))
        for target in sorted(_references(resource.get("Properties", {})) | set(depends)):
            if target in resources and target not in retained:
                bad.append(f"{logical_id} ({resource['Type']}) -> {target} ({resources[target]['Type']})")
    assert not bad, bad


def test_the_reference_walk_sees_every_form_of_reference():
    value = {"A": {"Ref": "One"}, "B": [{"Fn::GetAtt": ["Two", "Arn"]}, {"Fn::GetAtt": "Three.Arn"}],
             "C": {"Fn::Sub": "${Four.Arn}/${AWS::Region}/${!Literal}"},
             "D": {"Fn::Sub": ["${Five}-${x}", {"x": {"Ref": "Six"}}]}}
    assert _references(value) == {"One", "Two", "Three", "Four", "AWS::Region", "Five", "Six"}


# -- IAM least privilege -----------------------------------------------------------------------------


def _broker_grants(synth) -> tuple[set[str], set[str]]:
    """The roles that may read the broker secret, and those that may use the paper book."""
    secret_id = next(iter(synth.resources("AWS::SecretsManager::Secret")))
    paper_id = next(k for k, v in synth.resources("AWS::DynamoDB::Table").items()
                    if v["Properties"].get("TableName") == qualified(STAGE, "paper-broker"))
    readers, book = set(), set()
    for policy in synth.resources("AWS::IAM::Policy").values():
        roles = {r["Ref"] for r in policy["Properties"]["Roles"]}
        for statement in _statements(policy):
            resources = _as_list(statement.get("Resource"))
            assert statement["Effect"] == "Allow"
            if {"Ref": secret_id} in resources:
                readers |= roles
            if any(paper_id in _references(r) for r in resources):
                book |= roles
    return readers, book


def test_the_broker_secret_and_the_paper_book_go_only_to_the_orders_functions_of_their_broker(full, layers_built,
                                                                                               tmp_path_factory):
    """The paper broker never reads the Alpaca keys, an Alpaca broker never the paper book."""
    allowed = {key for key, access in ACCESS.items() if access.broker}
    assert allowed and all(key.split(".")[0] == "orders" for key in allowed)
    orders_roles = {_roles_of_function(full.template, function_name(STAGE, key)) for key in allowed}
    readers, book = _broker_grants(full)  # the paper broker (the default)
    assert readers == set() and book == orders_roles
    base = tmp_path_factory.mktemp("infra-alpaca")
    write_fixture_handlers(base / "functions")
    alpaca = synthesise(base / "cdk.out", base / "functions", "dev", broker="alpaca", initial_equity="25000",
                        **FULL_CONTEXT)
    readers, book = _broker_grants(alpaca)
    assert book == set()
    assert readers == {_roles_of_function(alpaca.template, function_name(STAGE, key)) for key in allowed}


def test_no_function_role_has_a_wildcard_resource_on_data_actions(full):
    function_roles = {p["Role"]["Fn::GetAtt"][0] for p in full.props("AWS::Lambda::Function")}
    checked = 0
    for role_id in function_roles:
        for policy in _policies_of_role(full.template, role_id):
            for statement in _statements(policy):
                checked += 1
                if "*" in _as_list(statement["Resource"]):
                    actions = _as_list(statement["Action"])
                    assert not [a for a in actions if a.startswith(DATA_SERVICES)], (role_id, actions)
                    assert all(a.startswith(("ec2:", "xray:")) for a in actions), (role_id, actions)
    assert checked > 0


def test_no_function_can_delete_a_registry_object(full):
    """Model versions are only ever added (the refit puts, the regime function reads)."""
    bucket_id = next(
        k for k, v in full.resources("AWS::S3::Bucket").items() if v["Properties"].get("VersioningConfiguration")
    )
    s3_actions: dict[str, set[str]] = {}
    for key in ACCESS:
        role_id = _roles_of_function(full.template, function_name(STAGE, key))
        for policy in _policies_of_role(full.template, role_id):
            for statement in _statements(policy):
                if f'"{bucket_id}"' in json.dumps(statement["Resource"]):  # Fn::GetAtt [bucket, Arn]
                    s3_actions.setdefault(key, set()).update(_as_list(statement["Action"]))
    assert {k for k, a in s3_actions.items() if "s3:PutObject" in a} == {"regime.refit"}
    assert "s3:GetObject*" in s3_actions["regime"]
    assert not [(k, a) for k, actions in s3_actions.items() for a in actions if a.startswith("s3:Delete")]


def test_each_function_reaches_only_the_tables_it_declares(full):
    table_ids = {v["Properties"]["TableName"]: k for k, v in full.resources("AWS::DynamoDB::Table").items()}
    for key, access in ACCESS.items():
        role_id = _roles_of_function(full.template, function_name(STAGE, key))
        reached = set()
        for policy in _policies_of_role(full.template, role_id):
            for statement in _statements(policy):
                for resource in _as_list(statement["Resource"]):
                    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
                        reached.add(resource["Fn::GetAtt"][0])
        tables = {table_ids[qualified(STAGE, t)] for t in access.tables + access.read_tables}
        assert reached & set(table_ids.values()) == tables, key


# -- events, schedules, monitoring --------------------------------------------------------------


def test_rules_kill_switch_and_schedules_each_target_with_dlq_and_retry(full):
    rules = full.props("AWS::Events::Rule")
    names = {r["Name"] for r in rules}
    for rule in ("killswitch", "regimerefitdaily", "reconcileschedule", "train-agents-weekly"):
        assert qualified(STAGE, rule) in names
    [kill] = [r for r in rules if r["Name"] == qualified(STAGE, "killswitch")]
    assert kill["EventPattern"] == {"source": ["ensemble-trader.control"], "detail-type": ["KillSwitch"]}
    for rule in rules:
        for target in rule["Targets"]:
            assert "Arn" in target["DeadLetterConfig"]
            assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1


def test_alarms_cover_lag_errors_throttles_dlqs_and_business_limits(full):
    alarms = {p["AlarmName"]: p for p in full.props("AWS::CloudWatch::Alarm")}
    expected = ["DrawdownLimit", "BreakerTripped", "ReconciliationFailed", "TrainingFailed", "OrderIntentsStalled"]
    for spec in KINESIS_SPECS:
        camel = "".join(part.capitalize() for part in spec.logical.split("_"))
        expected += [f"{camel}IteratorAge", f"{camel}ErrorRate", f"{camel}Throttles",
                     f"{camel}FailedItems", f"{camel}SnapshotReseeded", f"{camel}CacheUnavailable"]
    for name in expected:
        assert qualified(STAGE, name) in alarms, name
    topic_id = next(iter(full.resources("AWS::SNS::Topic")))
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]


def _dashboard_widgets(synth, name: str) -> list[dict]:
    """The widgets of dashboard ``et-<stage>-<name>``, each token (a Ref inside a string) read as X."""
    [props] = [p for p in synth.props("AWS::CloudWatch::Dashboard") if p["DashboardName"] == qualified(STAGE, name)]
    body = props["DashboardBody"]
    text = "".join(p if isinstance(p, str) else "X" for p in body["Fn::Join"][1]) if isinstance(body, dict) else body
    return json.loads(text)["widgets"]


def test_dashboards_show_compute_latency_and_business_metrics(full):
    bodies = {}
    for props in full.props("AWS::CloudWatch::Dashboard"):
        body = props["DashboardBody"]
        text = "".join(str(part) for part in body["Fn::Join"][1]) if isinstance(body, dict) else body
        bodies[props["DashboardName"]] = text
    operations = bodies[qualified(STAGE, "operations")]
    for spec in FUNCTIONS:
        assert compute_metric_name(spec.logical) in operations
    assert "IteratorAge" in operations and "ApproximateNumberOfMessagesVisible" in operations
    # the streams' record counts are sums (records per minute), not CDK's default Average (records
    # per PutRecords call)
    streams = {
        widget["properties"]["title"]: widget["properties"]["metrics"]
        for widget in _dashboard_widgets(full, "operations")
        if widget["properties"].get("title", "").startswith("Streams:")
    }
    assert sorted(streams) == ["Streams: incoming records", "Streams: write throttles"]
    for title, metrics in streams.items():
        assert len(metrics) == len(STREAMS), title
        for metric in metrics:
            assert metric[1] in ("IncomingRecords", "PutRecords.ThrottledRecords"), (title, metric)
            assert metric[-1].get("stat") == "Sum", (title, metric)  # no stat: CloudWatch's Average
    business = bodies[qualified(STAGE, "business")]
    for emitted in (
        "meta_agent_outputs",
        "orders_placed",
        "orders_rejected",
        "meta_agent_regret",
        "kill_switch_active",
    ):
        assert emitted in business
    for event in (
        "OrderRejected",
        "RegimeChanged",
        "AgentSwitched",
        "CircuitBreakerTripped",
        "ReconciliationFailed",
    ):
        assert event in business  # Logs Insights over the domain-event log


def test_vpc_endpoints_for_every_service_the_functions_call(full):
    services = []
    for props in full.props("AWS::EC2::VPCEndpoint"):
        name = props["ServiceName"]
        services.append(name if isinstance(name, str) else "".join(str(p) for p in name["Fn::Join"][1]))
    for suffix in (
        "dynamodb",
        "s3",
        "kinesis-streams",
        "sqs",
        "events",
        "secretsmanager",
        "logs",
        "monitoring",
    ):
        assert any(s.endswith(suffix) for s in services), suffix


def test_domain_events_reach_a_log_group_through_a_native_resource_policy(full):
    [rule] = [
        r for r in full.props("AWS::Events::Rule") if r["Name"] == qualified(STAGE, "domain-events-to-logs")
    ]
    assert rule["EventPattern"] == {"source": ["ensemble-trader"]}
    assert len(full.props("AWS::Logs::ResourcePolicy")) == 1
    assert not full.resources("Custom::CloudwatchLogResourcePolicy")  # no custom-resource Lambda
    filters = full.props("AWS::Logs::MetricFilter")
    assert {f["MetricTransformations"][0]["MetricName"] for f in filters} == set(EVENT_METRICS)


def test_stage_runners_may_send_rejected_records_to_their_own_dlq(full):
    for spec in FUNCTIONS:
        role_id = _roles_of_function(full.template, function_name(STAGE, spec.logical))
        dlq_id = _logical_id_of(
            full.template, "AWS::SQS::Queue", "QueueName", qualified(STAGE, spec.dead_letter_queue)
        )
        sends = [
            st
            for policy in _policies_of_role(full.template, role_id)
            for st in _statements(policy)
            if "sqs:SendMessage" in _as_list(st["Action"])
            and {"Fn::GetAtt": [dlq_id, "Arn"]} in _as_list(st["Resource"])
        ]
        assert sends, spec.logical


def test_drawdown_alarm_watches_the_account_continuously(full):
    alarms = {p["AlarmName"]: p for p in full.props("AWS::CloudWatch::Alarm")}
    drawdown = alarms[qualified(STAGE, "DrawdownLimit")]
    assert drawdown["MetricName"] == "account_drawdown" and drawdown["Statistic"] == "Maximum"
    assert {"Name": "service", "Value": "orders"} in drawdown["Dimensions"]
    # account_drawdown is reported only with a routed intent: a period without intents keeps the
    # alarm's state (no OK notice while the account is still down; no ALARM cleared by silence)
    assert drawdown["TreatMissingData"] == "ignore"
    assert drawdown["OKActions"] == drawdown["AlarmActions"]


def test_the_orders_functions_refuse_late_intents_when_the_deployment_sets_an_age(full):
    """-c max_intent_age_seconds=900 (the fixture's) reaches every function that talks to the broker."""
    functions = full.props("AWS::Lambda::Function")
    brokers = [f["Environment"]["Variables"] for f in functions
               if "ET_ORDERS_BROKER" in f.get("Environment", {}).get("Variables", {})]
    assert brokers and all(v["ET_RISK_MAX_INTENT_AGE_SECONDS"] == "900" for v in brokers)
    others = [f["Environment"]["Variables"] for f in functions
              if "ET_ORDERS_BROKER" not in f.get("Environment", {}).get("Variables", {})
              and "Environment" in f]
    assert all("ET_RISK_MAX_INTENT_AGE_SECONDS" not in v for v in others)


def test_cache_connect_names_the_user_with_its_colon_arn(full):
    """ElastiCache user ARNs are arn:aws:elasticache:<region>:<account>:user:<id>."""
    statements = [s for p in full.props("AWS::IAM::Policy") for s in p["PolicyDocument"]["Statement"]
                  if s["Action"] == "elasticache:Connect" or s["Action"] == ["elasticache:Connect"]]
    assert statements
    for statement in statements:
        text = json.dumps(statement["Resource"])
        assert ":user:" in text and ":user/" not in text



NAME_PROPERTIES = {"AWS::DynamoDB::Table": "TableName", "AWS::Kinesis::Stream": "Name", "AWS::SQS::Queue": "QueueName",
                   "AWS::SecretsManager::Secret": "Name", "AWS::Logs::LogGroup": "LogGroupName",
                   "AWS::ECR::Repository": "RepositoryName"}


def test_the_runbook_lists_every_retained_resource_with_a_fixed_name(real):
    """docs/runbook.md §6 *Rebuilding prod* names what a new prod stack fails on (each retained
    resource whose name is fixed): its count and names must be the synthesised stack's."""
    fixed = sorted(
        resource["Properties"][NAME_PROPERTIES[resource["Type"]]]
        for resource in real.template["Resources"].values()
        if resource.get("DeletionPolicy") == "Retain" and NAME_PROPERTIES.get(resource["Type"]) in resource.get("Properties", {})
    )
    assert all(isinstance(name, str) and "et-prod-" in name for name in fixed), fixed
    text = (Path(__file__).parents[2] / "docs" / "runbook.md").read_text()
    section = re.sub(r"\s+", "", text[text.index("**Rebuilding prod.**"):text.index("- **Import**")])
    assert f"failsonthe{len(fixed)}retainedresources" in section, f"{len(fixed)} retained resources have fixed names"
    missing = [name for name in fixed if name.split("et-prod-", 1)[1] not in section]
    assert not missing, f"not in docs/runbook.md's list: {missing}"
