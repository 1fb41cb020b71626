"""The cache maintenance function in the synthesised stack (``real``: prod over the repository's
``functions/``, which holds ``functions/cache_admin/handler.py``): in the VPC on the functions'
security group, the shared layers, IAM limited to connecting to the cache as its user and reading
the stages' own event-source mappings, no trigger, one run at a time, its log group; and its
handler imports from the bundle alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ensemble_trader.constants import FUNCTIONS
from ensemble_trader.runtime.cache_admin import CACHE_STAGES, FUNCTION_NAME, FUNCTION_TIMEOUT_S, MAPPINGS_ENV
from ensemble_trader.runtime.settings import Settings

from infra_cdk.constructs.cache_admin import has_handler
from infra_cdk.constructs.functions import discover_entries, function_name
from tests.infrastructure.conftest import ROOT
from tests.infrastructure.test_infra_bundle import LAYERS_DIR, _restricted_site
from tests.infrastructure.test_infra_stack import _refs

NAME = function_name("prod", "cache_admin")


def _function(synth) -> tuple[str, dict]:
    [(logical_id, resource)] = [
        (k, v) for k, v in synth.resources("AWS::Lambda::Function").items() if v["Properties"]["FunctionName"] == NAME
    ]
    return logical_id, resource["Properties"]


def _statements(synth, role_id: str) -> list[dict]:
    return [
        s
        for p in synth.props("AWS::IAM::Policy")
        if {"Ref": role_id} in p.get("Roles", [])
        for s in p["PolicyDocument"]["Statement"]
    ]


def _stage_mappings(synth) -> dict[str, str]:
    """Logical id of each cache stage's event-source mapping, by stage (via the alias it feeds)."""
    resources = synth.template["Resources"]
    found = {}
    for logical_id, mapping in synth.resources("AWS::Lambda::EventSourceMapping").items():
        [target] = _refs(mapping["Properties"]["FunctionName"])
        if resources[target]["Type"] == "AWS::Lambda::Alias":
            target = resources[target]["Properties"]["FunctionName"]["Ref"]
        name = resources[target]["Properties"]["FunctionName"]
        for stage in CACHE_STAGES:
            if name == function_name("prod", stage):
                found[stage] = logical_id
    return found


def test_the_name_is_the_one_the_cli_invokes_and_the_real_tree_deploys_it_beside_the_stages(real):
    assert NAME == Settings(stage="prod").name(FUNCTION_NAME) == "et-prod-cache-admin"
    assert has_handler(real.functions_dir)
    deployed = {p["FunctionName"] for p in real.props("AWS::Lambda::Function")}
    assert deployed == {function_name("prod", e.key) for e in discover_entries(real.functions_dir)} | {NAME}
    assert real.template["Outputs"]["CacheAdminFunction"]["Value"] == {"Ref": _function(real)[0]}


def test_it_runs_in_the_vpc_on_the_functions_security_group_with_the_shared_layers(real):
    _, props = _function(real)
    _, features = next((k, v["Properties"]) for k, v in real.resources("AWS::Lambda::Function").items()
                       if v["Properties"]["FunctionName"] == function_name("prod", "features"))
    assert props["VpcConfig"] == features["VpcConfig"]  # the security group the cache admits, the same subnets
    assert sorted(_refs(props["Layers"])) == sorted(_refs(features["Layers"]))  # deps + core, no broker layer
    assert len(props["Layers"]) == 2
    assert (props["Runtime"], props["Architectures"], props["TracingConfig"]) == (
        features["Runtime"], features["Architectures"], {"Mode": "Active"})
    assert props["Handler"] == "handler.lambda_handler"
    assert props["Timeout"] == FUNCTION_TIMEOUT_S and props["ReservedConcurrentExecutions"] == 1


