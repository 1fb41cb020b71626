"""Entry point of the CDK app: ``python -m infra_cdk.app`` (``cdk.json`` runs exactly that).

Context: ``-c stage=dev|staging|prod`` (default ``dev``), ``-c broker=paper|alpaca|alpaca-live``
(required for ``staging`` and ``prod``, ``paper`` included, so a redeploy that forgets it is refused
instead of switching the stage's orders functions to another broker; ``dev`` defaults to ``paper``;
``alpaca`` trades on Alpaca's paper endpoint, ``alpaca-live`` with real money
and needs ``-c max_intent_age_seconds=N``; both Alpaca brokers need ``-c initial_equity=N``, the
account's equity, since the orders functions never ask the broker for it),
``-c symbols=SPY,QQQ`` (the symbols traded: the daily regime refit fits on them and the orders
functions split the account between them; required for ``staging`` and ``prod`` like the broker,
so a redeploy that forgets it is refused instead of moving the stage to trading ``SPY`` alone;
``dev`` defaults to ``SPY``),
``-c training_image_tag=<tag>`` (default: the package version, e.g. ``0.1.0``, since the image
repository's tags are immutable), ``-c alarm_email=<address>`` or
``ET_ALARM_EMAIL`` (optional SNS e-mail subscription of the alarm topic). The assembly is
written to ``$CDK_OUTDIR`` (set by the cdk CLI) or ``cdk.out``. Synthesis is offline and needs no
Docker; it needs the layer folders from ``python layers/build.py``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, ServerlessChecks
from ensemble_trader import __version__
from ensemble_trader.domain.models import SYMBOL_PATTERN

from infra_cdk.config import StageConfig, UnknownStageError, stage_config
from infra_cdk.stacks.trader import TraderStack

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = ROOT / "functions"
LAYERS_DIR = ROOT / "build" / "layers"


FEATURE_FLAGS = {
    # Grant S3 log delivery through a bucket policy instead of the legacy LogDeliveryWrite ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    # Hash the function's layers into its current version: without it a deploy that changes only a
    # layer (core: all domain code, the agents and regime models) updates $LATEST but publishes no
    # new version, so the `live` aliases (features, regime, meta_agent) keep the old code while the
    # unversioned functions run the new one.
    "@aws-cdk/aws-lambda:recognizeLayerVersion": True,
}
"""CDK feature flags, kept here only (not in cdk.json): ``python -m infra_cdk.app``, the cdk CLI and
the tests synthesise the same template."""


class InvalidContextError(ValueError):
    """A ``-c key=value`` context value the app does not accept."""


ALPACA_BROKERS = ("alpaca", "alpaca-live")
BROKERS = ("paper", *ALPACA_BROKERS)


def _stage_context(app: cdk.App, config: StageConfig, key: str, example: str, loses: str) -> Any:
    """The ``key`` context, None when not given (or blank); a stage with
    ``explicit_context_required`` (staging, prod) refuses to synthesise without it, saying what a
    redeploy that forgot it would ``lose``."""
    raw = app.node.try_get_context(key)
    if raw is not None and str(raw).strip() != "":
        return raw
    if config.explicit_context_required:
        raise InvalidContextError(
            f"context {key} is required for stage {config.name!r}: give -c {key}={example} "
            "(make deploy CDK_CONTEXT=\"...\"; in CI the variable "
            f"{config.name.upper()}_CDK_CONTEXT), so that a redeploy which forgets it cannot {loses} "
            "(docs/deployment.md)"
        )
    return None


def _broker(app: cdk.App, config: StageConfig) -> str:
    """The ``broker`` context: one of :data:`BROKERS`. A stage with ``explicit_context_required`` (staging,
    prod) refuses to synthesise without it: the broker lives only in each deploy's context, so a
    default would silently move a stage that trades Alpaca to the paper broker at the next redeploy
    that omits it (real orders and positions left unmanaged). Dev defaults to ``paper``."""
    raw = _stage_context(app, config, "broker", "paper|alpaca|alpaca-live, paper too",
                         "move an Alpaca stage's orders functions to the paper broker")
    if raw is None:
        return BROKERS[0]
    value = str(raw)
    if value not in BROKERS:
        raise InvalidContextError(f"context broker={value!r} is not one of {BROKERS}")
    return value


def _positive_number(app: cdk.App, key: str, unit: str) -> float | None:
    """The ``key`` context as a positive, finite number of ``unit`` (None when not given); anything
    else (a word, 0, a negative number, inf, nan, true) stops the synth naming the context."""
    raw = app.node.try_get_context(key)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        if isinstance(raw, bool):  # a JSON true in cdk.json is no number (float(True) is 1.0)
            raise TypeError(raw)
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidContextError(f"context {key}={raw!r} is not a number of {unit}") from None
    if not (value > 0 and value < float("inf")):
        raise InvalidContextError(f"context {key}={raw!r} must be a positive number of {unit}")
    return value


DEFAULT_EQUITY_TEXT = "$1,000,000"  # ET_ORDERS_INITIAL_EQUITY's default (OrdersSettings.initial_equity)


def _required_for(broker_kind: str, config: StageConfig) -> list[str]:
    """The contexts ``broker_kind`` needs that were not given, each with the reason."""
    needed = []
    if broker_kind == "alpaca-live" and config.max_intent_age_seconds is None:
        needed.append(
            "-c max_intent_age_seconds=N, so an intent retried or redriven long after its bar is refused "
            "instead of traded"
        )
    if broker_kind in ALPACA_BROKERS and config.initial_equity is None:
        needed.append(
            "-c initial_equity=N (the Alpaca account's equity in dollars), so orders and the loss and drawdown "
            f"limits are sized for that account instead of the default {DEFAULT_EQUITY_TEXT}"
        )
    return needed


DEFAULT_SYMBOLS = "SPY"  # dev's symbols when -c symbols is not given


def _symbols(app: cdk.App, config: StageConfig) -> tuple[str, ...]:
    """The ``symbols`` context: a comma-separated string (``-c symbols=SPY,QQQ``) or a list of
    strings (``cdk.json``), each a symbol the bars can carry, none twice (a symbol named twice
    would halve its allocation and be refit on its rows twice). A stage with
    ``explicit_context_required`` (staging, prod) refuses to synthesise without it: the symbols live
    only in each deploy's context, so a default would silently move a stage that trades several
    symbols to ``SPY`` alone at the next redeploy that omits them (the regime refit fitted on SPY
    only, the orders functions' allocation raised to the whole account). Dev defaults to ``SPY``."""
    raw = _stage_context(app, config, "symbols", "SPY,QQQ, the symbols the stage trades, SPY alone too",
                         "move the stage to trading SPY alone (its regime refit and its orders functions' "
                         "allocation)")
    if raw is None:
        raw = DEFAULT_SYMBOLS
    if isinstance(raw, str):
        names = [s.strip() for s in raw.split(",")]
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        names = [s.strip() for s in raw]
    else:
        raise InvalidContextError(f"context symbols={raw!r} must be a comma-separated string or a list of strings")
    symbols = tuple(s for s in names if s)
    if not symbols:
        raise InvalidContextError("context symbols names no symbol: give a comma-separated list, e.g. SPY,QQQ")
    bad = [s for s in symbols if not re.fullmatch(SYMBOL_PATTERN, s)]
    if bad:
        raise InvalidContextError(f"context symbols: {bad} are not symbols (pattern {SYMBOL_PATTERN}: upper case)")
    twice = sorted({s for s in symbols if symbols.count(s) > 1})
    if twice:
        raise InvalidContextError(f"context symbols names {twice} more than once")
    return symbols


def stack_name(stage: str) -> str:
    return f"ensemble-trader-{stage}"


def build_app(
    *,
    outdir: str | None = None,
    context: dict[str, str] | None = None,
    functions_dir: Path = FUNCTIONS_DIR,
    layers_dir: Path = LAYERS_DIR,
) -> tuple[cdk.App, TraderStack]:
    """The app with its stack and both cdk-nag packs attached (checked when it is synthesised)."""
    app = cdk.App(
        outdir=outdir or os.environ.get("CDK_OUTDIR") or "cdk.out",
        context={**FEATURE_FLAGS, **(context or {})},
    )
    config = stage_config(app.node.try_get_context("stage") or "dev")
    max_intent_age = _positive_number(app, "max_intent_age_seconds", "seconds")
    if max_intent_age is not None:
        config = dataclasses.replace(config, max_intent_age_seconds=max_intent_age)
    initial_equity = _positive_number(app, "initial_equity", "dollars (the account's equity)")
    if initial_equity is not None:
        config = dataclasses.replace(config, initial_equity=initial_equity)
    broker_kind = _broker(app, config)
    needed = _required_for(broker_kind, config)
    if needed:
        trades = "trades real money" if broker_kind == "alpaca-live" else "trades an Alpaca account"
        raise InvalidContextError(
            f"context broker={broker_kind!r} {trades}: give " + "; and ".join(needed) + " (docs/deployment.md)"
        )
    symbols = _symbols(app, config)
    stack = TraderStack(
        app,
        stack_name(config.name),
        config=config,
        functions_dir=functions_dir,
        layers_dir=layers_dir,
        training_image_tag=app.node.try_get_context("training_image_tag") or __version__,
        broker_kind=broker_kind,
        symbols=symbols,
        alarm_email=app.node.try_get_context("alarm_email") or os.environ.get("ET_ALARM_EMAIL") or None,
        description=f"ensemble-trader {config.name}: multi-agent RL ensemble trading pipeline",
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
        ),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    return app, stack


def main() -> None:
    try:
        app, _ = build_app()
    except (InvalidContextError, UnknownStageError) as error:
        raise SystemExit(f"infra_cdk: {error}") from None  # one line, no traceback, exit status 1
    app.synth()


if __name__ == "__main__":
    main()
