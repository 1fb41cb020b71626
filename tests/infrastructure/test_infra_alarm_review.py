"""Alarm and dashboard review: ReconciliationFailed cannot flap while symbols stay halted, the
EventBridge-invoked entries have dashboard rows, and every alarm's description names the
function it watches and the runbook section to read.
"""

from __future__ import annotations

import json
import re

from ensemble_trader.constants import FUNCTIONS, qualified

from tests.infrastructure.test_infra_state_alarms import evaluate

STAGE = "dev"


def _alarms(synth) -> dict[str, dict]:
    return {p["AlarmName"][len(qualified(STAGE, "")):]: p for p in synth.props("AWS::CloudWatch::Alarm")}


def _operations(synth) -> str:
    [body] = [p["DashboardBody"] for p in synth.props("AWS::CloudWatch::Dashboard")
              if p["DashboardName"] == qualified(STAGE, "operations")]
    return json.dumps(body).replace("\\", "")


def test_reconciliation_failed_holds_while_symbols_stay_halted(full):
    alarm = _alarms(full)["ReconciliationFailed"]
    assert alarm["MetricName"] == "reconcile_symbols_failed"
    period = alarm["Period"]
    for every in (300, 290, 310):  # the schedule's runs drift against CloudWatch's periods
        for phase in range(0, period, 17):
            runs = [phase + k * every for k in range(40)]
            samples = [(t, 2.0) for t in runs[:30]] + [(t, 0.0) for t in runs[30:]]  # halted, then healed
            for until in range(runs[0] + period * 2, runs[29], 60):  # while halted: never OK
                assert evaluate(alarm, samples, until) == "ALARM", (every, phase, until)
            assert evaluate(alarm, samples, runs[31] + 2 * period) == "OK"


def test_every_eventbridge_entry_has_a_row_with_its_timeout(full):
    text = _operations(full)
    for spec in FUNCTIONS:
        for extra in spec.extra_entries:
            name = qualified(STAGE, f"{spec.logical}-{extra}".replace("_", "-"))
            assert f"{name}: invocations, errors, throttles" in text, name
            timeout = spec.timeout_of(extra)  # the entry's own (the refit's), else the function's
            title = f"{name}: duration (ms) against its {timeout} s timeout"
            widget = text[text.index(title):]
            widget = widget[:widget.index('"type":"metric"') if '"type":"metric"' in widget else len(widget)]
            assert f'"value":{timeout * 1000},"label":"timeout"' in widget, name


def _function_names(synth) -> dict[str, str]:
    return {k: v["Properties"]["FunctionName"] for k, v in synth.template["Resources"].items()
            if v["Type"] == "AWS::Lambda::Function" and isinstance(v["Properties"].get("FunctionName"), str)}


def test_every_alarm_names_the_runbook_section_and_the_function_it_watches(full, real):
    for synth in (full, real):
        names = _function_names(synth)
        for props in synth.props("AWS::CloudWatch::Alarm"):
            description = props["AlarmDescription"]
            assert re.search(r"docs/runbook\.md §\d", description), (props["AlarmName"], description)
            assert len(description) <= 1024, props["AlarmName"]  # CloudWatch's limit
            watched = {names[ref] for ref in re.findall(r'"Ref": "([^"]+)"', json.dumps(props)) if ref in names}
            for function in watched:
                assert function in description, (props["AlarmName"], function, description)
