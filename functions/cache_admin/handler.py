"""cache_admin Lambda: the operator's way into the deployed cache (docs/runbook.md §3.1).

No event source: an operator invokes it (``ensemble-trader cache flush|count``, or ``aws lambda
invoke``) with a :class:`~ensemble_trader.runtime.cache_admin.CacheAdminRequest`::

    {"action": "flush", "stage": "features", "symbols": ["SPX"], "dry_run": false}
    {"action": "count"}

It runs in the VPC on the functions' security group and connects as the cache's application user
(IAM authentication), so it can send only what the stage functions can: it scans
(``SCAN MATCH``) and deletes (``DEL``) the stage's keys, never ``KEYS`` or ``FLUSH*``. A flush
that deletes is refused while the stage's event-source mapping is not paused
(:class:`~ensemble_trader.runtime.cache_admin.CacheFlushRefusedError`); a bad payload raises
``InvalidMessageError`` naming the field. Either way the caller sees the error in the answer
(``FunctionError``); nothing is retried.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from ensemble_trader.runtime.cache_admin import (
    CacheAdmin,
    CacheAdminRequest,
    CacheFlushRefusedError,
    build_cache_admin,
)
from ensemble_trader.runtime.deadline import invocation_deadline
from ensemble_trader.runtime.observability import observability

obs = observability("cache_admin")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@lru_cache(maxsize=1)
def admin() -> CacheAdmin:
    """The cache client and the mapping check, built once per container."""
    return build_cache_admin()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = CacheAdminRequest.parse(event)
    logger.info("cache admin request", extra={"request": request.model_dump(mode="json")})
    try:
        with invocation_deadline(context):
            result = admin().run(request)
    except CacheFlushRefusedError as exc:
        logger.error("cache flush refused: %s", exc.reason, extra={"stage": exc.stage})
        raise
    metrics.add_metric(name="cache_admin_keys_found", unit="Count", value=result["found"])
    metrics.add_metric(name="cache_admin_keys_deleted", unit="Count", value=result["deleted"])
    # a deletion is an operator's act on live state: logged as a warning, like the kill switch
    log = logger.warning if result["deleted"] else logger.info
    log("cache %s: %d keys found, %d deleted", request.action, result["found"], result["deleted"], extra=result)
    return result
