"""Cache maintenance: count or delete the stage states kept in the cache (docs/runbook.md §3.1).

The stage runners keep one key per symbol and stage, ``<deploy stage>:<stage>:<SYMBOL>``
(``dev:features:SPX``: :func:`~ensemble_trader.runtime.stage.runner_for_function` prefixes the
step's :meth:`key`). Deleting keys is safe — every state is in its DynamoDB snapshot, which the
runner reads on a miss and writes back — but only while the stage consumes nothing: a batch
running during the flush writes its states back into the cache. So a flush (``dry_run`` false) of
a stage is refused while that stage's consumer is not quiet (deployed: its event-source mapping
not ``Disabled``, or disabled less than the function's timeout ago; local: a ``local drain``
running), and a dry run or a count only reports it.

Only ``SCAN`` (``MATCH <prefix><stage>:*``, never ``KEYS``), ``EXISTS`` and ``DEL`` are sent,
single-key commands in bounded pipelines: what the deployed cache user (access string
``on ~* +@all -@dangerous``) may run, in the cluster mode of ElastiCache Serverless. A flush of
named symbols deletes their exact keys, so a symbol is never read as a pattern.

Entry points: the ``cache_admin`` Lambda (``functions/cache_admin/handler.py``, invoked by an
operator) with :func:`build_cache_admin`, and ``ensemble-trader cache`` on the local stack.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import Field, StrictBool, ValidationInfo, field_validator, model_validator

from ensemble_trader import constants
from ensemble_trader.domain.errors import EnsembleTraderError
from ensemble_trader.domain.models import Message, Symbol
from ensemble_trader.runtime.deadline import time_left
from ensemble_trader.runtime.settings import EnvironmentSettingError, Settings, get_settings

CacheStage = Literal["features", "regime", "meta_agent"]
CACHE_STAGES: tuple[str, ...] = ("features", "regime", "meta_agent")
"""The stages whose runners keep per-symbol state in the cache (the Kinesis-fed functions), in
pipeline order: their step names, which are the second part of every key."""

MAPPINGS_ENV = "ET_CACHE_ADMIN_MAPPINGS"
"""The deployed function's map of stage -> UUID of the event-source mapping feeding it (JSON)."""

FUNCTION_NAME = "cache-admin"
"""The function's logical name: ``et-<stage>-cache-admin`` (``Settings.name``)."""
FUNCTION_TIMEOUT_S = 60
"""The deployed function's timeout (the CDK app reads it); ``ensemble-trader cache`` waits longer."""

MAX_SYMBOLS = 1000
"""At most this many symbols in one request."""
SCAN_COUNT = 1000
"""``SCAN``'s ``COUNT``: about this many keys looked at per round trip."""
DELETE_BATCH = 500
"""At most this many ``DEL`` commands in one pipeline."""
LISTED_SYMBOLS = 1000
"""A report lists at most this many symbols per stage (the count is always complete)."""
TIME_MARGIN_S = 5.0
"""Inside a Lambda invocation, no new page is scanned with less than this left: the answer
(what was deleted so far) must still go out. A flush stopped there says so (``complete`` false)
and is finished by running it again."""


class CacheFlushRefusedError(EnsembleTraderError):
    """A flush that would race a stage still consuming: ``stage`` and ``reason`` (what runs, what
    to do). Nothing was deleted."""

    def __init__(self, stage: str, reason: str) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(f"cache flush of {stage} refused, nothing deleted: {reason}")


