"""Monitoring review: orders failures, the breaker and kill-switch state alarms, the alarm math,
the cache-outage warning of the stage runners."""

from __future__ import annotations

import json
import re

import pytest
from ensemble_trader.constants import FUNCTIONS, qualified

from infra_cdk.constructs.functions import ACCESS

STAGE = "dev"


def _alarms(synth) -> dict[str, dict]:
    return {p["AlarmName"]: p for p in synth.props("AWS::CloudWatch::Alarm")}


def _dashboard(synth, name: str) -> str:
    for props in synth.props("AWS::CloudWatch::Dashboard"):
        if props["DashboardName"] == qualified(STAGE, name):
            body = props["DashboardBody"]
            return "".join(str(part) for part in body["Fn::Join"][1]) if isinstance(body, dict) else body
    raise AssertionError(name)


def _orders_emf(alarm: dict, metric: str, statistic: str, service: str = "orders") -> None:
    assert alarm["Namespace"] == "EnsembleTrader"
    assert alarm["MetricName"] == metric and alarm["Statistic"] == statistic
    assert {"Name": "service", "Value": service} in alarm["Dimensions"]
    assert {"Name": "stage", "Value": STAGE} in alarm["Dimensions"]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1


def test_failed_intents_have_an_alarm_and_a_widget(full):
    alarm = _alarms(full)[qualified(STAGE, "OrdersFailedItems")]
    _orders_emf(alarm, "intents_failed", "Sum")
    assert "intents_failed" in _dashboard(full, "operations")


def test_the_breaker_alarm_follows_the_state_of_every_intent_and_keeps_it_when_none_flow(full):
    alarm = _alarms(full)[qualified(STAGE, "BreakerTripped")]
    _orders_emf(alarm, "account_breaker_state", "Maximum")
    # no intent in a period is not "back to ACTIVE": only an intent routed while ACTIVE clears it
    assert alarm["TreatMissingData"] == "ignore"
    assert alarm["OKActions"] and alarm["AlarmActions"]
    assert "account_breaker_state" in _dashboard(full, "business")


def test_the_kill_switch_has_an_alarm_held_while_it_is_on(full):
    alarm = _alarms(full)[qualified(STAGE, "KillSwitchOn")]
    _orders_emf(alarm, "kill_switch_active", "Maximum")
    assert alarm["TreatMissingData"] == "ignore"


def test_error_rates_use_the_safe_division(full):
    rates = [a for name, a in _alarms(full).items() if name.endswith("ErrorRate")]
    assert len(rates) >= 7
    for alarm in rates:
        expression = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
        assert expression == "IF(invocations > 0, 100 * errors / invocations, 0)"


def test_training_failed_counts_timeouts_and_aborts(full):
    alarm = _alarms(full)[qualified(STAGE, "TrainingFailed")]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert names == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    assert json.dumps(alarm).count("Sum") == 3


CACHE_STAGES = [spec.logical for spec in FUNCTIONS if spec.mapping.kind == "kinesis" and ACCESS[spec.logical].cache]


def test_the_cache_using_stages_are_the_three_kinesis_stages():
    assert CACHE_STAGES == ["features", "regime", "meta_agent"]


@pytest.mark.parametrize("logical", CACHE_STAGES)
def test_a_cache_outage_raises_a_warning_on_the_runners_metric(full, logical):
    """The stage runner counts every failed cache call as ``<stage>_cache_unavailable`` (EMF,
    dimensions service + stage) and carries on from the snapshots: an alarm on three minutes in a
    row, like FailedItems, whose description says no record failed and points at the runbook."""
    title = "".join(part.capitalize() for part in logical.split("_"))
    alarm = _alarms(full)[qualified(STAGE, f"{title}CacheUnavailable")]
    _orders_emf(alarm, f"{logical}_cache_unavailable", "Sum", service=logical)
    assert len(alarm["Dimensions"]) == 2
    assert alarm["Period"] == 60 and alarm["EvaluationPeriods"] == 3
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] and alarm["OKActions"]
    description = alarm["AlarmDescription"]
    assert description.startswith("warning:") and "no record failed" in description
    assert "docs/runbook.md §3.1" in description


def test_only_the_cache_using_stages_have_a_cache_alarm(full):
    cache_alarms = {name for name in _alarms(full) if name.endswith("CacheUnavailable")}
    assert len(cache_alarms) == len(CACHE_STAGES) == 3


@pytest.mark.parametrize("logical", CACHE_STAGES)
def test_failed_items_no_longer_blame_the_cache(full, logical):
    """A cache fault alone fails no record since the runner reads the snapshots instead."""
    title = "".join(part.capitalize() for part in logical.split("_"))
    description = _alarms(full)[qualified(STAGE, f"{title}FailedItems")]["AlarmDescription"]
    assert "a cache, sink or DynamoDB fault" not in description
    assert "sink or DynamoDB fault" in description and "cache fault alone fails none" in description


