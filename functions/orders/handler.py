"""orders Lambda: OrderIntents from the ``order-intents`` SQS FIFO queue → risk checks → broker.

Thin: the event checked to be an SQS batch first (:func:`~ensemble_trader.runtime.orders.intent_batch`:
anything else raises InvalidMessageError naming what was wrong, an empty batch answers no
failures), Powertools decorators, ``SqsFifoPartialProcessor`` (a failed record fails the later records
of its message group in the batch unprocessed, so order within a symbol is kept; other symbols go
on, and the batch's risk state and events are written at its end), and one call per record into
:class:`~ensemble_trader.runtime.orders.IntentConsumer`, which parses the intent, dead-letters a
malformed one or a record without a body (``orders-dlq``, with the reason) and routes the rest through Powertools
idempotency keyed on the intent id (same id, different content → refused) into the
:class:`~ensemble_trader.runtime.orders.OrderRouter`. Orders, positions and risk state live in
DynamoDB; OrderSubmitted / OrderFilled / OrderRejected / CircuitBreakerTripped go to EventBridge.

Other entries of this function folder: ``reconcile.py`` (EventBridge schedule) and
``kill_switch.py`` (EventBridge KillSwitch rule).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from ensemble_trader.runtime.deadline import invocation_deadline
from ensemble_trader.runtime.observability import observability
from ensemble_trader.runtime.orders import OrdersService, build_service, intent_batch

obs = observability("orders")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer
processor = SqsFifoPartialProcessor(skip_group_on_error=True)  # a failure holds back its own symbol only


@lru_cache(maxsize=1)
def service() -> OrdersService:
    """Dependencies built once per container; the first intent reconciles with the broker."""
    return build_service(metrics=metrics)


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> dict[str, Any]:
    return service().consumer.process_record(record.raw_event, lambda_context)


@logger.inject_lambda_context(correlation_id_path="Records[0].messageId")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not intent_batch(event):  # InvalidMessageError for an event that is not an SQS batch
        return {"batchItemFailures": []}  # no records (logged)
    with invocation_deadline(context):  # no AWS attempt or retry back-off outlasts the invocation
        svc = service()
        svc.idempotency_config.register_lambda_context(context)
        with svc.router.batch():  # risk state, positions, working orders read once per batch
            return process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
