"""``ensemble-trader demo`` (``make demo``): the pipeline end to end in the local stack.

Starts the local stack, replays the S&P 500 and NASDAQ daily bars shipped with ``arch`` (5,031
each) plus a handful of deliberately malformed records through Kinesis, runs the emulated
event-source mappings over every deployed function until the pipeline is drained, and prints a
summary: the mappings' counters, end-to-end throughput, and one section per stage from
``ensemble_trader.local.reports.<function>`` when such a module exists.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

MALFORMED = (
    ("SPX", {"symbol": "SPX", "timestamp": "2010-06-01T00:00:00+00:00", "open": 1070.0, "high": 1060.0,
             "low": 1050.0, "close": 1065.0, "volume": 1.0}),  # high below open/close
    ("SPX", {"symbol": "SPX", "timestamp": "2010-06-02T00:00:00", "open": 1070.0, "high": 1080.0,
             "low": 1060.0, "close": 1075.0, "volume": 1.0}),  # timestamp without a time zone
    ("IXIC", {"symbol": "IXIC", "timestamp": "2010-06-03T00:00:00+00:00", "open": -5.0, "high": 2300.0,
              "low": 2200.0, "close": 2250.0, "volume": 1.0}),  # negative price
    ("ixic", {"symbol": "ixic", "timestamp": "2010-06-04T00:00:00+00:00", "open": 2250.0, "high": 2300.0,
              "low": 2200.0, "close": 2260.0, "volume": 1.0}),  # symbol not in the ticker format
    ("SPX", {"symbol": "SPX", "open": 1070.0, "high": 1080.0, "low": 1060.0, "close": 1075.0}),  # no timestamp
    ("SPX", None),  # not JSON at all
)


def malformed_records() -> list[tuple[str, bytes]]:
    """The deliberately bad records the demo injects (each fails validation for its own reason)."""
    return [
        (key, b"<bar>this is not JSON</bar>" if doc is None else json.dumps(doc).encode())
        for key, doc in MALFORMED
    ]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="replay S&P 500 + NASDAQ bars through the local stack and summarise")
    p.add_argument("--limit", type=int, default=None, help="replay at most N bars (default: all 10,062)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ensemble_trader.adapters.aws.kinesis import KinesisPublisher
    from ensemble_trader.cli.feed import replay_bars
    from ensemble_trader.local.esm import EventSourceMappingEmulator, summarize_stats
    from ensemble_trader.local.functions import deployed_functions
    from ensemble_trader.local.stack import LocalStack
    from ensemble_trader.marketdata import load_arch

    t_start = time.perf_counter()
    series = [load_arch("sp500"), load_arch("nasdaq")]
    bad = malformed_records()
    functions = deployed_functions()
    print(f"ensemble-trader demo: {', '.join(f'{s.symbol} {len(s):,} bars' for s in series)}, "
          f"{len(bad)} malformed records; functions: {', '.join(f.logical for f in functions) or 'none'}")
    with LocalStack(quiet=True) as stack:
        print(f"local stack: moto {stack.endpoint_url}, "
              f"{'fakeredis (fallback!)' if stack.redis.fake else 'redis-server'} {stack.redis_url}")
        # a stage that fails on every record (e.g. its model is not trained yet) is switched off
        # after 20 dead letters in a row instead of bisecting through all 10,000 records
        esm = EventSourceMappingEmulator(stack, functions, disable_after_errors=20)
        publisher = KinesisPublisher(settings=stack.settings)
        total = min(sum(len(s) for s in series), args.limit or sys.maxsize) + len(bad)
        with tqdm(total=total, unit="rec", desc="replay → market-data", disable=args.no_progress) as bar:
            replay = replay_bars(series, publisher, "market-data", limit=args.limit, inject=bad,
                                 on_progress=bar.update)
        t_drain = time.perf_counter()
        first = functions[0].logical if functions else None
        with tqdm(total=replay.bars, unit="rec", desc="pipeline (records read by features)",
                  disable=args.no_progress) as bar:
            def on_batch(function: str, n: int) -> None:
                if function == first:
                    bar.update(n)
                else:
                    bar.set_postfix({k: v.records_received for k, v in esm.stats().items() if k != first})

            stats = esm.run_until_drained(on_batch=on_batch)
        drain_s = time.perf_counter() - t_drain

        print()
        print(f"replayed {replay.bars:,} records in {replay.seconds:.2f} s "
              f"({replay.bars_per_second:,.0f} records/s into Kinesis)")
        print(f"pipeline drained in {drain_s:.2f} s: {replay.bars / drain_s:,.0f} records/s end to end "
              f"(moto + Redis + handlers on this machine)")
        print()
        print(summarize_stats(stats))
        for s in stats.values():
            if s.invoke_seconds > 0:
                print(f"  {s.function}: {s.records_received / s.invoke_seconds:,.0f} records/s inside the handler "
                      f"({s.invocations:,} invocations, {1e3 * s.invoke_seconds / max(s.invocations, 1):.1f} ms each)")
        for spec in functions:
            try:
                report = importlib.import_module(f"ensemble_trader.local.reports.{spec.logical}")
            except ModuleNotFoundError as exc:
                if exc.name != f"ensemble_trader.local.reports.{spec.logical}":
                    raise
                continue
            print()
            print(report.summarize(stack))
    print(f"\ndemo finished in {time.perf_counter() - t_start:.1f} s")
    return 0
