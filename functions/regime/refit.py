"""regime refit Lambda (EventBridge schedule, daily): refine the models on stored history.

It reads the newest ``lookback_bars`` rows of each symbol from the ``regime-history`` table
(the regime Lambda stores every bar's feature values there), runs numpy Baum-Welch from the
pinned model (:func:`ensemble_trader.domain.regime_fit.refit`; no hmmlearn in the bundle),
renames the states with the label-free rule (a state keeps its name unless the rule clearly
prefers another) and, when the refit is material — its log-likelihood on the rows beats the
pinned model's by at least ``MIN_GAIN_PER_ROW`` (0.001 nats) per row, or a state was renamed —
publishes the new version to the model bucket, moves ``regime/current.json`` to it and puts a
``RegimeModelPublished`` event (its ``event_id`` derives from the pointer, the previous and the
new version). A refit that is not material publishes nothing (``unchanged`` in the result, the
``regime_refit_unchanged`` metric): the pin stays. Regime Lambda containers started afterwards
serve a new version; a refit's hidden states are its pin's one to one (warm start), so the
regime stage carries each symbol's filter across it instead of restarting it.

One refit per schedule period (the UTC day of the schedule's firing ``time``, which a retried
invocation keeps): when the pointer already pins this period's refit (the pointer moved, then
the invocation failed, e.g. putting the event), a retry does not refit it again but puts its
``RegimeModelPublished`` again, with the same ``event_id`` (``republished`` in the result,
the ``regime_refit_republished`` metric). An invocation without ``time`` uses the clock.

A symbol with its own pinned model (``regime/symbols/<SYMBOL>/current.json``) is refit alone,
from its own model on its own rows, and its own pointer moves; the shared model is refit on the
other symbols only (it does not serve the pinned ones). Every model is loaded before anything is
published (a broken pin fails the run first); a model without enough history yet (the shared
one or a symbol's) is skipped with its reason, and the others go on. A state the rows hardly visit (under 1 % of them,
e.g. VOLATILE in a calm lookback) keeps its parameters instead of collapsing onto a few bars, and
the states keep their names unless each holds 3 % of the rows, and the transitions into such a
state are kept too. A ready row lacking a finite ``ret_1``, ``range_vol_1`` or model feature
(the regime stage admits a vector holding only what its model reads) is left out, splitting its
symbol's sequence there: a warning names how many and the first, and the result and manifest
count them (``rows_dropped``); the refit goes on when enough rows remain. A published refit's
manifest records the symbols whose rows it used, the time range (UTC) of the bars whose data
shaped it (``training_window``: from the ``WARMUP_BARS - 1`` bars before its first row, as far
as stored; ``fitted_window``: the rows fitted), its ancestors' windows (``inherited_windows``),
a hash of the rows and its creation time; a symbol with fewer than 2 ready rows contributes none: it is left out of the
manifest and the event, logged, and listed under ``symbols_without_rows`` in the result. A
pointer that no longer pins the version a model was refit from (an operator published
meanwhile) is left as it is: that refit is skipped with its reason, its artifact stays unpinned.
A refused pointer write after which the pointer pins the refit's own version (S3 committed the
write, its response was lost and botocore's retry of it got 412) is a publish: the event is
put and the result says ``published``. The result's top-level keys
describe the shared model's refit (absent when every symbol has its own model); ``symbols``
holds the per-symbol ones.

Event: the scheduled event; ``detail`` may hold ``symbols`` (else ``ET_REGIME_SYMBOLS``, comma
separated; a symbol off the pattern the bars carry, such as ``spx``, or one named twice is refused,
naming the field and the value, before anything is read), ``lookback_bars`` (default 2,000) and
``min_gain_per_row`` (default ``MIN_GAIN_PER_ROW``; 0 publishes every refit that changed the
parameters).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from typing import Any

import numpy as np
from aws_lambda_powertools.utilities.typing import LambdaContext
from ensemble_trader.domain.errors import ConcurrencyError, DataError
from ensemble_trader.domain.features import WARMUP_BARS
from ensemble_trader.domain.models import SYMBOL_PATTERN, Message, deterministic_id
from ensemble_trader.domain.regime_fit import refit
from ensemble_trader.runtime.deadline import invocation_deadline
from ensemble_trader.runtime.observability import observability
from ensemble_trader.runtime.regime_registry import (
    HISTORY_TABLE,
    SYMBOL_RE,
    aware_time,
    history_key,
    history_time,
    load_pin,
    load_version,
    pinned_symbols,
    pinned_version,
    pointer_key,
    publish,
)

obs = observability("regime_refit")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer

SYMBOLS_ENV = "ET_REGIME_SYMBOLS"
DEFAULT_LOOKBACK = 2_000


class RegimeModelPublished(Message):
    """A refit published a new regime model version (EventBridge).

    ``event_id`` derives from (model pointer, previous version, version), never from the
    attempt: the event a retry puts again for the same publish carries the same id."""

    event_id: str
    version: str
    previous: str
    symbols: list[str]
    symbol_model: str | None = None  # the symbol whose own model this is; None: the shared one
    n_samples: int
    log_likelihood: float
    previous_log_likelihood: float
    iterations: int

    @classmethod
    def of(cls, model: Any, symbols: list[str], symbol_model: str | None) -> RegimeModelPublished:
        """The event of a refit ``model`` (its manifest info holds what the refit reported)."""
        info = model.info
        return cls(
            event_id=deterministic_id("regime-model-published", symbol_model or "", info["refit_of"], model.version),
            version=model.version,
            previous=info["refit_of"],
            symbols=list(info.get("symbols") or symbols),
            symbol_model=symbol_model,
            n_samples=info["n_samples"],
            log_likelihood=info["log_likelihood"],
            previous_log_likelihood=info["previous_log_likelihood"],
            iterations=info["iterations"],
        )


MIN_GAIN_PER_ROW = 1e-3
"""A refit is published only when it is material: its log-likelihood on the rows beats the pinned
model's by at least this much per row (nats; 2 over the default 2,000 rows), or the naming rule
renamed a state. Below it the refit explains the rows no better than the pin: the pin stays (a
new version would only move the serving model day by day for nothing)."""


def refit_period(when: datetime) -> str:
    """The schedule period of a run: the UTC day of the schedule's firing time (the refit runs
    once a day; an EventBridge event keeps its ``time`` on every retry of an invocation)."""
    if when.tzinfo is None:
        raise DataError(f"the refit time {when.isoformat()} has no UTC offset")
    return when.astimezone(UTC).date().isoformat()


def event_time(event: dict[str, Any]) -> datetime:
    """The scheduled event's ``time`` (the schedule's firing time), else the clock's now."""
    text = event.get("time")
    if text is None:
        return datetime.now(UTC)
    when = aware_time(text)
    if when is None:
        raise DataError(f"event time {text!r} is not an ISO-8601 time with an offset")
    return when


