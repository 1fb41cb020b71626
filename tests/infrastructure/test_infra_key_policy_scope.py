"""The stage key's statements for AWS services name this stage's resources only.

EventBridge may use the key for the stage's rules and its bus (to send what it could not deliver
to ``events-dlq``), CloudWatch for the stage's alarms (to publish to the alarm topic), CloudWatch
Logs for the stage's log groups; no statement lets SQS use it. The scopes are ARN patterns on the
stage's prefix (``et-<stage>-``): the tests below check, in every shipped stage, that each rule
with a dead-letter queue, each alarm that notifies the topic and each log group encrypted with the
key falls under its pattern, so a resource named outside it fails here instead of at deploy time
(or, worse, silently at run time: a dead letter or a notification lost), and that a pattern does
not admit another stage's names.
"""

from __future__ import annotations

import json
import re

import pytest
from ensemble_trader.constants import EVENT_BUS, qualified

from tests.infrastructure.conftest import synthesise, write_fixture_handlers

SOURCE_ACCOUNT = {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
LOG_PATHS = ("/aws/lambda/", "/aws/events/", "/aws/vpc/", "/aws/vendedlogs/states/")


@pytest.fixture(scope="module")
def staging(layers_built, tmp_path_factory):
    base = tmp_path_factory.mktemp("infra-staging")
    write_fixture_handlers(base / "functions")
    # staging, like prod, refuses to synthesise without an explicit broker and symbols
    return synthesise(base / "cdk.out", base / "functions", "staging", broker="paper", symbols="SPY")


STAGES = [("full", "dev"), ("staging", "staging"), ("real", "prod")]


def _text(value) -> str:
    """A template value as text: a Fn::Join'ed ARN with its pseudo-parameters kept as <Name>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_text(p) if not (isinstance(p, dict) and "Ref" in p and p["Ref"].startswith("AWS::"))
                        else f"<{p['Ref']}>" for p in parts)
    raise AssertionError(f"not a name known at synthesis: {json.dumps(value)}")


def _arn(service: str, resource: str) -> str:
    return f"arn:<AWS::Partition>:{service}:<AWS::Region>:<AWS::AccountId>:{resource}"


def arn_like(pattern: str, arn: str) -> bool:
    """IAM's ArnLike: the six colon-separated parts compared one by one, ``*`` and ``?`` matching
    within a part."""
    pattern_parts, arn_parts = pattern.split(":", 5), arn.split(":", 5)
    if len(pattern_parts) != 6 or len(arn_parts) != 6:
        return False
    for p, a in zip(pattern_parts, arn_parts, strict=True):
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p)
        if re.fullmatch(regex, a, flags=re.DOTALL) is None:
            return False
    return True


def _key(synth) -> tuple[str, dict]:
    [(key_id, key)] = synth.resources("AWS::KMS::Key").items()
    return key_id, key["Properties"]


def _statement(synth, sid: str) -> dict:
    [statement] = [s for s in _key(synth)[1]["KeyPolicy"]["Statement"] if s.get("Sid") == sid]
    return statement


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _patterns(statement: dict, operator: str, key: str) -> list[str]:
    return [_text(v) for v in _as_list(statement["Condition"][operator][key])]


def _encrypted_with_key(synth, kind: str, key_property: str) -> dict[str, dict]:
    key_id, _ = _key(synth)
    return {
        logical: props
        for logical, resource in synth.resources(kind).items()
        if (props := resource["Properties"]).get(key_property) in ({"Fn::GetAtt": [key_id, "Arn"]}, {"Ref": key_id})
    }


# -- the statements ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_eventbridge_may_use_the_key_for_the_stages_rules_and_bus(request, fixture, stage):
    statement = _statement(request.getfixturevalue(fixture), "EventBridgeDeadLetters")
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["Resource"] == "*"
    assert statement["Condition"]["StringEquals"] == SOURCE_ACCOUNT
    assert set(statement["Condition"]) == {"StringEquals", "ArnLike"}
    assert _patterns(statement, "ArnLike", "aws:SourceArn") == [
        _arn("events", f"rule/et-{stage}-*"),
        _arn("events", f"event-bus/{qualified(stage, EVENT_BUS)}"),
    ]


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_cloudwatch_may_use_the_key_for_the_stages_alarms(request, fixture, stage):
    statement = _statement(request.getfixturevalue(fixture), "CloudWatchAlarmNotifications")
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert statement["Resource"] == "*"
    assert statement["Condition"]["StringEquals"] == SOURCE_ACCOUNT
    assert set(statement["Condition"]) == {"StringEquals", "ArnLike"}
    assert _patterns(statement, "ArnLike", "aws:SourceArn") == [_arn("cloudwatch", f"alarm:et-{stage}-*")]


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_cloudwatch_logs_may_use_the_key_for_the_stages_log_groups(request, fixture, stage):
    statement = _statement(request.getfixturevalue(fixture), "AllowCloudWatchLogs")
    assert statement["Effect"] == "Allow"
    assert _text(statement["Principal"]["Service"]) == "logs.<AWS::Region>.amazonaws.com"
    assert sorted(statement["Action"]) == sorted(
        ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    )
    assert statement["Resource"] == "*"
    assert list(statement["Condition"]) == ["ArnLike"]
    assert _patterns(statement, "ArnLike", "kms:EncryptionContext:aws:logs:arn") == [
        _arn("logs", f"log-group:{path}et-{stage}-*") for path in LOG_PATHS
    ] + [_arn("logs", f"log-group:ensemble-trader-{stage}-*")]  # the names CloudFormation generated before


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_the_log_groups_named_by_cloudformation_before_stay_readable(request, fixture, stage):
    """The flow logs' and the state machine's groups had generated names (``<stack>-<id>-<suffix>``)
    until 2026-11-29; prod retains them when the named ones replace them, and the key must still
    decrypt their events."""
    logs = _patterns(_statement(request.getfixturevalue(fixture), "AllowCloudWatchLogs"), "ArnLike",
                     "kms:EncryptionContext:aws:logs:arn")
    for old in (f"ensemble-trader-{stage}-NetworkFlowLogs1A2B3C4D-Q7Z8XK2LMN0P",
                f"ensemble-trader-{stage}-TrainingStateMachineLogs9F8E7D6C-0AB1CD2EF3GH"):
        assert any(arn_like(p, _arn("logs", f"log-group:{old}")) for p in logs), old
    other = "prod" if stage != "prod" else "dev"
    assert not any(arn_like(p, _arn("logs", f"log-group:ensemble-trader-{other}-NetworkFlowLogs1A2B")) for p in logs)


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_every_service_statement_is_conditioned_and_sqs_has_none(request, fixture, stage):
    """Only CDK's ``kms:DescribeKey`` for EventBridge (the bus: it reads the key's description) has
    no condition; SQS never uses the key on its own behalf."""
    statements = _key(request.getfixturevalue(fixture))[1]["KeyPolicy"]["Statement"]
    services = [s for s in statements if "Service" in s["Principal"]]
    assert {_text(s["Principal"]["Service"]) for s in services} == {
        "events.amazonaws.com", "cloudwatch.amazonaws.com", "logs.<AWS::Region>.amazonaws.com"
    }
    for statement in services:
        if "Condition" not in statement:
            assert (statement["Principal"], statement["Action"]) == (
                {"Service": "events.amazonaws.com"}, "kms:DescribeKey"
            )


# -- every resource is in its scope -----------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_every_log_group_the_key_encrypts_is_in_the_logs_scope(request, fixture, stage):
    synth = request.getfixturevalue(fixture)
    patterns = _patterns(_statement(synth, "AllowCloudWatchLogs"), "ArnLike", "kms:EncryptionContext:aws:logs:arn")
    groups = _encrypted_with_key(synth, "AWS::Logs::LogGroup", "KmsKeyId")
    assert len(groups) == len(synth.resources("AWS::Logs::LogGroup"))  # every log group is encrypted
    assert len(groups) >= 9  # the functions', the domain events', the flow logs', the state machine's
    for logical, props in groups.items():
        assert "LogGroupName" in props, f"{logical}: a generated name is outside every scope"
        arn = _arn("logs", f"log-group:{_text(props['LogGroupName'])}")
        assert any(arn_like(p, arn) for p in patterns), f"{logical} {arn} is outside {patterns}"


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_every_alarm_that_notifies_the_topic_is_in_the_alarm_scope(request, fixture, stage):
    synth = request.getfixturevalue(fixture)
    [pattern] = _patterns(_statement(synth, "CloudWatchAlarmNotifications"), "ArnLike", "aws:SourceArn")
    [topic_id] = _encrypted_with_key(synth, "AWS::SNS::Topic", "KmsMasterKeyId")
    notifying = {
        logical: props for logical, props in ((k, v["Properties"]) for k, v in synth.resources("AWS::CloudWatch::Alarm").items())
        if {"Ref": topic_id} in props.get("AlarmActions", []) + props.get("OKActions", [])
    }
    assert len(notifying) >= 20
    for logical, props in notifying.items():
        assert "AlarmName" in props, f"{logical}: a generated name is outside the scope"
        arn = _arn("cloudwatch", f"alarm:{_text(props['AlarmName'])}")
        assert arn_like(pattern, arn), f"{logical} {arn} is outside {pattern}"


def _rule_arn(synth, props: dict) -> str:
    """A rule's ARN: ``rule/<name>`` on the default bus, ``rule/<bus>/<name>`` on another."""
    name = _text(props["Name"])
    bus = props.get("EventBusName")
    if bus is None:
        return _arn("events", f"rule/{name}")
    [bus_id] = synth.resources("AWS::Events::EventBus")
    assert bus == {"Ref": bus_id}  # the stage's bus, whose Ref is its name
    return _arn("events", f"rule/{_text(synth.template['Resources'][bus_id]['Properties']['Name'])}/{name}")


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_every_rule_or_bus_that_sends_to_an_encrypted_queue_is_in_the_events_scope(request, fixture, stage):
    synth = request.getfixturevalue(fixture)
    patterns = _patterns(_statement(synth, "EventBridgeDeadLetters"), "ArnLike", "aws:SourceArn")
    queues = {json.dumps({"Fn::GetAtt": [q, "Arn"]}) for q in _encrypted_with_key(synth, "AWS::SQS::Queue", "KmsMasterKeyId")}
    assert queues and len(queues) == len(synth.resources("AWS::SQS::Queue"))
    sending = {}
    for logical, resource in synth.resources("AWS::Events::Rule").items():
        props = resource["Properties"]
        destinations = {json.dumps(t["Arn"]) for t in props["Targets"]}
        destinations |= {json.dumps(t["DeadLetterConfig"]["Arn"]) for t in props["Targets"] if "DeadLetterConfig" in t}
        if destinations & queues:
            sending[logical] = _rule_arn(synth, props)
    assert len(sending) >= 4  # KillSwitch, the two schedules, the domain events' copy, the weekly training
    [bus] = synth.props("AWS::Events::EventBus")
    assert json.dumps(bus["DeadLetterConfig"]["Arn"]) in queues
    sending["the bus"] = _arn("events", f"event-bus/{_text(bus['Name'])}")
    for logical, arn in sending.items():
        assert any(arn_like(p, arn) for p in patterns), f"{logical} {arn} is outside {patterns}"


