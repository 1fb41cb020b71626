"""Cache maintenance against the local stack's real redis-server, over states the real stage
handlers wrote (features, regime and meta_agent through the emulated event-source mappings).

A dry run deletes nothing; a symbol flush takes that symbol's key of that stage only; a stage
flush takes that stage's keys only; the next batch reloads the flushed states from their DynamoDB
snapshots and goes on from them. The deployed cache user's access string (read from the CDK
construct) applied to a user of this redis-server is enough for all of it, and refuses ``KEYS``,
``FLUSHDB`` and ``FLUSHALL``. ``ensemble-trader cache`` on the local stack holds off ``local
drain`` and refuses to delete while one runs.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from ensemble_trader.adapters.redis.cache import RedisCache
from ensemble_trader.domain.models import Bar, FeatureVector, MarketState
from ensemble_trader.runtime.cache_admin import (
    MAPPINGS_ENV,
    CacheAdmin,
    CacheAdminRequest,
    CacheFlushRefusedError,
)
from ensemble_trader.runtime.stage import decode_cached, stage_stats

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2020, 1, 2, tzinfo=UTC)
N = 12  # bars per symbol before the flush
STAGES = ("features", "regime", "meta_agent")


def _bars(symbol: str, start: int, n: int, *, seed: int) -> list[Bar]:
    out, price = [], 100.0 + seed
    for i in range(start + n):
        price *= 1.0 + 0.004 * (((i + seed) * 7919) % 11 - 5) / 5
        if i >= start:
            out.append(Bar(symbol=symbol, timestamp=T0 + timedelta(days=i), open=price, high=price * 1.01,
                           low=price * 0.99, close=price * 1.001, volume=1000.0 + i))
    return out


def _feed(session, start: int, n: int) -> None:
    """``n`` bars from bar ``start`` of SPX, TWIN (SPX's very bars under another name) and IXIC."""
    spx, ixic = _bars("SPX", start, n, seed=0), _bars("IXIC", start, n, seed=3)
    twin = [b.model_copy(update={"symbol": "TWIN"}) for b in spx]
    session.put_bars("market-data", [b for trio in zip(spx, twin, ixic, strict=True) for b in trio])


def _clean(stats) -> dict[str, tuple[int, int, int, int]]:
    """Per mapping: messages received, item failures, function errors, dead letters."""
    return {f: (s.messages_received, s.item_failures, s.function_errors, s.dead_lettered) for f, s in stats.items()}


def _keys(stack) -> dict[str, bytes]:
    client = stack.redis_client()
    return {k.decode(): client.get(k) for k in client.scan_iter(match=f"{stack.stage}:*")}


def _admin(stack, client=None) -> CacheAdmin:
    class NothingConsumes:
        def check(self, stages):
            return {s: ({"local": "test"}, None) for s in stages}

    cache = RedisCache(client or stack.redis_client(), prefix=f"{stack.stage}:")
    return CacheAdmin(cache, NothingConsumes(), scan_count=2, delete_batch=2)


def _request(**payload) -> CacheAdminRequest:
    return CacheAdminRequest.parse(payload)


@pytest.fixture()
def filled(clean_stack):
    """The three stages' states of SPX, TWIN and IXIC after N bars, written by the real handlers."""
    esm = clean_stack.emulator(list(STAGES))
    _feed(clean_stack, 0, N)
    stats = esm.run_until_drained()
    assert _clean(stats) == dict.fromkeys(STAGES, (3 * N, 0, 0, 0))
    keys = _keys(clean_stack.stack)
    stage = clean_stack.stack.stage
    assert sorted(keys) == sorted(f"{stage}:{s}:{sym}" for s in STAGES for sym in ("SPX", "TWIN", "IXIC"))
    return clean_stack, esm, keys


def test_dry_run_symbol_flush_stage_flush_then_the_states_reload_from_their_snapshots(filled):
    session, esm, before = filled
    stack = session.stack
    p = f"{stack.stage}:"

    doc = _admin(stack).run(_request(action="flush", stage="features"))
    assert (doc["found"], doc["deleted"], doc["complete"]) == (3, 0, True)
    assert doc["stages"]["features"]["symbols"] == ["IXIC", "SPX", "TWIN"]
    assert _keys(stack) == before  # nothing deleted, nothing changed

    doc = _admin(stack).run(_request(action="count"))
    assert {s: d["found"] for s, d in doc["stages"].items()} == dict.fromkeys(STAGES, 3)

    doc = _admin(stack).run(_request(action="flush", stage="features", symbols=["SPX"], dry_run=False))
    assert doc["stages"]["features"] == {"found": 1, "deleted": 1, "symbols": ["SPX"]}
    assert _keys(stack) == {k: v for k, v in before.items() if k != f"{p}features:SPX"}

    regime_versions = {sym: decode_cached(before[f"{p}regime:{sym}"])[0] for sym in ("SPX", "TWIN", "IXIC")}
    doc = _admin(stack).run(_request(action="flush", stage="regime", dry_run=False))
    assert doc["stages"]["regime"] == {"found": 3, "deleted": 3, "symbols": ["IXIC", "SPX", "TWIN"]}
    left = _keys(stack)
    assert sorted(left) == sorted(f"{p}{s}:{sym}" for s in STAGES for sym in ("SPX", "TWIN", "IXIC")
                                  if s != "regime" and (s, sym) != ("features", "SPX"))
    assert all(left[k] == before[k] for k in left)  # the others untouched

    # the next bar: every flushed state comes back from its snapshot and moves on from there
    features_mark = stack.stream_mark("features")
    states_mark = stack.stream_mark("market-state")
    _feed(session, N, 1)
    stats = esm.run_until_drained()
    assert _clean(stats) == dict.fromkeys(STAGES, (3 * N + 3, 0, 0, 0))  # the counts since the fixture began
    after = _keys(stack)
    assert sorted(after) == sorted(before)
    for sym in ("SPX", "TWIN", "IXIC"):
        assert decode_cached(after[f"{p}regime:{sym}"])[0] == regime_versions[sym] + 1  # not a new state
        assert decode_cached(after[f"{p}features:{sym}"])[0] == decode_cached(before[f"{p}features:{sym}"])[0] + 1
    vectors = {v.symbol: v for v in (FeatureVector.parse(d) for _, d in stack.stream_records("features",
                                                                                               since=features_mark))}
    states = {m.symbol: m for m in (MarketState.parse(d) for _, d in stack.stream_records("market-state",
                                                                                            since=states_mark))}
    assert vectors["SPX"].timestamp == T0 + timedelta(days=N)
    # SPX's features reloaded from the snapshot, TWIN's read from the cache: the same bars, the same answers
    assert vectors["SPX"].model_dump(exclude={"bar"}) == vectors["TWIN"].model_dump(exclude={"bar"})
    spx_regime, twin_regime = states["SPX"].regime.model_dump(), states["TWIN"].regime.model_dump()
    assert spx_regime | {"symbol": "TWIN"} == twin_regime

    # a bar SPX's reloaded state already applied is still a duplicate: its handled times came back too
    duplicates = stage_stats("features").duplicates
    session.put_bars("market-data", _bars("SPX", N - 1, 1, seed=0))
    esm.run_until_drained()
    assert stage_stats("features").duplicates == duplicates + 1


def _deployed_access_string() -> str:
    """The access string the CDK app gives the cache's application user."""
    source = (ROOT / "infra_cdk" / "constructs" / "network.py").read_text()
    [found] = re.findall(r'access_string="([^"]+)"', source)
    return found


def test_the_deployed_users_rights_are_enough_and_exclude_keys_and_flush(filled):
    session, _, before = filled
    stack = session.stack
    access = _deployed_access_string()
    assert access == "on ~* +@all -@dangerous"
    admin_client = stack.redis_client()
    user, password = "et-test-app", "cache-admin-test-password"
    admin_client.execute_command("ACL", "SETUSER", user, "reset", *access.split(), f">{password}")
    try:
        client = redis.Redis(host="127.0.0.1", port=stack.redis.port, username=user, password=password)
        for refused in (("KEYS", "*"), ("FLUSHDB",), ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*refused)
        admin = _admin(stack, client)
        assert admin.run(_request(action="count"))["found"] == 9
        assert admin.run(_request(action="flush", stage="meta_agent", symbols=["IXIC"], dry_run=False))["deleted"] == 1
        assert admin.run(_request(action="flush", stage="features", dry_run=False))["deleted"] == 3
        left = _keys(stack)
        assert sorted(left) == sorted(k for k in before if ":features:" not in k and not k.endswith("meta_agent:IXIC"))
    finally:
        admin_client.execute_command("ACL", "DELUSER", user)


def test_the_handler_flushes_the_local_cache_with_its_own_wiring(filled, monkeypatch):
    """The function's own build (settings, RedisCache.from_settings, the mapping check) on the
    local stack's Redis, with no mapping deployed."""
    from ensemble_trader.local.events import FakeLambdaContext
    from ensemble_trader.local.functions import load_module

    session, _, before = filled
    monkeypatch.setenv(MAPPINGS_ENV, "{}")
    module = load_module("cache_admin", fresh=True)
    context = FakeLambdaContext(session.stack.name("cache-admin"), timeout_seconds=60)
    doc = module.lambda_handler({"action": "flush", "stage": "regime", "symbols": ["TWIN"], "dry_run": False}, context)
    assert doc["consumers"] == {"regime": {"mapping": None, "note": "no event-source mapping deployed"}}
    assert doc["deleted"] == 1
    assert sorted(_keys(session.stack)) == sorted(k for k in before if not k.endswith(":regime:TWIN"))


def test_the_cli_on_the_local_stack_holds_off_a_drain_and_refuses_while_one_runs(filled, tmp_path, monkeypatch,
                                                                                  capsys):
    from ensemble_trader.cli import main
    from ensemble_trader.cli.local import _claim, _release

    session, _, before = filled
    stack = session.stack
    state_file = tmp_path / "stack.json"
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", str(state_file))
    drain = state_file.with_name(state_file.name + ".drain")

    claim = _claim(drain)  # a `local drain` running
    try:
        assert main(["cache", "flush", "--stage", "features", "--yes"]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert "error: cache flush of features refused, nothing deleted: an `ensemble-trader local drain` is " \
               "running on the local stack" in err
        assert _keys(stack) == before
        assert main(["cache", "flush", "--stage", "features"]) == 0  # a dry run says it would be refused
        out, err = capsys.readouterr()
        assert json.loads(out)["refused"]["features"].startswith("an `ensemble-trader local drain` is running")
        assert "would be refused for features" in err
    finally:
        _release(drain, claim)

    assert main(["cache", "flush", "--stage", "features", "--symbol", "IXIC", "--yes"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["deleted"] == 1 and doc["consumers"]["features"]["local"].startswith("no `local drain` runs")
    assert f"cache flush: stage {stack.stage}, local stack, redis {stack.redis_url}" in err
    assert "deleted 1 of 1 keys found (features 1)" in err
    again = _claim(drain)  # released: a drain may start again
    assert again is not None
    _release(drain, again)
    assert sorted(_keys(stack)) == sorted(k for k in before if not k.endswith(":features:IXIC"))


def test_a_refused_flush_leaves_every_key(filled):
    session, _, before = filled

    class Draining:
        def check(self, stages):
            return {s: ({}, "a drain runs") for s in stages}

    admin = CacheAdmin(RedisCache(session.stack.redis_client(), prefix=f"{session.stack.stage}:"), Draining())
    with pytest.raises(CacheFlushRefusedError):
        admin.run(_request(action="flush", stage="meta_agent", dry_run=False))
    assert _keys(session.stack) == before
