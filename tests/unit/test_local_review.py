"""Defects of the local stack's commands found in review, each pinned without starting moto or
Redis where that is possible: `local up` claiming its state file, `feed replay` refusing
colliding symbols, the probes of a port that is not Redis, the demo's settings checked up front,
cleanup after signals."""

from __future__ import annotations

import pytest
from ensemble_trader.cli import main


@pytest.fixture()
def state_file(tmp_path, monkeypatch):
    path = tmp_path / "stack.json"
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", str(path))
    return path


class _Server:
    def __init__(self, pid: int) -> None:
        self.pid = pid


class _FakeStack:
    """Stands in for LocalStack without servers; a test's subclass says what ``start`` does."""

    def __init__(self, moto_pid: int = 1, redis_pid: int = 2) -> None:
        self.attached = False
        self.moto, self.redis = _Server(moto_pid), _Server(redis_pid)

    def write_state_file(self, path):
        path.write_text(f'{{"moto_pid": {self.moto.pid}}}')
        return path

    def environment(self, for_shell=False):
        return {"ET_STAGE": "local", "ET_AWS_ENDPOINT_URL": "http://127.0.0.1:1", "ET_REDIS_URL": "redis://x"}

    def stop(self):
        pass


# -- 1. two `local up` at the same moment ----------------------------------------------------------


def test_a_second_local_up_while_the_first_is_starting_refuses(state_file, monkeypatch, capsys):
    """The second `up` runs while the first is between its "already running?" check and writing
    the state file (its servers starting): it must refuse, not start a second stack whose state
    file overwrites the first's (`local down` would then stop only one of them)."""
    inner: list[int] = []
    stacks: list[object] = []

    class Stack(_FakeStack):
        def __init__(self, *args, **kwargs):
            super().__init__(1000 + len(stacks), 2000 + len(stacks))
            stacks.append(self)

        def start(self):
            if not inner:  # the first `up`: another `up` starts now, while this one starts
                inner.append(main(["local", "up"]))
            return self

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    assert main(["local", "up"]) == 0
    assert inner == [1]
    assert len(stacks) == 1  # the second never started servers
    assert "is being started" in capsys.readouterr().err
    assert state_file.read_text() == '{"moto_pid": 1000}'
    assert [p.name for p in state_file.parent.iterdir()] == [state_file.name]  # no lock file left


def test_local_up_releases_its_claim_when_the_start_fails(state_file, monkeypatch):
    calls = []

    class Stack:
        def __init__(self, *args, **kwargs):
            self.attached = False

        def start(self):
            calls.append("start")
            raise RuntimeError("no servers")

        def stop(self):
            pass

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    for _ in range(2):  # the second attempt is not refused as "being started"
        with pytest.raises(RuntimeError, match="no servers"):
            main(["local", "up"])
    assert calls == ["start", "start"]
    assert list(state_file.parent.iterdir()) == []


def test_local_down_while_up_is_starting_says_so(state_file, monkeypatch, capsys):
    seen = []

    class Stack(_FakeStack):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def start(self):
            seen.append(main(["local", "down"]))
            return self

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    assert main(["local", "up"]) == 0
    assert seen == [1]
    assert "is being started" in capsys.readouterr().err
    assert state_file.exists()


# -- 2. `feed replay` with two sources of one symbol ------------------------------------------------


class _Publisher:
    """Stands in for KinesisPublisher: records what would be put."""

    puts: list[tuple[str, list]] = []

    def __init__(self, *args, **kwargs):
        self.retried_entries = 0

    def put(self, stream, records):
        self.puts.append((stream, list(records)))


