"""The orders functions' reconciliation grace is derived from the order-intents queue as deployed:
longer than a failed intent's redelivery gap (the queue's visibility timeout plus the function's
timeout), so the scheduled reconciliation never retires the unsent order of an intent SQS is still
delivering (it was 120 s against a 180 s visibility timeout: a trade refused for its keys was
dropped)."""

from __future__ import annotations

import pytest
from ensemble_trader.constants import function_spec, qualified
from ensemble_trader.runtime.orders import (
    OrdersSettings,
    ReconcileGraceError,
    reconcile_grace_seconds_for,
    visibility_timeout_seconds,
)

from tests.infrastructure.conftest import synthesise, write_fixture_handlers

ORDERS = function_spec("orders")


def _queue_visibility(template: dict, logical: str) -> int:
    [queue] = [r["Properties"] for r in template["Resources"].values()
               if r["Type"] == "AWS::SQS::Queue" and r["Properties"].get("QueueName") == qualified("dev", logical)]
    return queue["VisibilityTimeout"]


def test_every_orders_entry_gets_a_grace_longer_than_the_queues_redelivery_gap(full, monkeypatch):
    visibility = _queue_visibility(full.template, ORDERS.mapping.source)
    assert visibility == visibility_timeout_seconds(ORDERS) == 180
    graces = {}
    for props in full.props("AWS::Lambda::Function"):
        variables = props["Environment"]["Variables"]
        if "ET_ORDERS_BROKER" in variables:
            graces[props["FunctionName"]] = (variables["ET_ORDERS_RECONCILE_GRACE_SECONDS"], props["Timeout"])
    assert len(graces) == 3  # orders, reconcile, kill switch
    for grace, timeout in graces.values():
        assert float(grace) == reconcile_grace_seconds_for(ORDERS) == 240
        assert float(grace) > visibility + timeout
        monkeypatch.setenv("ET_ORDERS_RECONCILE_GRACE_SECONDS", grace)
        assert OrdersSettings().reconcile_grace_seconds == 240


def test_the_app_refuses_a_grace_within_the_redelivery_gap(layers_built, tmp_path, monkeypatch):
    """A change that shortened the grace (or lengthened the queue's visibility timeout) past the
    other fails the synthesis, naming both figures."""
    import infra_cdk.constructs.functions as functions

    monkeypatch.setattr(functions, "reconcile_grace_seconds_for", lambda spec: 120)
    write_fixture_handlers(tmp_path / "functions")
    with pytest.raises(ReconcileGraceError, match=r"=120 is not longer than the redelivery gap of the "
                                                  r"order-intents queue \(210 s: its visibility timeout of 180 s"):
        synthesise(tmp_path / "cdk.out", tmp_path / "functions", "dev")
