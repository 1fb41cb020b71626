"""RedisCache: a command Redis refuses is reported by operation, key and Redis's error — never
with the value. redis-py's message for a failed pipeline command quotes the command with its
arguments ("Command # 1 (SET <key> <raw state bytes> ...) of pipeline caused error: ..."), and
the stage runner logs a failed write-back as a warning, which printed the state's binary bytes.

Redis refuses here through an ACL (fakeredis enforces it): the default user may not SET or DEL,
or may only write keys under one pattern.
"""

from __future__ import annotations

import fakeredis
import pytest
from ensemble_trader.adapters.redis.cache import RedisCache
from ensemble_trader.domain.errors import InfrastructureError

PAYLOAD = b"\x00\x01\x02PAYLOAD-OF-THE-STATE\xfe\xff" * 20


def _cache(*, commands: list[str], keys: list[str] | None = None) -> tuple[RedisCache, fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    client.set("local:features:SPY", b"old")
    client.acl_setuser("default", enabled=True, nopass=True, reset_keys=True, keys=keys or ["*"],
                       commands=["-@all", "+acl", "+ping", "+get", *commands])
    return RedisCache(client, prefix="local:"), client


def _assert_no_payload(message: str) -> None:
    assert "PAYLOAD" not in message and "\x00" not in message and "\ufffd" not in message, message
    assert "Command #" not in message and "pipeline" not in message, message


def test_a_refused_write_names_the_operation_the_key_and_the_error_not_the_state():
    cache, client = _cache(commands=["+del"])
    with pytest.raises(InfrastructureError) as caught:
        cache.set_many({"features:SPY": PAYLOAD})
    message = str(caught.value)
    _assert_no_payload(message)
    assert message.startswith("Redis SET of 1 keys failed at local:features:SPY: ")
    assert "no permissions to run the 'set' command" in message
    assert client.get("local:features:SPY") == b"old"


def test_the_first_refused_key_is_named_with_the_number_of_others():
    cache, client = _cache(commands=["+set", "+del"], keys=["local:features:A*"])
    items = {"features:AAA": PAYLOAD, "features:BBB": PAYLOAD, "features:CCC": PAYLOAD}
    with pytest.raises(InfrastructureError) as caught:
        cache.set_many(items)
    message = str(caught.value)
    _assert_no_payload(message)
    assert message.startswith("Redis SET of 3 keys failed at local:features:BBB (and 1 other keys): ")
    assert "No permissions to access a key" in message
    assert client.get("local:features:AAA") == PAYLOAD  # the others of the pipeline were written


def test_a_refused_delete_names_the_operation_and_the_key():
    cache, client = _cache(commands=["+set"])
    with pytest.raises(InfrastructureError) as caught:
        cache.delete("features:SPY")
    message = str(caught.value)
    _assert_no_payload(message)
    assert message.startswith("Redis DEL of 1 keys failed at local:features:SPY: ")
    assert "no permissions to run the 'del' command" in message
    assert client.get("local:features:SPY") == b"old"


def test_writes_and_deletes_that_redis_accepts_still_succeed():
    cache, client = _cache(commands=["+set", "+del"])
    cache.set_many({"features:SPY": PAYLOAD, "features:QQQ": b"q"})
    assert cache.get_many(["features:SPY", "features:QQQ"]) == [PAYLOAD, b"q"]
    cache.delete("features:SPY", "features:QQQ")
    assert cache.get_many(["features:SPY", "features:QQQ"]) == [None, None]


def test_a_silent_endpoint_costs_a_few_reply_timeouts_not_nine(monkeypatch):
    # an endpoint that accepts connections and never answers: redis-py retries the handshake
    # inside every attempt, so the replies waited for grow as (retries + 1)²; with one retry the
    # stage gives up after four and reads its snapshots (two retries: nine, 18.5 s at 2 s each)
    import socket

    import redis.connection

    reads = []
    real = redis.connection.AbstractConnection.read_response

    def counting(self, *args, **kwargs):
        reads.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", counting)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        cache = RedisCache.from_url(f"redis://127.0.0.1:{server.getsockname()[1]}/0", read_timeout_s=0.05)
        with pytest.raises(InfrastructureError, match="Timeout reading"):
            cache.get_many(["a"])
    assert len(reads) == 4
