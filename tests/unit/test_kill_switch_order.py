"""Kill-switch commands apply in the order they were issued, not delivered.

The kill_switch entry is invoked asynchronously by EventBridge, and Lambda retries a failed
invocation (twice, up to an hour): an "off" whose run failed after the flag was saved comes back
minutes later, when the operator may have turned the switch on again. The command's time (the
event's ``time``) and id (the event's ``id``) are stored with the flag; an older command is a
logged no-op, and the same command delivered again finishes what its first run left undone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from ensemble_trader.adapters.memory import MemoryEventBus
from ensemble_trader.domain.errors import ConcurrencyError, InfrastructureError, InvalidMessageError
from ensemble_trader.domain.orders import KillSwitchCommand
from ensemble_trader.domain.risk import RiskState, TradingState, merge_states
from ensemble_trader.local.events import FakeLambdaContext
from ensemble_trader.local.functions import load_module
from ensemble_trader.runtime.orders import CancelFailedError

from tests.unit.test_orders_alpaca_flows import AlpacaRig
from tests.unit.test_orders_dynamo import dynamodb  # noqa: F401 - the moto DynamoDB fixture
from tests.unit.test_orders_router import EVENTS, Rig, intent

T = datetime(2026, 1, 5, 15, tzinfo=UTC)


class FlakyBus(MemoryEventBus):
    """EventBridge failing the next ``fail`` publishes (the kill-switch run fails after saving)."""

    fail = 0

    def publish(self, events):
        if self.fail:
            self.fail -= 1
            raise InfrastructureError("EventBridge PutEvents: ServiceUnavailable")
        return super().publish(events)


def control_event(active: bool, reason: str, at: datetime, event_id: str, **detail) -> dict:
    return {"version": "0", "id": event_id, "detail-type": "KillSwitch", "source": "ensemble-trader.control",
            "account": "123456789012", "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": "us-east-1",
            "resources": [], "detail": {"active": active, "reason": reason, **detail}}


@pytest.fixture()
def entry(monkeypatch):
    """The kill_switch Lambda entry over a Rig's router (memory stores, paper broker, FlakyBus)."""
    rig = Rig()
    rig.clock.set(T)  # the function's clock: the events are put now
    rig.bus = rig.router.events = FlakyBus()
    module = load_module("orders", "kill_switch", fresh=True)
    monkeypatch.setattr(module, "router", lambda: rig.router)

    def invoke(event: dict) -> dict:
        return module.lambda_handler(event, FakeLambdaContext("et-unit-orders-kill-switch"))

    return rig, invoke


def test_a_retried_off_does_not_undo_a_later_on(entry):
    """The reviewer's sequence: OFF fails after saving the flag, ON, then Lambda's retry of the OFF."""
    rig, invoke = entry
    invoke(control_event(True, "incident 1", T - timedelta(minutes=10), "ev-on-1"))
    off = control_event(False, "incident 1 resolved", T, "ev-off-1")
    rig.bus.fail = 1
    with pytest.raises(InfrastructureError):
        invoke(off)  # the flag is saved off, the publish failed: Lambda retries it
    assert not rig.store.load_risk_state().kill_switch
    assert invoke(control_event(True, "incident 2", T + timedelta(seconds=30), "ev-on-2"))["active"]
    result = invoke(off)  # the retry, a minute later
    state = rig.store.load_risk_state()
    assert state.kill_switch and state.kill_switch_reason == "incident 2"
    assert result["active"] and not result["applied"] and "before" in result["ignored"]
    assert (state.kill_switch_at, state.kill_switch_command_id) == (T + timedelta(seconds=30), "ev-on-2")


def test_the_same_event_delivered_again_finishes_its_cancels_without_saving_again():
    """An ON whose first run saved the flag but could not cancel everything: its retry (the same
    event id) cancels what is still working and publishes KillSwitchChanged again."""
    rig = AlpacaRig()
    coids = [rig.working(f"et{i:030d}", symbol=f"S{i}").client_order_id for i in range(3)]
    rig.alpaca.answers["DELETE /v2/orders"] = [(500, {"code": 50010000, "message": "internal server error"})]
    command = KillSwitchCommand.from_event(control_event(True, "operator: stop", T, "ev-on"))
    with pytest.raises(CancelFailedError):
        rig.router.apply_kill_switch(command)
    version = rig.store.load_risk_state().version
    assert [rig.alpaca.orders[c]["status"] for c in coids] == ["new", "pending_cancel", "pending_cancel"]
    result = rig.router.apply_kill_switch(command)  # Lambda's retry
    assert result["applied"] and result["retry"] and result["canceled"] == coids
    assert rig.alpaca.orders[coids[0]]["status"] == "pending_cancel"
    assert rig.store.load_risk_state().version == version  # the flag is not written again
    assert [e.canceled for e in rig.events("KillSwitchChanged")] == [coids[1:], coids]


