"""The retry loop shared by the batch publishers (Kinesis, SQS, EventBridge).

Each batch API answers per entry; only the entries it rejects are sent again, in their original
order, after an exponential backoff with jitter. A botocore error of the whole call counts as
every pending entry failing, except two kinds no retry can fix: a client-configuration error (no
or partial credentials, no region, an unknown profile, credentials AWS does not recognise or
that may not call the API, a stream or queue that does not exist) raises
:class:`InfrastructureError` at once, and a request AWS refuses as malformed (a validation
error, a batch over the size limit, parameters botocore itself refuses) raises
:class:`DataError` at once — the caller's data is at fault, so the stage runner dead-letters
the record behind it instead of retrying its symbol for ever.

Inside a Lambda invocation the loop keeps to its deadline (:mod:`ensemble_trader.runtime.deadline`):
it starts no call with less time left than one attempt can take (``attempt_s``, the client's
:func:`~ensemble_trader.adapters.aws.clients.attempt_seconds`) and sleeps no back-off that would
not leave that much after it; it then raises
:class:`~ensemble_trader.runtime.deadline.DeadlineExceededError` (an InfrastructureError) naming
how many entries still fail and the last error — as it does when botocore's own guard refuses an
attempt of the call. With time to spare, and outside an invocation, it makes the same calls and
sleeps the same back-offs as without a deadline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    UnknownServiceError,
)

from ensemble_trader.domain.errors import DataError, InfrastructureError
from ensemble_trader.runtime import deadline
from ensemble_trader.runtime.deadline import DeadlineExceededError

E = TypeVar("E")

CONFIGURATION_ERRORS: tuple[type[BotoCoreError], ...] = (
    NoCredentialsError,
    PartialCredentialsError,
    NoRegionError,
    ProfileNotFound,
    UnknownServiceError,
)
"""botocore errors of the client's configuration: never transient."""

CONFIGURATION_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "UnrecognizedClientException",
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)
"""AWS error codes answering a request whose credentials or permissions are wrong, or whose
stream or queue does not exist."""

REQUEST_ERROR_CODES = frozenset(
    {
        "ValidationException",
        "InvalidParameterValue",
        "InvalidParameterException",
        "BatchRequestTooLong",
        "BatchEntryIdsNotDistinct",
        "InvalidBatchEntryId",
        "TooManyEntriesInBatchRequest",
        "EmptyBatchRequest",
        "InvalidArgumentException",
    }
)
"""AWS error codes refusing the request itself: sent again unchanged it would be refused again."""


_SQS_PREFIX = "AWS.SimpleQueueService."


def _codes(exc: BaseException) -> set[str]:
    """The error codes of a ClientError. SQS (a query-compatible JSON API) reports its own errors
    under ``AWS.SimpleQueueService.<Name>`` in ``Code``, with the plain name in
    ``QueryErrorCode``: all three spellings count."""
    if not isinstance(exc, ClientError):
        return set()
    error = exc.response.get("Error", {})
    code, query_code = str(error.get("Code") or ""), str(error.get("QueryErrorCode") or "")
    return {c for c in (code, query_code, code.removeprefix(_SQS_PREFIX)) if c}


def _code_in(exc: BaseException, codes: frozenset[str]) -> bool:
    return not _codes(exc).isdisjoint(codes)


def is_request_error(exc: BaseException) -> bool:
    """True when ``exc`` refuses the request's content (the same request can never succeed)."""
    return isinstance(exc, ParamValidationError) or _code_in(exc, REQUEST_ERROR_CODES)


def is_configuration_error(exc: BaseException) -> bool:
    """True when ``exc`` says the client is misconfigured rather than that AWS is busy."""
    return isinstance(exc, CONFIGURATION_ERRORS) or _code_in(exc, CONFIGURATION_ERROR_CODES)


