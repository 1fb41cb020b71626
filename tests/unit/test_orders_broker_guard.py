"""The operator's CLI refuses to work the kill switch or reconciliation at another broker than the stage's.

``ensemble-trader orders kill-switch`` / ``reconcile`` build their router from the operator's own
``ET_ORDERS_*`` settings (the paper broker by default). Against a stage whose orders functions
trade Alpaca they used to set the switch in the shared risk state but cancel at the paper broker
(the real orders stayed open), or compare the books with the paper broker and "repair" them. The
stage's router now records its broker in the risk state at every save; the CLI compares and
refuses (exit 1, nothing changed anywhere) when they differ, and proceeds when they agree or when
nothing is recorded (a fresh stage, a state saved before the field existed).
"""

from __future__ import annotations

import copy
import json

import pytest
from ensemble_trader.adapters.brokers.paper import PaperBroker
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore, MemoryPaperLedger
from ensemble_trader.domain.models import Order, OrderStatus, Side
from ensemble_trader.domain.risk import RiskLimits, RiskState, merge_states
from ensemble_trader.runtime.clock import FixedClock
from ensemble_trader.runtime.orders import (
    BatchingOrdersStore,
    BrokerMismatchError,
    OrderRouter,
    OrdersSettings,
    broker_name,
    build_router,
)

from tests.unit.test_orders_alpaca_flows import AlpacaRig
from tests.unit.test_orders_dynamo import (
    SETTINGS,
    dynamodb,  # noqa: F401 - the moto DynamoDB fixture
)
from tests.unit.test_orders_router import WALL, Rig, intent


def alpaca_stage() -> AlpacaRig:
    """The stage's router trading Alpaca's paper endpoint (as the deployed functions build it),
    with one order of ours open at Alpaca."""
    rig = AlpacaRig()
    rig.router = OrderRouter(rig.store, rig.router.broker, FixedClock(WALL), events=rig.bus,
                             limits=RiskLimits(clock="event"), initial_equity=100_000,
                             reconcile_grace_seconds=60, reconcile_on_start=False, broker_name="alpaca-paper")
    rig.coid = rig.traded()
    return rig


def paper_operator(store, **kw) -> tuple[OrderRouter, MemoryPaperLedger, MemoryEventBus]:
    """The router an operator's shell with no ET_ORDERS_* settings builds: the paper broker."""
    ledger, bus = MemoryPaperLedger(), MemoryEventBus()
    broker = PaperBroker(ledger, FixedClock(WALL), slippage_bps=0, fee_bps=0)
    router = OrderRouter(store, broker, FixedClock(WALL), events=bus, limits=RiskLimits(clock="event"),
                         reconcile_on_start=False, broker_name="paper", operator=True, **kw)
    return router, ledger, bus


@pytest.fixture()
def cli(monkeypatch, capsys):
    """``run(router, *argv)``: ``ensemble-trader orders ...`` over ``router``; (exit code, stderr)."""
    from ensemble_trader.cli import main
    from ensemble_trader.runtime import orders as runtime_orders

    def run(router: OrderRouter, *argv: str) -> tuple[int, str]:
        seen = {}

        def build(**kw):
            seen.update(kw)
            return router

        monkeypatch.setattr(runtime_orders, "build_router", build)
        capsys.readouterr()
        code = main(["orders", *argv])
        assert seen.get("operator_command")  # the CLI asks for an operator's router
        return code, capsys.readouterr().err

    return run


# -- the stage's router records its broker ---------------------------------------------------------


def test_the_broker_names_of_the_settings():
    assert broker_name(OrdersSettings()) == "paper"
    assert broker_name(OrdersSettings(broker="alpaca")) == "alpaca-paper"
    assert broker_name(OrdersSettings(broker="alpaca", alpaca_paper=False)) == "alpaca-live"
    assert broker_name(OrdersSettings(broker="paper", alpaca_paper=False)) == "paper"


def test_the_stage_router_records_its_broker_when_it_routes_sets_the_switch_and_reconciles():
    rig = alpaca_stage()  # routed two intents
    assert rig.store.load_risk_state().broker == "alpaca-paper"

    paper = Rig()
    paper.router = OrderRouter(paper.store, paper.broker, paper.clock, events=paper.bus, limits=paper.limits,
                               reconcile_on_start=False, broker_name="paper")
    paper.router.set_kill_switch(True, "drill")
    assert paper.store.load_risk_state().broker == "paper"

    # a deployment that changed the broker: the next scheduled reconciliation records the new
    # one even though no halt changes (the stage's router is never refused: its deployment decides)
    fresh = Rig()
    fresh.store.save_risk_state(RiskState(broker="paper"))
    stage = OrderRouter(fresh.store, fresh.broker, fresh.clock, reconcile_on_start=False, broker_name="alpaca-live")
    assert stage.reconcile().ok
    assert fresh.store.load_risk_state().broker == "alpaca-live"
    version = fresh.store.load_risk_state().version
    stage.reconcile()  # recorded: nothing to write
    assert fresh.store.load_risk_state().version == version


