"""``ensemble-trader cache``: count or flush the stages' states in the cache (docs/runbook.md §3.1).

``cache count [--stage STAGE] [--symbol S ...]`` counts the keys of one stage (every cache stage by
default); ``cache flush --stage STAGE [--symbol S ...]`` reports what it would delete and deletes
only with ``--yes``. Both print the answer (JSON) on stdout and a summary on stderr.

Where it acts: a deployed stage (no ``ET_AWS_ENDPOINT_URL``) through its ``cache_admin`` function
(``et-<stage>-cache-admin``, invoked with the shell's AWS credentials and region; the cache admits
nothing else), which refuses to delete a stage's keys while that stage's event-source mapping is
not paused; the local stack (``ET_AWS_ENDPOINT_URL`` set, as ``ensemble-trader local up``'s exports
set it) directly on ``ET_REDIS_URL``, with the same code, refusing to delete while a ``local
drain`` runs and keeping any drain from starting until it is done. The target is printed on stderr
before anything is done there.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import symbol
    from ensemble_trader.runtime.cache_admin import CACHE_STAGES

    cache = sub.add_parser("cache", help="count or flush the stages' states in the cache (deployed or local)")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="SUBCOMMAND", required=True)

    p = cache_sub.add_parser(
        "flush", help="delete a stage's cache keys (a dry run unless --yes)",
        description="Delete the cache keys of one stage (of the named symbols only, with --symbol), which the "
                    "stage then reloads from its DynamoDB snapshots. Without --yes nothing is deleted: the "
                    "answer lists what would be. Deleting is refused while the stage still consumes records "
                    "(pause its event-source mapping first: docs/runbook.md §1 step 2).")
    p.add_argument("--stage", required=True, choices=CACHE_STAGES, help="the stage whose keys go")
    p.add_argument("--symbol", dest="symbols", action="append", metavar="SYMBOL", type=symbol,
                   help="only this symbol's key (repeat for several); default: every key of the stage")
    p.add_argument("--yes", action="store_true", help="delete (default: a dry run that deletes nothing)")
    p.set_defaults(func=partial(_run, parser=p, action="flush"))

    p = cache_sub.add_parser("count", help="count the stages' cache keys")
    p.add_argument("--stage", choices=CACHE_STAGES, help="one stage (default: every cache stage)")
    p.add_argument("--symbol", dest="symbols", action="append", metavar="SYMBOL", type=symbol,
                   help="only this symbol's key (repeat for several)")
    p.set_defaults(func=partial(_run, parser=p, action="count"))


def _payload(args: argparse.Namespace, action: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": action}
    if args.stage:
        payload["stage"] = args.stage
    if args.symbols:
        payload["symbols"] = args.symbols
    if action == "flush":
        payload["dry_run"] = not args.yes
    return payload


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, action: str) -> int:
    from ensemble_trader.domain.errors import InvalidMessageError
    from ensemble_trader.runtime.cache_admin import CacheAdminRequest
    from ensemble_trader.runtime.settings import get_settings

    payload = _payload(args, action)
    try:
        request = CacheAdminRequest.parse(payload)  # checked here too: a usage error, before any call
    except InvalidMessageError as exc:
        parser.error(str(exc))
    settings = get_settings()
    if settings.aws_endpoint_url:
        result = _local(request, settings, action)
    else:
        result = _deployed(payload, settings, action)
        if result is None:
            return 1
    print(json.dumps(result, indent=2))
    print(_summary(result), file=sys.stderr)
    return 0


def _local(request: Any, settings: Any, action: str) -> dict[str, Any]:
    """The request run here, on the local stack's Redis, while holding off ``local drain``."""
    from ensemble_trader.adapters.redis.cache import RedisCache
    from ensemble_trader.cli.local import _claim, _release
    from ensemble_trader.domain.errors import InfrastructureError
    from ensemble_trader.local.stack import state_file_path
    from ensemble_trader.runtime.cache_admin import CacheAdmin

    print(f"cache {action}: stage {settings.stage}, local stack, redis {settings.redis_url} "
          f"(ET_AWS_ENDPOINT_URL {settings.aws_endpoint_url})", file=sys.stderr)
    path = state_file_path()
    if not path.parent.is_dir():
        raise InfrastructureError(f"no local stack: the folder of its state file {path} does not exist "
                                  "(ensemble-trader local up creates it)")
    marker = path.with_name(path.name + ".drain")  # what `local drain` claims while it runs
    claim = _claim(marker)
    try:
        consumers = LocalDrainCheck(held=claim is not None, state_file=str(path))
        cache = RedisCache.from_settings(settings, prefix=f"{settings.stage}:")
        return CacheAdmin(cache, consumers).run(request)
    finally:
        if claim is not None:
            _release(marker, claim)


class LocalDrainCheck:
    """The local stack's consumers: only ``ensemble-trader local drain`` runs its handlers. ``held``:
    this command holds the drain's claim (no drain runs, none can start until it ends)."""

    def __init__(self, *, held: bool, state_file: str) -> None:
        self.held = held
        self.state_file = state_file

    def check(self, stages: Any) -> dict[str, tuple[dict[str, Any], str | None]]:
        if self.held:
            detail = {"local": "no `local drain` runs; none starts before this command ends"}
            return {stage: (detail, None) for stage in stages}
        detail = {"local": f"a `local drain` runs on the stack of {self.state_file}"}
        why = (f"an `ensemble-trader local drain` is running on the local stack ({self.state_file}): "
               "let it finish (or stop it), then flush")
        return {stage: (detail, why) for stage in stages}


def _deployed(payload: dict[str, Any], settings: Any, action: str) -> dict[str, Any] | None:
    """The stage's cache_admin function invoked with ``payload``: its answer, or None (the error
    printed) when it raised."""
    from ensemble_trader.adapters.aws.clients import aws_region
    from ensemble_trader.adapters.aws.lambda_api import invoke_json
    from ensemble_trader.runtime.cache_admin import FUNCTION_NAME, FUNCTION_TIMEOUT_S
    from ensemble_trader.runtime.settings import EnvironmentSettingError

    function = settings.name(FUNCTION_NAME)
    try:
        region = aws_region(settings)
    except EnvironmentSettingError:
        region = "(none set)"
    print(f"cache {action}: stage {settings.stage}, region {region}, function {function}", file=sys.stderr)
    answer, error = invoke_json(function, payload, wait_seconds=FUNCTION_TIMEOUT_S + 30, settings=settings)
    if error:
        kind = answer.get("errorType", error) if isinstance(answer, dict) else error
        message = answer.get("errorMessage", answer) if isinstance(answer, dict) else answer
        print(f"ensemble-trader: error: {function}: {kind}: {message}", file=sys.stderr)
        return None
    return answer


def _summary(result: dict[str, Any]) -> str:
    """One line for people: what was found and deleted, what would be, what refused."""
    per_stage = ", ".join(f"{stage} {doc['found']}" for stage, doc in result["stages"].items())
    if result["action"] == "count":
        line = f"{result['found']} keys under {result['prefix']} ({per_stage})"
    elif result["dry_run"]:
        line = f"dry run: {result['found']} keys would be deleted ({per_stage}); nothing deleted — add --yes to delete"
    else:
        line = f"deleted {result['deleted']} of {result['found']} keys found ({per_stage})"
    for stage, why in result.get("refused", {}).items():
        line += f"\nwould be refused for {stage}: {why}"
    if not result["complete"]:
        line += f"\nincomplete: {result.get('note', '')}"
    return line