def test_the_same_event_delivered_again_after_a_failed_publish_publishes_and_does_not_reset_twice():
    rig = Rig(drawdown_reduce=0.05, drawdown_halt=0.1)
    rig.bus = rig.router.events = FlakyBus()
    rig.warm()
    rig.router.handle(intent(1, 1.0, 100.0))
    rig.router.handle(intent(2, 1.0, 100.0))
    rig.router.handle(intent(3, 1.0, 85.0))  # -15 %: a latched drawdown halt
    command = KillSwitchCommand.from_event(control_event(False, "reviewed", T, "ev-reset", reset_breaker=True))
    rig.bus.fail = 1
    with pytest.raises(InfrastructureError):
        rig.router.apply_kill_switch(command)
    state = rig.store.load_risk_state()
    assert (state.trading_state, state.breaker_resets) == (TradingState.ACTIVE, 1)
    result = rig.router.apply_kill_switch(command)
    assert result["retry"] and result["trading_state"] == "ACTIVE"
    assert rig.store.load_risk_state().breaker_resets == 1  # the reset is not repeated
    assert [e.reason for e in rig.events("KillSwitchChanged")] == ["reviewed"]


def test_a_retry_of_a_command_the_operator_overrode_by_hand_is_stale():
    rig = Rig()
    command = KillSwitchCommand.from_event(control_event(True, "incident", T, "ev-on"))
    rig.router.apply_kill_switch(command)
    rig.store.kill_switch_flag = False  # an operator's direct update-item of the flag
    result = rig.router.apply_kill_switch(command)
    assert not result["applied"] and "changed since" in result["ignored"]
    assert not rig.store.load_risk_state().kill_switch


def test_in_the_same_second_an_on_wins_and_an_off_does_not_lift_the_switch():
    rig = Rig()
    on = KillSwitchCommand.from_event(control_event(True, "incident", T, "ev-on"))
    off = KillSwitchCommand.from_event(control_event(False, "resolved", T, "ev-off"))
    rig.router.apply_kill_switch(off)
    assert rig.router.apply_kill_switch(on)["active"]
    result = rig.router.apply_kill_switch(off)
    assert not result["applied"] and "tie never lifts" in result["ignored"]
    assert rig.store.load_risk_state().kill_switch


def test_a_later_command_applies_and_one_without_a_time_is_taken_as_now():
    rig = Rig()
    rig.router.apply_kill_switch(KillSwitchCommand.from_event(control_event(True, "a", T, "ev-1")))
    assert not rig.router.apply_kill_switch(
        KillSwitchCommand.from_event(control_event(False, "b", T + timedelta(seconds=1), "ev-2")))["active"]
    # in process, without a time: issued now (the rig's wall clock, before T), never moving the time back
    assert rig.router.set_kill_switch(True, "c")["applied"]
    state = rig.store.load_risk_state()
    assert state.kill_switch and state.kill_switch_at == T + timedelta(seconds=1)
    assert state.kill_switch_command_id == ""


def test_a_state_stored_before_commands_had_a_time_takes_any_command():
    from ensemble_trader.domain.risk import KillSwitchVerdict, kill_switch_verdict

    old = RiskState.model_validate_json('{"version": 3, "kill_switch": true, "kill_switch_reason": "x"}')
    assert old.kill_switch_at is None and old.kill_switch_command_id == ""
    command = KillSwitchCommand.from_event(control_event(False, "resolved", T, "ev-off"))
    assert kill_switch_verdict(old, command)[0] is KillSwitchVerdict.APPLY


def _switched(state: RiskState, active: bool, at: datetime, cid: str) -> RiskState:
    return state.model_copy(update={"kill_switch": active, "kill_switch_reason": cid, "kill_switch_at": at,
                                    "kill_switch_command_id": cid})


