"""boto3 clients built from :class:`~ensemble_trader.runtime.settings.Settings`, cached per process.

A Lambda container builds its clients once (at cold start) and reuses them; so does a local
process. The endpoint URL comes from ``ET_AWS_ENDPOINT_URL`` (the moto server locally; unset in
AWS), the region from :func:`aws_region` (the AWS CLI's order: ``AWS_REGION``,
``AWS_DEFAULT_REGION``, the profile's region), so an operator command reaches the stack the
runbook's ``aws ...`` commands reach.

Every client is bound by the invocation's deadline (:mod:`ensemble_trader.runtime.deadline`):
botocore starts no attempt — the first or a retry — with less time left than one attempt can
take against a service that never answers (:func:`attempt_seconds`: connect timeout + read
timeout + :data:`ATTEMPT_MARGIN_S`), and sleeps no retry back-off that could end past the
deadline; either raises :class:`~ensemble_trader.runtime.deadline.DeadlineExceededError` (an
InfrastructureError) instead. So a stalled service fails the invocation's AWS calls cleanly,
an attempt in flight ending or timing out inside the invocation, instead of eating the whole
Lambda timeout. With time to spare, and outside an invocation, the clients behave exactly as
botocore's standard mode with :data:`DEFAULT_CONFIG`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConfigParseError, ProfileNotFound
from botocore.retries import standard

from ensemble_trader.constants import LOCAL_STAGE
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.deadline import DeadlineExceededError, current
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

ATTEMPT_MARGIN_S = 0.5
"""Added to an attempt's connect and read timeouts for what they do not cover (signing, the DNS
lookup, parsing the answer, the scheduler)."""

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
    except CONFIGURATION_ERRORS as exc:
        raise configuration_error(exc) from None
    if region:
        return region
    raise RegionNotSetError(None if profile == "default" else profile,
                            local_stage=settings.stage == LOCAL_STAGE and not settings.aws_endpoint_url)


CONFIGURATION_ERRORS: tuple[type[Exception], ...] = (ProfileNotFound, ConfigParseError)
"""What botocore raises, before any request, for an AWS configuration it cannot use: a profile
named by ``AWS_PROFILE`` / ``AWS_DEFAULT_PROFILE`` that the config file lacks (an empty value
too), a config file it cannot parse. :func:`configuration_error` makes each an
:class:`~ensemble_trader.runtime.settings.EnvironmentSettingError` naming the variable."""

_PROFILE_VARIABLES = ("AWS_DEFAULT_PROFILE", "AWS_PROFILE")  # botocore's order: the first set wins


def configuration_error(exc: Exception) -> EnvironmentSettingError:
    """The one-line error for ``exc`` (one of :data:`CONFIGURATION_ERRORS`): which variable named
    the missing profile (or the unparsable config file), and what to do."""
    if isinstance(exc, ProfileNotFound):
        variable = next((v for v in _PROFILE_VARIABLES if v in os.environ), "AWS_PROFILE")
        profile = os.environ.get(variable, exc.kwargs.get("profile", ""))
        config_file = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
        return EnvironmentSettingError(
            variable,
            f"names the AWS profile {profile!r}, which {config_file} does not define: name a profile it "
            f"defines, or unset {variable} (against the local stack, the lines "
            "`ensemble-trader local status --exports` prints unset it)",
        )
    # botocore raises the same error for the credentials file: name the file it could not parse
    path = str(getattr(exc, "kwargs", {}).get("path") or "")
    credentials = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    if path and os.path.expanduser(path) == os.path.expanduser(credentials):
        variable, kind, shown = "AWS_SHARED_CREDENTIALS_FILE", "credentials", credentials
    else:
        variable, kind, shown = "AWS_CONFIG_FILE", "config", os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
    return EnvironmentSettingError(variable, f"botocore cannot read the AWS {kind} file {shown}: {exc}; fix or move it")


def client(service: str, settings: Settings | None = None, *, config: Config | None = None) -> Any:
    """A boto3 client of ``service`` for the settings' endpoint and :func:`aws_region` (cached).

    Clients are cached by (service, endpoint, region), so a process that talks to two local
    stacks one after the other (tests) gets a client for each. botocore reads the AWS profile
    even when the region and the endpoint are given: a profile the config file lacks (or a config
    file it cannot parse) raises :class:`~ensemble_trader.runtime.settings.EnvironmentSettingError`
    naming the variable (:func:`configuration_error`), not botocore's ProfileNotFound.
    """
    settings = settings or get_settings()
    region = aws_region(settings)
    cache_key = (service, settings.aws_endpoint_url, region)
    with _lock:
        found = _clients.get(cache_key)
        if found is None or config is not None:
            try:
                found = boto3.session.Session().client(
                    service,
                    region_name=region,
                    endpoint_url=settings.aws_endpoint_url,
                    config=config or DEFAULT_CONFIG,
                )
            except CONFIGURATION_ERRORS as exc:  # the region was set, the profile still read
                raise configuration_error(exc) from None
            bound_by_deadline(found)
            if config is None:
                _clients[cache_key] = found
        return found


def attempt_seconds(client_or_config: Any = None) -> float:
    """The longest one AWS attempt can take against a service that accepts the connection and
    never answers: the connect timeout, the read timeout (each socket read waits at most that
    long; a stalled service sends nothing) and :data:`ATTEMPT_MARGIN_S`. Of a botocore client's
    config, or of a Config; of :data:`DEFAULT_CONFIG` for anything else (None, a test's fake
    client): an attempt of an unknown client is taken to be as long as one of ours."""
    config = getattr(getattr(client_or_config, "meta", None), "config", client_or_config)
    if not isinstance(config, Config):
        config = DEFAULT_CONFIG
    return float(config.connect_timeout) + float(config.read_timeout) + ATTEMPT_MARGIN_S


NOT_STARTED = "(attempt not started)"
"""How the ``what`` of the guard's DeadlineExceededError ends, for people, when ``before-send``
refused an attempt before sending it; code reads the error's ``attempt_started`` (False then)."""

