"""The local stack's resources, the SQS event-source mapping, and `ensemble-trader local up/down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ensemble_trader import constants
from ensemble_trader.domain.models import Bar


def test_every_resource_exists_with_its_settings(local_stack):
    kinesis, sqs, ddb = (local_stack.client(s) for s in ("kinesis", "sqs", "dynamodb"))
    for stream in constants.STREAMS:
        summary = kinesis.describe_stream_summary(StreamName=local_stack.name(stream))["StreamDescriptionSummary"]
        assert summary["EncryptionType"] == "KMS" and summary["StreamStatus"] == "ACTIVE"
    for queue, fifo in constants.QUEUES.items():
        attrs = sqs.get_queue_attributes(QueueUrl=local_stack.queue_url(queue), AttributeNames=["All"])["Attributes"]
        assert (attrs.get("FifoQueue") == "true") == fifo
    redrive = json.loads(sqs.get_queue_attributes(QueueUrl=local_stack.queue_url("order-intents"),
                                                  AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(local_stack.name("orders-dlq"))
    for table in constants.TABLES:
        desc = ddb.describe_table(TableName=local_stack.name(table.logical))["Table"]
        assert desc["KeySchema"][0]["AttributeName"] == table.partition_key
        if table.ttl_attribute:
            ttl = ddb.describe_time_to_live(TableName=local_stack.name(table.logical))["TimeToLiveDescription"]
            assert ttl["AttributeName"] == table.ttl_attribute
    assert local_stack.client("s3").head_bucket(Bucket=local_stack.name(constants.MODEL_BUCKET))
    assert os.environ["ET_AWS_ENDPOINT_URL"] == local_stack.endpoint_url


def test_published_events_reach_the_tap_queue(clean_stack):
    from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher

    bar = Bar(symbol="SPX", timestamp="2020-01-02T00:00:00Z", open=1, high=2, low=0.5, close=1.5)
    EventBridgePublisher(settings=clean_stack.stack.settings).publish([bar])
    (event,) = clean_stack.stack.published_events()
    assert event["detail-type"] == "Bar" and event["source"] == constants.EVENT_SOURCE
    assert event["detail"]["symbol"] == "SPX"


def test_sqs_mapping_deletes_successes_and_dead_letters_after_retries(clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    seen: list[list[str]] = []

    def orders_handler(event, context):
        bodies = [json.loads(r["body"]) for r in event["Records"]]
        seen.append([str(b["n"]) for b in bodies])
        assert all(r["eventSource"] == "aws:sqs" and r["attributes"]["MessageGroupId"] == "SPX" for r in event["Records"])
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                      for r, b in zip(event["Records"], bodies, strict=True) if b["n"] == 2]}

    SqsPublisher(settings=clean_stack.stack.settings).send(
        "order-intents", [("SPX", f"intent-{n}", json.dumps({"n": n}).encode()) for n in range(4)]
    )
    esm = clean_stack.emulator(["orders"], handlers={"orders": orders_handler})
    stats = esm.run_until_drained()["orders"]
    retries = constants.function_spec("orders").mapping.retry_attempts
    assert seen[0] == ["0", "1", "2", "3"] and all(batch == ["2"] for batch in seen[1:])
    assert len(seen) == retries + 1
    assert stats.records_succeeded == 3 and stats.dead_lettered == 1
    (letter,) = clean_stack.stack.read_queue("orders-dlq")
    assert letter["reason"] == f"batch item failure after {retries} retries"
    assert json.loads(letter["record"]["body"]) == {"n": 2}
    assert clean_stack.stack.queue_depth("order-intents") == 0


def test_sqs_mapping_function_error_fails_the_whole_batch(clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    calls = []

    def fails_once(event, context):
        calls.append(len(event["Records"]))
        if len(calls) == 1:
            raise TimeoutError("broker did not answer")
        return {"batchItemFailures": []}

    SqsPublisher(settings=clean_stack.stack.settings).send(
        "order-intents", [("SPX", f"once-{n}", b"{}") for n in range(3)]
    )
    stats = clean_stack.emulator(["orders"], handlers={"orders": fails_once}).run_until_drained()["orders"]
    assert calls == [3, 3] and stats.function_errors == 1 and stats.records_succeeded == 3


@pytest.mark.slow
def test_local_up_status_down(tmp_path):
    env = {**os.environ, "ET_LOCAL_STATE_FILE": str(tmp_path / "stack.json")}
    for key in ("ET_AWS_ENDPOINT_URL", "ET_REDIS_URL", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    cli = [sys.executable, "-c", "import sys; from ensemble_trader.cli import main; sys.exit(main())"]
    up = subprocess.run([*cli, "local", "up"], env=env, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    try:
        exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                       if line.startswith("export "))
        assert exports["ET_STAGE"] == "local" and exports["ET_AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        state = json.loads((tmp_path / "stack.json").read_text())
        status = subprocess.run([*cli, "local", "status", "--json"], env=env, capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["queues"]["order-intents"] == 0
    finally:
        down = subprocess.run([*cli, "local", "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and not (tmp_path / "stack.json").exists()
    from ensemble_trader.local.servers import pid_alive

    assert not pid_alive(state["moto_pid"]) and not pid_alive(state["redis_pid"])


def test_feed_replay_cli_puts_interleaved_bars(clean_stack, capsys):
    from ensemble_trader.cli import main
    from ensemble_trader.runtime.settings import get_settings

    get_settings.cache_clear()
    code = main(["feed", "replay", "--bars", "arch:sp500", "--bars", "arch:nasdaq", "--limit", "700", "--no-progress"])
    assert code == 0
    assert "put 700 bars of SPX, IXIC on et-local-market-data" in capsys.readouterr().out
    records = clean_stack.new_records("market-data")
    assert len(records) == 700
    bars = [Bar.parse(data) for _, data in records]
    assert [key for key, _ in records] == [b.symbol for b in bars]
    assert [b.symbol for b in bars[:4]] == ["SPX", "IXIC", "SPX", "IXIC"]  # merged by bar time
    assert all(a.timestamp <= b.timestamp for a, b in zip(bars, bars[1:], strict=False))
