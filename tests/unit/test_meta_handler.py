"""The meta_agent Lambda's wiring (``runtime.meta_agent_stage``) with in-memory ports: queue ids,
decision rows, redelivery, regret metrics, the conditional bandit-state snapshot with two
writers, and the configuration read from the environment (``runtime.settings.json_from_env``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aws_lambda_powertools.metrics import EphemeralMetrics
from ensemble_trader.adapters.memory import (
    MemoryCache,
    MemoryDeadLetters,
    MemoryEventBus,
    MemoryKeyValueStore,
)
from ensemble_trader.adapters.memory.fakes import MemoryQueuePublisher
from ensemble_trader.backtest.ensemble import run_meta, run_pipeline
from ensemble_trader.domain.errors import DataError, InvalidMessageError
from ensemble_trader.domain.meta_agent import MetaAgentConfig, MetaAgentState, MetaAgentStep
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.domain.regime import RegimeStep, TransitionRule
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.events import kinesis_event, kinesis_record
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.meta_agent_stage import (
    BANDIT_TABLE,
    CONFIG_ENV,
    BanditSnapshots,
    DecisionSink,
    EmfSymbolMetrics,
    build_runner,
    meta_config,
)
from ensemble_trader.runtime.observability import METRICS_NAMESPACE
from ensemble_trader.runtime.settings import EnvironmentSettingError, Settings, json_from_env
from ensemble_trader.runtime.stage import KinesisStageRunner, QueueSink, StageStats

from tests.unit.test_meta_agent import market
from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

QUEUE = "order-intents"


class Metrics:
    def __init__(self) -> None:
        self.values: list[tuple[str, str, float]] = []
        self.by_symbol: list[tuple[str, str, str, float]] = []

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.values.append((name, unit, value))

    def publish(self, symbol: str, metrics) -> None:  # runtime.meta_agent_stage.SymbolMetrics
        self.by_symbol.extend((symbol, name, unit, value) for name, unit, value in metrics)


@pytest.fixture(scope="module")
def pipeline():
    series = generate("realistic", 160, seed=2).series
    return run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model()))


class Container:
    """One warm Lambda container: its own cache view, shared queue/tables/bus."""

    def __init__(self, queue, store, snapshots_store, bus, cache=None, config=None):
        self.metrics = Metrics()
        self.dlq = MemoryDeadLetters()
        self.cache = cache if cache is not None else MemoryCache()
        step = MetaAgentStep(config or MetaAgentConfig.create(), RuleAgents())
        sink = DecisionSink(QueueSink(queue, QUEUE, lambda i: i.intent_id), store, self.metrics,
                            symbol_metrics=self.metrics)
        self.runner = KinesisStageRunner(
            step, cache=self.cache, dlq=self.dlq, sink=sink, events=bus,
            snapshots=BanditSnapshots(snapshots_store), snapshot_table=BANDIT_TABLE,
            metrics=self.metrics, stats=StageStats(),
        )

    def send(self, states, first_seq: int = 0):
        records = [
            kinesis_record(s.model_dump_json().encode(), partition_key=s.symbol,
                           sequence_number=f"{first_seq + i:020d}", stream="market-state")
            for i, s in enumerate(states)
        ]
        return self.runner.process(kinesis_event(records))


@pytest.fixture()
def world():
    return {"queue": MemoryQueuePublisher(), "store": MemoryKeyValueStore(),
            "snapshots": MemoryKeyValueStore(), "bus": MemoryEventBus()}


def test_intents_reach_the_fifo_queue_with_symbol_group_and_intent_dedup(pipeline, world) -> None:
    c = Container(world["queue"], world["store"], world["snapshots"], world["bus"])
    states = pipeline.market_states
    for start in range(0, len(states), 40):  # several invocations, as the ESM batches them
        assert c.send(states[start : start + 40], start) == {"batchItemFailures": []}
    sent = world["queue"].queues[QUEUE]
    expected = run_meta(pipeline, MetaAgentConfig.create()).intents
    assert len(sent) == len(expected)
    for (group, dedup, body), want in zip(sent, expected, strict=True):
        intent = OrderIntent.parse(body)
        assert group == "SYN" and dedup == intent.intent_id
        assert intent == want  # the Lambda path decides exactly as the backtest
    rows = world["store"].items("decisions")
    assert len(rows) == len(expected)
    last = max(rows, key=lambda r: r["timestamp"])
    assert last["intent_id"] == expected[-1].intent_id and last["explanation"] == expected[-1].explanation
    assert json.loads(last["explanation_detail"])["regret"] == expected[-1].explanation_detail["regret"]
    assert last["expires_at"] > 0
    names = {n for n, _, _ in c.metrics.values}
    assert "meta_agent_compute_us" in names and not any(n.startswith("meta_agent_regret") for n in names)
    assert {s for s, _, _, _ in c.metrics.by_symbol} == {"SYN"}  # regret: per symbol only
    assert c.metrics.by_symbol[-2:] == [
        ("SYN", "meta_agent_regret", "None", expected[-1].explanation_detail["regret"]["overall"]),
        ("SYN", f"meta_agent_regret_{expected[-1].regime.value}", "None",
         expected[-1].explanation_detail["regret"]["regime"]),
    ]
    switches = [e for e in world["bus"].events if type(e).__name__ == "AgentSwitched"]
    assert len(switches) == sum(1 for i in expected if i.explanation_detail["switched"])


@pytest.mark.parametrize("policy", ["glrts", "swucb"])
def test_learners_that_keep_reward_buffers_decide_in_the_lambda_as_in_the_backtest(pipeline, world, policy) -> None:
    """A change-detecting learner's history (and a sliding window) goes through the cache and the
    snapshot between invocations and comes back the same: the same intents as the backtest."""
    config = MetaAgentConfig.create(policy=policy, mode="select")
    c = Container(world["queue"], world["store"], world["snapshots"], world["bus"], config=config)
    states = pipeline.market_states
    for start in range(0, len(states), 40):
        assert c.send(states[start : start + 40], start) == {"batchItemFailures": []}
    reference = run_meta(pipeline, config)
    assert [OrderIntent.parse(body) for _, _, body in world["queue"].queues[QUEUE]] == list(reference.intents)
    (item,) = world["snapshots"].items("bandit-state")
    stored = MetaAgentState.from_bytes(item["state"])
    assert {k: v.to_dict() for k, v in stored.learners.items()} == {
        k: v.to_dict() for k, v in reference.final_state.learners.items()}


def two_symbols_last_intents() -> list[OrderIntent]:
    """The last intents of two symbols whose best agents differ (so their regrets differ)."""
    step = MetaAgentStep()
    rng = np.random.default_rng(0)
    out = []
    for symbol, good in (("AAA", 0), ("BBB", 3)):
        state, price = None, 100.0
        for i in range(120):
            price *= 1 + 0.01 * rng.standard_normal()
            targets = np.zeros(4)
            targets[good], targets[(good + 1) % 4] = 1.0, -1.0
            state, decision = step.decide(state, market(i, price, symbol=symbol), targets)
        out.append(decision.intent)
    return out


def test_regret_is_published_per_symbol_under_a_symbol_dimension(capsys) -> None:
    """One EMF metric set per symbol with its own regret and a ``symbol`` dimension beside the
    stage's ``service`` and ``stage``: values of several symbols under one series averaged to
    nothing on the dashboard (+50 and -50 read 0) and hid which symbol underperforms."""
    intents = two_symbols_last_intents()
    regrets = {i.symbol: i.explanation_detail["regret"] for i in intents}
    assert regrets["AAA"]["overall"] != pytest.approx(regrets["BBB"]["overall"])
    handler_metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service="meta_agent")
    handler_metrics.set_default_dimensions(stage="test")
    sink = DecisionSink(QueueSink(MemoryQueuePublisher(), QUEUE, lambda i: i.intent_id), MemoryKeyValueStore(),
                        handler_metrics, symbol_metrics=EmfSymbolMetrics(handler_metrics))
    capsys.readouterr()
    sink.emit(intents)
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert [b["symbol"] for b in blobs] == ["AAA", "BBB"]  # one metric set per symbol
    for blob in blobs:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == METRICS_NAMESPACE
        assert sorted(directive["Dimensions"][0]) == ["service", "stage", "symbol"]
        assert (blob["service"], blob["stage"]) == ("meta_agent", "test")
        regime = next(i.regime.value for i in intents if i.symbol == blob["symbol"])
        assert {m["Name"] for m in directive["Metrics"]} == {"meta_agent_regret", f"meta_agent_regret_{regime}"}
        assert blob["meta_agent_regret"] == [regrets[blob["symbol"]]["overall"]]  # EMF: a list of values
        assert blob[f"meta_agent_regret_{regime}"] == [regrets[blob["symbol"]]["regime"]]
    assert not handler_metrics.metric_set  # the handler's own set (no symbol dimension) holds no regret


def test_symbol_metrics_need_powertools_metrics() -> None:
    with pytest.raises(TypeError, match="EmfSymbolMetrics needs Powertools metrics .* not Metrics"):
        EmfSymbolMetrics(Metrics())


def test_redelivery_is_a_no_op(pipeline, world) -> None:
    c = Container(world["queue"], world["store"], world["snapshots"], world["bus"])
    states = pipeline.market_states[:50]
    c.send(states)
    before = len(world["queue"].queues[QUEUE])
    snapshot = world["snapshots"].items("bandit-state")[0]
    assert c.send(states) == {"batchItemFailures": []}
    assert len(world["queue"].queues[QUEUE]) == before
    assert c.runner.stats.duplicates == 50
    assert world["snapshots"].items("bandit-state")[0]["version"] == snapshot["version"]


def test_bandit_snapshot_is_keyed_by_symbol_and_decodes(pipeline, world) -> None:
    c = Container(world["queue"], world["store"], world["snapshots"], world["bus"])
    c.send(pipeline.market_states[:30])
    (item,) = world["snapshots"].items("bandit-state")
    assert item["pk"] == "meta_agent#SYN" and item["symbol"] == "SYN" and item["version"] == 1
    state = MetaAgentState.from_bytes(item["state"])
    assert state.version == 30


def test_two_writers_never_lose_an_update(pipeline, world) -> None:
    """Container B holds a stale cached state: it sees that the snapshot is newer and continues
    from it instead of overwriting A's update (a write that races past that check loses the
    conditional put and is retried: tests/unit/test_stage_runner.py)."""
    states = pipeline.market_states
    shared = [world["queue"], world["store"], world["snapshots"], world["bus"]]
    a = Container(*shared)
    b = Container(*shared)
    a.send(states[:20])
    b.cache.data.update(a.cache.data)  # both containers now hold version 1
    a.send(states[20:30], 20)  # A moves the snapshot to version 2
    assert b.send(states[30:35], 30) == {"batchItemFailures": []}  # B's cache is at version 1
    assert b.runner.stats.stale_cache == 1
    (item,) = world["snapshots"].items("bandit-state")
    assert item["version"] == 3
    final = MetaAgentState.from_bytes(item["state"])
    assert final.version == 35  # every bar applied exactly once: no update was lost
    reference = run_meta(pipeline, MetaAgentConfig.create())
    ids = [OrderIntent.parse(body).intent_id for _, _, body in world["queue"].queues[QUEUE]]
    assert ids == [i.intent_id for i in reference.intents[:35]]


def test_bad_records_go_to_the_dead_letter_queue(pipeline, world) -> None:
    c = Container(world["queue"], world["store"], world["snapshots"], world["bus"])
    good = pipeline.market_states[0]
    bad = kinesis_record(b'{"features": {}}', partition_key="SYN", sequence_number="9", stream="market-state")
    ok = kinesis_record(good.model_dump_json().encode(), partition_key="SYN", sequence_number="10",
                        stream="market-state")
    assert c.runner.process(kinesis_event([bad, ok])) == {"batchItemFailures": []}
    assert len(c.dlq.reasons) == 1 and "MarketState" in c.dlq.reasons[0]
    assert len(world["queue"].queues[QUEUE]) == 1


def test_config_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert meta_config("ensemble") == MetaAgentConfig.create(strategy_id="ensemble")  # unset: defaults
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"policy": "dts", "mode": "select"}))
    config = meta_config("ensemble")
    assert (config.policy, config.mode, config.strategy_id) == ("dts", "select", "ensemble")
    monkeypatch.setenv(CONFIG_ENV, "[1]")
    with pytest.raises(DataError, match=f"{CONFIG_ENV}: must be a JSON object of MetaAgentConfig options"):
        meta_config("ensemble")
    monkeypatch.setenv(CONFIG_ENV, "{policy: dts}")
    with pytest.raises(DataError, match=f"{CONFIG_ENV}: not valid JSON"):
        meta_config("ensemble")
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"policy": "nope"}))
    with pytest.raises(EnvironmentSettingError, match=f"{CONFIG_ENV}: not a valid MetaAgentConfig.*policy") as err:
        meta_config("ensemble")
    # the config's own typed error, naming the field, is kept as the cause
    assert isinstance(err.value.__cause__, InvalidMessageError)
    assert [p.field for p in err.value.__cause__.problems] == ["policy"]
    assert err.value.variable == CONFIG_ENV


@pytest.mark.parametrize("value", ["other", "ensemble"])
def test_the_config_cannot_set_the_stages_strategy_id(monkeypatch, value: str) -> None:
    """The stage's identity comes from its settings (ET_STRATEGY_ID): read over it, ET_META_CONFIG's
    {"strategy_id": "other"} named the intents, and changed their ids and the client order ids
    derived from them, while the settings said "ensemble". Refused at cold start, naming the key
    and where it is set, even when it agrees (it would contradict the next change of either)."""
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"policy": "ucb", "strategy_id": value}))
    with pytest.raises(EnvironmentSettingError, match=rf"^{CONFIG_ENV}: .*strategy_id={value!r}: set by "
                                                      r"ET_STRATEGY_ID \(the stage's settings\), not in ET_META_CONFIG"
                       ) as err:
        meta_config("ensemble")
    assert err.value.variable == CONFIG_ENV
    assert [p.field for p in err.value.__cause__.problems] == ["strategy_id"]
    with pytest.raises(EnvironmentSettingError, match="strategy_id"):  # the handler's cold start
        build_runner(Settings(strategy_id="ensemble"), RuleAgents())
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"policy": "ucb"}))
    assert meta_config("desk-7").strategy_id == "desk-7"  # the settings' value, as before


def test_a_strategy_id_the_configuration_refuses_names_its_own_variable(monkeypatch) -> None:
    """ET_STRATEGY_ID longer than an intent's strategy_id may be was blamed on ET_META_CONFIG."""
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"policy": "ucb"}))
    with pytest.raises(EnvironmentSettingError, match=r"^ET_STRATEGY_ID: not a valid strategy id .*at most 64") as err:
        meta_config("x" * 65)
    assert err.value.variable == "ET_STRATEGY_ID"
    assert [p.field for p in err.value.__cause__.problems] == ["strategy_id"]


