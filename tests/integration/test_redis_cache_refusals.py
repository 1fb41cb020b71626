"""A real redis-server refusing writes (``NOREPLICAS``, as a primary without its replicas does):
the error RedisCache raises names the operation, the key and Redis's error, not the state's
bytes that redis-py's pipeline message quotes (the stage runner logs it as a warning)."""

from __future__ import annotations

import pytest
from ensemble_trader.adapters.redis.cache import RedisCache
from ensemble_trader.domain.errors import InfrastructureError

PAYLOAD = b"\x00\x01\x02PAYLOAD-OF-THE-STATE\xfe\xff" * 20


def test_a_write_redis_refuses_is_reported_without_the_state(local_stack):
    redis = local_stack.redis_client()
    cache = RedisCache(redis, prefix="refusals:")
    redis.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(InfrastructureError) as caught:
            cache.set_many({"features:SPY": PAYLOAD, "features:QQQ": PAYLOAD})
    finally:
        redis.config_set("min-replicas-to-write", 0)
    message = str(caught.value)
    assert message.startswith("Redis SET of 2 keys failed at refusals:features:SPY (and 1 other keys): NOREPLICAS")
    assert "PAYLOAD" not in message and "\x00" not in message and "\ufffd" not in message
    assert "Command #" not in message
    cache.set_many({"features:SPY": PAYLOAD})  # accepted again
    assert cache.get("features:SPY") == PAYLOAD
    cache.delete("features:SPY")
