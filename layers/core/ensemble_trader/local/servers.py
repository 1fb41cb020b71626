"""Starting and stopping the two local services: a moto server and a redis-server."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

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


class PortTakenError(InfrastructureError):
    """A server could not have its port: another process binds it (the child said "Address already
    in use"), or answers on it. The start is tried again on another port."""


OUTPUT_TAIL_LINES = 20
"""How many of a failed server's last output lines its start error quotes (per source)."""


def _tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _read_output(output: IO[bytes] | None) -> str:
    """What a child wrote to ``output`` (the temporary file its stdout and stderr went to)."""
    if output is None or output.closed:
        return ""
    try:
        output.flush()
        output.seek(0)
        return output.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""


def _start_failed(what: str, problem: str, port: int, sources: dict[str, str]) -> InfrastructureError:
    """The error of a server that did not start: ``problem`` and the last lines of each of its
    outputs (``{"stderr": text, "redis.log": text}``); a :class:`PortTakenError` when the output
    says its address is in use (retried on another port), else an :class:`InfrastructureError`
    (not retried: the same failure would only repeat)."""
    quoted = [f"--- {name} (last lines) ---\n{_tail(text)}" for name, text in sources.items() if text.strip()]
    message = f"{what} {problem} (port {port})" + (":\n" + "\n".join(quoted) if quoted else "; it wrote nothing")
    in_use = any("address already in use" in text.lower() for text in sources.values())
    return (PortTakenError if in_use else InfrastructureError)(message)


def _wait_for_child_port(
    proc: subprocess.Popen, port: int, what: str, outputs: Callable[[], dict[str, str]], timeout_s: float = 15.0
) -> None:
    """Wait until something accepts connections on ``port``, failing at once (with the child's
    output) when the child ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _start_failed(what, f"exited with code {proc.returncode} while starting", port, outputs())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise _start_failed(what, f"did not accept connections within {timeout_s:.0f} s", port, outputs())


def _start_with_port_retries(server: Any, what: str, attempts: int, start_once: Callable[[], None]) -> None:
    """Run ``start_once`` until the server is up: a :class:`PortTakenError` stops it and tries
    again on a new port (``attempts`` in all, counted in ``server.attempts``); anything else stops
    it and is raised at once (the same failure would only repeat)."""
    server.attempts = 0
    for attempt in range(1, attempts + 1):
        server.attempts = attempt
        try:
            start_once()
            return
        except PortTakenError as exc:
            server.stop()
            if attempt == attempts:
                raise InfrastructureError(f"{what} did not start after {attempts} attempts: {exc}") from exc
            log.info("%s on port %d failed (%s); retrying on another port", what, server.port, exc)
            server.port = free_port()
        except BaseException:
            server.stop()
            raise


CHILD_ENV_REMOVED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
"""Variables a server child must not inherit: moto's own boto3 sessions fail (HTTP 500) on a
profile this machine does not define, and a real session token has no business in a local server."""


def child_environment() -> dict[str, str]:
    """The environment of a server child: ours without :data:`CHILD_ENV_REMOVED` and with dummy
    credentials and a region, so the child never reads a real profile or real keys."""
    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_REMOVED}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION") or "us-east-1",
        }
    )
    return env


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (after the command name, which may hold spaces and
    parentheses); None without /proc or without that process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` names a live process (a zombie, dead but not yet reaped, is not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


def process_identity(pid: int | None) -> str | None:
    """Something that tells this process apart from a later one that reuses its pid: on Linux
    the boot id and the start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot),
    elsewhere the start time ``ps`` reports. None when the process does not exist or neither
    source answers."""
    if not pid or not pid_alive(pid):
        return None
    fields = _proc_stat_fields(pid)
    if fields is not None and len(fields) > 19:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot = "?"
        return f"linux:{boot}:{fields[19]}"  # fields[0] is field 3 (state): 22 - 3 = 19
    try:
        result = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    started = " ".join(result.stdout.split())
    return f"ps:{started}" if result.returncode == 0 and started else None


RUNNING, GONE, OTHER, UNVERIFIED = "running", "gone", "other", "unverified"


def process_status(pid: int | None, identity: str | None) -> str:
    """What ``pid`` recorded with ``identity`` (:func:`process_identity`) is now.

    ``running``: alive and still that process; ``gone``: no such process; ``other``: the pid
    now belongs to another process (never signal it); ``unverified``: alive, but no identity was
    recorded (a state file of an older version) or none can be read now — it may or may not be
    ours, so it must not be signalled either.
    """
    if not pid_alive(pid):
        return GONE
    if not identity:
        return UNVERIFIED
    current = process_identity(pid)
    if current is None:
        return UNVERIFIED
    return RUNNING if current == identity else OTHER


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


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by :func:`sigterm_raises`, so that cleanup runs.

    A ``BaseException`` that is neither ``SystemExit`` nor ``KeyboardInterrupt``: the emulator
    counts a handler's ``SystemExit`` as a function error (and would go on), while any other
    ``BaseException`` stops it after giving the batch in hand back."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextmanager
def signals_raise(*signums: int) -> Iterator[None]:
    """While in this block, each of ``signums`` raises :class:`Terminated` in the main thread
    (once: a second signal during the cleanup that follows is ignored, so the cleanup completes),
    instead of ending the process on the spot with its servers' folders left behind. The previous
    handlers are restored afterwards. Outside the main thread (where no handler can be set) it
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def sigterm_raises() -> contextlib.AbstractContextManager[None]:
    """:func:`signals_raise` for SIGTERM."""
    return signals_raise(signal.SIGTERM)


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def spawn_dying_with_us(cmd: list[str], **kwargs: object) -> subprocess.Popen:
    """``Popen(cmd)`` for a child that gets SIGTERM when this process dies (Linux), in a process
    group of its own.

    Its own group, because a terminal sends Ctrl-C (SIGINT) to its whole foreground process group:
    a server in ours would be killed by it at the same moment as we are interrupted, and our
    cleanup (give the batch in hand back to the stream, stop the servers) would then find its
    servers gone. So only we get the terminal's signals, and the server ends when we stop it or
    when we die.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process:
    a server forked by a short-lived thread (a ``LocalStack`` started in a worker thread) would
    be killed when that thread ends. So the fork happens in the main thread, or — when called
    from any other thread — in one spawner thread that lives as long as the process.
    """
    global _spawner
    kwargs = {"process_group": 0, **kwargs}
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(cmd, preexec_fn=_die_with_parent, **kwargs)  # type: ignore[call-overload]
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="et-local-spawner")
        spawner = _spawner
    return spawner.submit(subprocess.Popen, cmd, preexec_fn=_die_with_parent, **kwargs).result()


