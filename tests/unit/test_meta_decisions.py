"""The meta_agent stage's ``decisions`` rows: first writer wins (the store's ``put_new_items``,
on moto and in the in-memory fake alike), rows written and checked before any intent is queued,
the intent queued is the one its row holds (also against a concurrent writer), keys in UTC, the
regime model version recorded, and the report's "last decision" by time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from botocore.exceptions import ClientError
from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore
from ensemble_trader.adapters.memory import MemoryEventBus, MemoryKeyValueStore
from ensemble_trader.adapters.memory.fakes import MemoryQueuePublisher
from ensemble_trader.backtest.ensemble import run_pipeline
from ensemble_trader.domain.errors import DataError, InfrastructureError
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.reports.meta_agent import last_decision
from ensemble_trader.runtime.meta_agent_stage import DecisionSink, decision_item, decision_time
from ensemble_trader.runtime.regime_registry import history_key
from ensemble_trader.runtime.settings import Settings
from ensemble_trader.runtime.stage import QueueSink

from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model
from tests.unit.test_meta_handler import QUEUE, Container

SETTINGS = Settings(stage="unit", aws_endpoint_url=None, redis_url="redis://unused")


@pytest.fixture(scope="module")
def pipeline():
    series = generate("realistic", 160, seed=2).series
    return run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model()))


@pytest.fixture()
def world():
    return {"queue": MemoryQueuePublisher(), "store": MemoryKeyValueStore(),
            "snapshots": MemoryKeyValueStore(), "bus": MemoryEventBus()}


@pytest.fixture(params=["dynamodb", "memory"])
def decisions_store(request, aws):
    if request.param == "memory":
        return MemoryKeyValueStore()
    import boto3

    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(
        TableName="et-unit-decisions", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "symbol", "KeyType": "HASH"},
                   {"AttributeName": "timestamp", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "symbol", "AttributeType": "S"},
                              {"AttributeName": "timestamp", "AttributeType": "S"}])
    return DynamoKeyValueStore(ddb, settings=SETTINGS)


def _row(i: int, **extra):
    return {"symbol": "S", "timestamp": f"t{i:03d}", "intent_id": f"id{i:03d}", "x": i / 4, **extra}


def test_first_writer_wins_and_a_kept_row_is_returned_not_an_error(decisions_store) -> None:
    store = decisions_store
    rows = [_row(i) for i in range(130)]  # many puts in flight at once
    assert store.put_new_items("decisions", rows, unless_same="intent_id") == [None] * 130
    # a second writer: other content under the same keys and ids is refused, the stored row kept;
    # new keys in the same call are written
    again = [_row(i, x=-1.0) for i in (3, 120)] + [_row(200)]
    kept = store.put_new_items("decisions", again, unless_same="intent_id")
    assert kept == [rows[3], rows[120], None]
    assert store.get_item("decisions", {"symbol": "S", "timestamp": "t003"})["x"] == 0.75
    assert store.get_item("decisions", {"symbol": "S", "timestamp": "t200"}) == _row(200)
    # a row of another intent id under the key (another model version) is replaced
    other = _row(5, intent_id="other", x=9.0)
    assert store.put_new_items("decisions", [other], unless_same="intent_id") == [None]
    assert store.get_item("decisions", {"symbol": "S", "timestamp": "t005"}) == other
    # without unless_same the key alone decides; a key repeated in one call is written once
    assert store.put_new_items("decisions", [_row(5, x=1.0)]) == [other]
    twice = store.put_new_items("decisions", [_row(300), _row(300, x=8.0)])
    assert twice == [None, _row(300)] and store.get_item("decisions", {"symbol": "S", "timestamp": "t300"}) == _row(300)


def test_a_row_the_store_cannot_hold_writes_nothing(decisions_store) -> None:
    with pytest.raises(DataError, match=r"x=1e\+130"):
        decisions_store.put_new_items("decisions", [_row(1), _row(2, x=1e130)])
    assert decisions_store.get_item("decisions", {"symbol": "S", "timestamp": "t001"}) is None
    with pytest.raises(DataError, match=r"410,0\d\d bytes"):
        decisions_store.put_new_items("decisions", [_row(1), _row(2, blob="x" * 410_000)])
    assert decisions_store.get_item("decisions", {"symbol": "S", "timestamp": "t001"}) is None


def test_a_failing_put_lets_the_others_end_and_is_raised(decisions_store, monkeypatch) -> None:
    if not isinstance(decisions_store, DynamoKeyValueStore):
        pytest.skip("DynamoDB's puts only")
    # the rows are independent: one refused by DynamoDB (here: throttled past the client's
    # retries) fails the call, the others are written, and a retry writes the rest
    real = decisions_store._client.put_item

    def put_item(**kwargs):
        if kwargs["Item"]["timestamp"]["S"] == "t007":
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                              "PutItem")
        return real(**kwargs)

    monkeypatch.setattr(decisions_store._client, "put_item", put_item)
    rows = [_row(i) for i in range(20)]
    with pytest.raises(InfrastructureError):
        decisions_store.put_new_items("decisions", rows, unless_same="intent_id")
    written = [decisions_store.get_item("decisions", {"symbol": "S", "timestamp": f"t{i:03d}"}) for i in range(20)]
    assert [w is None for w in written] == [i == 7 for i in range(20)]
    monkeypatch.setattr(decisions_store._client, "put_item", real)
    assert decisions_store.put_new_items("decisions", rows, unless_same="intent_id") == [
        None if i == 7 else rows[i] for i in range(20)]


class HookedPublisher:
    """The shared queue, running ``before`` (once) when this container first sends."""

    def __init__(self, inner, before):
        self.inner, self.before = inner, before

    def send(self, queue, messages):
        if self.before is not None:
            before, self.before = self.before, None
            before()
        self.inner.send(queue, messages)


def _queued_equal_rows(world) -> int:
    """Assert every queued intent is exactly its decision row's; the number checked."""
    rows = {r["intent_id"]: r for r in world["store"].items("decisions")}
    sent = world["queue"].queues[QUEUE]
    queued = [(body, OrderIntent.parse(body)) for _, _, body in sent]
    assert [(i.target_position, i.agent_weights) for _, i in queued] == [
        (rows[i.intent_id]["target_position"], rows[i.intent_id]["agent_weights"]) for _, i in queued
    ]
    for body, intent in queued:
        row = rows[intent.intent_id]
        assert body.decode() == row["intent"]
        assert row["timestamp"] == history_key(intent.timestamp) and row["explanation"] == intent.explanation
    assert len(sent) == len(rows)
    return len(sent)


