"""IAM auth tokens for ElastiCache Serverless: signed, cached, refreshed before expiry."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import botocore.session
import pytest
from ensemble_trader.adapters.aws.elasticache_auth import (
    REFRESH_MARGIN_S,
    TOKEN_LIFETIME_S,
    ElastiCacheIAMProvider,
    sign_connect_token,
)
from ensemble_trader.adapters.redis.cache import RedisCache
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.settings import Settings


def _session(with_credentials: bool = True) -> botocore.session.Session:
    session = botocore.session.get_session()
    if with_credentials:
        session.set_credentials("AKIDEXAMPLE", "secret-example")
    return session


def test_token_is_a_presigned_connect_request_without_scheme():
    token = sign_connect_token("et-dev-cache", "et-dev-user", "eu-west-1", session=_session())
    assert not token.startswith("https://")
    parts = urlsplit("https://" + token)
    assert parts.hostname == "et-dev-cache"
    query = parse_qs(parts.query)
    assert query["Action"] == ["connect"]
    assert query["User"] == ["et-dev-user"]
    assert query["ResourceType"] == ["ServerlessCache"]
    assert query["X-Amz-Expires"] == [str(TOKEN_LIFETIME_S)]
    assert "/eu-west-1/elasticache/aws4_request" in query["X-Amz-Credential"][0]
    assert len(query["X-Amz-Signature"][0]) == 64


def test_signing_without_credentials_is_a_typed_error(monkeypatch):
    session = _session(with_credentials=False)
    monkeypatch.setattr(session, "get_credentials", lambda: None)
    with pytest.raises(InfrastructureError, match="no AWS credentials"):
        sign_connect_token("c", "u", "us-east-1", session=session)


def test_provider_reuses_the_token_and_re_signs_before_it_expires():
    now = [1000.0]
    signed: list[int] = []

    def sign(cache: str, user: str, region: str) -> str:
        signed.append(1)
        return f"{cache}/{user}/{region}/{len(signed)}"

    provider = ElastiCacheIAMProvider("cache", "user", "us-east-1", sign=sign, clock=lambda: now[0])
    assert provider.get_credentials() == ("user", "cache/user/us-east-1/1")
    now[0] += TOKEN_LIFETIME_S - REFRESH_MARGIN_S - 1
    assert provider.get_credentials()[1].endswith("/1")
    now[0] += 2
    assert provider.get_credentials()[1].endswith("/2")
    assert len(signed) == 2


def test_cache_from_settings_uses_iam_only_when_configured(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # as in Lambda (the sign-in needs a region)
    plain = RedisCache.from_settings(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert plain.client.connection_pool.connection_kwargs.get("credential_provider") is None
    iam = RedisCache.from_settings(
        Settings(redis_url="rediss://cache.example:6379", redis_iam_user="u", redis_cache_name="c")
    )
    provider = iam.client.connection_pool.connection_kwargs["credential_provider"]
    assert isinstance(provider, ElastiCacheIAMProvider) and provider.cache_name == "c"
    assert provider.region == "eu-west-1"
    with pytest.raises(ValueError, match="ET_REDIS_CACHE_NAME"):
        RedisCache.from_settings(Settings(redis_iam_user="u"))