@pytest.mark.parametrize(("ours_at", "theirs_at", "winner"), [
    (T + timedelta(seconds=2), T + timedelta(seconds=1), "ours"),
    (T + timedelta(seconds=1), T + timedelta(seconds=2), "theirs"),
])
def test_the_merge_keeps_the_newer_command_when_both_sides_changed_the_switch(ours_at, theirs_at, winner):
    base = _switched(RiskState(), True, T, "base")
    ours = _switched(base, False, ours_at, "ours")
    theirs = _switched(base, True, theirs_at, "theirs").model_copy(update={"version": 1})
    merged = merge_states(base, ours, theirs)
    expected = {"ours": ours, "theirs": theirs}[winner]
    assert (merged.kill_switch, merged.kill_switch_reason, merged.kill_switch_at, merged.kill_switch_command_id) == (
        expected.kill_switch, expected.kill_switch_reason, expected.kill_switch_at, expected.kill_switch_command_id)
    assert merged.version == 1
    # only one side changed it: that side's command, whatever the times
    assert merge_states(base, ours, base.model_copy(update={"version": 1})).kill_switch_command_id == "ours"
    assert merge_states(base, base, theirs).kill_switch_command_id == "theirs"


def test_the_control_event_must_carry_its_time_and_id_and_the_detail_cannot_set_them():
    event = json.loads((EVENTS / "eventbridge-kill-switch-on.json").read_text())
    command = KillSwitchCommand.from_event(event)
    assert command.issued_at == datetime(2025, 1, 2, 14, 30, tzinfo=UTC) and command.command_id == event["id"]
    for change, match in [({"time": None}, "time="), ({"time": "yesterday"}, "time="),
                          ({"time": "2025-01-02T14:30:00"}, "time="), ({"id": ""}, "id="),
                          ({"detail": {**event["detail"], "issued_at": "2099-01-01T00:00:00Z"}}, "detail.issued_at")]:
        with pytest.raises(InvalidMessageError, match=match):
            KillSwitchCommand.from_event({**event, **change})


def test_the_cli_without_a_server_clock_uses_its_own_in_whole_seconds_and_fails_when_stale(monkeypatch, capsys):
    from ensemble_trader.cli import main
    from ensemble_trader.runtime import orders as runtime_orders

    rig = Rig()  # memory stores: no server clock, the router's clock stands in
    rig.clock.set(T + timedelta(milliseconds=600))
    monkeypatch.setattr(runtime_orders, "build_router", lambda **_: rig.router)
    assert main(["orders", "kill-switch", "on", "--reason", "cli drill"]) == 0
    state = rig.store.load_risk_state()
    assert state.kill_switch and state.kill_switch_command_id.startswith("cli-")
    assert state.kill_switch_at == T  # whole seconds, as EventBridge's time
    # a control event dated later holds the switch: the CLI's "off" is older
    rig.router.apply_kill_switch(KillSwitchCommand.from_event(
        control_event(True, "incident", T + timedelta(days=1), "ev-later")))
    capsys.readouterr()
    assert main(["orders", "kill-switch", "off", "--reason", "drill over"]) == 1
    assert "kill switch not changed" in capsys.readouterr().err
    assert rig.store.load_risk_state().kill_switch


class AwsClock:
    """A DynamoDB client whose answers carry ``Date`` headers of AWS's clock (``now``), not the
    machine's; moto's give the local clock."""

    def __init__(self, client, now: datetime):
        self._client, self.now = client, now

    def __getattr__(self, name):
        call = getattr(self._client, name)
        if not callable(call):
            return call

        def stamped(*args, **kwargs):
            response = call(*args, **kwargs)
            response["ResponseMetadata"]["HTTPHeaders"]["date"] = self.now.strftime("%a, %d %b %Y %H:%M:%S GMT")
            return response

        return stamped


