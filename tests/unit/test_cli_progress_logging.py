"""Log lines above the demo's progress bar (``ensemble_trader.cli.progress``): each record whole,
on lines of its own, once, through the same handler with its filters, level and formatter; the
handler's stream put back afterwards, also after an error or an interruption; nothing changed when
the bar is not shown on a terminal."""

from __future__ import annotations

import io
import logging
import os
import signal

import pytest
from ensemble_trader.cli.progress import log_lines_above_bars, shows_progress
from ensemble_trader.local.servers import Terminated
from ensemble_trader.runtime.observability import OwnRecordsFilter, observability
from tqdm import tqdm

FORMAT = "%(levelname)s %(name)s: %(message)s"
BAR = "pipeline"


def screen(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: a carriage return goes back to the start of the
    line, and what follows overwrites what was there."""
    shown = []
    for physical in raw.split("\n"):
        cells: list[str] = []
        for part in physical.split("\r"):
            cells[: len(part)] = part
        shown.append("".join(cells).rstrip())
    return shown


def new_bar(stream: io.StringIO, total: int = 100) -> tqdm:
    """A bar on ``stream`` whose text does not depend on the time."""
    return tqdm(total=total, file=stream, desc=BAR, bar_format="{desc} {n}/{total}", mininterval=0, miniters=1)


@pytest.fixture
def logged():
    """A logger whose only handler writes to a stream of its own, as the CLI's root handler
    writes to stderr: (logger, handler, stream)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("et_test_progress")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, handler, stream
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


def test_without_it_a_record_lands_on_the_bar_line(logged):
    """What the demo showed: the record written after the bar's text, on the bar's line."""
    logger, _, stream = logged
    with new_bar(stream) as bar:
        bar.update(3)
        logger.warning("dead-lettered record 3")
    assert f"{BAR} 3/100WARNING et_test_progress: dead-lettered record 3" in screen(stream.getvalue())


def test_a_record_is_a_whole_line_above_the_bar_which_is_drawn_again(logged):
    logger, _, stream = logged
    with new_bar(stream) as bar, log_lines_above_bars(stream) as redirected:
        assert len(redirected) == 1
        bar.update(3)
        logger.warning("dead-lettered record 3")
        bar.update(4)
    lines = [line for line in screen(stream.getvalue()) if line]
    assert lines == ["WARNING et_test_progress: dead-lettered record 3", f"{BAR} 7/100"]


def test_every_record_appears_once_and_in_order(logged):
    logger, _, stream = logged
    with new_bar(stream, total=60) as bar, log_lines_above_bars(stream):
        for n in range(30):
            bar.update(1)
            logger.warning("record %d", n)
            if n % 3 == 0:
                logger.warning("record %d again", n)
            bar.update(1)
    lines = [line for line in screen(stream.getvalue()) if line]
    expected = []
    for n in range(30):
        expected.append(f"WARNING et_test_progress: record {n}")
        if n % 3 == 0:
            expected.append(f"WARNING et_test_progress: record {n} again")
    assert lines == [*expected, f"{BAR} 60/60"]


def test_a_record_of_several_lines_stays_together(logged):
    logger, _, stream = logged
    with new_bar(stream) as bar, log_lines_above_bars(stream):
        bar.update(1)
        try:
            raise ValueError("bad bar")
        except ValueError:
            logger.exception("dead-lettered record 1")
    lines = [line for line in screen(stream.getvalue()) if line]
    assert lines[0] == "ERROR et_test_progress: dead-lettered record 1"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-2:] == ["ValueError: bad bar", f"{BAR} 1/100"]
    assert not any(BAR in line for line in lines[:-1])


def test_the_handler_keeps_its_filters_level_and_formatter(logged):
    logger, handler, stream = logged
    own = OwnRecordsFilter("et_test_progress.orders")
    handler.addFilter(own)
    handler.setLevel(logging.INFO)
    formatter = handler.formatter
    other_stream = io.StringIO()
    other = logging.StreamHandler(other_stream)  # writes elsewhere: left alone
    logger.addHandler(other)
    try:
        with new_bar(stream) as bar, log_lines_above_bars(stream) as redirected:
            assert redirected == [handler] and handler in logger.handlers and other in logger.handlers
            assert handler.filters == [own] and handler.level == logging.INFO and handler.formatter is formatter
            assert other.stream is other_stream
            bar.update(1)
            logging.getLogger("et_test_progress.orders").warning("the service's own record")
            logger.debug("below the handler's level")
            logger.info("passes")
    finally:
        logger.removeHandler(other)
    lines = [line for line in screen(stream.getvalue()) if line]
    assert lines == ["INFO et_test_progress: passes", f"{BAR} 1/100"]
    assert handler.filters == [own] and handler.level == logging.INFO and handler.formatter is formatter


