"""Per-stage sections of the demo summary.

For every deployed function the demo imports ``ensemble_trader.local.reports.<logical>`` if it
exists and prints what its ``summarize(stack) -> str`` returns. A report reads what its stage
left in the local stack (streams, queues, tables, its own ``stage_stats``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ensemble_trader.local.stack import LocalStack

DEAD_LETTERS_READ = 10_000
"""At most this many letters of a queue are read for their reasons (each read is a receive and a
visibility change on the local stack)."""


def dead_letter_summary(stack: LocalStack, queue: str, *, limit: int = 8) -> tuple[int, list[str]]:
    """How many messages a dead-letter queue holds and its most common reasons (left in place).

    Only the first :data:`DEAD_LETTERS_READ` letters are read: beyond that the count is the
    queue's own (``ApproximateNumberOfMessages`` + not visible, exact on moto) and the lines say
    that the reasons are those of the letters read."""
    letters = stack.read_queue(queue, delete=False, limit=DEAD_LETTERS_READ + 1)
    capped = len(letters) > DEAD_LETTERS_READ
    letters = letters[:DEAD_LETTERS_READ]
    count = max(stack.queue_depth(queue), len(letters)) if capped else len(letters)
    reasons: Counter[str] = Counter(_short(letter) for letter in letters)
    lines = [f"{n:>5} × {reason}" for reason, n in reasons.most_common(limit)]
    if len(reasons) > limit:
        lines.append(f"      … and {len(reasons) - limit} other reasons")
    if capped:
        lines.append(f"      (reasons of the first {DEAD_LETTERS_READ:,} letters only; the queue holds {count:,})")
    return count, lines


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
