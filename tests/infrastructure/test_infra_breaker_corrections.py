"""The ``breaker_transitions`` metric filter leaves out a merged save's corrections
(``CircuitBreakerTripped`` with ``correction: true``), and the business dashboard's breaker table
shows the flag (docs/deployment.md, the event metrics).

The synthesised filter pattern is read from the template and applied to the log entries of
events built by the code, with the JSON filter pattern rules of CloudWatch Logs that the pattern
uses: clauses joined by ``&&``; ``=`` / ``!=`` against a quoted string; ``IS TRUE`` / ``IS FALSE``,
which match only a field that exists and holds that boolean."""

from __future__ import annotations

import json
import re

import pytest
from ensemble_trader.adapters.limits import checked_entries
from ensemble_trader.constants import qualified
from ensemble_trader.domain.orders import CircuitBreakerTripped

STAGE = "dev"
MISSING = object()

CLAUSE = re.compile(r'^\$\.(?P<path>[\w.-]+) (?:(?P<op>=|!=) "(?P<text>[^"]*)"|IS (?P<flag>TRUE|FALSE))$')


def _field(document: dict, path: str) -> object:
    value: object = document
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def matches(pattern: str, document: dict) -> bool:
    """``pattern`` (``{ clause && clause ... }``) applied to ``document``; a clause of another
    form fails the test rather than being guessed at."""
    body = pattern.strip()
    assert body.startswith("{") and body.endswith("}"), pattern
    result = True
    for clause in body[1:-1].split("&&"):
        found = CLAUSE.match(clause.strip())
        assert found, f"clause not understood by this test: {clause!r}"
        value = _field(document, found["path"])
        if found["flag"]:
            result &= value is (found["flag"] == "TRUE")  # an absent field matches neither
        elif found["op"] == "=":
            result &= isinstance(value, str) and value == found["text"]
        else:
            result &= isinstance(value, str) and value != found["text"]
    return result


def _filter_pattern(synth, metric: str) -> str:
    (pattern,) = [p["FilterPattern"] for p in synth.props("AWS::Logs::MetricFilter")
                  if any(t["MetricName"] == metric for t in p["MetricTransformations"])]
    return pattern


def _logged(event: CircuitBreakerTripped) -> dict:
    """The event as the rule copies it to the log group: the EventBridge envelope with the
    published entry's Detail as ``detail``."""
    [(entry, _)] = checked_entries([event], "test")
    return {"detail-type": entry["DetailType"], "source": entry["Source"], "detail": json.loads(entry["Detail"])}


def _tripped(previous: str, current: str, **fields) -> CircuitBreakerTripped:
    return CircuitBreakerTripped(previous=previous, current=current, reason="r", equity=95_500.0,
                                 daily_loss=0.045, drawdown=0.045, timestamp="2024-03-05T14:30:00Z", **fields)


@pytest.mark.parametrize(("event", "counted"), [
    (_tripped("ACTIVE", "REDUCING"), True),
    (_tripped("REDUCING", "HALTED", latched=True), True),
    (_tripped("HALTED", "HALTED", latched=True), True),  # a daily halt becoming latched
    (_tripped("HALTED", "ACTIVE"), False),  # a reset
    (_tripped("ACTIVE", "HALTED", latched=True, correction=True), False),  # re-announces a stored halt
    (_tripped("ACTIVE", "REDUCING", correction=True), False),
    (_tripped("REDUCING", "ACTIVE", correction=True), False),
])
def test_breaker_transitions_counts_moves_into_reducing_or_halted_but_not_corrections(full, event, counted):
    assert matches(_filter_pattern(full, "breaker_transitions"), _logged(event)) is counted


def test_breaker_transitions_does_not_count_an_event_logged_before_the_field_existed(full):
    logged = _logged(_tripped("ACTIVE", "HALTED"))
    del logged["detail"]["correction"]
    assert not matches(_filter_pattern(full, "breaker_transitions"), logged)


def test_the_breaker_value_metrics_still_take_every_event(full):
    """``breaker_drawdown`` and ``breaker_equity`` take their value from every breaker event,
    corrections included: a correction carries the stored figures."""
    for metric in ("breaker_drawdown", "breaker_equity"):
        assert matches(_filter_pattern(full, metric), _logged(_tripped("ACTIVE", "HALTED", correction=True)))


def test_the_business_dashboards_breaker_table_shows_the_flag(full):
    (body,) = [p["DashboardBody"] for p in full.props("AWS::CloudWatch::Dashboard")
               if p["DashboardName"] == qualified(STAGE, "business")]
    text = "".join(str(part) for part in body["Fn::Join"][1]) if isinstance(body, dict) else body
    query = text[text.index('\\"CircuitBreakerTripped\\"'):]
    query = query[: query.index("limit 50")]
    assert "detail.latched, detail.correction," in query
