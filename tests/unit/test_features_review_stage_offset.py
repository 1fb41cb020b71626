"""A resent bar that differs only in the UTC offset of its time (review).

The digest covers the time as written (docs/local-stack.md), so the same bar resent as
2024-01-04T19:00:00-05:00 after 2024-01-05T00:00:00Z is dead-lettered as a conflicting record;
the reason said 'with different content', as for a vendor's corrected bar. It now says that the
two differ only in the offset (the digest semantics, the count and the dead letter are kept)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.models import Bar, FeatureVector
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime.features_stage import FeaturesStep
from ensemble_trader.runtime.stage import KinesisStageRunner, StageStats, StreamSink, record_digest

T0 = datetime(2024, 1, 2, tzinfo=UTC)
_seq = [5000]


def _runner():
    dlq, pub = MemoryDeadLetters(), MemoryStreamPublisher()
    runner = KinesisStageRunner(FeaturesStep(), cache=MemoryCache(), dlq=dlq, sink=StreamSink(pub, "features"),
                                snapshots=MemoryKeyValueStore(), stats=StageStats())
    return runner, dlq, pub


def _bar(i: int, ts: str | None = None, **over) -> bytes:
    c = 100.0 + i
    doc = {"symbol": "SPX", "timestamp": ts or (T0 + timedelta(days=i)).isoformat().replace("+00:00", "Z"),
           "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1000.0 + i}
    return json.dumps(doc | over).encode()


def _event(*datas: bytes) -> dict:
    records = []
    for data in datas:
        _seq[0] += 1
        records.append(kinesis_record(data, partition_key="SPX", sequence_number=str(_seq[0]),
                                      stream="et-test-market-data", arrival=2e9))
    return kinesis_event(records)


@pytest.mark.parametrize(
    ("first", "again", "here", "then"),
    [
        ("2024-01-05T00:00:00Z", "2024-01-04T19:00:00-05:00", "2024-01-04T19:00:00-05:00", "Z (+00:00)"),
        ("2024-01-05T05:45:00+05:45", "2024-01-05T00:00:00Z", "2024-01-05T00:00:00Z", "+05:45"),
        ("2024-01-04T14:30:00-09:30", "2024-01-05T10:30:00+10:30", "2024-01-05T10:30:00+10:30", "-09:30"),
    ],
)
def test_the_reason_says_when_only_the_offset_differs(first, again, here, then):
    runner, dlq, pub = _runner()
    runner.process(_event(*(_bar(i) for i in range(3)), _bar(3, first), _bar(4)))
    vectors = len(pub.streams["features"])
    assert runner.process(_event(_bar(3, again))) == {"batchItemFailures": []}
    assert len(pub.streams["features"]) == vectors  # not applied again
    [reason] = dlq.reasons
    assert reason.startswith("conflicting record: SPX 2024-01-05T00:00:00Z already applied (or dead-lettered) by "
                             "stage features with different content (crc32 ")
    assert f"the two differ only in the UTC offset of timestamp ({here} here, {then} in the one handled first)" in reason
    assert "nothing is lost" in reason
    assert runner.stats.conflicts == 1  # the digest semantics are unchanged: still a conflict


def test_a_correction_written_at_another_offset_is_a_plain_conflict():
    runner, dlq, _ = _runner()
    runner.process(_event(*(_bar(i) for i in range(5))))
    corrected = _bar(3, "2024-01-04T19:00:00-05:00", close=103.5, open=103.0)
    runner.process(_event(corrected))
    [reason] = dlq.reasons
    assert reason.startswith("conflicting record: SPX 2024-01-05T00:00:00Z already applied")
    assert "differ only" not in reason and "nothing is lost" not in reason
    assert reason.endswith("state moves forward only, so this version is not applied")


def test_same_offset_resend_stays_a_duplicate_and_other_spellings_of_utc_too():
    runner, dlq, pub = _runner()
    runner.process(_event(*(_bar(i) for i in range(5))))
    n = len(pub.streams["features"])
    runner.process(_event(_bar(3), _bar(3, "2024-01-05T00:00:00+00:00"), _bar(3, "2024-01-05T00:00:00.000Z")))
    assert dlq.reasons == [] and runner.stats.duplicates == 3 and len(pub.streams["features"]) == n


def test_the_vectors_keep_the_bar_as_first_handled():
    runner, _, pub = _runner()
    runner.process(_event(*(_bar(i) for i in range(5))))
    runner.process(_event(_bar(3, "2024-01-04T19:00:00-05:00"), _bar(5)))
    bars = [FeatureVector.parse(d).bar for _, d in pub.streams["features"]]
    assert [b.timestamp for b in bars] == [T0 + timedelta(days=i) for i in range(6)]
    assert record_digest(bars[3]) == record_digest(Bar.parse(_bar(3)))
