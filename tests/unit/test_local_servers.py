"""Process bookkeeping of the local stack without starting moto or Redis: the children's
environment, process identities, and `local up/down/status` around a state file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ensemble_trader.cli import main
from ensemble_trader.local import servers
from ensemble_trader.local.servers import (
    GONE,
    OTHER,
    RUNNING,
    UNVERIFIED,
    child_environment,
    owns_listening_socket,
    pid_alive,
    process_identity,
    process_status,
)

LINUX_PROC = Path("/proc/self/stat").exists()




@pytest.fixture()
def state_file(tmp_path, monkeypatch):
    path = tmp_path / "stack.json"
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", str(path))
    return path


def write_state(path: Path, moto: subprocess.Popen, redis: subprocess.Popen, **identities: str | None) -> None:
    state = {"stage": "local", "shards": 1, "moto_port": 1, "moto_pid": moto.pid, "redis_port": 2,
             "redis_pid": redis.pid, "redis_dir": None}
    state.update(identities)
    path.write_text(json.dumps(state))


# -- environment ----------------------------------------------------------------------------------


def test_children_get_dummy_credentials_and_no_profile_or_token(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "et-test-profile-that-does-not-exist")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEY")
    env = child_environment()
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env
    assert env["AWS_ACCESS_KEY_ID"] == "testing" and env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert os.environ["AWS_PROFILE"] == "et-test-profile-that-does-not-exist"  # ours is untouched


def test_stack_environment_restores_profile_and_session_token(monkeypatch):
    from ensemble_trader.local.stack import LocalStack

    monkeypatch.setenv("AWS_PROFILE", "my-profile")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "my-token")
    stack = LocalStack()
    stack.attached = True  # nothing started: stop() only restores the environment
    stack._set_environment()
    assert "AWS_PROFILE" not in os.environ and "AWS_SESSION_TOKEN" not in os.environ
    stack.stop()
    assert os.environ["AWS_PROFILE"] == "my-profile" and os.environ["AWS_SESSION_TOKEN"] == "my-token"


# -- process identity -----------------------------------------------------------------------------


def test_process_status_tells_our_process_from_a_reused_pid(sleeper):
    proc = sleeper()
    identity = process_identity(proc.pid)
    assert identity
    assert process_status(proc.pid, identity) == RUNNING
    assert process_status(proc.pid, identity + "0") == OTHER  # same pid, another start time
    assert process_status(proc.pid, None) == UNVERIFIED  # a state file without identities
    proc.kill()
    proc.wait(timeout=10)
    assert process_status(proc.pid, identity) == GONE


@pytest.mark.skipif(not hasattr(os, "waitid"), reason="needs os.waitid")
def test_a_zombie_is_not_alive():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet: a zombie
    try:
        assert not pid_alive(proc.pid)
    finally:
        proc.wait(timeout=10)


@pytest.mark.skipif(not LINUX_PROC, reason="socket ownership is read from /proc")
def test_owner_of_a_listening_socket_is_found_by_inode(sleeper):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert owns_listening_socket(os.getpid(), port) is True
        assert owns_listening_socket(sleeper().pid, port) is False
    assert owns_listening_socket(os.getpid(), port) is False  # closed: nobody listens


# -- local up / down / status ---------------------------------------------------------------------


def test_local_down_never_signals_pids_that_belong_to_other_processes(state_file, sleeper, capsys):
    moto, redis = sleeper(), sleeper()
    write_state(state_file, moto, redis, moto_identity="linux:another-boot:1", redis_identity="linux:another-boot:2")
    assert main(["local", "down"]) == 0
    assert moto.poll() is None and redis.poll() is None
    assert not state_file.exists()
    err = capsys.readouterr().err
    assert f"pid {moto.pid} now belongs to another process" in err and "not signalled" in err


def test_local_down_leaves_the_pids_of_an_old_state_file_alone(state_file, sleeper, capsys):
    moto, redis = sleeper(), sleeper()
    write_state(state_file, moto, redis)  # written before identities were recorded
    assert main(["local", "down"]) == 1
    assert moto.poll() is None and redis.poll() is None
    assert not state_file.exists()
    assert "cannot be verified" in capsys.readouterr().err


def test_local_down_stops_servers_that_are_still_ours(state_file, sleeper, capsys):
    moto, redis = sleeper(), sleeper()
    write_state(state_file, moto, redis, moto_identity=process_identity(moto.pid),
                redis_identity=process_identity(redis.pid))
    assert main(["local", "down"]) == 0
    assert moto.wait(timeout=10) is not None and redis.wait(timeout=10) is not None
    assert not state_file.exists()
    assert f"moto pid {moto.pid}" in capsys.readouterr().out


def test_local_status_reports_and_removes_a_stale_state_file(state_file, sleeper, capsys):
    moto, redis = sleeper(), sleeper()
    write_state(state_file, moto, redis, moto_identity="linux:another-boot:1", redis_identity="linux:another-boot:2")
    assert main(["local", "status"]) == 1
    err = capsys.readouterr().err
    assert "stale state file" in err and f"pid {moto.pid} now belongs to another process" in err
    assert not state_file.exists()
    assert moto.poll() is None and redis.poll() is None


def test_local_status_keeps_the_state_file_while_one_server_still_runs(state_file, sleeper, capsys):
    """moto gone, Redis still ours: removing the file would leave `local down` nothing to stop it by."""
    moto, redis = sleeper(), sleeper()
    write_state(state_file, moto, redis, moto_identity="linux:another-boot:1",
                redis_identity=process_identity(redis.pid))
    assert main(["local", "status"]) == 1
    assert "partly running" in capsys.readouterr().err and state_file.exists()
    assert main(["local", "down"]) == 0
    assert redis.wait(timeout=10) is not None and moto.poll() is None and not state_file.exists()


@pytest.mark.parametrize("content", ["{bad", "[]"])
def test_an_unreadable_state_file_is_a_one_line_error_and_up_never_orphans_its_servers(state_file, content, capsys):
    state_file.write_text(content)
    assert main(["local", "status"]) == 1
    assert "state file" in capsys.readouterr().err
    assert main(["local", "up"]) == 1
    assert "cannot be read" in capsys.readouterr().err and state_file.read_text() == content


def test_local_up_replaces_a_stale_state_file_without_signalling(state_file, sleeper, monkeypatch, capsys):
    moto, redis = sleeper(), sleeper()
    write_state(state_file, moto, redis, moto_identity="linux:another-boot:1", redis_identity="linux:another-boot:2")
    started = []

    class Stack:  # stands in for LocalStack: no servers
        def __init__(self, *args, **kwargs):
            self.moto = self.redis = type("Server", (), {"pid": 1})()

        def start(self):
            started.append(True)
            raise RuntimeError("stop here")

        def stop(self):
            pass

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    with pytest.raises(RuntimeError, match="stop here"):
        main(["local", "up"])
    assert started and not state_file.exists()
    assert moto.poll() is None and redis.poll() is None
    assert "stale" in capsys.readouterr().err


def test_local_up_stops_the_servers_when_the_state_file_cannot_be_written(state_file, monkeypatch, capsys):
    calls = []

    class Stack:  # stands in for LocalStack: records what `local up` does with it
        def __init__(self, *args, **kwargs):
            self.attached = False

        def start(self):
            calls.append("start")
            return self

        def write_state_file(self, path):
            calls.append("write")
            raise PermissionError(13, "Permission denied", str(path))

        def stop(self):
            calls.append(f"stop attached={self.attached}")

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    assert main(["local", "up"]) == 1
    assert calls == ["start", "write", "stop attached=False"]
    assert "ensemble-trader: error: [Errno 13] Permission denied" in capsys.readouterr().err


def test_state_file_records_the_identity_of_each_server(tmp_path, sleeper):
    from ensemble_trader.local.stack import LocalStack

    moto, redis = sleeper(), sleeper()
    stack = LocalStack()
    stack.moto.pid, stack.redis.pid = moto.pid, redis.pid
    state = json.loads(stack.write_state_file(tmp_path / "state.json").read_text())
    assert state["moto_identity"] == process_identity(moto.pid)
    assert state["redis_identity"] == process_identity(redis.pid)
    assert process_status(state["moto_pid"], state["moto_identity"]) == RUNNING


def test_spawner_thread_outlives_the_calling_thread():
    import threading

    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("thread", _spawning_thread()))
    worker.start()
    worker.join()
    assert box["thread"] is not threading.current_thread() and box["thread"].is_alive()


def _spawning_thread():
    import threading

    proc = servers.spawn_dying_with_us([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    return next(t for t in threading.enumerate() if t.name.startswith("et-local-spawner"))