def stored_rows(store: Any, symbol: str, lookback: int) -> list[dict[str, Any]]:
    """The newest stored rows of ``symbol``, ready or not, oldest first, one per bar time: enough
    for its newest ``lookback`` ready rows and the ``WARMUP_BARS - 1`` bars before the first of
    them (whose data its features hold), across one feature warm-up among them.

    Ordered by the parsed time, not the key text: rows written before the keys were UTC carry
    the bar's own offset, whose text does not sort as time across a daylight-saving change."""
    rows = store.query(HISTORY_TABLE, "symbol", symbol, limit=lookback + 2 * WARMUP_BARS, newest_first=True)
    by_time = {history_time(r): r for r in rows}
    return [by_time[t] for t in sorted(by_time)]


def ready_rows(stored: list[dict[str, Any]], lookback: int) -> list[dict[str, Any]]:
    """The newest ``lookback`` ready rows of :func:`stored_rows`, oldest first."""
    return [r for r in stored if r.get("ready")][-lookback:]


def history_rows(store: Any, symbols: list[str], lookback: int) -> list[list[dict[str, Any]]]:
    """The newest ``lookback`` ready rows of each symbol, oldest first, one per bar time.

    The query reads more rows than asked (:func:`stored_rows`), so a feature warm-up among the
    newest rows (a restarted features state: ``WARMUP_BARS - 1`` rows that are not ready) does not
    shorten the fit."""
    return [ready_rows(stored_rows(store, symbol, lookback), lookback) for symbol in symbols]


