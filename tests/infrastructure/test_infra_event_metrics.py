"""Every metric filter of the domain-event log feeds something: a dashboard widget or an alarm.

Four of them (``breaker_transitions``, ``order_rejections``, ``regime_changes``,
``reconciliation_failures``) were published and read by nothing, while the construct's docstring
said they were "for alarms". They are graphed on the business dashboard now, as sums.
"""

from __future__ import annotations

import re

from ensemble_trader.constants import qualified

STAGE = "dev"


def _dashboard_metrics(synth) -> dict[str, set[tuple[str, str]]]:
    """Dashboard name -> (namespace, metric name) of each metric line it graphs, with its stat."""
    found: dict[str, set[tuple[str, str]]] = {}
    for props in synth.props("AWS::CloudWatch::Dashboard"):
        body = props["DashboardBody"]
        text = ("".join(str(p) for p in body["Fn::Join"][1]) if isinstance(body, dict) else body).replace("\\", "")
        found[props["DashboardName"]] = set(re.findall(r'\["(EnsembleTrader/[^"]+)","([^"]+)"', text))
        found[props["DashboardName"]] |= {(f"{ns}#stat", f"{name}:{stat}") for ns, name, stat in re.findall(
            r'\["(EnsembleTrader/[^"]+)","([^"]+)",\{[^}]*"stat":"([A-Za-z0-9.]+)"', text)}
    return found


def test_every_event_metric_filter_is_graphed_or_alarmed(full):
    filters = {(f["MetricTransformations"][0]["MetricNamespace"], f["MetricTransformations"][0]["MetricName"])
               for f in full.props("AWS::Logs::MetricFilter")}
    assert len(filters) == 6
    graphed = set().union(*_dashboard_metrics(full).values())
    alarmed = {(a.get("Namespace"), a.get("MetricName")) for a in full.props("AWS::CloudWatch::Alarm")}
    orphans = {f for f in filters if f not in graphed and f not in alarmed}
    assert not orphans, sorted(orphans)


def test_the_event_counts_are_summed_on_the_business_dashboard(full):
    business = _dashboard_metrics(full)[qualified(STAGE, "business")]
    namespace = f"EnsembleTrader/{STAGE}/events"
    for name in ("breaker_transitions", "order_rejections", "regime_changes", "reconciliation_failures"):
        assert (f"{namespace}#stat", f"{name}:Sum") in business, name
