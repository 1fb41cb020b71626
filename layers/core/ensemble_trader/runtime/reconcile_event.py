"""The events the orders Lambda's reconcile entry runs for, and the refusal of any other.

Two shapes start a reconciliation:

* the EventBridge schedule's event (``infra_cdk/constructs/events.py``, every
  ``reconcile_every_minutes``): ``source`` ``aws.events``, ``detail-type`` ``Scheduled Event``,
  ``detail`` ``{}``; the rest of the envelope (``id``, ``time``, ``resources``, ...) is not read.
  Invoking the function again with a failed invocation's ``requestPayload`` (the events DLQ)
  sends the same event;
* an operator's invocation without a payload, ``aws lambda invoke --function-name
  et-<stage>-orders-reconcile out.json``, which Lambda delivers as ``{}`` (the runbook's command,
  and the one ``ensemble-trader orders reconcile`` names when it refuses to run here).

Anything else — another rule or a mistaken target pointed at the function (a KillSwitch control
event, an SQS batch), a scheduled event with a detail, a payload that is not an object — raises
:class:`~ensemble_trader.domain.errors.InvalidMessageError` naming each field that was wrong, before
the broker or the store is touched: the reconciliation takes no options, so an event that carries
some was not meant for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ensemble_trader.domain.errors import MISSING, FieldProblem, InvalidMessageError

SCHEDULE_SOURCE = "aws.events"
SCHEDULE_DETAIL_TYPE = "Scheduled Event"
EVENT_NAME = "reconcile event"
TAKEN = (f"the reconciliation runs for its EventBridge schedule's event (source {SCHEDULE_SOURCE!r}, "
         f"detail-type {SCHEDULE_DETAIL_TYPE!r}, detail {{}}) or for an operator's invocation with {{}}")

Trigger = Literal["schedule", "operator"]


def reconcile_trigger(event: Any) -> Trigger:
    """``"schedule"`` for the schedule's event, ``"operator"`` for ``{}``; InvalidMessageError
    naming what was wrong for anything else."""
    if not isinstance(event, Mapping):
        raise InvalidMessageError(EVENT_NAME, [FieldProblem("<message>", event, f"is not an object: {TAKEN}")])
    if not event:
        return "operator"
    wanted = {"source": SCHEDULE_SOURCE, "detail-type": SCHEDULE_DETAIL_TYPE}
    problems = [
        FieldProblem(key, event.get(key, MISSING), f"must be {value!r}: {TAKEN}")
        for key, value in wanted.items()
        if event.get(key) != value
    ]
    detail = event.get("detail", MISSING)
    if not (isinstance(detail, Mapping) and not detail):
        problems.append(FieldProblem("detail", detail, "must be {}: the reconciliation takes no options"))
    if problems:
        raise InvalidMessageError(EVENT_NAME, problems)
    return "schedule"