def usable_runs(rows: list[dict[str, Any]], names: list[str]) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Split a symbol's ready rows at those lacking a finite number for one of ``names``:
    (the runs of consecutive usable rows, the rows left out). A ready row need not hold every
    feature: the regime stage admits a vector holding the ones its model reads."""
    runs: list[list[dict[str, Any]]] = [[]]
    dropped = []
    for row in rows:
        if not missing_features(row, names):
            runs[-1].append(row)
        else:
            dropped.append(row)
            runs.append([])
    return [run for run in runs if run], dropped


def missing_features(row: dict[str, Any], names: list[str]) -> list[str]:
    """The names of ``names`` a history row holds no finite number for."""
    features = row.get("features") if isinstance(row.get("features"), dict) else {}
    out = []
    for n in names:
        try:
            if not np.isfinite(float(features[n])):
                out.append(n)
        except (KeyError, TypeError, ValueError):
            out.append(n)
    return out


OPTIONS = ("symbols", "lookback_bars", "min_gain_per_row")
"""What an event's detail may set; any other key is refused (a misspelt one would be ignored)."""


def refit_options(detail: Any) -> tuple[list[str], int]:
    """(symbols, lookback bars) from the event detail, else ``ET_REGIME_SYMBOLS`` and the default
    (``min_gain_per_row``: :func:`min_gain_option`)."""
    if not isinstance(detail, dict):
        raise DataError(f"detail must be an object with {' and/or '.join(OPTIONS)}, got {detail!r}")
    unknown = sorted(set(detail) - set(OPTIONS))
    if unknown:
        raise DataError(f"detail has {', '.join(map(repr, unknown))}: the refit takes only {', '.join(OPTIONS)}")
    if "symbols" in detail:  # present, it is the list (a falsy non-list is refused, not replaced)
        symbols, source = detail["symbols"], "detail.symbols"
        if symbols is None or (isinstance(symbols, list) and not symbols):
            raise DataError(f"detail.symbols={symbols!r} names no symbol: leave it out to refit on {SYMBOLS_ENV}")
    else:
        symbols = [s.strip() for s in os.environ.get(SYMBOLS_ENV, "").split(",") if s.strip()]
        source = SYMBOLS_ENV
        if not symbols:
            raise DataError(f"no symbols to refit on: pass detail.symbols or set {SYMBOLS_ENV}")
    if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
        raise DataError(f"{source}={symbols!r} must be a list of symbol strings")
    # the rows are keyed by the symbol the bars carry: another spelling ('spx') reads none
    off_pattern = [s for s in symbols if not SYMBOL_RE.fullmatch(s)]
    if off_pattern:
        raise DataError(f"{source} has {', '.join(map(repr, off_pattern))}, not a symbol as the bars carry it "
                        f"(pattern {SYMBOL_PATTERN}: upper case)")
    twice = sorted({s for s in symbols if symbols.count(s) > 1})
    if twice:  # its rows would count twice, past the short-history guard
        raise DataError(f"{source} names {', '.join(twice)} more than once")
    lookback = detail.get("lookback_bars", DEFAULT_LOOKBACK)
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 2:
        raise DataError(f"detail.lookback_bars={lookback!r} must be an integer >= 2")
    return symbols, lookback


def min_gain_option(detail: dict[str, Any]) -> float:
    """``detail.min_gain_per_row`` (default :data:`MIN_GAIN_PER_ROW`), a number >= 0."""
    gain = detail.get("min_gain_per_row", MIN_GAIN_PER_ROW)
    if isinstance(gain, bool) or not isinstance(gain, int | float) or not (0 <= gain < float("inf")):
        raise DataError(f"detail.min_gain_per_row={gain!r} must be a finite number >= 0")
    return float(gain)


