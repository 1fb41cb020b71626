"""``ensemble-trader local up|drain|down|status``: a local stack that outlives the command.

``up`` starts a detached moto server and a redis-server on free ports, creates every resource,
writes its state file (``.local-stack.json`` in the root of the checkout the package is installed
from, or ``$ET_LOCAL_STATE_FILE``; the full path is printed) and prints the shell lines a
shell (or ``feed replay``) needs (one ``unset`` of what would steer boto3 or the aws CLI away
from the stack, then the ``export`` lines); ``drain`` runs the emulated event-source mappings over the
running stack until every source is empty (nothing else runs the handlers of such a stack); ``down``
stops both servers by pid; ``status`` says what is running, and
``status --exports`` prints the running stack's shell lines again (``up`` refuses a second
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
import contextlib
import json
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ensemble_trader.local.esm import EventSourceMappingEmulator, MappingStats
    from ensemble_trader.local.stack import LocalStack

DRAIN_TIMEOUT = 600.0
# `local drain` caps a Kinesis batch at this many records (the meta_agent's deployed 200 aggregated
# records hold ~2,000 messages, ~80 s on moto: past the 30 s function timeout, and a --timeout
# can only be kept between invocations)
DRAIN_KINESIS_BATCH = 25
# a failed intent is received again 1 s after its first receive, 2 s after its second ... (at most
# the function timeout), not at once: its idempotency record may still be INPROGRESS
DRAIN_SQS_RETRY_BACKOFF_S = 1.0

def _stage(text: str) -> str:
    """``--stage``: lower-case letters, digits and hyphens, starting with a letter (it goes into
    every resource name: et-<stage>-<resource>)."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a stage is 1-20 lower-case letters, digits or hyphens, starting with a letter")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import at_least

    p = sub.add_parser("local", help="the local AWS stack (moto server + redis-server): up, drain, status, down")
    local_sub = p.add_subparsers(dest="local_command", metavar="SUBCOMMAND", required=True)
    up = local_sub.add_parser(
        "up", help="start the stack in the background and create every resource",
        description="Start a moto server and a redis-server in the background, create every stream, queue, "
                    "table, bus and bucket of the stage under its deployed names, and print shell lines that "
                    "point a shell at them: run it as eval \"$(ensemble-trader local up)\". The stack is described "
                    "by the state file .local-stack.json (or $ET_LOCAL_STATE_FILE); another shell takes the same "
                    "lines from `local status --exports`. One stack at a time.")
    up.add_argument("--stage", type=_stage, default="local", help="stage name in resource names (default: local)")
    up.add_argument("--shards", type=at_least(1), default=1, help="shards per Kinesis stream (default 1)")
    up.set_defaults(func=_up)
    drain = local_sub.add_parser(
        "drain", help="run the handlers over what the stack's streams and queues hold, until every source is empty",
        description="Run the emulated event-source mappings of every deployed function over the stack started "
                    "by `local up` until a whole round reads nothing, then print what each mapping and stage did. "
                    "Each Kinesis mapping keeps its place in the state file, so the next drain starts after "
                    "the records this one handled.")
    drain.add_argument("--timeout", type=at_least(1.0, float), default=DRAIN_TIMEOUT,
                       help=f"stop after S seconds (default {DRAIN_TIMEOUT:g}); records still waiting then make the "
                            "exit code 1, and the next drain carries on from there")
    drain.add_argument("--logs", action="store_true",
                       help="show the handlers' log lines and metrics (on stderr; by default they are discarded)")
    drain.add_argument("--no-progress", action="store_true", help="no progress bar")
    drain.set_defaults(func=_drain)
    down = local_sub.add_parser(
        "down", help="stop the stack started by `local up`",
        description="Stop the moto server and the redis-server of the stack the state file describes and remove "
                    "their files; everything the stack held is gone. A shell pointed at it keeps its variables: "
                    "open a new one, or unset ET_AWS_ENDPOINT_URL and ET_REDIS_URL.")
    down.set_defaults(func=_down)
    status = local_sub.add_parser("status", help="show the running stack and its queues")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object (servers, queues and depths)")
    output.add_argument("--exports", action="store_true",
                        help="print only the shell lines (unset, export) of the running stack, for a shell's eval")
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
    """SIGTERM or SIGHUP (a closed terminal) while starting is raised as an exception
    (:func:`~ensemble_trader.local.servers.signals_raise`): before the state file is written, the
    servers started so far are stopped (and a state file cut short removed), the claim released;
    once it is written, the stack is left running, findable by ``local status`` and stopped by
    ``local down``. Either way one line says which, exit 128 + the signal (143, 129)."""
    import signal

    from ensemble_trader.local.servers import Terminated, signals_raise

    path = _state_path()
    written: list[Path] = []  # the state file, once written: the stack is then left running
    try:
        with signals_raise(signal.SIGTERM, signal.SIGHUP):
            claim = _claim(path)
            if claim is None:
                print(f"a local stack is being started by another `ensemble-trader local up` ({path}); "
                      "`ensemble-trader local status` once it is up", file=sys.stderr)
                return 1
            try:
                return _up_claimed(args, path, written)
            finally:
                _release(path, claim)
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        if written:
            what = (f"the stack was started and is left running (state in {path}): "
                    "`ensemble-trader local status --exports` prints its shell lines, "
                    "`ensemble-trader local down` stops it")
        else:
            what = "no stack was left running"
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"ensemble-trader local up: terminated ({name}); {what}", file=sys.stderr)
        return 128 + exc.signum


