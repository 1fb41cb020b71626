"""The meta-agent stage's section of the demo summary.

Reads what the meta_agent λ left in the local stack: the ``decisions`` table (one row per bar
with its explanation, keyed by the bar's UTC time), the ``bandit-state`` snapshots (each symbol's learners, per regime, and
its regret ledger) and the stage's statistics (intents sent, switches, latency).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, time
from typing import Any

from ensemble_trader.local.reports import rejected_lines
from ensemble_trader.local.stack import LocalStack
from ensemble_trader.runtime.meta_agent_stage import decision_time
from ensemble_trader.runtime.stage import stage_stats


def _scan(stack: LocalStack, logical: str) -> list[dict[str, Any]]:
    from ensemble_trader.adapters.aws.dynamodb import deserialize_item

    ddb = stack.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=stack.name(logical)):
        items.extend(deserialize_item(i) for i in page.get("Items", []))
    return items


def _weights_line(names: tuple[str, ...], learner: Any) -> str:
    """A learner's current weights (drawn from a copy: the stored generator is not advanced)."""
    weights = learner.copy().weights()
    order = sorted(range(len(names)), key=lambda i: -weights[i])
    return ", ".join(f"{names[i]} {weights[i]:.2f}" for i in order)


def symbol_lines(item: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """Final weights per regime learner and the regret ledger of one symbol's snapshot."""
    from ensemble_trader.domain.meta_agent import MetaAgentState

    state = MetaAgentState.from_bytes(bytes(item["state"]))
    regret = state.regret.summary(names)
    lines = [
        f"  {state.symbol}: {state.version:,} bars, snapshot v{item['version']}, position "
        f"{state.position:+.2f}, regret vs best agent ({regret['best_agent']}) {regret['overall']:+.2f}"
    ]
    for key in sorted(state.learners, key=lambda k: (k == "ALL", k)):
        learner = state.learners[key]
        lines.append(f"    {key:<9} {learner.t_:>5} updates  weights: {_weights_line(names, learner)}")
    for regime, entry in regret["by_regime"].items():
        lines.append(
            f"    regret in {regime:<9} {entry['regret']:+8.2f} over {entry['bars']:,} bars "
            f"(best there: {entry['best_agent']})"
        )
    return lines


def last_decision(decisions: list[dict[str, Any]]) -> str:
    """``<symbol> <bar time>: <explanation>`` of the latest decision row by bar time (parsed: a
    row keyed before the keys were UTC carries its bar's own offset, and texts of two offsets do
    not compare as times), a tie to the last symbol; the time is UTC's, a date for a midnight bar."""
    when, _, index = max((decision_time(d), str(d["symbol"]), i) for i, d in enumerate(decisions))
    latest = decisions[index]
    when = when.astimezone(UTC)
    shown = when.date().isoformat() if when.time() == time() else when.isoformat()
    return f"{latest['symbol']} {shown}: {latest['explanation']}"


def summarize(stack: LocalStack) -> str:
    stats = stage_stats("meta_agent")
    decisions = _scan(stack, "decisions")
    snapshots = [i for i in _scan(stack, "bandit-state") if str(i.get("pk", "")).startswith("meta_agent#")]
    _, rejected = rejected_lines(stack, "meta-agent-dlq")
    latency = stats.compute_us()
    names: tuple[str, ...] = ()
    if decisions:
        names = tuple(sorted(decisions[0]["agent_weights"]))
    chosen = Counter("(warm-up, flat)" if d.get("chosen") is None else str(d["chosen"]) for d in decisions)
    regimes = Counter(str(d.get("regime")) for d in decisions)
    lines = [
        "meta_agent λ  (market-state → order-intents)",
        f"  Kinesis records   {stats.records:>8,}  delivered in {stats.invocations:,} invocations (aggregated: a "
        f"record packs several market states; one decision per market state below); {stats.duplicates:,} "
        "redelivered market states skipped",
        f"  decisions         {len(decisions):>8,}  rows in the decisions table (with explanations)",
        f"  order intents     {stats.outputs:>8,}  sent to the order-intents FIFO queue (group = symbol, "
        "dedup = intent id)",
        f"  agent switches    {stats.events:>8,}  AgentSwitched events to EventBridge",
        *rejected,
    ]
    if decisions:
        lines.append("  leading agent     " + ", ".join(f"{a} {n:,}" for a, n in chosen.most_common()))
        lines.append("  regimes           " + ", ".join(f"{r} {n:,}" for r, n in regimes.most_common()))
        lines.append(f"  last decision     {last_decision(decisions)}")
    if latency:
        lines.append(
            f"  compute latency   p50 {latency['p50']:.1f} µs, p99 {latency['p99']:.1f} µs, mean "
            f"{latency['mean']:.1f} µs per bar (four ONNX agents + bandit step + intent)"
        )
    if snapshots and names:
        lines.append("  final weights per regime learner and regret (risk-adjusted reward units):")
        for item in sorted(snapshots, key=lambda i: i["pk"]):
            lines.extend(symbol_lines(item, names))
    return "\n".join(lines)
