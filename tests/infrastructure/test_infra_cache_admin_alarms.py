"""Alarms of the cache maintenance function (``real``: prod over the repository's ``functions/``,
which deploys ``cache_admin``): any failed run and any throttle notify the stage's alarm topic, with
OK actions like every other alarm; the operations dashboard shows the function; a stack without the
function has neither."""

from __future__ import annotations

import json
from pathlib import Path

from ensemble_trader.constants import qualified

from infra_cdk.constructs.functions import function_name

NAME = function_name("prod", "cache_admin")
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _function_id(synth) -> str:
    [logical_id] = [k for k, v in synth.resources("AWS::Lambda::Function").items()
                    if v["Properties"]["FunctionName"] == NAME]
    return logical_id


def _alarms(synth) -> dict[str, dict]:
    return {p["AlarmName"]: p for p in synth.props("AWS::CloudWatch::Alarm")}


def _topic_ref(synth) -> dict:
    [topic_id] = [k for k, v in synth.resources("AWS::SNS::Topic").items()
                  if v["Properties"]["TopicName"] == qualified("prod", "alarms")]
    return {"Ref": topic_id}


def _watching(synth, logical_id: str) -> dict[str, dict]:
    """Alarms whose metric (or any metric of their expression) is dimensioned by the function."""
    ref = json.dumps({"Name": "FunctionName", "Value": {"Ref": logical_id}})
    return {name: a for name, a in _alarms(synth).items() if ref in json.dumps(a)}


def test_a_failed_run_and_a_throttle_each_raise_an_alarm_on_the_alarm_topic(real):
    watching = _watching(real, _function_id(real))
    assert set(watching) == {qualified("prod", "CacheAdminErrors"), qualified("prod", "CacheAdminThrottles")}
    for name, metric in (("CacheAdminErrors", "Errors"), ("CacheAdminThrottles", "Throttles")):
        alarm = watching[qualified("prod", name)]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("AWS/Lambda", metric, "Sum")
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": _function_id(real)}}]
        # one failed run in a period is enough: a count, not a rate (there are few invocations)
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
        assert (alarm["Period"], alarm["EvaluationPeriods"]) == (300, 1)
        assert alarm["TreatMissingData"] == "notBreaching"  # no invocation is no failure
        assert alarm["AlarmActions"] == [_topic_ref(real)] and alarm["OKActions"] == [_topic_ref(real)]
        assert "docs/runbook.md §3.1" in alarm["AlarmDescription"]
    assert "flush refused" in watching[qualified("prod", "CacheAdminErrors")]["AlarmDescription"]


def test_the_operations_dashboard_shows_the_function_and_its_keys(real):
    [body] = [p["DashboardBody"] for p in real.props("AWS::CloudWatch::Dashboard")
              if p["DashboardName"] == qualified("prod", "operations")]
    text = json.dumps(body)
    assert json.dumps({"Ref": _function_id(real)}) in text  # its metrics, by the function's name
    for widget in ("CacheAdmin: invocations, errors, throttles", "CacheAdmin: duration (ms)",
                   "CacheAdmin: keys found and deleted"):
        assert widget in text, widget
    assert "cache_admin_keys_found" in text and "cache_admin_keys_deleted" in text


def test_no_function_no_alarms(full):
    """The ``full`` fixture tree has no cache_admin handler: no alarm and no widget for it."""
    assert not [name for name in _alarms(full) if "CacheAdmin" in name]
    bodies = json.dumps([p["DashboardBody"] for p in full.props("AWS::CloudWatch::Dashboard")])
    assert "CacheAdmin" not in bodies


def test_the_deployment_guide_lists_both_alarms():
    rows = {line.split("|")[1].strip() for line in (DOCS / "deployment.md").read_text().splitlines()
            if line.startswith("| `")}
    documented = {name.strip("` ") for row in rows for name in row.split(",")}
    assert {"CacheAdminErrors", "CacheAdminThrottles"} <= documented


def test_no_paragraph_of_the_guides_says_the_cache_admin_has_no_alarm():
    # the functions section said "has no alarm (an operator reads its errors in the answer)" after
    # the two alarms existed: every paragraph naming the function that speaks of alarms names them
    for doc in ("deployment.md", "runbook.md"):
        paragraphs = (DOCS / doc).read_text().split("\n\n")
        # a table's rows are read one by one (a row about another metric may say "no alarm")
        units = [row for p in paragraphs for row in (p.splitlines() if p.startswith("|") else [p])]
        for unit in units:
            text = " ".join(unit.split())
            if "cache-admin" not in text and "cache_admin" not in text:
                continue
            assert "no alarm" not in text, (doc, text[:200])
            if "alarm" in text and not unit.startswith("|"):
                assert "CacheAdminErrors" in text and "CacheAdminThrottles" in text, (doc, text[:200])
