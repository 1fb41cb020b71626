"""The metric table of docs/deployment.md names every metric the code emits, and only those; every
EMF metric a dashboard or an alarm reads is one the code emits.

The names are read from the source as the code writes them: ``add_metric(name="…")``,
``add_metric("…")``, the orders consumer's ``_metric("…")``, the stage runner's ``_count("…")``
(emitted as ``<stage>_…``) and ``(name, unit, value)`` tuples (the meta-agent's per-symbol
metrics). A name built by an f-string must be listed in :data:`EXPANSIONS` with what it expands
to, so a new one cannot slip past. The table lagged the code before (``kill_switch_on_ignored``,
``cache_admin_keys_found``, ``features_foreign_partition_keys`` and others were missing).
"""

from __future__ import annotations

import re
from pathlib import Path

from ensemble_trader.constants import FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "layers" / "core" / "ensemble_trader").rglob("*.py")),
           *sorted((ROOT / "functions").rglob("*.py"))]
STAGES = tuple(spec.logical for spec in FUNCTIONS if spec.mapping.kind == "kinesis")

CALLS = (
    re.compile(r'\badd_metric\(\s*(?:name=)?(f?)"([^"]+)"'),
    re.compile(r'\b_metric\(\s*(f?)"([^"]+)"'),
    re.compile(r'\(\s*(f?)"([a-z][a-z0-9_{}.]*)",\s*"(?:None|Count|Microseconds|Percent|Seconds)"'),
)
COUNTS = re.compile(r'\b_count\(\s*"([a-z_]+)"')

EXPANSIONS = {
    # f-string in the code -> the names it emits, as the table writes them
    "account_{key}": {"account_equity", "account_daily_loss", "account_drawdown"},
    "regime_refit_{outcome}": {"regime_refit_skipped", "regime_refit_unchanged", "regime_refit_republished"},
    "meta_agent_regret_{intent.regime.value}": {"meta_agent_regret_<REGIME>"},
    "{self.step.name}_{what}": set(),  # _count's own: read through COUNTS
    "{step.name}_compute_us": {f"{stage}_compute_us" for stage in STAGES},
}


def emitted_in_code() -> set[str]:
    names: set[str] = set()
    unexpanded: set[str] = set()
    for path in SOURCES:
        text = path.read_text()
        for pattern in CALLS:
            for f, name in pattern.findall(text):
                if f or "{" in name:
                    if name not in EXPANSIONS:
                        unexpanded.add(f"{path.relative_to(ROOT)}: {name}")
                    names |= EXPANSIONS.get(name, set())
                else:
                    names.add(name)
        names |= {f"<stage>_{what}" for what in COUNTS.findall(text)}
        if "capture_cold_start_metric=True" in text:
            names.add("ColdStart")
        if "compute_metric = f\"{step.name}_compute_us\"" in text:
            names |= EXPANSIONS["{step.name}_compute_us"]
    assert not unexpanded, f"metric names built by f-strings: add them to EXPANSIONS: {sorted(unexpanded)}"
    return names


def documented() -> set[str]:
    """The backticked names of the first column of docs/deployment.md's metric table; a name
    written ``_x`` in the stage runner's row stands for ``<stage>_x``."""
    lines = (ROOT / "docs" / "deployment.md").read_text().splitlines()
    start = lines.index("| metric | service | meaning |")
    names: set[str] = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            names.add(f"<stage>{name}" if name.startswith("_") else name)
    return names


def _generalised(name: str) -> str:
    """``features_late`` -> ``<stage>_late`` (a stage runner's count written for one stage)."""
    for stage in STAGES:
        if name.startswith(stage + "_"):
            return "<stage>" + name[len(stage):]
    return name


def test_every_emitted_metric_is_in_the_table_and_every_listed_one_is_emitted():
    code, docs = emitted_in_code(), documented()
    missing = {n for n in code if n not in docs and not (n.startswith("<stage>_") and any(
        d for d in docs if _generalised(d) == n))}
    assert not missing, f"emitted but not in docs/deployment.md's metric table: {sorted(missing)}"
    stale = {d for d in docs if d not in code and _generalised(d) not in code}
    assert not stale, f"in the metric table but emitted nowhere: {sorted(stale)}"


def test_the_reader_finds_known_names_of_each_kind():
    # the patterns themselves: a name of each way of emitting is found
    code = emitted_in_code()
    assert {"kill_switch_on_ignored", "intents_routed", "meta_agent_regret", "<stage>_foreign_partition_keys",
            "cache_admin_keys_found", "account_drawdown", "features_compute_us", "ColdStart"} <= code


def test_every_emf_metric_the_stack_reads_is_emitted(full):
    code = emitted_in_code()
    read = set()
    for props in full.props("AWS::CloudWatch::Alarm"):
        metrics = [props] + [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
        read |= {m["MetricName"] for m in metrics if m.get("Namespace") == "EnsembleTrader"}
    for props in full.props("AWS::CloudWatch::Dashboard"):
        body = props["DashboardBody"]
        text = "".join(str(p) for p in body["Fn::Join"][1]) if isinstance(body, dict) else body
        text = text.replace("\\", "")
        read |= set(re.findall(r'\["EnsembleTrader","([^"]+)"', text))
        read |= set(re.findall(r'MetricName="([^"]+)"', text))  # the regret's SEARCH expressions
    read = {re.sub(r"_(BULL|BEAR|SIDEWAYS|VOLATILE)$", "_<REGIME>", m) for m in read}
    assert {"meta_agent_regret", "meta_agent_regret_<REGIME>", "kill_switch_active"} <= read
    assert read, "no EMF metric found in the template"
    unknown = {m for m in read if m not in code and _generalised(m) not in code}
    assert not unknown, f"read by a dashboard or an alarm but emitted nowhere: {sorted(unknown)}"


def test_the_operations_dashboard_graphs_the_foreign_partition_keys(full):
    [body] = [p["DashboardBody"] for p in full.props("AWS::CloudWatch::Dashboard")
              if p["DashboardName"] == "et-dev-operations"]
    text = ("".join(str(p) for p in body["Fn::Join"][1]) if isinstance(body, dict) else body).replace("\\", "")
    assert '["EnsembleTrader","features_foreign_partition_keys","service","features","stage","dev"' in text
