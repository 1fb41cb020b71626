"""docs/deployment.md's `sam local invoke` commands against the dev template they are run on.

The section's code blocks are parsed, so the guide and this test cannot drift. They named the
functions by construct path (``ensemble-trader-dev/Functions/Features``), which SAM CLI cannot
resolve (it derives paths of at most three parts: ``FunctionNotFound``); their ``--env-vars`` file
set ``ET_AWS_ENDPOINT_URL``, which no function declared — SAM overrides only declared variables,
so the functions reached real AWS with the developer's credentials — and the kill-switch command
had no ``--env-vars`` at all (it would have halted the deployed dev stage). SAM itself cannot run
here (no Docker); what it does with the file is mirrored by :func:`_sam_environment`
(``samcli.commands.local.lib.local_lambda.LocalLambdaRunner._make_env_vars`` and
``samcli.local.lambdafn.env_vars.EnvironmentVariables.resolve``, SAM CLI 1.170).
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.infrastructure.conftest import ROOT, synthesise

GUIDE = ROOT / "docs" / "deployment.md"
SECTION = "## `sam local invoke`"
TEMPLATE = "cdk.out/ensemble-trader-dev.template.json"
ENV_FILE = "local-env.json"
# options of `sam local invoke` that take a value (the rest of the tokens: flags or the function)
VALUED = {"-t", "--template", "--template-file", "-e", "--event", "-n", "--env-vars", "--docker-network",
          "--parameter-overrides", "--profile", "--region", "--layer-cache-basedir", "--container-env-vars",
          "-l", "--log-file", "--debug-port", "-d", "--config-file", "--config-env", "--invoke-image"}
# the variables that say where a function's resources are: each must point at the local stack
WHERE = ("ET_STAGE", "ET_AWS_ENDPOINT_URL", "ET_MODEL_BUCKET", "ET_REDIS_URL", "ET_REDIS_CACHE_NAME",
         "ET_REDIS_IAM_USER")


def _section() -> str:
    text = GUIDE.read_text()
    start = text.index(SECTION)
    following = text.find("\n## ", start + len(SECTION))
    return text[start:following if following >= 0 else len(text)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", _section(), flags=re.M | re.S)


def _invocations() -> list[dict]:
    """Each `sam local invoke` command of the section: its function and options."""
    [script] = [block for block in _blocks("bash") if "local invoke" in block]
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        for i in range(len(tokens) - 1):
            if tokens[i:i + 2] == ["local", "invoke"]:
                options, positional, rest = {}, [], iter(tokens[i + 2:])
                for token in rest:
                    if token in VALUED:
                        options[token] = next(rest)
                    elif token.startswith("-"):
                        options[token] = True
                    else:
                        positional.append(token)
                assert len(positional) == 1, line
                commands.append({"function": positional[0], "options": options, "line": line})
    assert commands, "no `sam local invoke` command in the section"
    return commands


def _env_file() -> dict:
    [block] = _blocks("json")
    return json.loads(block)


def _sam_environment(function: dict, env_file: dict) -> dict[str, str]:
    """What SAM gives ``function`` (its properties) from ``env_file``: the template's variables,
    each overridden by the function's block (by function name or logical ID) over ``Parameters``;
    an intrinsic (a dict) becomes ""; keys the template does not declare are dropped."""
    overrides = dict(env_file.get("Parameters", {})) | env_file.get(function["FunctionName"], {})
    declared = function["Environment"]["Variables"]
    return {name: str(overrides.get(name, "" if isinstance(value, dict | list) else value))
            for name, value in declared.items()}


@pytest.fixture(scope="module")
def dev(layers_built, tmp_path_factory):
    """The template the guide's `cdk synth -c stage=dev` writes (the repository's own functions)."""
    base = tmp_path_factory.mktemp("infra-sam-dev")
    return synthesise(base / "cdk.out", ROOT / "functions", "dev")


@pytest.fixture(scope="module")
def functions(dev) -> dict[str, dict]:
    return {props["FunctionName"]: props for props in dev.props("AWS::Lambda::Function")}


def test_every_documented_invocation_names_a_function_of_the_dev_template(functions):
    for command in _invocations():
        assert command["function"] in functions, (command["line"], sorted(functions))
        assert command["options"].get("-t") == TEMPLATE, command["line"]
        assert (ROOT / command["options"]["-e"]).is_file(), command["line"]


def test_every_documented_invocation_passes_the_local_env_file(functions):
    """Without it the function runs with the template's environment: the deployed dev stage."""
    for command in _invocations():
        assert command["options"].get("--env-vars") == ENV_FILE, command["line"]


def test_every_key_of_the_local_env_file_is_declared_where_it_applies(functions):
    """SAM drops, without a word, a key the function does not declare."""
    env_file = _env_file()
    assert "Parameters" in env_file
    for name, props in functions.items():  # Parameters applies to every function
        declared = props["Environment"]["Variables"]
        assert set(env_file["Parameters"]) <= set(declared), (name, set(env_file["Parameters"]) - set(declared))
    for block, variables in env_file.items():
        if block == "Parameters":
            continue
        assert block in functions, (block, sorted(functions))
        declared = functions[block]["Environment"]["Variables"]
        assert set(variables) <= set(declared), (block, set(variables) - set(declared))


def test_the_local_env_file_points_every_function_at_the_local_stack(functions):
    """Each variable saying where a function's resources are is overridden for every function
    (a new cache user without its block would keep ElastiCache IAM auth and the deployed cache)."""
    env_file = _env_file()
    for name, props in functions.items():
        environment = _sam_environment(props, env_file)
        declared = props["Environment"]["Variables"]
        overridden = set(env_file["Parameters"]) | set(env_file.get(name, {}))
        assert {v for v in WHERE if v in declared} <= overridden, (name, set(WHERE) & set(declared) - overridden)
        assert environment["ET_STAGE"] == "local"
        assert environment["ET_AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert environment["ET_MODEL_BUCKET"] == ""
        if "ET_REDIS_URL" in declared:
            assert environment["ET_REDIS_URL"].startswith("redis://127.0.0.1:")
            assert environment["ET_REDIS_CACHE_NAME"] == environment["ET_REDIS_IAM_USER"] == ""


def test_the_invoked_functions_settings_read_the_local_stack(functions, monkeypatch):
    """The environment SAM resolves, read by the settings the handlers use."""
    from ensemble_trader.runtime.settings import Settings

    env_file = _env_file()
    for command in _invocations():
        for variable in WHERE:
            monkeypatch.delenv(variable, raising=False)
        for variable, value in _sam_environment(functions[command["function"]], env_file).items():
            monkeypatch.setenv(variable, value)
        settings = Settings()
        assert settings.stage == "local" and settings.aws_endpoint_url.startswith("http://127.0.0.1:")
        assert settings.redis_iam_user is None and settings.redis_cache_name is None
        assert settings.bucket == "et-local-model-registry"


def test_dev_declares_an_empty_endpoint_on_every_function_for_sam_to_override(functions):
    assert functions
    assert {name: props["Environment"]["Variables"].get("ET_AWS_ENDPOINT_URL") for name, props in functions.items()} \
        == dict.fromkeys(functions, "")


def test_prod_declares_no_endpoint(real):
    for props in real.props("AWS::Lambda::Function"):
        assert "ET_AWS_ENDPOINT_URL" not in props["Environment"]["Variables"], props["FunctionName"]
