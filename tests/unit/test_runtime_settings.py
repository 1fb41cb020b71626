"""Settings read an empty variable as unset.

The dev template declares ``ET_AWS_ENDPOINT_URL=""`` on every function so that ``sam local invoke
--env-vars`` can point it at the local stack (SAM overrides only the variables a template
declares), and docs/deployment.md's ``local-env.json`` blanks ``ET_REDIS_CACHE_NAME`` and
``ET_REDIS_IAM_USER``. Read as the empty string, the endpoint reached boto3 as
``endpoint_url=""`` ("Invalid endpoint") in every deployed dev function.
"""

from __future__ import annotations

import pytest
from ensemble_trader.adapters.aws.clients import clear_client_cache, client
from ensemble_trader.adapters.redis.cache import RedisCache
from ensemble_trader.runtime.settings import Settings

BLANKABLE = {
    "ET_AWS_ENDPOINT_URL": "aws_endpoint_url",
    "ET_REDIS_IAM_USER": "redis_iam_user",
    "ET_REDIS_CACHE_NAME": "redis_cache_name",
    "ET_MODEL_BUCKET": "model_bucket",
}


@pytest.fixture(autouse=True)
def _no_et_environment(monkeypatch):
    """No ET_* variable of BLANKABLE; dummy AWS keys and the EC2 metadata service off, so that the
    clients built here look no further for credentials (the metadata service first of all)."""
    for variable in BLANKABLE:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("ET_STAGE", "unit")
    clear_client_cache()
    yield
    clear_client_cache()


@pytest.mark.parametrize("variable", sorted(BLANKABLE))
@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
def test_an_empty_variable_is_unset(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), BLANKABLE[variable]) is None


def test_a_set_variable_is_kept(monkeypatch):
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("ET_REDIS_IAM_USER", "et-dev-app")
    monkeypatch.setenv("ET_REDIS_CACHE_NAME", "et-dev-cache")
    monkeypatch.setenv("ET_MODEL_BUCKET", "my-bucket")
    settings = Settings()
    assert (settings.aws_endpoint_url, settings.redis_iam_user, settings.redis_cache_name, settings.bucket) == (
        "http://127.0.0.1:5000", "et-dev-app", "et-dev-cache", "my-bucket")


def test_the_dev_templates_empty_endpoint_gives_aws_own_endpoint(monkeypatch):
    """What a deployed dev function reads: ``ET_AWS_ENDPOINT_URL`` declared empty."""
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", "")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    dynamodb = client("dynamodb", Settings())
    assert dynamodb.meta.endpoint_url == "https://dynamodb.eu-west-1.amazonaws.com"


def test_an_empty_model_bucket_is_the_stages_registry(monkeypatch):
    monkeypatch.setenv("ET_MODEL_BUCKET", "")
    assert Settings().bucket == Settings(model_bucket=None).bucket == "et-unit-model-registry"


def test_blank_cache_user_and_name_connect_without_elasticache_iam_auth(monkeypatch):
    """The local-env.json of ``sam local invoke``: the template's cache user and name blanked."""
    monkeypatch.setenv("ET_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("ET_REDIS_IAM_USER", "")
    monkeypatch.setenv("ET_REDIS_CACHE_NAME", "")
    cache = RedisCache.from_settings(Settings())
    assert cache.client.connection_pool.connection_kwargs.get("credential_provider") is None