def test_the_alarmed_metric_is_the_one_the_stage_runners_emit():
    """``StageRunner`` emits ``f"{step.name}_cache_unavailable"`` with the service dimension
    ``POWERTOOLS_SERVICE_NAME`` = the logical name: the step names must be the logical names."""
    from ensemble_trader.domain.meta_agent import MetaAgentStep
    from ensemble_trader.domain.regime import RegimeStep
    from ensemble_trader.runtime.features_stage import FeaturesStep
    from ensemble_trader.runtime.stage import StageStats

    assert [FeaturesStep.name, RegimeStep.name, MetaAgentStep.name] == CACHE_STAGES
    assert "cache_unavailable" in StageStats.__dataclass_fields__


def _documented_name(alarm_id: str, titles: list[str]) -> str:
    """``FeaturesCacheUnavailable`` -> ``<Fn>CacheUnavailable``; ``EventsDlqNotEmpty`` ->
    ``<Queue>NotEmpty``; the account's and orders' own alarms by name."""
    if alarm_id.endswith("NotEmpty"):
        return "<Queue>NotEmpty"
    if alarm_id == "OrdersFailedItems":
        return alarm_id
    for title in sorted(titles, key=len, reverse=True):
        if alarm_id.startswith(title) and alarm_id[len(title):] in {
            "IteratorAge", "ErrorRate", "Throttles", "FailedItems", "SnapshotReseeded", "CacheUnavailable",
            "DestinationFailures",
        }:
            return "<Fn>" + alarm_id[len(title):]
    return alarm_id


def test_every_alarm_is_in_the_deployment_guide_and_the_runbook(full):
    """Both alarm tables name every alarm the stack creates (docs/deployment.md: its condition;
    docs/runbook.md §1: where to look first)."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    titles = ["".join(p.capitalize() for p in key.replace(".", "_").split("_"))
              for spec in FUNCTIONS for key in (spec.logical, *(f"{spec.logical}.{e}" for e in spec.extra_entries))]
    prefix = qualified(STAGE, "")
    names = {_documented_name(name[len(prefix):], titles) for name in _alarms(full)}
    assert "<Fn>CacheUnavailable" in names
    for doc in ("deployment.md", "runbook.md"):
        rows = {line.split("|")[1].strip() for line in (docs / doc).read_text().splitlines()
                if line.startswith("| `")}
        documented = {name.strip("` ") for row in rows for name in row.split(",")}
        assert names <= documented, (doc, sorted(names - documented))
    assert "_cache_unavailable" in (docs / "deployment.md").read_text()


def test_an_ignored_kill_switch_on_has_an_alarm(full):
    alarm = _alarms(full)[qualified(STAGE, "KillSwitchOnIgnored")]
    _orders_emf(alarm, "kill_switch_on_ignored", "Sum")
    assert alarm["Threshold"] == 1 and alarm["AlarmActions"]


def test_event_tables_show_each_domain_event_once(full):
    # RegimeChanged and AgentSwitched are at least once (a retried batch publishes them again,
    # with the same deterministic event_id): the dashboards' tables deduplicate on it
    bodies = "".join(_dashboard(full, name) for name in ("business", "operations")
                     if any(p["DashboardName"] == qualified(STAGE, name)
                            for p in full.props("AWS::CloudWatch::Dashboard")))
    for detail_type in ("RegimeChanged", "AgentSwitched"):
        query = bodies[bodies.index(f'\\"{detail_type}\\"'):]
        query = query[: query.index("limit 100")]
        assert "sort @timestamp desc | dedup detail.event_id" in query, detail_type


def _function_of(resources: dict, name) -> str:
    """A FunctionName (a Ref to a function, or an expression over a Ref to an alias of one) -> the
    function's logical id."""
    [ref] = re.findall(r'"Ref": "([^"]+)"', json.dumps(name))
    if resources[ref]["Type"] == "AWS::Lambda::Alias":
        return resources[ref]["Properties"]["FunctionName"]["Ref"]
    return ref


def test_every_on_failure_destination_has_a_delivery_failure_alarm(full):
    """Lambda counts records of failed invocations it could not send to the on-failure destination
    (the async entries' events-dlq, the Kinesis mappings' stage DLQs) as DestinationDeliveryFailures:
    those failures are in no queue, so each function with a destination has an alarm on it."""
    resources = full.template["Resources"]
    with_destination = {
        _function_of(resources, props["FunctionName"])
        for kind in ("AWS::Lambda::EventInvokeConfig", "AWS::Lambda::EventSourceMapping")
        for props in full.props(kind)
        if props.get("DestinationConfig", {}).get("OnFailure")
    }
    n_extra = sum(len(spec.extra_entries) for spec in FUNCTIONS)
    assert len(with_destination) == n_extra + sum(spec.mapping.kind == "kinesis" for spec in FUNCTIONS)
    watched = {}
    for alarm in _alarms(full).values():
        if alarm.get("MetricName") == "DestinationDeliveryFailures":
            assert alarm["Namespace"] == "AWS/Lambda" and alarm["Statistic"] == "Sum"
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
            assert alarm["AlarmActions"] and alarm["OKActions"]
            [dimension] = alarm["Dimensions"]
            assert dimension["Name"] == "FunctionName"
            watched[dimension["Value"]["Ref"]] = alarm["AlarmName"]
    assert set(watched) == with_destination