REDIS_DIR_PREFIX = "et-redis-"
REDIS_OWNER_FILE = "owner.json"
"""In a redis-server's working folder: the processes (pid, :func:`process_identity`) whose life
keeps the folder in use — the process that made it, and the server once its pid is known."""


def _write_owners(folder: str, pids: list[int | None]) -> None:
    processes = [[pid, process_identity(pid)] for pid in pids if pid]
    (Path(folder) / REDIS_OWNER_FILE).write_text(json.dumps({"processes": processes}))


def remove_stale_redis_folders() -> list[str]:
    """Remove the redis-server working folders (``$TMPDIR/et-redis-*``) left by processes that are
    gone (killed before their cleanup ran: SIGKILL, a crash); the folders removed.

    A folder counts as stale only when its owner file names processes and none of them is still
    the process it names (:func:`process_status`: gone, or the pid now another process's). A
    folder without a readable owner file (being created, written by an older version, another
    user's) and one with a process that cannot be verified are left alone."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{REDIS_DIR_PREFIX}*"):
        try:
            processes = json.loads((folder / REDIS_OWNER_FILE).read_text())["processes"]
            alive = [process_status(int(pid), identity) in (RUNNING, UNVERIFIED) for pid, identity in processes]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if processes and not any(alive):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
            log.info("removed %s, left by a redis-server whose processes are gone", folder)
    return removed


def _probe_client(port: int) -> Any:
    """A Redis client that asks once: 2 s to connect or answer, no retry. redis-py retries by
    default (reconnecting with backoff), which turned one probe of a port held by something that
    never answers into 26 s (11 connections) — and a start retried on another port only after it."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                       retry=Retry(NoBackoff(), 0))