def test_the_cli_stamps_its_command_with_awss_clock_so_a_later_control_event_on_applies(
        dynamodb, monkeypatch, capsys):  # noqa: F811
    """The reviewer's sequence: the CLI lifts the switch at 15:00:00.600 by the operator's clock,
    another operator's EventBridge "on" follows in the same second (``time`` 15:00:00Z) — it must
    apply. And an operator clock minutes fast must not hold back the ONs put after its "off"."""
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
    from ensemble_trader.cli import main
    from ensemble_trader.runtime import orders as runtime_orders
    from ensemble_trader.runtime.orders import OrderRouter

    from tests.unit.test_orders_dynamo import SETTINGS

    rig = Rig()
    aws = AwsClock(dynamodb, T)
    store = DynamoOrdersStore(aws, settings=SETTINGS)
    router = OrderRouter(store, rig.broker, rig.clock, events=rig.bus, reconcile_on_start=False)
    monkeypatch.setattr(runtime_orders, "build_router", lambda **_: router)
    router.apply_kill_switch(KillSwitchCommand.from_event(
        control_event(True, "incident", T - timedelta(minutes=5), "ev-on-0")))

    rig.clock.set(T + timedelta(milliseconds=600))  # the operator's machine
    aws.now = T
    assert main(["orders", "kill-switch", "off", "--reason", "resolved"]) == 0
    state = store.load_risk_state()
    assert not state.kill_switch and state.kill_switch_at == T  # AWS's clock, whole seconds
    on = router.apply_kill_switch(KillSwitchCommand.from_event(control_event(True, "new incident", T, "ev-on-1")))
    assert on["applied"] and on["active"] and store.load_risk_state().kill_switch

    rig.clock.set(T + timedelta(minutes=12))  # the operator's clock 2 minutes fast
    aws.now = T + timedelta(minutes=10)
    assert main(["orders", "kill-switch", "off", "--reason", "resolved again"]) == 0
    assert store.load_risk_state().kill_switch_at == T + timedelta(minutes=10)
    on = router.apply_kill_switch(KillSwitchCommand.from_event(
        control_event(True, "third incident", T + timedelta(minutes=11, seconds=30), "ev-on-2")))
    assert on["applied"] and store.load_risk_state().kill_switch


def test_a_server_answer_without_a_date_is_an_error_not_the_local_clock(dynamodb):  # noqa: F811
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
    from ensemble_trader.domain.errors import InfrastructureError

    from tests.unit.test_orders_dynamo import SETTINGS

    class NoDate(AwsClock):
        def __getattr__(self, name):
            call = getattr(self._client, name)

            def undated(*args, **kwargs):
                response = call(*args, **kwargs)
                response["ResponseMetadata"]["HTTPHeaders"].pop("date", None)
                return response

            return undated

    with pytest.raises(InfrastructureError, match="Date"):
        DynamoOrdersStore(NoDate(dynamodb, T), settings=SETTINGS).server_time()


def test_times_are_compared_in_whole_seconds_also_a_stored_one_with_a_fraction():
    """A state written by an older CLI (its machine's clock, microseconds): an "on" in the same
    second applies (the tie rule), an "off" in the same second does not lift the switch."""
    from ensemble_trader.domain.risk import KillSwitchVerdict, kill_switch_verdict

    off = RiskState(kill_switch=False, kill_switch_reason="resolved", kill_switch_at=T + timedelta(milliseconds=600),
                    kill_switch_command_id="cli-old")
    on = KillSwitchCommand.from_event(control_event(True, "incident", T, "ev-on"))
    assert kill_switch_verdict(off, on)[0] is KillSwitchVerdict.APPLY
    stored_on = off.model_copy(update={"kill_switch": True})
    late_off = KillSwitchCommand.parse({"active": False, "reason": "x", "issued_at": T + timedelta(milliseconds=900),
                                        "command_id": "cli-new"})
    assert late_off.issued_at == T  # kept in whole seconds
    assert kill_switch_verdict(stored_on, late_off)[0] is KillSwitchVerdict.STALE


def test_an_ignored_on_is_an_error_and_an_event(entry, caplog):
    rig, invoke = entry
    invoke(control_event(False, "all clear", T, "ev-off"))
    with caplog.at_level("WARNING"):
        result = invoke(control_event(True, "incident", T - timedelta(minutes=1), "ev-on-late"))
    assert not result["applied"] and not result["active"]
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "ignored" in r.getMessage()]
    assert errors and "ev-on-late" in errors[0].getMessage()
    (ignored,) = rig.events("KillSwitchCommandIgnored")
    assert (ignored.command_id, ignored.active, ignored.switch_active) == ("ev-on-late", True, False)
    assert "before the stored command ev-off" in ignored.ignored
    # an ignored "off" (the switch stays on: the safe side) is published too, logged as a warning
    invoke(control_event(True, "incident 2", T + timedelta(minutes=1), "ev-on-2"))
    caplog.clear()
    with caplog.at_level("WARNING"):
        invoke(control_event(False, "late all clear", T, "ev-off-late"))
    assert [e.active for e in rig.events("KillSwitchCommandIgnored")] == [True, False]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


