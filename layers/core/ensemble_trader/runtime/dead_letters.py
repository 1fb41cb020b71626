"""What a dead letter's log line carries, shared by the Kinesis stages (``stage.py``) and the
orders consumer (``orders.py``): each writes one warning per letter, with the reason cut here
(the letter itself keeps up to 8 KiB of it, ``adapters.aws.sqs.dead_letter_body``)."""

from __future__ import annotations

LOG_REASON_LIMIT = 1000
"""A dead letter's reason is logged up to this many characters."""


def logged_reason(reason: str) -> str:
    """``reason`` cut at :data:`LOG_REASON_LIMIT` characters, saying how much more the letter holds."""
    if len(reason) <= LOG_REASON_LIMIT:
        return reason
    return f"{reason[:LOG_REASON_LIMIT]} … ({len(reason) - LOG_REASON_LIMIT:,} more characters in the letter)"
