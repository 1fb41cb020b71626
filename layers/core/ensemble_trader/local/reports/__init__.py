"""Per-stage sections of the demo summary.

For every deployed function the demo imports ``ensemble_trader.local.reports.<logical>`` if it
exists and prints what its ``summarize(stack) -> str`` returns. A report reads what its stage
left in the local stack (streams, queues, tables, its own ``stage_stats``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ensemble_trader.local.stack import LocalStack


def dead_letter_summary(stack: LocalStack, queue: str, *, limit: int = 8) -> tuple[int, list[str]]:
    """How many messages a dead-letter queue holds and its most common reasons (left in place)."""
    letters = stack.read_queue(queue, delete=False)
    reasons: Counter[str] = Counter(_short(letter) for letter in letters)
    lines = [f"{count:>5} × {reason}" for reason, count in reasons.most_common(limit)]
    if len(reasons) > limit:
        lines.append(f"      … and {len(reasons) - limit} other reasons")
    return len(letters), lines


def rejected_lines(stack: LocalStack, queue: str, label: str = "rejected") -> tuple[int, list[str]]:
    """How many messages a dead-letter queue holds, and the report lines: a count line (with its
    reasons below it when there are any)."""
    count, reasons = dead_letter_summary(stack, queue)
    head = f"  {label:<17} {count:>8,}  in {queue}" + (", with reasons:" if reasons else "")
    return count, [head, *(f"    {r}" for r in reasons)]


def accounting_line(out: int, rejected: int, records_in: int) -> str:
    """``out + rejected = N of M in`` with the verdict whether every record is accounted for."""
    total = out + rejected
    verdict = "every record accounted for" if total == records_in else "NOT every record accounted for"
    return f"  accounting        out + rejected = {total:,} of {records_in:,} in: {verdict}"


def _short(letter: dict[str, Any], width: int = 160, value_width: int = 40) -> str:
    """The reason of a dead letter, each ``field=value: message`` part with a long value elided."""
    reason = str(letter.get("reason", letter.get("body", "?")))
    head, sep, problems = reason.partition(": ")
    parts = []
    for problem in problems.split("; ") if sep else []:
        field, eq, rest = problem.partition("=")
        value, colon, message = rest.rpartition(": ")
        if eq and colon and len(value) > value_width:
            problem = f"{field}={value[: value_width - 1]}…: {message}"
        parts.append(problem)
    text = f"{head}: {'; '.join(parts)}" if parts else reason
    return text if len(text) <= width else text[: width - 1] + "…"
