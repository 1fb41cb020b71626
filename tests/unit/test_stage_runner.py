"""Semantics of the per-symbol stage runner, with in-memory fakes of every port."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import DataError, InvalidMessageError, StateError
from ensemble_trader.domain.models import Bar, Message
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime import stage
from ensemble_trader.runtime.stage import (
    BaseSymbolStep,
    KinesisStageRunner,
    StageStats,
    StreamSink,
    decode_cached,
    timestamp_ns,
)
from pydantic import AwareDatetime

T0 = datetime(2024, 1, 2, tzinfo=UTC)


class Tally(Message):
    symbol: str
    timestamp: AwareDatetime
    count: int
    total: float


class Milestone(Message):
    symbol: str
    count: int


class TallyStep(BaseSymbolStep[dict, Bar]):
    """Counts bars and sums closes; volume 13 is a permanent error, 666 an unexpected crash. Fed
    by a producer (bars), so it detects conflicting records, as the features stage does."""

    name = "tally"
    input_model = Bar
    detects_conflicts = True

    def __init__(self) -> None:
        self.crash_on_volume: float | None = 666.0

    def new_state(self, symbol: str) -> dict:
        return {"symbol": symbol, "last": None, "count": 0, "total": 0.0}

    def load(self, data: bytes) -> dict:
        return json.loads(data)

    def dump(self, state: dict) -> bytes:
        return json.dumps(state).encode()

    def sequence(self, state: dict) -> int | None:
        return state["last"]

    def apply(self, state: dict, bar: Bar):
        if bar.volume == 13.0:
            raise DataError(f"volume 13 is unlucky for {bar.symbol}")
        if self.crash_on_volume is not None and bar.volume == self.crash_on_volume:
            raise RuntimeError("bug in the step")
        new = {
            "symbol": state["symbol"],
            "last": timestamp_ns(bar.timestamp),
            "count": state["count"] + 1,
            "total": state["total"] + bar.close,
        }
        out = Tally(symbol=bar.symbol, timestamp=bar.timestamp, count=new["count"], total=new["total"])
        events = [Milestone(symbol=bar.symbol, count=new["count"])] if new["count"] % 3 == 0 else []
        return new, [out], events


def bar_json(symbol: str, i: int, volume: float = 100.0, **override) -> bytes:
    close = 100.0 + i
    doc = {
        "symbol": symbol,
        "timestamp": (T0 + timedelta(days=i)).isoformat(),
        "open": close,
        "high": close + 1,
        "low": close - 1,
        "close": close,
        "volume": volume,
    }
    doc.update(override)
    return json.dumps(doc).encode()


def event_of(payloads: list[tuple[str, bytes]], first_seq: int = 1000) -> dict:
    return kinesis_event(
        [
            kinesis_record(data, partition_key=key, sequence_number=str(first_seq + n), stream="et-test-in")
            for n, (key, data) in enumerate(payloads)
        ]
    )


@pytest.fixture()
def world():
    class World:
        def __init__(self) -> None:
            self.step = TallyStep()
            self.cache = MemoryCache()
            self.dlq = MemoryDeadLetters()
            self.publisher = MemoryStreamPublisher()
            self.bus = MemoryEventBus()
            self.snapshots = MemoryKeyValueStore()
            self.stats = StageStats()
            self.runner = self.make_runner()

        def make_runner(self) -> KinesisStageRunner:
            return KinesisStageRunner(
                self.step,
                cache=self.cache,
                dlq=self.dlq,
                sink=StreamSink(self.publisher, "out"),
                events=self.bus,
                snapshots=self.snapshots,
                stats=self.stats,
            )

        def outputs(self) -> list[Tally]:
            return [Tally.parse(data) for _, data in self.publisher.streams["out"]]

        def state(self, symbol: str) -> tuple[int, dict]:
            version, data = decode_cached(self.cache.data[f"tally:{symbol}"])
            return version, json.loads(data)

    return World()


def failures(response: dict) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def interleaved(n: int) -> list[tuple[str, bytes]]:
    return [(s, bar_json(s, i)) for i in range(n) for s in ("AAA", "BBB")]


def test_processes_every_symbol_in_order_and_writes_state(world):
    response = world.runner.process(event_of(interleaved(4)))
    assert response == {"batchItemFailures": []}
    outs = world.outputs()
    assert [(o.symbol, o.count) for o in outs if o.symbol == "AAA"] == [("AAA", c) for c in (1, 2, 3, 4)]
    assert [o.count for o in outs if o.symbol == "BBB"] == [1, 2, 3, 4]
    version, state = world.state("AAA")
    assert version == 1 and state["count"] == 4 and state["total"] == pytest.approx(406.0)
    snap = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
    assert snap["version"] == 1 and json.loads(snap["state"]) == state
    assert snap["sequence"] == timestamp_ns(T0 + timedelta(days=3))
    assert [e.count for e in world.bus.events] == [3, 3]
    assert world.stats.applied == 8 and len(world.stats.compute_ns) == 8


def test_redelivered_batch_is_a_no_op(world):
    event = event_of(interleaved(5))
    world.runner.process(event)
    cached = dict(world.cache.data)
    n_out = len(world.publisher.streams["out"])
    response = world.runner.process(event)
    assert failures(response) == []
    assert world.cache.data == cached
    assert len(world.publisher.streams["out"]) == n_out
    assert world.stats.duplicates == 10
    assert world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "BBB"})["version"] == 1


def test_overlapping_batch_applies_only_new_records(world):
    world.runner.process(event_of(interleaved(3)))
    world.runner.process(event_of(interleaved(5), first_seq=2000))
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3, 4, 5]
    assert world.state("AAA")[0] == 2


def test_a_reemitted_batch_with_new_sequence_numbers_is_all_duplicates_not_late(world):
    world.runner.process(event_of(interleaved(5)))
    world.runner.process(event_of(interleaved(5), first_seq=2000))  # upstream sent it all again
    assert world.dlq.letters == [] and world.stats.late == 0 and world.stats.duplicates == 10


def test_a_late_record_is_dead_lettered_with_both_times_and_the_others_go_through(world):
    payloads = [("AAA", bar_json("AAA", i)) for i in (0, 1, 3, 4)]
    world.runner.process(event_of(payloads))
    late = ("AAA", bar_json("AAA", 2))  # day 2 reaches the stream after day 4 was applied
    response = world.runner.process(event_of([late, ("AAA", bar_json("AAA", 5)), ("BBB", bar_json("BBB", 0))], 2000))
    assert failures(response) == []
    [(record, reason, source)] = world.dlq.letters
    assert source == "tally" and record["kinesis"]["sequenceNumber"] == "2000"
    assert reason.startswith("late record: AAA message dated 2024-01-04T00:00:00+00:00 arrived after the one "
                             "dated 2024-01-06T00:00:00+00:00 was applied")
    assert world.stats.late == 1 and world.stats.duplicates == 0
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3, 4, 5]
    assert world.state("AAA")[1]["total"] == sum(100.0 + i for i in (0, 1, 3, 4, 5))

    # its redelivery (the mapping retrying the batch) is a duplicate, not a second letter
    world.runner.process(event_of([late], 2000))
    assert len(world.dlq.letters) == 1 and world.stats.duplicates == 1


def test_a_late_record_alone_is_remembered_across_a_cache_loss(world):
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in (0, 2)]))
    world.runner.process(event_of([("AAA", bar_json("AAA", 1))], 2000))
    assert world.stats.late == 1
    world.cache.data.clear()  # the snapshot keeps the handled times too
    world.runner.process(event_of([("AAA", bar_json("AAA", 1)), ("AAA", bar_json("AAA", 0))], 2000))
    assert world.stats.late == 1 and world.stats.duplicates == 2 and len(world.dlq.letters) == 1
    world.runner.process(event_of([("AAA", bar_json("AAA", 3))], 3000))
    world.cache.data.clear()
    world.runner.process(event_of([("AAA", bar_json("AAA", 2.5))], 4000))  # never handled: known from the snapshot
    assert world.stats.late == 2 and len(world.dlq.letters) == 2


def test_a_new_symbols_late_first_bar_is_dead_lettered(world):
    """The memory of a new symbol holds every record it handled: an older one was never handled."""
    world.runner.process(event_of([("NEW", bar_json("NEW", 2))]))
    world.runner.process(event_of([("NEW", bar_json("NEW", 1))], 2000))
    assert world.stats.late == 1 and world.stats.duplicates == 0
    assert "late record: NEW" in world.dlq.reasons[0]


def test_a_rejected_record_redelivered_after_later_ones_is_not_dead_lettered_again(world):
    payloads = [("AAA", bar_json("AAA", 0)), ("AAA", bar_json("AAA", 1, volume=13.0)), ("AAA", bar_json("AAA", 2))]
    world.runner.process(event_of(payloads))
    world.runner.process(event_of(payloads))
    assert world.dlq.reasons == ["volume 13 is unlucky for AAA"] and world.stats.late == 0


def test_a_record_older_than_the_handled_memory_is_counted_a_duplicate(world, monkeypatch):
    monkeypatch.setattr(stage, "HANDLED_MEMORY", 3)
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in (0, 2, 4, 6, 8)]))
    world.runner.process(event_of([("AAA", bar_json("AAA", 1)), ("AAA", bar_json("AAA", 5))], 2000))
    # day 1 lies before the three remembered times (4, 6, 8): it cannot be told from a redelivery
    assert world.stats.duplicates == 1 and world.stats.late == 1
    assert "dated 2024-01-07" in world.dlq.reasons[0]  # day 5, between remembered times


@pytest.mark.parametrize("where", ["cache", "snapshot"])
def test_a_state_stored_without_handled_times_loads_and_counts_old_records_as_duplicates(world, where):
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in (0, 2)]))
    version, data = world.state("AAA")
    snap = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
    if where == "cache":  # the earlier cache format: magic ET1, version, state
        world.cache.data["tally:AAA"] = b"ET1" + version.to_bytes(8, "big") + json.dumps(data).encode()
    else:
        del snap["handled"]
        world.snapshots.put_item("stage-state", snap, expected_version=version)
        world.cache.data.clear()
    response = world.runner.process(event_of([("AAA", bar_json("AAA", 1)), ("AAA", bar_json("AAA", 3))], 2000))
    assert failures(response) == [] and world.dlq.letters == []
    assert world.stats.duplicates == 1 and world.state("AAA")[1]["count"] == 3


def test_a_snapshot_with_unreadable_handled_times_still_loads_its_state(world):
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in (0, 2)]))
    version, _ = world.state("AAA")
    snap = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
    world.snapshots.put_item("stage-state", snap | {"handled": b"garbage"}, expected_version=version)
    world.cache.data.clear()
    response = world.runner.process(event_of([("AAA", bar_json("AAA", 1)), ("AAA", bar_json("AAA", 3))], 2000))
    assert failures(response) == [] and world.dlq.letters == []  # day 1 cannot be told late: a duplicate
    assert world.stats.duplicates == 1 and world.state("AAA")[1]["count"] == 3


def test_a_cached_state_with_unreadable_handled_times_is_kept_even_ahead_of_its_snapshot(world):
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in range(3)]))
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in range(3, 6)], 2000))
    version, state = world.state("AAA")
    assert version == 2 and state["count"] == 6
    world.snapshots.put_item("stage-state", world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
                             | {"version": 1}, expected_version=2)  # the snapshot lost its last write
    _, _, data = stage.decode_cached_entry(world.cache.data["tally:AAA"])
    world.cache.data["tally:AAA"] = stage.encode_cached(2, data, b"\x00garbage")
    world.runner.process(event_of([("AAA", bar_json("AAA", 6))], 3000))
    assert world.state("AAA")[1]["count"] == 7  # the cached state (the only copy of bars 3-5) kept


def _as_lists(decoded):
    times, digests, complete = decoded
    assert times.typecode == "q" and digests.itemsize == 4  # the runner's arrays
    return list(times), list(digests), complete


def test_handled_times_round_trip_compactly_and_refuse_garbage():
    daily = [timestamp_ns(T0 + timedelta(days=i)) for i in range(1024)]
    unknown = [stage.NO_DIGEST] * len(daily)
    blob = stage.encode_handled(daily)  # the encoding without digests (stored before they were kept)
    assert _as_lists(stage.decode_handled(blob)) == (daily, unknown, False) and len(blob) < 200
    assert _as_lists(stage.decode_handled(stage.encode_handled(daily, complete=True))) == (daily, unknown, True)
    assert _as_lists(stage.decode_handled(stage.encode_handled([]))) == ([], [], False)
    assert _as_lists(stage.decode_handled(stage.encode_handled([], complete=True))) == ([], [], True)
    digests = [(i * 2654435761) % 2**32 for i in range(1024)]
    blob = stage.encode_handled(daily, digests, complete=True)
    assert _as_lists(stage.decode_handled(blob)) == (daily, digests, True) and len(blob) < 200 + 4 * 1024
    assert _as_lists(stage.decode_handled(stage.encode_handled(daily, digests))) == (daily, digests, False)
    times, kept, _ = stage.decode_handled(blob)  # the arrays encode to the same bytes as the lists
    assert stage.encode_handled(times, kept, complete=True) == blob
    with pytest.raises(StateError, match="cannot be decoded"):
        stage.decode_handled(b"garbage")
    with pytest.raises(StateError, match="strictly increasing"):
        stage.decode_handled(stage.encode_handled([5, 3]))
    with pytest.raises(StateError, match="digests cannot be decoded"):
        stage.decode_handled(blob[:-1])
    with pytest.raises(StateError, match="truncated"):
        stage.decode_handled(stage.encode_handled(daily)[:-3])
    with pytest.raises(ValueError, match="2 digests for 3"):
        stage.encode_handled([1, 2, 3], [7, 8])


# ---- another version of a handled record is a conflict, not a duplicate ----------------------


def test_a_record_at_an_applied_time_with_other_content_is_dead_lettered_as_a_conflict(world):
    world.runner.metrics = metrics = Recorded()
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in range(3)]))
    total = world.state("AAA")[1]["total"]
    corrected = ("AAA", bar_json("AAA", 1, close=150.0, high=151.0))  # day 1 again, another close
    response = world.runner.process(event_of([corrected, ("AAA", bar_json("AAA", 3)), ("BBB", bar_json("BBB", 0))],
                                             2000))
    assert failures(response) == []
    [(record, reason, source)] = world.dlq.letters
    assert source == "tally" and record["kinesis"]["sequenceNumber"] == "2000"
    applied = stage.record_digest(Bar.parse(bar_json("AAA", 1)))
    received = stage.record_digest(Bar.parse(corrected[1]))
    assert reason.startswith("conflicting record: AAA 2024-01-03T00:00:00Z already applied (or dead-lettered) by "
                             "stage tally with different content")
    assert f"{applied:08x}" in reason and f"{received:08x}" in reason and applied != received
    assert world.stats.conflicts == 1 and world.stats.duplicates == 0 and world.stats.late == 0
    assert metrics.count("tally_conflicts") == 1 and metrics.count("tally_rejected") == 1
    # the state keeps the first version; the other records went through
    assert world.state("AAA")[1] == {"symbol": "AAA", "last": timestamp_ns(T0 + timedelta(days=3)), "count": 4,
                                      "total": total + 103.0}
    assert sorted((o.symbol, o.count) for o in world.outputs())[-2:] == [("AAA", 4), ("BBB", 1)]

    # the first version redelivered is still a duplicate, and so is the conflict's memory across a cache loss
    world.cache.data.clear()
    world.runner.process(event_of([("AAA", bar_json("AAA", 1)), corrected], 3000))
    assert world.stats.duplicates == 1 and world.stats.conflicts == 2 and len(world.dlq.letters) == 2


def test_two_versions_of_the_last_bar_in_one_batch_apply_the_first_and_dead_letter_the_second(world):
    first, second = bar_json("AAA", 0), bar_json("AAA", 0, close=99.5, low=98.0)
    world.runner.process(event_of([("AAA", first), ("AAA", second), ("AAA", first)]))
    assert world.state("AAA")[1]["total"] == 100.0
    assert world.stats.applied == 1 and world.stats.conflicts == 1 and world.stats.duplicates == 1
    assert world.dlq.reasons[0].startswith("conflicting record: AAA 2024-01-02T00:00:00Z")


def test_a_redelivery_serialised_or_packed_otherwise_is_a_duplicate_not_a_conflict(world):
    from ensemble_trader.runtime.aggregation import pack

    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in range(3)]))
    doc = json.loads(bar_json("AAA", 1))
    respelled = json.dumps(dict(reversed(doc.items())), indent=2).replace("101.0", "101").encode()
    utc_z = bar_json("AAA", 2, timestamp=(T0 + timedelta(days=2)).isoformat().replace("+00:00", "Z"))
    packed = pack([bar_json("AAA", 0), respelled, utc_z])  # several to a Kinesis record
    response = world.runner.process(event_of([("AAA", respelled), ("AAA", packed), ("AAA", bar_json("AAA", 3))], 2000))
    assert failures(response) == [] and world.dlq.letters == []
    assert world.stats.duplicates == 4 and world.stats.conflicts == 0 and world.state("AAA")[1]["count"] == 4


def test_a_conflict_the_dead_letter_queue_refuses_is_reported_failed_and_the_state_kept(world):
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in range(2)]))
    world.dlq.failures.fail("send")
    response = world.runner.process(event_of([("AAA", bar_json("AAA", 0, volume=7.0)), ("AAA", bar_json("AAA", 2)),
                                              ("BBB", bar_json("BBB", 0))], 2000))
    assert failures(response) == ["2000", "2001"]  # the symbol stops at the conflict; BBB goes on
    assert world.state("AAA")[1]["count"] == 2 and world.state("BBB")[1]["count"] == 1
    response = world.runner.process(event_of([("AAA", bar_json("AAA", 0, volume=7.0)), ("AAA", bar_json("AAA", 2))],
                                              2000))
    assert failures(response) == [] and world.stats.conflicts == 1 and world.state("AAA")[1]["count"] == 3


@pytest.mark.parametrize("where", ["cache", "snapshot"])
def test_times_remembered_without_digests_match_any_content_so_an_upgrade_dead_letters_nothing(world, where):
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in range(3)]))
    version, data = world.state("AAA")
    times = [timestamp_ns(T0 + timedelta(days=i)) for i in range(3)]
    old_handled = stage.encode_handled(times, complete=True)  # as stored before digests were kept
    snap = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
    if where == "cache":
        world.cache.data["tally:AAA"] = stage.encode_cached(version, json.dumps(data).encode(), old_handled)
    else:
        world.snapshots.put_item("stage-state", snap | {"handled": old_handled}, expected_version=version)
        world.cache.data.clear()
    other = ("AAA", bar_json("AAA", 1, volume=5.0))  # another version of day 1: unknowable, a duplicate
    response = world.runner.process(event_of([other, ("AAA", bar_json("AAA", 0.5)), ("AAA", bar_json("AAA", 3))], 2000))
    assert failures(response) == [] and world.stats.duplicates == 1 and world.stats.conflicts == 0
    assert world.stats.late == 1  # the memory of times still tells a late record
    # the times handled since carry digests: another version of day 3 is a conflict
    world.runner.process(event_of([("AAA", bar_json("AAA", 3, volume=5.0))], 3000))
    assert world.stats.conflicts == 1 and world.dlq.reasons[-1].startswith("conflicting record: AAA")
    _, handled, _ = stage.decode_cached_entry(world.cache.data["tally:AAA"])
    remembered = dict(zip(*stage.decode_handled(handled)[:2], strict=True))
    assert [remembered[t] for t in times] == [stage.NO_DIGEST] * 3
    assert stage.NO_DIGEST not in [d for t, d in remembered.items() if t not in times]


def test_a_corrected_record_after_a_rejected_one_is_applied_and_the_rejected_one_then_conflicts(world):
    rejected, corrected = bar_json("AAA", 1, volume=13.0), bar_json("AAA", 1)
    world.runner.process(event_of([("AAA", bar_json("AAA", 0)), ("AAA", rejected)]))
    world.runner.process(event_of([("AAA", corrected), ("AAA", bar_json("AAA", 2))], 2000))  # above the last applied
    assert world.state("AAA")[1]["count"] == 3 and world.dlq.reasons == ["volume 13 is unlucky for AAA"]
    world.runner.process(event_of([("AAA", corrected), ("AAA", rejected)], 3000))
    assert world.stats.duplicates == 1 and world.stats.conflicts == 1
    assert world.dlq.reasons[-1].startswith("conflicting record: AAA 2024-01-03T00:00:00Z")


class DerivedTallyStep(TallyStep):
    """The tally step as a stage reading a derived stream (regime, meta-agent): the runner's
    default, no conflict detection."""

    detects_conflicts = False


def test_conflict_detection_is_opt_in():
    assert BaseSymbolStep.detects_conflicts is False
    from ensemble_trader.domain.meta_agent import MetaAgentStep
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.runtime.features_stage import FeaturesStep

    assert FeaturesStep.detects_conflicts is True
    assert not getattr(RegimeStep, "detects_conflicts", False)
    assert not getattr(MetaAgentStep, "detects_conflicts", False)


def test_a_derived_record_at_a_handled_time_with_other_content_is_skipped_first_wins_and_counted(world, caplog):
    """A derived stream's record recomputed upstream (a rebuilt features state: floats that are not
    bit-equal) is a redelivery: skipped, counted as <stage>_redelivered_changed, logged at info,
    never dead-lettered; late records are still dead-lettered and the digests still stored."""
    world.step = DerivedTallyStep()
    world.runner = world.make_runner()
    world.runner.metrics = metrics = Recorded()
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in (0, 1, 3)]))
    state = world.state("AAA")[1]
    outputs = len(world.outputs())
    recomputed = [("AAA", bar_json("AAA", i, close=100.0 + i + 1e-9)) for i in (0, 1, 3)]
    with caplog.at_level(logging.INFO, logger="ensemble_trader.runtime.stage"):
        response = world.runner.process(event_of([*recomputed, ("AAA", bar_json("AAA", 3))], 2000))
    assert failures(response) == [] and world.dlq.letters == []
    assert world.stats.redelivered_changed == 3 and world.stats.conflicts == 0
    assert world.stats.duplicates == 4  # every record skipped as a redelivery, changed or not
    assert metrics.count("tally_redelivered_changed") == 3 and metrics.count("tally_conflicts") == 0
    assert metrics.count("tally_rejected") == 0 and metrics.count("tally_duplicates") == 4
    assert world.state("AAA")[1] == state and len(world.outputs()) == outputs  # the first version wins
    logged = [r for r in caplog.records if "redelivered with other content" in r.getMessage()]
    assert len(logged) == 3 and {r.levelno for r in logged} == {logging.INFO}
    assert "AAA 2024-01-05T00:00:00Z" in logged[-1].getMessage()
    # the digests of the versions handled first are still kept, in the same encoding
    _, handled, _ = stage.decode_cached_entry(world.cache.data["tally:AAA"])
    assert list(stage.decode_handled(handled)[1]) == [stage.record_digest(Bar.parse(bar_json("AAA", i))) for i in (0, 1, 3)]
    # a late record (never handled) is still dead-lettered
    world.runner.process(event_of([("AAA", bar_json("AAA", 2))], 3000))
    assert world.stats.late == 1 and world.dlq.reasons[0].startswith("late record: AAA")


def test_a_digest_is_kept_per_remembered_time_only(world, monkeypatch):
    monkeypatch.setattr(stage, "HANDLED_MEMORY", 3)
    world.runner.process(event_of([("AAA", bar_json("AAA", i)) for i in range(6)]))
    _, handled, _ = stage.decode_cached_entry(world.cache.data["tally:AAA"])
    times, digests, complete = stage.decode_handled(handled)
    assert len(times) == len(digests) == 3 and not complete
    assert list(digests) == [stage.record_digest(Bar.parse(bar_json("AAA", i))) for i in (3, 4, 5)]
    snap = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
    assert bytes(snap["handled"]) == handled


def test_invalid_message_goes_to_dlq_with_reason_and_is_not_retried(world):
    payloads = interleaved(3)
    payloads.insert(2, ("AAA", bar_json("AAA", 7, high=50.0)))  # high below open/close
    payloads.insert(4, ("AAA", b"not json at all"))
    response = world.runner.process(event_of(payloads))
    assert failures(response) == []
    assert len(world.dlq.letters) == 2
    record, reason, source = world.dlq.letters[0]
    assert source == "tally"
    assert "high=50.0" in reason and "Bar" in reason
    assert record["kinesis"]["sequenceNumber"] == "1002"
    assert "invalid Bar" in world.dlq.letters[1][1]
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3]
    assert world.stats.rejected == 2


def test_malformed_kinesis_record_goes_to_dlq(world):
    event = event_of(interleaved(1))
    event["Records"][0]["kinesis"]["data"] = "%%% not base64 %%%"
    del event["Records"][1]["eventSource"]
    response = world.runner.process(event)
    assert failures(response) == []
    assert len(world.dlq.letters) == 2
    assert all(reason.startswith("invalid Kinesis record") for reason in world.dlq.reasons)


def test_permanent_error_raised_by_step_is_dead_lettered(world):
    payloads = interleaved(2) + [("AAA", bar_json("AAA", 2, volume=13.0)), ("AAA", bar_json("AAA", 3))]
    response = world.runner.process(event_of(payloads))
    assert failures(response) == []
    assert world.dlq.reasons == ["volume 13 is unlucky for AAA"]
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3]


def test_unexpected_step_error_fails_all_of_that_symbols_records(world):
    """A bug in the step may leave its state half-changed (the features engine updates in
    place), so nothing of that symbol's batch is kept: all of its records come again."""
    payloads = interleaved(2) + [("AAA", bar_json("AAA", 2, volume=666.0)), ("BBB", bar_json("BBB", 2)),
                                 ("AAA", bar_json("AAA", 3))]
    event = event_of(payloads)
    response = world.runner.process(event)
    assert failures(response) == ["1000", "1002", "1004", "1006"]  # every AAA record
    assert "tally:AAA" not in world.cache.data  # no state of AAA written
    assert [o.symbol for o in world.outputs()] == ["BBB"] * 3  # and none of its outputs sent
    assert world.state("BBB")[1]["count"] == 3
    world.step.crash_on_volume = None  # the bug is fixed; the ESM redelivers from seq 1000
    retry = kinesis_event([r for r in event["Records"] if int(r["kinesis"]["sequenceNumber"]) >= 1000])
    assert failures(world.runner.process(retry)) == []
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3, 4]
    assert [o.count for o in world.outputs() if o.symbol == "BBB"] == [1, 2, 3]


