"""The features stage's section of the demo summary."""

from __future__ import annotations

import json

from ensemble_trader.local.reports import dead_letter_summary
from ensemble_trader.local.stack import LocalStack
from ensemble_trader.runtime.stage import stage_stats


def account(stack: LocalStack) -> dict[str, int]:
    """Records on market-data, distinct bars on features (and re-emitted copies), dead letters."""
    records_in = len(stack.stream_records("market-data"))
    seen: set[tuple[str, str]] = set()
    copies = 0
    for key, data in stack.stream_records("features"):
        bar = json.loads(data)["bar"]
        ident = (key, bar["timestamp"])
        copies += ident in seen
        seen.add(ident)
    dead = len(stack.read_queue("features-dlq", delete=False))
    return {"in": records_in, "out": len(seen), "re_emitted": copies, "rejected": dead}


def summarize(stack: LocalStack) -> str:
    stats = stage_stats("features")
    counts = account(stack)
    dlq_count, reasons = dead_letter_summary(stack, "features-dlq")
    latency = stats.compute_us()
    lines = [
        "features λ  (market-data → features)",
        f"  records in        {counts['in']:>8,}  on market-data; {stats.records:,} delivered in "
        f"{stats.invocations:,} invocations",
        f"  feature vectors   {counts['out']:>8,}  distinct bars on the features stream"
        + (f" (+{counts['re_emitted']:,} re-emitted copies after retries)" if counts["re_emitted"] else ""),
        f"  duplicates        {stats.duplicates:>8,}  redelivered records skipped",
        f"  rejected          {dlq_count:>8,}  in features-dlq, with reasons:",
        *(f"    {r}" for r in reasons),
    ]
    if latency:
        lines.append(
            f"  compute latency   p50 {latency['p50']:.1f} µs, p99 {latency['p99']:.1f} µs, mean "
            f"{latency['mean']:.1f} µs per bar (FeatureEngine.update + FeatureVector)"
        )
    total = counts["out"] + counts["rejected"]
    verdict = "every record accounted for" if total == counts["in"] else "NOT every record accounted for"
    lines.append(f"  accounting        out + rejected = {total:,} of {counts['in']:,} in: {verdict}")
    return "\n".join(lines)
