"""`local drain` stopped by Ctrl-C (or SIGTERM / SIGHUP) says what it did before it stopped: the
mappings' table and each stage's line, as a finished drain does. Before, it printed only
"interrupted", so what had been handled (and dead-lettered) was not shown."""

from __future__ import annotations

import os
import signal

from test_local_journey import _drain_with, _DrainStack, _StuckEmulator


class _Interrupted(_StuckEmulator):
    """Handles five messages of the features mapping, then the user presses Ctrl-C."""

    def run_until_drained(self, *, on_batch=None, timeout_s=None, max_rounds=100_000):
        on_batch("features", 5)
        raise KeyboardInterrupt

    def backlog(self):  # an interrupted drain asks the stack for nothing more
        raise AssertionError("the backlog is not counted after an interruption")


def test_a_drain_stopped_by_ctrl_c_prints_what_it_did_and_exits_130(tmp_path, monkeypatch, capsys):
    assert _drain_with(tmp_path, monkeypatch, _Interrupted) == 130
    captured = capsys.readouterr()
    assert captured.out.startswith("local drain: stage local (http://127.0.0.1:1), 1 mappings")
    assert ": interrupted\n" in captured.out.splitlines(keepends=True)[0]
    assert "\nfeatures             1         0" in captured.out  # the mappings' table
    assert "  features    5 messages in (1 Kinesis records)" in captured.out
    assert "dead-letter queues" not in captured.out
    assert "interrupted" in captured.err
    assert _DrainStack.saved[-1] == {"features": {"shardId-000000000000": "42"}}  # its places kept


def test_a_drain_stopped_before_anything_arrived_says_so(tmp_path, monkeypatch, capsys):
    from ensemble_trader.local.esm import MappingStats

    class Early(_Interrupted):
        def run_until_drained(self, *, on_batch=None, timeout_s=None, max_rounds=100_000):
            self._stats = {"features": MappingStats("features", "market-data")}
            raise KeyboardInterrupt

    assert _drain_with(tmp_path, monkeypatch, Early) == 130
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(": interrupted, before any message was received")


def test_a_drain_ended_by_sigterm_prints_its_summary_too(tmp_path, monkeypatch, capsys):
    class Terminated(_Interrupted):
        def run_until_drained(self, *, on_batch=None, timeout_s=None, max_rounds=100_000):
            on_batch("features", 5)
            os.kill(os.getpid(), signal.SIGTERM)
            return self._stats

    assert _drain_with(tmp_path, monkeypatch, Terminated) == 128 + signal.SIGTERM
    captured = capsys.readouterr()
    assert "  features    5 messages in (1 Kinesis records)" in captured.out
    assert "terminated (SIGTERM); the next drain carries on where it stopped" in captured.err