def refit_one(
    model_store: Any,
    history: Any,
    events: Any,
    current: Any,
    pinned: str | None,
    symbols: list[str],
    lookback: int,
    symbol_model: str | None = None,
    *,
    period: str,
    min_gain: float = MIN_GAIN_PER_ROW,
) -> dict[str, Any]:
    """Refit ``current`` on the rows of ``symbols``; publish it (to the shared pointer, or to
    ``symbol_model``'s own) and announce it when the refit is material (:data:`MIN_GAIN_PER_ROW`),
    unless that pointer no longer pins ``pinned`` (the version ``current`` was loaded from, None
    for no pointer).

    When ``current`` is itself this schedule ``period``'s refit (a retry of a run that moved the
    pointer and then failed, e.g. on EventBridge), it is not refit again: its
    RegimeModelPublished is put again, with the same event id."""
    if pinned is not None and current.info.get("refit_period") == period and "refit_of" in current.info:
        events.publish([RegimeModelPublished.of(current, symbols, symbol_model)])
        logger.info("regime refit already published this period: its event is put again",
                    extra={"symbol_model": symbol_model, "version": current.version, "period": period})
        return {"previous": current.info["refit_of"], "version": current.version, "published": False,
                "republished": True}
    needed = list(dict.fromkeys([*current.feature_names, "ret_1", "range_vol_1"]))
    stored = {s: stored_rows(history, s, lookback) for s in symbols}
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    dropped: list[dict[str, Any]] = []
    for s in symbols:
        runs[s], left_out = usable_runs(ready_rows(stored[s], lookback), needed)
        dropped.extend(left_out)
        runs[s] = [run for run in runs[s] if len(run) >= 2]  # a lone row between two left out has no transition
    if dropped:  # one such row used to fail every refit for as long as it stayed in the lookback
        first = dropped[0]
        logger.warning("regime refit: ready history rows lack features the refit needs; left out",
                       extra={"symbol_model": symbol_model, "rows_dropped": len(dropped),
                              "first": {"symbol": first.get("symbol"), "timestamp": str(first.get("timestamp")),
                                        "missing": missing_features(first, needed)}})
    # a sequence needs two rows (a transition) to enter the fit: shorter ones contribute nothing
    fitted = [s for s in symbols if runs[s]]
    without_rows = [s for s in symbols if s not in fitted]
    if without_rows:
        logger.warning("regime refit: symbols without ready history rows to fit on (fewer than 2)",
                       extra={"symbol_model": symbol_model, "symbols": without_rows,
                              "rows": {s: sum(map(len, runs[s])) for s in without_rows}})
    per_sequence = [run for s in fitted for run in runs[s]]
    rows = [r for seq in per_sequence for r in seq]

    def column(name: str) -> np.ndarray:
        return np.array([float(r["features"][name]) for r in rows], dtype=np.float64)

    raw = np.column_stack([column(n) for n in current.feature_names]) if rows else np.empty((0, current.n_features))
    ret_1, vol = column("ret_1"), column("range_vol_1")
    # the window covers every bar whose data shaped the refit: its first row's features hold the
    # WARMUP_BARS - 1 bars before it (as a training manifest's window does), as far as stored
    starts = []
    for s in fitted:
        times = [history_time(r) for r in stored[s]]
        at = times.index(history_time(runs[s][0][0]))
        starts.append(times[max(0, at - (WARMUP_BARS - 1))])
    ends = [history_time(runs[s][-1][-1]) for s in fitted]
    provenance = {
        "symbols": fitted,  # the symbols whose rows the refit used
        "source": HISTORY_TABLE,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_window": [history_key(min(starts)), history_key(max(ends))] if fitted else [],
        "fitted_window": [history_key(min(history_time(seq[0]) for seq in per_sequence)),
                          history_key(max(ends))] if fitted else [],
        "training_data_hash": hashlib.sha256(
            json.dumps([[r["symbol"], str(r["timestamp"])] for r in rows]).encode() + raw.tobytes()
        ).hexdigest(),
        "refit_period": period,
    }
    if dropped:
        provenance["rows_dropped"] = len(dropped)
    result = refit(
        current,
        raw.reshape(len(rows), current.n_features),
        ret_1,
        vol,
        sequences=[len(seq) for seq in per_sequence],
        info=provenance,
    )
    summary = {
        "previous": current.version,
        "version": result.model.version,
        "n_samples": result.n_samples,
        "iterations": result.iterations,
        "log_likelihood": result.log_likelihood,
        "previous_log_likelihood": result.previous_log_likelihood,
        "gain_per_row": (result.log_likelihood - result.previous_log_likelihood) / max(result.n_samples, 1),
    }
    if without_rows:
        summary["symbols_without_rows"] = without_rows
    if dropped:
        summary["rows_dropped"] = len(dropped)
    renamed = result.model.state_regimes != current.state_regimes
    if result.model.version == current.version or (summary["gain_per_row"] < min_gain and not renamed):
        logger.info("regime refit unchanged: the pin stays",
                    extra={"symbol_model": symbol_model, "gain_per_row": summary["gain_per_row"],
                           "min_gain_per_row": min_gain})
        return {**summary, "version": current.version, "candidate": result.model.version,
                "published": False, "unchanged": True}
    try:
        publish(model_store, result.model, previous=current.version, symbol=symbol_model, expected_pin=pinned)
    except ConcurrencyError as exc:  # an operator's publish landed while this refit ran: it stays
        logger.warning("regime refit not published", extra={"symbol_model": symbol_model, "reason": str(exc)})
        return {**summary, "published": False, "skipped": str(exc)}
    # the pointer moved (publish also returns when a refused conditional write finds the pointer
    # already on this version: its first attempt landed): a failure from here on is retried as a
    # republish of this version's event
    events.publish([RegimeModelPublished.of(result.model, fitted, symbol_model)])
    return {**summary, "published": True}


