"""The regime model in the registry and the regime-history rows (shared by both entries).

Registry layout in the model bucket (S3 in AWS, the local stack's bucket locally)::

    regime/current.json                  {"version": ..., "previous": ..., "published_at": ...}
    regime/symbols/<SYMBOL>/current.json the same, for one symbol (optional)
    regime/<version>/manifest.json       the artifact (see ensemble_trader.domain.regime_model)
    regime/<version>/regime_model.json

The regime Lambda serves, for each symbol, the version its own pointer pins, else the version
``current.json`` pins, else the committed default (``layers/models/regime``, shipped in the
models layer). A model's volatility scale is its training market's, so a symbol unlike the
default's market (a more volatile index, hourly crypto bars) gets a model fitted on its own
history (``ensemble-trader regime publish --model DIR --symbol SYMBOL``). A pinned version that
cannot be read or fails its checksum is an error (fail closed), never a silent fallback.

History rows (table ``regime-history``: pk ``symbol``, sk ``timestamp``, the bar's time in UTC,
ISO-8601) hold the reported regime, its confidence and probabilities, and the bar's feature
values, so the daily refit can run from the table alone, without bars. The key is the UTC
instant, not the bar's own offset: DynamoDB orders a string key by its bytes, and only texts of
one offset sort as time (a feed in local time changes offset with daylight saving).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from ensemble_trader.adapters.dynamo_numbers import LARGEST, MAX_ITEM_BYTES, from_dynamo, item_size, to_dynamo
from ensemble_trader.domain.errors import (
    ConcurrencyError,
    DataError,
    InfrastructureError,
    InvalidMessageError,
    ModelArtifactError,
    StateError,
)
from ensemble_trader.domain.features import FEATURE_NAMES, timestamp_ns
from ensemble_trader.domain.models import REGIMES, SYMBOL_PATTERN, FeatureVector, MarketState, Regime
from ensemble_trader.domain.regime import (
    HistoryRow,
    RegimeFilterState,
    RegimeStep,
    bar_time_or_none,
    stored_last_ns,
)
from ensemble_trader.domain.regime_model import MANIFEST_FILE, PARAMETERS_FILE, RegimeModel
from ensemble_trader.ports import KeyValueStore, ModelStore
from ensemble_trader.runtime.stage import SNAPSHOT_TABLE

PREFIX = "regime"
SYMBOL_RE = re.compile(SYMBOL_PATTERN)
POINTER = f"{PREFIX}/current.json"
SYMBOLS_PREFIX = f"{PREFIX}/symbols/"
POINTER_FILE = "/current.json"
HISTORY_TABLE = "regime-history"
RECHECK_SECONDS = 60.0
"""How often a warm container reads a symbol's pointers again for one foreign writer version."""
MAX_RECHECKS = 10_000
"""(symbol, writer) pairs remembered for the recheck's rate limit before the memory is cleared."""
REBUILD_ROWS = 1_000
"""The newest regime-history rows a refused stored state is rebuilt from: the filter forgets its
start within a few hundred bars (docs/regime.md, *A stored state that cannot be read*)."""

log = logging.getLogger(__name__)


def pointer_key(symbol: str | None = None) -> str:
    """The registry key of the global pointer (``symbol`` None) or of one symbol's pointer."""
    if symbol is None:
        return POINTER
    if not SYMBOL_RE.fullmatch(symbol):
        raise DataError(f"symbol {symbol!r} does not match {SYMBOL_PATTERN}")
    return f"{SYMBOLS_PREFIX}{symbol}{POINTER_FILE}"


def pinned_version(store: ModelStore, symbol: str | None = None) -> str | None:
    """The version the global pointer (or ``symbol``'s own) pins, or None when there is none."""
    return _pinned_by(pointer_key(symbol), _pointer(store, symbol))


def _pointer(store: ModelStore, symbol: str | None) -> bytes | None:
    try:
        return store.read(pointer_key(symbol))
    except ModelArtifactError:
        return None