def test_json_from_env_builds_the_regime_rule_the_same_way(monkeypatch) -> None:
    """The regime handler's ``ET_REGIME_RULE`` goes through the same helper."""
    name = "ET_TEST_RULE"
    monkeypatch.setenv(name, "   ")
    assert json_from_env(name, TransitionRule) == TransitionRule()  # blank: defaults
    monkeypatch.setenv(name, json.dumps({"margin": 0.1, "min_dwell": 3}))
    assert json_from_env(name, TransitionRule) == TransitionRule(margin=0.1, min_dwell=3)
    assert json_from_env(name, TransitionRule, defaults={"confirm_bars": 2, "margin": 0.5}) == TransitionRule(
        margin=0.1, confirm_bars=2, min_dwell=3
    )  # the variable overrides the defaults, which fill the rest
    for value, problem in [
        ('{"margin": 1.5}', r"not a valid TransitionRule \(margin 1.5 must be in \[0, 1\)\)"),
        ('{"margins": 0.1}', "not a valid TransitionRule .*margins"),
        ("0.1", "must be a JSON object of TransitionRule options, got float"),
        ("{", "not valid JSON"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(EnvironmentSettingError, match=f"^{name}: {problem}") as err:
            json_from_env(name, TransitionRule)
        assert err.value.variable == name and isinstance(err.value, DataError)


def test_unset_variable_leaves_a_rejection_of_the_defaults_as_it_is(monkeypatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(InvalidMessageError, match="policy"):
        json_from_env(CONFIG_ENV, MetaAgentConfig, build=MetaAgentConfig.create, defaults={"policy": "nope"})


def test_handler_builds_its_runner_once_with_the_pinned_agents_and_its_metrics(monkeypatch) -> None:
    handler = load_module("meta_agent", fresh=True)
    calls = []
    monkeypatch.setattr(handler, "build_runner", lambda *a, **kw: calls.append((a, kw)) or object())
    first = handler.runner()
    assert handler.runner() is first and len(calls) == 1
    (settings, agents), options = calls[0]
    assert options == {"metrics": handler.metrics}
    assert type(agents).__name__ == "AgentPool" and settings.strategy_id