def _state_path() -> Path:
    from ensemble_trader.local.stack import state_file_path

    return state_file_path()


def _up_claimed(args: argparse.Namespace, path: Path, written: list[Path]) -> int:
    """:func:`_up` holding the claim; ``path`` is appended to ``written`` once the state file
    describes the running stack."""
    from ensemble_trader.local.servers import RUNNING, UNVERIFIED
    from ensemble_trader.local.stack import LocalStack, check_state

    if path.exists():
        state = _read_state(path)
        if not isinstance(state, dict):  # the servers it described may still run: never orphan them
            print(f"{path} cannot be read: check that no server of an earlier `local up` runs, "
                  f"then remove it", file=sys.stderr)
            return 1
        checks = check_state(state)
        statuses = {c.status for c in checks}
        if statuses == {RUNNING}:
            print(f"a local stack is already running ({path}): `ensemble-trader local status --exports` "
                  "prints its shell lines; `ensemble-trader local down` stops it", file=sys.stderr)
            return 1
        if statuses & {RUNNING, UNVERIFIED}:  # a live server of ours, or maybe ours: never ignore it
            for check in checks:
                print(f"{path}: {check.describe()}", file=sys.stderr)
            print("`ensemble-trader local down` first", file=sys.stderr)
            return 1
        for check in checks:
            print(f"stale {path}: {check.describe()}; removing it", file=sys.stderr)
        path.unlink()
    # no fakeredis fallback: it would be a thread of this command and end with it
    stack = LocalStack(args.stage, shards=args.shards, detached=True, allow_fake_redis=False)
    stack.start()
    try:
        stack.write_state_file(path)
        written.append(path)
    except BaseException:  # a signal in between too: then the servers are stopped, no stack is left
        written.clear()
        stack.stop()  # nobody could find the detached servers without the state file
        # nor should a state file (cut short, or written just before a signal) describe them
        # stopped; none was there before (removed above while holding the claim)
        path.unlink(missing_ok=True)
        raise
    stack.attached = True  # leave the servers running when this handle goes away
    try:
        env = stack.environment(for_shell=True)
    finally:
        stack.stop()  # this process' environment restored; the servers keep running
    print(f"# local stack up: moto {env['ET_AWS_ENDPOINT_URL']} (pid {stack.moto.pid}), "
          f"redis {env['ET_REDIS_URL']} (pid {stack.redis.pid}); state in {path}")
    _print_exports(env, path)
    return 0