def _pinned_by(key: str, raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        version = json.loads(raw)["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactError(f"{key} is malformed: {exc!r}") from None
    if not isinstance(version, str) or not version:
        raise ModelArtifactError(f"{key} pins no version")
    return version


def servable(model: RegimeModel, source: str) -> RegimeModel:
    """``model``, if the feature engine computes every feature it reads (else every ready record
    of the stage would be refused): checked at cold start, so a bad pin fails closed there."""
    missing = [name for name in model.feature_names if name not in FEATURE_NAMES]
    if missing:
        raise ModelArtifactError(
            f"{source} ({model.version}) reads features {missing} that the feature engine does not compute"
        )
    return model


def load_version(store: ModelStore, version: str, pinned_by: str = POINTER) -> RegimeModel:
    """The stored artifact of ``version``, checked against its manifest, its version and the
    feature engine."""
    model = RegimeModel.from_files(lambda name: store.read(f"{PREFIX}/{version}/{name}"))
    if model.version != version:
        raise ModelArtifactError(f"{pinned_by} pins {version} but the stored artifact is {model.version}")
    return servable(model, pinned_by)


def load_pin(store: ModelStore, default_dir: Path) -> tuple[str | None, RegimeModel]:
    """The version the global pointer pins (None when there is none) and the model served: that
    version's, else the committed default. One read of the pointer, so the two agree."""
    version = pinned_version(store)
    if version is None:
        return None, servable(RegimeModel.load(default_dir), "the committed default model")
    return version, load_version(store, version)


def load_pinned(store: ModelStore, default_dir: Path) -> RegimeModel:
    """The globally pinned model of the registry, else the committed default."""
    return load_pin(store, default_dir)[1]


class _AnyPin(Enum):
    """The type of :data:`ANY_PIN` (None already means "no pointer")."""

    ANY_PIN = "any"


ANY_PIN: Final = _AnyPin.ANY_PIN
"""``publish(expected_pin=ANY_PIN)``: move the pointer whatever it pins (an operator's publish)."""


def publish(
    store: ModelStore,
    model: RegimeModel,
    previous: str | None,
    now: datetime | None = None,
    symbol: str | None = None,
    *,
    expected_pin: str | None | _AnyPin = ANY_PIN,
) -> None:
    """Write the artifact under its version, then move the pointer — the global one, or
    ``symbol``'s own — to it (pointer last).

    With ``expected_pin`` (the version the pointer pinned when the caller loaded its model, None
    for no pointer) the pointer is moved only if it still pins that version, in one conditional
    write (:meth:`~ensemble_trader.ports.ModelStore.replace`: S3's ``If-Match``); otherwise
    :class:`ConcurrencyError` and the pointer stays as it is: a refit must not undo an operator's
    publish made while it ran. The artifact, already written under its own version, stays
    unpinned.

    A refused conditional write after which the pointer pins ``model.version`` is a publish that
    landed, not a conflict: S3 committed the put whose response was lost (a read timeout, a 5xx)
    and botocore's retry of the same request met that write (412); or another run of the same
    refit pinned the same content-addressed version first. The pointer is read again on a
    refusal, and when it pins ``model.version`` the publish returns normally (logged), so the
    caller announces it; a refusal with any other version pinned raises as above.
    """
    key = pointer_key(symbol)
    files = model.to_files()
    for name in (PARAMETERS_FILE, MANIFEST_FILE):
        store.write(f"{PREFIX}/{model.version}/{name}", files[name])
    current = _pointer(store, symbol) if expected_pin is not ANY_PIN else None
    if expected_pin is not ANY_PIN and (pinned := _pinned_by(key, current)) != expected_pin:
        if pinned == model.version:  # another run of this refit pinned it first
            log.info("%s already pins %s: published", key, model.version)
            return
        raise ConcurrencyError(
            f"{key} pins {pinned or 'no version'} now, not {expected_pin or 'no version'} as when the "
            f"model was loaded: {model.version} was not pinned and the pointer is left as it is"
        )
    pointer = {
        "version": model.version,
        "previous": previous,
        "published_at": (now or datetime.now(UTC)).isoformat(),
    }
    if symbol is not None:
        pointer["symbol"] = symbol
    if expected_pin is ANY_PIN:
        store.write(key, json.dumps(pointer).encode())
    else:  # refused if another publish moved the pointer since it was read just above
        try:
            store.replace(key, json.dumps(pointer).encode(), current)
        except ConcurrencyError as exc:
            if pinned_version(store, symbol) != model.version:
                raise
            # the write landed and its response was lost (the retried request met it), or
            # another run of this refit pinned the same version in between: published either way
            log.warning("%s: the conditional write was refused (%s) but the pointer pins %s: published",
                        key, exc, model.version)


def pinned_symbols(store: ModelStore) -> list[str]:
    """The symbols that have their own pointer (one LIST of ``regime/symbols/``)."""
    keys = store.list(SYMBOLS_PREFIX)
    return sorted(k[len(SYMBOLS_PREFIX) : -len(POINTER_FILE)] for k in keys if k.endswith(POINTER_FILE))


class SymbolModels:
    """``symbol -> RegimeModel`` for :class:`~ensemble_trader.domain.regime.RegimeStep`: the
    symbol's own pinned model, else ``default`` (the globally pinned one).

    Every symbol pointer is read and its model loaded when this is built (a container's cold
    start: one LIST, then one GET per pinned symbol), so a broken pin fails the cold start as a
    broken global pin does, and the hot path is a dict lookup. A pin published afterwards is
    served by containers started afterwards, as for the global pointer, and by a warm container
    from the first state it reads that another version wrote (:meth:`recheck`).

    ``default_dir`` is the committed default model's folder (None: ``Settings.models_dir /
    "regime"``, the folder the Lambda's cold start reads): what a container serves a symbol that
    no pointer pins, so a warm container goes back to it when the pointers pinning its model are
    deleted. It is read only then (once)."""

    def __init__(
        self,
        store: ModelStore,
        default: RegimeModel,
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        default_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.default = default
        self.default_dir = default_dir
        self.recheck_seconds = recheck_seconds
        self._clock = clock
        self._committed: RegimeModel | None = None
        self._next_check: dict[tuple[str, str], float] = {}
        self._by_version: dict[str, RegimeModel] = {default.version: default}
        self.models: dict[str, RegimeModel] = {}
        for symbol in pinned_symbols(store):
            version = pinned_version(store, symbol)
            if version is None:  # the pointer vanished between the LIST and the GET
                continue
            self.models[symbol] = self._load(version, pointer_key(symbol))

    def __call__(self, symbol: str) -> RegimeModel:
        return self.models.get(symbol, self.default)

    def _load(self, version: str, pinned_by: str) -> RegimeModel:
        model = self._by_version.get(version)
        if model is None:
            model = self._by_version[version] = load_version(self.store, version, pinned_by)
        return model

    def committed_default(self) -> RegimeModel:
        """The committed default model (``default_dir``), loaded on the first call: what a
        container started now serves a symbol when neither its own pointer nor the shared one
        exists."""
        if self._committed is None:
            folder = self.default_dir
            if folder is None:
                from ensemble_trader.runtime.settings import get_settings

                folder = get_settings().models_dir / "regime"
            model = servable(RegimeModel.load(folder), "the committed default model")
            self._committed = self._by_version.setdefault(model.version, model)
        return self._committed

    def recheck(self, symbol: str, writer: str) -> bool:
        """Called when ``symbol``'s state was written under ``writer``, not the version served
        here: read the symbol's pointers again and serve what a container started now would
        serve. True when the model served for ``symbol`` changed (the caller looks it up again).

        Containers started before a publish keep the model of their cold start; without this,
        they and the containers started after it would take turns on a symbol's records, each
        restarting the other's filter (a model that is not a refit of the other shares no hidden
        states with it) and reporting its own regimes. With it, an old container switches at the
        first state the new version wrote, and a rollback spreads the same way. So does a deleted
        pointer: when neither the symbol's pointer nor the shared one pins a version any more, the
        container switches to the committed default (:meth:`committed_default`), as it does to a
        new pin (without this it kept serving the deleted pin's model beside the new containers'
        committed default). Each (symbol, writer) pair is checked at most once per
        ``recheck_seconds``, so a container that is already serving the pinned version (the
        writer is the stale one) reads the pointers rarely. A pointer or artifact that cannot be
        read now (S3 down, a broken publish) keeps the model served, logged: the container goes on
        as before and checks again later."""
        now = self._clock()
        key = (symbol, writer)
        if now < self._next_check.get(key, -math.inf):
            return False
        if len(self._next_check) >= MAX_RECHECKS:
            self._next_check.clear()
        self._next_check[key] = now + self.recheck_seconds
        served = self(symbol)
        try:
            own = pinned_version(self.store, symbol)
            version = own if own is not None else pinned_version(self.store)
            if version == served.version:
                return False  # this is the pinned one
            if version is None:  # no pointer (any more): a container started now serves the committed default
                model = self.committed_default()
                if model.version == served.version:
                    return False
            else:
                model = self._load(version, pointer_key(symbol if own is not None else None))
        except (ModelArtifactError, InfrastructureError) as exc:
            log.warning("regime model of %s not rechecked (state written under %s, serving %s): %s",
                        symbol, writer, served.version, exc)
            return False
        if own is not None:
            self.models[symbol] = model
            whom = symbol
        else:  # the global pin moved or went (every symbol without its own follows), or the symbol's own went
            self.models.pop(symbol, None)
            whom = symbol if model is self.default else "every symbol without its own pin"
            self.default = model
        pinned = ("which the registry pins now" if version is not None
                  else "the committed default, as no pointer pins a version any more")
        log.info("regime model of %s switched from %s to %s, %s (a state of %s was written under %s)",
                 whom, served.version, model.version, pinned, symbol, writer)
        return True


def history_key(when: datetime) -> str:
    """The sort key of a bar time: its UTC instant in ISO-8601 (a UTC bar's own ``isoformat``)."""
    return when.astimezone(UTC).isoformat()


def aware_time(text: Any) -> datetime | None:
    """An ISO-8601 time with a UTC offset as an aware datetime; None for anything else."""
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


def row_time(row: Mapping[str, Any], table: str) -> datetime:
    """The bar time of a row keyed by :func:`history_key` (regime-history, decisions), aware;
    rows written before the keys were UTC carry the bar's own offset, so compare these times,
    never the key texts. DataError naming the table and the row otherwise."""
    text = row.get("timestamp")
    when = aware_time(text)
    if when is None:
        raise DataError(
            f"{table} row of {row.get('symbol')!r} has timestamp {text!r}, not an ISO-8601 time with an offset"
        )
    return when


def history_time(row: dict[str, Any]) -> datetime:
    """The bar time of a history row (of any offset: rows written before the keys were UTC
    carry the bar's own)."""
    return row_time(row, "regime-history")


def history_item(state: MarketState) -> dict[str, Any]:
    """The regime-history row of one MarketState."""
    est = state.regime
    row: dict[str, Any] = {
        "symbol": state.symbol,
        "timestamp": history_key(state.timestamp),
        "regime": est.regime.value,
        "confidence": est.confidence,
        "bars_in_regime": est.bars_in_regime,
        "model_version": est.model_version,
        "ready": state.features.ready,
        "features": dict(state.features.values),
    }
    for regime, p in zip(REGIMES, est.probabilities, strict=True):
        row[f"p_{regime.value.lower()}"] = p
    return row


MAX_NUMBER_BYTES = 21
"""The most bytes DynamoDB counts for one number: 38 significant digits, (38 + 1) // 2 + 1, and
a sign (dynamo_numbers' size rule)."""
HISTORY_ROW_MARGIN = 1024
"""Bytes a regime-history row holds besides its features (symbol, time, regime, confidence,
probabilities, model version: about 200), with room to spare."""


def admit_features(features: FeatureVector) -> None:
    """Raise :class:`DataError` for a FeatureVector whose regime-history row DynamoDB could not
    store — a feature value of 1e126 or more, or so many features that the row passes 400 KB —
    naming the value or the size. Given to :class:`RegimeStep` as ``admit``, it runs before the
    record changes any state, so such a record is dead-lettered without its MarketState or a
    RegimeChanged of it going out, and without moving the symbol's filter.

    Every record passes through here, so the common case is settled without converting the row:
    values all below 1e126 in size, and a size bound (each number at its largest,
    :data:`MAX_NUMBER_BYTES`) within the limit. Only a record that fails that quick look is
    converted as DynamoDB would hold it, which names what is wrong."""
    values_in = features.values
    if all(abs(v) < LARGEST for v in values_in.values()):  # False for NaN too
        bound = (len("features") + 3 + HISTORY_ROW_MARGIN
                 + sum(len(name.encode()) + MAX_NUMBER_BYTES + 1 for name in values_in))
        if bound <= MAX_ITEM_BYTES:
            return
    values = to_dynamo(dict(values_in), "features")
    size = item_size({"features": values}) + HISTORY_ROW_MARGIN
    if size > MAX_ITEM_BYTES:
        raise DataError(
            f"the regime-history row of {features.symbol} at {features.timestamp.isoformat()} would be about "
            f"{size:,} bytes ({len(features.values):,} features), over DynamoDB's {MAX_ITEM_BYTES:,}"
        )


class MarketStateSink:
    """MarketStates to the ``market-state`` stream first, then their regime-history rows.

    The stream comes first: a failure after it re-emits on retry (a harmless duplicate, the
    next stage skips it); a history row is keyed by (symbol, bar time), so rewriting it is
    harmless too. A row DynamoDB cannot store (a feature value of 1e126 or more, a row over
    400 KB) is refused before anything is emitted: its DataError makes the stage runner split the
    batch and dead-letter that record, whose MarketState must then not have reached the stream.
    The Lambda also refuses such a record before the step applies it (:func:`admit_features`),
    so its state change and events never happen; this check stays as the last guard.
    """

    def __init__(self, stream: Any, store: KeyValueStore, table: str = HISTORY_TABLE) -> None:
        self.stream = stream
        self.store = store
        self.table = table

    def emit(self, records: Sequence[BaseModel]) -> None:
        states = [r for r in records if isinstance(r, MarketState)]
        if len(states) != len(records):
            raise DataError("the regime stage emits MarketState records only")
        # as DynamoDB will hold them, checked before the stream gets anything
        rows = []
        for state in states:  # each row converted once: sized as DynamoDB counts it, kept as it reads back
            converted = {name: to_dynamo(value, name) for name, value in history_item(state).items()}
            if (size := item_size(converted)) > MAX_ITEM_BYTES:
                raise DataError(f"the regime-history row of {state.symbol} at {state.timestamp.isoformat()} is "
                                f"{size:,} bytes, over DynamoDB's {MAX_ITEM_BYTES:,}")
            rows.append({name: from_dynamo(value) for name, value in converted.items()})
        self.stream.emit(states)
        put_items = getattr(self.store, "put_items", None)  # BatchWriteItem when the store has it
        if put_items is not None:
            put_items(self.table, rows)
        else:
            for row in rows:
                self.store.put_item(self.table, row)


def replay_row(row: Mapping[str, Any]) -> HistoryRow:
    """A stored regime-history row as :meth:`RegimeStep.rebuild` replays it; DataError naming the
    row and the attribute otherwise."""
    when = history_time(dict(row))
    try:
        features = row["features"]
        if not isinstance(features, Mapping):
            raise TypeError(f"features is {type(features).__name__}, not a map")
        bars = row["bars_in_regime"]
        if isinstance(bars, bool) or not isinstance(bars, int) or bars < 0:
            raise ValueError(f"bars_in_regime {bars!r} is not a whole number >= 0")
        ready = row["ready"]
        if not isinstance(ready, bool):
            raise ValueError(f"ready {ready!r} is not a boolean")
        version = row["model_version"]
        if not isinstance(version, str):
            raise ValueError(f"model_version {version!r} is not text")
        return HistoryRow(ns=timestamp_ns(when), ready=ready, values={str(k): float(v) for k, v in features.items()},
                          regime=Regime(row["regime"]), bars_in_regime=bars, model_version=version)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{HISTORY_TABLE} row of {row.get('symbol')!r} at {when.isoformat()} cannot be replayed: "
                        f"{exc!r}") from None


class StateRebuild:
    """The regime step's ``start_over`` hook: a symbol whose stored filter state cannot be read
    is rebuilt from its ``regime-history`` rows instead of failing its records until an operator
    rebuilds it.

    When the symbol's snapshot decodes, nothing is rebuilt (None): the refused bytes are the
    cached entry, and the stage runner repairs it from the snapshot as it always has (or, when the
    snapshot is behind the entry, refuses to go back to it). Otherwise the newest ``rows``
    (:data:`REBUILD_ROWS`) history rows of the symbol are read, up to the last applied time the
    refused bytes still name when they name one (else, when they are the snapshot's own, the
    ``sequence`` the runner stored beside them), and replayed by :meth:`RegimeStep.rebuild`; the
    runner logs the returned note (the refusal's reason, then how the state was rebuilt) as a
    warning and counts ``regime_state_restarted``. A history that cannot be read or replayed (no
    rows, DynamoDB unavailable, a row the model refuses) leaves the refusal as it was — the
    symbol's records fail and are retried — logged as an error naming why."""

    def __init__(
        self,
        step: RegimeStep,
        history: KeyValueStore,
        snapshots: KeyValueStore | None = None,
        *,
        rows: int = REBUILD_ROWS,
        table: str = HISTORY_TABLE,
        snapshot_table: str = SNAPSHOT_TABLE,
    ) -> None:
        self.step = step
        self.history = history
        self.snapshots = snapshots
        self.rows = rows
        self.table = table
        self.snapshot_table = snapshot_table

    def __call__(self, symbol: str, data: bytes, error: Exception) -> tuple[RegimeFilterState, str] | None:
        try:
            item = None if self.snapshots is None else self.snapshots.get_item(
                self.snapshot_table, {"pk": self.step.name, "sk": symbol})
            if item is not None and _decodes(item):
                return None  # the runner repairs the cached entry from the snapshot
            until = stored_last_ns(data, symbol)
            if until is None and item is not None and bytes(item.get("state", b"")) == data:
                until = _committed_sequence(item)  # the refused bytes are this snapshot's
            stored = self.history.query(self.table, "symbol", symbol, limit=self.rows, newest_first=True)  # type: ignore[attr-defined]
            rows = [replay_row(row) for row in stored]
            state, note = self.step.rebuild(symbol, rows, until)
        except (DataError, InfrastructureError, InvalidMessageError, StateError) as exc:
            log.error("regime state of %s cannot be read (%s) and was not rebuilt from %s: %s", symbol, error,
                      self.table, exc)
            return None
        return state, f"stored state refused ({error}); {note}"


def _decodes(item: Mapping[str, Any]) -> bool:
    """Whether a snapshot item holds a state the step can load."""
    if "state" not in item:
        return False
    try:
        RegimeStep.load(bytes(item["state"]))
    except StateError:
        return False
    return True


def _committed_sequence(item: Mapping[str, Any]) -> int | None:
    """The last applied time the stage runner stored beside a snapshot's state (its ``sequence``
    attribute, written from the state before it was encoded), when it is a bar time."""
    return bar_time_or_none(item.get("sequence"))
