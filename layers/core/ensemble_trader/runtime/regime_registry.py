"""The regime model in the registry and the regime-history rows (shared by both entries).

Registry layout in the model bucket (S3 in AWS, the local stack's bucket locally)::

    regime/current.json                  {"version": ..., "previous": ..., "published_at": ...}
    regime/<version>/manifest.json       the artifact (see ensemble_trader.domain.regime_model)
    regime/<version>/regime_model.json

The regime Lambda serves the version ``current.json`` pins; while the bucket has none it serves
the committed default (``layers/models/regime``, shipped in the models layer). A pinned version
that cannot be read or fails its checksum is an error (fail closed), never a silent fallback.

History rows (table ``regime-history``: pk ``symbol``, sk ``timestamp`` ISO-8601) hold the
reported regime, its confidence and probabilities, and the bar's feature values, so the daily
refit can run from the table alone, without bars.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ensemble_trader.domain.errors import DataError, ModelArtifactError
from ensemble_trader.domain.models import REGIMES, MarketState
from ensemble_trader.domain.regime_model import MANIFEST_FILE, PARAMETERS_FILE, RegimeModel
from ensemble_trader.ports import KeyValueStore, ModelStore

PREFIX = "regime"
POINTER = f"{PREFIX}/current.json"
HISTORY_TABLE = "regime-history"


def pinned_version(store: ModelStore) -> str | None:
    """The version ``regime/current.json`` pins, or None when the registry has none yet."""
    try:
        raw = store.read(POINTER)
    except ModelArtifactError:
        return None
    try:
        version = json.loads(raw)["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactError(f"{POINTER} is malformed: {exc!r}") from None
    if not isinstance(version, str) or not version:
        raise ModelArtifactError(f"{POINTER} pins no version")
    return version


def load_pinned(store: ModelStore, default_dir: Path) -> RegimeModel:
    """The pinned model of the registry, else the committed default."""
    version = pinned_version(store)
    if version is None:
        return RegimeModel.load(default_dir)
    model = RegimeModel.from_files(lambda name: store.read(f"{PREFIX}/{version}/{name}"))
    if model.version != version:
        raise ModelArtifactError(f"{POINTER} pins {version} but the stored artifact is {model.version}")
    return model


def publish(store: ModelStore, model: RegimeModel, previous: str | None, now: datetime | None = None) -> None:
    """Write the artifact under its version, then move the pointer to it (pointer last)."""
    files = model.to_files()
    for name in (PARAMETERS_FILE, MANIFEST_FILE):
        store.write(f"{PREFIX}/{model.version}/{name}", files[name])
    pointer = {
        "version": model.version,
        "previous": previous,
        "published_at": (now or datetime.now(UTC)).isoformat(),
    }
    store.write(POINTER, json.dumps(pointer).encode())


def history_item(state: MarketState) -> dict[str, Any]:
    """The regime-history row of one MarketState."""
    est = state.regime
    row: dict[str, Any] = {
        "symbol": state.symbol,
        "timestamp": state.timestamp.isoformat(),
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


class MarketStateSink:
    """MarketStates to the ``market-state`` stream first, then their regime-history rows.

    The stream comes first: a failure after it re-emits on retry (a harmless duplicate, the
    next stage skips it); a history row is keyed by (symbol, bar time), so rewriting it is
    harmless too.
    """

    def __init__(self, stream: Any, store: KeyValueStore, table: str = HISTORY_TABLE) -> None:
        self.stream = stream
        self.store = store
        self.table = table

    def emit(self, records: Sequence[BaseModel]) -> None:
        states = [r for r in records if isinstance(r, MarketState)]
        if len(states) != len(records):
            raise DataError("the regime stage emits MarketState records only")
        self.stream.emit(states)
        rows = [history_item(state) for state in states]
        put_items = getattr(self.store, "put_items", None)  # BatchWriteItem when the store has it
        if put_items is not None:
            put_items(self.table, rows)
        else:
            for row in rows:
                self.store.put_item(self.table, row)
