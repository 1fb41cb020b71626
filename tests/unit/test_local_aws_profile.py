"""An AWS profile in the user's shell and the local stack: the shell lines of `local up` and
`local status --exports` unset it, and a profile this machine lacks is one line naming the
variable, not botocore's ProfileNotFound traceback (no server is started: the errors come
before any request)."""

from __future__ import annotations

import subprocess

import pytest
from ensemble_trader.adapters.aws.clients import clear_client_cache, client
from ensemble_trader.cli import main, run_main
from ensemble_trader.runtime.settings import EnvironmentSettingError, Settings, get_settings


@pytest.fixture()
def shell(tmp_path, monkeypatch):
    """The environment `local up`'s export lines give (endpoint, region, dummy keys), an empty AWS
    config file, and no profile yet: a test adds one."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "aws-config"
    config.write_text("[profile ops]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: never reached
    monkeypatch.setenv("ET_STAGE", "local")
    get_settings.cache_clear()
    clear_client_cache()
    yield config
    get_settings.cache_clear()
    clear_client_cache()


@pytest.mark.parametrize("variable", ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"])
def test_a_missing_profile_with_the_region_set_is_a_typed_error_naming_the_variable(shell, monkeypatch, variable):
    """With AWS_REGION set the region lookup never reads the profile; botocore still does when it
    builds the client, and raised ProfileNotFound there."""
    monkeypatch.setenv(variable, "nosuch-profile")
    with pytest.raises(EnvironmentSettingError) as caught:
        client("sqs", Settings())
    assert caught.value.variable == variable
    message = str(caught.value)
    assert "'nosuch-profile'" in message and str(shell) in message and f"unset {variable}" in message
    assert "\n" not in message


def test_an_empty_profile_variable_is_named_too(shell, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "")  # botocore looks for a profile named ''
    with pytest.raises(EnvironmentSettingError, match=r"^AWS_PROFILE: names the AWS profile ''"):
        client("sqs", Settings())


def test_an_existing_profile_is_fine_and_the_endpoint_and_keys_still_win(shell, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "ops")
    sqs = client("sqs", Settings())
    assert sqs.meta.endpoint_url == "http://127.0.0.1:9" and sqs.meta.region_name == "us-east-1"


def test_a_config_file_botocore_cannot_parse_is_named(shell):
    shell.write_text("[default\nregion = us-east-1\n")
    with pytest.raises(EnvironmentSettingError) as caught:
        client("sqs", Settings())
    assert caught.value.variable == "AWS_CONFIG_FILE" and str(shell) in str(caught.value)


def test_a_credentials_file_botocore_cannot_parse_is_named_as_such(shell, tmp_path, monkeypatch):
    """botocore raises the same error for the credentials file (read when no keys are in the
    environment): the message named the config file, which was fine."""
    credentials = tmp_path / "aws-credentials"
    credentials.write_text("[default\naws_access_key_id = x\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(EnvironmentSettingError) as caught:
        client("sqs", Settings()).list_queues()
    assert caught.value.variable == "AWS_SHARED_CREDENTIALS_FILE"
    assert "AWS credentials file" in str(caught.value) and str(credentials) in str(caught.value)


def test_an_operator_command_with_a_missing_profile_is_one_line(shell, monkeypatch, capsys):
    """The review's case: `ensemble-trader orders status` against the stack with
    AWS_PROFILE=nosuch-profile in the shell exited 1 with a 50-line traceback."""
    monkeypatch.setenv("AWS_PROFILE", "nosuch-profile")
    assert main(["orders", "status"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ProfileNotFound" not in err
    assert err.strip().splitlines()[-1].startswith(
        "ensemble-trader: error: AWS_PROFILE: names the AWS profile 'nosuch-profile'"), err


def test_run_main_makes_botocores_configuration_errors_one_line(capsys):
    """A ProfileNotFound from a path that does not go through the AWS clients."""
    import argparse

    from botocore.exceptions import ProfileNotFound

    def command(args):
        raise ProfileNotFound(profile="elsewhere")

    def parser():
        p = argparse.ArgumentParser(prog="x")
        p.set_defaults(func=command)
        return p

    assert run_main(parser, [], prog="x") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("x: error: AWS_") and "'elsewhere'" in err[0]


def test_run_main_still_raises_other_errors():
    import argparse

    def command(args):
        raise RuntimeError("a bug")

    def parser():
        p = argparse.ArgumentParser(prog="x")
        p.set_defaults(func=command)
        return p

    with pytest.raises(RuntimeError, match="a bug"):
        run_main(parser, [], prog="x")


class _UpStack:
    def __init__(self, *args, **kwargs):
        self.attached = False

        class _Server:
            pid = 1

        self.moto = self.redis = _Server()

    def start(self):
        return self

    def write_state_file(self, path):
        path.write_text("{}")
        return path

    def environment(self, for_shell=False):
        return {"ET_STAGE": "local", "ET_AWS_ENDPOINT_URL": "http://127.0.0.1:1", "ET_REDIS_URL": "redis://x",
                "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}

    def stop(self):
        pass


def test_the_shell_lines_of_local_up_unset_what_would_steer_boto3_away(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", str(tmp_path / "stack.json"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000")  # DynamoDB Local, say
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", _UpStack)
    assert main(["local", "up"]) == 0
    out = capsys.readouterr().out
    unsets = [line for line in out.splitlines() if line.startswith("unset ")]
    assert len(unsets) == 1
    assert set(unsets[0].split()[1:]) >= {"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                                          "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_ENDPOINT_URL_DYNAMODB"}
    # the whole output is for a shell's eval (the first line is a comment): the profile is gone after it
    shell = subprocess.run(
        ["bash", "-c", 'eval "$OUT"; echo "${AWS_PROFILE-unset} ${AWS_ENDPOINT_URL_DYNAMODB-unset} $ET_STAGE"'],
        env={"PATH": "/usr/bin:/bin", "OUT": out, "AWS_PROFILE": "nosuch-profile",
             "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000"},
        capture_output=True, text=True, check=True)
    assert shell.stdout.split() == ["unset", "unset", "local"]
