"""The AWS region comes from where the AWS CLI reads it, never from a built-in default.

``Settings.region`` read ``AWS_REGION`` only, with ``us-east-1`` as default, and every boto3
client was built for it. An operator shell configured the usual way (``AWS_DEFAULT_REGION``, or
``aws configure``'s profile region; the runbook's ``aws ...`` commands read those) sent ``orders
status`` / ``kill-switch`` / ``reconcile``, ``feed replay`` and ``regime publish`` to us-east-1:
another region's stack of the same stage, silently, or an unnamed ResourceNotFoundException. The
order is now the AWS CLI's — ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's region — and
with none at all a command that reaches AWS fails naming how to set one.
"""

from __future__ import annotations

import pytest
from ensemble_trader.adapters.aws.clients import aws_region, clear_client_cache, client
from ensemble_trader.runtime.settings import (
    EnvironmentSettingError,
    RegionNotSetError,
    Settings,
    get_settings,
)


@pytest.fixture(autouse=True)
def _operator_shell(monkeypatch, tmp_path):
    """No region in the environment and an AWS config file of the test's own (empty: no profile
    region), whatever this machine's ~/.aws holds. Dummy keys, and the EC2 metadata service off:
    a client is built without looking further for credentials (the instance metadata service
    first of all), whatever this shell holds; where the region comes from is what is tested."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "ET_AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = tmp_path / "aws-config"
    config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("ET_STAGE", "unit")
    get_settings.cache_clear()
    clear_client_cache()
    yield config
    get_settings.cache_clear()
    clear_client_cache()


def test_a_shell_with_only_aws_default_region_uses_it(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    settings = Settings()
    assert settings.region == "eu-west-1"
    assert aws_region(settings) == "eu-west-1"
    assert client("dynamodb", settings).meta.region_name == "eu-west-1"


def test_aws_region_comes_before_aws_default_region(monkeypatch):
    """The AWS CLI's order (and Lambda's: it sets both, AWS_REGION being the function's)."""
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert Settings().region == "eu-central-1"
    assert client("dynamodb", Settings()).meta.region_name == "eu-central-1"


def test_a_blank_aws_region_is_no_region(monkeypatch):
    monkeypatch.setenv("AWS_REGION", " ")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert Settings().region is None
    assert aws_region(Settings()) == "eu-west-1"  # boto3 reads AWS_DEFAULT_REGION itself


def test_without_a_region_variable_the_profiles_region_is_used(monkeypatch, _operator_shell):
    _operator_shell.write_text("[default]\nregion = sa-east-1\n\n[profile ops]\nregion = ap-southeast-2\n")
    assert Settings().region is None
    assert aws_region(Settings()) == "sa-east-1"
    assert client("sqs", Settings()).meta.region_name == "sa-east-1"
    monkeypatch.setenv("AWS_PROFILE", "ops")
    clear_client_cache()
    assert aws_region(Settings()) == "ap-southeast-2"
    assert client("sqs", Settings()).meta.region_name == "ap-southeast-2"


def test_no_region_anywhere_is_a_typed_error_saying_how_to_set_one():
    with pytest.raises(RegionNotSetError) as caught:
        client("dynamodb", Settings())
    message = str(caught.value)
    assert caught.value.variable == "AWS_REGION"
    assert "AWS_DEFAULT_REGION" in message and "export AWS_REGION=" in message and "aws configure set region" in message


def test_no_region_in_a_named_profile_names_the_profile(monkeypatch, _operator_shell):
    _operator_shell.write_text("[profile ops]\noutput = json\n")
    monkeypatch.setenv("AWS_PROFILE", "ops")
    with pytest.raises(RegionNotSetError, match="profile 'ops'.*--profile ops"):
        aws_region(Settings())


def test_a_profile_that_does_not_exist_is_named(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(EnvironmentSettingError, match="AWS_PROFILE: .*nope"):
        aws_region(Settings())


def test_settings_without_a_region_are_fine_for_what_reaches_no_aws():
    """The backtester, training and the model folder read Settings too: no region needed there."""
    settings = Settings()
    assert settings.region is None and settings.name("orders") == "et-unit-orders"


def test_an_operator_command_without_a_region_fails_before_any_request(capsys, monkeypatch):
    from ensemble_trader.cli import main

    def no_request(*_a, **_k):
        raise AssertionError("a boto3 client was built")

    monkeypatch.setattr("boto3.session.Session.client", no_request)
    assert main(["orders", "status"]) == 1
    err = capsys.readouterr().err
    assert "orders status: stage unit, region (none set), table et-unit-risk-state\n" in err
    assert "ensemble-trader: error: AWS_REGION: no AWS region is set" in err and "Traceback" not in err


def test_the_elasticache_sign_in_uses_the_profiles_region_too(_operator_shell):
    """Its region was ``Settings.region``, None outside Lambda without a region variable."""
    from ensemble_trader.adapters.redis.cache import RedisCache

    _operator_shell.write_text("[default]\nregion = sa-east-1\n")
    cache = RedisCache.from_settings(Settings(redis_url="rediss://cache.example:6379/0", redis_iam_user="et-user",
                                              redis_cache_name="et-unit"))
    provider = cache.client.connection_pool.connection_kwargs["credential_provider"]
    assert provider.region == "sa-east-1"


def test_no_region_on_the_local_stage_points_at_the_local_stacks_exports(monkeypatch):
    """The local stage (the default) with no endpoint is mostly a shell that never ran local up's
    lines: the error said only `export AWS_REGION=eu-west-1`, which then sent requests to AWS."""
    from ensemble_trader.constants import LOCAL_STAGE

    monkeypatch.setenv("ET_STAGE", LOCAL_STAGE)
    monkeypatch.delenv("ET_AWS_ENDPOINT_URL", raising=False)
    with pytest.raises(RegionNotSetError) as caught:
        aws_region(Settings())
    assert 'for the local stack, eval "$(ensemble-trader local status --exports)"' in str(caught.value)
    assert "for AWS, name the stack's region, e.g. export AWS_REGION=eu-west-1" in str(caught.value)
    monkeypatch.setenv("ET_STAGE", "prod")  # another stage: AWS only
    with pytest.raises(RegionNotSetError) as caught:
        aws_region(Settings())
    assert "local stack" not in str(caught.value)
