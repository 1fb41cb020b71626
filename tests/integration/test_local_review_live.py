"""Defects of the demo's reports found in review, against the shared local stack."""

from __future__ import annotations

import re
from contextlib import contextmanager


def test_regime_report_accounts_for_a_re_emitted_features_copy(clean_stack):
    """A features retry re-emits a feature vector (the features report calls it a re-emitted
    copy); the regime stage skips the copy as a duplicate. Its report must not count the copy as
    an input that came out nowhere."""
    from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
    from ensemble_trader.cli.feed import replay_bars
    from ensemble_trader.local.reports import features as features_report
    from ensemble_trader.local.reports import regime as regime_report
    from ensemble_trader.marketdata import load_arch

    stack = clean_stack.stack
    features, regime = clean_stack.emulator(["features"]), clean_stack.emulator(["regime"])
    replay_bars([load_arch("sp500")[:100]], KinesisPublisher(settings=stack.settings), "market-data")
    features.run_until_drained()
    key, data = clean_stack.new_records("features")[50]
    stack.client("kinesis").put_record(StreamName=stack.name("features"), PartitionKey=key, Data=data)
    regime.run_until_drained()

    assert "(+1 re-emitted copies" in features_report.summarize(stack)
    text = regime_report.summarize(stack)
    assert "out + rejected = 100 of 100 in: every record accounted for" in text
    assert "100  distinct bars on features (+1 re-emitted copies" in text


def _sigint_as_in_a_terminal() -> None:
    """In a child before exec: SIGINT's default action, as a terminal's foreground job has it
    (Python then raises ``KeyboardInterrupt`` on it).

    An ignored signal stays ignored across fork and exec, and a test run started as a background
    job of a non-interactive shell (a CI script, ``make test &``: POSIX has such a job ignore
    SIGINT and SIGQUIT) ignores SIGINT. Python installs its ``KeyboardInterrupt`` handler only
    over the default action, so a demo spawned from such a run ignored the test's SIGINT and ran
    on for minutes, into its trading stages, until the test gave up after 120 s."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def foreground_job(command: list[str], env: dict[str, str]):
    """``command`` as a terminal's foreground job: a session of its own (so its process group
    gets the "terminal's" SIGINT, not the test run), SIGINT at its default action whatever the
    test run does with it (:func:`_sigint_as_in_a_terminal`), stdout and stderr piped as text."""
    import subprocess

    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)


@contextmanager
def sigint_ignored():
    """SIGINT ignored in this process while in the block (previous handler restored after), as a
    test run started as a background job of a non-interactive shell has it (CI): what a child
    spawned meanwhile inherits."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _demo(*args: str, env: dict[str, str] | None = None):
    """``ensemble-trader demo`` as a terminal's foreground job (:func:`foreground_job`), its
    output unbuffered so the test sees each line when it is printed."""
    import os
    import sys
    from pathlib import Path

    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    for key in ("ET_AWS_ENDPOINT_URL", "ET_REDIS_URL", "ET_STAGE"):  # not the test session's stack
        environ.pop(key, None)
    cli = Path(sys.executable).with_name("ensemble-trader")
    return foreground_job([str(cli), "demo", "--no-progress", *args], environ)


def _until_stack_is_up(proc) -> str:
    """Read the demo's output up to its 'local stack:' line; that line."""
    for line in proc.stdout:
        if line.startswith("local stack:"):
            return line
    raise AssertionError(f"the demo ended before its stack was up: {proc.wait()} {proc.stderr.read()}")


def _until_the_pipeline_runs(proc, redis_url: str) -> None:
    """Wait until the features stage has written state to Redis: the pipeline is draining."""
    import time

    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        while proc.poll() is None and not client.dbsize():
            time.sleep(0.05)
    finally:
        client.close()


def _port_is_closed(url: str) -> bool:
    import socket
    from urllib.parse import urlparse

    try:
        with socket.create_connection(("127.0.0.1", urlparse(url).port), timeout=2):
            return False
    except OSError:
        return True


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>\S+): (?P<message>.*)$")
"""A line of the CLI's log format (``ensemble_trader.cli.run_main``) on stderr."""


def _own_lines(err: str) -> list[str]:
    """The demo's own stderr lines, without the log lines of the dead letters its feed makes on
    purpose (bad records among the bars: one WARNING each, as in Lambda's log); any other log
    line fails the test."""
    own = []
    for line in err.strip().splitlines():
        found = LOG_LINE.match(line)
        if found is None:
            own.append(line)
            continue
        assert found["level"] == "WARNING" and "dead-lettered" in found["message"], line
    return own


def test_ctrl_c_ends_the_demo_with_130_and_one_line():
    """The terminal's SIGINT goes to the whole foreground process group. The servers must not
    get it (they would die before the demo's own cleanup, which then failed with a raw botocore
    EndpointConnectionError traceback and exit 1).

    Started from a test run that ignores SIGINT (as a CI run started in the background does), so
    that the demo's SIGINT never depends on how the run was started: the demo is a terminal's
    foreground job all the same (it ignored the SIGINT and the test waited 120 s in such a run)."""
    import os
    import re
    import signal

    with sigint_ignored():
        proc = _demo()
    try:
        line = _until_stack_is_up(proc)
        moto, redis = re.search(r"moto (\S+), .*redis-server (\S+)", line).groups()
        _until_the_pipeline_runs(proc, redis)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert len(_own_lines(err)) == 1 and "interrupted" in err, err
    assert _port_is_closed(moto) and _port_is_closed(redis)  # stopped by the demo's cleanup


def test_sigterm_ends_the_demo_with_its_cleanup():
    """`kill -TERM <demo pid>`: the servers are stopped and Redis' working folder is removed
    (it was left in $TMPDIR), then one line and exit 143."""
    import os
    import re
    import signal
    from pathlib import Path

    import redis

    proc = _demo()
    try:
        line = _until_stack_is_up(proc)
        moto, redis_url = re.search(r"moto (\S+), .*redis-server (\S+)", line).groups()
        client = redis.Redis.from_url(redis_url)
        folder = client.config_get("dir")["dir"]
        client.close()
        _until_the_pipeline_runs(proc, redis_url)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert _own_lines(err) == ["ensemble-trader demo: terminated (SIGTERM); the local stack is stopped"]
    assert Path(folder).name.startswith("et-redis-") and not Path(folder).exists()
    assert _port_is_closed(moto) and _port_is_closed(redis_url)


def test_a_redis_start_removes_the_folders_of_killed_servers(tmp_path, monkeypatch):
    """A redis-server killed with its parent (SIGKILL: no cleanup ran) leaves its folder; the
    next start removes it."""
    import os
    import subprocess
    import sys
    import tempfile
    import time

    from ensemble_trader.local.servers import RedisServer, pid_alive

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    script = ("from ensemble_trader.local.servers import RedisServer; import sys; "
              "r = RedisServer(allow_fake=False).start(); print(r.directory, r.pid, flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    folder, pid = child.stdout.readline().split()
    child.kill()
    child.wait(timeout=10)
    while pid_alive(int(pid)):  # its redis-server ends with it (SIGTERM on the parent's death)
        time.sleep(0.05)
    assert folder.startswith(str(tmp_path)) and os.path.isdir(folder)
    server = RedisServer(allow_fake=False)
    try:
        server.start()
        assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(server.directory)]
    finally:
        server.stop()
    assert list(tmp_path.iterdir()) == []
