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