class HandFlipBetweenLoadAndSave:
    """A store on which an operator flips the switch by hand (kill_switch, its reason and time; no
    version bump, the runbook's update-item before it said so) right after the next load."""

    def __init__(self, inner, flip):
        self.inner, self.flip, self.armed = inner, flip, True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def load_risk_state(self):
        state = self.inner.load_risk_state()
        if self.armed:
            self.armed = False
            self.flip()
        return state


def _late_off_after_a_hand_flip(store, flip) -> tuple[dict, RiskState]:
    from ensemble_trader.adapters.brokers.paper import PaperBroker
    from ensemble_trader.adapters.memory.orders_store import MemoryPaperLedger
    from ensemble_trader.runtime.clock import FixedClock
    from ensemble_trader.runtime.orders import OrderRouter

    clock = FixedClock(T)
    router = OrderRouter(store, PaperBroker(MemoryPaperLedger(), clock), clock, reconcile_on_start=False)
    router.apply_kill_switch(KillSwitchCommand.from_event(control_event(True, "incident", T, "ev-on")))
    router.apply_kill_switch(KillSwitchCommand.from_event(
        control_event(False, "ok", T + timedelta(minutes=1), "ev-off")))
    racing = HandFlipBetweenLoadAndSave(store, flip)
    router.store = racing
    # a retried "off" issued before the hand flip, loading just before the flip lands
    result = router.apply_kill_switch(KillSwitchCommand.from_event(
        control_event(False, "retry", T + timedelta(minutes=3), "ev-off-3")))
    return result, store.load_risk_state()


def test_a_command_decided_before_a_hand_flip_does_not_overwrite_it_in_memory():
    from ensemble_trader.adapters.memory.orders_store import MemoryOrdersStore

    store = MemoryOrdersStore()

    def flip():
        store.kill_switch_flag, store.kill_switch_reason = True, "incident 2 (by hand)"
        store.kill_switch_at = T + timedelta(minutes=5)

    result, state = _late_off_after_a_hand_flip(store, flip)
    assert not result["applied"] and result["active"]
    assert (state.kill_switch, state.kill_switch_reason) == (True, "incident 2 (by hand)")


