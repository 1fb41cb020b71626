"""The features stage as a :class:`~ensemble_trader.runtime.stage.SymbolStep`.

State per symbol is a :class:`~ensemble_trader.domain.features.FeatureEngine` (serialised with
``to_bytes``/``from_bytes``); each new bar gives one :class:`FeatureVector` for the ``features``
stream and no events. The engine validates before it mutates, so a rejected bar leaves the
state as it was, as the runner requires.
"""

from __future__ import annotations

from pydantic import BaseModel

from ensemble_trader.domain.features import FeatureEngine
from ensemble_trader.domain.models import Bar
from ensemble_trader.runtime.stage import BaseSymbolStep


class FeaturesStep(BaseSymbolStep[FeatureEngine, Bar]):
    name = "features"
    input_model = Bar

    def new_state(self, symbol: str) -> FeatureEngine:
        return FeatureEngine(symbol)

    def load(self, data: bytes) -> FeatureEngine:
        return FeatureEngine.from_bytes(data)

    def dump(self, state: FeatureEngine) -> bytes:
        return state.to_bytes()

    def sequence(self, state: FeatureEngine) -> int | None:
        return state.last_timestamp_ns

    def apply(self, state: FeatureEngine, message: Bar) -> tuple[FeatureEngine, list[BaseModel], list[BaseModel]]:
        vector = state.update(message)
        return state, [vector], []