def test_a_message_dated_far_ahead_of_its_arrival_is_dead_lettered(world):
    """Applied, a mistyped future date would make every later genuine bar look like a
    redelivery: the symbol would stop without a word. It goes to the DLQ instead."""
    arrival = (T0 + timedelta(days=10)).timestamp()
    future = bar_json("AAA", 200)  # 190 days after its arrival
    records = [
        kinesis_record(data, partition_key="AAA", sequence_number=str(1000 + n), stream="et-test-in", arrival=arrival)
        for n, data in enumerate([bar_json("AAA", 0), future, bar_json("AAA", 1)])
    ]
    response = world.runner.process(kinesis_event(records))
    assert failures(response) == []
    assert len(world.dlq.reasons) == 1 and "after the record reached the stream" in world.dlq.reasons[0]
    assert [o.count for o in world.outputs()] == [1, 2]  # the genuine bars on either side are applied
    # within the allowance (clock skew) a bar is applied
    near = kinesis_record(bar_json("AAA", 10), partition_key="AAA", sequence_number="1003", stream="et-test-in",
                          arrival=(T0 + timedelta(days=10)).timestamp() - 200.0)
    assert failures(world.runner.process(kinesis_event([near]))) == []
    assert [o.count for o in world.outputs()] == [1, 2, 3]


