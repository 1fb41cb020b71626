"""The mappings' ``redelivered`` counter (the summary's column) counts the same thing for Kinesis
and SQS: records or messages delivered again after a failed delivery. ``retries`` counted retried
invocations for Kinesis and messages for SQS, in one column of `local drain`'s table."""

from __future__ import annotations

import json

from ensemble_trader.local.esm import summarize_stats


def _put_numbers(clean_stack, count: int, key: str = "SPX") -> None:
    clean_stack.put_records("market-data", [(key, json.dumps({"n": n}).encode()) for n in range(count)])


def _send_intents(clean_stack, prefix: str, count: int) -> None:
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    SqsPublisher(settings=clean_stack.stack.settings).send(
        "order-intents", [("SPX", f"{prefix}-{n}", json.dumps({"n": n}).encode()) for n in range(count)]
    )


def _first_record_fails_once(kind: str):
    calls: list[int] = []

    def handler(event, context):
        calls.append(len(event["Records"]))
        first = event["Records"][0]
        ident = first["kinesis"]["sequenceNumber"] if kind == "kinesis" else first["messageId"]
        return {"batchItemFailures": [{"itemIdentifier": ident}] if len(calls) == 1 else []}

    return handler, calls


def test_one_failed_record_redelivers_what_was_delivered_again_for_both_kinds(clean_stack):
    kinesis, kinesis_calls = _first_record_fails_once("kinesis")
    esm = clean_stack.emulator(["features"], handlers={"features": kinesis})  # at LATEST: before the put
    _put_numbers(clean_stack, 5)
    k = esm.run_until_drained()["features"]
    assert kinesis_calls == [5, 5]  # the shard resumes at the failed record: all five again
    assert (k.retries, k.redelivered) == (1, 5)

    sqs, sqs_calls = _first_record_fails_once("sqs")
    _send_intents(clean_stack, "again", 5)
    q = clean_stack.emulator(["orders"], handlers={"orders": sqs}).run_until_drained()["orders"]
    assert sqs_calls == [5, 1]  # only the failed message comes back
    assert (q.retries, q.redelivered) == (1, 1)

    table = summarize_stats({"features": k, "orders": q}).splitlines()
    assert table[0].split() == ["function", "received", "ok", "item-fail", "errors", "redelivered", "DLQ"]
    assert table[1].split()[5] == "5" and table[2].split()[5] == "1"


def test_a_bisected_batch_counts_each_record_delivered_again(clean_stack):
    """[A, BOOM] fails; its halves are delivered again (A once, BOOM once), then BOOM alone is
    retried three times and dead-lettered: 1 + 1 + 3 records delivered again."""
    calls: list[list[str]] = []

    def crashes_on_boom(event, context):
        keys = [r["kinesis"]["partitionKey"] for r in event["Records"]]
        calls.append(keys)
        if "BOOM" in keys:
            raise RuntimeError("crashed on BOOM")

    esm = clean_stack.emulator(["features"], handlers={"features": crashes_on_boom})
    clean_stack.put_records("market-data", [("A", b'{"n": 0}'), ("BOOM", b'{"n": 1}')])
    stats = esm.run_until_drained()["features"]
    assert calls == [["A", "BOOM"], ["A"], ["BOOM"], ["BOOM"], ["BOOM"], ["BOOM"]]
    assert (stats.bisections, stats.retries, stats.dead_lettered) == (1, 3, 1)
    assert stats.redelivered == sum(len(c) for c in calls[1:]) == 5


def test_an_sqs_message_failing_until_dead_lettered_is_redelivered_each_receive_but_the_first(clean_stack):
    from ensemble_trader import constants

    receives = constants.function_spec("orders").mapping.max_receive_count
    _send_intents(clean_stack, "never", 1)
    stats = clean_stack.emulator(
        ["orders"], handlers={"orders": lambda e, c: {"batchItemFailures": [
            {"itemIdentifier": r["messageId"]} for r in e["Records"]]}}).run_until_drained()["orders"]
    assert stats.records_received == receives and stats.dead_lettered == 1
    assert stats.redelivered == receives - 1 == stats.retries