def test_a_concurrent_writer_queues_the_intent_of_the_row_written_first(pipeline, world) -> None:
    """B passes its version check at snapshot v1, then A commits bars 70..89 (v2), so B computes
    bars 90..99 without them (features are ready from bar 60: the targets differ). Just before B sends its intents, container C computes the same bars
    from v2 and finishes. Whichever order they run in, the FIFO queue (which keeps the first
    message of an intent id) and the decisions table must say the same for every bar."""
    states = pipeline.market_states
    shared = [world["queue"], world["store"], world["snapshots"], world["bus"]]
    a, b, c = Container(*shared), Container(*shared), Container(*shared)
    assert a.send(states[:70]) == {"batchItemFailures": []}
    b.cache.data.update(a.cache.data)  # B's container holds v1 too (its check reads the versions)
    real = b.runner.snapshots.get_versions

    def get_versions(table, keys):
        out = real(table, keys)
        if not a.runner.stats.applied > 70:
            assert a.send(states[70:90], 70) == {"batchItemFailures": []}
        return out

    b.runner.snapshots.get_versions = get_versions
    b.runner.sink.queue.publisher = HookedPublisher(world["queue"], lambda: c.send(states[90:100], 90))
    failed = b.send(states[90:100], 90)["batchItemFailures"]
    assert len(failed) == 10  # B lost the snapshot race to C
    assert c.runner.stats.applied == 10
    assert _queued_equal_rows(world) == 100
    # B's retry: every bar a redelivery now; nothing changes
    assert b.send(states[90:100], 90) == {"batchItemFailures": []}
    assert _queued_equal_rows(world) == 100


