"""A regime state that cannot be read is rebuilt from the symbol's regime-history rows.

Before, a snapshot the step could not decode (its cached copy gone or unreadable too) failed
every record of its symbol, batch after batch, until an operator rebuilt the symbol from its
first bar in all three stages (docs/runbook.md section 5). The regime stage's history table
holds every applied bar's features and what was published for it, so the runtime's
``start_over`` hook (``regime_registry.StateRebuild``) replays them instead: the outputs and
events after the rebuild are those of a run whose state was never lost."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from ensemble_trader.adapters.memory.fakes import (
    FailureInjector,
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
    MemoryStreamPublisher,
)
from ensemble_trader.domain.errors import StateError
from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.domain.models import MarketState, Regime
from ensemble_trader.domain.regime import HistoryRow, RegimeFilterState, RegimeModel, RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.runtime import regime_registry as registry
from ensemble_trader.runtime.settings import get_settings
from ensemble_trader.runtime.stage import KinesisStageRunner, StreamSink

N_BARS = WARMUP_BARS + 600
CUT = WARMUP_BARS + 450  # the bars before it are applied before the state is damaged
KEY = {"pk": "regime", "sk": "SYN"}


class Store(MemoryKeyValueStore):
    """The in-memory store with the history query the rebuild reads (newest first), counted."""

    def __init__(self, failures: FailureInjector | None = None) -> None:
        super().__init__(failures)
        self.queries = 0

    def query(self, table, key, value, limit=None, newest_first=False):
        self.queries += 1
        rows = sorted((r for r in self.items(table) if r[key] == value), key=lambda r: r["timestamp"],
                      reverse=newest_first)
        return rows[:limit]


@pytest.fixture(scope="module")
def model() -> RegimeModel:
    return RegimeModel.load(get_settings().models_dir / "regime")


@pytest.fixture(scope="module")
def vectors():
    engine = FeatureEngine("SYN")
    return [engine.update(bar) for bar in generate("realistic", N_BARS, 7, symbol="SYN").series.bars()]


class Stage:
    """The regime stage as the Lambda wires it, over in-memory fakes."""

    def __init__(self, model: RegimeModel, rebuild: bool = True, rows: int = registry.REBUILD_ROWS) -> None:
        self.store, self.cache, self.dlq = Store(), MemoryCache(), MemoryDeadLetters()
        self.bus_failures = FailureInjector()
        self.bus, self.stream = MemoryEventBus(self.bus_failures), MemoryStreamPublisher()
        self.step = RegimeStep(model)
        if rebuild:
            self.step.start_over = registry.StateRebuild(self.step, self.store, self.store, rows=rows)
        sink = registry.MarketStateSink(StreamSink(self.stream, "market-state"), self.store)
        self.runner = KinesisStageRunner(self.step, cache=self.cache, dlq=self.dlq, sink=sink, events=self.bus,
                                         snapshots=self.store)
        self.sequence = 0

    def feed(self, vectors) -> dict:
        records = []
        for v in vectors:
            self.sequence += 1
            records.append(kinesis_record(v.model_dump_json().encode(), partition_key=v.symbol,
                                          sequence_number=f"{self.sequence:012d}", stream="features",
                                          arrival=v.timestamp.timestamp() + 1))
        return self.runner.process(kinesis_event(records))

    def outputs(self) -> list[tuple]:
        states = [MarketState.parse(body) for _, body in self.stream.streams["market-state"]]
        return [(s.timestamp, s.regime.regime, s.regime.bars_in_regime, s.regime.probabilities) for s in states]

    def events(self) -> list[tuple]:
        return [(e.event_id, e.from_regime, e.to_regime, e.confidence) for e in self.bus.events]

    def damage(self, state: bytes, drop_cache: bool = True) -> None:
        item = dict(self.store.get_item("stage-state", KEY))
        item["state"] = state
        self.store.put_item("stage-state", item)
        if drop_cache:
            self.cache.delete("regime:SYN")

    def stored_state(self) -> dict:
        return json.loads(bytes(self.store.get_item("stage-state", KEY)["state"]))


def feed_in_batches(stage: Stage, vectors, size: int = 100) -> None:
    for i in range(0, len(vectors), size):
        assert stage.feed(vectors[i : i + size]) == {"batchItemFailures": []}


@pytest.fixture(scope="module")
def reference(model, vectors):
    """Outputs and events of a run whose state is never lost."""
    stage = Stage(model)
    feed_in_batches(stage, vectors[:CUT])
    feed_in_batches(stage, vectors[CUT:])
    return stage.outputs(), stage.events()


def same_outputs(got: list[tuple], want: list[tuple]) -> None:
    assert [o[:3] for o in got] == [o[:3] for o in want]
    np.testing.assert_allclose([o[3] for o in got], [o[3] for o in want], rtol=0, atol=1e-12)


@pytest.mark.parametrize("damaged", [b"{not json", b'{"format": 1, "symbol": "SYN"', b"\xff\xfe"])
def test_an_unreadable_snapshot_without_a_cached_copy_is_rebuilt_from_the_history(model, vectors, reference,
                                                                                   damaged, caplog):
    stage = Stage(model)
    feed_in_batches(stage, vectors[:CUT])
    stage.damage(damaged)
    restarted = stage.runner.stats.restarted  # process-wide per stage
    with caplog.at_level(logging.WARNING):
        feed_in_batches(stage, vectors[CUT:])  # before: every record of SYN failed, batch after batch
    same_outputs(stage.outputs(), reference[0])
    assert stage.events() == reference[1]
    assert stage.dlq.letters == []
    assert stage.runner.stats.restarted == restarted + 1
    warning = next(r.getMessage() for r in caplog.records if "started over" in r.getMessage())
    assert "stored state refused (cannot decode regime filter state" in warning  # the reason
    assert f"rebuilt from {CUT} regime-history rows" in warning
    assert stage.stored_state()["last_ns"] is not None  # the snapshot holds a readable state again


def test_a_window_shorter_than_the_history_gives_the_same_outputs(model, vectors, reference):
    """The filter forgets its start: 300 of the 623 stored rows rebuild it to the last digit here."""
    stage = Stage(model, rows=300)
    feed_in_batches(stage, vectors[:CUT])
    stage.damage(b"{not json")
    feed_in_batches(stage, vectors[CUT:])
    same_outputs(stage.outputs(), reference[0])
    assert stage.events() == reference[1]


def test_without_the_hook_the_symbol_is_blocked(model, vectors):
    """What the rebuild replaces (the stage before it): the records fail and are retried."""
    stage = Stage(model, rebuild=False)
    feed_in_batches(stage, vectors[:CUT])
    stage.damage(b"{not json")
    for _ in range(2):
        assert len(stage.feed(vectors[CUT : CUT + 10])["batchItemFailures"]) == 10


@pytest.mark.parametrize("garbage", [False, True])
def test_an_uncommitted_attempts_rows_are_not_replayed(model, vectors, reference, garbage):
    """An attempt that wrote its history rows and failed at the bus before committing: its rows
    are past the last bar the refused state names (or, for bytes that name none, the sequence
    the runner stored beside the snapshot), so they are not replayed, and the retry publishes
    the events that attempt never did."""
    stage = Stage(model)
    feed_in_batches(stage, vectors[:CUT])
    n_events = len(stage.events())
    batch = vectors[CUT:]
    stage.bus_failures.fail("publish", times=1)
    assert stage.feed(batch)["batchItemFailures"]  # rows written, events not published, state not committed
    assert len(stage.store.items("regime-history")) == N_BARS and len(stage.events()) == n_events
    damaged = stage.stored_state()
    damaged["pending_count"] = -1  # refused, but its last_ns is readable
    stage.damage(b"{not json" if garbage else json.dumps(damaged).encode())
    assert stage.feed(batch) == {"batchItemFailures": []}
    assert stage.events() == reference[1]
    reference_states = reference[0]
    outputs = stage.outputs()  # the failed attempt's outputs went out, then the retry's again
    same_outputs(outputs[:CUT] + outputs[-len(batch):], reference_states)


def test_a_corrupt_cached_copy_is_still_repaired_from_its_snapshot(model, vectors, reference):
    stage = Stage(model)
    feed_in_batches(stage, vectors[:CUT])
    entry = stage.cache.data["regime:SYN"]
    stage.cache.data["regime:SYN"] = entry[:-40] + b"#" * 40  # the envelope intact, the state not
    queries, restarted = stage.store.queries, stage.runner.stats.restarted
    feed_in_batches(stage, vectors[CUT:])
    same_outputs(stage.outputs(), reference[0])
    assert stage.store.queries == queries and stage.runner.stats.restarted == restarted  # no history read


def test_without_history_rows_the_refusal_stays_and_says_why(model, vectors, caplog):
    stage = Stage(model)
    feed_in_batches(stage, vectors[:CUT])
    stage.store.tables[next(t for t in stage.store.tables if t.endswith("regime-history"))].clear()
    stage.damage(b"{not json")
    with caplog.at_level(logging.ERROR):
        assert len(stage.feed(vectors[CUT : CUT + 5])["batchItemFailures"]) == 5
    assert "not rebuilt from regime-history: no regime-history rows of SYN" in caplog.text


def test_rebuild_reports_what_the_last_row_published(model, vectors):
    """Where the replay alone holds another regime (the rule's margin makes the reported regime
    depend on where the replay starts), the rebuilt state reports the last row's regime and bars,
    so the next change goes out from the regime consumers saw."""
    step = RegimeStep(model)
    state, rows = None, []
    for v in vectors[:CUT]:
        state, out, _ = step.apply(state, v)
        est = out[0].regime
        rows.append(HistoryRow(int(v.timestamp.timestamp() * 1e9), v.ready, dict(v.values), est.regime,
                               est.bars_in_regime, est.model_version))
    rebuilt, note = step.rebuild("SYN", rows)
    assert (rebuilt.regime, rebuilt.bars_in_regime, rebuilt.last_ns) == (state.regime, state.bars_in_regime,
                                                                         state.last_ns)
    np.testing.assert_array_equal(rebuilt.log_alpha, state.log_alpha)
    other = next(r for r in Regime if r is not rows[-1].regime)
    rows[-1] = HistoryRow(rows[-1].ns, True, rows[-1].values, other, 3, rows[-1].model_version)
    rebuilt, note = step.rebuild("SYN", list(reversed(rows)))  # any order
    assert (rebuilt.regime, rebuilt.bars_in_regime, rebuilt.pending) == (other, 3, None)
    assert f"reporting {other.value} held 3 bars, as the last row published (the replay alone reported" in note
    with pytest.raises(StateError, match="no regime-history rows of SYN up to"):
        step.rebuild("SYN", rows, until_ns=rows[0].ns - 1)
    assert isinstance(rebuilt, RegimeFilterState)
