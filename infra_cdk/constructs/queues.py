"""SQS queues: the FIFO order-intents queue and the dead-letter queues of every stage."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from ensemble_trader.constants import FUNCTIONS, QUEUES, FunctionSpec, qualified
from ensemble_trader.runtime.orders import visibility_timeout_seconds

from infra_cdk.config import StageConfig
from infra_cdk.constructs.streams import _construct_name

DLQ_RETENTION = Duration.days(14)  # the SQS maximum: time to inspect and redrive


def dead_letter_queues() -> frozenset[str]:
    """Logical names of queues that only receive failed records (no queue drains into them)."""
    return frozenset(spec.dead_letter_queue for spec in FUNCTIONS) | {"events-dlq"}


class Queues(Construct):
    """Every queue of :data:`ensemble_trader.constants.QUEUES`, KMS-encrypted, TLS-only.

    ``order-intents`` (FIFO: message group = symbol, deduplication id = intent id) redrives to
    the orders function's FIFO dead-letter queue after the mapping's retries. Its visibility
    timeout (:func:`~ensemble_trader.runtime.orders.visibility_timeout_seconds`, recorded in
    ``visibility_timeouts``) is also what the orders functions' reconciliation grace is derived
    from (see :class:`~infra_cdk.constructs.functions.Functions`). The other dead-letter queues
    receive Kinesis on-failure records and EventBridge target failures; they keep messages for
    14 days.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.queues: dict[str, sqs.Queue] = {}
        self.visibility_timeouts: dict[str, int] = {}  # seconds, of the queues a function reads
        dlqs = dead_letter_queues()
        # Dead-letter queues first: the work queues refer to them.
        for logical in sorted(QUEUES, key=lambda name: name not in dlqs):
            fifo = QUEUES[logical]
            common = dict(
                queue_name=qualified(config.name, logical),
                fifo=fifo or None,
                encryption=sqs.QueueEncryption.KMS,
                encryption_master_key=key,
                data_key_reuse=Duration.hours(1),
                enforce_ssl=True,
                removal_policy=config.removal_policy,
            )
            if logical in dlqs:
                queue = sqs.Queue(self, _construct_name(logical), retention_period=DLQ_RETENTION, **common)
            else:
                consumer = _consumer_of(logical)
                mapping = consumer.mapping
                # AWS guidance for Lambda consumers: at least six times the function timeout.
                self.visibility_timeouts[logical] = visibility_timeout_seconds(consumer)
                queue = sqs.Queue(
                    self,
                    _construct_name(logical),
                    content_based_deduplication=False if fifo else None,
                    visibility_timeout=Duration.seconds(self.visibility_timeouts[logical]),
                    dead_letter_queue=sqs.DeadLetterQueue(
                        queue=self.queues[consumer.dead_letter_queue],
                        max_receive_count=mapping.max_receive_count,
                    ),
                    **common,
                )
            self.queues[logical] = queue


def _consumer_of(queue_logical: str) -> FunctionSpec:
    """The function spec whose event-source mapping reads ``queue_logical``."""
    for spec in FUNCTIONS:
        if spec.mapping.kind == "sqs" and spec.mapping.source == queue_logical:
            return spec
    raise ValueError(f"queue {queue_logical!r} is neither a dead-letter queue nor read by any function")