def test_a_retry_sends_what_the_first_attempt_stored(pipeline, world) -> None:
    """A queue failure after the rows were written: the retry finds its rows and sends them."""
    c = Container(world["queue"], world["store"], world["snapshots"], world["bus"])
    world["queue"].failures.fail("send")
    assert len(c.send(pipeline.market_states[:70])["batchItemFailures"]) == 70
    assert world["queue"].queues[QUEUE] == [] and len(world["store"].items("decisions")) == 70
    assert c.send(pipeline.market_states[:70]) == {"batchItemFailures": []}
    assert _queued_equal_rows(world) == 70


def test_a_record_whose_row_is_refused_queues_nothing(pipeline, world) -> None:
    """A reference price DynamoDB cannot hold (≥ 1e126): the record is dead-lettered, and its
    intent must not be on the orders queue (the rows are checked before anything is sent)."""
    c = Container(world["queue"], world["store"], world["snapshots"], world["bus"])

    def scaled(s, factor):
        bar = s.features.bar
        bar = bar.model_copy(update={k: getattr(bar, k) * factor for k in ("open", "high", "low", "close")})
        return s.model_copy(update={"features": s.features.model_copy(update={"bar": bar})})

    # closes near 5e125, one near 2e126: within the step's bound on a bar-to-bar move (a factor of
    # 1,000), so the step decides the bar and only its row is refused
    states = [scaled(s, 5e123) for s in pipeline.market_states[:6]]
    states[3] = scaled(pipeline.market_states[3], 2e124)
    assert c.send(states) == {"batchItemFailures": []}
    assert len(c.dlq.reasons) == 1 and "reference_price" in c.dlq.reasons[0]
    queued = {OrderIntent.parse(body).timestamp for _, _, body in world["queue"].queues[QUEUE]}
    assert states[3].timestamp not in queued and len(queued) == 5
    assert _queued_equal_rows(world) == 5


def test_an_intent_sqs_would_refuse_writes_no_row(pipeline) -> None:
    store, queue = MemoryKeyValueStore(), MemoryQueuePublisher()
    sink = DecisionSink(QueueSink(queue, QUEUE, lambda i: i.intent_id), store)
    intent = _intent(datetime(2024, 1, 2, tzinfo=UTC), explanation="x" * 300_000)
    with pytest.raises(DataError, match="over the 262,144-byte limit"):
        sink.emit([intent])
    assert store.items("decisions") == [] and queue.queues[QUEUE] == []


def _intent(when: datetime, **update) -> OrderIntent:
    base = OrderIntent(
        intent_id="intent-0001", strategy_id="ensemble", symbol="DST", timestamp=when,
        target_position=0.25, reference_price=101.5, model_version="agents+meta", regime="BULL",
        confidence=0.8, agent_weights={"a": 0.5, "b": 0.5}, explanation="why",
        explanation_detail={"chosen": "a", "regime_model_version": "r-42"},
    )
    return base.model_copy(update=update)


def test_rows_are_keyed_by_utc_time_and_sort_as_time_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 10, 26, 22, 0, tzinfo=UTC)  # 00:00 CEST; clocks go back at 01:00Z
    times = [(start + timedelta(hours=i)).astimezone(berlin) for i in range(6)]
    now = datetime(2024, 10, 28, tzinfo=UTC)
    rows = [decision_item(_intent(t, intent_id=f"intent-{i:04d}"), now) for i, t in enumerate(times)]
    assert [r["timestamp"] for r in rows] == [t.astimezone(UTC).isoformat() for t in times]
    assert sorted(r["timestamp"] for r in rows) == [r["timestamp"] for r in rows]  # key order = time order
    # instants compared (Python never calls an ambiguous local time equal to one of another zone)
    assert [decision_time(r).timestamp() for r in rows] == [t.timestamp() for t in times]
    # the body queued keeps the bar's own offset
    assert OrderIntent.model_validate_json(rows[3]["intent"]).timestamp.utcoffset() == timedelta(hours=1)
    with pytest.raises(DataError, match="decisions row of 'DST' has timestamp '2024-10-27T02:00:00'"):
        decision_time({"symbol": "DST", "timestamp": "2024-10-27T02:00:00"})


