"""``ensemble-trader bench``: the project's performance figures as one JSON object."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure per-stage compute latency (make bench)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    p.add_argument("--only", nargs="+", default=None, help="run only these benchmark modules")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ensemble_trader.bench import run_all

    results = run_all(quick=args.quick, only=args.only, progress=not args.json)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        width = max(map(len, results), default=0)
        for key in sorted(results):
            value = results[key]
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
            print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_run(argparse.Namespace(json=True, quick=False, only=None)))
