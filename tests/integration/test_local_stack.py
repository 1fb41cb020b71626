"""The local stack's resources, the SQS event-source mapping, and `ensemble-trader local up/down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ensemble_trader import constants
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.models import Bar

DRAIN_BARS = WARMUP_BARS + 40  # the drain test's replay: 40 ready bars, so decisions and orders exist


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

    bar = Bar(symbol="SPX", timestamp="2020-01-02T00:00:00Z", open=1, high=2, low=0.5, close=1.5, volume=10)
    EventBridgePublisher(settings=clean_stack.stack.settings).publish([bar])
    (event,) = clean_stack.stack.published_events()
    assert event["detail-type"] == "Bar" and event["source"] == constants.EVENT_SOURCE
    assert event["detail"]["symbol"] == "SPX"


def test_sqs_mapping_deletes_successes_and_dead_letters_after_retries(clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    seen: list[list[str]] = []
    records: list[dict] = []

    def orders_handler(event, context):
        bodies = [json.loads(r["body"]) for r in event["Records"]]
        seen.append([str(b["n"]) for b in bodies])
        records.extend(event["Records"])  # checked after the run: an assert in here is a function error
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                      for r, b in zip(event["Records"], bodies, strict=True) if b["n"] == 2]}

    SqsPublisher(settings=clean_stack.stack.settings).send(
        "order-intents", [("SPX", f"intent-{n}", json.dumps({"n": n}).encode()) for n in range(4)]
    )
    esm = clean_stack.emulator(["orders"], handlers={"orders": orders_handler})
    stats = esm.run_until_drained()["orders"]
    receives = constants.function_spec("orders").mapping.max_receive_count
    assert receives == 10  # the deployed queue's maxReceiveCount (tests/infrastructure checks the CDK side)
    assert seen[0] == ["0", "1", "2", "3"] and all(batch == ["2"] for batch in seen[1:])
    assert len(seen) == receives
    assert all(r["eventSource"] == "aws:sqs" and r["attributes"]["MessageGroupId"] == "SPX" for r in records)
    assert stats.records_succeeded == 3 and stats.dead_lettered == 1
    (letter,) = clean_stack.stack.read_queue("orders-dlq")
    assert letter["reason"] == f"batch item failure after {receives} receives"
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
        # the detached moto child's output: a named file in the folder `down` removes (it was an
        # unlinked temporary file that grew unseen for the stack's whole life)
        moto_log = Path(state["redis_dir"]) / "moto.log"
        assert state["moto_log"] == str(moto_log) and moto_log.is_file()
        if Path("/proc/self/fd").exists():
            assert {os.readlink(f"/proc/{state['moto_pid']}/fd/{fd}") for fd in (1, 2)} == {str(moto_log)}
        owners = json.loads((Path(state["redis_dir"]) / "owner.json").read_text())["processes"]
        assert state["moto_pid"] in [pid for pid, _ in owners]  # no start sweeps the folder while moto runs
    finally:
        down = subprocess.run([*cli, "local", "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and not (tmp_path / "stack.json").exists()
    from ensemble_trader.local.servers import pid_alive

    assert not pid_alive(state["moto_pid"]) and not pid_alive(state["redis_pid"])
    assert not Path(state["moto_log"]).exists()


@pytest.mark.slow
def test_local_status_exports_gives_a_running_stacks_environment(tmp_path):
    env = {**os.environ, "ET_LOCAL_STATE_FILE": str(tmp_path / "stack.json")}
    for key in ("ET_AWS_ENDPOINT_URL", "ET_REDIS_URL", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    cli = [sys.executable, "-c", "import sys; from ensemble_trader.cli import main; sys.exit(main())"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, "local", *args], env=env, capture_output=True, text=True, timeout=60)

    absent = run("status", "--exports")
    assert absent.returncode == 1 and absent.stdout == "" and "not running" in absent.stderr
    up = run("up")
    assert up.returncode == 0, up.stderr
    try:
        again = run("up")  # the quick start's mistake: a second `up` refuses and prints no exports
        assert again.returncode == 1 and "export" not in again.stdout and "status --exports" in again.stderr
        exports = run("status", "--exports")
        assert exports.returncode == 0, exports.stderr
        assert exports.stdout.splitlines() == [line for line in up.stdout.splitlines() if line.startswith(("export ", "unset "))]
        shell = subprocess.run(["bash", "-c", 'eval "$EXPORTS"; echo "$ET_AWS_ENDPOINT_URL"'],
                               env={**env, "EXPORTS": exports.stdout}, capture_output=True, text=True, timeout=60)
        assert shell.stdout.strip() == json.loads((tmp_path / "stack.json").read_text())["endpoint_url"]
    finally:
        down = run("down")
    assert down.returncode == 0


@pytest.mark.slow
def test_local_drain_runs_the_pipeline_of_a_local_up_stack(tmp_path):
    """The README's journey: `local up`, `feed replay`, then `local drain` runs every handler over
    the replayed bars (nothing else does on such a stack), so decisions and orders exist; a
    second drain starts after the records the first handled and finds nothing to do."""
    import boto3

    env = {**os.environ, "ET_LOCAL_STATE_FILE": str(tmp_path / "stack.json")}
    for key in ("ET_AWS_ENDPOINT_URL", "ET_REDIS_URL", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    cli = [sys.executable, "-c", "import sys; from ensemble_trader.cli import main; sys.exit(main())"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=300)

    up = run("local", "up")
    assert up.returncode == 0, up.stderr
    try:
        env.update(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                   if line.startswith("export "))
        replay = run("feed", "replay", "--bars", f"synth:realistic:5:{DRAIN_BARS}:DRN", "--no-progress")
        assert replay.returncode == 0, replay.stderr
        drain = run("local", "drain", "--no-progress")
        assert drain.returncode == 0, drain.stderr
        assert f"features    {DRAIN_BARS} messages in" in drain.stdout
        assert not any(line.startswith("{") for line in drain.stdout.splitlines())  # no handler log lines
        ddb = boto3.client("dynamodb", endpoint_url=env["ET_AWS_ENDPOINT_URL"], region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        for table in ("decisions", "orders"):
            assert ddb.scan(TableName=f"et-local-{table}", Select="COUNT")["Count"] > 0, table
        again = run("local", "drain", "--no-progress")
        assert again.returncode == 0, again.stderr
        assert "nothing was waiting on any mapping's source" in again.stdout
    finally:
        down = run("local", "down")
    assert down.returncode == 0, down.stderr


def test_emulator_backlog_and_checkpoints_resume_after_the_handled_records(clean_stack):
    bars = [Bar(symbol="CKP", timestamp=f"2020-01-{d:02d}T00:00:00Z", open=1, high=2, low=0.5, close=1.5, volume=10)
            for d in range(1, 4)]
    esm = clean_stack.emulator(["features"], handlers={"features": lambda event, context: None})
    clean_stack.put_bars("market-data", bars)
    assert esm.backlog() == {"features": 3}
    assert esm.backlog() == {"features": 3}  # counting moves nothing
    esm.run_until_drained()
    assert esm.backlog() == {"features": 0}
    (checkpoint,) = esm.checkpoints()["features"].values()
    clean_stack.put_bars("market-data", bars[:1])
    seen = []
    later = clean_stack.emulator(["features"], start_position="TRIM_HORIZON", checkpoints=esm.checkpoints(),
                                 handlers={"features": lambda event, context: seen.extend(event["Records"])})
    assert later.backlog() == {"features": 1}
    later.run_until_drained()
    assert len(seen) == 1 and int(seen[0]["kinesis"]["sequenceNumber"]) > int(checkpoint)


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
    for symbol in ("SPX", "IXIC"):  # each symbol's bars in time order (packed 10 to a record)
        times = [b.timestamp for b in bars if b.symbol == symbol]
        assert len(times) == 350 and times == sorted(times)
    raw = list(clean_stack.stack.iter_stream("market-data", since=clean_stack.marks["market-data"]))
    assert len(raw) == 70  # 350 bars of each symbol, 10 to a record


# -- looking inside: read_queue ---------------------------------------------------------------------


def test_peeking_a_fifo_queue_reads_every_message_of_a_group_in_order(clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsDeadLetterWriter
    from ensemble_trader.local.reports import dead_letter_summary

    stack = clean_stack.stack
    writer = SqsDeadLetterWriter("orders-dlq", settings=stack.settings, source="orders")  # one group: "orders"
    for n in range(25):
        writer.send({"n": n}, f"reason {n % 2}")
    assert [letter["record"]["n"] for letter in stack.read_queue("orders-dlq", delete=False)] == list(range(25))
    assert dead_letter_summary(stack, "orders-dlq") == (25, ["   13 × reason 0", "   12 × reason 1"])
    # still there, in order, in their group, under new deduplication ids (SQS would drop a copy
    # sent under the original's id within five minutes even after a delete; moto does not)
    sqs, url = stack.client("sqs"), stack.queue_url("orders-dlq")
    head = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])["Messages"]
    assert {m["Attributes"]["MessageGroupId"] for m in head} == {"orders"}
    assert all(m["Attributes"]["MessageDeduplicationId"].startswith("peek-") for m in head)
    sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(head)])
    assert [letter["record"]["n"] for letter in stack.read_queue("orders-dlq")] == list(range(25))
    assert stack.queue_depth("orders-dlq") == 0


def test_peeking_a_fifo_queue_keeps_each_groups_order_and_the_attributes(clean_stack):
    stack = clean_stack.stack
    sqs, url = stack.client("sqs"), stack.queue_url("order-intents")
    for n in range(12):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": g, "MessageBody": json.dumps({"g": g, "n": n}), "MessageGroupId": g,
             "MessageDeduplicationId": f"{g}-{n}",
             "MessageAttributes": {"n": {"DataType": "Number", "StringValue": str(n)}}}
            for g in ("SPX", "IXIC")
        ])
    peeked = stack.read_queue("order-intents", delete=False)
    assert len(peeked) == 24 and stack.queue_depth("order-intents") == 24
    for g in ("SPX", "IXIC"):
        assert [m["n"] for m in peeked if m["g"] == g] == list(range(12))
    seen: dict[str, list[int]] = {"SPX": [], "IXIC": []}
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                          MessageSystemAttributeNames=["All"]).get("Messages"):
        for m in messages:
            body = json.loads(m["Body"])
            assert m["Attributes"]["MessageGroupId"] == body["g"]
            assert m["MessageAttributes"]["n"] == {"DataType": "Number", "StringValue": str(body["n"])}
            seen[body["g"]].append(body["n"])
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
    assert seen == {"SPX": list(range(12)), "IXIC": list(range(12))}


def test_peeking_a_standard_queue_leaves_it_as_it_was(clean_stack):
    from ensemble_trader.adapters.aws.sqs import SqsDeadLetterWriter

    stack = clean_stack.stack
    writer = SqsDeadLetterWriter("features-dlq", settings=stack.settings, source="features")
    for n in range(25):
        writer.send({"n": n}, "invalid Bar")
    assert sorted(letter["record"]["n"] for letter in stack.read_queue("features-dlq", delete=False)) == list(range(25))
    assert sorted(letter["record"]["n"] for letter in stack.read_queue("features-dlq")) == list(range(25))


# -- the emulator: function errors, timeouts, interruptions ---------------------------------------


def _numbers(event) -> list[int]:
    import base64

    return [json.loads(base64.b64decode(r["kinesis"]["data"]))["n"] for r in event["Records"]]


def _put_numbers(clean_stack, count: int) -> None:
    clean_stack.put_records("market-data", [("SPX", json.dumps({"n": n}).encode()) for n in range(count)])


def _send_intents(clean_stack, prefix: str, count: int) -> None:
    from ensemble_trader.adapters.aws.sqs import SqsPublisher

    SqsPublisher(settings=clean_stack.stack.settings).send(
        "order-intents", [("SPX", f"{prefix}-{n}", json.dumps({"n": n}).encode()) for n in range(count)]
    )


def test_handler_past_its_timeout_is_a_function_error(clean_stack):
    now = [0.0]
    timeout = constants.function_spec("features").timeout_seconds
    calls = []

    def slow_once(event, context):
        calls.append(_numbers(event))
        if len(calls) == 1:
            now[0] += timeout + 1  # the fake timer: this call took longer than the function timeout
            return {"batchItemFailures": []}  # a result Lambda never sees
        return None

    esm = clean_stack.emulator(["features"], handlers={"features": slow_once}, timer=lambda: now[0])
    _put_numbers(clean_stack, 2)
    stats = esm.run_until_drained()["features"]
    assert stats.timeouts == 1 and stats.function_errors == 1 and stats.bisections == 1
    assert calls == [[0, 1], [0], [1]] and stats.records_succeeded == 2


def test_sqs_handler_past_its_timeout_is_retried(clean_stack):
    now = [0.0]
    calls = []

    def slow_once(event, context):
        calls.append(len(event["Records"]))
        if len(calls) == 1:
            now[0] += constants.function_spec("orders").timeout_seconds + 1

    _send_intents(clean_stack, "slow", 2)
    stats = clean_stack.emulator(["orders"], handlers={"orders": slow_once}, timer=lambda: now[0]).run_until_drained()
    assert calls == [2, 2] and stats["orders"].timeouts == 1 and stats["orders"].records_succeeded == 2


def test_system_exit_in_a_handler_is_a_function_error(clean_stack):
    import sys as system

    calls = []

    def exits_once(event, context):
        calls.append(_numbers(event))
        if len(calls) == 1:
            system.exit(1)

    esm = clean_stack.emulator(["features"], handlers={"features": exits_once})
    _put_numbers(clean_stack, 3)
    stats = esm.run_until_drained()["features"]
    assert stats.function_errors == 1 and stats.records_succeeded == 3 and stats.dead_lettered == 0
    assert calls[0] == [0, 1, 2] and sorted(n for batch in calls[1:] for n in batch) == [0, 1, 2]


def test_keyboard_interrupt_gives_the_kinesis_batch_back(clean_stack):
    calls = []

    def interrupted_once(event, context):
        calls.append(_numbers(event))
        if len(calls) == 1:
            raise KeyboardInterrupt

    esm = clean_stack.emulator(["features"], handlers={"features": interrupted_once})
    _put_numbers(clean_stack, 3)
    with pytest.raises(KeyboardInterrupt):
        esm.run_until_drained()
    stats = esm.run_until_drained()["features"]  # the same emulator carries on: nothing was lost
    assert calls == [[0, 1, 2], [0, 1, 2]] and stats.records_succeeded == 3 and stats.function_errors == 0


def test_interruption_in_the_second_half_of_a_bisection_resumes_there(clean_stack):
    calls = []

    class Stop(BaseException):  # what pytest.fail() or pytest-timeout raise inside a handler
        pass

    def handler(event, context):
        numbers = _numbers(event)
        calls.append(numbers)
        if len(calls) == 1:
            raise ValueError("bisect me")
        if numbers == [2, 3] and len(calls) == 3:
            raise Stop

    esm = clean_stack.emulator(["features"], handlers={"features": handler})
    _put_numbers(clean_stack, 4)
    with pytest.raises(Stop):
        esm.run_until_drained()
    esm.run_until_drained()
    assert calls == [[0, 1, 2, 3], [0, 1], [2, 3], [2, 3]]


def test_interruption_makes_the_sqs_batch_visible_again(clean_stack):
    def interrupted(event, context):
        raise KeyboardInterrupt

    _send_intents(clean_stack, "interrupted", 3)
    with pytest.raises(KeyboardInterrupt):
        clean_stack.emulator(["orders"], handlers={"orders": interrupted}).run_until_drained()
    seen = []
    clean_stack.emulator(["orders"], handlers={"orders": lambda e, c: seen.extend(
        json.loads(r["body"])["n"] for r in e["Records"])}).run_until_drained()
    assert seen == [0, 1, 2]  # at once, not after the queue's visibility timeout (180 s)


def test_item_failures_count_the_reported_records_for_kinesis_and_sqs(clean_stack):
    def first_record_fails_once(key: str):
        calls = []

        def handler(event, context):
            calls.append(len(event["Records"]))
            first = event["Records"][0]
            ident = first["kinesis"]["sequenceNumber"] if key == "kinesis" else first["messageId"]
            return {"batchItemFailures": [{"itemIdentifier": ident}] if len(calls) == 1 else []}

        return handler, calls

    kinesis, kinesis_calls = first_record_fails_once("kinesis")
    esm = clean_stack.emulator(["features"], handlers={"features": kinesis})
    _put_numbers(clean_stack, 5)
    stats = esm.run_until_drained()["features"]
    assert kinesis_calls == [5, 5]  # every record from the failed one on is retried ...
    assert stats.item_failures == 1 and stats.retries == 1 and stats.records_succeeded == 5  # ... one failed

    sqs, sqs_calls = first_record_fails_once("sqs")
    _send_intents(clean_stack, "fails", 5)
    stats = clean_stack.emulator(["orders"], handlers={"orders": sqs}).run_until_drained()["orders"]
    assert sqs_calls == [5, 1] and stats.item_failures == 1 and stats.records_succeeded == 5


def test_a_malformed_response_counts_every_record_as_failed(clean_stack):
    calls = []

    def malformed_once(event, context):
        calls.append(len(event["Records"]))
        return {"batchItemFailures": [{"itemIdentifier": ""}]} if len(calls) == 1 else None

    esm = clean_stack.emulator(["features"], handlers={"features": malformed_once})
    _put_numbers(clean_stack, 3)
    stats = esm.run_until_drained()["features"]
    assert calls == [3, 3] and stats.item_failures == 3 and stats.records_succeeded == 3


def test_the_response_is_read_after_lambdas_json_round_trip(clean_stack):
    from decimal import Decimal

    calls = []

    def tuple_of_failures(event, context):
        calls.append(_numbers(event))
        failed = tuple({"itemIdentifier": r["kinesis"]["sequenceNumber"]} for r in event["Records"][1:])
        return {"batchItemFailures": failed if len(calls) == 1 else (), "price": Decimal("1.5")}

    esm = clean_stack.emulator(["features"], handlers={"features": tuple_of_failures})
    _put_numbers(clean_stack, 3)
    stats = esm.run_until_drained()["features"]
    # a tuple is a JSON list: the failures are honoured, then an empty one is a success
    assert calls == [[0, 1, 2], [1, 2]] and stats.item_failures == 2 and stats.records_succeeded == 3
    assert stats.function_errors == 0 and stats.dead_lettered == 0


def test_a_response_json_cannot_encode_is_a_marshal_error(clean_stack):
    from datetime import UTC, datetime

    calls = []

    def returns_a_datetime(event, context):
        calls.append(_numbers(event))
        return {"batchItemFailures": [], "done_at": datetime.now(UTC)} if len(calls) == 1 else None

    esm = clean_stack.emulator(["features"], handlers={"features": returns_a_datetime})
    _put_numbers(clean_stack, 2)
    stats = esm.run_until_drained()["features"]
    assert stats.function_errors == 1 and stats.bisections == 1  # retried as Lambda would
    assert calls == [[0, 1], [0], [1]] and stats.records_succeeded == 2

    def always_a_set(event, context):
        return {"batchItemFailures": [], "symbols": {"SPX"}}

    _send_intents(clean_stack, "set", 1)
    stats = clean_stack.emulator(["orders"], handlers={"orders": always_a_set}).run_until_drained()["orders"]
    receives = constants.function_spec("orders").mapping.max_receive_count
    assert stats.function_errors == receives and stats.records_succeeded == 0 and stats.dead_lettered == 1
    (letter,) = clean_stack.stack.read_queue("orders-dlq")
    assert letter["reason"] == "Runtime.MarshalError: Unable to marshal response: Object of type set is not JSON serializable"


def test_an_empty_function_list_maps_no_function(clean_stack):
    from ensemble_trader.local.esm import EventSourceMappingEmulator

    assert EventSourceMappingEmulator(clean_stack.stack, [], start_position="LATEST").functions == []
    assert EventSourceMappingEmulator(clean_stack.stack, None, start_position="LATEST").functions


# -- the servers ----------------------------------------------------------------------------------


def test_moto_start_moves_off_a_port_another_process_listens_on():
    import socket

    from ensemble_trader.local.servers import MotoServer, free_port

    port = free_port()
    with socket.socket() as neighbour:
        neighbour.bind(("127.0.0.1", port))
        neighbour.listen(5)
        moto = MotoServer(port=port).start()
        try:
            assert moto.port != port and moto._proc.poll() is None
        finally:
            moto.stop()


def test_moto_child_ignores_a_profile_this_machine_does_not_define(tmp_path, monkeypatch):
    import boto3
    from ensemble_trader.local.servers import MotoServer

    (tmp_path / "config").write_text("[profile someone-else]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_PROFILE", "et-test-no-such-profile")
    moto = MotoServer().start()
    monkeypatch.delenv("AWS_PROFILE")  # the child started with it; this process's client must not read it
    try:
        sqs = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name="us-east-1").client("sqs", endpoint_url=moto.url)
        sqs.create_queue(QueueName="et-test-profile")
        assert any(u.endswith("/et-test-profile") for u in sqs.list_queues()["QueueUrls"])
    finally:
        moto.stop()


@pytest.mark.skipif(not __import__("shutil").which("redis-server"), reason="needs redis-server")
def test_redis_started_by_a_worker_thread_outlives_the_thread():
    import threading

    from ensemble_trader.local.servers import RedisServer

    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("redis", RedisServer(allow_fake=False).start()))
    worker.start()
    worker.join()
    redis = box["redis"]
    try:
        with pytest.raises(subprocess.TimeoutExpired):  # PR_SET_PDEATHSIG did not fire with the thread
            redis._proc.wait(timeout=1)
        assert redis.pid and __import__("redis").Redis.from_url(redis.url).ping()
    finally:
        redis.stop()


@pytest.mark.skipif(not __import__("shutil").which("redis-server"), reason="needs redis-server")
def test_detached_redis_without_a_pid_file_is_found_and_stopped(monkeypatch):
    import tempfile

    from ensemble_trader.local.servers import RedisServer, pid_alive

    real_mkdtemp = tempfile.mkdtemp

    def folder_without_room_for_a_pid_file(*args, **kwargs):
        folder = real_mkdtemp(*args, **kwargs)
        os.mkdir(os.path.join(folder, "redis.pid"))  # redis-server cannot write its pid file
        return folder

    monkeypatch.setattr(tempfile, "mkdtemp", folder_without_room_for_a_pid_file)
    redis = RedisServer(allow_fake=False, detached=True).start(attempts=1)
    pid = redis.pid
    try:
        assert pid and __import__("redis").Redis.from_url(redis.url).info("server")["process_id"] == pid
    finally:
        redis.stop()
    assert not pid_alive(pid)
