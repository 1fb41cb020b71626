"""`LocalStack.reset()` empties queues whose messages are in flight, and the local queues have the
deployed visibility timeout.

reset() emptied a queue by receiving and deleting, which cannot reach a message in flight: one an
emulator left waiting out its retry backoff (or an interrupted batch it did not release) — and on
a FIFO queue every later message of its group — survived the reset and was delivered in the next
test. The emulator now notes on the stack what it leaves in flight; reset() gives it back first
and raises, naming the queue, if a queue still holds messages at its end.

The local queues were created with a visibility timeout of 30 s and the emulator received with
the function timeout (30 s); the deployed queue's is six times the function timeout (180 s).
"""

from __future__ import annotations

import json
import time

import pytest
from ensemble_trader import constants
from ensemble_trader.domain.errors import InfrastructureError

ORDERS = constants.function_spec("orders")


def _send(stack, queue: str, n: int, *, group: str = "SPX", prefix: str = "m") -> None:
    sqs, url = stack.client("sqs"), stack.queue_url(queue)
    for i in range(n):
        extra = {"MessageGroupId": group, "MessageDeduplicationId": f"{prefix}-{i}"} if url.endswith(".fifo") else {}
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}), **extra)


def _fail_all(event, context):
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}


def _received_by_a_new_emulator(clean_stack) -> list[dict]:
    seen: list[dict] = []
    clean_stack.emulator(["orders"], handlers={"orders": lambda e, c: seen.extend(e["Records"])}).run_until_drained()
    return seen


def test_reset_empties_a_fifo_group_whose_head_waits_out_a_retry_backoff(clean_stack):
    stack = clean_stack.stack
    _send(stack, "order-intents", 3, prefix="backoff")  # one group: the head fails, two wait behind it
    esm = clean_stack.emulator(["orders"], handlers={"orders": _fail_all}, sqs_retry_backoff_s=2)
    esm.poll("orders")
    assert esm.stats()["orders"].retries == 3 and stack.queue_depth("order-intents") == 3

    stack.reset()

    assert stack.queue_depth("order-intents") == 0
    time.sleep(3)  # past the backoff: before the fix the messages came back now
    assert _received_by_a_new_emulator(clean_stack) == []


def test_reset_empties_an_interrupted_batch_that_was_not_released(clean_stack):
    stack = clean_stack.stack
    _send(stack, "order-intents", 2, prefix="interrupted")

    def interrupted(event, context):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        clean_stack.emulator(["orders"], handlers={"orders": interrupted},
                             release_interrupted_sqs=False).run_until_drained()
    assert stack.queue_depth("order-intents") == 2  # in flight (for the function timeout)
    stack.reset()
    assert stack.queue_depth("order-intents") == 0
    assert _received_by_a_new_emulator(clean_stack) == []


def test_release_gives_back_what_the_emulator_left_in_flight(clean_stack):
    stack = clean_stack.stack
    _send(stack, "order-intents", 1, prefix="release")
    esm = clean_stack.emulator(["orders"], handlers={"orders": _fail_all}, sqs_retry_backoff_s=60)
    esm.poll("orders")
    assert _received_by_a_new_emulator(clean_stack) == []  # waiting out its 60 s backoff
    assert esm.release() == 1
    assert [json.loads(r["body"]) for r in _received_by_a_new_emulator(clean_stack)] == [{"n": 0}]
    assert esm.release() == 0  # nothing noted any more


def test_reset_names_a_queue_it_could_not_empty(clean_stack):
    """A message received outside any emulator and not given back cannot be reached: reset()
    says so (and purges the queue when SQS allows) instead of leaving it to a later test."""
    stack = clean_stack.stack
    sqs, url = stack.client("sqs"), stack.queue_url("features-dlq")
    _send(stack, "features-dlq", 1)
    held = sqs.receive_message(QueueUrl=url, VisibilityTimeout=600)["Messages"]
    try:
        with pytest.raises(InfrastructureError, match=rf"{stack.name('features-dlq')} \(1\)"):
            stack.reset()
    finally:
        for m in held:  # in case the purge was refused (one a minute per queue)
            try:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            except sqs.exceptions.ClientError:
                pass
    assert stack.queue_depth("features-dlq") == 0


def test_local_queues_have_the_deployed_visibility_timeout_and_the_emulator_keeps_it(clean_stack):
    from ensemble_trader.local.stack import queue_visibility_timeout
    from ensemble_trader.runtime.orders import visibility_timeout_seconds

    stack = clean_stack.stack
    sqs = stack.client("sqs")

    def visibility(queue: str) -> int:
        attrs = sqs.get_queue_attributes(QueueUrl=stack.queue_url(queue), AttributeNames=["VisibilityTimeout"])
        return int(attrs["Attributes"]["VisibilityTimeout"])

    # the CDK app's own function (infra_cdk/constructs/queues.py): 6 x the function timeout
    assert visibility("order-intents") == queue_visibility_timeout(ORDERS) == visibility_timeout_seconds(ORDERS)
    assert visibility("order-intents") == 6 * ORDERS.timeout_seconds
    assert visibility("orders-dlq") == 30  # no function reads it: SQS's default, as deployed

    receives: list[dict] = []

    def capture(params, **_):
        receives.append(dict(params))

    event = "provide-client-params.sqs.ReceiveMessage"
    sqs.meta.events.register(event, capture)
    try:
        _send(stack, "order-intents", 1, prefix="visibility")
        clean_stack.emulator(["orders"], handlers={"orders": lambda e, c: None}).run_until_drained()
    finally:
        sqs.meta.events.unregister(event, capture)
    assert receives and all("VisibilityTimeout" not in params for params in receives)  # the queue's own


def test_moto_forgets_a_fifo_deduplication_id_once_the_message_is_deleted(clean_stack):
    """Pins a known difference (docs/local-stack.md): SQS drops a send under a deduplication id
    seen in the last five minutes, even after that message was deleted; moto delivers it. If this
    fails after a moto upgrade, moto keeps the window now: update the docs' list of differences."""
    stack = clean_stack.stack
    sqs, url = stack.client("sqs"), stack.queue_url("order-intents")
    sqs.send_message(QueueUrl=url, MessageBody='{"v": 1}', MessageGroupId="SPX", MessageDeduplicationId="dedup-pin")
    first = sqs.receive_message(QueueUrl=url)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    sqs.send_message(QueueUrl=url, MessageBody='{"v": 2}', MessageGroupId="SPX", MessageDeduplicationId="dedup-pin")
    assert stack.read_queue("order-intents") == [{"v": 2}]  # AWS: [] (within five minutes)
    # while the first is still in the queue, moto does drop the second, as SQS does
    sqs.send_message(QueueUrl=url, MessageBody='{"v": 3}', MessageGroupId="SPX", MessageDeduplicationId="dedup-pin-2")
    sqs.send_message(QueueUrl=url, MessageBody='{"v": 4}', MessageGroupId="SPX", MessageDeduplicationId="dedup-pin-2")
    assert stack.read_queue("order-intents") == [{"v": 3}]