@pytest.mark.parametrize("broken", ["publisher.put", "bus.publish", "snapshots.put_item"])
def test_transient_failure_fails_the_symbols_and_a_retry_completes(world, broken):
    holder, operation = broken.split(".")
    getattr(world, holder).failures.fail(operation)
    event = event_of(interleaved(3))
    response = world.runner.process(event)
    expected = [str(1000 + n) for n in range(6)] if holder != "snapshots" else ["1000", "1002", "1004"]
    assert failures(response) == expected
    response = world.runner.process(event)
    assert failures(response) == []
    for symbol in ("AAA", "BBB"):
        assert world.state(symbol)[1]["count"] == 3
    # nothing lost, and after the retry each symbol's state was applied exactly once
    assert [o.count for o in world.outputs() if o.symbol == "BBB"][-3:] == [1, 2, 3]
    assert {(e.symbol, e.count) for e in world.bus.events} == {("AAA", 3), ("BBB", 3)}  # at least once


# ---- the cache is best effort (a cache, never the only copy) ---------------------------------


class Recorded:
    """A MetricsSink that keeps what it was given."""

    def __init__(self) -> None:
        self.metrics: list[tuple[str, str, float]] = []

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.metrics.append((name, unit, value))

    def count(self, name: str) -> float:
        return sum(v for n, _, v in self.metrics if n == name)


