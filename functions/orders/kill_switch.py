"""orders Lambda, kill_switch entry: the EventBridge KillSwitch control event turns trading off or on.

Event: source ``ensemble-trader.control``, detail-type ``KillSwitch``, detail
``{"active": true|false, "reason": "...", "reset_breaker": false}``. On: the flag is stored in
the risk state (new orders are rejected with KILL_SWITCH) and every working order is canceled.
Off: the flag is cleared; ``reset_breaker`` also resets a latched circuit breaker. Any other
event (another source or detail-type, a blank reason, a malformed detail, no ``time`` or ``id``,
a ``time`` more than ``max_intent_lead_seconds`` — 300 s by default — ahead of the function's clock)
raises ``InvalidMessageError`` naming what was wrong: EventBridge invokes the function
asynchronously, so Lambda retries it and then sends it to the on-failure destination (the events DLQ).

Commands apply in the order of the events' ``time``: Lambda retries a failed invocation up to
twice, minutes later, and a retried "off" must not undo a later "on". A command issued before the
one the risk state holds is a logged no-op (``applied: false``, ``ignored`` says why; not an
error, so it is not retried); the same event delivered again (same ``id``) finishes what its first
run left undone — the cancels and ``KillSwitchChanged`` — without writing the flag again.

A command whose events could not be published (the bus failed after the save) raises
``KillSwitchNotAnnouncedError``, an InfrastructureError, so Lambda retries it; the risk state
keeps the command marked as not announced, and Lambda's retry, the next scheduled
reconciliation or the next command publishes its events once (a breaker reset included), no
sooner than ``OrderRouter.announce_after_seconds`` after the save on AWS's clock, and only after
claiming them (docs/orders-and-risk.md, Kill switch: what is guaranteed).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from ensemble_trader.domain.orders import KillSwitchCommand
from ensemble_trader.domain.risk import TradingState
from ensemble_trader.runtime.deadline import invocation_deadline
from ensemble_trader.runtime.observability import observability
from ensemble_trader.runtime.orders import BREAKER_STATE_VALUES, OrderRouter, build_router

obs = observability("orders-kill-switch")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@lru_cache(maxsize=1)
def router() -> OrderRouter:
    return build_router()


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # a time set by the sender further ahead than an intent may be is refused before anything
    # is read or stored (dated ahead, it would make every genuine command until then stale)
    orders = router()
    command = KillSwitchCommand.from_event(event, now=orders.clock.now(),
                                           max_lead_seconds=orders.limits.max_intent_lead_seconds)
    with invocation_deadline(context):  # no AWS attempt or retry back-off outlasts the invocation
        result = orders.apply_kill_switch(command)
    # the switch as it stands: a stale command changed nothing
    metrics.add_metric(name="kill_switch_active", unit="Count", value=1 if result["active"] else 0)
    metrics.add_metric(name="orders_canceled_by_kill_switch", unit="Count", value=len(result["canceled"]))
    # a command older than the stored one changes nothing; an ignored ON that leaves the switch
    # off is the dangerous case (an operator turned it on): alarmed (KillSwitchOnIgnored)
    metrics.add_metric(name="kill_switch_commands_ignored", unit="Count", value=0 if result["applied"] else 1)
    metrics.add_metric(name="kill_switch_on_ignored", unit="Count",
                       value=1 if command.active and not result["applied"] and not result["active"] else 0)
    if not result["active"]:  # with the switch off the state is the breaker's: report it at once (a
        # reset clears the BreakerTripped alarm now, not at the next routed intent)
        metrics.add_metric(name="account_breaker_state", unit="None",
                           value=BREAKER_STATE_VALUES[TradingState(result["trading_state"])])
    if not result["applied"]:
        logger.warning("kill switch command ignored (stale): %s", result["ignored"], extra=result)
    else:
        logger.warning("kill switch %s", "ON" if command.active else "OFF", extra=result)
    return result
