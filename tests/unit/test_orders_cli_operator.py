"""``ensemble-trader orders``: where it acts, what ``status`` shows, and usage errors before any AWS call.

* The commands went to ``AWS_REGION`` or us-east-1, whatever region the shell's ``aws`` commands
  used; a failing read named neither table nor region ("DynamoDB get risk state:
  ResourceNotFoundException"). They now print stage, region and table on stderr before acting,
  and the store's errors name the table and the region.
* ``status``'s text output showed neither the time nor the id of the command that set the kill
  switch (only ``--json`` did), which the runbook's ``KillSwitchOnIgnored`` row tells to look at.
* ``kill-switch on --reset-breaker`` was refused only after a DynamoDB read (without credentials:
  NoCredentialsError instead), exit 1 with a dump of an internal dict; it is a usage error, exit 2.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ensemble_trader.adapters.aws.clients import clear_client_cache
from ensemble_trader.runtime.settings import get_settings

from tests.unit.test_orders_dynamo import (
    SETTINGS,
    dynamodb,  # noqa: F401 - the moto DynamoDB fixture (tables of the stage "unit" in us-east-1)
)


@pytest.fixture()
def shell(dynamodb, monkeypatch):  # noqa: F811
    """An operator's shell for the stage ``unit`` (moto's DynamoDB, tables in us-east-1)."""
    monkeypatch.setenv("ET_STAGE", SETTINGS.stage)
    for name in ("ET_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    clear_client_cache()
    yield dynamodb
    get_settings.cache_clear()
    clear_client_cache()


def _switch_on(client, **attributes: str) -> None:
    item = {"pk": {"S": "global"}, "version": {"N": "2"}, "kill_switch": {"BOOL": True},
            "kill_switch_reason": {"S": "incident 7"}}
    item.update({name: {"S": value} for name, value in attributes.items()})
    client.put_item(TableName=SETTINGS.name("risk-state"), Item=item)


def test_status_in_another_region_than_the_stacks_names_the_table_and_the_region(shell, monkeypatch, capsys):
    """The shell's aws commands use eu-west-1 (AWS_DEFAULT_REGION); the stage's tables are in us-east-1."""
    from ensemble_trader.cli import main

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert main(["orders", "status"]) == 1
    err = capsys.readouterr().err
    assert "orders status: stage unit, region eu-west-1, table et-unit-risk-state" in err
    assert ("ensemble-trader: error: DynamoDB get risk state (table et-unit-risk-state, region eu-west-1): "
            in err) and "ResourceNotFoundException" in err


def test_status_says_where_it_reads_before_the_output(shell, capsys):
    from ensemble_trader.cli import main

    assert main(["orders", "status", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "orders status: stage unit, region us-east-1, table et-unit-risk-state\n"
    assert captured.out.startswith("{")  # stdout stays one JSON object


def test_status_text_shows_the_time_and_id_of_the_command_that_set_the_switch(shell, capsys):
    from ensemble_trader.cli import main

    _switch_on(shell, kill_switch_at="2026-03-02T10:15:00+00:00", kill_switch_command_id="manual-2026-03-02")
    assert main(["orders", "status"]) == 0
    out = capsys.readouterr().out
    assert "kill switch    ON: incident 7\n  set by       manual-2026-03-02 at 2026-03-02T10:15:00+00:00\n" in out


def test_status_text_of_a_switch_set_before_commands_carried_their_time_and_id(shell, capsys):
    from ensemble_trader.cli import main

    _switch_on(shell)
    assert main(["orders", "status"]) == 0
    out = capsys.readouterr().out
    assert "kill switch    ON: incident 7\n" in out and "set by" not in out


def test_the_stores_errors_name_table_and_region(shell):
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
    from ensemble_trader.domain.errors import InfrastructureError
    from ensemble_trader.domain.models import Order, Side

    shell.delete_table(TableName=SETTINGS.name("orders"))
    store = DynamoOrdersStore(shell, settings=SETTINGS)
    t = datetime(2026, 1, 5, tzinfo=UTC)
    order = Order(client_order_id="et" + "c" * 30, intent_id="i", strategy_id="s", symbol="SPX", side=Side.BUY,
                  quantity=1.0, created_at=t, updated_at=t, decision_time=t, decision_price=10.0)
    with pytest.raises(InfrastructureError, match=r"\(table et-unit-orders, region us-east-1\)"):
        store.get_order(order.client_order_id)
    with pytest.raises(InfrastructureError, match=r"\(table et-unit-orders, region us-east-1\)"):
        store.create_order(order)  # a transaction
    with pytest.raises(InfrastructureError, match=r"DynamoDB scan \(table et-unit-orders, region us-east-1\)"):
        store.list_orders()


@pytest.mark.parametrize("argv", [["on", "--reason", "x", "--reset-breaker"], ["--reset-breaker", "on", "--reason", "x"]])
def test_reset_breaker_with_on_is_a_usage_error_before_any_aws_call(monkeypatch, capsys, argv):
    """No credentials, no region, no stack: the flag's problem is what is reported."""
    from ensemble_trader.cli import main
    from ensemble_trader.runtime import orders as runtime_orders

    def no_call(*_a, **_k):
        raise AssertionError("AWS was reached")

    monkeypatch.setattr(runtime_orders, "build_router", no_call)
    monkeypatch.setattr("boto3.session.Session.client", no_call)
    with pytest.raises(SystemExit) as caught:
        main(["orders", "kill-switch", *argv])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "error: argument --reset-breaker: only with 'off'" in err