def snapshot_of(world, symbol: str) -> tuple[int, dict]:
    item = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": symbol})
    return item["version"], json.loads(item["state"])


def test_a_cache_that_cannot_be_read_fails_no_record_the_states_come_from_the_snapshots(world):
    """Redis down (every call refused) while DynamoDB is fine: the stage goes on from the
    snapshots — nothing is reported failed, so no bar is ever skipped by the mapping's retries."""
    world.runner.metrics = metrics = Recorded()
    world.runner.process(event_of(interleaved(3)))  # cached and snapshotted at version 1
    before = dict(world.cache.data)
    world.cache.failures.fail("get_many", 100)
    world.cache.failures.fail("set_many", 100)
    world.cache.failures.fail("delete", 100)
    outage = [(s, bar_json(s, i)) for i in range(3, 6) for s in ("AAA", "BBB")] + [("CCC", bar_json("CCC", 0))]
    assert failures(world.runner.process(event_of(outage, first_seq=2000))) == []
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3, 4, 5, 6]
    assert [o.count for o in world.outputs() if o.symbol == "CCC"] == [1]  # a new symbol starts as usual
    assert snapshot_of(world, "AAA") == (2, {"symbol": "AAA", "last": timestamp_ns(T0 + timedelta(days=5)),
                                             "count": 6, "total": pytest.approx(615.0)})
    assert snapshot_of(world, "CCC")[0] == 1
    assert world.cache.failures.raised == {"get_many": 1}  # the batch left the down cache alone after the read
    assert world.cache.data == before
    assert world.stats.cache_unavailable == 1 and metrics.count("tally_cache_unavailable") == 1
    assert metrics.count("tally_failed_items") == 0

    # Redis is back, still holding version 1: found behind the snapshot and replaced, never computed from
    world.cache.failures.pending.clear()
    assert failures(world.runner.process(event_of(interleaved(7), first_seq=3000))) == []
    assert world.stats.stale_cache == 2  # AAA and BBB (CCC was never cached: a miss)
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3, 4, 5, 6, 7]
    assert world.state("AAA") == snapshot_of(world, "AAA") and world.state("AAA")[0] == 3