class RedisServer:
    """A real ``redis-server`` on a free port, no persistence, stopped by its pid.

    ``detached`` servers daemonize (``--daemonize yes``) and outlive this process (``ensemble-trader
    local up``); their pid comes from the server (``INFO``) once ``CONFIG GET dir`` shows it works
    in our folder, so a missing pid file cannot leak one. The others run as a child that also
    ends if this process is killed (:func:`spawn_dying_with_us`). Every child gets
    :func:`child_environment`. When no redis-server binary exists it falls back to fakeredis' TCP server and says so
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
        self._output: IO[bytes] | None = None  # the child's stdout and stderr while it starts
        self._owners: list[int] = []  # the processes named in the folder's owner file
        self.attempts = 0  # start attempts of the last start() (a port taken meanwhile adds one)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def directory(self) -> str | None:
        """The server's working folder (its pid file and log), removed on stop."""
        return self._dir

    def start(self, attempts: int = 5) -> RedisServer:
        """Start the server; if another process took the port meanwhile (the server says "Address
        already in use", or something else answers there), retry on a new port. Any other failure
        is raised at once with the server's last output lines (stderr and ``redis.log``)."""
        binary = shutil.which("redis-server")
        if binary is None:
            if not self.allow_fake:
                raise InfrastructureError("redis-server is not installed (apt-get install redis-server)")
            self._start_fake()
            return self
        try:
            remove_stale_redis_folders()
        except OSError as exc:  # tidying up never stops a start
            log.info("could not look for stale redis-server folders: %s", exc)

        def start_once() -> None:
            try:
                self._start_real(binary)
                self._check_identity()
            except (OSError, ValueError) as exc:
                raise InfrastructureError(f"redis-server ({binary}) could not be started: {exc}") from exc
            self._close_output()

        _start_with_port_retries(self, "redis-server", attempts, start_once)
        return self

    def add_owner(self, pid: int | None) -> None:
        """Name ``pid`` in the working folder's owner file too: a process that keeps a file in the
        folder (``local up``'s moto server writes ``moto.log`` there), so that no start removes
        the folder as stale while that process lives."""
        if self._dir and pid and pid not in self._owners:
            self._owners.append(pid)
            _write_owners(self._dir, self._owners)

    def _outputs(self) -> dict[str, str]:
        """What the server wrote so far: its stdout and stderr, and its log file."""
        found = {"stderr": _read_output(self._output)}
        if self._dir:
            try:
                found["redis.log"] = (Path(self._dir) / "redis.log").read_text(errors="replace")
            except OSError:
                pass
        return found

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def _check_identity(self) -> None:
        """The server answering on our port is the one we started (not a port-race neighbour)."""
        import redis

        client = _probe_client(self.port)
        try:
            pid = int(client.info("server")["process_id"])
        except redis.RedisError as exc:
            self._raise_if_exited()
            raise PortTakenError(f"redis on port {self.port} does not answer: {exc}") from exc
        finally:
            client.close()
        if pid != self.pid:
            self._raise_if_exited()
            raise PortTakenError(f"port {self.port} is served by pid {pid}, not by our redis-server {self.pid}")

    def _raise_if_exited(self) -> None:
        """Our child has exited (what answered on the port is someone else): say why it did."""
        if self._proc is not None and self._proc.poll() is not None:
            raise _start_failed("redis-server", f"exited with code {self._proc.returncode} while starting",
                                self.port, self._outputs())

    def _start_real(self, binary: str) -> None:
        self._dir = tempfile.mkdtemp(prefix=REDIS_DIR_PREFIX)
        self._owners = [os.getpid()]
        _write_owners(self._dir, self._owners)
        cmd = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "yes" if self.detached else "no", "--pidfile", str(Path(self._dir) / "redis.pid"),
            "--dir", self._dir, "--logfile", str(Path(self._dir) / "redis.log"),
        ]
        if self.detached:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=15, env=child_environment())
            if result.returncode != 0:
                raise _start_failed("redis-server", f"exited with code {result.returncode} while starting",
                                    self.port, {"stderr": result.stderr + result.stdout, **self._outputs()})
            try:  # the daemon logs a failure after it detached (a port taken meanwhile) to redis.log
                wait_for_port(self.port, what="redis-server")
            except InfrastructureError:
                raise _start_failed("redis-server", "did not accept connections within 15 s", self.port,
                                    self._outputs()) from None
            # the daemon's pid from the server itself (not from its pid file, which may never
            # appear), and only if the server on the port works in our folder: it is ours
            deadline = time.monotonic() + 5
            while (pid := self._own_server_pid()) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid is None:
                raise PortTakenError(f"port {self.port} is not served by the redis-server started in {self._dir}")
            self.pid = pid
            self._owners.append(pid)
            _write_owners(self._dir, self._owners)  # the daemon outlives us: its folder with it
        else:
            # its output goes to an unnamed temporary file: read if the start fails, closed once it
            # works (the server itself logs to redis.log)
            self._output = tempfile.TemporaryFile()
            proc = spawn_dying_with_us(
                cmd, stdin=subprocess.DEVNULL, stdout=self._output, stderr=self._output,
                env=child_environment(),
            )
            self.pid = proc.pid
            self._proc = proc
            self._owners.append(proc.pid)
            _write_owners(self._dir, self._owners)
            _wait_for_child_port(proc, self.port, "redis-server", self._outputs)

    def _own_server_pid(self) -> int | None:
        """The pid of the redis-server on our port if its working folder is ours, else None."""
        import redis

        if not self._dir:
            return None
        client = _probe_client(self.port)
        try:
            config = client.config_get("dir")
            folder = config.get("dir", config.get(b"dir"))
            pid = int(client.info("server")["process_id"])
        except (redis.RedisError, OSError, KeyError, ValueError, TypeError):
            return None
        finally:
            client.close()
        if isinstance(folder, bytes):
            folder = folder.decode()
        if not folder or os.path.realpath(folder) != os.path.realpath(self._dir):
            return None
        return pid

    def _start_fake(self) -> None:
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
        if self.pid is None and self.detached and self._proc is None:
            # a daemon whose pid we never learnt (start failed part-way): find it by its folder
            self.pid = self._own_server_pid()
        stop_pid(self.pid)
        if self._proc is not None:
            self._proc.wait(timeout=5)
            self._proc = None
        self.pid = None
        self._close_output()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class MotoServer:
    """A moto server on 127.0.0.1, in one of three modes.

    * ``process`` (default): a child ``python -m moto.server`` that ends with this process
      (:func:`spawn_dying_with_us`; Linux only, elsewhere a killed parent leaves it behind). Its
      state is its own: moto's in-process ``mock_aws`` (used by other tests in the same session)
      resets the backends of *this* process and would wipe a threaded server's resources.
    * ``detached``: the same, in its own session, outliving this process (``local up``).
    * ``thread``: ``ThreadedMotoServer`` in this process, bound to port 0 (the OS picks the port).

    A child counts as started only once it holds the listening socket itself (see
    :func:`_wait_for_child_server`), so a port-race neighbour is never mistaken for it; it runs
    with :func:`child_environment` (no ``AWS_PROFILE``: moto answers HTTP 500 on an unknown one).

    A ``process`` child's stdout and stderr go to an unnamed temporary file (quoted if the start
    fails; freed when the child ends with us). A ``detached`` child outlives us and writes a
    traceback per request it fails on for as long as it runs, so its output goes to a named file,
    :attr:`log_path` (``moto.log`` in ``log_dir``, which ``local up`` sets to the redis-server's
    working folder, removed by ``local down``; without ``log_dir``, in a folder of its own,
    ``$TMPDIR/et-moto-*``, removed by :meth:`stop`). Nothing caps or rotates it.
    """

    def __init__(
        self, port: int | None = None, *, mode: str = "process", log_dir: str | os.PathLike[str] | None = None
    ) -> None:
        if mode not in ("process", "detached", "thread"):
            raise ValueError(f"moto server mode must be process, detached or thread, not {mode!r}")
        self.port = port or free_port()
        self.mode = mode
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.pid: int | None = None
        self._threaded = None
        self._proc: subprocess.Popen | None = None
        self._own_dir: str | None = None  # the folder of its log made for a detached child without log_dir
        self.attempts = 0  # start attempts of the last start() (a port taken meanwhile adds one)

    @property
    def detached(self) -> bool:
        return self.mode == "detached"

    @property
    def log_path(self) -> Path | None:
        """The file a detached child's stdout and stderr go to (None in the other modes, and
        before a detached start without ``log_dir``)."""
        if not self.detached:
            return None
        folder = self.log_dir if self.log_dir is not None else (Path(self._own_dir) if self._own_dir else None)
        return folder / MOTO_LOG_FILE if folder is not None else None

    def _open_output(self) -> tuple[IO[bytes], Callable[[], dict[str, str]]]:
        """Where the child's output goes, and what reads it back for a start error."""
        if not self.detached:
            output = tempfile.TemporaryFile()
            return output, lambda: {"output": _read_output(output)}
        if self.log_dir is None and self._own_dir is None:
            self._own_dir = tempfile.mkdtemp(prefix=MOTO_DIR_PREFIX)
        path = self.log_path
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)

        def read() -> dict[str, str]:
            try:
                return {str(path): path.read_text(errors="replace")}
            except OSError:
                return {}

        return open(path, "wb"), read  # closed by start() once the child has it

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

        def start_once() -> None:
            cmd = [sys.executable, "-c", MOTO_SERVER_MAIN, "-H", "127.0.0.1", "-p", str(self.port)]
            # stdout and stderr to a file (see the class docstring), quoted if the start fails (an
            # import error, the port taken); our handle is closed once it works, the child keeps
            # writing; werkzeug's line per request is switched off
            output, outputs = self._open_output()
            with output:
                streams = dict(stdout=output, stderr=output, stdin=subprocess.DEVNULL)
                if self.detached:
                    proc = subprocess.Popen(cmd, start_new_session=True, env=child_environment(), **streams)
                else:
                    proc = spawn_dying_with_us(cmd, env=child_environment(), **streams)
                self.pid, self._proc = proc.pid, proc
                _wait_for_child_server(proc, self.port, "moto server", outputs)

        _start_with_port_retries(self, "moto server", attempts, start_once)
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
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None