def test_its_environment_points_at_the_cache_as_its_user_and_names_the_stages_mappings(real):
    _, props = _function(real)
    env = props["Environment"]["Variables"]
    assert env["ET_STAGE"] == "prod"
    assert env["ET_REDIS_URL"]["Fn::Join"][1][0] == "rediss://"
    assert (env["ET_REDIS_IAM_USER"], env["ET_REDIS_CACHE_NAME"]) == ("et-prod-app", "et-prod-cache")
    assert env["POWERTOOLS_SERVICE_NAME"] == "cache_admin"
    assert "ET_AWS_ENDPOINT_URL" not in env
    mappings = _stage_mappings(real)
    assert sorted(mappings) == sorted(CACHE_STAGES)
    parts = env[MAPPINGS_ENV]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else f"<{p['Ref']}>" for p in parts)
    assert json.loads(text) == {stage: f"<{mappings[stage]}>" for stage in CACHE_STAGES}


def test_its_role_may_connect_to_the_cache_and_read_the_stages_mappings_and_nothing_else(real):
    _, props = _function(real)
    role_id = props["Role"]["Fn::GetAtt"][0]
    actions: dict[str, list] = {}
    for statement in _statements(real, role_id):
        for action in statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]:
            actions.setdefault(action, []).append(statement["Resource"])
    data = {a for a in actions if not a.startswith(("ec2:", "xray:", "logs:"))}
    assert data == {"elasticache:Connect", "lambda:GetEventSourceMapping"}
    [connect] = actions["elasticache:Connect"]
    cache_id = next(iter(real.resources("AWS::ElastiCache::ServerlessCache")))
    assert connect[0] == {"Fn::GetAtt": [cache_id, "ARN"]}
    assert json.dumps(connect[1]).endswith(':user:et-prod-app"]]}')
    [readable] = actions["lambda:GetEventSourceMapping"]
    assert sorted(r for resource in readable for r in _refs(resource) if r in _stage_mappings(real).values()) == \
        sorted(_stage_mappings(real).values())
    assert all(":event-source-mapping:" in json.dumps(resource) for resource in readable)
    for action, resources in actions.items():
        if any("*" in (r if isinstance(r, list) else [r]) for r in resources):
            assert action.startswith(("ec2:", "xray:")), action


def test_nothing_triggers_it(real):
    logical_id, _ = _function(real)
    mapped = {r for m in real.props("AWS::Lambda::EventSourceMapping") for r in _refs(m["FunctionName"])}
    assert logical_id not in mapped
    assert not [a for a in real.props("AWS::Lambda::Alias") if logical_id in _refs(a["FunctionName"])]
    targets = json.dumps([r["Targets"] for r in real.props("AWS::Events::Rule")])
    assert logical_id not in targets
    assert not [p for p in real.props("AWS::Lambda::Permission") if logical_id in json.dumps(p)]
    assert not [p for p in real.props("AWS::Lambda::EventInvokeConfig") if logical_id in json.dumps(p)]
    assert len(real.props("AWS::Lambda::EventSourceMapping")) == len(FUNCTIONS)  # the stages' own, no more


def test_its_log_group_keeps_the_stages_retention_and_key(real):
    _, props = _function(real)
    [group] = [p for p in real.props("AWS::Logs::LogGroup") if p.get("LogGroupName") == f"/aws/lambda/{NAME}"]
    assert group["RetentionInDays"] == 90 and "KmsKeyId" in group  # prod: three months
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": next(
        k for k, v in real.resources("AWS::Logs::LogGroup").items()
        if v["Properties"].get("LogGroupName") == f"/aws/lambda/{NAME}")}


def test_no_handler_no_function(full):
    """The ``full`` fixture tree has handlers for the pipeline's functions only."""
    assert not has_handler(full.functions_dir)
    assert NAME.replace("prod", "dev") not in {p["FunctionName"] for p in full.props("AWS::Lambda::Function")}
    assert "CacheAdminFunction" not in full.template["Outputs"]


@pytest.mark.slow
def test_the_handler_imports_from_the_bundle_alone(layers_built, tmp_path):
    view = _restricted_site(tmp_path, ["deps"])
    modules = ("handler", "ensemble_trader.adapters.redis.cache", "ensemble_trader.adapters.aws.lambda_api",
               "ensemble_trader.adapters.aws.elasticache_auth")
    code = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(ROOT / 'functions' / 'cache_admin')!r}, "
        f"{str(LAYERS_DIR / 'core' / 'python')!r}, {str(view)!r}]\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "ET_STAGE": "dev", "AWS_REGION": "us-east-1",
           "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_SERVICE_NAME": "cache_admin"}
    result = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]