def test_a_write_back_failing_after_the_snapshots_committed_fails_no_record(world):
    world.runner.metrics = metrics = Recorded()
    world.runner.process(event_of(interleaved(2)))  # version 1 in cache and snapshots
    world.cache.failures.fail("set_many")
    assert failures(world.runner.process(event_of(interleaved(4), first_seq=2000))) == []
    assert snapshot_of(world, "BBB")[1]["count"] == 4 and world.state("BBB")[0] == 1  # the cache lost its copy
    assert world.stats.cache_unavailable == 1 and metrics.count("tally_cache_unavailable") == 1
    # the next batch finds the cached version behind the snapshot and reloads it: nothing recomputed
    assert failures(world.runner.process(event_of(interleaved(5), first_seq=3000))) == []
    assert world.stats.stale_cache == 2
    assert [o.count for o in world.outputs() if o.symbol == "BBB"] == [1, 2, 3, 4, 5]
    assert world.state("BBB") == snapshot_of(world, "BBB") == (3, world.state("BBB")[1])


def test_with_the_cache_and_the_snapshot_table_down_the_records_fail_for_a_retry(world):
    world.runner.process(event_of(interleaved(2)))
    world.cache.failures.fail("get_many")
    world.snapshots.failures.fail("get_item")
    event = event_of([("AAA", bar_json("AAA", 2)), ("BBB", bar_json("BBB", 2))], first_seq=5000)
    assert failures(world.runner.process(event)) == ["5000"]  # AAA's snapshot read failed; BBB's went on
    assert snapshot_of(world, "BBB")[1]["count"] == 3
    assert failures(world.runner.process(event)) == []
    assert snapshot_of(world, "AAA")[1]["count"] == 3 and world.stats.duplicates == 1


