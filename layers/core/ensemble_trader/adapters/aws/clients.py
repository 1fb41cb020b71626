"""boto3 clients built from :class:`~ensemble_trader.runtime.settings.Settings`, cached per process.

A Lambda container builds its clients once (at cold start) and reuses them; so does a local
process. The endpoint URL comes from ``ET_AWS_ENDPOINT_URL`` (the moto server locally; unset in
AWS). Timeouts are short and retries bounded so that a stalled service fails the invocation
instead of eating the whole Lambda timeout.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from ensemble_trader.runtime.settings import Settings, get_settings

DEFAULT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"max_attempts": 3, "mode": "standard"},
    max_pool_connections=20,
)

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str], Any] = {}


def client(service: str, settings: Settings | None = None, *, config: Config | None = None) -> Any:
    """A boto3 client of ``service`` for the settings' region and endpoint (cached).

    Clients are cached by (service, endpoint, region), so a process that talks to two local
    stacks one after the other (tests) gets a client for each.
    """
    settings = settings or get_settings()
    cache_key = (service, settings.aws_endpoint_url, settings.region)
    with _lock:
        found = _clients.get(cache_key)
        if found is None or config is not None:
            found = boto3.session.Session().client(
                service,
                region_name=settings.region,
                endpoint_url=settings.aws_endpoint_url,
                config=config or DEFAULT_CONFIG,
            )
            if config is None:
                _clients[cache_key] = found
        return found


def clear_client_cache() -> None:
    """Forget every cached client (tests that restart the local stack on another port)."""
    with _lock:
        _clients.clear()


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError (``""`` for other exceptions)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