def _shell_unsets(environ: dict[str, str] | None = None) -> list[str]:
    """The variables the stack's shell lines unset: those that would steer this package's boto3
    clients or the aws CLI away from the stack or break them — a profile (one this machine lacks
    is botocore's ProfileNotFound before any request, even with the stack's keys set), a session
    token (sent with the dummy keys), ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` (the aws CLI would
    ignore ``AWS_ENDPOINT_URL`` and call real AWS) — and each ``AWS_ENDPOINT_URL_<SERVICE>`` set in
    ``environ`` (the aws CLI prefers it to ``AWS_ENDPOINT_URL``)."""
    import os

    from ensemble_trader.local.servers import CHILD_ENV_REMOVED

    environ = os.environ if environ is None else environ
    per_service = sorted(k for k in environ if re.fullmatch(r"AWS_ENDPOINT_URL_[A-Z0-9_]+", k))
    return [*CHILD_ENV_REMOVED, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", *per_service]


def _print_exports(env: dict[str, str], path: Path) -> None:
    """The stack's shell lines: one ``unset`` (:func:`_shell_unsets`), then the ``export`` lines;
    with ``ET_LOCAL_STATE_FILE`` too when the state file is not the default one, so that `local
    status|drain|down` in the shell that evaluates them find it."""
    from ensemble_trader.local.stack import default_state_file_path

    if path != default_state_file_path():
        env = {**env, "ET_LOCAL_STATE_FILE": str(path)}
    print("unset " + " ".join(_shell_unsets()))
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
            print(f"a local stack is being started by `ensemble-trader local up` ({path}); "
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
        print(f"local stack stopped ({', '.join(stopped)}); removed {path}")
    elif code:
        print(f"nothing was signalled; removed {path}")
    else:
        print(f"no server of the local stack was running; removed {path}")
    return code


def _status(args: argparse.Namespace) -> int:
    from ensemble_trader.domain.errors import InfrastructureError
    from ensemble_trader.local.servers import RUNNING, UNVERIFIED
    from ensemble_trader.local.stack import (
        LocalStack,
        StaleStateError,
        check_state,
        stale_state_message,
        state_file_path,
    )

    try:
        stack = LocalStack.attach()
    except StaleStateError as exc:
        path = state_file_path()
        state = _read_state(path)
        checks = check_state(state) if isinstance(state, dict) else []
        servers = "; ".join(c.describe() for c in checks) or str(exc)
        if any(c.status in (RUNNING, UNVERIFIED) for c in checks):
            # one server is gone, another still runs: `local down` needs the file to stop it
            print(stale_state_message(path, checks), file=sys.stderr)
            return 1
        path.unlink(missing_ok=True)
        print(f"not running: {servers}; stale state file {path} removed", file=sys.stderr)
        return 1
    except InfrastructureError as exc:
        path = state_file_path()
        if not path.exists() and _being_started(path):
            print(f"not running yet: `ensemble-trader local up` is starting it ({path})", file=sys.stderr)
        else:
            print(f"not running: {exc}", file=sys.stderr)
        return 1
    for check in stack.server_checks:
        if check.status == UNVERIFIED:
            print(f"warning: {check.describe()}", file=sys.stderr)
    if args.exports:
        env = stack.environment(for_shell=True)
        stack.stop()
        _print_exports(env, state_file_path())
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


def _drain(args: argparse.Namespace) -> int:
    """Run the emulated event-source mappings over the stack of the state file until every source
    is empty or ``--timeout`` passes (exit 1 with what is left). One drain at a time per stack
    (a claim on ``<state file>.drain.lock``). The mappings' places on the streams are saved in the
    state file after every poll that read something and at the end, also after Ctrl-C, SIGTERM
    or SIGHUP (a closed terminal; exit 130 / 143 / 129), which print what the drain did until then."""
    import contextlib
    import signal

    from ensemble_trader.cli.demo import _checked_orders_settings
    from ensemble_trader.local.functions import deployed_functions
    from ensemble_trader.local.servers import Terminated, signals_raise
    from ensemble_trader.local.stack import LocalStack

    path = _state_path()
    if not path.exists() and _being_started(path):
        print(f"the local stack is being started by `ensemble-trader local up` ({path}); "
              "`ensemble-trader local drain` once it is up", file=sys.stderr)
        return 1
    _checked_orders_settings(deployed_functions())  # a bad ET_ORDERS_* / ET_RISK_* fails here, not per intent
    marker = path.with_name(path.name + ".drain")
    claim = _claim(marker)
    if claim is None:
        print(f"another `ensemble-trader local drain` is running on this stack ({path})", file=sys.stderr)
        return 1
    try:
        with signals_raise(signal.SIGTERM, signal.SIGHUP):
            stack = LocalStack.attach(path, quiet=not args.logs)
            try:
                return _drain_attached(args, stack)
            finally:
                stack.stop()
    except Terminated as exc:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"ensemble-trader local drain: terminated ({signal.Signals(exc.signum).name}); "
                  "the next drain carries on where it stopped", file=sys.stderr)
        return 128 + exc.signum
    finally:
        _release(marker, claim)


def _drain_attached(args: argparse.Namespace, stack: LocalStack) -> int:
    import logging
    import os
    import time
    import warnings

    from tqdm import tqdm

    from ensemble_trader.local.esm import EventSourceMappingEmulator
    from ensemble_trader.local.servers import Terminated

    # a handler invocation that only skipped redelivered records flushes no metrics; Powertools
    # warns about that on every such call (as in the demo)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    # the handlers' stdout (Powertools' log lines and metrics) never reaches ours: discarded, or
    # on stderr with --logs (a Powertools Logger keeps the stream it was created with, so the
    # handlers are loaded inside this block too)
    with contextlib.ExitStack() as scope:
        # the emulator's own "stopped after the timeout" warning: this command says what is left instead
        esm_log = logging.getLogger("ensemble_trader.local.esm")
        esm_log.addFilter(timeout_warning := _NotStartingWith("ESM emulator: stopped after"))
        scope.callback(esm_log.removeFilter, timeout_warning)
        sink = sys.stderr if args.logs else scope.enter_context(open(os.devnull, "w"))  # noqa: SIM115
        scope.enter_context(contextlib.redirect_stdout(sink))
        saved = stack.mapping_checkpoints()
        emulator = EventSourceMappingEmulator(
            stack, checkpoints=saved, capture_output=not args.logs,
            # an interrupted batch stays in flight for the function timeout (Lambda: the queue's
            # visibility timeout, six times that), a failed message comes back after a backoff (at
            # once, an interrupted intent's INPROGRESS idempotency record would fail its
            # redeliveries until they were dead-lettered)
            release_interrupted_sqs=False, sqs_retry_backoff_s=DRAIN_SQS_RETRY_BACKOFF_S,
            kinesis_batch_limit=DRAIN_KINESIS_BATCH)
        bar = scope.enter_context(tqdm(unit="msg", desc="draining", disable=args.no_progress, file=sys.stderr))
        read: list[int] = []
        unsaved: list[str] = []  # why the places could not be saved, once

        def save_places() -> None:
            nonlocal saved
            places = emulator.checkpoints()
            if unsaved or places == saved:
                return
            if stack.save_mapping_checkpoints(places):
                saved = places
            elif not unsaved:
                unsaved.append("x")
                print(f"the state file {stack.state_path} no longer describes this stack (`local down` meanwhile?): "
                      "the mappings' places were not saved", file=sys.stderr)

        def on_batch(function: str, n: int) -> None:
            read.append(n)
            bar.update(n)
            bar.set_postfix({k: v.messages_received for k, v in emulator.stats().items()})
            save_places()  # a SIGKILL loses at most the poll in hand

        interrupted: BaseException | None = None  # Ctrl-C, SIGTERM or SIGHUP: reported, then raised again
        try:
            while True:
                read.clear()
                stats = emulator.run_until_drained(on_batch=on_batch, timeout_s=max(0.0, deadline - time.monotonic()))
                left = {k: v for k, v in emulator.backlog().items() if v}
                if not left or time.monotonic() >= deadline:
                    break
                if not read:  # only messages in flight (a visibility timeout still running): wait for them
                    time.sleep(0.5)
        except (KeyboardInterrupt, Terminated) as exc:
            interrupted, stats, left = exc, emulator.stats(), {}
        finally:
            if not stack.save_mapping_checkpoints(emulator.checkpoints()) and not unsaved:
                print(f"the state file {stack.state_path} no longer describes this stack (`local down` meanwhile?): "
                      "the mappings' places were not saved", file=sys.stderr)
    if interrupted is not None:
        # what this drain did before it was stopped (the terminal may be gone after SIGHUP)
        with contextlib.suppress(OSError):
            _print_drain_summary(stack, emulator, stats, {}, time.monotonic() - t0, interrupted=True)
        raise interrupted
    return _print_drain_summary(stack, emulator, stats, left, time.monotonic() - t0, timeout=args.timeout)


def _print_drain_summary(stack: LocalStack, emulator: EventSourceMappingEmulator, stats: dict[str, MappingStats],
                         left: dict[str, int], elapsed: float, *, timeout: float = 0.0,
                         interrupted: bool = False) -> int:
    """Print what a drain did — per mapping, per stage, the dead-letter queues' depths — and
    what its ``--timeout`` left waiting (exit status 1 then, else 0). An ``interrupted`` drain
    says so and lists no backlog (it is not counted: the stack may be what stopped)."""
    from ensemble_trader import constants
    from ensemble_trader.local.esm import summarize_stats

    received = sum(s.messages_received for s in stats.values())
    if interrupted:
        outcome = ": interrupted" + ("" if received else ", before any message was received")
    else:
        outcome = "" if received else ": nothing was received" if left else ": nothing was waiting on any mapping's source"
    print(f"local drain: stage {stack.stage} ({stack.endpoint_url}), {len(stats)} mappings, {elapsed:.1f} s{outcome}")
    if received:
        print(summarize_stats(stats))
        for line in _stage_lines(stats):
            print(line)
    if interrupted:
        return 1
    dlqs = dict.fromkeys(constants.function_spec(f).dead_letter_queue for f in emulator.functions)
    print("dead-letter queues (messages, this drain's and earlier): "
          + ", ".join(f"{q}={stack.queue_depth(q):,}" for q in dlqs))
    if left:
        waiting = ", ".join(f"{function} {n:,} on {constants.function_spec(function).mapping.source}"
                            for function, n in left.items())
        print(f"ensemble-trader local drain: the --timeout of {timeout:g} s passed with messages still waiting "
              f"({waiting}); `ensemble-trader local drain` again carries on from there", file=sys.stderr)
        return 1
    return 0


class _NotStartingWith:
    """A logging filter that drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def filter(self, record: object) -> bool:
        return not record.getMessage().startswith(self.prefix)  # type: ignore[attr-defined]


def _stage_lines(stats: dict[str, MappingStats]) -> list[str]:
    """What each stage's handler did with the messages of this drain (in, applied, skipped,
    dead-lettered, out), from the counters the handlers keep in this process."""
    from ensemble_trader import constants
    from ensemble_trader.runtime.stage import stage_stats

    lines = []
    for name, s in stats.items():
        spec = constants.function_spec(name)
        if spec.mapping.kind == "kinesis":
            st = stage_stats(name)
            out = f"; {st.outputs:,} out on {', '.join(spec.outputs)}" if spec.outputs else ""
            lines.append(
                f"  {name:<11} {s.messages_received:,} messages in ({s.records_received:,} Kinesis records): "
                f"{st.applied:,} applied, {st.duplicates:,} duplicates skipped, {st.rejected:,} rejected to "
                f"{spec.dead_letter_queue}{out}")
        elif name == "orders":
            from ensemble_trader.runtime import orders as orders_runtime

            route = orders_runtime.ROUTE_STATS
            lines.append(
                f"  {name:<11} {s.messages_received:,} intents in: {route.intents:,} routed "
                f"({route.replayed:,} answered from the idempotency table), {route.orders:,} orders, "
                f"{route.fills:,} fills; {route.dead_lettered:,} dead-lettered to {spec.dead_letter_queue}")
    return lines