@pytest.mark.parametrize("operation", ["get_many", "set_many"])
def test_without_snapshots_a_cache_failure_still_fails_the_symbols(world, operation):
    """Without snapshots (tests, backtests) the cache is the only copy: no state to fall back on."""
    runner = KinesisStageRunner(world.step, cache=world.cache, dlq=world.dlq, stats=StageStats())
    world.cache.failures.fail(operation)
    event = event_of(interleaved(2))
    assert failures(runner.process(event)) == ["1000", "1001", "1002", "1003"]
    assert failures(runner.process(event)) == []
    assert world.state("AAA")[1]["count"] == 2


def test_with_the_cache_down_two_writers_still_cannot_both_commit(world):
    """The snapshot's version condition holds whatever the cache does: a writer that loaded the
    snapshot (cache down) and lost the race fails, and its retry computes from the winner's state."""
    world.runner.process(event_of(interleaved(2)))
    world.cache.failures.fail("get_many", 2)
    _race_once_after(world, "get_item")  # the other container commits right after our read
    event = event_of([("AAA", bar_json("AAA", 2)), ("AAA", bar_json("AAA", 3))], first_seq=5000)
    assert failures(world.runner.process(event)) == ["5000", "5001"]
    assert snapshot_of(world, "AAA")[0] == 2
    assert failures(world.runner.process(event)) == []  # the cache still down: from the winner's snapshot
    assert snapshot_of(world, "AAA") == (3, {"symbol": "AAA", "last": timestamp_ns(T0 + timedelta(days=3)),
                                             "count": 4, "total": pytest.approx(406.0)})


def test_a_rewritten_snapshot_goes_above_the_cached_version_so_a_lost_write_back_is_found_behind(world):
    """Reseeding (the snapshot lost writes the cache holds) used to write the snapshot's version + 1,
    below the cached one: with the write-back lost, the old entry would pass for the newer state."""
    world.runner.process(event_of(interleaved(2)))
    world.runner.process(event_of(interleaved(3), first_seq=2000))  # version 2 cached and stored
    del world.snapshots.tables["stage-state"][("tally", "AAA")]  # the snapshot lost its writes
    world.cache.failures.fail("set_many")
    assert failures(world.runner.process(event_of([("AAA", bar_json("AAA", 3))], first_seq=3000))) == []
    assert world.stats.reseeded == 1
    assert snapshot_of(world, "AAA")[0] == 3 and snapshot_of(world, "AAA")[1]["count"] == 4
    assert world.state("AAA")[0] == 2  # the write-back was lost: the cache holds the older state
    assert failures(world.runner.process(event_of([("AAA", bar_json("AAA", 4))], first_seq=4000))) == []
    assert world.stats.stale_cache == 1 and world.stats.reseeded == 1  # found behind, not reseeded again
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3, 4, 5]
    assert world.state("AAA") == snapshot_of(world, "AAA") and world.state("AAA")[1]["count"] == 5


def test_cache_loss_is_repaired_from_the_snapshot(world):
    world.runner.process(event_of(interleaved(3)))
    world.cache.data.clear()
    world.runner.process(event_of(interleaved(4), first_seq=3000))
    assert world.state("AAA") == (2, {"symbol": "AAA", "last": timestamp_ns(T0 + timedelta(days=3)),
                                      "count": 4, "total": pytest.approx(406.0)})
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 2, 3, 4]


def _other_writer_moves_aaa_to_version_2(world) -> None:
    """Another container processed AAA's next bar and snapshotted version 2."""
    other = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
    ahead = {"symbol": "AAA", "last": timestamp_ns(T0 + timedelta(days=2)), "count": 3, "total": 303.0}
    world.snapshots.put_item("stage-state", {**other, "version": 2, "state": json.dumps(ahead).encode()},
                             expected_version=1)


def _race_once_after(world, method: str) -> None:
    """The snapshot store's ``method`` answers once, as before, and then the other container
    moves AAA to version 2 (:func:`_other_writer_moves_aaa_to_version_2`); later calls are plain."""
    original = getattr(world.snapshots, method)

    def racing(*args):
        answer = original(*args)
        setattr(world.snapshots, method, original)
        _other_writer_moves_aaa_to_version_2(world)
        return answer

    setattr(world.snapshots, method, racing)


def test_a_cached_state_behind_its_snapshot_is_replaced_before_anything_is_computed(world):
    world.runner.process(event_of(interleaved(2)))
    _other_writer_moves_aaa_to_version_2(world)  # our cache still holds version 1
    emitted = len(world.outputs())
    event = event_of([("AAA", bar_json("AAA", 2)), ("AAA", bar_json("AAA", 3))], first_seq=5000)
    assert failures(world.runner.process(event)) == []
    version, state = world.state("AAA")
    assert version == 3 and state["count"] == 4  # the other writer's bar counted once
    assert world.runner.stats.stale_cache == 1 and world.runner.stats.duplicates == 1
    assert len(world.outputs()) == emitted + 1  # only bar 3: nothing from the old state


@pytest.mark.parametrize("lost", ["deleted", "restored"])
def test_a_snapshot_behind_its_cached_state_is_rewritten_from_the_cache_not_restarted(world, lost):
    """The cache is written only after the snapshot, so a cache ahead of it means the snapshots
    lost writes (an item deleted, an older backup restored): the newer cached state is kept and
    written over the snapshot instead of the symbol silently starting over."""
    world.runner.process(event_of(interleaved(2)))
    table = world.snapshots.tables["stage-state"]
    backup = dict(table[("tally", "AAA")])  # version 1: bars 0-1
    world.runner.process(event_of([("AAA", bar_json("AAA", 2))], first_seq=3000))  # version 2
    if lost == "deleted":
        del table[("tally", "AAA")]
    else:
        table[("tally", "AAA")] = backup  # restored from the older backup
    event = event_of([("AAA", bar_json("AAA", 2)), ("AAA", bar_json("AAA", 3))], first_seq=5000)
    assert failures(world.runner.process(event)) == []
    version, state = world.state("AAA")
    assert state["count"] == 4  # bars 0-2 kept (bar 2 a duplicate), bar 3 applied once
    assert world.runner.stats.reseeded == 1 and world.runner.stats.duplicates == 1
    stored = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
    assert stored["version"] == version and json.loads(stored["state"])["count"] == 4
    # from then on cache and snapshot agree again: nothing more to rewrite
    world.runner.process(event_of([("AAA", bar_json("AAA", 4))], first_seq=6000))
    assert world.runner.stats.reseeded == 1 and world.state("AAA")[1]["count"] == 5


