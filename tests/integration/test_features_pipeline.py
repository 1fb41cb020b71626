"""The features Lambda through the ESM emulator against the moto server and a real redis-server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.models import Bar, FeatureVector
from ensemble_trader.local.functions import load_handler
from ensemble_trader.runtime.stage import decode_cached, stage_stats

T0 = datetime(2015, 1, 2, tzinfo=UTC)


def bars(symbol: str, n: int, start: int = 0) -> list[Bar]:
    out = []
    price = 100.0
    for i in range(start, start + n):
        price *= 1.0 + 0.01 * ((i * 7919) % 13 - 6) / 6
        out.append(Bar(symbol=symbol, timestamp=T0 + timedelta(days=i), open=price, high=price * 1.01,
                       low=price * 0.99, close=price * 1.002, volume=1000.0 + i))
    return out


def interleaved(n_each: int) -> list[Bar]:
    a, b = bars("SPX", n_each), bars("IXIC", n_each)
    return [x for pair in zip(a, b, strict=True) for x in pair]


def vectors(records) -> list[FeatureVector]:
    return [FeatureVector.parse(data) for _, data in records]


def cached_state(stack, symbol: str) -> bytes | None:
    return stack.redis_client().get(f"{stack.stage}:features:{symbol}")


def test_bars_become_feature_vectors_in_order(clean_stack):
    esm = clean_stack.emulator(["features"])
    n = WARMUP_BARS + 9  # past the warm-up
    clean_stack.put_bars("market-data", interleaved(n))
    stats = esm.run_until_drained()["features"]
    out = vectors(clean_stack.new_records("features"))
    assert len(out) == 2 * n and stats.records_succeeded == 2 * n
    spx = [v for v in out if v.symbol == "SPX"]
    assert [v.timestamp for v in spx] == [b.timestamp for b in bars("SPX", n)]
    assert spx[0].warmup_remaining > 0 and spx[-1].ready
    # the per-record compute metric went out as CloudWatch EMF on the function's stdout
    emf = [json.loads(line) for line in esm.logs("features") if line.startswith('{"_aws"')]
    emf = [doc for doc in emf if "features_compute_us" in doc]
    values = [v for doc in emf for v in doc["features_compute_us"]]
    assert len(values) == 2 * n and all(v > 0 for v in values)
    assert {(doc["stage"], doc["service"]) for doc in emf} == {("local", "features")}
    version, _ = decode_cached(cached_state(clean_stack.stack, "SPX"))
    snapshot = clean_stack.stack.client("dynamodb").get_item(
        TableName=clean_stack.stack.name("stage-state"), Key={"pk": {"S": "features"}, "sk": {"S": "SPX"}}
    )["Item"]
    assert int(snapshot["version"]["N"]) == version >= 1


def test_redelivered_batch_leaves_state_and_output_unchanged(clean_stack):
    esm = clean_stack.emulator(["features"])
    clean_stack.put_bars("market-data", interleaved(30))
    esm.run_until_drained()
    state_before = {s: cached_state(clean_stack.stack, s) for s in ("SPX", "IXIC")}
    n_out = len(clean_stack.new_records("features"))

    handler = load_handler("features")  # the same warm container, invoked again with the same batch
    from ensemble_trader.local.events import FakeLambdaContext

    response = handler(clean_stack.new_kinesis_event("market-data"), FakeLambdaContext("et-local-features"))
    assert response == {"batchItemFailures": []}
    assert {s: cached_state(clean_stack.stack, s) for s in ("SPX", "IXIC")} == state_before
    assert len(clean_stack.new_records("features")) == n_out == 60
    assert stage_stats("features").duplicates == 60


def test_a_late_bar_reaches_the_dlq_even_after_a_cache_loss(clean_stack):
    esm = clean_stack.emulator(["features"])
    spx = bars("SPX", 6)
    clean_stack.put_bars("market-data", [spx[i] for i in (0, 1, 2, 4, 5)])
    esm.run_until_drained()
    clean_stack.stack.redis_client().flushall()  # the DynamoDB snapshot keeps the handled times too
    clean_stack.put_bars("market-data", [spx[3], spx[2]])  # day 3 after day 5; day 2 re-sent
    stats = esm.run_until_drained()["features"]
    assert stats.item_failures == 0
    [letter] = clean_stack.stack.read_queue("features-dlq")
    assert letter["reason"].startswith("late record: SPX message dated 2015-01-05T00:00:00+00:00")
    assert stage_stats("features").late == 1 and stage_stats("features").duplicates == 1
    assert [v.timestamp for v in vectors(clean_stack.new_records("features"))] == [spx[i].timestamp
                                                                                    for i in (0, 1, 2, 4, 5)]


def test_a_backlog_of_one_symbol_travels_10_bars_to_a_kinesis_record(clean_stack):
    esm = clean_stack.emulator(["features"])
    spx = bars("SPX", 500)
    clean_stack.put_bars("market-data", spx, aggregate=True)
    stats = esm.run_until_drained()["features"]
    assert stats.records_received == 50 and stats.messages_received == 500 and stats.item_failures == 0
    out = vectors(clean_stack.new_records("features"))
    assert [v.timestamp for v in out] == [b.timestamp for b in spx]
    raw = list(clean_stack.stack.iter_stream("features", since=clean_stack.marks["features"]))
    assert len(raw) == 50  # the stage's outputs are packed the same way


def test_a_corrupt_aggregated_record_is_dead_lettered_and_its_neighbours_go_through(clean_stack):
    from ensemble_trader.runtime.aggregation import pack

    esm = clean_stack.emulator(["features"])
    spx, ixic = bars("SPX", 3), bars("IXIC", 3)
    corrupt = pack([b.model_dump_json().encode() for b in spx[1:]])[:-5]
    clean_stack.put_records("market-data", [spx[0], ("SPX", corrupt), *ixic])
    stats = esm.run_until_drained()["features"]
    assert stats.records_received == 5 and stats.messages_received == 5 and stats.item_failures == 0
    assert len(vectors(clean_stack.new_records("features"))) == 4
    [letter] = clean_stack.stack.read_queue("features-dlq")
    assert letter["reason"].startswith("invalid aggregated Kinesis record: aggregated record truncated")


def test_one_poison_record_among_100_reaches_the_dlq_and_99_go_through(clean_stack):
    esm = clean_stack.emulator(["features"])
    good = interleaved(50)
    records = [(b.symbol, b.model_dump_json().encode()) for b in good]
    poison = json.loads(records[41][1])
    poison["low"] = poison["high"] * 2  # low above the high
    records[41] = (poison["symbol"], json.dumps(poison).encode())
    clean_stack.put_records("market-data", records)

    stats = esm.run_until_drained()["features"]
    assert stats.item_failures == 0 and stats.dead_lettered == 0  # rejected by the handler, not retried
    out = vectors(clean_stack.new_records("features"))
    assert len(out) == 99
    letters = clean_stack.stack.read_queue("features-dlq")
    assert len(letters) == 1
    letter = letters[0]
    assert letter["source"] == "features"
    assert "invalid Bar" in letter["reason"] and f"low={poison['low']!r}" in letter["reason"]
    assert json.loads(__import__("base64").b64decode(letter["record"]["kinesis"]["data"])) == poison
    assert letter["record"]["eventSource"] == "aws:kinesis"


def test_redis_refusing_writes_fails_no_record(clean_stack):
    # the cache is best effort: a write-back Redis refuses after the snapshot committed is logged
    # and counted; the records are processed once (they used to fail and be retried)
    redis = clean_stack.stack.redis_client()
    esm = clean_stack.emulator(["features"])
    clean_stack.put_bars("market-data", interleaved(50))
    redis.config_set("min-replicas-to-write", 1)  # real Redis now refuses writes: NOREPLICAS
    try:
        stats = esm.run_until_drained()["features"]
    finally:
        redis.config_set("min-replicas-to-write", 0)
    assert stats.item_failures == 0 and stats.retries == 0 and stats.dead_lettered == 0
    out = vectors(clean_stack.new_records("features"))
    assert len(out) == 100 and len({(v.symbol, v.timestamp) for v in out}) == 100
    assert stage_stats("features").cache_unavailable >= 1
    assert cached_state(clean_stack.stack, "SPX") is None  # nothing reached the cache


def test_function_error_is_bisected_retried_and_dead_lettered(clean_stack):
    real = load_handler("features", fresh=True)

    def crashes_on_boom(event, context):
        for record in event["Records"]:
            if record["kinesis"]["partitionKey"] == "BOOM":
                raise RuntimeError("the handler crashed on BOOM")
        return real(event, context)

    esm = clean_stack.emulator(["features"], handlers={"features": crashes_on_boom})
    records = [(b.symbol, b.model_dump_json().encode()) for b in interleaved(8)]
    boom = bars("BOOM", 1)[0]
    records.insert(5, ("BOOM", boom.model_dump_json().encode()))
    clean_stack.put_records("market-data", records)

    stats = esm.run_until_drained()["features"]
    retry_limit = 3  # constants.FUNCTIONS["features"].mapping.retry_attempts
    assert stats.bisections >= 4  # 17 → 8/9 → … → the single BOOM record
    assert stats.dead_lettered == 1 and stats.retries == retry_limit
    assert len(vectors(clean_stack.new_records("features"))) == 16
    (letter,) = clean_stack.stack.read_queue("features-dlq")
    assert letter["reason"] == f"RuntimeError: the handler crashed on BOOM (after {retry_limit} retries)"
    assert letter["record"]["kinesis"]["partitionKey"] == "BOOM"


def test_persistent_item_failure_goes_to_the_on_failure_destination(clean_stack):
    def always_fails_last(event, context):
        return {"batchItemFailures": [{"itemIdentifier": event["Records"][-1]["kinesis"]["sequenceNumber"]}]}

    esm = clean_stack.emulator(["features"], handlers={"features": always_fails_last})
    clean_stack.put_bars("market-data", bars("SPX", 5))
    stats = esm.run_until_drained()["features"]
    assert stats.invocations == 4 and stats.retries == 3
    (letter,) = clean_stack.stack.read_queue("features-dlq")
    assert letter["reason"] == "batch item failure after 3 retries"


def test_unknown_item_identifier_fails_the_whole_batch(clean_stack):
    seen = []

    def bogus_then_ok(event, context):
        seen.append(len(event["Records"]))
        return {"batchItemFailures": [{"itemIdentifier": "not-a-sequence-number"}]} if len(seen) == 1 else {}

    esm = clean_stack.emulator(["features"], handlers={"features": bogus_then_ok})
    clean_stack.put_bars("market-data", bars("SPX", 6))
    esm.run_until_drained()
    assert seen == [6, 6]


def test_records_wait_as_long_as_the_stream_keeps_them_unless_a_maximum_age_is_set(clean_stack):
    """The deployed mappings keep no maximum record age (a paused mapping, a replay: the stream's
    retention decides); a mapping given one dead-letters the records older than it."""
    import dataclasses
    import time

    from ensemble_trader import constants

    later = lambda: time.time() + 7200  # noqa: E731 (two hours later)
    esm = clean_stack.emulator(["features"], clock=later)
    clean_stack.put_bars("market-data", bars("SPX", 3))
    stats = esm.run_until_drained()["features"]
    assert stats.expired == 0 and stats.records_succeeded == 3

    (spec,) = [f for f in constants.FUNCTIONS if f.logical == "features"]
    aged = dataclasses.replace(spec, mapping=dataclasses.replace(spec.mapping, max_record_age_seconds=3600))
    esm = clean_stack.emulator([aged], clock=later)
    clean_stack.put_bars("market-data", bars("SPX", 3, start=10))
    stats = esm.run_until_drained()["features"]
    assert stats.expired == 3 and stats.invocations == 0
    letters = clean_stack.stack.read_queue("features-dlq")
    assert [letter["reason"] for letter in letters] == ["record older than the maximum record age (3600 s)"] * 3


def test_a_mapping_that_only_fails_can_be_switched_off(clean_stack):
    def always_raises(event, context):
        raise FileNotFoundError("model.onnx is missing")

    esm = clean_stack.emulator(["features"], handlers={"features": always_raises}, disable_after_errors=2)
    clean_stack.put_bars("market-data", bars("SPX", 6))
    stats = esm.run_until_drained()["features"]
    assert stats.dead_lettered == 2 and stats.undelivered == 4
    assert stats.disabled == "2 records in a row failed: FileNotFoundError: model.onnx is missing"
    assert esm.poll("features") == 0


def test_sample_event_invokes_the_handler_like_sam_local(clean_stack):
    from pathlib import Path

    from ensemble_trader.local.events import FakeLambdaContext

    sample = Path(__file__).resolve().parents[2] / "events" / "kinesis-market-data-bad-record.json"
    handler = load_handler("features", fresh=True)
    response = handler(json.loads(sample.read_text()), FakeLambdaContext("et-local-features"))
    assert response == {"batchItemFailures": []}
    assert len(vectors(clean_stack.new_records("features"))) == 6
    (letter,) = clean_stack.stack.read_queue("features-dlq")
    assert "low=" in letter["reason"] and letter["source"] == "features"