def test_a_router_without_a_name_and_an_operators_router_record_nothing():
    rig = Rig()  # in-process uses (backtests, tests) name no broker
    rig.warm()
    assert rig.store.load_risk_state().broker == ""
    operator, _, _ = paper_operator(rig.store)
    operator.set_kill_switch(True, "drill")
    operator.reconcile()
    state = rig.store.load_risk_state()
    assert state.kill_switch and state.broker == ""  # the CLI is not the stage: it records nothing


def test_bad_router_arguments_are_refused_by_name():
    rig = Rig()
    with pytest.raises(ValueError, match="broker_name 'alpaca'"):
        OrderRouter(rig.store, rig.broker, rig.clock, broker_name="alpaca")
    with pytest.raises(ValueError, match="operator's router needs its broker_name"):
        OrderRouter(rig.store, rig.broker, rig.clock, operator=True)


def test_the_merge_keeps_the_broker_of_the_writer_whose_save_lands():
    base = RiskState(broker="paper")
    theirs = RiskState(broker="paper", version=1)
    assert merge_states(base, RiskState(broker="alpaca-live"), theirs).broker == "alpaca-live"
    assert merge_states(base, RiskState(), theirs.model_copy(update={"broker": "alpaca-paper"})).broker == "alpaca-paper"
    # a batch that lost the write to another container of the new deployment keeps the broker
    store = MemoryOrdersStore()
    batching = BatchingOrdersStore(store)
    ours = batching.load_risk_state()
    ours.broker = "alpaca-paper"
    batching.save_risk_state(ours)
    store.save_risk_state(RiskState(broker="alpaca-paper", halted_symbols={"SPX": "x"}))  # theirs, first
    batching.flush()
    stored = store.load_risk_state()
    assert stored.broker == "alpaca-paper" and stored.halted_symbols == {"SPX": "x"}


def test_states_saved_before_the_field_existed_load():
    old = '{"version": 4, "kill_switch": false, "breaker_resets": 0, "halted_symbols": {}}'
    assert RiskState.model_validate_json(old).broker == ""
    store = MemoryOrdersStore()
    store._risk_json, store._risk_version = old, 4
    assert store.load_risk_state().broker == "" and store.load_risk_state().version == 4


# -- the CLI refuses on a mismatch, proceeds on a match or on nothing recorded ---------------------


@pytest.mark.parametrize("command", [("kill-switch", "on", "--reason", "incident 7"), ("reconcile",),
                                     ("kill-switch", "off", "--reason", "done", "--reset-breaker")])
def test_a_paper_cli_against_an_alpaca_stage_is_refused_and_changes_nothing_anywhere(cli, command):
    rig = alpaca_stage()
    rig.store.save_risk_state(rig.store.load_risk_state().model_copy(update={"halted_symbols": {"NDX": "manual"}}))
    state = rig.store.load_risk_state().model_dump()
    orders = {o.client_order_id: o for o in rig.store.list_orders()}
    at_alpaca, requests = copy.deepcopy(rig.alpaca.orders), len(rig.alpaca.requests)
    assert rig.alpaca.orders[rig.coid]["status"] == "accepted"  # open at Alpaca
    operator, ledger, bus = paper_operator(rig.store)

    code, err = cli(operator, *command)

    assert code == 1
    assert "alpaca-paper" in err and "this command's settings trade paper" in err
    for variable in ("ET_ORDERS_BROKER", "ET_ORDERS_ALPACA_PAPER", "ET_ORDERS_ALPACA_SECRET_NAME",
                     "ET_ORDERS_INITIAL_EQUITY"):
        assert variable in err
    assert ("KillSwitch control event" in err) if command[0] == "kill-switch" else ("orders-reconcile" in err)
    assert "Nothing was changed" in err
    # nothing changed: the risk state, our books, Alpaca, the paper broker, the events
    assert rig.store.load_risk_state().model_dump() == state
    assert {o.client_order_id: o for o in rig.store.list_orders()} == orders
    assert rig.alpaca.orders == at_alpaca and len(rig.alpaca.requests) == requests
    assert ledger.orders == {} and bus.events == []


def test_an_alpaca_cli_against_the_alpaca_stage_cancels_there(cli):
    rig = alpaca_stage()
    operator = OrderRouter(rig.store, rig.router.broker, FixedClock(WALL), events=MemoryEventBus(),
                           reconcile_on_start=False, broker_name="alpaca-paper", operator=True)
    code, _ = cli(operator, "kill-switch", "on", "--reason", "incident 7")
    assert code == 0
    assert rig.alpaca.orders[rig.coid]["status"] in ("canceled", "pending_cancel")
    state = rig.store.load_risk_state()
    assert state.kill_switch and state.broker == "alpaca-paper"
    assert cli(operator, "reconcile")[0] == 0


def test_a_cli_proceeds_on_a_fresh_stage(cli):
    rig = Rig()  # nothing stored yet
    operator, _, _ = paper_operator(rig.store)
    assert cli(operator, "kill-switch", "on", "--reason", "drill")[0] == 0
    assert rig.store.load_risk_state().kill_switch
    assert cli(operator, "reconcile")[0] == 0