class CacheAdminRequest(Message):
    """What an operator asks of the cache (the ``cache_admin`` function's payload).

    ``action`` ``"count"`` counts the keys of ``stage`` (every cache stage when omitted);
    ``"flush"`` deletes those of ``stage`` (required) — of ``symbols`` only when given — and with
    ``dry_run`` (the default) only reports what it would delete. ``symbols`` are tickers as the
    bars carry them (upper case: ``SPX``, ``^GSPC``, ``BTC/USD``), repeated ones counted once.
    Anything else (an unknown field, ``dry_run`` as text, an unknown stage, a blank symbol, a
    count with ``dry_run`` false) raises :class:`~ensemble_trader.domain.errors.InvalidMessageError`
    naming the field (:meth:`parse`).
    """

    action: Literal["flush", "count"]
    stage: CacheStage | None = Field(default=None, validate_default=True)
    symbols: tuple[Symbol, ...] | None = None
    dry_run: StrictBool = Field(default=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _symbols_given_or_left_out(cls, data: Any) -> Any:
        # an explicit null would read as "no symbols field": every key of the stage
        if isinstance(data, dict) and "symbols" in data and data["symbols"] is None:
            raise ValueError("symbols is null: leave the field out to flush every key of the stage, or name symbols")
        return data

    @field_validator("stage")
    @classmethod
    def _flush_names_its_stage(cls, stage: str | None, info: ValidationInfo) -> str | None:
        if stage is None and info.data.get("action") == "flush":
            raise ValueError(f"a flush names the stage whose keys it deletes: one of {', '.join(CACHE_STAGES)}")
        return stage

    @field_validator("symbols")
    @classmethod
    def _once_each(cls, symbols: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if symbols is None:
            return None
        if not 1 <= len(symbols) <= MAX_SYMBOLS:
            raise ValueError(f"1 to {MAX_SYMBOLS} symbols, or no 'symbols' field for every key of the stage")
        return tuple(dict.fromkeys(symbols))

    @field_validator("dry_run")
    @classmethod
    def _count_deletes_nothing(cls, dry_run: bool, info: ValidationInfo) -> bool:
        if not dry_run and info.data.get("action") == "count":
            raise ValueError("a count deletes nothing: dry_run false is only for a flush")
        return dry_run

    @property
    def stages(self) -> tuple[str, ...]:
        return (self.stage,) if self.stage else CACHE_STAGES

    @property
    def deletes(self) -> bool:
        return self.action == "flush" and not self.dry_run


class StageConsumers(Protocol):
    """Who consumes each stage's records now. ``check(stages)`` gives, per stage, what to report
    and why a flush of that stage must wait (None: it need not)."""

    def check(self, stages: Sequence[str]) -> dict[str, tuple[dict[str, Any], str | None]]: ...


class CacheKeys(Protocol):
    """What this module needs of the cache (:class:`~ensemble_trader.adapters.redis.cache.RedisCache`)."""

    prefix: str

    def scan_names(self, key_prefix: str = "", *, count: int = ...) -> Any: ...

    def name_of(self, key: str) -> bytes: ...

    def exist_names(self, names: Sequence[bytes]) -> list[bool]: ...

    def delete_names(self, names: Sequence[bytes]) -> int: ...


@dataclass
class StageReport:
    """The keys of one stage: ``found`` (existing when looked at), ``deleted`` (gone by this run),
    the symbols they belong to and, for named symbols, those without a key."""

    stage: str
    found: int = 0
    deleted: int = 0
    symbols: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        listed = sorted(self.symbols)
        doc: dict[str, Any] = {"found": self.found, "deleted": self.deleted, "symbols": listed[:LISTED_SYMBOLS]}
        if len(listed) > LISTED_SYMBOLS:
            doc["symbols_not_listed"] = len(listed) - LISTED_SYMBOLS
        if self.missing:
            doc["missing"] = self.missing
        return doc


class CacheAdmin:
    """Counts and flushes stage keys under ``cache.prefix`` (the deploy stage, ``dev:``)."""

    def __init__(
        self,
        cache: CacheKeys,
        consumers: StageConsumers,
        *,
        scan_count: int = SCAN_COUNT,
        delete_batch: int = DELETE_BATCH,
        time_left: Callable[[], float | None] = time_left,
    ) -> None:
        if scan_count < 1 or delete_batch < 1:
            raise ValueError(f"scan_count and delete_batch must be >= 1, got {scan_count}, {delete_batch}")
        self.cache = cache
        self.consumers = consumers
        self.scan_count = scan_count
        self.delete_batch = delete_batch
        self._time_left = time_left

    def run(self, request: CacheAdminRequest) -> dict[str, Any]:
        """Do what ``request`` asks and report it::

            {"action": "flush", "dry_run": false, "prefix": "dev:", "complete": true,
             "found": 2, "deleted": 2,
             "stages": {"features": {"found": 2, "deleted": 2, "symbols": ["IXIC", "SPX"]}},
             "consumers": {"features": {"mapping": "<uuid>", "state": "Disabled", ...}}}

        A flush that deletes refuses (:class:`CacheFlushRefusedError`, before any key is touched)
        while a named stage's consumer is not quiet; a dry run and a count report it under
        ``"refused"`` per stage instead. Inside a Lambda invocation with less than
        :data:`TIME_MARGIN_S` left, no further page is scanned: ``complete`` is then false."""
        stages = request.stages
        consumers = self.consumers.check(stages)
        busy = {stage: why for stage, (_, why) in consumers.items() if why}
        if request.deletes:
            for stage in stages:
                if stage in busy:
                    raise CacheFlushRefusedError(stage, busy[stage])
        reports = {stage: StageReport(stage) for stage in stages}
        complete = True
        for stage in stages:
            if request.symbols is not None:
                self._symbols(reports[stage], request.symbols, delete=request.deletes)
            elif not self._whole_stage(reports[stage], delete=request.deletes):
                complete = False
                break
        doc: dict[str, Any] = {"action": request.action}
        if request.action == "flush":
            doc["dry_run"] = request.dry_run
        doc |= {
            "prefix": self.cache.prefix,
            "complete": complete,
            "found": sum(r.found for r in reports.values()),
            "deleted": sum(r.deleted for r in reports.values()),
            "stages": {stage: r.as_dict() for stage, r in reports.items()},
            "consumers": {stage: detail for stage, (detail, _) in consumers.items()},
        }
        if busy and not request.deletes:
            doc["refused"] = {stage: busy[stage] for stage in stages if stage in busy}
        if not complete:
            doc["note"] = "stopped before the invocation's end: run the same request again to finish"
        return doc

    def _symbols(self, report: StageReport, symbols: Sequence[str], *, delete: bool) -> None:
        for start in range(0, len(symbols), self.delete_batch):
            chunk = symbols[start:start + self.delete_batch]
            names = [self.cache.name_of(f"{report.stage}:{symbol}") for symbol in chunk]
            present = []
            for symbol, name, there in zip(chunk, names, self.cache.exist_names(names), strict=True):
                if there:
                    report.symbols.append(symbol)
                    present.append(name)
                else:
                    report.missing.append(symbol)
            report.found += len(present)
            if delete:
                report.deleted += self.cache.delete_names(present)

    def _whole_stage(self, report: StageReport, *, delete: bool) -> bool:
        """Every key under ``<prefix><stage>:``; False when stopped for time."""
        head = self.cache.name_of(f"{report.stage}:")
        seen: set[bytes] = set()
        pending: list[bytes] = []
        for page in self.cache.scan_names(f"{report.stage}:", count=self.scan_count):
            new = [name for name in page if name not in seen]  # SCAN may return a key twice
            seen.update(new)
            report.found += len(new)
            report.symbols += [name[len(head):].decode("utf-8", errors="backslashreplace") for name in new]
            if delete:
                pending += new
                while len(pending) >= self.delete_batch:
                    report.deleted += self.cache.delete_names(pending[:self.delete_batch])
                    del pending[:self.delete_batch]
            left = self._time_left()
            if left is not None and left < TIME_MARGIN_S:
                report.deleted += self.cache.delete_names(pending) if delete else 0
                return False
        if delete:
            report.deleted += self.cache.delete_names(pending)
        return True


def quiet_seconds(stage: str) -> float:
    """How long a batch of ``stage`` can run: its function's timeout (constants)."""
    return float(constants.function_spec(stage).timeout_seconds)


def mapping_ids_from_env(environ: Any = None) -> dict[str, str]:
    """The stage -> mapping UUID map of :data:`MAPPINGS_ENV` (a JSON object; ``{}`` when no stage
    function is deployed). Unset, or not such an object, it raises EnvironmentSettingError: a
    function that could not look at the mappings must not flush."""
    import json

    environ = os.environ if environ is None else environ
    raw = environ.get(MAPPINGS_ENV)
    if raw is None or not raw.strip():
        raise EnvironmentSettingError(MAPPINGS_ENV, "unset: the UUIDs of the stages' event-source mappings "
                                                    "(a JSON object stage -> UUID, set by the CDK app)")
    try:
        loaded = json.loads(raw)
    except ValueError as exc:
        raise EnvironmentSettingError(MAPPINGS_ENV, f"not valid JSON ({exc}): {raw!r}") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, str) and v for v in loaded.values()):
        raise EnvironmentSettingError(MAPPINGS_ENV, f"must be a JSON object of stage -> mapping UUID: {raw!r}")
    unknown = sorted(set(loaded) - set(CACHE_STAGES))
    if unknown:
        raise EnvironmentSettingError(MAPPINGS_ENV, f"names no cache stage: {', '.join(unknown)} "
                                                    f"(known: {', '.join(CACHE_STAGES)})")
    return loaded


def build_cache_admin(settings: Settings | None = None, *, clock: Callable[[], float] = time.time) -> CacheAdmin:
    """The deployed function's admin: the cache of ``ET_REDIS_URL`` (IAM auth as the app user),
    prefixed with the stage as the runners prefix it, and the mappings of :data:`MAPPINGS_ENV`."""
    from ensemble_trader.adapters.aws.lambda_api import EventSourceMappingCheck
    from ensemble_trader.adapters.redis.cache import RedisCache

    settings = settings or get_settings()
    consumers = EventSourceMappingCheck(mapping_ids_from_env(), quiet_seconds, settings=settings, clock=clock)
    return CacheAdmin(RedisCache.from_settings(settings, prefix=f"{settings.stage}:"), consumers)