def test_a_command_decided_before_a_hand_flip_does_not_overwrite_it_in_dynamodb(dynamodb):  # noqa: F811
    """The runbook's update-item (without ``ADD version``) lands between a retried older "off"'s load
    and its save: the save is conditional on the switch as read too, so the "off" is decided
    again on the flipped state — stale — and the hand-set "on" stays."""
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore

    from tests.unit.test_orders_dynamo import SETTINGS

    store = DynamoOrdersStore(dynamodb, settings=SETTINGS)

    def flip(minutes: int = 5):
        dynamodb.update_item(
            TableName=SETTINGS.name("risk-state"), Key={"pk": {"S": "global"}},
            UpdateExpression="SET kill_switch = :k, kill_switch_reason = :r, kill_switch_at = :t",
            ExpressionAttributeValues={":k": {"BOOL": True}, ":r": {"S": "incident 2 (by hand)"},
                                       ":t": {"S": (T + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")}})

    result, state = _late_off_after_a_hand_flip(store, flip)
    assert not result["applied"] and result["active"]
    assert (state.kill_switch, state.kill_switch_reason, state.kill_switch_at) == (
        True, "incident 2 (by hand)", T + timedelta(minutes=5))
    # a save of a state read before a flip is refused outright; one read after it goes through
    stale = store.load_risk_state()
    flip(minutes=6)
    stale.kill_switch = False
    with pytest.raises(ConcurrencyError, match="kill switch was changed"):
        store.save_risk_state(stale, write_kill_switch=True)
    fresh = store.load_risk_state()
    fresh.kill_switch = False
    store.save_risk_state(fresh, write_kill_switch=True)
    fresh.kill_switch = True
    store.save_risk_state(fresh, write_kill_switch=True)  # its own write does not make it stale
    assert store.load_risk_state().kill_switch


def test_dynamodb_keeps_the_command_time_and_id_with_the_flag_and_reads_items_without_them(dynamodb):  # noqa: F811
    from ensemble_trader.adapters.aws.orders_store import DynamoOrdersStore
    from ensemble_trader.adapters.brokers.paper import PaperBroker
    from ensemble_trader.adapters.memory.orders_store import MemoryPaperLedger
    from ensemble_trader.runtime.clock import FixedClock
    from ensemble_trader.runtime.orders import OrderRouter

    from tests.unit.test_orders_dynamo import SETTINGS

    table, key = SETTINGS.name("risk-state"), {"pk": {"S": "global"}}
    dynamodb.put_item(TableName=table, Item={  # as written before commands carried their time
        **key, "version": {"N": "2"}, "trading_state": {"S": "ACTIVE"},
        "state": {"S": '{"version": 2, "kill_switch": true, "kill_switch_reason": "old", "breaker_resets": 0}'},
        "kill_switch": {"BOOL": True}, "kill_switch_reason": {"S": "old"},
    })
    store = DynamoOrdersStore(dynamodb, settings=SETTINGS)
    old = store.load_risk_state()
    assert old.kill_switch and old.kill_switch_at is None and old.version == 2
    clock = FixedClock(T)
    router = OrderRouter(store, PaperBroker(MemoryPaperLedger(), clock), clock, reconcile_on_start=False)
    off = KillSwitchCommand.from_event(control_event(False, "resolved", T, "ev-off"))
    assert router.apply_kill_switch(off)["applied"]
    item = dynamodb.get_item(TableName=table, Key=key)["Item"]
    assert item["kill_switch"] == {"BOOL": False} and item["kill_switch_command_id"] == {"S": "ev-off"}
    assert datetime.fromisoformat(item["kill_switch_at"]["S"]) == T
    stale = KillSwitchCommand.from_event(control_event(True, "late", T - timedelta(minutes=1), "ev-late"))
    assert not router.apply_kill_switch(stale)["applied"]
    routine = store.load_risk_state()  # a routine save never writes the command's time or id
    routine.kill_switch_at, routine.kill_switch_command_id = T - timedelta(days=1), "x"
    store.save_risk_state(routine)
    state = store.load_risk_state()
    assert not state.kill_switch and (state.kill_switch_at, state.kill_switch_command_id) == (T, "ev-off")


def _emf(captured: str) -> dict:
    """The metrics of the EMF blob(s) an invocation printed (metric name -> value)."""
    import json

    out: dict = {}
    for line in captured.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if isinstance(blob, dict) and "_aws" in blob:
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = blob[metric["Name"]]
                    out[metric["Name"]] = value[0] if isinstance(value, list) and len(value) == 1 else value
    return out


def test_an_ignored_on_is_counted_for_its_alarm(entry, capsys):
    rig, invoke = entry
    invoke(control_event(False, "all clear", T, "ev-off-9"))
    capsys.readouterr()
    result = invoke(control_event(True, "incident", T - timedelta(minutes=2), "ev-on-9"))  # older: ignored
    assert result["applied"] is False and result["active"] is False
    emitted = _emf(capsys.readouterr().out)
    assert emitted["kill_switch_on_ignored"] == 1 and emitted["kill_switch_commands_ignored"] == 1
    invoke(control_event(True, "incident", T + timedelta(minutes=1), "ev-on-10"))  # current: applied
    emitted = _emf(capsys.readouterr().out)
    assert emitted["kill_switch_on_ignored"] == 0 and emitted["kill_switch_commands_ignored"] == 0
    assert emitted["kill_switch_active"] == 1


def test_a_retried_on_after_a_newer_on_is_not_alarmed(entry, capsys):
    rig, invoke = entry
    invoke(control_event(True, "incident", T, "ev-on-20"))
    capsys.readouterr()
    result = invoke(control_event(True, "incident, earlier page", T - timedelta(minutes=1), "ev-on-19"))
    assert result["applied"] is False and result["active"] is True
    emitted = _emf(capsys.readouterr().out)
    assert emitted["kill_switch_commands_ignored"] == 1 and emitted["kill_switch_on_ignored"] == 0