@pytest.fixture()
def publisher(monkeypatch):
    _Publisher.puts = []
    monkeypatch.setattr("ensemble_trader.adapters.aws.kinesis.KinesisPublisher", _Publisher)
    monkeypatch.setenv("ET_AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never real AWS, were it reached
    return _Publisher


@pytest.mark.parametrize(
    "first, second",
    [
        ("synth:realistic:1:50", "synth:realistic:2:50"),  # two series of symbol SYN, same timestamps
        ("synth:realistic:7", "synth:realistic:7:2000"),  # one source spelled twice
    ],
)
def test_feed_replay_refuses_two_sources_of_one_symbol(publisher, first, second, capsys):
    """The consumers key a bar by (symbol, timestamp): the second source's bars would be skipped
    as duplicates downstream (or break the first's order) while the replay reports them all put."""
    assert main(["feed", "replay", "--no-progress", "--bars", first, "--bars", second]) == 1
    err = capsys.readouterr().err
    assert f"--bars {first}" in err and f"--bars {second}" in err and "SYN" in err
    assert publisher.puts == []


def test_feed_replay_takes_sources_of_distinct_symbols(publisher, capsys):
    assert main(["feed", "replay", "--no-progress", "--bars", "synth:realistic:1:50",
                 "--bars", "synth:realistic:2:50:SYNB"]) == 0
    assert sum(len(records) for _, records in publisher.puts) == 100
    assert "put 100 bars of SYN, SYNB" in capsys.readouterr().out


def test_replay_bars_refuses_two_series_of_one_symbol(publisher):
    from ensemble_trader.cli.feed import replay_bars
    from ensemble_trader.domain.errors import DataError
    from ensemble_trader.marketdata import load_bars

    series = load_bars("synth:realistic:1:30") + load_bars("synth:realistic:2:30")
    with pytest.raises(DataError, match="SYN"):
        replay_bars(series, _Publisher(), "market-data")
    assert publisher.puts == []


# -- 4. Ctrl-C from a terminal ----------------------------------------------------------------------


@pytest.mark.parametrize("from_thread", [False, True])
def test_server_children_do_not_share_our_process_group(from_thread):
    """A terminal's Ctrl-C goes to its whole foreground process group: a server child in ours
    would die with the SIGINT before our cleanup could use or stop it."""
    import os
    import subprocess
    import sys
    import threading

    from ensemble_trader.local import servers

    box: dict[str, subprocess.Popen] = {}

    def spawn() -> None:
        box["proc"] = servers.spawn_dying_with_us([sys.executable, "-c", "import time; time.sleep(60)"])

    if from_thread:
        worker = threading.Thread(target=spawn)
        worker.start()
        worker.join()
    else:
        spawn()
    proc = box["proc"]
    try:
        assert os.getpgid(proc.pid) != os.getpgid(0)
        assert os.getpgid(proc.pid) == proc.pid  # a group of its own
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_cleanup_failing_after_an_interrupt_still_ends_the_demo_with_130(monkeypatch, capsys):
    """Servers already gone when the interrupted demo cleans up: the cleanup's error (raised
    while handling the KeyboardInterrupt) is no traceback, just the interruption."""

    class Stack:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise ConnectionError("Could not connect to the endpoint URL") from None

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    assert main(["demo", "--limit", "5", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["ensemble-trader demo: interrupted; the local stack is stopped"]


# -- 5. the orders settings, checked before the stack starts ---------------------------------------


@pytest.mark.parametrize(
    "variable, value",
    [
        ("ET_ORDERS_DEFAULT_ALLOCATION", "2"),  # every intent failed, then the orders report crashed
        ("ET_ORDERS_DEFAULT_ALLOCATION", "abc"),  # a raw ValueError from the demo's own float()
        ("ET_ORDERS_DEFAULT_ALLOCATION", "0"),
        ("ET_RISK_PRICE_COLLAR", "abc"),
    ],
)
def test_demo_refuses_bad_orders_settings_before_starting_the_stack(monkeypatch, capsys, variable, value):
    built = []

    class Stack:  # the stack must never be started
        def __init__(self, *args, **kwargs):
            built.append(True)
            raise AssertionError("the local stack was started")

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    monkeypatch.setenv(variable, value)
    assert main(["demo", "--limit", "5", "--no-progress"]) == 1
    assert built == []
    err = capsys.readouterr().err
    assert err.startswith(f"ensemble-trader: error: {variable}: ") and "Traceback" not in err


def test_demo_names_bad_orders_and_risk_settings_in_one_error(monkeypatch, capsys):
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", None)  # never reached
    monkeypatch.setenv("ET_ORDERS_DEFAULT_ALLOCATION", "2")
    monkeypatch.setenv("ET_RISK_PRICE_COLLAR", "abc")
    assert main(["demo", "--limit", "5", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "ET_ORDERS_DEFAULT_ALLOCATION" in err and "ET_RISK_PRICE_COLLAR" in err, err


# -- 6. SIGTERM ------------------------------------------------------------------------------------


class _GuardTerm(BaseException):
    """Raised by the test's own SIGTERM handler, so that a SIGTERM the code under test does not
    handle fails the test instead of killing pytest."""


@pytest.fixture()
def sigterm_guard():
    import signal

    def guard(signum, frame):
        raise _GuardTerm()

    previous = signal.signal(signal.SIGTERM, guard)
    yield guard
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_stops_the_demo_through_its_cleanup(sigterm_guard, monkeypatch, capsys):
    """`kill -TERM <demo>`: the stack's cleanup must run (it stops the servers and removes Redis'
    working folder), then one line and exit 143."""
    import os
    import signal

    calls = []

    class Stack:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            calls.append("start")
            return self

        @property
        def endpoint_url(self):  # the first thing the demo asks of a started stack
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000_000):  # the handler runs at the next bytecode boundary
                pass
            calls.append("not interrupted")
            return "http://127.0.0.1:9"

        def __exit__(self, *exc):
            calls.append("stop")

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    assert main(["demo", "--limit", "5", "--no-progress"]) == 143
    assert calls == ["start", "stop"]
    assert capsys.readouterr().err.strip().splitlines() == [
        "ensemble-trader demo: terminated (SIGTERM); the local stack is stopped"
    ]
    assert signal.getsignal(signal.SIGTERM) is sigterm_guard  # restored


def test_sigterm_during_local_up_stops_the_servers_and_releases_the_claim(sigterm_guard, state_file, monkeypatch):
    import os
    import signal

    calls = []

    class Stack:
        def __init__(self, *args, **kwargs):
            self.attached = False

        def start(self):
            calls.append("start")
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000_000):
                    pass
            except BaseException:
                self.stop()  # as LocalStack.start does
                raise
            return self

        def stop(self):
            calls.append("stop")

    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", Stack)
    assert main(["local", "up"]) == 143
    assert calls == ["start", "stop"]
    assert list(state_file.parent.iterdir()) == []  # no state file, no lock file


def test_stale_redis_folders_of_dead_owners_are_removed(tmp_path, monkeypatch, sleeper):
    import json
    import subprocess
    import sys
    import tempfile

    from ensemble_trader.local import servers

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    alive = sleeper()

    def folder(name: str, owners: list | None) -> object:
        path = tmp_path / name
        path.mkdir()
        (path / "redis.log").write_text("log")
        if owners is not None:
            (path / servers.REDIS_OWNER_FILE).write_text(json.dumps({"processes": owners}))
        return path

    stale = folder("et-redis-stale", [[dead.pid, "linux:boot:1"]])
    reused = folder("et-redis-reused", [[alive.pid, "linux:another-boot:1"]])  # the pid now is another process
    live = folder("et-redis-live", [[dead.pid, "linux:boot:1"], [alive.pid, servers.process_identity(alive.pid)]])
    unowned = folder("et-redis-unowned", None)  # being created, or written by an older version
    other = tmp_path / "et-other"
    other.mkdir()
    servers.remove_stale_redis_folders()
    assert not stale.exists() and not reused.exists()
    assert live.exists() and unowned.exists() and other.exists()




# -- 7. a port held by something that is not Redis -------------------------------------------------


@pytest.fixture()
def silent_listener():
    """A TCP listener that accepts connections and never answers; ``.port`` and ``.connections``
    (how many it accepted)."""
    import socket
    import threading

    class Listener:
        connections = 0

    listener = Listener()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    listener.port = sock.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)
            listener.connections += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener
    sock.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("probe", ["_check_identity", "_own_server_pid"])
def test_a_probe_of_a_port_that_is_not_redis_asks_once(silent_listener, tmp_path, probe):
    """redis-py's default retries turned each probe (socket_timeout 2 s) into 26 s; a start that
    found its port taken spent that on every attempt before trying another port."""
    from ensemble_trader.domain.errors import InfrastructureError
    from ensemble_trader.local.servers import RedisServer

    server = RedisServer(port=silent_listener.port, allow_fake=False)
    server.pid, server._dir = 123, str(tmp_path)
    if probe == "_check_identity":
        with pytest.raises(InfrastructureError, match="does not answer"):
            server._check_identity()
    else:
        assert server._own_server_pid() is None
    assert silent_listener.connections == 1


# -- the reports: units of their counts, the dead-letter read cap -----------------------------------


class _ReportStack:
    """Stands in for LocalStack in the reports: streams of (key, message), queues of letters,
    empty tables."""

    def __init__(self, streams=None, letters=None):
        self.streams, self.letters = streams or {}, letters or {}

    def stream_records(self, logical):
        return list(self.streams.get(logical, []))

    def read_queue(self, logical, *, delete=True, limit=10_000):
        return [{"reason": f"bad {i % 3}"} for i in range(min(limit, self.letters.get(logical, 0)))]

    def queue_depth(self, logical):
        return self.letters.get(logical, 0)

    def client(self, service):
        class Paginator:
            def paginate(self, **kwargs):
                return [{"Items": []}]

        class Client:
            def get_paginator(self, name):
                return Paginator()

        return Client()

    def name(self, logical):
        return f"et-local-{logical}"


@pytest.fixture()
def fresh_stage_stats():
    from ensemble_trader.runtime.stage import reset_stage_stats

    reset_stage_stats()
    yield
    reset_stage_stats()


def test_the_reports_say_which_counts_are_kinesis_records(fresh_stage_stats):
    """The stage statistics count Kinesis records, which the publisher packs (aggregation) with
    several messages each; the sections' 'records in' counted messages for features and regime
    but packed records for the meta-agent (2 'records in' beside 10 decisions)."""
    import json

    from ensemble_trader.local.reports import features, meta_agent, regime
    from ensemble_trader.runtime.stage import stage_stats

    bars = [("SPX", json.dumps({"bar": {"timestamp": f"2020-01-{d:02d}"}}).encode()) for d in range(1, 11)]
    stack = _ReportStack({"market-data": bars, "features": bars, "market-state": []})
    for name in ("features", "regime", "meta_agent"):
        stats = stage_stats(name)
        stats.records, stats.invocations = 2, 1
    text = features.summarize(stack)
    assert "10  messages on market-data; 2 Kinesis records delivered in 1 invocations" in text
    text = regime.summarize(stack)
    assert "10  distinct bars on features; 2 Kinesis records delivered in 1 invocations" in text
    text = meta_agent.summarize(stack)
    assert "  Kinesis records          2  delivered in 1 invocations" in text
    assert "records in" not in text


def test_a_dead_letter_queue_beyond_the_read_cap_is_counted_and_said(fresh_stage_stats):
    """At most 10,000 letters are read for their reasons; the count must not stop there silently."""
    from ensemble_trader.local.reports import dead_letter_summary, rejected_lines

    stack = _ReportStack(letters={"features-dlq": 12_345})
    count, lines = dead_letter_summary(stack, "features-dlq")
    assert count == 12_345
    assert any("reasons of the first 10,000 letters only" in line for line in lines)
    count, lines = rejected_lines(stack, "features-dlq")
    assert count == 12_345 and "12,345  in features-dlq" in lines[0]
    small = _ReportStack(letters={"features-dlq": 3})
    assert dead_letter_summary(small, "features-dlq")[0] == 3