CALL_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError, DeadlineExceededError)
"""What a call of one of these clients raises: botocore's errors, and the deadline guard's
refusal of an attempt or a retry, which names only the service and operation
(``S3 GetObject (attempt not started)``): an adapter catches all three and leads its error with
the resource called (:func:`call_error`; DynamoDB's :func:`~ensemble_trader.adapters.aws.dynamodb.translate`)."""


def call_error(exc: Exception, what: str) -> InfrastructureError:
    """The error to raise for ``exc`` (one of :data:`CALL_ERRORS`) of the call ``what`` (the
    operation and the resource: ``"S3 get s3://bucket/key"``): the guard's DeadlineExceededError
    led by ``what``, still one, with its figures, ``failing`` and ``attempt_started``
    (:meth:`~ensemble_trader.runtime.deadline.DeadlineExceededError.led_by`); any other error as
    an InfrastructureError ``"{what}: {exc}"``."""
    if isinstance(exc, DeadlineExceededError):
        return exc.led_by(what)
    return InfrastructureError(f"{what}: {exc}")


class _DeadlineGuard:
    """botocore handlers of one client that keep its attempts inside the invocation's deadline.

    ``before-send`` (emitted before every attempt, the first and each retry) raises
    DeadlineExceededError (``attempt_started`` False: the attempt was not sent) when less than
    one attempt (:func:`attempt_seconds`) is left. botocore's
    endpoint catches what a ``before-send`` handler raises as the attempt's exception and asks
    ``needs-retry``; standard mode retries only connection errors, HTTP client errors, throttling
    and transient codes, so this one is raised to the caller at once, unretried.

    ``needs-retry`` (emitted after every attempt; this handler runs before botocore's retry
    handler) raises DeadlineExceededError when standard mode would retry (the same conditions,
    evaluated on the same attempt) and less is left than the longest back-off botocore may sleep
    first (its own formula with a jitter of 1: throttling 1 s x 2^(attempt-1), other errors 50 ms
    (DynamoDB 25 ms) x 2^(attempt-1), capped at 20 s, plus what an ``x-amz-retry-after`` header
    adds) and one attempt after it — the rule of the adapters' own loops
    (``pause(then_needed_s=attempt_s)``). botocore's sleep (``time.sleep`` in
    ``Endpoint._needs_retry``, after the handlers answered; no handler can shorten it) therefore
    never crosses the deadline, and is never slept for a retry ``before-send`` would then refuse:
    the call ends at once with an error naming the attempt's own (a ThrottlingException, a
    ReadTimeoutError). Raised before botocore's handler runs, the
    refusal spends no retry quota. (Were the quota used up, botocore would not have retried
    anyway: the call then ends with this error, which names the attempt's own, instead of it.)

    Without a deadline (outside an invocation) both return at once; with more time left than
    they ask for they return None, and botocore decides and sleeps exactly as without them.
    """

    def __init__(self, client: Any):
        config = client.meta.config
        self.attempt_s = attempt_seconds(config)
        self.service = client.meta.service_model.service_id
        hyphenized = self.service.hyphenize()
        self._timeouts = f"(connect {config.connect_timeout:g} s + read {config.read_timeout:g} s + {ATTEMPT_MARGIN_S:g} s)"
        retries = config.retries or {}
        self._retrying = retries.get("mode", "standard") in ("standard", "adaptive")
        attempts = retries.get("total_max_attempts") or getattr(standard, "_SERVICE_MAX_ATTEMPTS", {}).get(
            hyphenized, standard.DEFAULT_MAX_ATTEMPTS)
        self._adapter = standard.RetryEventAdapter()
        self._conditions = standard.StandardRetryConditions(max_attempts=attempts)
        self._longest_backoff = standard.ExponentialBackoff(
            random=lambda: 1.0, service_name=hyphenized,
            throttling_detector=standard.ThrottlingErrorDetector(self._adapter),
        )

    def _what(self, event_name: str) -> str:
        return f"{self.service} {event_name.rsplit('.', 1)[-1]}"

    def before_send(self, event_name: str = "", **_: Any) -> None:
        deadline = current()
        if deadline is None:
            return None
        left = deadline.left()
        if left < self.attempt_s:
            raise DeadlineExceededError(f"{self._what(event_name)} {NOT_STARTED}", left, self.attempt_s,
                                        f"one attempt can take {self._timeouts}", attempt_started=False)
        return None

    def needs_retry(self, event_name: str = "", **kwargs: Any) -> None:
        deadline = current()
        caught = kwargs.get("caught_exception")
        if deadline is None or not self._retrying or isinstance(caught, DeadlineExceededError):
            return None
        context = self._adapter.create_retry_context(**kwargs)
        if not self._conditions.is_retryable(context):
            return None  # botocore will not retry either: the call ends with this attempt's outcome
        backoff = self._longest_backoff.delay_amount(context)
        left = deadline.left()
        if left < backoff + self.attempt_s:
            error = (f"{type(caught).__name__}: {caught}" if caught is not None
                     else context.get_error_code() or f"HTTP {getattr(context.http_response, 'status_code', '?')}")
            raise DeadlineExceededError(
                f"{self._what(event_name)}: not retried after attempt {kwargs.get('attempts')} ({error})", left,
                backoff + self.attempt_s,
                f"botocore's back-off before the retry ({backoff:.2f} s at most) and another attempt "
                f"{self._timeouts} could take",
            )
        return None


def bound_by_deadline(client: Any) -> Any:
    """Register on ``client`` (a botocore client) the handlers that keep its attempts and retry
    back-offs inside the invocation's deadline (:class:`_DeadlineGuard`); return the client."""
    guard = _DeadlineGuard(client)
    name = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register_first(f"before-send.{name}", guard.before_send, unique_id=f"et-deadline-send-{name}")
    client.meta.events.register_first(f"needs-retry.{name}", guard.needs_retry, unique_id=f"et-deadline-retry-{name}")
    return client


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