def test_the_stage_router_is_never_refused_by_the_recorded_broker():
    rig = Rig()
    rig.store.save_risk_state(RiskState(broker="alpaca-live"))  # before a redeploy to paper
    stage = OrderRouter(rig.store, rig.broker, rig.clock, limits=rig.limits, broker_name="paper")
    assert stage.set_kill_switch(True, "drill")["applied"]
    assert rig.store.load_risk_state().broker == "paper"
    stage.handle(intent(0, 0.0, 100.0))


# -- end to end: the CLI's own wiring (build_router) over DynamoDB -----------------------------------


@pytest.fixture()
def stage(dynamodb, monkeypatch):  # noqa: F811
    """The CLI's environment pointed at moto's DynamoDB tables of the stage ``unit``, with the
    events bus, and no ET_ORDERS_* settings (the paper broker)."""
    import boto3
    from ensemble_trader.adapters.aws.clients import clear_client_cache
    from ensemble_trader.runtime.settings import get_settings

    monkeypatch.setenv("ET_STAGE", SETTINGS.stage)
    monkeypatch.delenv("ET_AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name in [n for n in __import__("os").environ if n.startswith(("ET_ORDERS_", "ET_RISK_"))]:
        monkeypatch.delenv(name)
    boto3.client("events", region_name="us-east-1").create_event_bus(Name=SETTINGS.name("events"))
    get_settings.cache_clear()
    clear_client_cache()
    yield dynamodb
    get_settings.cache_clear()
    clear_client_cache()


def _tables(client) -> dict:
    return {t: sorted(client.scan(TableName=SETTINGS.name(t))["Items"], key=json.dumps)
            for t in ("orders", "positions", "risk-state", "paper-broker")}


def _put_state(client, state_json: str, version: int = 3) -> None:
    client.put_item(TableName=SETTINGS.name("risk-state"), Item={
        "pk": {"S": "global"}, "version": {"N": str(version)}, "trading_state": {"S": "ACTIVE"},
        "state": {"S": state_json}, "kill_switch": {"BOOL": False}, "kill_switch_reason": {"S": ""},
    })


def _working_order(client) -> None:
    from datetime import UTC, datetime

    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore

    t = datetime(2026, 1, 5, tzinfo=UTC)
    DynamoOrdersStore(client, settings=SETTINGS).create_order(Order(
        client_order_id="et" + "b" * 30, intent_id="i", strategy_id="ens", symbol="SPX", side=Side.BUY,
        quantity=10, status=OrderStatus.SUBMITTED, broker_order_id="alpaca-1", created_at=t, updated_at=t,
        decision_time=t, decision_price=100.0))


@pytest.mark.parametrize("argv", [["orders", "kill-switch", "on", "--reason", "incident 7"], ["orders", "reconcile"]])
def test_the_cli_refuses_a_stage_whose_router_trades_alpaca_live(stage, capsys, argv):
    from ensemble_trader.cli import main

    _put_state(stage, json.dumps({"version": 3, "broker": "alpaca-live", "breaker_resets": 0}))
    _working_order(stage)
    before = _tables(stage)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the stage's order router trades alpaca-live" in err and "settings trade paper" in err
    if argv[1] == "kill-switch":
        assert "et-unit-events" in err and "et-unit-orders-kill-switch" in err
    else:
        assert "aws lambda invoke --function-name et-unit-orders-reconcile" in err
    assert "et-unit-orders --query Environment.Variables" in err
    assert _tables(stage) == before  # the state, the order, the paper broker's books: all as they were
    assert main(["orders", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["broker"] == "alpaca-live"


def test_an_alpaca_cli_is_refused_by_a_paper_stage_before_it_reads_the_broker_keys(stage, monkeypatch):
    monkeypatch.setenv("ET_ORDERS_BROKER", "alpaca")  # the secret does not exist: the check comes first
    _put_state(stage, json.dumps({"version": 3, "broker": "paper", "breaker_resets": 0}))
    with pytest.raises(BrokerMismatchError, match="trades paper .* settings trade alpaca-paper") as caught:
        build_router(operator_command="kill switch on")
    assert (caught.value.ours, caught.value.stored) == ("alpaca-paper", "paper")


@pytest.mark.parametrize("recorded", ['"broker": "paper", ', ""])  # a paper stage; a state saved before the field
def test_the_cli_proceeds_on_a_paper_stage_and_on_an_old_state(stage, capsys, recorded):
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
    from ensemble_trader.cli import main

    _put_state(stage, "{" + recorded + '"version": 3, "breaker_resets": 0}')
    assert main(["orders", "kill-switch", "on", "--reason", "drill"]) == 0
    assert main(["orders", "reconcile"]) == 0
    state = DynamoOrdersStore(stage, settings=SETTINGS).load_risk_state()
    assert state.kill_switch and state.broker == ("paper" if recorded else "")
