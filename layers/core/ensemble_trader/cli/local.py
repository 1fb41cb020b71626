"""``ensemble-trader local up|down|status``: a local stack that outlives the command.

``up`` starts a detached moto server and a redis-server on free ports, creates every resource,
writes ``.local-stack.json`` in the repository root and prints the ``export`` lines a shell (or
``feed replay``) needs; ``down`` stops both by pid; ``status`` says what is running, and
``status --exports`` prints the running stack's ``export`` lines again (``up`` refuses a second
stack, so another shell gets its environment from there). ``up`` claims the state file first (an
exclusive lock on ``<state file>.lock``, held from its "already running?" check until the file is
written), so of two ``up`` started at the same moment one refuses instead of starting a second
stack that the state file would lose.

The state file records each server's pid and identity (boot id + start time). ``down`` and
``status`` signal or trust a pid only while it is still that process: a pid reused by another
process (after a reboot, or after the server died) is reported and never signalled, and the stale
file is removed. A state file of an older version has no identities: its live pids are reported
as unverifiable and left alone.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path


def _stage(text: str) -> str:
    """``--stage``: lower-case letters, digits and hyphens, starting with a letter (it goes into
    every resource name: et-<stage>-<resource>)."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a stage is 1-20 lower-case letters, digits or hyphens, starting with a letter")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import at_least

    p = sub.add_parser("local", help="start/stop the local AWS stack (moto server + redis-server)")
    local_sub = p.add_subparsers(dest="local_command", metavar="SUBCOMMAND", required=True)
    up = local_sub.add_parser("up", help="start the stack in the background and create every resource")
    up.add_argument("--stage", type=_stage, default="local", help="stage name in resource names (default: local)")
    up.add_argument("--shards", type=at_least(1), default=1, help="shards per Kinesis stream")
    up.set_defaults(func=_up)
    down = local_sub.add_parser("down", help="stop the stack started by `local up`")
    down.set_defaults(func=_down)
    status = local_sub.add_parser("status", help="show the running stack and its queues")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--exports", action="store_true",
                        help="print only the export lines of the running stack, for a shell's eval")
    status.set_defaults(func=_status)


def _read_state(path: Path) -> object:
    """The state file's content, or None (with a message) when it cannot be read as JSON."""
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        print(f"the state file {path} is not valid JSON ({exc})", file=sys.stderr)
        return None


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _claim(path: Path) -> int | None:
    """Claim the right to start a stack described by ``path``: an exclusive ``flock`` on
    ``<state file>.lock``, held from the "already running?" check until the state file is
    written. The open descriptor, or None when another ``local up`` holds it now.

    The lock goes with the process (a killed ``up`` leaves no stale claim). :func:`_release`
    removes the lock file while still holding it, so a claimant that opened the old file must
    find, after locking it, that the name now leads elsewhere, and tries again."""
    import fcntl
    import os

    lock = _lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        held = os.fstat(fd)
        try:
            named = os.stat(lock)
        except FileNotFoundError:
            named = None
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # released and removed by its holder meanwhile: claim the new one


def _release(path: Path, fd: int) -> None:
    import os

    try:
        _lock_path(path).unlink(missing_ok=True)
    finally:
        os.close(fd)


def _being_started(path: Path) -> bool:
    """Whether a ``local up`` is starting a stack for ``path`` right now (it holds the claim)."""
    fd = _claim(path)
    if fd is None:
        return True
    _release(path, fd)
    return False


def _up(args: argparse.Namespace) -> int:
    """SIGTERM while starting is raised as an exception (:func:`~ensemble_trader.local.servers.sigterm_raises`):
    the servers started so far are stopped and the claim released, exit 143."""
    from ensemble_trader.local.servers import Terminated, sigterm_raises

    path = _state_path()
    try:
        with sigterm_raises():
            claim = _claim(path)
            if claim is None:
                print(f"a local stack is being started by another `ensemble-trader local up` ({path.name}); "
                      "`ensemble-trader local status` once it is up", file=sys.stderr)
                return 1
            try:
                return _up_claimed(args, path)
            finally:
                _release(path, claim)
    except Terminated as exc:
        print("ensemble-trader local up: terminated (SIGTERM); no stack was left running", file=sys.stderr)
        return 128 + exc.signum


def _state_path() -> Path:
    from ensemble_trader.local.stack import state_file_path

    return state_file_path()


