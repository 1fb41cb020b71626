"""A deploy of feature version 2 over a running stage (moto server, real redis-server, the ESM
emulator): the version-1 state in Redis and in the stage-state table is replaced by a new engine
after its last bar — no failed item, no dead letter, the metric on the function's stdout."""

from __future__ import annotations

import json

from ensemble_trader.domain.features import WARMUP_BARS, FeatureEngine
from ensemble_trader.runtime.stage import decode_cached_entry, encode_cached, stage_stats

from tests.integration.test_features_pipeline import bars, cached_state, vectors
from tests.unit.test_features_upgrade import version_1_bytes


def test_a_version_1_state_left_by_the_previous_deploy_starts_over(clean_stack):
    stack = clean_stack.stack
    esm = clean_stack.emulator(["features"])
    spx = bars("SPX", 8)
    clean_stack.put_bars("market-data", spx[:5])
    esm.run_until_drained()
    before = len(vectors(clean_stack.new_records("features")))

    # what feature version 1 left: the same versions and handled times, the version-1 state bytes
    version, handled, data = decode_cached_entry(cached_state(stack, "SPX"))
    old = version_1_bytes(FeatureEngine.from_bytes(data))
    stack.redis_client().set(f"{stack.stage}:features:SPX", encode_cached(version, old, handled))
    dynamodb, table = stack.client("dynamodb"), stack.name("stage-state")
    dynamodb.update_item(TableName=table, Key={"pk": {"S": "features"}, "sk": {"S": "SPX"}},
                         UpdateExpression="SET #s = :s", ExpressionAttributeNames={"#s": "state"},
                         ExpressionAttributeValues={":s": {"B": old}})

    clean_stack.put_bars("market-data", spx[4:])  # the last applied bar again, then three new ones
    stats = esm.run_until_drained()["features"]
    assert stats.item_failures == 0 and stats.retries == 0
    assert stack.read_queue("features-dlq") == []
    out = vectors(clean_stack.new_records("features"))[before:]
    assert [v.timestamp for v in out] == [b.timestamp for b in spx[5:]]
    assert [v.warmup_remaining for v in out] == [WARMUP_BARS - 1, WARMUP_BARS - 2, WARMUP_BARS - 3]
    assert stage_stats("features").restarted == 1 and stage_stats("features").duplicates == 1
    emf = [json.loads(line) for line in esm.logs("features") if line.startswith('{"_aws"')]
    assert [doc["features_state_restarted"] for doc in emf if "features_state_restarted" in doc] in ([1.0], [[1.0]])
    snapshot = dynamodb.get_item(TableName=table, Key={"pk": {"S": "features"}, "sk": {"S": "SPX"}})["Item"]
    assert FeatureEngine.from_bytes(snapshot["state"]["B"]).bars_seen == 3
