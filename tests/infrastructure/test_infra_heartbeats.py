"""Every Lambda function an EventBridge schedule invokes has a heartbeat alarm.

The error alarms cannot see a schedule that stopped (deleted, disabled, its target removed):
nothing runs, so nothing fails. The heartbeat alarms on the function's ``Invocations``: fewer
than one in a window of several schedule periods, missing data breaching (no invocation gives no
datapoint). CloudWatch limits an alarm's period times its evaluation periods to one day for a
period under an hour and to seven days otherwise (PutMetricAlarm's ``Period``).
"""

from __future__ import annotations

import re

import pytest
from ensemble_trader.constants import qualified

from infra_cdk.constructs.monitoring import RECONCILE_HEARTBEAT_RUNS, heartbeat_period

STAGE = "dev"


def _scheduled_functions(synth) -> dict[str, str]:
    """Logical id of each Lambda function a schedule targets -> its schedule expression."""
    found = {}
    for props in synth.props("AWS::Events::Rule"):
        if "ScheduleExpression" not in props:
            continue
        for target in props["Targets"]:
            arn = target["Arn"]
            if isinstance(arn, dict) and "Fn::GetAtt" in arn:
                logical = arn["Fn::GetAtt"][0]
                if synth.template["Resources"][logical]["Type"] == "AWS::Lambda::Function":
                    found[logical] = props["ScheduleExpression"]
    return found


def _heartbeat_of(synth, logical: str) -> dict:
    found = [p for p in synth.props("AWS::CloudWatch::Alarm")
             if p.get("MetricName") == "Invocations"
             and {"Name": "FunctionName", "Value": {"Ref": logical}} in p.get("Dimensions", [])]
    assert len(found) == 1, (logical, found)
    return found[0]


def _evaluation_range_allowed(alarm: dict) -> bool:
    total = alarm["Period"] * alarm["EvaluationPeriods"]
    return total <= (86_400 if alarm["Period"] < 3_600 else 604_800)


@pytest.mark.parametrize("fixture", ["full", "real"])
def test_every_scheduled_function_has_a_heartbeat(request, fixture):
    synth = request.getfixturevalue(fixture)
    scheduled = _scheduled_functions(synth)
    assert len(scheduled) == 2  # the daily refit and the reconciliation
    for logical in scheduled:
        alarm = _heartbeat_of(synth, logical)
        assert alarm["Namespace"] == "AWS/Lambda" and alarm["Statistic"] == "Sum"
        assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == 1
        assert alarm["TreatMissingData"] == "breaching"  # no invocation: no datapoint at all
        assert alarm["AlarmActions"] and alarm["OKActions"]
        assert _evaluation_range_allowed(alarm), alarm


def test_the_reconciliation_heartbeat_spans_three_runs(full):
    [(logical, expression)] = [(k, v) for k, v in _scheduled_functions(full).items() if v.startswith("rate(")]
    minutes = int(re.fullmatch(r"rate\((\d+) minutes?\)", expression).group(1))
    alarm = _heartbeat_of(full, logical)
    assert alarm["AlarmName"] == qualified(STAGE, "OrdersReconcileHeartbeat")
    assert alarm["Period"] == RECONCILE_HEARTBEAT_RUNS * minutes * 60 == 900
    assert alarm["EvaluationPeriods"] == 1


def test_the_refit_heartbeat_spans_more_than_a_day(full):
    [(logical, expression)] = [(k, v) for k, v in _scheduled_functions(full).items() if v.startswith("cron(")]
    minute, hour, day, month, weekday, _ = expression[len("cron("):-1].split()
    assert (day, month, weekday) == ("*", "*", "?")  # every day: one run in any 24 hours
    alarm = _heartbeat_of(full, logical)
    assert alarm["AlarmName"] == qualified(STAGE, "RegimeRefitHeartbeat")
    # longer than a day, so a window always holds one run wherever CloudWatch places it; a period
    # of an hour or more may span up to seven days
    assert 86_400 < alarm["Period"] <= 604_800 and alarm["Period"] % 60 == 0
    assert alarm["EvaluationPeriods"] == 1


def test_only_scheduled_entries_get_a_heartbeat():
    from infra_cdk.config import stage_config

    config = stage_config(STAGE)
    assert heartbeat_period("orders.kill_switch", config) is None  # invoked only by an operator's command
    assert heartbeat_period("orders", config) is None  # fed by its queue: OrderIntentsStalled watches it
