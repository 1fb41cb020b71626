"""The README's local journey as a new user walks it, without starting moto or Redis: where
`local up` says its state file is, `local status` on a half-stopped stack, `local drain` without a
stack or past its timeout, `data show` on a one-row file."""

from __future__ import annotations

import json
import os

from ensemble_trader.cli import main


class _Server:
    def __init__(self, pid: int) -> None:
        self.pid = pid


class _UpStack:
    """Stands in for LocalStack in `local up`: no servers, a state file of one line."""

    def __init__(self, *args, **kwargs) -> None:
        self.attached = False
        self.moto, self.redis = _Server(1), _Server(2)

    def start(self):
        return self

    def write_state_file(self, path):
        path.write_text('{"moto_pid": 1}')
        return path

    def environment(self, for_shell=False):
        return {"ET_STAGE": "local", "ET_AWS_ENDPOINT_URL": "http://127.0.0.1:1", "ET_REDIS_URL": "redis://x"}

    def stop(self):
        pass


def _exports(out: str) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export "))


# -- `local up` names its state file ------------------------------------------------------------------


def _half_stopped_stack(tmp_path, monkeypatch, sleeper):
    """A state file whose moto pid now belongs to another process and whose Redis still runs:
    (its path, the two sleepers standing in for the servers)."""
    from ensemble_trader.local.servers import process_identity

    path = tmp_path / "stack.json"
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", str(path))
    moto, redis = sleeper(), sleeper()
    path.write_text(json.dumps({
        "stage": "local", "shards": 1, "moto_port": 1, "moto_pid": moto.pid, "moto_identity": "linux:another-boot:1",
        "redis_port": 2, "redis_pid": redis.pid, "redis_identity": process_identity(redis.pid), "redis_dir": None,
    }))
    return path, moto, redis