def test_a_snapshot_behind_its_cached_state_is_rewritten_even_by_a_batch_of_duplicates(world):
    world.runner.process(event_of(interleaved(3)))
    del world.snapshots.tables["stage-state"][("tally", "AAA")]
    assert failures(world.runner.process(event_of([("AAA", bar_json("AAA", 2))], first_seq=5000))) == []
    assert world.runner.stats.duplicates == 1 and world.runner.stats.applied == 6
    stored = world.snapshots.get_item("stage-state", {"pk": "tally", "sk": "AAA"})
    assert stored is not None and json.loads(stored["state"])["count"] == 3
    assert stored["version"] == world.state("AAA")[0]


def test_a_writer_that_races_past_the_version_check_loses_the_put_and_the_retry_reloads(world):
    world.runner.process(event_of(interleaved(2)))
    _race_once_after(world, "get_versions")  # the other container writes right after our check
    event = event_of([("AAA", bar_json("AAA", 2)), ("AAA", bar_json("AAA", 3))], first_seq=5000)
    assert failures(world.runner.process(event)) == ["5000", "5001"]
    assert "tally:AAA" not in world.cache.data  # dropped, so the retry reads the snapshot
    assert failures(world.runner.process(event)) == []
    version, state = world.state("AAA")
    assert version == 3 and state["count"] == 4


def test_unreadable_snapshot_versions_fail_the_batch_for_a_retry(world):
    world.runner.process(event_of(interleaved(2)))
    world.snapshots.failures.fail("get_versions")
    event = event_of([("AAA", bar_json("AAA", 2)), ("BBB", bar_json("BBB", 2))], first_seq=5000)
    assert failures(world.runner.process(event)) == ["5000", "5001"]
    assert failures(world.runner.process(event)) == []


def test_unreachable_dlq_reports_the_bad_record_as_failed(world):
    world.dlq.failures.fail("send")
    payloads = [("AAA", bar_json("AAA", 0)), ("AAA", b"{}")]
    assert failures(world.runner.process(event_of(payloads))) == ["1001"]


def test_event_without_records_is_rejected_loudly(world):
    with pytest.raises(InvalidMessageError, match="Records"):
        world.runner.process({"nothing": []})


def test_without_snapshots_the_cache_is_the_state(world):
    runner = KinesisStageRunner(world.step, cache=world.cache, dlq=world.dlq, stats=StageStats())
    assert failures(runner.process(event_of(interleaved(2)))) == []
    assert world.state("BBB")[1]["count"] == 2
    assert world.snapshots.items("stage-state") == []


# ---- permanent rejections of outputs and events --------------------------------------------


class SizeLimitedStream(MemoryStreamPublisher):
    """Like Kinesis' publisher: a call holding an oversized record raises DataError, sends nothing."""

    def __init__(self, too_big: set[tuple[str, int]]) -> None:
        super().__init__()
        self.too_big, self.calls = too_big, 0

    def put(self, stream, records):
        self.calls += 1
        for key, data in records:
            if (key, json.loads(data)["count"]) in self.too_big:
                raise DataError(f"Kinesis record for partition key {key!r} is 2000000 bytes; the limit is 1048576")
        super().put(stream, records)


class SizeLimitedBus(MemoryEventBus):
    """Like EventBridge's publisher: an oversized event raises DataError."""

    def __init__(self, too_big: set[tuple[str, int]]) -> None:
        super().__init__()
        self.too_big = too_big

    def publish(self, events):
        for e in events:
            if (e.symbol, e.count) in self.too_big:
                raise DataError("Milestone event is 300000 bytes; EventBridge accepts at most 262144")
        super().publish(events)


def test_oversized_output_dead_letters_only_its_input_record(world):
    world.publisher = SizeLimitedStream(too_big={("AAA", 2)})
    world.runner = world.make_runner()
    response = world.runner.process(event_of(interleaved(4)))
    assert failures(response) == []  # not a batch failure: a retry could never publish it
    [(record, reason, source)] = world.dlq.letters
    assert record["kinesis"]["sequenceNumber"] == "1002" and source == "tally"
    assert "outputs of this record cannot be published" in reason and "partition key 'AAA'" in reason
    # the others went out, still in arrival order
    assert [(o.symbol, o.count) for o in world.outputs()] == [
        ("AAA", 1), ("BBB", 1), ("BBB", 2), ("AAA", 3), ("BBB", 3), ("AAA", 4), ("BBB", 4)]
    assert world.state("AAA")[1]["count"] == 4 and world.state("BBB")[1]["count"] == 4
    assert {(e.symbol, e.count) for e in world.bus.events} == {("AAA", 3), ("BBB", 3)}
    assert world.stats.rejected == 1 and world.stats.outputs == 7
    assert world.publisher.calls < 8  # split in halves, not one call per record


def test_a_record_whose_outputs_are_dead_lettered_publishes_no_event(world):
    """Its events would announce outputs that exist nowhere (the meta-agent's AgentSwitched naming
    an order intent that never reached the queue); the reason says the record was applied."""
    world.publisher = SizeLimitedStream(too_big={("AAA", 3)})
    world.runner = world.make_runner()
    assert failures(world.runner.process(event_of(interleaved(6)))) == []
    [(record, reason, _)] = world.dlq.letters
    assert record["kinesis"]["sequenceNumber"] == "1004"
    assert "was applied to the state of AAA (a redelivery of it is skipped as handled)" in reason
    assert [(e.symbol, e.count) for e in world.bus.events] == [("BBB", 3), ("AAA", 6), ("BBB", 6)]
    assert world.stats.events == 3


def test_oversized_event_dead_letters_only_its_input_record(world):
    world.bus = SizeLimitedBus(too_big={("BBB", 3)})
    world.runner = world.make_runner()
    response = world.runner.process(event_of(interleaved(6)))
    assert failures(response) == []
    assert [r["kinesis"]["sequenceNumber"] for r, _, _ in world.dlq.letters] == ["1005"]
    assert "events of this record cannot be published" in world.dlq.reasons[0]
    assert [(e.symbol, e.count) for e in world.bus.events] == [("AAA", 3), ("AAA", 6), ("BBB", 6)]
    assert len(world.outputs()) == 12


