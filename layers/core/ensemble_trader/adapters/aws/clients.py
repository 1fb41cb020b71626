"""boto3 clients built from :class:`~ensemble_trader.runtime.settings.Settings`, cached per process.

A Lambda container builds its clients once (at cold start) and reuses them; so does a local
process. The endpoint URL comes from ``ET_AWS_ENDPOINT_URL`` (the moto server locally; unset in
AWS), the region from :func:`aws_region` (the AWS CLI's order: ``AWS_REGION``,
``AWS_DEFAULT_REGION``, the profile's region), so an operator command reaches the stack the
runbook's ``aws ...`` commands reach.

Timeouts and retries are sized for a 30 s Lambda function (:func:`client_config`): a 1 s connect
timeout, a 2 s read timeout (per socket read, so a large S3 object is not cut off; every object
the functions load is a few KB), and botocore's ``standard`` retry mode with a *total* number of
attempts per call of 2 — or 1 for the services whose publishers retry themselves (Kinesis, SQS,
EventBridge: :mod:`._retry` resends the failed entries, and a failed call, so the two retry
layers do not multiply). :func:`worst_call_seconds` is the longest one call can then take
(every attempt running into its timeouts, and botocore's longest back-offs between them); each
publisher's ``WORST_CASE_S`` multiplies it by the publisher's attempts and adds its back-offs. A
stalled service thus fails the call with an InfrastructureError well inside the function's
timeout, instead of eating it (tests/unit/test_adapter_timeouts.py holds the figures against
:data:`ensemble_trader.constants.FUNCTIONS`' timeouts).
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

CONNECT_TIMEOUT_S = 1.0
"""Seconds to open a connection (in-region AWS endpoints answer in milliseconds)."""

READ_TIMEOUT_S = 2.0
"""Seconds any one socket read (or write) may block; far above the p99 latency of the calls made."""

CALL_ATTEMPTS = 2
"""botocore attempts per call (``total_max_attempts``: the first one included) of a client without
a retry loop of its own: DynamoDB (throttling is retried here), S3, Secrets Manager."""

PUBLISHER_SERVICES = frozenset({"kinesis", "sqs", "events"})
"""Services whose publishers retry both the entries AWS rejects and a failed call
(:func:`._retry.resend_failed`): their clients make one attempt per call."""

THROTTLING_BACKOFF_S = 1.0
"""botocore's base back-off after a throttled attempt (``standard`` mode: ``rand(0, 1) * base *
2 ** i`` seconds before retry ``i + 1``, capped at :data:`BOTOCORE_MAX_BACKOFF_S`; other errors,
a timeout among them, wait 50 ms * 2 ** i)."""

BOTOCORE_MAX_BACKOFF_S = 20.0

RETRY_AFTER_ALLOWANCE_S = 5.0
"""How much longer botocore (>= 1.40) may wait before a retry when the throttled answer carries an
``x-amz-retry-after`` header (``ExponentialBackoff._RETRY_AFTER_MAX_ADDITIONAL``)."""


def call_attempts(service: str) -> int:
    """botocore attempts per call of a ``service`` client (:func:`client_config`)."""
    return 1 if service in PUBLISHER_SERVICES else CALL_ATTEMPTS


def client_config(service: str) -> Config:
    """The botocore config of a ``service`` client: Lambda-sized timeouts, bounded attempts."""
    return Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"total_max_attempts": call_attempts(service), "mode": "standard"},
        max_pool_connections=20,
    )


def worst_call_seconds(service: str, config: Config | None = None) -> float:
    """The longest one call of a ``service`` client made with ``config`` (default:
    :func:`client_config`) can take before it raises: every attempt spends its connect and read
    timeouts, and botocore waits its longest back-off (a throttled answer's, with the
    ``x-amz-retry-after`` allowance) between them."""
    config = config or client_config(service)
    retries = config.retries or {}
    if "total_max_attempts" in retries:  # a client's ``meta.config`` always says it this way
        attempts = int(retries["total_max_attempts"])
    else:  # ``max_attempts`` counts the retries only
        attempts = int(retries.get("max_attempts", 2)) + 1
    backoffs = sum(
        min(THROTTLING_BACKOFF_S * 2**i, BOTOCORE_MAX_BACKOFF_S) + RETRY_AFTER_ALLOWANCE_S
        for i in range(attempts - 1)
    )
    return attempts * (float(config.connect_timeout) + float(config.read_timeout)) + backoffs


DEFAULT_CONFIG = client_config("dynamodb")
"""The config of a client without a retry loop of its own (kept for callers that build clients
themselves)."""

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
                config=config or client_config(service),
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
