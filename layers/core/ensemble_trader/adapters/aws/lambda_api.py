"""AWS Lambda's own API: the state of the stages' event-source mappings, and invoking a function.

Used by the cache maintenance path (:mod:`ensemble_trader.runtime.cache_admin`): the
``cache_admin`` function reads the mappings of the stages it flushes (``GetEventSourceMapping`` on
their ARNs, the only Lambda permission it has), and the ``ensemble-trader cache`` command invokes
that function.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ensemble_trader.adapters.aws.clients import CALL_ERRORS, call_error, client
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.runtime.settings import Settings

QUIET_STATE = "Disabled"
"""The only state of an event-source mapping in which it starts no invocation (``Enabled``,
``Enabling``, ``Disabling``, ``Updating``, ``Creating`` may all still deliver)."""


class EventSourceMappingCheck:
    """Whether a stage's event-source mapping is paused, and paused long enough.

    ``mappings`` maps a stage (``features``, ``regime``, ``meta_agent``) to the UUID of the mapping
    that feeds its function; a stage without one has no mapping deployed (nothing consumes its
    records). ``quiet_seconds(stage)`` is how long a batch that started just before the pause can
    still run (the function's timeout): a mapping counts as quiet once it is ``Disabled`` and was
    last modified at least that long ago, by ``clock`` (seconds since the epoch).
    """

    def __init__(
        self,
        mappings: Mapping[str, str],
        quiet_seconds: Callable[[str], float],
        *,
        settings: Settings | None = None,
        lambda_client: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mappings = dict(mappings)
        self._quiet_seconds = quiet_seconds
        self._client = lambda_client
        self._settings = settings
        self._clock = clock

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client("lambda", self._settings)
        return self._client

    def check(self, stages: Sequence[str]) -> dict[str, tuple[dict[str, Any], str | None]]:
        """Per stage: what its mapping is (reported with every answer) and why a flush of the
        stage must wait (None when it need not). One ``GetEventSourceMapping`` per stage that has
        a mapping; a failed call makes the stage's reason to wait (a deleting flush is refused, a
        count or a dry run reports it), naming the mapping and the error."""
        found: dict[str, tuple[dict[str, Any], str | None]] = {}
        for stage in stages:
            uuid = self.mappings.get(stage)
            if uuid is None:
                found[stage] = ({"mapping": None, "note": "no event-source mapping deployed"}, None)
                continue
            try:
                answer = self.client.get_event_source_mapping(UUID=uuid)
            except CALL_ERRORS as exc:
                error = call_error(exc, f"Lambda GetEventSourceMapping {uuid} (stage {stage})")
                # a count or a dry run reports it; a deleting flush is refused (fails closed)
                found[stage] = ({"mapping": uuid, "error": str(error)},
                                f"the {stage} event-source mapping could not be read: {error}")
                continue
            found[stage] = self._judge(stage, uuid, answer)
        return found

    def _judge(self, stage: str, uuid: str, answer: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        state = str(answer.get("State", "?"))
        modified = answer.get("LastModified")
        detail: dict[str, Any] = {
            "mapping": uuid,
            "function": answer.get("FunctionArn"),
            "state": state,
            "last_modified": modified.isoformat() if isinstance(modified, datetime) else modified,
        }
        pause = f"aws lambda update-event-source-mapping --uuid {uuid} --no-enabled"
        if state != QUIET_STATE:
            return detail, (f"the {stage} event-source mapping {uuid} is {state}, not {QUIET_STATE}: pause it "
                            f"first ({pause}) and flush once its State is {QUIET_STATE}")
        quiet = self._quiet_seconds(stage)
        if not isinstance(modified, datetime):  # cannot tell how long it has been paused: wait as if just now
            return detail, (f"the {stage} event-source mapping {uuid} is {QUIET_STATE} but reports no LastModified: "
                            f"how long it has been paused cannot be told; flush again later")
        since = self._clock() - modified.timestamp()
        detail["disabled_for_s"] = round(since, 1)
        if since < quiet:
            return detail, (f"the {stage} event-source mapping {uuid} was modified {since:.0f} s ago: a batch it "
                            f"started before the pause may still run for up to the function's timeout "
                            f"({quiet:g} s); flush again in {quiet - since:.0f} s")
        return detail, None


def invoke_json(function_name: str, payload: Mapping[str, Any], *, wait_seconds: float,
                settings: Settings | None = None, lambda_client: Any = None) -> tuple[Any, str | None]:
    """Invoke ``function_name`` synchronously with the JSON ``payload``: its answer (decoded JSON)
    and Lambda's ``FunctionError`` (None when the function returned normally; ``"Unhandled"``
    when it raised, the answer then being ``{"errorMessage", "errorType", ...}``). A failed call
    (no such function, no permission, throttled) is an InfrastructureError naming the function.

    One attempt, waiting up to ``wait_seconds`` for the answer (more than the function's
    timeout): the clients' usual 5 s read timeout and retries would invoke a slow run again."""
    from botocore.config import Config

    lam = lambda_client if lambda_client is not None else client(
        "lambda", settings,
        config=Config(connect_timeout=5, read_timeout=wait_seconds, retries={"total_max_attempts": 1}),
    )
    try:
        response = lam.invoke(FunctionName=function_name, InvocationType="RequestResponse",
                              Payload=json.dumps(payload).encode())
        body = response["Payload"].read()
    except CALL_ERRORS as exc:
        raise call_error(exc, f"Lambda Invoke {function_name}") from exc
    try:
        answer = json.loads(body) if body else None
    except ValueError as exc:
        raise InfrastructureError(f"Lambda Invoke {function_name}: the answer is not JSON ({exc}): "
                                  f"{body[:200]!r}") from None
    return answer, response.get("FunctionError")
