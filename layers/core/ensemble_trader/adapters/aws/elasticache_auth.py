"""IAM authentication to ElastiCache Serverless (Valkey/Redis) for redis-py.

The deployed cache accepts only IAM-authenticated connections: the password is a SigV4
presigned ``connect`` request for the cache and user, valid for 15 minutes. redis-py asks a
``CredentialProvider`` for credentials on every new connection, so the provider below signs a
token on demand and reuses it until shortly before it expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from redis.credentials import CredentialProvider

from ensemble_trader.domain.errors import InfrastructureError

TOKEN_LIFETIME_S = 900  # the longest ElastiCache accepts
REFRESH_MARGIN_S = 120  # sign a new token this long before the old one expires


def sign_connect_token(cache_name: str, user: str, region: str, session=None) -> str:
    """A presigned ``connect`` request (without its scheme), which is the IAM auth token."""
    import botocore.session
    from botocore.model import ServiceId
    from botocore.signers import RequestSigner

    session = session or botocore.session.get_session()
    credentials = session.get_credentials()
    if credentials is None:
        raise InfrastructureError("no AWS credentials to sign the ElastiCache IAM auth token")
    signer = RequestSigner(
        ServiceId("elasticache"), region, "elasticache", "v4", credentials, session.get_component("event_emitter")
    )
    url = signer.generate_presigned_url(
        {
            "method": "GET",
            "url": f"https://{cache_name}/?Action=connect&User={quote(user, safe='')}&ResourceType=ServerlessCache",
            "body": {},
            "headers": {},
            "context": {},
        },
        operation_name="connect",
        expires_in=TOKEN_LIFETIME_S,
        region_name=region,
    )
    return url.removeprefix("https://")


class ElastiCacheIAMProvider(CredentialProvider):
    """redis-py credentials ``(user, token)``, the token re-signed before it expires."""

    def __init__(
        self,
        cache_name: str,
        user: str,
        region: str,
        *,
        sign: Callable[[str, str, str], str] = sign_connect_token,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_name = cache_name
        self.user = user
        self.region = region
        self._sign = sign
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def get_credentials(self) -> tuple[str, str]:
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._expires_at - REFRESH_MARGIN_S:
                self._token = self._sign(self.cache_name, self.user, self.region)
                self._expires_at = now + TOKEN_LIFETIME_S
            return self.user, self._token
