"""``RedisCache``: the :class:`ensemble_trader.ports.Cache` port over redis-py."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ensemble_trader.domain.errors import InfrastructureError

log = logging.getLogger(__name__)

GLOB_SPECIAL = frozenset("*?[]\\")
"""The characters a Redis glob pattern (``SCAN MATCH``, ``KEYS``) gives a meaning: ``*`` and ``?``,
``[...]`` sets, and ``\\``, which makes the character after it literal."""


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob pattern that matches exactly ``text``: each of
    :data:`GLOB_SPECIAL` preceded by a backslash (``a*b`` -> ``a\\*b``)."""
    return "".join("\\" + c if c in GLOB_SPECIAL else c for c in text)


class RedisCache:
    """Bytes by key in Redis: one pipelined batch of ``GET``s per read, of ``SET``s per write.

    Every redis error (connection refused, timeout, ``NOREPLICAS``, ``OOM``, ...) becomes an
    :class:`InfrastructureError`, which the stage runner treats as transient. ``ttl_seconds``
    sets an expiry on written keys (``None``: keep them; the cache is rebuilt from DynamoDB
    snapshots after an eviction anyway). ``prefix`` namespaces the keys of one stage.
    """

    def __init__(self, client: Any, *, prefix: str = "", ttl_seconds: int | None = None) -> None:
        self._client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "",
        ttl_seconds: int | None = None,
        timeout_s: float = 2.0,
        read_timeout_s: float = 1.0,
        credential_provider: Any = None,
    ) -> RedisCache:
        """A cache over a new connection pool to ``url`` (``redis://host:port/db``, ``rediss://``).

        ``credential_provider`` (a redis-py ``CredentialProvider``) supplies the user and password
        of each new connection, e.g. the IAM token of ElastiCache Serverless. ``timeout_s`` bounds
        a connect, ``read_timeout_s`` a reply. One retry (a pooled connection the server closed
        while idle is replaced): redis-py retries the connection's handshake inside each attempt,
        so against an endpoint that accepts connections and never answers a call costs
        ``(retries + 1)²`` reply timeouts — 4 s here, 18.5 s with two retries and 2 s — and the
        stage runner reads the snapshots instead once it gives up.
        """
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url,
            socket_timeout=read_timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            # fail fast: the stage runner works from the DynamoDB snapshots when the cache fails
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
            credential_provider=credential_provider,
        )
        return cls(client, prefix=prefix, ttl_seconds=ttl_seconds)

    @classmethod
    def from_settings(cls, settings: Any, *, prefix: str = "", ttl_seconds: int | None = None) -> RedisCache:
        """The cache a handler uses: ``ET_REDIS_URL``, with IAM auth when ``ET_REDIS_IAM_USER`` is set."""
        provider = None
        if settings.redis_iam_user:
            from ensemble_trader.adapters.aws.elasticache_auth import ElastiCacheIAMProvider

            if not settings.redis_cache_name:
                raise ValueError("ET_REDIS_IAM_USER is set but ET_REDIS_CACHE_NAME is not")
            from ensemble_trader.adapters.aws.clients import aws_region

            provider = ElastiCacheIAMProvider(settings.redis_cache_name, settings.redis_iam_user, aws_region(settings))
        return cls.from_url(settings.redis_url, prefix=prefix, ttl_seconds=ttl_seconds, credential_provider=provider)

    @property
    def client(self) -> Any:
        return self._client

    def _k(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One round trip: a pipeline of single-key GETs, not an MGET — ElastiCache Serverless
        is cluster-mode, where a multi-key command across hash slots fails with CROSSSLOT.

        A key holding another type than a string (``WRONGTYPE``: a stray ``HSET`` by hand) is a
        miss, logged, and the other keys read normally: failing the whole read would fail every
        symbol of the batch, on every retry, until someone deleted the key (the next write of
        the key replaces it). Any other error, for the pipeline or one key, is an
        InfrastructureError."""
        if not keys:
            return []
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.get(self._k(key))
            results = list(pipe.execute(raise_on_error=False))
        except Exception as exc:  # redis.RedisError and socket errors alike
            raise InfrastructureError(f"Redis GET of {len(keys)} keys failed: {exc}") from exc
        for i, (key, result) in enumerate(zip(keys, results, strict=True)):
            if isinstance(result, Exception):
                if not str(result).startswith("WRONGTYPE"):
                    raise InfrastructureError(f"Redis GET of {len(keys)} keys failed at {self._k(key)}: "
                                              f"{result}") from result
                log.warning("Redis key %s holds another type than a string (%s): read as a miss",
                            self._k(key), result)
                results[i] = None
        return results

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """One round trip of ``SET``s. A refusal names the operation, the key and Redis's error,
        never the value: redis-py's own message for a failed pipeline command quotes the command
        with its arguments, i.e. the state's raw bytes, which the stage runner would log."""
        if not items:
            return
        keys = [self._k(key) for key in items]
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, value in zip(keys, items.values(), strict=True):
                pipe.set(key, value, ex=self.ttl_seconds)
            results = list(pipe.execute(raise_on_error=False))
        except Exception as exc:
            raise InfrastructureError(f"Redis SET of {len(items)} keys failed: {exc}") from exc
        _raise_refused("SET", keys, results)
        unwritten = [key for key, result in zip(keys, results, strict=True) if not result]
        if unwritten:
            raise InfrastructureError(f"Redis SET of {len(items)} keys: {len(unwritten)} not written, "
                                      f"first {unwritten[0]}")

    def delete(self, *keys: str) -> None:
        if not keys:
            return
        names = [self._k(key) for key in keys]
        try:
            pipe = self._client.pipeline(transaction=False)  # one key per command (see get_many)
            for name in names:
                pipe.delete(name)
            results = list(pipe.execute(raise_on_error=False))
        except Exception as exc:
            raise InfrastructureError(f"Redis DEL of {len(keys)} keys failed: {exc}") from exc
        _raise_refused("DEL", names, results)


    # -- maintenance (the cache_admin function): whole key names, as Redis stores them -----------

    def scan_names(self, key_prefix: str = "", *, count: int = 1000) -> Iterator[list[bytes]]:
        """Pages of the names of the keys beginning with ``prefix + key_prefix``: ``SCAN`` with
        ``MATCH`` (the prefix glob-escaped, then ``*``) and ``COUNT count`` from cursor 0 until
        Redis answers cursor 0 again. Names are whole (``prefix`` included) and as stored (bytes).

        ``SCAN`` returns every key present for the whole iteration at least once, possibly twice,
        and blocks Redis for one page only (never ``KEYS``). A page may be empty. Deleting keys
        between pages is allowed. A Redis error (a refused command included) is an
        InfrastructureError naming the pattern."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        pattern = glob_escape(self._k(key_prefix)) + "*"
        cursor: int | bytes = 0
        while True:
            try:
                cursor, names = self._client.scan(cursor=cursor, match=pattern, count=count)
            except Exception as exc:
                raise InfrastructureError(f"Redis SCAN MATCH {pattern} failed: {exc}") from exc
            yield [name if isinstance(name, bytes) else str(name).encode() for name in names]
            if int(cursor) == 0:
                return

    def name_of(self, key: str) -> bytes:
        """The whole name (prefix included, as stored) of ``key``."""
        return self._k(key).encode()

    def exist_names(self, names: Sequence[bytes]) -> list[bool]:
        """Whether each whole key name exists: one round trip of single-key ``EXISTS`` (cluster
        mode refuses a multi-key command across hash slots, see :meth:`get_many`)."""
        return [bool(r) for r in self._each("EXISTS", names)]

    def delete_names(self, names: Sequence[bytes]) -> int:
        """``DEL`` each whole key name (one key per command, one round trip); the number of keys
        that existed and are gone. A refusal is an InfrastructureError naming the first key
        refused (the keys before it in the pipeline are deleted all the same)."""
        return sum(int(r) for r in self._each("DEL", names))

    def _each(self, command: str, names: Sequence[bytes]) -> list[Any]:
        """``command`` (``EXISTS`` or ``DEL``) on each whole key name, one key per command, in one
        pipelined round trip; a refusal is an InfrastructureError naming the first key refused."""
        if not names:
            return []
        try:
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.execute_command(command, name)
            results = list(pipe.execute(raise_on_error=False))
        except Exception as exc:
            raise InfrastructureError(f"Redis {command} of {len(names)} keys failed: {exc}") from exc
        _raise_refused(command, [_text(n) for n in names], results)
        return results


def _text(name: bytes) -> str:
    """A key name for a message (bytes that are not UTF-8 shown as escapes)."""
    return name.decode("utf-8", errors="backslashreplace")


def _raise_refused(operation: str, keys: Sequence[str], results: Sequence[Any]) -> None:
    """An InfrastructureError naming the operation, the first key Redis refused and its error (as
    Redis sent it: ``execute(raise_on_error=False)`` leaves the errors unannotated, so no command
    arguments in them), if any command of the pipeline was refused."""
    refused = [(key, result) for key, result in zip(keys, results, strict=True) if isinstance(result, Exception)]
    if refused:
        key, error = refused[0]
        others = f" (and {len(refused) - 1} other keys)" if len(refused) > 1 else ""
        raise InfrastructureError(f"Redis {operation} of {len(keys)} keys failed at {key}{others}: "
                                  f"{error}") from error