def test_local_up_prints_the_full_state_file_path_and_exports_a_non_default_one(tmp_path, monkeypatch, capsys):
    """A relative ET_LOCAL_STATE_FILE is taken from the current folder; `up` names the file by its
    full path and exports the variable, so `local status|drain|down` in the shell that evaluates
    the exports find the same stack."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", "run/stack.json")
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", _UpStack)
    assert main(["local", "up"]) == 0
    out = capsys.readouterr().out
    full = tmp_path / "run" / "stack.json"
    assert out.splitlines()[0].endswith(f"; state in {full}")
    assert _exports(out)["ET_LOCAL_STATE_FILE"] == str(full)
    assert full.exists()


def test_local_up_with_the_default_state_file_names_it_in_the_checkout_and_exports_no_variable(
    tmp_path, monkeypatch, capsys
):
    default = tmp_path / "checkout" / ".local-stack.json"
    default.parent.mkdir()
    monkeypatch.delenv("ET_LOCAL_STATE_FILE", raising=False)
    monkeypatch.setattr("ensemble_trader.local.stack.default_state_file_path", lambda: default)
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", _UpStack)
    monkeypatch.chdir(tmp_path)  # not where the file goes
    assert main(["local", "up"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(f"; state in {default}")
    assert "ET_LOCAL_STATE_FILE" not in _exports(out)
    assert default.exists()


# -- `local status` with one server left ---------------------------------------------------------------


def test_local_status_of_a_half_stopped_stack_names_each_server_once(tmp_path, monkeypatch, sleeper, capsys):
    """moto gone (its pid now another process), Redis still ours: the message said 'partly running:
    the local stack ... is not running (stale state file)' — both at once."""
    path, moto, redis = _half_stopped_stack(tmp_path, monkeypatch, sleeper)
    assert main(["local", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"partly running ({path}): pid {moto.pid} now belongs to another process")
    assert f"redis-server (pid {redis.pid}) is running" in err
    assert "`ensemble-trader local down` stops the rest" in err
    assert "not running" not in err and path.exists()


# -- `local drain` ---------------------------------------------------------------------------------


def test_local_drain_without_a_stack_says_to_start_one(tmp_path, monkeypatch, capsys):
    path = tmp_path / "stack.json"
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", str(path))
    assert main(["local", "drain", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"no local stack state file at {path}; run `ensemble-trader local up`" in captured.err
    assert list(tmp_path.iterdir()) == []  # no drain lock left behind


class _DrainStack:
    """An attached stack for `local drain`: what it was asked to save."""

    saved: list[dict] = []

    def __init__(self, path) -> None:
        self.stage, self.endpoint_url, self.state_path = "local", "http://127.0.0.1:1", path

    @classmethod
    def attach(cls, path=None, *, quiet=False):
        assert quiet  # the handlers log at WARNING unless --logs
        return cls(path)

    def mapping_checkpoints(self):
        return {"features": {"shardId-000000000000": "41"}}

    def save_mapping_checkpoints(self, checkpoints):
        self.saved.append(checkpoints)
        return True

    def queue_depth(self, logical):
        return 0

    def stop(self):
        pass


class _StuckEmulator:
    """Reads nothing, and its source keeps seven messages it never gets to (as a drain whose
    timeout passes would see)."""

    def __init__(self, stack, functions=None, *, checkpoints=None, capture_output=True, **kwargs):
        from ensemble_trader.local.esm import MappingStats

        assert checkpoints == {"features": {"shardId-000000000000": "41"}}  # resumes where the last drain stopped
        self.functions = ["features"]
        self._stats = {"features": MappingStats("features", "market-data", records_received=1, messages_received=5)}

    def run_until_drained(self, *, on_batch=None, timeout_s=None, max_rounds=100_000):
        print("a handler's log line")  # must not reach our stdout
        return self._stats

    def stats(self):
        return self._stats

    def backlog(self):
        return {"features": 7}

    def checkpoints(self):
        return {"features": {"shardId-000000000000": "42"}}


def _drain_with(tmp_path, monkeypatch, emulator, *options: str, stack=_DrainStack) -> int:
    """`ensemble-trader local drain --no-progress *options` against a saved (fake) stack."""
    path = tmp_path / "stack.json"
    path.write_text("{}")
    monkeypatch.setenv("ET_LOCAL_STATE_FILE", str(path))
    monkeypatch.setattr("ensemble_trader.local.stack.LocalStack", stack)
    monkeypatch.setattr("ensemble_trader.local.esm.EventSourceMappingEmulator", emulator)
    _DrainStack.saved = []
    return main(["local", "drain", *options, "--no-progress"])


def test_local_drain_past_its_timeout_exits_1_naming_what_is_left_and_keeps_its_place(tmp_path, monkeypatch, capsys):
    assert _drain_with(tmp_path, monkeypatch, _StuckEmulator, "--timeout", "1") == 1
    captured = capsys.readouterr()
    assert "a handler's log line" not in captured.out + captured.err
    assert captured.out.startswith("local drain: stage local (http://127.0.0.1:1), 1 mappings")
    assert "\nfeatures             1         0" in captured.out  # the mappings' table
    assert "  features    5 messages in (1 Kinesis records)" in captured.out
    assert ("the --timeout of 1 s passed with messages still waiting (features 7 on market-data); "
            "`ensemble-trader local drain` again carries on from there") in captured.err
    assert _DrainStack.saved == [{"features": {"shardId-000000000000": "42"}}]
    assert sorted(os.listdir(tmp_path)) == ["stack.json"]


def test_local_drain_with_logs_sends_the_handlers_lines_to_stderr(tmp_path, monkeypatch, capsys):
    class Drained(_StuckEmulator):
        def backlog(self):
            return {"features": 0}

    class Stack(_DrainStack):
        @classmethod
        def attach(cls, path=None, *, quiet=False):
            assert not quiet
            return cls(path)

    assert _drain_with(tmp_path, monkeypatch, Drained, "--logs", stack=Stack) == 0
    captured = capsys.readouterr()
    assert "a handler's log line" in captured.err and "a handler's log line" not in captured.out


def test_local_drain_runs_the_mappings_as_lambda_would_after_an_interruption(tmp_path, monkeypatch, capsys):
    """An interrupted SQS batch stays in flight (its idempotency records are INPROGRESS until the
    function timeout), failures come back after a backoff, Kinesis batches are small enough for
    the function timeout and --timeout: before, the batch came back at once and its redeliveries
    used up the receives within a second, dead-lettering the intents."""
    made = {}

    class Recording(_StuckEmulator):
        def __init__(self, stack, functions=None, **kwargs):
            made.update(kwargs)
            super().__init__(stack, functions, **kwargs)

        def backlog(self):
            return {"features": 0}

    assert _drain_with(tmp_path, monkeypatch, Recording) == 0
    assert made["release_interrupted_sqs"] is False
    assert made["sqs_retry_backoff_s"] > 0
    assert 1 <= made["kinesis_batch_limit"] < 200


def test_local_drain_saves_the_places_after_each_poll_not_only_at_the_end(tmp_path, monkeypatch, capsys):
    """A SIGKILL (or a closed terminal, before SIGHUP was handled) lost every place of the drain:
    the next one redelivered everything and dead-lettered the bad records again."""
    during = []

    class Moving(_StuckEmulator):
        place = "42"

        def run_until_drained(self, *, on_batch=None, timeout_s=None, max_rounds=100_000):
            Moving.place = "43"
            on_batch("features", 5)
            during.extend(_DrainStack.saved)  # what a SIGKILL here would leave in the state file
            Moving.place = "44"
            return self._stats

        def checkpoints(self):
            return {"features": {"shardId-000000000000": Moving.place}}

        def backlog(self):
            return {"features": 0}

    assert _drain_with(tmp_path, monkeypatch, Moving) == 0
    assert during == [{"features": {"shardId-000000000000": "43"}}]
    assert _DrainStack.saved[-1] == {"features": {"shardId-000000000000": "44"}}


def test_local_drain_treats_sighup_like_sigterm_and_keeps_its_place(tmp_path, monkeypatch, capsys):
    """Closing the terminal (SIGHUP) ended the drain on the spot, its places unsaved."""
    import signal

    class Hangup(BaseException):
        pass

    def old_handler(signum, frame):  # SIGHUP's default would end pytest: fail the test instead
        raise Hangup

    class HungUp(_StuckEmulator):
        def run_until_drained(self, *, on_batch=None, timeout_s=None, max_rounds=100_000):
            os.kill(os.getpid(), signal.SIGHUP)
            return self._stats

    previous = signal.signal(signal.SIGHUP, old_handler)
    try:
        assert _drain_with(tmp_path, monkeypatch, HungUp) == 128 + signal.SIGHUP
        assert signal.getsignal(signal.SIGHUP) is old_handler  # restored
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert "terminated (SIGHUP); the next drain carries on where it stopped" in capsys.readouterr().err
    assert _DrainStack.saved == [{"features": {"shardId-000000000000": "42"}}]


def test_local_drain_of_a_half_stopped_stack_says_what_local_status_says(tmp_path, monkeypatch, sleeper, capsys):
    """`local drain` said 'is not running (stale state file)' of a stack whose Redis still ran."""
    path, moto, redis = _half_stopped_stack(tmp_path, monkeypatch, sleeper)
    assert main(["local", "status"]) == 1
    status = capsys.readouterr().err.strip()
    assert main(["local", "drain", "--no-progress"]) == 1
    drain = capsys.readouterr().err.strip()
    assert drain.endswith(status) and "stale" not in drain and path.exists()


def test_saved_checkpoints_go_only_into_the_state_file_of_the_same_stack(tmp_path):
    from ensemble_trader.local.stack import LocalStack

    path = tmp_path / "stack.json"
    stack = LocalStack()
    stack.moto.port, stack.moto.pid, stack.state_path = 5000, 77, path
    path.write_text(json.dumps({"moto_port": 5000, "moto_pid": 77, "stage": "local"}))
    assert stack.save_mapping_checkpoints({"features": {"s": "1"}})
    assert json.loads(path.read_text())["stage"] == "local"
    assert stack.mapping_checkpoints() == {"features": {"s": "1"}}
    path.write_text(json.dumps({"moto_port": 6000, "moto_pid": 88}))  # `local down` + `local up` meanwhile
    assert not stack.save_mapping_checkpoints({"features": {"s": "2"}})
    assert "mapping_checkpoints" not in json.loads(path.read_text())
    path.unlink()  # `local down` meanwhile: no state file is made up for a stopped stack
    assert not stack.save_mapping_checkpoints({"features": {"s": "2"}}) and not path.exists()


# -- `data show` ---------------------------------------------------------------------------------------


def test_data_show_of_one_row_says_what_it_cannot_measure(tmp_path, capsys):
    csv = tmp_path / "one.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,10,11,9,10.6,100\n")
    assert main(["data", "show", str(csv)]) == 0
    out = capsys.readouterr().out
    assert out == ("ONE: 1 row, at 2024-01-01T00:00:00Z, close 10.6, volume 100 "
                   "(one row: no spacing or returns to measure)\n")