def test_the_report_names_the_latest_decision_by_time_not_by_key_text() -> None:
    """Rows keyed before the keys were UTC carry their bar's own offset: 02:00+01:00 (01:00Z)
    is later than 02:30+02:00 (00:30Z) although its text sorts first."""
    rows = [
        {"symbol": "DST", "timestamp": "2024-10-27T02:30:00+02:00", "explanation": "earlier"},
        {"symbol": "DST", "timestamp": "2024-10-27T02:00:00+01:00", "explanation": "later"},
        {"symbol": "AAA", "timestamp": "2024-10-26T00:00:00+00:00", "explanation": "other symbol"},
    ]
    assert last_decision(rows) == "DST 2024-10-27T01:00:00+00:00: later"
    assert last_decision(rows[2:]) == "AAA 2024-10-26: other symbol"


def test_the_row_records_the_regime_model_version() -> None:
    row = decision_item(_intent(datetime(2024, 1, 2, tzinfo=UTC)), datetime(2024, 1, 3, tzinfo=UTC))
    assert row["regime_model_version"] == "r-42"
    assert json.loads(row["explanation_detail"])["regime_model_version"] == "r-42"


@pytest.mark.parametrize("failing", ["snapshot", "queue"])
def test_a_retried_batch_counts_each_switch_once(failing) -> None:
    """A transient snapshot (or queue) failure makes the mapping retry the batch: its decisions
    are found stored and sent again, which is not a new switch — the switch metric counts each
    once, neither twice (it did after a snapshot failure) nor never (after a queue failure, had it
    been counted at the send); AgentSwitched events are at least once, with deterministic ids."""
    from ensemble_trader.adapters.memory import MemoryCache, MemoryDeadLetters
    from ensemble_trader.domain.errors import InfrastructureError
    from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentStep
    from ensemble_trader.local.events import kinesis_event, kinesis_record
    from ensemble_trader.runtime.meta_agent_stage import BANDIT_TABLE, BanditSnapshots
    from ensemble_trader.runtime.stage import KinesisStageRunner, StageStats

    class Metrics:
        def __init__(self):
            self.values = []

        def add_metric(self, name, unit, value):
            self.values.append((name, value))

    class FlakyOnce(MemoryKeyValueStore):
        fail = False

        def put_item(self, table, item, *, expected_version=None):
            if self.fail:
                self.fail = False
                raise InfrastructureError("throttled (simulated)")
            return super().put_item(table, item, expected_version=expected_version)

    def event(states, first):
        return kinesis_event([kinesis_record(s.model_dump_json().encode(), partition_key=s.symbol,
                                             sequence_number=f"{first + i:020d}", stream="market-state")
                              for i, s in enumerate(states)])

    series = generate("realistic", 200, seed=5, symbol="SW").series  # a series with switches after bar 70
    states = run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model())).market_states
    snapshots, bus, metrics, queue = FlakyOnce(), MemoryEventBus(), Metrics(), MemoryQueuePublisher()
    runner = KinesisStageRunner(
        MetaAgentStep(MetaAgentConfig.create(), RuleAgents()), cache=MemoryCache(), dlq=MemoryDeadLetters(),
        sink=DecisionSink(QueueSink(queue, "order-intents", lambda i: i.intent_id),
                          MemoryKeyValueStore(), metrics),
        events=bus, snapshots=BanditSnapshots(snapshots), snapshot_table=BANDIT_TABLE, metrics=metrics,
        stats=StageStats())
    assert runner.process(event(states[:70], 0)) == {"batchItemFailures": []}
    events_before, metrics_before = len(bus.events), len(metrics.values)
    if failing == "snapshot":
        snapshots.fail = True
    else:
        queue.failures.fail("send")
    assert len(runner.process(event(states[70:], 70))["batchItemFailures"]) == len(states) - 70
    assert runner.process(event(states[70:], 70)) == {"batchItemFailures": []}  # the mapping's retry
    switches = {e.event_id for e in bus.events[events_before:] if type(e).__name__ == "AgentSwitched"}
    counted = sum(v for n, v in metrics.values[metrics_before:] if n == "meta_agent_switches")
    assert switches and counted == len(switches)
