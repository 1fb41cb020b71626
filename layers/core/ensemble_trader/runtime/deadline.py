"""The deadline of the running Lambda invocation, which retries must not cross.

A handler enters ``with invocation_deadline(context):`` around its work: the absolute
``time.monotonic()`` instant its invocation ends (``context.get_remaining_time_in_millis()``
from now) is held in a :class:`~contextvars.ContextVar` until the block ends. Everything the
handler runs in its thread sees it — Powertools' batch processors call the record handler in
the same thread, the local stack's ESM calls the real handlers with a context object
(:class:`~ensemble_trader.local.events.FakeLambdaContext`) — and a worker thread sees it when
started in a copy of the context (:func:`contextvars.copy_context`).

The retry loops of the AWS adapters ask it before every attempt and every back-off: an attempt
that could not finish before the deadline is not started, a back-off that would end past it (or
leave too little for the attempt after it) is not slept, and :class:`DeadlineExceededError` (an
:class:`InfrastructureError`, so callers treat it as any other infrastructure failure) is raised
instead, naming what was being done and how much time was left. The botocore side (every
attempt of every client of :mod:`ensemble_trader.adapters.aws.clients`) is wired there.

Outside an invocation (the CLI, tests, backtests, the local ESM between invocations) no
deadline is set: :func:`time_left` is None, :func:`require` returns, :func:`pause` sleeps, and
nothing behaves differently from code that never heard of a deadline. With time to spare inside
an invocation, nothing behaves differently either: the same attempts, timeouts and back-offs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ensemble_trader.domain.errors import InfrastructureError

Clock = Callable[[], float]


@dataclass(frozen=True)
class Deadline:
    """The instant ``at`` (on ``clock``, ``time.monotonic`` unless a test injects another) by
    which the invocation ends."""

    at: float
    clock: Clock = time.monotonic

    def left(self) -> float:
        """Seconds from now to the deadline (negative once it has passed)."""
        return self.at - self.clock()


_current: ContextVar[Deadline | None] = ContextVar("ensemble_trader_invocation_deadline", default=None)


class DeadlineExceededError(InfrastructureError):
    """Work stopped because the invocation's deadline would not leave the time it could take.

    ``what`` names the work (``"DynamoDB PutItem"``, ``"Kinesis PutRecords to et-prod-features:
    3 of 40 entries still failing ..."``), ``left_s`` the seconds that were left, ``needed_s`` the
    seconds it could have taken and ``needed_for`` what those are (one attempt, a back-off and
    the attempt after it). ``failing`` holds what was still not done (the entries of a batch
    call), empty when it is not known. ``attempt_started`` is False when the refusal stopped an
    attempt before it was sent (the AWS clients' guard at ``before-send``: nothing of it reached
    the service), True (the default) when an attempt was sent before it or it is not known; code
    reads this flag, never the message (whose ``(attempt not started)`` is for people).

    :meth:`led_by` names the caller's context (a table, a bucket and key, a queue) in front of
    ``what``, keeping the figures, ``failing`` and ``attempt_started`` (not notes or attributes
    added later); copies and pickles keep every attribute."""

    def __init__(self, what: str, left_s: float, needed_s: float, needed_for: str = "it could take",
                 *, failing: Sequence[Any] = (), attempt_started: bool = True):
        self.what = what
        self.left_s = left_s
        self.needed_s = needed_s
        self.needed_for = needed_for
        self.failing = list(failing)
        self.attempt_started = attempt_started
        super().__init__(
            f"{what}: stopped with {max(left_s, 0.0):.2f} s of the invocation left, under the "
            f"{needed_s:.2f} s {needed_for}"
        )

    def led_by(self, context: str) -> DeadlineExceededError:
        """This refusal with ``context`` (what the caller was doing: ``"S3 get s3://bucket/key"``)
        leading its ``what``; the figures, ``failing`` and ``attempt_started`` unchanged."""
        return DeadlineExceededError(f"{context}: {self.what}", self.left_s, self.needed_s, self.needed_for,
                                     failing=self.failing, attempt_started=self.attempt_started)

    def __reduce__(self) -> tuple[Any, ...]:  # the message alone (``args``) cannot rebuild it
        return (type(self), (self.what, self.left_s, self.needed_s, self.needed_for), self.__dict__)


@contextmanager
def invocation_deadline(context: Any, *, clock: Clock = time.monotonic) -> Iterator[Deadline | None]:
    """Hold the deadline of the invocation ``context`` (Lambda's context object) while the block
    runs; yield it. ``context`` None sets none (a handler called without one, e.g. by hand).

    Inside another deadline on the same clock the earlier of the two holds: a nested block
    cannot extend the invocation."""
    if context is None:
        yield None
        return
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        raise TypeError(
            f"invocation_deadline needs Lambda's context object (with get_remaining_time_in_millis), "
            f"not {type(context).__name__}"
        )
    deadline = Deadline(clock() + max(0, remaining()) / 1000.0, clock)
    outer = _current.get()
    if outer is not None and outer.clock is clock and outer.at < deadline.at:
        deadline = outer
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


def current() -> Deadline | None:
    """The deadline in force (None outside an invocation)."""
    return _current.get()


def time_left() -> float | None:
    """Seconds left before the deadline (negative once passed); None outside an invocation."""
    deadline = _current.get()
    return None if deadline is None else deadline.left()


Described = str | Callable[[], str]
"""What is being done, as text or as a function giving it (built only when an error is raised:
a retry loop's description of its pending entries costs nothing while time is ample)."""


def _text(what: Described) -> str:
    return what if isinstance(what, str) else what()


def require(what: Described, needed_s: float, needed_for: str = "it could take", *,
            failing: Sequence[Any] = (), attempt_started: bool = True) -> None:
    """Raise :class:`DeadlineExceededError` unless ``needed_s`` seconds are left before the
    deadline (nothing outside an invocation). A caller that checks before sending an attempt
    passes ``attempt_started=False``, which the error then carries."""
    deadline = _current.get()
    if deadline is None:
        return
    left = deadline.left()
    if left < needed_s:
        raise DeadlineExceededError(_text(what), left, needed_s, needed_for, failing=failing,
                                    attempt_started=attempt_started)


def pause(
    seconds: float,
    what: Described,
    *,
    then_needed_s: float = 0.0,
    sleep: Callable[[float], None] | None = None,
    failing: Sequence[Any] = (),
) -> None:
    """``sleep(seconds)`` — a back-off before another attempt — unless it would end past the
    deadline or leave less than ``then_needed_s`` (the attempt it waits for) before it: then
    raise :class:`DeadlineExceededError` at once instead (outside an invocation: always sleep).
    ``sleep`` defaults to ``time.sleep``."""
    deadline = _current.get()
    if deadline is not None:
        left = deadline.left()
        if left < seconds + then_needed_s:
            needed_for = (f"the back-off ({seconds:.2f} s) and the next attempt ({then_needed_s:.2f} s) could take"
                          if then_needed_s else f"the back-off ({seconds:.2f} s) takes")
            raise DeadlineExceededError(_text(what), left, seconds + then_needed_s, needed_for, failing=failing)
    (sleep or time.sleep)(seconds)
