"""Log lines above a live progress bar instead of through it.

The CLI logs through the root logger's ``StreamHandler`` on stderr (``logging.basicConfig`` in
``ensemble_trader.cli.run_main``), the stream tqdm draws its bars on. A record written while a
bar is drawn starts right after the bar's text, so a terminal keeps a line that is half bar,
half log record. :func:`log_lines_above_bars` sends what such handlers write through
``tqdm.write``, which clears the bars, writes the lines and draws the bars again below them.

It swaps the *stream* of the handlers in place rather than the handlers (as tqdm's own
``tqdm.contrib.logging.logging_redirect_tqdm`` does): the handler keeps its level, formatter and
filters, and filters added while the bars are live stay on it afterwards. That matters here: a
handler module loaded during the drain (the demo attaches the trading stages mid-run) creates its
Powertools ``Logger``, which filters the root handlers present at that moment, and
``runtime.observability`` turns that filter into an ``OwnRecordsFilter``. A replacement handler
would take those filters away with it when the original is put back, and the service's records,
which propagate, would then be written twice (by its own handler on stdout, and on stderr).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm


def shows_progress(no_progress: bool, stream: TextIO) -> bool:
    """Whether log lines must go around progress bars on ``stream``: bars are drawn
    (``no_progress`` false) and ``stream`` is a terminal. Elsewhere (a pipe, a file) nothing
    changes: what reads it gets the bytes, not a redrawn screen, and gets them as before."""
    if no_progress:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (OSError, ValueError):  # closed or detached
        return False


class _AboveBars:
    """The stream a handler writes to while bars are live: whole lines go to ``tqdm.write`` on
    the handler's own stream; the text after the last newline waits for the rest of its line
    (``spill`` gives what is left a line of its own, above the bars, when the block ends)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending = ""

    @property
    def name(self) -> str:  # StreamHandler's repr shows its stream's name
        return getattr(self.stream, "name", "")

    def isatty(self) -> bool:
        return self.stream.isatty()

    def write(self, text: str) -> int:
        lines, newline, self._pending = (self._pending + text).rpartition("\n")
        if newline:
            tqdm.write(lines, file=self.stream)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def spill(self) -> None:
        if self._pending:
            tqdm.write(self._pending, file=self.stream)
            self._pending = ""
        self.stream.flush()


def _handlers_writing_to(stream: TextIO) -> list[logging.StreamHandler]:
    """Every handler of the root logger and of the named loggers that writes to ``stream``
    (the object itself: a file handler on the same file is not one of them)."""
    loggers = [logging.root, *(found for found in list(logging.Logger.manager.loggerDict.values())
                               if isinstance(found, logging.Logger))]
    handlers: list[logging.StreamHandler] = []
    for logger in loggers:
        for handler in list(logger.handlers):
            if (isinstance(handler, logging.StreamHandler) and handler.stream is stream
                    and handler not in handlers):
                handlers.append(handler)
    return handlers


@contextmanager
def log_lines_above_bars(stream: TextIO, *, enabled: bool = True) -> Iterator[list[logging.StreamHandler]]:
    """While in the block, the log handlers that write to ``stream`` (the stream the bars are
    drawn on) write through ``tqdm.write``: each record on lines of its own above the bars, which
    are drawn again below it. Yields those handlers (none when not ``enabled``, which changes
    nothing). Their streams are put back on the way out, also when the block raises (an error,
    ``KeyboardInterrupt``, the demo's ``Terminated``); text still waiting for its newline (a
    handler whose terminator is not one) is then written as a line of its own. Handlers added
    inside the block are left as they are."""
    if not enabled:
        yield []
        return
    swapped: list[tuple[logging.StreamHandler, _AboveBars]] = []
    try:
        for handler in _handlers_writing_to(stream):
            above = _AboveBars(stream)
            handler.setStream(above)
            swapped.append((handler, above))
        yield [handler for handler, _ in swapped]
    finally:
        for handler, above in reversed(swapped):
            handler.acquire()
            try:
                if handler.stream is above:  # not set to another stream meanwhile
                    handler.setStream(stream)
                above.spill()
            finally:
                handler.release()
