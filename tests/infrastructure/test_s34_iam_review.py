"""IAM review of the synthesised stack: what the functions may put on the bus, and the cdk-nag
acknowledgements of actions granted on '*'.

* The functions that publish domain events may put events of the source ``ensemble-trader`` only
  (``events:source``). ``bus.grant_put_events_to`` admitted any source, so each of them (regime,
  its refit, meta_agent and the three orders entries) could put the operator's KillSwitch control
  event (source ``ensemble-trader.control``), which the KillSwitch rule routes to the kill_switch
  entry: a function could turn the switch off.
* Each acknowledgement of ``AwsSolutions-IAM5[Resource::*]`` names every action it covers. The
  state machine's said "X-Ray tracing and CloudWatch Logs delivery actions" while the role also
  holds ``sagemaker:ListTags`` on '*', and the functions' said the ENI actions "accept no resource
  ARN", naming one of the six.
"""

from __future__ import annotations

import inspect
import json

import pytest
from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
from ensemble_trader.constants import CONTROL_EVENT_SOURCE, EVENT_SOURCE, KILL_SWITCH_DETAIL_TYPE

from infra_cdk.constructs.functions import ACCESS, function_name

WILDCARD_FINDING = "AwsSolutions-IAM5[Resource::*]"


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _role_policies(synth) -> dict[str, list[dict]]:
    """Function name -> the statements of its role's policies."""
    resources = synth.template["Resources"]
    by_role: dict[str, list[dict]] = {}
    for policy in resources.values():
        if policy["Type"] != "AWS::IAM::Policy":
            continue
        for role in policy["Properties"]["Roles"]:
            by_role.setdefault(role["Ref"], []).extend(policy["Properties"]["PolicyDocument"]["Statement"])
    named = {}
    for fn in resources.values():
        if fn["Type"] == "AWS::Lambda::Function":
            role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
            named[fn["Properties"]["FunctionName"]] = by_role.get(role, [])
    return named


def _allows_put(statement: dict, source: str) -> bool:
    """Whether an Allow statement admits ``events:PutEvents`` of an event with ``source`` (the
    condition forms this stack could write: none, or StringEquals / StringLike on events:source)."""
    actions = _as_list(statement["Action"])
    if statement.get("Effect") != "Allow" or not any(a in ("events:PutEvents", "events:*", "*") for a in actions):
        return False
    condition = statement.get("Condition", {})
    allowed = [*_as_list(condition.get("StringEquals", {}).get("events:source", [])),
               *_as_list(condition.get("StringLike", {}).get("events:source", []))]
    if "events:source" not in json.dumps(condition):
        return True
    return source in allowed


STAGES = {"full": "dev", "real": "prod"}


@pytest.mark.parametrize("fixture", ["full", "real"])
def test_functions_may_put_domain_events_only_never_the_operators_control_events(request, fixture):
    synth = request.getfixturevalue(fixture)
    policies = _role_policies(synth)
    publishers = {name for name, statements in policies.items() if any(_allows_put(s, EVENT_SOURCE) for s in statements)}
    wanted = {function_name(STAGES[fixture], key) for key, access in ACCESS.items() if access.put_events}
    assert publishers == wanted & set(policies) and publishers, "every entry that publishes still may"
    forgers = sorted(name for name, statements in policies.items()
                     if any(_allows_put(s, CONTROL_EVENT_SOURCE) for s in statements))
    assert not forgers, (f"{forgers} may put {CONTROL_EVENT_SOURCE} events ({KILL_SWITCH_DETAIL_TYPE} is the "
                         f"operator's): they publish source {EVENT_SOURCE} only")


def test_the_condition_names_the_source_the_publishers_use():
    # every function publishes through EventBridgePublisher with its default source; a change to
    # it would be refused by the role's condition at run time, so it must change with the grant
    assert inspect.signature(EventBridgePublisher).parameters["source"].default == EVENT_SOURCE


def _logical_ids(synth) -> dict[str, str]:
    """Construct path -> logical id of every CloudFormation resource of the stack."""
    import aws_cdk as cdk

    stack = synth.stack
    found = {}
    for construct in stack.node.find_all():
        if isinstance(construct, cdk.CfnResource):
            found[construct.node.path] = stack.resolve(stack.get_logical_id(construct))
    return found


@pytest.mark.parametrize("fixture", ["full", "real"])
def test_each_wildcard_resource_acknowledgement_names_every_action_it_covers(request, fixture):
    synth = request.getfixturevalue(fixture)
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    ids = _logical_ids(synth)
    resources = synth.template["Resources"]
    checked, unnamed = 0, []
    for plugin in report["pluginReports"]:
        for finding in plugin["suppressedViolations"]:
            if finding["ruleName"] != WILDCARD_FINDING:
                continue
            for construct in finding["violatingConstructs"]:
                policy = resources[ids[construct["constructPath"]]]
                actions = sorted({a for s in policy["Properties"]["PolicyDocument"]["Statement"]
                                  if "*" in _as_list(s["Resource"]) for a in _as_list(s["Action"])})
                assert actions, f"{construct['constructPath']}: acknowledged, but nothing is granted on '*'"
                checked += 1
                unnamed += [(construct["constructPath"], a) for a in actions if a not in finding["reason"]]
    # the function roles (seven in the full synth; eight with the cache admin in the real one),
    # the SageMaker role and the state machine's
    assert checked == (9 if fixture == "full" else 10)
    assert not unnamed, f"actions on '*' that their acknowledgement does not name: {unnamed}"
