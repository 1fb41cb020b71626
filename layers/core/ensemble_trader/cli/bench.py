"""``ensemble-trader bench``: the project's performance figures as one JSON object."""

from __future__ import annotations

import argparse
import json
import sys


def benchmark_names() -> list[str]:
    """The benchmark modules of ``ensemble_trader.bench``, found without importing the package
    (its numpy import would slow every command's start)."""
    import importlib.util
    import pkgutil

    spec = importlib.util.find_spec("ensemble_trader.bench")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return sorted(m.name for m in pkgutil.iter_modules(locations))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure per-stage compute latency (make bench)",
        description="Time every stage's compute in this process (features, regime, agents, meta-agent step, "
                    "order routing, the stage runner, 64 concurrent strategies) and print the percentiles; "
                    "about a minute and a half, --quick a few seconds. The figures and the targets they "
                    "answer: README, Performance against the original plan.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    names = benchmark_names()
    p.add_argument("--only", nargs="+", default=None, metavar="MODULE",
                   help=f"run only these benchmark modules: {', '.join(names)}")
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
