"""Redis (ElastiCache) unreachable while DynamoDB is fine: the stateful stages go on from their
DynamoDB snapshots — no failed record, no retry, no bar skipped — and the cache that comes back
holding the states of before the outage is found behind the snapshots and replaced.

"Unreachable" is a real ``RedisCache`` pointed at a port that refuses connections (a socket bound
and never listening): what a stage sees when Redis is stopped. The runbook's repair of a gap the
mapping left in a stage (a batch sent to the on-failure destination after its retries, here by
the snapshot table refusing writes) is exercised at the end: a re-put of the range is dead-lettered
as late, dropping the symbol's states and re-feeding it from its first bar restores what an
uninterrupted run holds.

Every scenario goes on well past the features' warm-up (``WARMUP_BARS`` vectors that are not
ready, on which the regime filter observes nothing and the meta-agent stays flat and learns
nothing) before its outage or gap: what the stages must carry through it is a regime filter's
distribution and the meta-agent's learners and regret ledger, not only a count of bars, and the
bars after it trade.
"""

from __future__ import annotations

import json
import socket

import pytest
from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
from ensemble_trader.adapters.redis.cache import RedisCache
from ensemble_trader.backtest.ensemble import run_meta, run_pipeline
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.meta_agent import GLOBAL, MetaAgentConfig, MetaAgentState
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.domain.regime import RegimeStep
from ensemble_trader.domain.synthetic import generate
from ensemble_trader.local.functions import forget_loaded, load_module
from ensemble_trader.marketdata import load_arch
from ensemble_trader.runtime.meta_agent_stage import build_runner
from ensemble_trader.runtime.stage import StageStats, decode_cached

from tests.conftest import fresh_session
from tests.e2e.test_disaster_recovery import (
    CHUNK,
    MomentumRules,
    _scan,
    assert_learned_something,
    feed,
    learned_state,
)
from tests.unit.test_meta_backtest import RuleAgents, hand_regime_model

pytestmark = pytest.mark.slow

PIPELINE = ["features", "regime", "meta_agent"]


@pytest.fixture()
def unreachable_redis():
    """``make(prefix)``: a RedisCache whose every call fails as against a stopped Redis."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # held, never listening: connections are refused, nobody else gets the port
    port = sock.getsockname()[1]
    try:
        yield lambda prefix: RedisCache.from_url(f"redis://127.0.0.1:{port}/0", prefix=prefix, timeout_s=1.0)
    finally:
        sock.close()


def test_unreachable_redis_port_really_refuses(unreachable_redis):
    with pytest.raises(InfrastructureError, match="Redis GET"):
        unreachable_redis("x:").get_many(["k"])


def put_states(stack, states) -> None:
    KinesisPublisher(settings=stack.settings).put("market-state", [(s.symbol, s.model_dump_json().encode())
                                                                   for s in states])


def test_meta_agent_goes_on_from_its_snapshots_while_redis_is_down(clean_stack, unreachable_redis):
    """The reviewer's scenario, past the warm-up: 80 ready bars, 10 with Redis down, 10 after. It
    used to fail the 10 bars through the mapping's 3 retries into meta-agent-dlq — no intent for
    them, and a re-put dead-lettered as late. The meta-agent has learned from the ready bars
    before the outage, and decides the 20 bars from there on exactly as the backtest does."""
    stack = clean_stack.stack
    down, back, n = WARMUP_BARS + 80, WARMUP_BARS + 90, WARMUP_BARS + 100
    series = generate("realistic", n + 10, seed=5, symbol="OUTG").series
    pipeline = run_pipeline(series, RuleAgents(), RegimeStep(hand_regime_model()))
    states = pipeline.market_states
    expected = list(run_meta(pipeline, MetaAgentConfig.create()).intents[:n])
    module = load_module("meta_agent", fresh=True)
    runner = build_runner(stack.settings, RuleAgents(), metrics=module.metrics, config=MetaAgentConfig.create())
    runner.stats = StageStats()
    esm = clean_stack.emulator(["meta_agent"], handlers={"meta_agent": lambda event, context: runner.process(event)})
    redis = runner.cache
    intents: list[OrderIntent] = []

    def feed_states(part):
        """Put ``part`` CHUNK states at a time, each drained and its intents taken off their queue
        (see test_disaster_recovery.CHUNK); the mapping's cumulative statistics."""
        for start in range(0, len(part), CHUNK):
            put_states(stack, part[start : start + CHUNK])
            stats = esm.run_until_drained()["meta_agent"]
            intents.extend(OrderIntent.parse(json.dumps(m)) for m in stack.read_queue("order-intents"))
        return stats

    feed_states(states[:down])
    before = MetaAgentState.from_bytes(snapshot_item(stack, "bandit-state", {"pk": "meta_agent#OUTG"})["state"])
    assert before.learners[GLOBAL].t_ > 0 and sum(before.regret.bars.values()) > 0  # learned: state to lose
    runner.cache = unreachable_redis(redis.prefix)  # Redis stops
    outage = feed_states(states[down:back])
    assert (outage.item_failures, outage.retries, outage.dead_lettered) == (0, 0, 0)
    assert runner.stats.cache_unavailable == 1
    runner.cache = redis  # Redis is back, holding the state of bar `down`
    stats = feed_states(states[back:n])

    assert (stats.item_failures, stats.retries, stats.dead_lettered) == (0, 0, 0)
    assert stack.read_queue("meta-agent-dlq") == []
    assert intents == expected  # every bar, each decided from the state of the bar before it
    assert any(i.target_position != 0.0 for i in intents[down:])  # the bars of and after the outage trade
    assert runner.stats.stale_cache == 1  # the cache's pre-outage state was replaced, not computed from
    item = snapshot_item(stack, "bandit-state", {"pk": "meta_agent#OUTG"})
    after = MetaAgentState.from_bytes(item["state"])
    assert after.version == n
    assert after.learners[GLOBAL].t_ == before.learners[GLOBAL].t_ + n - down  # learning went on from `down`
    cached = stack.redis_client().get(f"{stack.stage}:meta_agent:OUTG")
    assert decode_cached(cached)[0] == item["version"]


