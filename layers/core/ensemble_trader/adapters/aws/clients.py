"""boto3 clients built from :class:`~ensemble_trader.runtime.settings.Settings`, cached per process.

A Lambda container builds its clients once (at cold start) and reuses them; so does a local
process. The endpoint URL comes from ``ET_AWS_ENDPOINT_URL`` (the moto server locally; unset in
AWS), the region from :func:`aws_region` (the AWS CLI's order: ``AWS_REGION``,
``AWS_DEFAULT_REGION``, the profile's region), so an operator command reaches the stack the
runbook's ``aws ...`` commands reach. Timeouts are short and retries bounded so that a stalled service fails the invocation
instead of eating the whole Lambda timeout.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ProfileNotFound

from ensemble_trader.runtime.settings import (
    EnvironmentSettingError,
    RegionNotSetError,
    Settings,
    get_settings,
)

DEFAULT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"max_attempts": 3, "mode": "standard"},
    max_pool_connections=20,
)

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str], Any] = {}


def aws_region(settings: Settings | None = None) -> str:
    """The region AWS requests go to: the settings' (``AWS_REGION``, else ``AWS_DEFAULT_REGION``),
    else the AWS profile's (``AWS_PROFILE`` or ``default`` in ``~/.aws/config``, as boto3 reads it).

    Raises :class:`~ensemble_trader.runtime.settings.RegionNotSetError` (naming how to set one)
    when there is none: no request is then made, rather than one to a region picked by default.
    """
    settings = settings or get_settings()
    if settings.region:
        return settings.region
    try:
        session = boto3.session.Session()
        region, profile = session.region_name, session.profile_name
    except ProfileNotFound as exc:  # AWS_PROFILE names no profile of ~/.aws/config
        raise EnvironmentSettingError("AWS_PROFILE", f"{exc}; no AWS region can be read from it") from None
    if region:
        return region
    raise RegionNotSetError(None if profile == "default" else profile)


def client(service: str, settings: Settings | None = None, *, config: Config | None = None) -> Any:
    """A boto3 client of ``service`` for the settings' endpoint and :func:`aws_region` (cached).

    Clients are cached by (service, endpoint, region), so a process that talks to two local
    stacks one after the other (tests) gets a client for each.
    """
    settings = settings or get_settings()
    region = aws_region(settings)
    cache_key = (service, settings.aws_endpoint_url, region)
    with _lock:
        found = _clients.get(cache_key)
        if found is None or config is not None:
            found = boto3.session.Session().client(
                service,
                region_name=region,
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
