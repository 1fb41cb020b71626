"""Starting and stopping the two local services: a moto server and a redis-server."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ensemble_trader.domain.errors import InfrastructureError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 15.0, what: str = "service") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise InfrastructureError(f"{what} did not accept connections on 127.0.0.1:{port} within {timeout_s:.0f} s")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int | None, timeout_s: float = 5.0) -> None:
    """SIGTERM a process we started, then SIGKILL it if it lingers."""
    if not pid_alive(pid):
        return
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:  # reap it if it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux), so a killed test run
    leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class RedisServer:
    """A real ``redis-server`` on a free port, no persistence, stopped by its pid.

    ``detached`` servers daemonize (``--daemonize yes --pidfile``) and outlive this process
    (``ensemble-trader local up``); the others run as a child that also ends if this process is
    killed. When no redis-server binary exists it falls back to fakeredis' TCP server and says so
    loudly (``fake`` is then True): behaviour is close but not identical to Redis.
    """

    def __init__(self, port: int | None = None, *, allow_fake: bool = True, detached: bool = False) -> None:
        self.port = port or free_port()
        self.allow_fake = allow_fake
        self.detached = detached
        self.pid: int | None = None
        self.fake = False
        self._fake_server = None
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def directory(self) -> str | None:
        """The server's working folder (its pid file and log), removed on stop."""
        return self._dir

    def start(self, attempts: int = 5) -> RedisServer:
        """Start the server; if another process took the port meanwhile, retry on a new port."""
        binary = shutil.which("redis-server")
        if binary is None:
            if not self.allow_fake:
                raise InfrastructureError("redis-server is not installed (apt-get install redis-server)")
            self._start_fake()
            return self
        for attempt in range(1, attempts + 1):
            try:
                self._start_real(binary)
                self._check_identity()
                return self
            except (InfrastructureError, OSError, ValueError) as exc:
                self.stop()
                if attempt == attempts:
                    raise InfrastructureError(f"redis-server did not start after {attempts} attempts: {exc}") from exc
                log.info("redis-server on port %d failed (%s); retrying on another port", self.port, exc)
                self.port = free_port()
        return self

    def _check_identity(self) -> None:
        """The server answering on our port is the one we started (not a port-race neighbour)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            pid = int(client.info("server")["process_id"])
        except redis.RedisError as exc:
            raise InfrastructureError(f"redis on port {self.port} does not answer: {exc}") from exc
        finally:
            client.close()
        if pid != self.pid:
            raise InfrastructureError(f"port {self.port} is served by pid {pid}, not by our redis-server {self.pid}")

    def _start_real(self, binary: str) -> None:
        self._dir = tempfile.mkdtemp(prefix="et-redis-")
        pidfile = Path(self._dir) / "redis.pid"
        cmd = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "yes" if self.detached else "no", "--pidfile", str(pidfile), "--dir", self._dir,
            "--logfile", str(Path(self._dir) / "redis.log"),
        ]
        if self.detached:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
            if result.returncode != 0:
                raise InfrastructureError(f"redis-server failed to start: {result.stderr or result.stdout}")
            wait_for_port(self.port, what="redis-server")
            deadline = time.monotonic() + 5
            while not pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            self.pid = int(pidfile.read_text().strip())
        else:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            self.pid = proc.pid
            self._proc = proc
            wait_for_port(self.port, what="redis-server")

    def _start_fake(self) -> None:
        import threading

        from fakeredis import TcpFakeServer

        log.warning(
            "WARNING: no redis-server binary found; the local stack falls back to fakeredis. "
            "Install redis-server (apt-get install redis-server) to test against real Redis."
        )
        self.fake = True
        self._fake_server = TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
        threading.Thread(target=self._fake_server.serve_forever, daemon=True).start()
        wait_for_port(self.port, what="fakeredis")

    def stop(self) -> None:
        if self._fake_server is not None:
            self._fake_server.shutdown()
            self._fake_server.server_close()
            self._fake_server = None
        stop_pid(self.pid)
        if self._proc is not None:
            self._proc.wait(timeout=5)
            self._proc = None
        self.pid = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class MotoServer:
    """A moto server on 127.0.0.1, in one of three modes.

    * ``process`` (default): a child ``python -m moto.server`` that ends with this process. Its
      state is its own: moto's in-process ``mock_aws`` (used by other tests in the same session)
      resets the backends of *this* process and would wipe a threaded server's resources.
    * ``detached``: the same, in its own session, outliving this process (``local up``).
    * ``thread``: ``ThreadedMotoServer`` in this process, bound to port 0 (the OS picks the port).
    """

    def __init__(self, port: int | None = None, *, mode: str = "process") -> None:
        if mode not in ("process", "detached", "thread"):
            raise ValueError(f"moto server mode must be process, detached or thread, not {mode!r}")
        self.port = port or free_port()
        self.mode = mode
        self.pid: int | None = None
        self._threaded = None
        self._proc: subprocess.Popen | None = None

    @property
    def detached(self) -> bool:
        return self.mode == "detached"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 5) -> MotoServer:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if self.mode == "thread":
            from moto.server import ThreadedMotoServer

            self._threaded = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._threaded.start()
            self.port = self._threaded.get_host_and_port()[1]
            wait_for_port(self.port, timeout_s=30, what="moto server")
            return self
        for attempt in range(1, attempts + 1):
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
                preexec_fn=None if self.detached else _die_with_parent,
            )
            self.pid, self._proc = proc.pid, proc
            try:
                _wait_for_child_port(proc, self.port, "moto server")
                return self
            except InfrastructureError as exc:
                self.stop()
                if attempt == attempts:
                    raise
                log.info("moto server on port %d failed (%s); retrying on another port", self.port, exc)
                self.port = free_port()
        return self

    def stop(self) -> None:
        if self._threaded is not None:
            self._threaded.stop()
            self._threaded = None
        stop_pid(self.pid)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._proc = None
        self.pid = None


def _wait_for_child_port(proc: subprocess.Popen, port: int, what: str, timeout_s: float = 30.0) -> None:
    """Wait until ``proc`` listens on ``port``; fail at once if it exits (port taken)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfrastructureError(f"{what} exited with code {proc.returncode} (port {port} taken?)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        time.sleep(0.05)  # a neighbour could answer while our child fails to bind: check once more
        if proc.poll() is not None:
            raise InfrastructureError(f"{what} exited with code {proc.returncode} (port {port} taken?)")
        return
    raise InfrastructureError(f"{what} did not accept connections on 127.0.0.1:{port} within {timeout_s:.0f} s")
