"""Times the order stage took without a bound.

An ``OrderIntent`` dated outside the times bars keep (``0001-01-01T00:00:00+14:00``) raised a
bare ``OverflowError`` while routing, and one with digits past the microsecond was truncated.
Both are refused as a bar's are, so the consumer dead-letters them ``MALFORMED_INTENT`` with the
reason.
"""

from __future__ import annotations

import json

import pytest
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.fakes import MemoryDeadLetters
from ensemble_trader.domain.models import OrderIntent
from ensemble_trader.runtime.orders import IntentConsumer

from tests.unit.test_orders_router import Rig, intent


def _consume(timestamp: str) -> tuple[Rig, dict, MemoryDeadLetters]:
    rig = Rig()
    rig.bus = rig.router.events = MemoryEventBus()
    letters = MemoryDeadLetters()
    body = intent(1, 0.5, 100.0).model_dump(mode="json") | {"timestamp": timestamp}
    result = IntentConsumer(rig.router, letters).process(json.dumps(body))
    return rig, result, letters


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                       "1600-01-01T00:00:00Z", "2262-04-11T00:00:00Z"])
def test_an_intent_outside_the_times_kept_is_dead_lettered_as_malformed(timestamp):
    rig, result, letters = _consume(timestamp)
    assert result["dead_lettered"] and result["reason"] == "MALFORMED_INTENT"
    assert f"timestamp='{timestamp}'" in letters.reasons[0]
    assert "outside the times kept" in letters.reasons[0]
    assert rig.store.list_orders() == [] and rig.paper.list_open_orders() == []


def test_an_intent_with_nanoseconds_is_dead_lettered_as_malformed():
    rig, result, letters = _consume("2021-03-02T00:00:00.000000001Z")
    assert result["dead_lettered"] and result["reason"] == "MALFORMED_INTENT"
    assert "sub-microsecond digits" in letters.reasons[0]
    assert rig.store.list_orders() == []


@pytest.mark.parametrize("timestamp", ["2021-03-02T00:00:00.000001000Z", "2021-03-02T00:00:00.5+14:00"])
def test_intent_times_to_the_microsecond_are_taken(timestamp):
    assert OrderIntent.parse(intent(1, 0.5, 100.0).model_dump(mode="json") | {"timestamp": timestamp})
