"""The features stage's section of the demo summary."""

from __future__ import annotations

import json

from ensemble_trader.local.reports import accounting_line, rejected_lines
from ensemble_trader.local.stack import LocalStack
from ensemble_trader.runtime.stage import stage_stats


def account(stack: LocalStack) -> dict[str, int]:
    """Records on market-data, distinct bars on features (and re-emitted copies)."""
    records_in = len(stack.stream_records("market-data"))
    seen: set[tuple[str, str]] = set()
    copies = 0
    for key, data in stack.stream_records("features"):
        bar = json.loads(data)["bar"]
        ident = (key, bar["timestamp"])
        copies += ident in seen
        seen.add(ident)
    return {"in": records_in, "out": len(seen), "re_emitted": copies}


def summarize(stack: LocalStack) -> str:
    stats = stage_stats("features")
    counts = account(stack)
    dlq_count, rejected = rejected_lines(stack, "features-dlq")
    latency = stats.compute_us()
    lines = [
        "features λ  (market-data → features)",
        f"  records in        {counts['in']:>8,}  messages on market-data; {stats.records:,} Kinesis records "
        f"delivered in {stats.invocations:,} invocations",
        f"  feature vectors   {counts['out']:>8,}  distinct bars on the features stream"
        + (f" (+{counts['re_emitted']:,} re-emitted copies after retries)" if counts["re_emitted"] else ""),
        f"  duplicates        {stats.duplicates:>8,}  redelivered messages skipped",
        *rejected,
    ]
    if latency:
        lines.append(
            f"  compute latency   p50 {latency['p50']:.1f} µs, p99 {latency['p99']:.1f} µs, mean "
            f"{latency['mean']:.1f} µs per bar (FeatureEngine.update + FeatureVector)"
        )
    lines.append(accounting_line(counts["out"], dlq_count, counts["in"]))
    return "\n".join(lines)