def _up_claimed(args: argparse.Namespace, path: Path) -> int:
    from ensemble_trader.local.servers import RUNNING, UNVERIFIED
    from ensemble_trader.local.stack import LocalStack, check_state

    if path.exists():
        state = _read_state(path)
        if not isinstance(state, dict):  # the servers it described may still run: never orphan them
            print(f"{path.name} cannot be read: check that no server of an earlier `local up` runs, "
                  f"then remove it", file=sys.stderr)
            return 1
        checks = check_state(state)
        statuses = {c.status for c in checks}
        if statuses == {RUNNING}:
            print(f"a local stack is already running ({path.name}): `ensemble-trader local status --exports` "
                  "prints its export lines; `ensemble-trader local down` stops it", file=sys.stderr)
            return 1
        if statuses & {RUNNING, UNVERIFIED}:  # a live server of ours, or maybe ours: never ignore it
            for check in checks:
                print(f"{path.name}: {check.describe()}", file=sys.stderr)
            print("`ensemble-trader local down` first", file=sys.stderr)
            return 1
        for check in checks:
            print(f"stale {path.name}: {check.describe()}; removing it", file=sys.stderr)
        path.unlink()
    # no fakeredis fallback: it would be a thread of this command and end with it
    stack = LocalStack(args.stage, shards=args.shards, detached=True, allow_fake_redis=False)
    stack.start()
    try:
        stack.write_state_file(path)
    except BaseException:
        stack.stop()  # nobody could find the detached servers without the state file
        raise
    env = stack.environment(for_shell=True)
    stack.attached = True  # leave the servers running when this handle goes away
    stack.stop()
    print(f"# local stack up: moto {env['ET_AWS_ENDPOINT_URL']} (pid {stack.moto.pid}), "
          f"redis {env['ET_REDIS_URL']} (pid {stack.redis.pid}); state in {path.name}")
    _print_exports(env)
    return 0


def _print_exports(env: dict[str, str]) -> None:
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


def _down(args: argparse.Namespace) -> int:
    """Stop the servers of the state file that are verifiably still ours; never signal a pid
    that now belongs to another process or that cannot be verified."""
    from ensemble_trader.local.servers import GONE, OTHER, RUNNING, stop_pid
    from ensemble_trader.local.stack import check_state, state_file_path

    path = state_file_path()
    if not path.exists():
        if _being_started(path):
            print(f"a local stack is being started by `ensemble-trader local up` ({path.name}); "
                  "`ensemble-trader local down` once it is up", file=sys.stderr)
            return 1
        print("no local stack is running (no state file)", file=sys.stderr)
        return 0
    state = _read_state(path)
    if not isinstance(state, dict):
        path.unlink()
        print(f"removed the unreadable state file {path}; nothing was signalled", file=sys.stderr)
        return 1
    code = 0
    stopped = []
    for check in check_state(state):
        if check.status == RUNNING:
            stop_pid(check.pid)
            stopped.append(f"{check.name} pid {check.pid}")
        elif check.status == GONE:
            print(f"{check.describe()} (already stopped)", file=sys.stderr)
        elif check.status == OTHER:
            print(f"stale state file: {check.describe()}; not signalled", file=sys.stderr)
        else:
            print(f"{check.describe()}; not signalled: stop it yourself if it is the stack's", file=sys.stderr)
            code = 1
    if state.get("redis_dir"):
        import shutil

        shutil.rmtree(state["redis_dir"], ignore_errors=True)
    path.unlink()
    if stopped:
        print(f"local stack stopped ({', '.join(stopped)}); removed {path.name}")
    elif code:
        print(f"nothing was signalled; removed {path.name}")
    else:
        print(f"no server of the local stack was running; removed {path.name}")
    return code


def _status(args: argparse.Namespace) -> int:
    from ensemble_trader.domain.errors import InfrastructureError
    from ensemble_trader.local.servers import RUNNING, UNVERIFIED
    from ensemble_trader.local.stack import LocalStack, StaleStateError, check_state, state_file_path

    try:
        stack = LocalStack.attach()
    except StaleStateError as exc:
        path = state_file_path()
        state = _read_state(path)
        alive = [c for c in check_state(state) if c.status in (RUNNING, UNVERIFIED)] if isinstance(state, dict) else []
        if alive:  # one server is gone, another still runs: `local down` needs the file to stop it
            print(f"partly running: {exc}; `ensemble-trader local down` stops the rest", file=sys.stderr)
            return 1
        path.unlink(missing_ok=True)
        print(f"not running: {exc}; state file removed", file=sys.stderr)
        return 1
    except InfrastructureError as exc:
        path = state_file_path()
        if not path.exists() and _being_started(path):
            print(f"not running yet: `ensemble-trader local up` is starting it ({path.name})", file=sys.stderr)
        else:
            print(f"not running: {exc}", file=sys.stderr)
        return 1
    for check in stack.server_checks:
        if check.status == UNVERIFIED:
            print(f"warning: {check.describe()}", file=sys.stderr)
    if args.exports:
        env = stack.environment(for_shell=True)
        stack.stop()
        _print_exports(env)
        return 0
    try:
        info = stack.describe()
    finally:
        stack.stop()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"stage {info['stage']}: moto {info['endpoint_url']}, {info['redis']} {info['redis_url']}")
        print("streams: " + ", ".join(info["streams"].values()))
        print("queues (messages): " + ", ".join(f"{k}={v}" for k, v in info["queues"].items()))
        print("tables: " + ", ".join(info["tables"]))
    return 0