def test_rejected_output_with_unreachable_dlq_fails_only_that_symbol(world):
    world.publisher = SizeLimitedStream(too_big={("AAA", 2)})
    world.dlq.failures.fail("send")
    world.runner = world.make_runner()
    event = event_of(interleaved(3))
    response = world.runner.process(event)
    assert failures(response) == ["1000", "1002", "1004"]  # AAA retried from its first record
    assert [o.count for o in world.outputs() if o.symbol == "BBB"] == [1, 2, 3]
    assert "tally:AAA" not in world.cache.data and world.state("BBB")[1]["count"] == 3
    # on the retry the DLQ is back: the oversized output's input is dead-lettered, the rest goes out
    assert failures(world.runner.process(event)) == []
    assert [o.count for o in world.outputs() if o.symbol == "AAA"] == [1, 1, 3]  # 1 re-emitted: harmless
    assert world.dlq.letters[0][0]["kinesis"]["sequenceNumber"] == "1002"


def test_transient_error_while_splitting_fails_only_the_symbols_of_that_call(world):
    world.publisher = SizeLimitedStream(too_big={("AAA", 1)})
    world.publisher.failures.fail("put", times=1)  # the first call that gets past the size check
    world.runner = world.make_runner()
    event = event_of(interleaved(2))
    # whole batch: DataError; [AAA1, BBB1]: DataError; AAA1 dead-lettered; BBB1: transient error
    assert failures(world.runner.process(event)) == ["1001", "1003"]  # BBB from its first record
    assert [r["kinesis"]["sequenceNumber"] for r, _, _ in world.dlq.letters] == ["1000"]
    assert [(o.symbol, o.count) for o in world.outputs()] == [("AAA", 2)]  # BBB2 held back: BBB1 failed
    assert "tally:BBB" not in world.cache.data and world.state("AAA")[1]["count"] == 2
    retry = kinesis_event([r for r in event["Records"] if r["kinesis"]["sequenceNumber"] in ("1001", "1003")])
    assert failures(world.runner.process(retry)) == []
    assert [(o.symbol, o.count) for o in world.outputs()] == [("AAA", 2), ("BBB", 1), ("BBB", 2)]


def test_dlq_refusing_a_record_reports_it_failed_instead_of_failing_the_batch(world, monkeypatch):
    def refuse(record, reason, *, source=""):
        raise DataError("SQS features-dlq rejected 1 of 1 messages as the sender's fault")

    monkeypatch.setattr(world.dlq, "send", refuse)
    payloads = [("AAA", bar_json("AAA", 0)), ("AAA", b"{}"), ("BBB", bar_json("BBB", 0))]
    assert failures(world.runner.process(event_of(payloads))) == ["1001"]
    assert [o.symbol for o in world.outputs()] == ["AAA", "BBB"]


def test_sqs_sender_fault_on_an_output_dead_letters_its_input(world):
    from ensemble_trader.adapters.aws.sqs import SqsPublisher
    from ensemble_trader.runtime.settings import Settings
    from ensemble_trader.runtime.stage import QueueSink

    class Sqs:
        def __init__(self) -> None:
            self.bodies: list[str] = []

        def get_queue_url(self, QueueName):  # noqa: N803 (boto3's names)
            return {"QueueUrl": f"https://sqs/{QueueName}"}

        def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 (boto3's names)
            bad = {e["Id"] for e in Entries if json.loads(e["MessageBody"])["count"] == 2}
            self.bodies += [e["MessageBody"] for e in Entries if e["Id"] not in bad]
            return {"Failed": [{"Id": i, "SenderFault": True, "Code": "InvalidParameterValue", "Message": "too long"}
                               for i in bad]}

    sqs = Sqs()
    publisher = SqsPublisher(sqs, settings=Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused"),
                             sleep=lambda s: pytest.fail("a sender fault is not retried"))
    runner = KinesisStageRunner(world.step, cache=world.cache, dlq=world.dlq, stats=StageStats(),
                                sink=QueueSink(publisher, "order-intents.fifo", lambda m: f"{m.symbol}-{m.count}"))
    assert failures(runner.process(event_of([("AAA", bar_json("AAA", i)) for i in range(3)]))) == []
    counts = [json.loads(b)["count"] for b in sqs.bodies]
    assert 2 not in counts and set(counts) == {1, 3}  # 1 and 3 resent while splitting: harmless
    assert [r["kinesis"]["sequenceNumber"] for r, _, _ in world.dlq.letters] == ["1001"]
    assert "InvalidParameterValue: too long" in world.dlq.reasons[0]


def test_a_reseed_that_loses_a_race_keeps_the_cached_state_for_the_retry(world):
    """After lost snapshot writes the cache may hold the only copy of the newest state: losing
    the reseed's conditional write must not drop it."""
    world.runner.process(event_of(interleaved(3)))
    table = world.snapshots.tables["stage-state"]
    del table[("tally", "AAA")]
    put = world.snapshots.put_item

    def racing(name, item, *, expected_version=None):  # another container writes first, once
        world.snapshots.put_item = put
        put(name, {**item, "version": 1, "state": json.dumps({"symbol": "AAA", "last": 0, "count": 0,
                                                               "total": 0.0}).encode()}, expected_version=0)
        return put(name, item, expected_version=expected_version)

    world.snapshots.put_item = racing
    event = event_of([("AAA", bar_json("AAA", 3))], first_seq=5000)
    assert failures(world.runner.process(event)) == ["5000"]
    assert "tally:AAA" in world.cache.data and world.state("AAA")[1]["count"] == 3


def test_a_snapshot_dynamodb_refuses_fails_only_its_symbol(world, monkeypatch):
    """A state over DynamoDB's 400 KB item limit is a DataError from the store: it raised out of
    process() and failed the whole invocation, every symbol of the batch with it."""
    dump = world.step.dump
    monkeypatch.setattr(world.step, "dump", lambda state: dump(state) + (b" " * 420_000 if state["symbol"] == "AAA" else b""))
    response = world.runner.process(event_of(interleaved(3)))
    assert failures(response) == ["1000", "1002", "1004"]  # AAA's records, for a retry
    assert world.state("BBB")[1]["count"] == 3
    assert "tally:AAA" not in world.cache.data


@pytest.mark.parametrize("read", ["get_versions", "get_item"])
def test_a_snapshot_read_the_store_refuses_fails_the_symbols_not_the_invocation(world, monkeypatch, read):
    """DynamoDB's ValidationException is a DataError now: on a read it escaped process()."""
    world.runner.process(event_of(interleaved(1)))
    if read == "get_item":
        world.cache.data.clear()  # the states must come from the snapshots (else cached versions are compared)

    def refuse(*args, **kwargs):
        raise DataError("stage-state: ValidationException: refused")

    monkeypatch.setattr(world.snapshots, read, refuse)
    response = world.runner.process(event_of(interleaved(3), first_seq=2000))
    assert failures(response) == [str(2000 + n) for n in range(6)]
