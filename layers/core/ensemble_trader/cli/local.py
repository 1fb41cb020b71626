"""``ensemble-trader local up|down|status``: a local stack that outlives the command.

``up`` starts a detached moto server and a redis-server on free ports, creates every resource,
writes ``.local-stack.json`` in the repository root and prints the ``export`` lines a shell (or
``feed replay``) needs; ``down`` stops both by pid; ``status`` says what is running.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from ensemble_trader.cli import at_least

    p = sub.add_parser("local", help="start/stop the local AWS stack (moto server + redis-server)")
    local_sub = p.add_subparsers(dest="local_command", metavar="SUBCOMMAND", required=True)
    up = local_sub.add_parser("up", help="start the stack in the background and create every resource")
    up.add_argument("--stage", default="local", help="stage name in resource names (default: local)")
    up.add_argument("--shards", type=at_least(1), default=1, help="shards per Kinesis stream")
    up.set_defaults(func=_up)
    down = local_sub.add_parser("down", help="stop the stack started by `local up`")
    down.set_defaults(func=_down)
    status = local_sub.add_parser("status", help="show the running stack and its queues")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)


def _up(args: argparse.Namespace) -> int:
    from ensemble_trader.local.servers import pid_alive
    from ensemble_trader.local.stack import LocalStack, state_file_path

    path = state_file_path()
    if path.exists():
        state = json.loads(path.read_text())
        if pid_alive(state.get("moto_pid")) and pid_alive(state.get("redis_pid")):
            print(f"a local stack is already running ({path.name}); `ensemble-trader local down` first",
                  file=sys.stderr)
            return 1
    # no fakeredis fallback: it would be a thread of this command and end with it
    stack = LocalStack(args.stage, shards=args.shards, detached=True, allow_fake_redis=False)
    stack.start()
    stack.write_state_file(path)
    env = stack.environment(for_shell=True)
    stack.attached = True  # leave the servers running when this handle goes away
    stack.stop()
    print(f"# local stack up: moto {env['ET_AWS_ENDPOINT_URL']} (pid {stack.moto.pid}), "
          f"redis {env['ET_REDIS_URL']} (pid {stack.redis.pid}); state in {path.name}")
    for key, value in env.items():
        print(f"export {key}={value}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from ensemble_trader.local.servers import stop_pid
    from ensemble_trader.local.stack import state_file_path

    path = state_file_path()
    if not path.exists():
        print("no local stack is running (no state file)", file=sys.stderr)
        return 0
    state = json.loads(path.read_text())
    stop_pid(state.get("moto_pid"))
    stop_pid(state.get("redis_pid"))
    if state.get("redis_dir"):
        import shutil

        shutil.rmtree(state["redis_dir"], ignore_errors=True)
    path.unlink()
    print(f"local stack stopped (moto pid {state.get('moto_pid')}, redis pid {state.get('redis_pid')})")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ensemble_trader.domain.errors import InfrastructureError
    from ensemble_trader.local.stack import LocalStack

    try:
        stack = LocalStack.attach()
    except InfrastructureError as exc:
        print(f"not running: {exc}", file=sys.stderr)
        return 1
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
