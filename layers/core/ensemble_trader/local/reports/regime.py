"""The regime stage's section of the demo summary: accounting and the detected regime timeline."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from ensemble_trader.local.reports import accounting_line, rejected_lines
from ensemble_trader.local.stack import LocalStack
from ensemble_trader.runtime.stage import stage_stats

MAX_PERIODS = 30


@dataclass
class Period:
    """Consecutive bars of one symbol with the same reported regime."""

    regime: str
    start: str
    end: str
    bars: int
    confidence_sum: float

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.bars


def timelines(stack: LocalStack) -> tuple[dict[str, list[Period]], int, int]:
    """Per symbol, the periods of the reported regime on the market-state stream (bars past
    feature warm-up; re-emitted copies counted once), with the distinct and copied record counts."""
    seen: set[tuple[str, str]] = set()
    copies = 0
    rows: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for key, data in stack.stream_records("market-state"):
        state = json.loads(data)
        regime = state["regime"]
        ident = (key, regime["timestamp"])
        if ident in seen:
            copies += 1
            continue
        seen.add(ident)
        if state["features"]["warmup_remaining"] == 0:
            rows[key].append((regime["timestamp"], regime["regime"], float(regime["confidence"])))
    out: dict[str, list[Period]] = {}
    for symbol, items in rows.items():
        periods: list[Period] = []
        for ts, regime, confidence in sorted(items):
            if periods and periods[-1].regime == regime:
                last = periods[-1]
                last.end, last.bars, last.confidence_sum = ts, last.bars + 1, last.confidence_sum + confidence
            else:
                periods.append(Period(regime, ts, ts, 1, confidence))
        out[symbol] = periods
    return out, len(seen), copies


def features_in(stack: LocalStack) -> tuple[int, int]:
    """(distinct bars, re-emitted copies) on the features stream: a copy (same symbol and bar
    time, re-emitted after a features retry) is skipped by the regime stage as a duplicate, so it
    is no input of its own. A message that is not a feature vector counts as one input each (the
    stage dead-letters every one)."""
    seen: set[tuple[str, str]] = set()
    copies = 0
    for n, (key, data) in enumerate(stack.stream_records("features")):
        try:
            ident = (key, str(json.loads(data)["bar"]["timestamp"]))
        except (ValueError, KeyError, TypeError):
            ident = (key, f"#unreadable {n}")
        copies += ident in seen
        seen.add(ident)
    return len(seen), copies


def _day(ts: str) -> str:
    return ts[:16].replace("T", " ") if not ts[11:16] == "00:00" else ts[:10]


def summarize(stack: LocalStack) -> str:
    stats = stage_stats("regime")
    per_symbol, distinct, copies = timelines(stack)
    records_in, copies_in = features_in(stack)
    dlq_count, rejected = rejected_lines(stack, "regime-dlq")
    latency = stats.compute_us()
    lines = [
        "regime λ  (features → market-state)",
        f"  records in        {records_in:>8,}  distinct bars on features"
        + (f" (+{copies_in:,} re-emitted copies, skipped as duplicates)" if copies_in else "")
        + f"; {stats.records:,} Kinesis records delivered in {stats.invocations:,} invocations",
        f"  market states     {distinct:>8,}  distinct bars on market-state"
        + (f" (+{copies:,} re-emitted copies after retries)" if copies else ""),
        f"  duplicates        {stats.duplicates:>8,}  redelivered messages skipped",
        f"  RegimeChanged     {stats.events:>8,}  events put on the bus",
        *rejected,
    ]
    if latency:
        lines.append(
            f"  compute latency   p50 {latency['p50']:.1f} µs, p99 {latency['p99']:.1f} µs, mean "
            f"{latency['mean']:.1f} µs per bar (filter + transition rule + MarketState)"
        )
    lines.append(accounting_line(distinct, dlq_count, records_in))
    for symbol, periods in sorted(per_symbol.items()):
        bars = sum(p.bars for p in periods)
        shares = defaultdict(int)
        for p in periods:
            shares[p.regime] += p.bars
        mix = ", ".join(f"{r} {n / bars:.0%}" for r, n in sorted(shares.items(), key=lambda kv: -kv[1]))
        lines.append(f"  timeline {symbol}: {len(periods)} periods over {bars:,} bars ({mix})")
        lines.append(f"    {'start':<16} {'end':<16} {'regime':<9} {'bars':>6}  mean confidence")
        shown = periods if len(periods) <= MAX_PERIODS else periods[-MAX_PERIODS:]
        if len(shown) < len(periods):
            lines.append(f"    … {len(periods) - len(shown)} earlier periods not shown")
        for p in shown:
            lines.append(
                f"    {_day(p.start):<16} {_day(p.end):<16} {p.regime:<9} {p.bars:>6}  {p.mean_confidence:.2f}"
            )
    return "\n".join(lines)
