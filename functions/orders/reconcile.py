"""orders Lambda, reconcile entry: compare orders and positions with the broker (EventBridge schedule).

The broker is authoritative: orders it reports differently are synced (fills applied in one
transaction with the position), orders it never received are marked NOT_AT_BROKER once nothing
attempted them for the grace period (``ET_ORDERS_RECONCILE_GRACE_SECONDS``, longer than a failed
intent's redelivery gap: an intent SQS is still delivering keeps its order), and a symbol whose
state cannot be explained stays HALTED with a ReconciliationFailed event saying why (fail closed).

Event: the schedule's (``source`` ``aws.events``, ``detail-type`` ``Scheduled Event``, ``detail``
``{}``) or an operator's ``{}`` (``aws lambda invoke`` without a payload); anything else raises
``InvalidMessageError`` naming what was wrong before the broker or the store is touched
(:mod:`ensemble_trader.runtime.reconcile_event`).

Every run that builds its router — also one whose reconciliation then fails — reports the kill
switch and the circuit breaker as the risk state holds them (``kill_switch_active``,
``account_breaker_state``: the names, namespace and dimensions the orders entry reports them under
with each routed intent). A run whose router cannot be built, one skipped for the placeholder keys
included, reports neither (the store is built with the router, from the same settings); both
alarms ignore missing data, so they keep their state until a run that builds its router.
Intents are routed only while bars arrive (with daily bars about once a day), so without these
samples the alarms ``KillSwitchOn`` and ``BreakerTripped`` would keep the state of the last intent
or command for that long; with them they follow the stored state within one schedule period
(docs/deployment.md).

With the Alpaca broker, a secret that still holds the stack's placeholder (empty keys: a first
deployment before the operator stored the pair) is not a failure of the run: it is logged as an
error and counted (``broker_keys_missing`` 1, alarm ``BrokerKeysMissing``; every run that builds
its router counts 0, so the alarm, which ignores missing data, clears at it) and the run answers
``skipped``, so Lambda does not retry it nor send a letter to ``events-dlq`` every 5 minutes
(:mod:`ensemble_trader.runtime.broker_keys`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.orders import BrokerUnavailableError
from ensemble_trader.runtime.broker_keys import unstored_keys_secret
from ensemble_trader.runtime.deadline import invocation_deadline
from ensemble_trader.runtime.observability import observability
from ensemble_trader.runtime.orders import OrderRouter, build_router, state_gauges
from ensemble_trader.runtime.reconcile_event import reconcile_trigger

obs = observability("orders-reconcile")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@lru_cache(maxsize=1)
def router() -> OrderRouter:
    return build_router()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(trigger=reconcile_trigger(event))  # any other event is refused here, first
    logger.info("reconciliation started")  # one line per run, with its trigger
    with invocation_deadline(context):  # no AWS attempt or retry back-off outlasts the invocation
        try:
            orders = router()
        except BrokerUnavailableError:
            secret = unstored_keys_secret()
            if secret is None:  # another cause: the invocation fails (retried, then events-dlq)
                raise
            return keys_not_stored(secret)
        # the keys are not missing (or not needed): 0, so BrokerKeysMissing clears at this run
        # and a period without a run keeps its state (the alarm ignores missing data)
        metrics.add_metric(name="broker_keys_missing", unit="Count", value=0)
        try:
            report = orders.reconcile()
        finally:  # a failed run reports the state too: reading it does not need the broker
            report_state(orders)
    metrics.add_metric(name="reconcile_orders_synced", unit="Count", value=len(report.synced))
    metrics.add_metric(name="reconcile_symbols_failed", unit="Count", value=len(report.failures))
    if not report.ok:
        logger.error("reconciliation failed", extra={"failures": report.failures})
    return report.as_dict()


def report_state(orders: OrderRouter) -> None:
    """Report the kill switch (0/1) and the breaker (0 ACTIVE, 1 REDUCING, 2 HALTED) as stored.

    A state that cannot be read is not reported (the alarms keep their state until the next
    sample) and is logged; it does not fail the run, nor hide the failure of a run that failed."""
    try:
        state = orders.store.load_risk_state()
    except InfrastructureError as exc:
        logger.warning("kill switch and breaker state not reported: the risk state could not be read (%s: %s)",
                       type(exc).__name__, exc)
        return
    for name, unit, value in state_gauges(state):
        metrics.add_metric(name=name, unit=unit, value=value)


def keys_not_stored(secret: str) -> dict[str, Any]:
    """The answer of a run skipped because the broker secret holds the placeholder: an error in
    the log and ``broker_keys_missing`` (alarm ``BrokerKeysMissing``), no exception."""
    why = (f"broker secret {secret!r} still holds the empty keys the stack created: put the Alpaca key pair "
           "in it (docs/deployment.md, First deployment, step 3); until then no orders function can reach "
           "the broker")
    logger.error("reconciliation skipped: %s", why)
    metrics.add_metric(name="broker_keys_missing", unit="Count", value=1)
    return {"skipped": why}