def _listening_socket_inodes(port: int) -> set[str] | None:
    """Inodes of the TCP sockets listening on ``port`` (Linux ``/proc/net/tcp``, ``tcp6``);
    None where there is no such table."""
    found: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found if readable else None


def owns_listening_socket(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` (matched by socket
    inode through ``/proc``); None where ``/proc`` cannot tell."""
    inodes = _listening_socket_inodes(port)
    if inodes is None:
        return None
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[len("socket:[") : -1] in inodes:
            return True
    return False


def _moto_answers(port: int) -> bool:
    """Whether a moto server answers on ``port`` (its ``/moto-api/data.json`` is a JSON object)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=2) as response:
            return response.status == 200 and isinstance(json.loads(response.read()), dict)
    except (OSError, ValueError):
        return False


MOTO_LOG_FILE = "moto.log"
"""A detached moto child's stdout and stderr, in :attr:`MotoServer.log_dir`."""

MOTO_DIR_PREFIX = "et-moto-"
"""The folder of a detached moto child's log when no ``log_dir`` is given (removed by ``stop()``)."""

MOTO_SERVER_MAIN = (
    "import logging, sys; logging.getLogger('werkzeug').setLevel(logging.WARNING); "
    "from moto.server import main; main(sys.argv[1:])"
)
"""The moto server child's program: ``python -m moto.server`` without werkzeug's log line per
request (its output is kept for as long as it runs: a temporary file, or a detached child's
``moto.log``)."""


def _wait_for_child_server(
    proc: subprocess.Popen, port: int, what: str, outputs: Callable[[], dict[str, str]] = dict, timeout_s: float = 30.0
) -> None:
    """Wait until ``proc`` itself serves moto on ``port``; fail at once if it exits, quoting its
    output (``outputs()``): a :class:`PortTakenError` when it says the address is in use.

    Another process may have taken the port between :func:`free_port` and the child's bind, and
    it answers at once while the child is still importing. So the child must own the listening
    socket (its inode among the child's file descriptors) before moto's API is asked. Without
    ``/proc`` (not Linux) this falls back to "moto answers and the child is alive", which a
    neighbouring moto server could still fool.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _start_failed(what, f"exited with code {proc.returncode} while starting", port, outputs())
        owned = owns_listening_socket(proc.pid, port)
        if owned is not False and _moto_answers(port):
            if proc.poll() is None:
                return
            continue
        time.sleep(0.05)
    raise _start_failed(what, f"did not serve on 127.0.0.1:{port} within {timeout_s:.0f} s", port, outputs())
