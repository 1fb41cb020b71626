"""Adapters (review) against the local stack's moto server and real redis-server: a refusal
no retry can fix is a DataError, a stray key of another type in Redis a miss."""

from __future__ import annotations

import uuid

import pytest
from ensemble_trader.domain.errors import ConcurrencyError, DataError


def test_a_cache_key_of_another_type_is_a_miss_on_a_real_redis(local_stack):
    import redis
    from ensemble_trader.adapters.redis.cache import RedisCache

    prefix = f"review-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(local_stack.settings.redis_url)
    cache = RedisCache.from_url(local_stack.settings.redis_url, prefix=prefix)
    try:
        cache.set_many({"features:AAA": b"1"})
        client.hset(f"{prefix}features:BBB", "f", "v")
        assert cache.get_many(["features:AAA", "features:BBB", "features:CCC"]) == [b"1", None, None]
        cache.set_many({"features:BBB": b"2"})  # the next write replaces it
        assert cache.get_many(["features:BBB"]) == [b"2"]
    finally:
        client.delete(*client.keys(f"{prefix}*"))


def test_dynamodb_refusals_are_data_errors_and_numbers_write_back(local_stack):
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore

    store = DynamoKeyValueStore(local_stack.client("dynamodb"), settings=local_stack.settings)
    key = {"pk": "review", "sk": uuid.uuid4().hex}
    with pytest.raises(DataError, match="et-local-stage-state.*(?i:item size)"):
        store.put_item("stage-state", {**key, "version": 1, "state": b"x" * 410_000}, expected_version=0)
    with pytest.raises(DataError, match="et-local-stage-state.*refused by DynamoDB"):
        store.put_item("stage-state", {"pk": "", "sk": "x", "version": 1})
    store.put_item("stage-state", {**key, "note": "no version"})
    with pytest.raises(ConcurrencyError):
        store.put_item("stage-state", {**key, "version": 1}, expected_version=0)
    store.put_item("stage-state", {**key, "version": 1, "big": 1e40, "two": 2.0})
    got = store.get_item("stage-state", key)
    assert got["big"] == 1e40 and type(got["big"]) is float and got["two"] == 2 and type(got["version"]) is int
    store.put_item("stage-state", {**got, "version": 2}, expected_version=1)


def test_an_sqs_batch_refusal_is_a_data_error_at_once(local_stack):
    from ensemble_trader.adapters.aws._retry import resend_failed

    sqs = local_stack.client("sqs")
    url = local_stack.queue_url("features-dlq")
    calls, sleeps = [], []

    def send(pending):
        calls.append(len(pending))
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "0", "MessageBody": "a"}, {"Id": "0", "MessageBody": "b"}])
        return [], ""

    with pytest.raises(DataError, match="BatchEntryIdsNotDistinct"):
        resend_failed(send, [1], max_attempts=4, base_delay_s=0.01, sleep=sleeps.append)
    assert calls == [1] and sleeps == []