# -- the scopes admit no other stage ----------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_the_scopes_refuse_another_stages_and_unprefixed_names(request, fixture, stage):
    synth = request.getfixturevalue(fixture)
    other = "prod" if stage != "prod" else "dev"
    logs = _patterns(_statement(synth, "AllowCloudWatchLogs"), "ArnLike", "kms:EncryptionContext:aws:logs:arn")
    rules = _patterns(_statement(synth, "EventBridgeDeadLetters"), "ArnLike", "aws:SourceArn")
    [alarms] = _patterns(_statement(synth, "CloudWatchAlarmNotifications"), "ArnLike", "aws:SourceArn")
    for name in (f"/aws/lambda/et-{other}-orders", "/aws/lambda/orders", f"/aws/lambda/x-et-{stage}-orders",
                 f"/other/et-{stage}-orders", f"/aws/vpc/et-{stage}"):
        assert not any(arn_like(p, _arn("logs", f"log-group:{name}")) for p in logs), name
    assert any(arn_like(p, _arn("logs", f"log-group:/aws/lambda/et-{stage}-orders")) for p in logs)
    for arn in (_arn("events", f"rule/et-{other}-killswitch"), _arn("events", "rule/killswitch"),
                _arn("events", f"rule/{qualified(other, EVENT_BUS)}/et-{other}-killswitch"),
                _arn("events", f"event-bus/{qualified(other, EVENT_BUS)}"),
                _arn("events", "event-bus/default"),
                _arn("events", f"rule/et-{stage}-x").replace("<AWS::AccountId>", "111122223333")):
        assert not any(arn_like(p, arn) for p in rules), arn
    for arn in (_arn("cloudwatch", f"alarm:et-{other}-OrdersErrorRate"), _arn("cloudwatch", "alarm:OrdersErrorRate")):
        assert not arn_like(alarms, arn), arn
    assert arn_like(alarms, _arn("cloudwatch", f"alarm:et-{stage}-OrdersErrorRate"))


def test_arn_like_compares_part_by_part():
    """The matcher the scope tests rely on: a ``*`` does not cross a colon into another part."""
    assert arn_like("arn:aws:logs:r:1:log-group:/aws/lambda/et-dev-*", "arn:aws:logs:r:1:log-group:/aws/lambda/et-dev-a")
    assert arn_like("arn:aws:events:r:1:rule/et-dev-*", "arn:aws:events:r:1:rule/et-dev-events/et-dev-k")
    assert not arn_like("arn:aws:events:*:1:rule/x", "arn:aws:events:r:2:rule/x")
    assert not arn_like("arn:aws:cloudwatch:r:1:alarm:et-dev-*", "arn:aws:cloudwatch:r:1:alarm:et-prod-a")
    assert not arn_like("arn:aws:logs:r:1:log-group:a", "arn:aws:logs:r:1")
