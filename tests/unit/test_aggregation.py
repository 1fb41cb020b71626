"""Aggregated Kinesis records: the format, its bounds, and the stage runner reading them."""

from __future__ import annotations

import base64

import pytest
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime.aggregation import (
    MAX_BYTES,
    MAX_MESSAGES,
    AggregationError,
    aggregate,
    messages_of,
    pack,
    unpack,
)
from test_stage_runner import bar_json, failures, world  # noqa: F401  (world is a fixture)


def test_pack_and_unpack_round_trip_and_plain_records_pass():
    messages = [b'{"a":1}', b"", b"\x1e binary \x00"]
    assert unpack(pack(messages)) == messages
    assert unpack(b'{"a":1}') is None


@pytest.mark.parametrize("cut", [1, 3, 9])
def test_a_truncated_aggregate_is_refused(cut):
    data = pack([b"hello", b"world"])
    with pytest.raises(AggregationError, match="truncated"):
        unpack(data[:-cut])
    with pytest.raises(AggregationError, match="no message"):
        unpack(pack([]))


def test_aggregate_packs_each_keys_run_in_order_within_the_bounds():
    records = [(k, f"{k}{i}".encode()) for i in range(60) for k in ("A", "B")] + [("C", b"C0")]
    out = aggregate(records)
    assert ("C", b"C0") in out  # a key with one message stays plain
    for key in ("A", "B"):
        packs = [unpack(d) for k, d in out if k == key]
        assert [len(p) for p in packs] == [MAX_MESSAGES] * (60 // MAX_MESSAGES) + ([60 % MAX_MESSAGES] if 60 % MAX_MESSAGES else [])
        assert [m for p in packs for m in p] == [f"{key}{i}".encode() for i in range(60)]
    big = b"x" * (MAX_BYTES // 2)
    sized = aggregate([("A", big), ("A", big), ("A", big)])
    assert all(len(d) <= MAX_BYTES for _, d in sized) and len(sized) == 3
    assert sized[0][1] == big  # a run of one is not wrapped


def _aggregate_event(payloads: list[bytes], seq: str = "5000") -> dict:
    return kinesis_event([kinesis_record(pack(payloads), partition_key="AAA", sequence_number=seq, stream="et-test-in")])


def test_the_runner_applies_every_message_of_an_aggregated_record_in_order(world):  # noqa: F811
    response = world.runner.process(_aggregate_event([bar_json("AAA", i) for i in range(5)]))
    assert failures(response) == []
    assert [o.count for o in world.outputs()] == [1, 2, 3, 4, 5]
    assert world.stats.records == 1 and world.stats.applied == 5


def test_a_bad_message_in_an_aggregate_is_dead_lettered_alone_and_replayable(world):  # noqa: F811
    payloads = [bar_json("AAA", 0), bar_json("AAA", 1, high=1.0), bar_json("AAA", 2)]
    world.runner.process(_aggregate_event(payloads))
    [(record, reason, _)] = world.dlq.letters
    assert "invalid Bar" in reason
    assert base64.b64decode(record["kinesis"]["data"]) == payloads[1]
    assert record["kinesis"]["aggregated"] == {"index": 1, "messages": 3}
    assert record["kinesis"]["sequenceNumber"] == "5000"
    assert [o.count for o in world.outputs()] == [1, 2]


def test_a_failed_aggregate_is_retried_whole_and_its_applied_messages_are_duplicates(world):  # noqa: F811
    payloads = [bar_json("AAA", i) for i in range(4)] + [bar_json("AAA", 4, volume=666.0)]  # 666: the step crashes
    event = kinesis_event([
        kinesis_record(pack(payloads[:2]), partition_key="AAA", sequence_number="5000", stream="et-test-in"),
        kinesis_record(pack(payloads[2:]), partition_key="AAA", sequence_number="5001", stream="et-test-in"),
    ])
    world.step.crash_on_volume = 666.0
    assert failures(world.runner.process(event)) == ["5000", "5001"]  # a bug: nothing of the symbol kept
    world.step.crash_on_volume = None
    assert failures(world.runner.process(event)) == []
    assert world.state("AAA")[1]["count"] == 5
    world.runner.process(event)  # a redelivery: every message a duplicate
    assert world.stats.duplicates == 5 and world.state("AAA")[1]["count"] == 5


def test_a_corrupt_aggregate_is_dead_lettered_with_the_reason(world):  # noqa: F811
    data = pack([bar_json("AAA", 0), bar_json("AAA", 1)])[:-3]
    world.runner.process(kinesis_event([kinesis_record(data, partition_key="AAA", sequence_number="1", stream="s")]))
    assert world.dlq.reasons[0].startswith("invalid aggregated Kinesis record: aggregated record truncated")
    assert world.stats.applied == 0 and world.outputs() == []


def test_outputs_of_symbols_packed_apart_go_out_interleaved_in_time(world):  # noqa: F811
    event = kinesis_event([
        kinesis_record(pack([bar_json(s, i) for i in range(3)]), partition_key=s, sequence_number=str(n), stream="s")
        for n, s in enumerate(("AAA", "BBB"))
    ])
    world.runner.process(event)
    assert [(o.symbol, o.count) for o in world.outputs()] == [
        ("AAA", 1), ("BBB", 1), ("AAA", 2), ("BBB", 2), ("AAA", 3), ("BBB", 3)
    ]


def test_messages_of_counts_a_corrupt_record_as_itself():
    corrupt = pack([b"a", b"b"])[:-1]
    assert messages_of(corrupt) == [corrupt]
    assert messages_of(pack([b"a", b"b"])) == [b"a", b"b"] and messages_of(b"{}") == [b"{}"]


def test_an_aggregate_announcing_more_messages_than_a_producer_packs_is_refused_whole():
    """200,000 empty messages in one record would mean 200,000 dead letters: it is one bad record."""
    import struct

    from ensemble_trader.runtime.aggregation import MAGIC, AggregationError, unpack

    blob = MAGIC + struct.pack(">I", 200_000) + struct.pack(">I", 0) * 200_000
    with pytest.raises(AggregationError, match="announces 200000 messages"):
        unpack(blob)
