"""regime Lambda: FeatureVectors from ``features`` → MarketState records on ``market-state``.

Per record (through :class:`~ensemble_trader.runtime.stage.KinesisStageRunner` and
:class:`~ensemble_trader.domain.regime.RegimeStep`): the causal HMM forward filter of the
symbol advances one bar, the transition rule decides the reported regime, the MarketState goes
to ``market-state`` (partition key = symbol) and its row to the ``regime-history`` table,
RegimeChanged events go to EventBridge. The filter state of each symbol lives in Redis and is
snapshotted to ``stage-state``; a redelivered bar is a no-op; a bad record goes to
``regime-dlq`` with its reason; a stored state that cannot be read (both its cached copy and its
snapshot) is rebuilt from the symbol's ``regime-history`` rows, logged with the reason
(``regime_registry.StateRebuild``).

The model of a symbol is the version its own registry pointer pins
(``regime/symbols/<SYMBOL>/current.json``), else the version ``regime/current.json`` pins, else
the committed default; see ``ensemble_trader.runtime.regime_registry``. A warm container that
reads a symbol's state written under another version reads the pointers again (at most once a
minute per symbol and writer) and switches to the version they pin now. ``ET_REGIME_RULE`` may hold a JSON object of
TransitionRule options (``margin``, ``confirm_bars``, ``min_dwell``); a bad value stops the
cold start with an error naming the variable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from ensemble_trader.domain.regime import RegimeStep, TransitionRule
from ensemble_trader.runtime.deadline import invocation_deadline
from ensemble_trader.runtime.observability import observability
from ensemble_trader.runtime.regime_registry import (
    MarketStateSink,
    StateRebuild,
    SymbolModels,
    admit_features,
    load_pinned,
)
from ensemble_trader.runtime.stage import KinesisStageRunner, runner_for_function

obs = observability("regime")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer

RULE_ENV = "ET_REGIME_RULE"


@lru_cache(maxsize=1)
def runner() -> KinesisStageRunner:
    """Dependencies built once per container (cold start): the shared model and every symbol's
    own pinned model, then the stage's standard wiring, whose market-state sink also writes each
    MarketState's ``regime-history`` row."""
    from ensemble_trader.adapters.aws.s3 import S3ModelStore
    from ensemble_trader.runtime.settings import get_settings, json_from_env

    settings = get_settings()
    store = S3ModelStore(settings=settings)
    model = load_pinned(store, settings.models_dir / "regime")
    logger.info("regime model loaded", extra={"model_version": model.version, "n_states": model.n_states})
    rule = json_from_env(RULE_ENV, TransitionRule)
    # a record whose regime-history row DynamoDB could not store is refused before it moves the filter
    models = SymbolModels(store, model)
    # a state another version wrote makes a warm container read the pointers again (models.recheck)
    step = RegimeStep(model, rule, models_for=models, admit=admit_features, recheck=models.recheck)
    built = runner_for_function(step, "regime", settings=settings, metrics=metrics, with_events=True)
    built.sink = MarketStateSink(built.sink, built.snapshots)
    # a stored state that cannot be read is rebuilt from the symbol's regime-history rows
    step.start_over = StateRebuild(step, built.snapshots, built.snapshots)
    return built


@logger.inject_lambda_context(correlation_id_path="Records[0].eventID")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with invocation_deadline(context):  # no AWS attempt or retry back-off outlasts the invocation
        return runner().process(event)