def run_refit(
    model_store: Any,
    history: Any,
    events: Any,
    default_dir: Any,
    detail: dict[str, Any],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Refit the shared model and each symbol's own; ``now`` is the schedule's firing time (the
    event's ``time``; default the clock), whose :func:`refit_period` tells a retry."""
    symbols, lookback = refit_options(detail)
    options = {"period": refit_period(now or datetime.now(UTC)), "min_gain": min_gain_option(detail)}
    # every model is loaded before anything is published: a broken pin fails the run up front
    shared_pin, shared_model = load_pin(model_store, default_dir)
    pinned = set(pinned_symbols(model_store))  # one LIST instead of a GET per symbol
    own = {
        s: (v, load_version(model_store, v, pointer_key(s)))
        for s in symbols
        if s in pinned and (v := pinned_version(model_store, s)) is not None
    }
    shared = [s for s in symbols if s not in own]
    out: dict[str, Any] = {}
    if shared:
        try:
            out = refit_one(model_store, history, events, shared_model, shared_pin, shared, lookback, **options)
        except DataError as exc:  # e.g. shared symbols without history yet: the pinned ones still refit
            logger.warning("regime refit skipped the shared model", extra={"reason": str(exc)})
            out = {"previous": shared_model.version, "published": False, "skipped": str(exc)}
    out["symbols"] = {}
    for symbol, (pin, model) in own.items():
        try:
            out["symbols"][symbol] = refit_one(
                model_store, history, events, model, pin, [symbol], lookback, symbol, **options
            )
        except DataError as exc:  # e.g. a newly pinned symbol without enough history yet
            logger.warning("regime refit skipped a symbol model", extra={"symbol": symbol, "reason": str(exc)})
            out["symbols"][symbol] = {"previous": model.version, "published": False, "skipped": str(exc)}
    return out


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from ensemble_trader.adapters.aws.dynamodb import DynamoKeyValueStore
    from ensemble_trader.adapters.aws.eventbridge import EventBridgePublisher
    from ensemble_trader.adapters.aws.s3 import S3ModelStore
    from ensemble_trader.runtime.settings import get_settings

    settings = get_settings()
    if not isinstance(event, dict):
        raise DataError(f"an EventBridge event is an object, got {event!r}")
    detail = event.get("detail", {})
    with invocation_deadline(context):  # no AWS attempt or retry back-off outlasts the invocation
        result = run_refit(
            S3ModelStore(settings=settings),
            DynamoKeyValueStore(settings=settings),
            EventBridgePublisher(settings=settings),
            settings.models_dir / "regime",
            detail,
            event_time(event),
        )
    logger.info("regime refit", extra=result)
    results = [result, *result["symbols"].values()]  # the shared model's, then each symbol model's
    metrics.add_metric("regime_refit_published", "Count", sum(bool(r.get("published")) for r in results))
    for outcome in ("skipped", "unchanged", "republished"):
        metrics.add_metric(f"regime_refit_{outcome}", "Count", sum(outcome in r for r in results))
    return result
