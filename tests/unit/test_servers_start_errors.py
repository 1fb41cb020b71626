"""A server that cannot start says why, at once.

The redis-server and moto children's output went to /dev/null and the wait for the port never
looked at the child: a redis-server that exited at once cost 5 attempts of 15 s each and ended
in "did not accept connections"; a moto child that exited was reported as "port taken?". Now
their output is quoted in the error, the wait ends when the child exits, and a start is tried on
another port only when the output says the address is in use. (Attempts are counted, not timed.)
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
from ensemble_trader.domain.errors import InfrastructureError
from ensemble_trader.local.servers import MotoServer, RedisServer


def _fake_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A ``redis-server`` on PATH that runs ``body`` (a shell script; ``$log`` is its --logfile)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "redis-server"
    script.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = "--logfile" ] && log="$2"; shift; done\n'
        f"{body}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture()
def listening_socket():
    """A port something else listens on (and never answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_redis_server_that_exits_at_once_is_reported_with_its_stderr_after_one_attempt(tmp_path, monkeypatch):
    _fake_redis(tmp_path, monkeypatch, 'echo "*** FATAL CONFIG FILE ERROR (Redis 7.0.15) *** Bad directive" >&2; exit 1')
    server = RedisServer(allow_fake=False)
    with pytest.raises(InfrastructureError, match=r"(?s)exited with code 1.*FATAL CONFIG FILE ERROR") as caught:
        server.start()
    assert server.attempts == 1  # not retried: the same failure would only repeat
    assert "did not start after" not in str(caught.value)
    assert server.directory is None and server.pid is None  # its folder removed


def test_the_redis_log_is_quoted_too(tmp_path, monkeypatch):
    _fake_redis(tmp_path, monkeypatch, 'echo "# Failed to write the pid file: Read-only file system" >> "$log"; exit 1')
    server = RedisServer(allow_fake=False)
    with pytest.raises(InfrastructureError, match=r"(?s)redis\.log.*Failed to write the pid file"):
        server.start()
    assert server.attempts == 1


def test_a_redis_server_whose_address_is_in_use_is_retried_on_other_ports(tmp_path, monkeypatch):
    _fake_redis(tmp_path, monkeypatch,
                'echo "Could not create server TCP listening socket 127.0.0.1:1: bind: Address already in use" >&2; exit 1')
    server = RedisServer(allow_fake=False)
    with pytest.raises(InfrastructureError, match=r"(?s)after 3 attempts.*Address already in use"):
        server.start(attempts=3)
    assert server.attempts == 3


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")
def test_a_real_redis_server_on_a_taken_port_moves_to_another(listening_socket):
    server = RedisServer(port=listening_socket, allow_fake=False)
    try:
        server.start()
        assert server.attempts == 2 and server.port != listening_socket
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["process", "detached"])
def test_a_moto_child_that_cannot_import_is_reported_with_its_traceback(tmp_path, monkeypatch, mode):
    broken = tmp_path / "broken" / "flask"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("flask is broken on purpose in this test")\n')
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))  # only the child imports flask afresh
    server = MotoServer(mode=mode, log_dir=tmp_path / "logs" if mode == "detached" else None)
    with pytest.raises(InfrastructureError, match=r"(?s)exited with code 1.*flask is broken on purpose") as caught:
        server.start()
    assert server.attempts == 1
    assert "taken" not in str(caught.value)  # no guess that the port was taken
    if mode == "detached":  # read back from its named log, which the error names
        assert f"--- {tmp_path / 'logs' / 'moto.log'} (last lines) ---" in str(caught.value)


def _output_files(pid: int) -> set[str]:
    """What the process's stdout and stderr are (an unnamed temporary file reads '/tmp/#123 (deleted)')."""
    return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (1, 2)}


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads a child's descriptors in /proc")
def test_a_detached_moto_child_writes_to_a_named_log_in_a_folder_stop_removes():
    """A detached moto child (`local up`) outlives the command and writes a traceback per request
    it fails on; into an unlinked temporary file that grew unseen (159 KB after 50 bad requests,
    invisible to ls and du). Its output now goes to moto.log in a folder of its own, removed by
    stop() (`local up` puts it in the redis-server's folder instead, which `local down` removes)."""
    server = MotoServer(mode="detached")
    try:
        server.start()
        log = server.log_path
        assert log is not None and log.name == "moto.log" and log.parent.name.startswith("et-moto-")
        assert log.is_file() and _output_files(server.pid) == {str(log)}
    finally:
        server.stop()
    assert server.pid is None and not log.parent.exists()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads a child's descriptors in /proc")
def test_a_detached_moto_child_logs_into_the_given_folder_and_leaves_it(tmp_path):
    server = MotoServer(mode="detached", log_dir=tmp_path)
    try:
        server.start()
        assert server.log_path == tmp_path / "moto.log"
        assert _output_files(server.pid) == {str(tmp_path / "moto.log")}
    finally:
        server.stop()
    assert (tmp_path / "moto.log").is_file()  # the folder's owner removes it (`local down`: redis_dir)


def test_a_moto_child_that_ends_with_us_keeps_its_unnamed_output():
    assert MotoServer().log_path is None and MotoServer(mode="thread").log_path is None


def test_a_moto_child_on_a_taken_port_moves_to_another(listening_socket):
    server = MotoServer(port=listening_socket)
    try:
        server.start()
        assert server.attempts == 2 and server.port != listening_socket
    finally:
        server.stop()
