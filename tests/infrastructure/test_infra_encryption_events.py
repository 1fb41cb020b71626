"""The event bus and its archive encrypted with the stage's customer-managed key (not an AWS-owned
one): the key policy lets EventBridge use the key for this bus only (``aws:SourceAccount``,
``aws:SourceArn`` and the bus's encryption context), events it cannot encrypt or decrypt go to the
bus's dead-letter queue (``events-dlq``, which admits them from this bus only), and the template
has no dependency cycle between the key, whose policy names the bus, and the bus, which names the
key."""

from __future__ import annotations

import json
import re

import pytest
from ensemble_trader.constants import EVENT_BUS, qualified

EVENTS = "events.amazonaws.com"


def _key_id(synth) -> str:
    [key_id] = synth.resources("AWS::KMS::Key")
    return key_id


def _bus(synth) -> dict:
    [bus] = synth.props("AWS::Events::EventBus")
    return bus


def _queue_id(synth, logical: str, stage: str) -> str:
    [queue_id] = [k for k, v in synth.resources("AWS::SQS::Queue").items()
                  if v["Properties"]["QueueName"] == qualified(stage, logical)]
    return queue_id


def _bus_arn_text(value) -> str:
    """A Fn::Join'ed ARN as text with its pseudo-parameters kept as <Name>."""
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(p if isinstance(p, str) else f"<{p['Ref']}>" for p in parts)
    return json.dumps(value)


def _bus_arn(stage: str) -> str:
    return f"arn:<AWS::Partition>:events:<AWS::Region>:<AWS::AccountId>:event-bus/{qualified(stage, EVENT_BUS)}"


def _events_statements(synth) -> list[dict]:
    [key] = synth.props("AWS::KMS::Key")
    return [s for s in key["KeyPolicy"]["Statement"] if s["Principal"] == {"Service": EVENTS}]


STAGES = [("full", "dev"), ("real", "prod")]


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_the_bus_and_its_archive_use_the_stages_key(request, fixture, stage):
    synth = request.getfixturevalue(fixture)
    key = {"Fn::GetAtt": [_key_id(synth), "Arn"]}
    bus = _bus(synth)
    assert bus["Name"] == qualified(stage, EVENT_BUS)
    assert bus["KmsKeyIdentifier"] == key
    [archive_id] = synth.resources("AWS::Events::Archive")
    archive = synth.template["Resources"][archive_id]
    assert archive["Properties"]["KmsKeyIdentifier"] == key
    assert _bus_arn_text(archive["Properties"]["SourceArn"]) == _bus_arn(stage)
    [bus_id] = synth.resources("AWS::Events::EventBus")
    assert bus_id in archive["DependsOn"]  # named by ARN text, so created after the bus explicitly
    assert archive["Properties"]["RetentionDays"] == (90 if stage == "prod" else 7)


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_eventbridge_may_use_the_key_for_this_bus_only(request, fixture, stage):
    synth = request.getfixturevalue(fixture)
    bus_arn = _bus_arn(stage)
    statements = _events_statements(synth)
    [bus] = [s for s in statements if "aws:SourceArn" in s.get("Condition", {}).get("StringEquals", {})]
    assert sorted(bus["Action"]) == ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"]
    condition = bus["Condition"]["StringEquals"]
    assert condition["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert _bus_arn_text(condition["aws:SourceArn"]) == bus_arn
    assert _bus_arn_text(condition["kms:EncryptionContext:aws:events:event-bus:arn"]) == bus_arn
    # the archive (and a replay from it): the bus's encryption context
    [archive] = [s for s in statements if "kms:ReEncrypt*" in s["Action"]]
    assert sorted(archive["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*"]
    assert {k: _bus_arn_text(v) for k, v in archive["Condition"]["StringEquals"].items()} == {
        "kms:EncryptionContext:aws:events:event-bus:arn": bus_arn
    }
    # nothing else EventBridge may do with the key without a condition but read its description
    for statement in statements:
        if "Condition" not in statement:
            assert statement["Action"] == "kms:DescribeKey"


@pytest.mark.parametrize(("fixture", "stage"), STAGES)
def test_events_the_bus_cannot_encrypt_or_decrypt_go_to_events_dlq(request, fixture, stage):
    synth = request.getfixturevalue(fixture)
    dlq = _queue_id(synth, "events-dlq", stage)
    assert _bus(synth)["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq, "Arn"]}}
    [policy] = [p for p in synth.props("AWS::SQS::QueuePolicy") if {"Ref": dlq} in p["Queues"]]
    [allow] = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") == "BusDeadLetters"]
    assert (allow["Effect"], allow["Principal"], allow["Action"]) == ("Allow", {"Service": EVENTS}, "sqs:SendMessage")
    assert allow["Resource"] == {"Fn::GetAtt": [dlq, "Arn"]}
    assert _bus_arn_text(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == _bus_arn(stage)


def _dependencies(resource: dict, names: set[str]) -> set[str]:
    text = json.dumps(resource)
    found = set(re.findall(r'"Ref": "([^"]+)"', text)) | set(re.findall(r'"Fn::GetAtt": \["([^"]+)"', text))
    depends = resource.get("DependsOn", [])
    found |= set(depends if isinstance(depends, list) else [depends])
    return found & names


@pytest.mark.parametrize("fixture", ["full", "real"])
def test_the_template_has_no_dependency_cycle(request, fixture):
    """CloudFormation refuses a template whose resources depend on each other in a cycle; the key
    policy naming the bus by its attribute (an archive given the bus construct) makes one."""
    resources = request.getfixturevalue(fixture).template["Resources"]
    graph = {name: _dependencies(resource, set(resources)) for name, resource in resources.items()}
    done: set[str] = set()
    for start in graph:
        stack, on_path = [(start, iter(sorted(graph[start])))], {start}
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                raise AssertionError(f"cycle through {child}: {[n for n, _ in stack]}")
            elif child not in done:
                stack.append((child, iter(sorted(graph[child]))))
                on_path.add(child)


def test_the_archive_keeps_its_logical_id(full):
    """The ids a deployed stack already has (synthesised before the bus had a key): a new archive
    id would make CloudFormation create a second archive under the same name, which it refuses,
    and the old one's events would go with it."""
    assert list(full.resources("AWS::Events::Archive")) == ["EventsBusArchive3AC72948"]
    assert list(full.resources("AWS::Events::EventBus")) == ["EventsBus45DE4339"]