def test_a_service_created_while_the_bar_is_live_keeps_its_filter_afterwards(monkeypatch):
    """A handler module loaded during the drain (the demo attaches the trading stages mid-run)
    creates its Powertools Logger, whose filter ``observability`` turns into an
    ``OwnRecordsFilter`` on the root handlers of that moment. It must still be on the root handler
    once the bar is gone, or the service's records would be written twice."""
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    service = "et_test_progress_service"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.root.addHandler(handler)
    try:
        with new_bar(stream), log_lines_above_bars(stream) as redirected:
            assert handler in redirected
            observability(service)
        assert handler.stream is stream
        assert [f.service for f in handler.filters if isinstance(f, OwnRecordsFilter)] == [service]
        logging.getLogger(f"{service}.child").warning("written by the service's own handler")
        logging.getLogger("et_test_progress_module").warning("a module's record")
    finally:
        logging.root.removeHandler(handler)
    lines = [line for line in screen(stream.getvalue()) if line]
    assert lines == [f"{BAR} 0/100", "WARNING et_test_progress_module: a module's record"]


@pytest.mark.parametrize("stop", [ValueError("boom"), KeyboardInterrupt(), Terminated(signal.SIGTERM)],
                         ids=["error", "ctrl-c", "sigterm"])
def test_the_stream_is_put_back_when_the_block_raises(logged, stop):
    logger, handler, stream = logged
    with pytest.raises(type(stop)), new_bar(stream), log_lines_above_bars(stream):
        assert handler.stream is not stream
        raise stop
    assert handler.stream is stream
    before = stream.getvalue()
    logger.warning("after the bar")
    assert stream.getvalue() == before + "WARNING et_test_progress: after the bar\n"


def test_the_stream_is_put_back_after_the_block(logged):
    logger, handler, stream = logged
    with new_bar(stream), log_lines_above_bars(stream):
        pass
    assert handler.stream is stream


def test_text_without_its_newline_waits_for_it_and_gets_a_line_at_the_end(logged):
    """A handler whose terminator is not a newline: whole lines go above the bar as they come;
    the rest waits for its newline, and is given a line of its own above the bar at the end."""
    logger, handler, stream = logged
    handler.terminator = ""
    with new_bar(stream) as bar:
        with log_lines_above_bars(stream):
            bar.update(1)
            logger.warning("one ")
            logger.warning("two\nthree")
            bar.update(1)
            assert "three" not in stream.getvalue()
        bar.update(1)
    lines = [line for line in screen(stream.getvalue()) if line]
    assert lines == ["WARNING et_test_progress: one WARNING et_test_progress: two", "three", f"{BAR} 3/100"]


def test_disabled_it_changes_nothing(logged):
    logger, handler, stream = logged

    def run(enabled: bool | None) -> str:
        """The same writes: through the block (enabled or not), or with no block (None)."""
        stream.seek(0)
        stream.truncate()
        with new_bar(stream) as bar:
            if enabled is None:
                bar.update(2)
                logger.warning("dead-lettered record 2")
                bar.update(1)
            else:
                with log_lines_above_bars(stream, enabled=enabled) as redirected:
                    assert redirected == ([handler] if enabled else [])
                    assert (handler.stream is stream) == (not enabled)
                    bar.update(2)
                    logger.warning("dead-lettered record 2")
                    bar.update(1)
        return stream.getvalue()

    untouched = run(None)
    assert "3/100WARNING" not in untouched and f"{BAR} 2/100WARNING" in untouched  # the bar line, broken
    assert run(False) == untouched
    assert run(True) != untouched


def test_it_is_wanted_only_for_a_bar_on_a_terminal():
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=True) as terminal:
            assert shows_progress(False, terminal)
            assert not shows_progress(True, terminal)
    finally:
        os.close(leader)
    assert not shows_progress(False, io.StringIO())
    closed = open(os.devnull, "w")
    closed.close()
    assert not shows_progress(False, closed)
