"""`local up` stopped by a signal: SIGHUP (the terminal closed during its start) is handled like
SIGTERM, and the line it ends with is true before and after the state file is written. The
signal is raised at a hook point of a stand-in stack (``signal.raise_signal`` runs the handler
before it returns); no server is started."""

from __future__ import annotations

import signal

import pytest
from ensemble_trader.cli import main


class _GuardSignal(BaseException):
    """What a signal raises when `local up` did not install its own handler for it."""


@pytest.fixture()
def guards():
    """SIGTERM and SIGHUP raise _GuardSignal outside `local up`'s own handlers (so that a missing
    handler fails the test instead of ending pytest); the guards must be back afterwards."""

    def guard(signum, frame):
        raise _GuardSignal(signum)

    previous = {s: signal.signal(s, guard) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield guard
    for s, old in previous.items():
        signal.signal(s, old)


@pytest.fixture()
def state_file(tmp_path, monkeypatch):
    path = tmp_path / "stack.json"
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", str(path))
    return path


def _stack_class(calls: list[str], raise_in: str, signum: int):
    """A stand-in LocalStack that raises ``signum`` in its method ``raise_in``."""

    class _Server:
        pid = 4242

    class Stack:
        def __init__(self, *args, **kwargs):
            self.attached = False
            self.moto = self.redis = _Server()

        def _maybe_signal(self, where):
            if where == raise_in:
                signal.raise_signal(signum)
                calls.append(f"{where} not interrupted")

        def start(self):
            calls.append("start")
            try:
                self._maybe_signal("start")
            except BaseException:
                self.stop()  # as LocalStack.start does
                raise
            return self

        def write_state_file(self, path):
            path.write_text('{"moto_pid": 4242}')
            self._maybe_signal("write_state_file")  # written in full, not yet returned
            return path

        def environment(self, for_shell=False):
            self._maybe_signal("environment")
            return {"ET_STAGE": "local", "ET_AWS_ENDPOINT_URL": "http://127.0.0.1:1", "ET_REDIS_URL": "redis://x"}

        def stop(self):
            calls.append("stop (servers left running)" if self.attached else "stop (servers stopped)")

    return Stack


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_sighup_while_starting_stops_the_servers_and_exits_129(guards, state_file, monkeypatch, capsys):
    calls: list[str] = []
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", _stack_class(calls, "start", signal.SIGHUP))
    assert main(["local", "up"]) == 129
    assert calls == ["start", "stop (servers stopped)"]
    assert list(state_file.parent.iterdir()) == []  # no state file, no lock file
    assert _err_lines(capsys) == ["ensemble-trader local up: terminated (SIGHUP); no stack was left running"]
    assert signal.getsignal(signal.SIGHUP) is guards and signal.getsignal(signal.SIGTERM) is guards


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_state_file_is_written_stops_the_stack_and_removes_the_file(
    guards, state_file, monkeypatch, capsys, signum
):
    """The file was complete when the signal came: left behind, it would describe stopped servers."""
    calls: list[str] = []
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", _stack_class(calls, "write_state_file", signum))
    assert main(["local", "up"]) == 128 + signum
    assert calls == ["start", "stop (servers stopped)"]
    assert list(state_file.parent.iterdir()) == []
    assert _err_lines(capsys) == [
        f"ensemble-trader local up: terminated ({signal.Signals(signum).name}); no stack was left running"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_after_the_state_file_was_written_leaves_the_stack_and_says_so(
    guards, state_file, monkeypatch, capsys, signum
):
    """Before, the line said "no stack was left running" while the state file and both servers
    remained."""
    calls: list[str] = []
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", _stack_class(calls, "environment", signum))
    assert main(["local", "up"]) == 128 + signum
    assert calls == ["start", "stop (servers left running)"]
    assert state_file.read_text() == '{"moto_pid": 4242}'
    (line,) = _err_lines(capsys)
    assert line.startswith(f"ensemble-trader local up: terminated ({signal.Signals(signum).name}); "
                           f"the stack was started and is left running (state in {state_file})")
    assert "`ensemble-trader local down` stops it" in line and "no stack" not in line


def test_sighup_while_the_shell_lines_are_printed_leaves_the_stack(guards, state_file, monkeypatch, capsys):
    calls: list[str] = []
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", _stack_class(calls, "none", signal.SIGHUP))

    def printing(env, path):
        print("unset AWS_PROFILE")
        signal.raise_signal(signal.SIGHUP)

    monkeypatch.setattr("ensemble_trader.cli.local._print_exports", printing)
    assert main(["local", "up"]) == 129
    assert state_file.exists() and calls == ["start", "stop (servers left running)"]
    assert "is left running" in capsys.readouterr().err