def snapshot_item(stack, logical: str, key: dict) -> dict:
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore

    return DynamoKeyValueStore(settings=stack.settings).get_item(logical, key)


# ---- the whole pipeline -----------------------------------------------------------------------


def _series(n: int):
    return [load_arch("sp500")[3000 : 3000 + n], load_arch("nasdaq")[3000 : 3000 + n]]


def _states(stack) -> list[dict]:
    """Every stage's snapshot, without what depends on how the bars were batched (the number of
    commits) or when: the state itself and its handled times."""
    return [{k: v for k, v in item.items() if k != "version"}
            for item in _scan(stack, "stage-state") + _scan(stack, "bandit-state")]


def per_symbol(records: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    """A stream's records by partition key (the symbol), each key's in stream order: the order
    Kinesis keeps. Across keys it depends on how the bars were cut into replays and batches."""
    out: dict[str, list[bytes]] = {}
    for key, data in records:
        out.setdefault(key, []).append(data)
    return out


class Pipeline:
    """features → regime (real handlers) → meta_agent (its real wiring, MomentumRules agents)."""

    def __init__(self, session) -> None:
        self.session, self.stack = session, session.stack
        module = load_module("meta_agent", fresh=True)
        self.meta = build_runner(self.stack.settings, MomentumRules(), metrics=module.metrics)
        self.esm = session.emulator(PIPELINE, handlers={"meta_agent": lambda event, context: self.meta.process(event)})
        # the emulator loaded fresh handler modules: these are the runners it calls
        self.runners = {"features": load_module("features").runner(), "regime": load_module("regime").runner(),
                        "meta_agent": self.meta}
        self.redis = {name: r.cache for name, r in self.runners.items()}
        self.publisher = KinesisPublisher(settings=self.stack.settings)
        self.intents: list[str] = []  # the order intents taken off their queue so far

    def feed(self, series) -> dict:
        """Replay in chunks, each drained (see test_disaster_recovery.feed); the emulator's
        cumulative statistics."""
        return feed(series, self.publisher, self.esm, self.stack, self.intents)

    def redis_down(self, make) -> None:
        for name, runner in self.runners.items():
            runner.cache = make(self.redis[name].prefix)

    def redis_up(self) -> None:
        for name, runner in self.runners.items():
            runner.cache = self.redis[name]

    def outputs(self) -> dict:
        return {
            "features": per_symbol(self.session.new_records("features")),
            "market-state": per_symbol(self.session.new_records("market-state")),
            "order-intents": sorted(self.intents),
            "decisions": _scan(self.stack, "decisions"),
            "states": _states(self.stack),
        }


def test_a_redis_outage_and_write_refusals_mid_run_give_the_outputs_of_an_uninterrupted_run(
    local_stack, unreachable_redis
):
    down, up, writable, n = (WARMUP_BARS + k for k in (30, 50, 70, 100))  # 30 ready bars before the outage
    try:
        plain = Pipeline(fresh_session(local_stack))
        plain.feed(_series(n))
        uninterrupted = plain.outputs()

        run = Pipeline(fresh_session(local_stack))
        series = _series(n)
        stats = [run.feed([s[:down] for s in series])]
        learned = {s.symbol: learned_state(local_stack, s.symbol) for s in series}
        run.redis_down(unreachable_redis)  # Redis stopped: every read and write refused
        stats.append(run.feed([s[down:up] for s in series]))
        run.redis_up()
        redis = local_stack.redis_client()
        redis.config_set("min-replicas-to-write", 1)  # back, holding the states of `down`, but refusing writes
        try:
            stats.append(run.feed([s[up:writable] for s in series]))
        finally:
            redis.config_set("min-replicas-to-write", 0)
        stats.append(run.feed([s[writable:] for s in series]))
        recovered = run.outputs()
        emf = [json.loads(line) for name in ("features", "regime") for line in run.esm.logs(name)
               if line.startswith('{"_aws"')]
    finally:
        forget_loaded()

    for stream in ("features", "market-state"):
        assert [len(records) for records in uninterrupted[stream].values()] == [n, n], stream
    assert uninterrupted["decisions"]
    for symbol_learned in learned.values():  # the regime filter and the meta-agent had learned ...
        assert_learned_something(symbol_learned)
    outage_began = {s.symbol: s.bar(down).timestamp for s in series}
    intents = [OrderIntent.model_validate_json(m) for m in recovered["order-intents"]]
    since_outage = [i for i in intents if i.timestamp >= outage_began[i.symbol]]
    assert len(since_outage) == 2 * (n - down)
    assert any(i.target_position != 0.0 for i in since_outage)  # ... and the bars since the outage trade
    for phase in stats:
        for name, s in phase.items():
            assert (s.item_failures, s.retries, s.dead_lettered, s.function_errors) == (0, 0, 0, 0), (name, s)
    assert not any(local_stack.read_queue(q) for q in ("features-dlq", "regime-dlq", "meta-agent-dlq"))
    for output in ("features", "market-state", "order-intents", "decisions", "states"):
        assert recovered[output] == uninterrupted[output], output
    for name, runner in run.runners.items():
        # one failed read per batch while down (then the batch leaves the cache alone), one refused
        # write-back per batch while Redis refused writes; the pre-outage entries were found behind
        assert runner.stats.cache_unavailable >= 2, name
        assert runner.stats.stale_cache >= 2, name
    for name in ("features", "regime"):  # the metric the runbook points at, as the handlers emit it (EMF)
        values = [v for doc in emf if f"{name}_cache_unavailable" in doc for v in doc[f"{name}_cache_unavailable"]]
        assert sum(values) == run.runners[name].stats.cache_unavailable, name


# ---- runbook §5 (c): a gap the mapping left ---------------------------------------------------


class RefusingSnapshots:
    """The snapshot store of a stage with DynamoDB refusing ``symbol``'s writes while ``down``."""

    def __init__(self, inner, symbol: str) -> None:
        self.inner, self.symbol, self.down = inner, symbol, False

    def get_item(self, table, key):
        return self.inner.get_item(table, key)

    def get_versions(self, table, keys):
        return self.inner.get_versions(table, keys)

    def put_item(self, table, item, *, expected_version=None):
        if self.down and item["sk"] == self.symbol:
            raise InfrastructureError("DynamoDB PutItem stage-state: ServiceUnavailable (simulated)")
        return self.inner.put_item(table, item, expected_version=expected_version)


def drop_symbol_states(stack, symbol: str) -> None:
    """Runbook §5 (c) / §3.2 step 2 for one symbol: its items in stage-state and bandit-state and
    its cache keys, in every stateful stage."""
    ddb = stack.client("dynamodb")
    for stage in ("features", "regime"):
        ddb.delete_item(TableName=stack.name("stage-state"), Key={"pk": {"S": stage}, "sk": {"S": symbol}})
    ddb.delete_item(TableName=stack.name("bandit-state"), Key={"pk": {"S": f"meta_agent#{symbol}"}})
    stack.redis_client().delete(*(f"{stack.stage}:{stage}:{symbol}" for stage in PIPELINE))


def test_a_gap_left_by_the_mapping_is_repaired_by_dropping_the_symbol_and_re_feeding_it(local_stack):
    """A batch the mapping gave up on (here: the snapshot table refused the symbol's writes
    through every retry) leaves the symbol's state without those bars. Re-putting them is no
    repair (late). Dropping the symbol's states in the three stages and re-feeding it from its
    first bar is: from then on the symbol decides exactly as if the gap never happened. What was
    decided and sent meanwhile stands (the decision rows keep what was sent, first writer wins).

    The gap falls 20 bars past the features' warm-up: the symbol's features state lacks 10 ready
    bars, so every vector after it, and what the regime filter and the meta-agent learn from
    them, differ from an uninterrupted run's. The 40 bars after the repair trade."""
    gap_from, gap_to = WARMUP_BARS + 20, WARMUP_BARS + 30
    n, more = WARMUP_BARS + 60, 40
    series = _series(n + more)
    symbol = series[0].symbol
    try:
        plain = Pipeline(fresh_session(local_stack))
        plain.feed([s[:n] for s in series])
        before_more = plain.outputs()
        learned_before_more = learned_state(local_stack, symbol)
        plain.feed([s[n:] for s in series])
        uninterrupted = plain.outputs()

        run = Pipeline(fresh_session(local_stack))
        features = run.runners["features"]
        features.snapshots = refusing = RefusingSnapshots(features.snapshots, symbol)
        run.feed([s[:gap_from] for s in series])
        refusing.down = True  # the snapshot table refuses the symbol's writes: its records fail ...
        gap = run.feed([s[gap_from:gap_to] for s in series])["features"]
        refusing.down = False
        run.feed([s[gap_to:n] for s in series])  # ... and the mapping went on after its retries
        letters = local_stack.read_queue("features-dlq")
        assert gap.retries == 3 and gap.dead_lettered >= 1
        assert letters and all("after 3 retries" in letter["reason"] for letter in letters)
        gapped = run.outputs()
        assert gapped["states"] != before_more["states"]
        # the gap's feature vectors went out before their snapshots failed, so the regime filter and the
        # meta-agent learned from them; every later vector comes from a features state without those bars
        assert_learned_something(learned_state(local_stack, symbol))

        # the old advice, re-reading the range: every bar of it is late now
        late_before = features.stats.late
        run.feed([series[0][gap_from:gap_to]])
        assert features.stats.late - late_before == gap_to - gap_from

        # the runbook's repair: drop the symbol's states in every stage, re-feed it from its first bar
        drop_symbol_states(local_stack, symbol)
        run.feed([series[0][:n]])
        assert run.outputs()["states"] == before_more["states"]
        assert learned_state(local_stack, symbol) == learned_before_more
        run.feed([s[n:] for s in series])  # live again
        repaired = run.outputs()
    finally:
        forget_loaded()
    assert repaired["states"] == uninterrupted["states"]
    decided_before = {(d["symbol"], d["timestamp"]) for d in before_more["decisions"]}

    def split(outputs: dict) -> tuple[list[dict], list[dict]]:
        rows = outputs["decisions"]
        return ([d for d in rows if (d["symbol"], d["timestamp"]) in decided_before],
                [d for d in rows if (d["symbol"], d["timestamp"]) not in decided_before])

    assert split(repaired)[1] and split(repaired)[1] == split(uninterrupted)[1]  # decided as if no gap
    assert len(split(repaired)[1]) == 2 * more
    assert any(float(d["target_position"]) != 0.0 for d in split(repaired)[1])  # and they trade
    assert split(repaired)[0] == gapped["decisions"]  # what was decided (and sent) meanwhile stands
    assert gapped["decisions"] != before_more["decisions"]
