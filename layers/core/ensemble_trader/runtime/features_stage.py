"""The features stage as a :class:`~ensemble_trader.runtime.stage.SymbolStep`.

State per symbol is a :class:`~ensemble_trader.domain.features.FeatureEngine` (serialised with
``to_bytes``/``from_bytes``); each new bar gives one :class:`FeatureVector` for the ``features``
stream and no events. The engine validates before it mutates, so a rejected bar leaves the
state as it was, as the runner requires.

Upgrading the feature version: a stored state of an older ``STATE_VERSION`` cannot be converted
(version 1 lacks the last 126 closes). When it is intact (:attr:`FeatureStateVersionError.readable`)
and of the symbol it is stored under, :meth:`FeaturesStep.start_over` gives the runner a new
engine that starts after the old state's last bar (:meth:`FeatureEngine.restart`): redelivered
bars stay no-ops, new bars warm it up again (``WARMUP_BARS`` − 1 = 172 vectors not ready, the
173rd ready, which the regime and meta-agent stages treat as any warm-up), and the runner logs
it and counts ``features_state_restarted``. A corrupt state, a newer version or another
symbol's state is still refused (the symbol's records fail, as before).

Another symbol's state of the current version loads (its bytes are intact); the first bar of the
symbol it is stored under then raises :class:`StateError` in :meth:`FeaturesStep.apply`, as the
regime stage does: the runner fails the symbol's records of the batch, never rejecting them as
invalid. They are not retried for ever, though: the features mapping retries a failed batch
``retry_attempts`` = 3 times (:mod:`ensemble_trader.constants`), then Lambda sends the batch's
metadata (shard and sequence range, not the bars) to ``features-dlq`` and goes on; so does every
later batch with a bar of that symbol, until the state under that key is replaced. The alarm
``FeaturesDlqNotEmpty`` catches it with the first letter (``FeaturesFailedItems`` only while the
symbol's bars fail three minutes in a row); nothing names the cause but the function's log.
Recovery: docs/runbook.md §5, ``features-dlq`` letters of kind (c) — drop the symbol's states
and cache keys and re-feed its bars from its first bar (§3.2), which applies the dead-lettered
ones too. docs/features.md ("State format") has the details.
"""

from __future__ import annotations

from pydantic import BaseModel

from ensemble_trader.domain.errors import StateError
from ensemble_trader.domain.features import (
    FEATURE_VERSION,
    STATE_VERSION,
    WARMUP_BARS,
    FeatureEngine,
    FeatureStateVersionError,
)
from ensemble_trader.domain.models import Bar
from ensemble_trader.runtime.stage import BaseSymbolStep, iso_utc


class FeaturesStep(BaseSymbolStep[FeatureEngine, Bar]):
    name = "features"
    input_model = Bar
    detects_conflicts = True
    """Bars come from producers outside the pipeline: a bar at a handled time with other content (a
    vendor's correction, two versions of one bar) is dead-lettered as a conflicting record, not
    skipped (the derived stages after it keep time-only deduplication)."""
    checks_partition_key = True
    """A producer must put each bar with its symbol as the partition key (the feed does), so that
    the bars of a symbol share a shard and arrive in order. A valid bar under another key is
    processed like any other (it is valid, and a key that is another constant per symbol keeps the
    order as well),
    counted as ``features_foreign_partition_keys`` and named in one warning per batch; a bar that
    another key made arrive after a newer one is dead-lettered as late, its reason naming the key
    (see the runner's rules in :mod:`ensemble_trader.runtime.stage`)."""

    def new_state(self, symbol: str) -> FeatureEngine:
        return FeatureEngine(symbol)

    def load(self, data: bytes) -> FeatureEngine:
        return FeatureEngine.from_bytes(data)

    def dump(self, state: FeatureEngine) -> bytes:
        return state.to_bytes()

    def sequence(self, state: FeatureEngine) -> int | None:
        return state.last_timestamp_ns

    def apply(self, state: FeatureEngine, message: Bar) -> tuple[FeatureEngine, list[BaseModel], list[BaseModel]]:
        if state.symbol != message.symbol:  # the state is wrong, not the bar: failed for the mapping to retry
            raise StateError(
                f"feature state of {state.symbol} is stored under the key of {message.symbol} (a bar of "
                f"{message.symbol} cannot be applied to it); replace the state of {message.symbol}"
            )
        vector = state.update(message)
        return state, [vector], []

    def start_over(self, symbol: str, data: bytes, error: Exception) -> tuple[FeatureEngine, str] | None:
        """A new engine for an intact state of an older version (which cannot be converted),
        starting after its last bar, with the note the runner logs; None for anything else."""
        if not isinstance(error, FeatureStateVersionError) or not error.restartable or error.symbol != symbol:
            return None
        last = error.last_timestamp_ns
        after = "no bar applied" if last is None else f"last bar {iso_utc(last)}"
        note = (
            f"feature state version {error.found} (stored) cannot be converted to version {STATE_VERSION} "
            f"(feature version {FEATURE_VERSION}); a new engine starts after it ({after}): the next "
            f"{WARMUP_BARS - 1} vectors of {symbol} are warming up (not ready), the {WARMUP_BARS}th is the first ready one"
        )
        return FeatureEngine.restart(symbol, last), note
