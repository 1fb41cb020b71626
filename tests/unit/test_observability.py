"""Each service's metrics are its own, also when several handlers share one process (local stack)."""

from __future__ import annotations

import json

from ensemble_trader.runtime.observability import clear_pending_metrics, observability


def test_two_services_in_one_process_flush_only_their_own_metrics(monkeypatch, capsys):
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    first, second = observability("unit_first"), observability("unit_second")
    assert observability("unit_first") is first  # one trio per service and process
    first.metrics.add_metric(name="first_count", unit="Count", value=1)
    second.metrics.add_metric(name="second_count", unit="Count", value=2)
    first.metrics.flush_metrics()
    emitted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert emitted["service"] == "unit_first" and "first_count" in emitted
    assert "second_count" not in emitted
    clear_pending_metrics()
    second.metrics.add_metric(name="later", unit="Count", value=3)
    second.metrics.flush_metrics()
    emitted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "later" in emitted and "second_count" not in emitted  # the pending one was dropped