MISSING_RESOURCE_CODES = frozenset(
    {"ResourceNotFoundException", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
)
"""The configuration error codes that say the stream, queue or table does not exist."""


def configuration_problem(exc: BaseException) -> str:
    """What a configuration error (:func:`is_configuration_error`) says is wrong, in a few words:
    a resource that does not exist (a misspelt stream or queue, a stage not deployed or another
    stage's name), credentials or permissions refused, or the client's own settings."""
    if _code_in(exc, MISSING_RESOURCE_CODES):
        return "no such resource (is the name right, and is the stage deployed or the local stack up?)"
    if isinstance(exc, ClientError):
        return "credentials or permissions refused"
    return "AWS client misconfigured"


def backoff_delay(base_delay_s: float, attempt: int, max_delay_s: float = math.inf) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential from ``base_delay_s``,
    capped at ``max_delay_s``, with jitter (half to all of it) so retrying writers spread out."""
    return min(max_delay_s, base_delay_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def resend_failed(
    send: Callable[[list[E]], tuple[list[E], str]],
    entries: list[E],
    *,
    max_attempts: int,
    base_delay_s: float,
    sleep: Callable[[float], None],
    max_delay_s: float = math.inf,
    what: str = "AWS batch call",
    attempt_s: float = 0.0,
) -> tuple[list[E], str]:
    """Call ``send(pending)`` until nothing fails or ``max_attempts`` calls were made.

    ``send`` returns the entries that failed (empty when all went through) and a description
    of why. Returns what still fails after the last attempt (empty on success) and the last
    error; the caller turns a non-empty result into its own InfrastructureError. A configuration
    error (:func:`is_configuration_error`) raises InfrastructureError at once, its message led by
    ``what`` and :func:`configuration_problem` (``SQS SendMessageBatch to et-prod-order-intents.fifo:
    credentials or permissions refused, not retried (ClientError: ... (AccessDenied) ...)``).

    Under an invocation's deadline, a call is not started with less than ``attempt_s`` left and
    a back-off is not slept unless ``attempt_s`` remains after it: DeadlineExceededError, whose
    message starts with ``what`` and names the entries still failing (``failing``: them) and the
    last error. It counts the calls of ``send`` that sent something: a call whose attempt the
    client's deadline guard refused before sending it (``before-send``: the error's
    ``attempt_started`` is False, and stays so on the loop's error) is not one ("before its first
    attempt" when it was the first), a call whose retry the guard refused after an attempt
    (``needs-retry``) is.
    """
    pending, last_error, made = entries, "", 0

    def unfinished() -> str:
        done = f"after {made} attempt{'' if made == 1 else 's'}" if made else "before its first attempt"
        return (f"{what}: {len(pending)} of {len(entries)} entries still failing {done}"
                + (f" (last error: {last_error})" if last_error else ""))

    for attempt in range(1, max_attempts + 1):
        deadline.require(unfinished, attempt_s, "one attempt can take", failing=pending, attempt_started=False)
        made = attempt
        try:
            pending, last_error = send(pending)
        except DeadlineExceededError as exc:  # botocore's guard refused an attempt of this call
            if not exc.attempt_started:  # refused before sending (``before-send``): no attempt made
                made = attempt - 1
            last_error = exc.what
            raise DeadlineExceededError(unfinished(), exc.left_s, exc.needed_s, exc.needed_for,
                                        failing=pending, attempt_started=exc.attempt_started) from exc
        except (ClientError, BotoCoreError) as exc:
            if is_configuration_error(exc):
                raise InfrastructureError(
                    f"{what}: {configuration_problem(exc)}, not retried ({type(exc).__name__}: {exc})"
                ) from exc
            if is_request_error(exc):
                raise DataError(f"{what}: request refused, not retried ({type(exc).__name__}: {exc})") from exc
            last_error = f"{type(exc).__name__}: {exc}"
        if not pending:
            return [], ""
        if attempt < max_attempts:
            deadline.pause(backoff_delay(base_delay_s, attempt, max_delay_s), unfinished,
                           then_needed_s=attempt_s, sleep=sleep, failing=pending)
    return pending, last_error
